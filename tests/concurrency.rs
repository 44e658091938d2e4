//! Many threads on one store: the duplicate rules and the accounting hold
//! under races.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{assert_verified, data, open, put, store_with_album, TestFs, BIG};
use keepsake::{AlbumId, Content, DedupMode, FileId, LibraryError, Outcome, Store, Upload, UploadReport};

const THREADS: usize = 8;

/// Runs `f(thread index)` on `THREADS` threads released together.
fn race<T: Send + 'static>(store: &Store, f: impl Fn(usize, &Store) -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, barrier, f) = (store.clone(), barrier.clone(), f.clone());
            thread::spawn(move || {
                barrier.wait();
                f(t, &store)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .collect()
}

#[test]
fn same_new_content_uploaded_by_eight_threads_is_stored_once() {
    let (dir, store, album) = store_with_album("ann", "Camera");
    for round in 0..5u64 {
        let photo = Arc::new(data(round, 5 * BIG));
        let p = photo.clone();
        let reports: Vec<UploadReport> = race(&store, move |t, s| {
            s.user("ann")
                .unwrap()
                .upload(
                    album,
                    format!("IMG_{t}.JPG"),
                    Content::from(p.to_vec()),
                    DedupMode::Hash,
                )
                .unwrap()
        });
        let stored: Vec<&UploadReport> = reports.iter().filter(|r| r.outcome == Outcome::Stored).collect();
        assert_eq!(stored.len(), 1, "round {round}: {reports:?}");
        assert!(reports.iter().all(|r| r.outcome != Outcome::Linked), "{reports:?}");
        assert!(reports.iter().all(|r| r.file_id == stored[0].file_id));
        // Every racer that found the content new to the user wrote it; the
        // losers' copies are garbage. Only the winner is charged.
        assert_writes_of_racers(&reports, photo.len() as u64);
        let charged: u64 = reports.iter().map(|r| r.charged_bytes).sum();
        assert_eq!(charged, photo.len() as u64, "round {round}");
        assert_eq!(store.user("ann").unwrap().read(stored[0].file_id).unwrap(), *photo);
    }
    let usage = store.user("ann").unwrap().usage().unwrap();
    assert_eq!(
        (usage.files, usage.blobs, usage.unique_bytes),
        (5, 5, 5 * 5 * BIG as u64)
    );
    assert_eq!(store.stats().unwrap().blobs, 5);
    assert_eq!(store.user("ann").unwrap().album_files(album).unwrap().len(), 5);
    assert_verified(&store);
    // The losers' copies are garbage that a reopen and GC handle cleanly.
    drop(store);
    let store = open(dir.path());
    store.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    assert_verified(&store);
}

/// Each racer wrote the whole content or nothing, and at least the one that
/// stored the blob wrote it.
fn assert_writes_of_racers(reports: &[UploadReport], len: u64) {
    assert!(
        reports.iter().all(|r| [0, len].contains(&r.bytes_written)),
        "{reports:?}"
    );
    assert!(reports.iter().any(|r| r.bytes_written == len), "{reports:?}");
}

#[test]
fn same_content_under_different_names_by_eight_threads_shares_one_blob() {
    let (_dir, store, album) = store_with_album("dee", "Desktop");
    let photo = Arc::new(data(42, 3 * BIG));
    let p = photo.clone();
    let reports = race(&store, move |t, s| {
        s.user("dee")
            .unwrap()
            .upload(
                album,
                format!("{t}.jpg"),
                Content::from(p.to_vec()),
                DedupMode::NameAndHash,
            )
            .unwrap()
    });
    assert!(reports.iter().all(|r| r.outcome == Outcome::Stored));
    let mut ids: Vec<FileId> = reports.iter().map(|r| r.file_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), THREADS);
    assert_writes_of_racers(&reports, photo.len() as u64);
    assert_eq!(reports.iter().map(|r| r.charged_bytes).sum::<u64>(), photo.len() as u64);
    let usage = store.user("dee").unwrap().usage().unwrap();
    assert_eq!(
        (usage.files, usage.blobs, usage.unique_bytes),
        (8, 1, photo.len() as u64)
    );
    assert_eq!(store.stats().unwrap().blobs, 1);
    assert_verified(&store);
}

