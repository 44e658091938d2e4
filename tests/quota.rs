//! Usage figures and the quota limit.

mod common;

use common::{assert_verified, data, open, put, put_err, store_with_album, BIG};
use keepsake::{Content, DedupMode, Outcome, QuotaExceeded, Store, Upload, UploadError};

const B: u64 = BIG as u64;

fn assert_quota_exceeded(err: &UploadError, limit: u64, used: u64, needed: u64) {
    match err {
        UploadError::QuotaExceeded(QuotaExceeded {
            limit: l,
            used: u,
            needed: n,
        }) => assert_eq!((*l, *u, *n), (limit, used, needed)),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
}

#[test]
fn usage_counts_each_unique_blob_once_across_albums_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.user("nobody").unwrap().usage().unwrap().unique_bytes, 0);
    let a = store.user("ann").unwrap().ensure_album("A").unwrap();
    let b = store.user("ann").unwrap().ensure_album("B").unwrap();
    let x = data(1, BIG);
    let y = data(2, 3 * BIG);
    put(&store, "ann", a, "x.jpg", &x, DedupMode::NameAndHash);
    put(&store, "ann", b, "x.jpg", &x, DedupMode::NameAndHash); // Linked
    put(&store, "ann", b, "x-copy.jpg", &x, DedupMode::NameAndHash); // Stored, shared blob
    put(&store, "ann", a, "y.jpg", &y, DedupMode::NameAndHash);
    put(&store, "ann", a, "tiny.txt", b"tiny", DedupMode::NameAndHash); // inline blob

    let usage = store.user("ann").unwrap().usage().unwrap();
    assert_eq!(usage.user, "ann");
    assert_eq!(usage.unique_bytes, B + 3 * B + 4);
    assert_eq!(usage.logical_bytes, 2 * B + 3 * B + 4);
    assert_eq!((usage.files, usage.blobs, usage.trashed_files), (4, 3, 0));
    assert_eq!((usage.trash_bytes, usage.limit), (0, None));

    let stats = store.stats().unwrap();
    assert_eq!((stats.users, stats.files, stats.blobs), (1, 4, 3));
    assert_eq!(
        (stats.physical_bytes, stats.logical_bytes),
        (usage.unique_bytes, usage.logical_bytes)
    );
    assert!(stats.dedup_ratio > 1.0);
    let albums = store.user("ann").unwrap().albums().unwrap();
    assert_eq!((albums[0].files, albums[0].bytes), (3, B + 3 * B + 4));
    assert_eq!((albums[1].files, albums[1].bytes), (2, 2 * B));
    assert_verified(&store);
}

#[test]
fn upload_past_the_limit_is_refused_and_changes_nothing() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    ann.set_quota(Some(2 * B)).unwrap();
    put(&store, "ann", a, "1.jpg", &data(3, BIG), DedupMode::Hash);
    let usage = ann.usage().unwrap();
    let stats = store.stats().unwrap();

    let too_big = data(4, BIG + 1);
    let err = put_err(&store, "ann", a, "2.jpg", &too_big, DedupMode::Hash);
    assert_quota_exceeded(&err, 2 * B, B, B + 1);
    assert_eq!(ann.usage().unwrap(), usage);
    assert_eq!(ann.files().unwrap().len(), 1);
    let after = store.stats().unwrap();
    assert_eq!(
        (after.blobs, after.files, after.physical_bytes),
        (stats.blobs, stats.files, stats.physical_bytes)
    );

    // Exactly up to the limit is fine.
    let fits = put(&store, "ann", a, "2.jpg", &data(5, BIG), DedupMode::Hash);
    assert_eq!(fits.charged_bytes, B);
    assert_eq!(ann.usage().unwrap().unique_bytes, 2 * B);
    // Lowering the limit below usage deletes nothing.
    ann.set_quota(Some(B)).unwrap();
    assert_eq!(ann.files().unwrap().len(), 2);
    let err = put_err(&store, "ann", a, "3.jpg", b"small", DedupMode::Hash);
    assert_quota_exceeded(&err, B, 2 * B, 5);
    // Clearing it lets uploads through again.
    ann.set_quota(None).unwrap();
    assert_eq!(ann.usage().unwrap().limit, None);
    put(&store, "ann", a, "3.jpg", b"small", DedupMode::Hash);
    assert_verified(&store);
}

