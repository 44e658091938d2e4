//! Garbage collection, compaction, and what reopening a store repairs or
//! refuses.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{
    assert_verified, damaged_files, data, fresh_store, open, options_with_clock, put, put_all, segment_files,
    store_with_album, ManualClock, BIG,
};
use keepsake::testkit::format::RECORD_HEADER_LEN;
use keepsake::{AlbumDeletion, Content, DedupMode, FileId, OpenError, Outcome, ReadError, Store, StoreOptions, Upload};

const RECORD: u64 = (BIG + RECORD_HEADER_LEN) as u64;

#[test]
fn gc_frees_a_blob_only_when_its_last_reference_goes() {
    let (_dir, store, a) = store_with_album("alice", "A");
    let bob = store.user("bob").unwrap();
    let alice = store.user("alice").unwrap();
    let b = bob.ensure_album("B").unwrap();
    let shared = data(1, BIG);
    let other = data(2, BIG);
    let fa = put(&store, "alice", a, "s.jpg", &shared, DedupMode::Hash).file_id;
    let fb = put(&store, "bob", b, "s.jpg", &shared, DedupMode::Hash).file_id;
    let fo = put(&store, "bob", b, "o.jpg", &other, DedupMode::Hash).file_id;
    let gc = || store.gc_with_grace(Duration::ZERO).unwrap();

    alice.delete(fa).unwrap();
    assert_eq!(gc().blobs_removed, 0, "alice's trashed file still references it");
    alice.empty_trash().unwrap();
    assert_eq!(gc().blobs_removed, 0, "bob still references it");
    assert_eq!(bob.read(fb).unwrap(), shared);
    assert_eq!(store.stats().unwrap().blobs, 2);

    bob.delete(fb).unwrap();
    assert_eq!(gc().blobs_removed, 0, "bob's trashed file still references it");
    assert_eq!(bob.read(fb).unwrap(), shared, "trashed files stay readable");
    bob.empty_trash().unwrap();
    assert_eq!(store.stats().unwrap().gc_candidates, 1);
    let report = gc();
    assert_eq!(report.blobs_removed, 1);
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.blobs, stats.gc_candidates, stats.physical_bytes),
        (1, 0, BIG as u64)
    );
    assert_eq!(bob.read(fo).unwrap(), other);
    assert_eq!(gc(), keepsake::GcReport::default(), "nothing left to do");
    assert_verified(&store);
}

#[test]
fn gc_keeps_blobs_unreferenced_for_less_than_the_grace() {
    let clock = ManualClock::new();
    let (_dir, store) = fresh_store(options_with_clock(&clock).gc_grace(Duration::from_secs(3600)));
    let ann = store.user("ann").unwrap();
    let a = ann.ensure_album("A").unwrap();
    let f = put(&store, "ann", a, "p.jpg", &data(3, BIG), DedupMode::Hash).file_id;
    let inline = put(&store, "ann", a, "t.txt", b"inline blob", DedupMode::Hash).file_id;
    ann.delete(f).unwrap();
    ann.delete(inline).unwrap();
    ann.empty_trash().unwrap();

    clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(store.gc().unwrap().blobs_removed, 0);
    assert_eq!(store.stats().unwrap().gc_candidates, 2);
    clock.advance(Duration::from_secs(30 * 60));
    let report = store.gc().unwrap();
    assert_eq!(report.blobs_removed, 2);
    assert!(report.bytes_reclaimed >= b"inline blob".len() as u64);
    let stats = store.stats().unwrap();
    assert_eq!((stats.blobs, stats.gc_candidates), (0, 0));
    assert_verified(&store);
}

#[test]
fn a_blob_referenced_again_within_the_grace_is_not_collected() {
    let clock = ManualClock::new();
    let (_dir, store) = fresh_store(options_with_clock(&clock).gc_grace(Duration::from_secs(60)));
    let ann = store.user("ann").unwrap();
    let a = ann.ensure_album("A").unwrap();
    let photo = data(4, BIG);
    let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash).file_id;
    ann.delete(f).unwrap();
    ann.empty_trash().unwrap();
    let again = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash);
    // Purged content is new to the user again: written, whether or not its
    // blob still waits for gc.
    assert_eq!((again.outcome, again.bytes_written), (Outcome::Stored, BIG as u64));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.gc().unwrap().blobs_removed, 0);
    assert_eq!(ann.read(again.file_id).unwrap(), photo);
    assert_verified(&store);
}

