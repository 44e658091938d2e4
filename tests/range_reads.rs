//! Range reads of large blobs: checked against the blob's BLAKE3 outboard a
//! chunk group at a time, so that a range costs its own length, and still
//! never a byte that does not belong to the content.

mod common;

use std::io::{Read, Seek, SeekFrom};

use common::{begin, damage_content, data, put, store_with_album};
use keepsake::testkit::meta_damage::{entries, set};
use keepsake::{AlbumId, ContentHash, DedupMode, HashedUpload, Preflight, ReadError, Store, User};

fn preflight(u: &User, album: AlbumId, hash: ContentHash) -> Preflight {
    u.check(&HashedUpload {
        album,
        name: "other.mp4".into(),
        hash,
        mode: DedupMode::Hash,
    })
    .unwrap()
}

/// Past the 16 MiB above which a blob has an outboard.
const VIDEO: usize = 40 << 20;
const GROUP: usize = 64 << 10;

fn outboard(store: &Store, hash: &ContentHash) -> Option<Vec<u8>> {
    entries(store, "outboards")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == hash.as_bytes())
        .map(|(_, v)| v)
}

#[test]
fn a_large_upload_gets_an_outboard_under_a_thousandth_of_its_size_and_a_small_one_none() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let video = data(1, VIDEO + 12_345);
    let photo = data(2, 3 << 20);
    put(&store, "ann", a, "v.mp4", &video, DedupMode::Hash);
    put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash);
    let ob = outboard(&store, &ContentHash::of(&video)).expect("the video has an outboard");
    assert_eq!(ob.len(), (video.len().div_ceil(GROUP) - 1) * 64);
    assert!((ob.len() as f64) / (video.len() as f64) < 0.001);
    assert!(outboard(&store, &ContentHash::of(&photo)).is_none());
    common::assert_verified(&store);
}

#[test]
fn ranges_anywhere_in_a_large_file_are_its_bytes_and_a_stream_reads_it_whole() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let video = data(3, VIDEO + 1);
    let id = put(&store, "ann", a, "v.mp4", &video, DedupMode::Hash).file_id;
    let u = store.user("ann").unwrap();
    let mut r = u.open_file(id).unwrap();
    assert_eq!(r.len(), video.len() as u64);
    for (s, e) in [
        (0, 1),
        (GROUP - 1, GROUP + 1),
        (VIDEO / 2, VIDEO / 2 + (1 << 20)),
        (VIDEO, VIDEO + 1),
    ] {
        assert_eq!(r.range(s as u64..e as u64).unwrap(), &video[s..e], "{s}..{e}");
    }
    assert!(r.range(VIDEO as u64 + 5..u64::MAX).unwrap().is_empty());
    r.seek(SeekFrom::Start(VIDEO as u64 - 10)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &video[VIDEO - 10..]);
    let mut all = Vec::new();
    u.open_file(id).unwrap().read_to_end(&mut all).unwrap();
    assert!(all == video);
}

#[test]
fn damage_in_a_large_file_fails_only_the_ranges_that_touch_it_and_is_remembered() {
    let (dir, store, a) = store_with_album("ann", "A");
    let video = data(4, VIDEO);
    let id = put(&store, "ann", a, "v.mp4", &video, DedupMode::Hash).file_id;
    drop(store);
    let bad = 30 * GROUP + 77;
    damage_content(dir.path(), &video, bad);

    let store = common::open(dir.path());
    let u = store.user("ann").unwrap();
    // Opening checks nothing yet: the damage lies in a group not read.
    let mut r = u.open_file(id).unwrap();
    assert_eq!(r.range(0..(30 * GROUP) as u64).unwrap(), &video[..30 * GROUP]);
    assert_eq!(
        r.range((31 * GROUP) as u64..VIDEO as u64).unwrap(),
        &video[31 * GROUP..]
    );
    match r.range(bad as u64..bad as u64 + 1) {
        Err(ReadError::Integrity { hash, .. }) => assert_eq!(hash, ContentHash::of(&video)),
        other => panic!("damaged bytes must not be served: {:?}", other.map(|b| b.len())),
    }
    let mut sink = Vec::new();
    let err = u.open_file(id).unwrap().read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(sink, &video[..sink.len()], "what came before the damage is the file's");
    assert!(sink.len() <= bad);
    assert!(matches!(u.read(id), Err(ReadError::Integrity { .. })));
    // Remembered: the next upload of the content writes it again, and heals.
    assert_eq!(preflight(&u, a, ContentHash::of(&video)), Preflight::Upload);
    put(&store, "ann", a, "again.mp4", &video, DedupMode::Hash);
    assert!(u.read(id).unwrap() == video);
    common::assert_verified(&store);
}

#[test]
fn a_large_blob_without_its_outboard_is_checked_whole_once_and_gets_it_back() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let video = data(5, VIDEO);
    let hash = ContentHash::of(&video);
    let id = put(&store, "ann", a, "v.mp4", &video, DedupMode::Hash).file_id;
    let made = outboard(&store, &hash).unwrap();
    // As a store of format 4 has it.
    set(&store, "outboards", hash.as_bytes(), None).unwrap();
    let u = store.user("ann").unwrap();
    assert_eq!(u.open_file(id).unwrap().range(5..10).unwrap(), &video[5..10]);
    assert_eq!(outboard(&store, &hash).as_ref(), Some(&made));
}

#[test]
fn a_damaged_outboard_is_made_again_from_bytes_that_are_whole() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let video = data(6, VIDEO);
    let hash = ContentHash::of(&video);
    let id = put(&store, "ann", a, "v.mp4", &video, DedupMode::Hash).file_id;
    let made = outboard(&store, &hash).unwrap();
    let mut bad = made.clone();
    bad[100] ^= 1;
    set(&store, "outboards", hash.as_bytes(), Some(&bad)).unwrap();
    let u = store.user("ann").unwrap();
    let mut r = u.open_file(id).unwrap();
    assert_eq!(r.range(0..(VIDEO as u64)).unwrap(), &video[..]);
    assert_eq!(outboard(&store, &hash).as_ref(), Some(&made));
    // Nothing was taken for damage of the bytes.
    assert_eq!(preflight(&u, a, hash), Preflight::Skip(id));
}

#[test]
fn a_resumable_upload_gets_its_outboard_and_gc_drops_it_with_the_blob() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let video = data(7, VIDEO);
    let hash = ContentHash::of(&video);
    let u = store.user("ann").unwrap();
    let s = begin(&store, "ann", a, "v.mp4", Some(video.len() as u64), None);
    for (i, part) in video.chunks(7 << 20).enumerate() {
        u.append(s, (i * (7 << 20)) as u64, part).unwrap();
    }
    let id = u.finish(s).unwrap().file_id;
    assert!(outboard(&store, &hash).is_some());
    assert_eq!(u.open_file(id).unwrap().range(9..99).unwrap(), &video[9..99]);
    u.delete(id).unwrap();
    u.empty_trash().unwrap();
    store.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert!(outboard(&store, &hash).is_none());
    common::assert_verified(&store);
}

#[test]
fn verify_names_an_outboard_without_a_blob_and_repair_removes_it() {
    let (_dir, store, _a) = store_with_album("ann", "A");
    let stray = ContentHash::of(b"gone");
    set(&store, "outboards", stray.as_bytes(), Some(&[0u8; 64])).unwrap();
    let report = store.verify(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == "stray-index-entry" && p.detail.contains("outboard")),
        "{:#?}",
        report.problems
    );
    store.repair(false).unwrap();
    assert!(outboard(&store, &stray).is_none());
    common::assert_verified(&store);
}