#[test]
fn eight_threads_uploading_distinct_and_shared_content_stay_consistent() {
    const PER_THREAD: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let albums: Vec<AlbumId> = (0..THREADS)
        .map(|t| store.user("ann").unwrap().ensure_album(&format!("thread {t}")).unwrap())
        .collect();
    // Every tenth item is the same content in every thread.
    let content = |t: usize, i: u64| {
        if i.is_multiple_of(10) {
            data(10_000 + i, BIG)
        } else {
            data((t as u64) * 1000 + i, 100 + (i as usize * 997) % 8000) // inline and segment blobs
        }
    };
    let albums_for_threads = albums.clone();
    let results = race(&store, move |t, s| {
        let album = albums_for_threads[t];
        let mut out: Vec<(u64, UploadReport)> = Vec::new();
        if t.is_multiple_of(2) {
            for i in 0..PER_THREAD {
                let r = s
                    .user("ann")
                    .unwrap()
                    .upload(album, format!("{i}.jpg"), Content::from(content(t, i)), DedupMode::Hash)
                    .unwrap();
                out.push((i, r));
            }
        } else {
            for chunk in (0..PER_THREAD).collect::<Vec<_>>().chunks(10) {
                let uploads = chunk
                    .iter()
                    .map(|&i| Upload::new(album, format!("{i}.jpg"), Content::from(content(t, i)), DedupMode::Hash))
                    .collect();
                for (&i, r) in chunk.iter().zip(s.user("ann").unwrap().upload_batch(uploads)) {
                    out.push((i, r.unwrap()));
                }
            }
        }
        out
    });

    // Every upload reads back as what that thread sent.
    for (t, reports) in results.iter().enumerate() {
        assert_eq!(reports.len(), PER_THREAD as usize);
        for (i, r) in reports {
            assert_eq!(
                store.user("ann").unwrap().read(r.file_id).unwrap(),
                content(t, *i),
                "thread {t} item {i}"
            );
        }
        assert_eq!(
            store.user("ann").unwrap().album_files(albums[t]).unwrap().len(),
            PER_THREAD as usize
        );
    }
    // Shared content: one file each, stored by exactly one thread, linked
    // into the other threads' albums.
    for i in (0..PER_THREAD).step_by(10) {
        let outcomes: Vec<Outcome> = results
            .iter()
            .map(|reports| reports.iter().find(|(j, _)| *j == i).unwrap().1.outcome)
            .collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Stored).count(),
            1,
            "item {i}: {outcomes:?}"
        );
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Linked).count(), THREADS - 1);
    }
    let shared = (PER_THREAD / 10) as usize;
    let unique = THREADS * (PER_THREAD as usize - shared);
    let usage = store.user("ann").unwrap().usage().unwrap();
    assert_eq!(usage.files as usize, unique + shared);
    assert_eq!(usage.blobs as usize, unique + shared);
    assert_eq!(store.stats().unwrap().blobs as usize, unique + shared);
    assert_verified(&store);
}

#[test]
fn gc_and_compaction_during_uploads_never_lose_referenced_bytes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let options = keepsake::StoreOptions::default().segment_size(64 << 10);
    let store = Store::open_with(dir.path(), options).unwrap();
    let albums: Vec<AlbumId> = (0..2)
        .map(|t| store.user(&format!("user{t}")).unwrap().ensure_album("A").unwrap())
        .collect();
    // A small pool, so that contents keep being freed and uploaded again.
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..12).map(|i| data(50_000 + i, BIG + i as usize)).collect());
    let done = Arc::new(AtomicBool::new(false));

    let collector = {
        let (store, done) = (store.clone(), done.clone());
        thread::spawn(move || {
            let (mut removed, mut compacted) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                let r = store.gc_with_grace(Duration::ZERO).unwrap();
                removed += r.blobs_removed;
                compacted += r.segments_compacted;
            }
            (removed, compacted)
        })
    };
    let uploaders: Vec<_> = (0..2usize)
        .map(|t| {
            let (store, pool, album) = (store.clone(), pool.clone(), albums[t]);
            thread::spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ t as u64;
                for step in 0..120u32 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % pool.len() as u64) as usize;
                    // One user per thread: files are private, blobs shared.
                    let user = format!("user{t}");
                    let r = store
                        .user(&user)
                        .unwrap()
                        .upload(
                            album,
                            format!("{i}.jpg"),
                            Content::from(pool[i].clone()),
                            DedupMode::Hash,
                        )
                        .unwrap();
                    let read = store.user(&user).unwrap().read(r.file_id);
                    assert!(
                        read.as_ref().is_ok_and(|b| *b == pool[i]),
                        "thread {t} step {step}: {read:?}"
                    );
                    if step.is_multiple_of(3) {
                        store.user(&user).unwrap().delete(r.file_id).unwrap();
                        store.user(&user).unwrap().empty_trash().unwrap();
                    }
                }
            })
        })
        .collect();
    for u in uploaders {
        u.join().expect("uploader panicked");
    }
    done.store(true, Ordering::SeqCst);
    let (removed, compacted) = collector.join().expect("collector panicked");
    eprintln!("concurrent gc: {removed} blobs removed, {compacted} segments compacted");
    assert!(removed > 0, "GC never ran concurrently with the uploads");

    store.gc_with_grace(Duration::ZERO).unwrap();
    let users = ["user0", "user1"];
    for user in users {
        for f in store.user(user).unwrap().files().unwrap() {
            let bytes = store.user(user).unwrap().read(f.id).unwrap();
            assert_eq!(keepsake::ContentHash::of(&bytes), f.hash);
        }
    }
    assert_verified(&store);
    let usage = users.map(|u| store.user(u).unwrap().usage().unwrap());
    drop(store);
    let store = open(dir.path());
    assert_eq!(users.map(|u| store.user(u).unwrap().usage().unwrap()), usage);
    for user in users {
        for f in store.user(user).unwrap().files().unwrap() {
            store.user(user).unwrap().read(f.id).unwrap();
        }
    }
    assert_verified(&store);
}