#[test]
fn compaction_reclaims_space_and_survivors_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let small_segments = || StoreOptions::default().segment_size(64 << 10);
    // First without compaction of partly-live segments, to see the garbage.
    let store = Store::open_with(dir.path(), small_segments().compact_threshold(1.0)).unwrap();
    let a = store.user("ann").unwrap().ensure_album("A").unwrap();
    let contents: Vec<Vec<u8>> = (0..48).map(|i| data(100 + i, BIG)).collect();
    let uploads = contents
        .iter()
        .enumerate()
        .map(|(i, c)| Upload::new(a, format!("{i}.jpg"), Content::from(c.clone()), DedupMode::Hash))
        .collect();
    let ids: Vec<FileId> = store
        .user("ann")
        .unwrap()
        .upload_batch(uploads)
        .into_iter()
        .map(|r| r.unwrap().file_id)
        .collect();
    let before = store.stats().unwrap();
    assert!(
        before.segments >= 6,
        "expected several segments, got {}",
        before.segments
    );
    assert_eq!(before.garbage_bytes, 0);

    // Keep one file in three: every segment keeps some live records.
    let survivors: Vec<usize> = (0..48usize).filter(|i| i.is_multiple_of(3)).collect();
    for (i, id) in ids.iter().enumerate() {
        if !i.is_multiple_of(3) {
            store.user("ann").unwrap().delete(*id).unwrap();
        }
    }
    assert_eq!(store.user("ann").unwrap().empty_trash().unwrap().files, 32);
    let report = store.gc_with_grace(Duration::ZERO).unwrap();
    assert_eq!((report.blobs_removed, report.segments_compacted), (32, 0));
    let garbage = store.stats().unwrap().garbage_bytes;
    assert_eq!(garbage, 32 * RECORD);
    assert_verified(&store);
    drop(store);

    // Now with the default threshold: the sealed segments are compacted.
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    let report = store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert!(report.bytes_reclaimed > 0, "{report:?}");
    assert_eq!(report.blobs_removed, 0);
    let after = store.stats().unwrap();
    assert!(
        after.garbage_bytes < garbage,
        "garbage {} -> {}",
        garbage,
        after.garbage_bytes
    );
    assert!(
        after.segments < before.segments,
        "segments {} -> {}",
        before.segments,
        after.segments
    );
    assert!(after.disk_bytes < before.disk_bytes);
    assert_eq!((after.blobs, after.physical_bytes), (16, 16 * BIG as u64));
    for &i in &survivors {
        assert!(
            store.user("ann").unwrap().read(ids[i]).unwrap() == contents[i],
            "file {i} differs after compaction"
        );
    }
    assert_verified(&store);
    let usage = store.user("ann").unwrap().usage().unwrap();
    drop(store);

    let store = open(dir.path());
    for &i in &survivors {
        assert!(
            store.user("ann").unwrap().read(ids[i]).unwrap() == contents[i],
            "file {i} differs after reopen"
        );
    }
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    assert_eq!(store.stats().unwrap().segments, after.segments);
    assert_verified(&store);
}

#[test]
fn reupload_after_gc_writes_the_bytes_again() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    for (len, seed) in [(BIG, 5), (100, 6)] {
        let photo = data(seed, len);
        let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::NameAndHash).file_id;
        ann.delete(f).unwrap();
        ann.empty_trash().unwrap();
        assert_eq!(store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed, 1);
        assert_eq!(store.stats().unwrap().blobs, 0);

        let again = put(&store, "ann", a, "p.jpg", &photo, DedupMode::NameAndHash);
        assert_eq!(again.outcome, Outcome::Stored);
        assert_eq!((again.bytes_written, again.charged_bytes), (len as u64, len as u64));
        assert_eq!(ann.read(again.file_id).unwrap(), photo);
        assert_eq!(store.stats().unwrap().blobs, 1);
        assert_verified(&store);
        ann.delete(again.file_id).unwrap();
        ann.empty_trash().unwrap();
        store.gc_with_grace(Duration::ZERO).unwrap();
    }
}