#[test]
fn duplicates_succeed_at_the_limit() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let x = data(6, BIG);
    put(&store, "ann", a, "x.jpg", &x, DedupMode::NameAndHash);
    ann.set_quota(Some(B)).unwrap(); // exactly at the limit

    let skipped = put(&store, "ann", a, "x.jpg", &x, DedupMode::NameAndHash);
    assert_eq!(skipped.outcome, Outcome::Skipped);
    let linked = put(&store, "ann", b, "x.jpg", &x, DedupMode::NameAndHash);
    assert_eq!(linked.outcome, Outcome::Linked);
    let renamed = put(&store, "ann", b, "x-renamed.jpg", &x, DedupMode::NameAndHash);
    assert_eq!(
        (renamed.outcome, renamed.charged_bytes, renamed.bytes_written),
        (Outcome::Stored, 0, 0)
    );
    let usage = ann.usage().unwrap();
    assert_eq!((usage.unique_bytes, usage.files, usage.logical_bytes), (B, 2, 2 * B));
    // But anything new is refused.
    let err = put_err(&store, "ann", b, "new.jpg", &data(7, 10), DedupMode::NameAndHash);
    assert_quota_exceeded(&err, B, B, 10);
    assert_verified(&store);
}

#[test]
fn batch_crossing_the_limit_fails_only_uploads_past_it() {
    let (dir, store, a) = store_with_album("ann", "A");
    store.user("ann").unwrap().set_quota(Some(2 * B + B / 2)).unwrap();
    let contents: Vec<Vec<u8>> = (0..4).map(|i| data(10 + i, BIG)).collect();
    let mut uploads: Vec<Upload> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| Upload::new(a, format!("{i}.jpg"), Content::from(c.clone()), DedupMode::NameAndHash))
        .collect();
    // After the overflow: a duplicate of an accepted upload costs nothing.
    uploads.push(Upload::new(
        a,
        "0-again.jpg",
        Content::from(contents[0].clone()),
        DedupMode::NameAndHash,
    ));
    let results = store.user("ann").unwrap().upload_batch(uploads);

    assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Stored);
    assert_eq!(results[1].as_ref().unwrap().outcome, Outcome::Stored);
    assert_quota_exceeded(results[2].as_ref().unwrap_err(), 2 * B + B / 2, 2 * B, B);
    assert_quota_exceeded(results[3].as_ref().unwrap_err(), 2 * B + B / 2, 2 * B, B);
    let last = results[4].as_ref().unwrap();
    assert_eq!((last.outcome, last.charged_bytes), (Outcome::Stored, 0));

    let usage = store.user("ann").unwrap().usage().unwrap();
    assert_eq!((usage.unique_bytes, usage.files, usage.blobs), (2 * B, 3, 2));
    assert_eq!(store.stats().unwrap().blobs, 2);
    for (i, c) in contents.iter().enumerate().take(2) {
        let f = store
            .user("ann")
            .unwrap()
            .files()
            .unwrap()
            .into_iter()
            .find(|f| f.name == format!("{i}.jpg"))
            .unwrap();
        assert_eq!(store.user("ann").unwrap().read(f.id).unwrap(), *c);
    }
    assert_verified(&store);
    // The refused copies leave no trace after a reopen either.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    assert_verified(&store);
}