/// An upload whose record is written to the active segment, which is then
/// sealed (another upload rolls it) and compacted away (it held only
/// garbage) before the first upload commits. The acknowledged upload must
/// still read back.
#[test]
fn upload_racing_compaction_of_its_segment_stays_readable() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let fs = TestFs::default();
    let options = keepsake::StoreOptions::default()
        .segment_size(64 << 10)
        .fs(Arc::new(fs.clone()));
    let store = Store::open_with(dir.path(), options).unwrap();
    let album = store.user("ann").unwrap().ensure_album("A").unwrap();
    // Segment 1 gets a committed record that becomes garbage.
    let w = put(&store, "ann", album, "w.jpg", &data(1, BIG), DedupMode::Hash).file_id;
    store.user("ann").unwrap().delete(w).unwrap();
    store.user("ann").unwrap().empty_trash().unwrap();
    assert_eq!(store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed, 1);

    // U writes its record to segment 1 and is held in its fsync.
    fs.pause_next_sync();
    let x = data(2, BIG);
    let u = {
        let (store, x) = (store.clone(), x.clone());
        thread::spawn(move || {
            store
                .user("ann")
                .unwrap()
                .upload(album, "x.jpg", Content::from(x), DedupMode::Hash)
        })
    };
    fs.wait_until_sync_paused();
    // V does not fit in segment 1: it rolls it, so segment 1 is sealed.
    let v_bytes = data(3, 60 << 10);
    let v = {
        let (store, v_bytes) = (store.clone(), v_bytes.clone());
        thread::spawn(move || {
            store
                .user("ann")
                .unwrap()
                .upload(album, "v.mp4", Content::from(v_bytes), DedupMode::Hash)
        })
    };
    let second = dir.path().join("segments").join("00000000000000000002.seg");
    while !second.exists() {
        thread::sleep(Duration::from_millis(1));
    }
    // GC runs while U is between writing and committing.
    let report = store.gc_with_grace(Duration::ZERO).unwrap();
    fs.release_sync();
    let u = u.join().unwrap().unwrap();
    let v = v.join().unwrap().unwrap();
    eprintln!("gc during the upload: {report:?}");

    assert_eq!(u.outcome, Outcome::Stored);
    let read = store.user("ann").unwrap().read(u.file_id);
    assert!(
        read.as_ref().is_ok_and(|b| *b == x),
        "acknowledged upload lost: {read:?}"
    );
    assert_eq!(store.user("ann").unwrap().read(v.file_id).unwrap(), v_bytes);
    assert_verified(&store);
}

#[test]
fn concurrent_album_creation_yields_one_album() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ensured = race(&store, |_, s| s.user("ann").unwrap().ensure_album("Shared").unwrap());
    assert!(ensured.iter().all(|a| *a == ensured[0]), "{ensured:?}");
    let created = race(&store, |_, s| s.user("ann").unwrap().create_album("Once"));
    assert_eq!(created.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(created
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, LibraryError::AlbumExists(_))));
    let names: Vec<String> = store
        .user("ann")
        .unwrap()
        .albums()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, vec!["Shared", "Once"]);
    assert_verified(&store);
}