#[test]
fn everything_survives_a_reopen() {
    let (dir, store, a) = store_with_album("alice", "A");
    let a2 = store.user("alice").unwrap().ensure_album("A2").unwrap();
    let b = store.user("bob").unwrap().ensure_album("B").unwrap();
    let mut files = Vec::new();
    for i in 0..10u64 {
        let len = if i.is_multiple_of(2) { BIG } else { 1000 };
        let bytes = data(200 + i, len);
        let r = put(&store, "alice", a, &format!("{i}.jpg"), &bytes, DedupMode::NameAndHash);
        files.push(("alice", r.file_id, bytes));
    }
    let shared = files[0].2.clone();
    files.push((
        "bob",
        put(&store, "bob", b, "s.jpg", &shared, DedupMode::Hash).file_id,
        shared,
    ));
    store.user("alice").unwrap().add_to_album(files[1].1, a2).unwrap();
    store.user("alice").unwrap().delete(files[2].1).unwrap();
    store
        .user("alice")
        .unwrap()
        .delete_album(a2, AlbumDeletion::KeepFiles)
        .unwrap();
    store.user("bob").unwrap().set_quota(Some(1 << 30)).unwrap();

    let snapshot = |s: &Store| {
        (
            ["alice", "bob"].map(|u| s.user(u).unwrap().usage().unwrap()),
            ["alice", "bob"].map(|u| s.user(u).unwrap().albums().unwrap()),
            ["alice", "bob"].map(|u| s.user(u).unwrap().files().unwrap()),
            s.user("alice").unwrap().trash().unwrap(),
            s.stats().unwrap(),
        )
    };
    let before = snapshot(&store);
    drop(store);

    let store = open(dir.path());
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    assert_eq!(snapshot(&store), before);
    for (user, id, bytes) in &files {
        assert_eq!(store.user(user).unwrap().read(*id).unwrap(), *bytes);
    }
    // And it keeps working.
    let r = put(&store, "alice", a, "new.jpg", &data(300, BIG), DedupMode::Hash);
    assert_eq!(r.outcome, Outcome::Stored);
    assert_verified(&store);
}

#[test]
fn torn_tail_is_dropped_at_reopen() {
    let (dir, store, a) = store_with_album("ann", "A");
    let files: Vec<(FileId, Vec<u8>)> = (0..4)
        .map(|i| {
            let bytes = data(400 + i, BIG + i as usize);
            (
                put(&store, "ann", a, &format!("{i}.jpg"), &bytes, DedupMode::Hash).file_id,
                bytes,
            )
        })
        .collect();
    let usage = store.user("ann").unwrap().usage().unwrap();
    drop(store);

    let newest = segment_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&newest).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    f.write_all(&data(999, 777)).unwrap();
    drop(f);

    let store = open(dir.path());
    let notes = store.recovery_notes().join("\n");
    assert!(notes.contains("dropped 777"), "notes: {notes:?}");
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), len, "tail not truncated");
    assert_verified(&store);
    for (id, bytes) in &files {
        assert_eq!(store.user("ann").unwrap().read(*id).unwrap(), *bytes);
    }
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    // New records go where the garbage was, and survive another reopen.
    let more = data(500, BIG);
    let r = put(&store, "ann", a, "more.jpg", &more, DedupMode::Hash);
    drop(store);
    let store = open(dir.path());
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    assert_eq!(store.user("ann").unwrap().read(r.file_id).unwrap(), more);
    assert_verified(&store);
}

#[test]
fn orphan_segment_is_removed_at_reopen() {
    let (dir, store, a) = store_with_album("ann", "A");
    let photo = data(600, BIG);
    let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash).file_id;
    drop(store);

    let orphan = dir.path().join("segments").join("00000000000000000099.seg");
    std::fs::write(&orphan, data(601, 5000)).unwrap();
    let store = open(dir.path());
    assert!(!orphan.exists(), "orphan segment still there");
    let notes = store.recovery_notes().join("\n");
    assert!(notes.contains("99"), "notes: {notes:?}");
    assert_eq!(store.user("ann").unwrap().read(f).unwrap(), photo);
    let r = put(&store, "ann", a, "q.jpg", &data(602, BIG), DedupMode::Hash);
    assert_eq!(r.bytes_written, BIG as u64);
    assert_verified(&store);
}