#[test]
fn another_users_copy_does_not_lower_the_charge() {
    let (_dir, store, a) = store_with_album("alice", "A");
    let bob = store.user("bob").unwrap();
    let b = bob.ensure_album("B").unwrap();
    let x = data(20, BIG);
    put(&store, "alice", a, "x.jpg", &x, DedupMode::Hash);

    bob.set_quota(Some(B - 1)).unwrap();
    let err = put_err(&store, "bob", b, "x.jpg", &x, DedupMode::Hash);
    assert_quota_exceeded(&err, B - 1, 0, B);
    assert!(bob.files().unwrap().is_empty());

    bob.set_quota(Some(B)).unwrap();
    let r = put(&store, "bob", b, "x.jpg", &x, DedupMode::Hash);
    assert_eq!((r.outcome, r.charged_bytes, r.bytes_written), (Outcome::Stored, B, B));
    assert_eq!(bob.usage().unwrap().unique_bytes, B);
    assert_eq!(store.user("alice").unwrap().usage().unwrap().unique_bytes, B);
    assert_eq!(store.stats().unwrap().physical_bytes, B);
    assert_verified(&store);
}

#[test]
fn usage_survives_reopen_and_set_quota_creates_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.user("new").unwrap().set_quota(Some(123)).unwrap();
    assert_eq!(store.user("new").unwrap().usage().unwrap().limit, Some(123));
    drop(store);
    let store = open(dir.path());
    let usage = store.user("new").unwrap().usage().unwrap();
    assert_eq!((usage.limit, usage.unique_bytes), (Some(123), 0));
    assert_verified(&store);
}

#[test]
fn a_lowered_limit_still_accepts_uploads_that_charge_nothing() {
    let (_dir, store, a) = store_with_album("ann", "A");
    put(&store, "ann", a, "big.jpg", &data(1, BIG), DedupMode::NameAndHash);
    store.user("ann").unwrap().set_quota(Some(1)).unwrap();
    // Empty content is new to the store but charges nothing: the early
    // check before writing and the exact check at commit must agree.
    let r = put(&store, "ann", a, "empty.txt", b"", DedupMode::NameAndHash);
    assert_eq!((r.outcome, r.charged_bytes), (Outcome::Stored, 0));
    let err = put_err(&store, "ann", a, "new.jpg", &data(2, BIG), DedupMode::NameAndHash);
    assert!(matches!(err, UploadError::QuotaExceeded(_)), "{err:?}");
    assert_verified(&store);
}

/// A stream too long to hold in memory is spooled to staging before its
/// hash is known, and that disk is the user's: counted against the quota
/// as it spools, so a stream past the user's room is refused once it
/// passes it, not spooled whole first (a user could fill the disk).
#[test]
fn a_long_stream_past_the_quota_is_refused_before_it_is_spooled_whole() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// An endless stream that counts what was read of it.
    struct Endless(Arc<AtomicU64>);
    impl std::io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            buf.fill(7);
            self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Ok(buf.len())
        }
    }

    let (dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    ann.set_quota(Some(20 << 20)).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let content = Content::Reader(Box::new(Endless(read.clone())));
    let err = ann.upload(a, "endless.mp4", content, DedupMode::Hash).unwrap_err();
    assert!(matches!(err, UploadError::QuotaExceeded(_)), "{err:?}");
    // The 16 MiB held in memory, then a piece of 8 MiB past the room.
    assert!(read.load(Ordering::Relaxed) <= (16 << 20) + 1 + (8 << 20), "{read:?}");
    let staged = std::fs::read_dir(dir.path().join("staging")).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "the spooled part was left in staging/");
    assert!(ann.files().unwrap().is_empty());

    // Within the room, a long stream is stored as before.
    let video = data(5, 18 << 20);
    let report = ann
        .upload(
            a,
            "v.mp4",
            Content::Reader(Box::new(std::io::Cursor::new(video.clone()))),
            DedupMode::Hash,
        )
        .unwrap();
    assert_eq!(ann.read(report.file_id).unwrap(), video);
    assert_verified(&store);
}