#[test]
fn corrupted_blob_is_never_served_and_verify_names_the_file() {
    let (dir, store, a) = store_with_album("ann", "A");
    let victim = data(700, BIG);
    let neighbour = data(701, BIG);
    let v = put(&store, "ann", a, "victim.jpg", &victim, DedupMode::Hash).file_id;
    let n = put(&store, "ann", a, "neighbour.jpg", &neighbour, DedupMode::Hash).file_id;
    let t = put(&store, "ann", a, "tiny.txt", b"inline", DedupMode::Hash).file_id;
    // A second user's file with the same content is damaged too.
    let b = store.user("bob").unwrap().ensure_album("B").unwrap();
    let bv = put(&store, "bob", b, "copy.jpg", &victim, DedupMode::Hash).file_id;
    drop(store);

    let mut flipped = false;
    for seg in segment_files(dir.path()) {
        let mut bytes = std::fs::read(&seg).unwrap();
        if let Some(at) = bytes.windows(64).position(|w| w == &victim[..64]) {
            bytes[at + BIG / 2] ^= 0x01;
            std::fs::write(&seg, &bytes).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "victim's bytes not found in any segment");

    let store = open(dir.path());
    for (user, id) in [("ann", v), ("bob", bv)] {
        match store.user(user).unwrap().read(id) {
            Err(ReadError::Integrity { hash, .. }) => assert_eq!(hash, keepsake::ContentHash::of(&victim)),
            Err(e) => panic!("expected Integrity, got {e:?}"),
            Ok(_) => panic!("damaged bytes were served"),
        }
        assert!(store.user(user).unwrap().open_file(id).is_err());
    }
    assert_eq!(store.user("ann").unwrap().read(n).unwrap(), neighbour);
    assert_eq!(store.user("ann").unwrap().read(t).unwrap(), &b"inline"[..]);

    let report = store.verify(true).unwrap();
    assert!(!report.ok);
    let damaged: Vec<_> = report.problems.iter().filter(|p| p.kind == "damaged-blob").collect();
    assert_eq!(damaged.len(), 1, "{:#?}", report.problems);
    let mut named: Vec<(String, FileId)> = damaged[0].files.iter().map(|f| (f.user.clone(), f.file_id)).collect();
    named.sort();
    assert_eq!(named, vec![("ann".to_string(), v), ("bob".to_string(), bv)]);
    assert!(damaged[0].files.iter().any(|f| f.name == "victim.jpg"));
    assert_eq!(
        report.problems.len(),
        1,
        "only the damage is reported: {:#?}",
        report.problems
    );
    // Without scrubbing, the metadata itself is consistent.
    assert!(store.verify(false).unwrap().ok);
}

#[test]
fn second_open_while_in_use_is_refused() {
    let (dir, store, a) = store_with_album("ann", "A");
    let f = put(&store, "ann", a, "p.jpg", &data(800, BIG), DedupMode::Hash).file_id;
    match Store::open(dir.path()) {
        Err(OpenError::InUse { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected InUse, got {other:?}"),
    }
    // A clone is the same store, not a second open.
    let clone = store.clone();
    assert_eq!(clone.user("ann").unwrap().read(f).unwrap(), data(800, BIG));
    drop(clone);
    assert!(matches!(Store::open(dir.path()), Err(OpenError::InUse { .. })));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.user("ann").unwrap().read(f).unwrap(), data(800, BIG));
    assert_verified(&store);
}

#[test]
fn compaction_never_drops_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = || StoreOptions::default().segment_size(64 << 10);
    let store = Store::open_with(dir.path(), options()).unwrap();
    let a = store.user("ann").unwrap().ensure_album("A").unwrap();
    let contents: Vec<Vec<u8>> = (0..12).map(|i| data(900 + i, BIG)).collect();
    let ids = put_all(&store, "ann", a, &contents);
    // Empty the first (sealed) segment except for file 0, the victim.
    for id in &ids[1..6] {
        store.user("ann").unwrap().delete(*id).unwrap();
    }
    store.user("ann").unwrap().empty_trash().unwrap();
    drop(store);
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &contents[0][..64])
        .expect("victim in first segment");
    bytes[at + 100] ^= 0x80;
    std::fs::write(&first, &bytes).unwrap();

    let store = Store::open_with(dir.path(), options()).unwrap();
    let report = store.gc_with_grace(Duration::ZERO).unwrap();
    assert_eq!(report.blobs_removed, 5);
    assert_eq!(
        report.segments_compacted, 0,
        "a segment with a damaged record was compacted"
    );
    assert!(first.exists());
    assert!(matches!(
        store.user("ann").unwrap().read(ids[0]),
        Err(ReadError::Integrity { .. })
    ));
    for i in 6..12 {
        assert_eq!(store.user("ann").unwrap().read(ids[i]).unwrap(), contents[i]);
    }
    let report = store.verify(true).unwrap();
    let damaged = damaged_files(&report);
    assert_eq!(damaged, vec![ids[0]], "{:#?}", report.problems);
}

#[test]
fn truncated_segment_is_reported_and_never_served() {
    let (dir, store, a) = store_with_album("ann", "A");
    let contents: Vec<Vec<u8>> = (0..3).map(|i| data(1000 + i, BIG)).collect();
    let ids = put_all(&store, "ann", a, &contents);
    drop(store);
    // Lose the second half of the last record, as a disk losing data would.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - BIG as u64 / 2)
        .unwrap();

    let store = open(dir.path());
    let notes = store.recovery_notes().join("\n");
    assert!(notes.contains("shorter"), "notes: {notes:?}");
    assert!(matches!(
        store.user("ann").unwrap().read(ids[2]),
        Err(ReadError::Integrity { .. })
    ));
    for i in 0..2 {
        assert_eq!(store.user("ann").unwrap().read(ids[i]).unwrap(), contents[i]);
    }
    let report = store.verify(true).unwrap();
    assert!(!report.ok);
    assert!(
        report.problems.iter().any(|p| p.kind == "damaged-segment"),
        "{:#?}",
        report.problems
    );
    let damaged = damaged_files(&report);
    assert!(
        damaged.contains(&ids[2]) && !damaged.contains(&ids[0]),
        "{:#?}",
        report.problems
    );
    // New uploads go elsewhere and are fine; the damaged segment is never compacted away.
    let more = data(1100, BIG);
    let r = put(&store, "ann", a, "more.jpg", &more, DedupMode::Hash);
    assert_eq!(r.bytes_written, BIG as u64);
    store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(seg.exists());
    assert_eq!(store.user("ann").unwrap().read(r.file_id).unwrap(), more);
    assert_eq!(store.user("ann").unwrap().read(ids[0]).unwrap(), contents[0]);
}

#[test]
fn leftover_staging_files_are_removed_at_reopen() {
    let (dir, store, a) = store_with_album("ann", "A");
    let f = put(&store, "ann", a, "p.jpg", &data(1200, BIG), DedupMode::Hash).file_id;
    drop(store);
    let leftover = dir.path().join("staging").join("4242-0.tmp");
    std::fs::write(&leftover, data(1201, 1 << 20)).unwrap();
    let store = open(dir.path());
    assert!(!leftover.exists(), "a crashed upload's staged stream survived reopen");
    assert_eq!(store.user("ann").unwrap().read(f).unwrap(), data(1200, BIG));
    assert_eq!(store.stats().unwrap().blobs, 1);
    assert_verified(&store);
}

/// A CLI opens the store once per command: the metadata directory must not
/// collect a diagnostic log per open.
#[test]
fn reopening_many_times_keeps_a_bounded_number_of_info_logs() {
    let (dir, store, a) = store_with_album("ann", "A");
    let f = put(&store, "ann", a, "p.jpg", &data(1200, BIG), DedupMode::Hash).file_id;
    drop(store);
    for _ in 0..12 {
        drop(open(dir.path()));
    }
    let logs = std::fs::read_dir(dir.path().join("meta"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("LOG"))
        .count();
    assert!(logs <= 6, "{logs} info logs after 13 opens");
    let store = open(dir.path());
    assert_eq!(store.user("ann").unwrap().read(f).unwrap(), data(1200, BIG));
}
