//! Moving a store's blobs from the local disk into a bucket and back,
//! against a real SeaweedFS on loopback (`tests/common/weed.rs`): every
//! byte arrives and is read back verified, uploads and reads go on while
//! segments move, a migration killed or failed midway is finished by
//! running it again, damage moves as it was and stays known, and a bucket
//! that is not the store's is refused.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::weed::{self, Weed, BUCKET};
use common::{data, BIG};
use keepsake::{BlobHome, DedupMode, FileId, MigrateError, Store, StoreOptions};

macro_rules! need_weed {
    () => {
        if !weed::available() {
            return;
        }
    };
}

/// Small segments, so that a few megabytes make many of them.
fn options() -> StoreOptions {
    StoreOptions::default().segment_size(1 << 20)
}

/// A local store holding `n` photos of 200 KiB and one 20 MiB video (its
/// outboard kept), with their ids and bytes.
fn local_store(n: u64) -> (tempfile::TempDir, Store, Vec<(FileId, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let u = store.user("alice").unwrap();
    let album = u.ensure_album("Camera").unwrap();
    let mut files = Vec::new();
    for i in 0..n {
        let bytes = data(i, 200 << 10);
        files.push((
            common::put(&store, "alice", album, &format!("p{i}.jpg"), &bytes, DedupMode::Hash).file_id,
            bytes,
        ));
    }
    let video = data(9_999, 20 << 20);
    files.push((
        common::put(&store, "alice", album, "v.mp4", &video, DedupMode::Hash).file_id,
        video,
    ));
    // A small one, inline in the metadata: it has no segment to move.
    let note = data(7, BIG / 2);
    files.push((
        common::put(&store, "alice", album, "n.txt", &note, DedupMode::Hash).file_id,
        note,
    ));
    drop(u);
    (dir, store, files)
}

fn assert_all_there(store: &Store, files: &[(FileId, Vec<u8>)]) {
    let u = store.user("alice").unwrap();
    for (id, bytes) in files {
        assert!(u.read(*id).unwrap() == *bytes, "file {id} differs");
    }
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

fn packs(server: &Weed, prefix: &str) -> Vec<String> {
    server.keys(&format!("{prefix}/packs/"))
}

fn to_bucket(server: &Weed, prefix: &str) -> BlobHome {
    BlobHome::Bucket(Box::new(server.bucket(prefix)))
}

fn migrate(store: &Store, to: &BlobHome) -> keepsake::MigrateReport {
    store.migrate_blobs(to, &mut |_| {}).unwrap()
}

#[test]
fn a_local_store_moves_into_a_bucket_and_back_with_every_byte() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("migrate");
    let (dir, store, files) = local_store(30);
    let segments = common::segment_files(dir.path()).len();
    assert!(segments > 5, "{segments} segments");

    let mut seen = Vec::new();
    let report = store
        .migrate_blobs(&to_bucket(server, &prefix), &mut |p| seen.push(p))
        .unwrap();
    assert!(report.done && report.left.is_empty(), "{report:?}");
    assert_eq!(report.segments_moved as usize, segments);
    assert_eq!(report.blobs, format!("s3://{BUCKET}/{prefix}"));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.segments_done, last.bytes_done),
        (last.segments_total, last.bytes_total)
    );
    // The local copies went after their commits; the packs hold it all.
    assert!(common::segment_files(dir.path()).is_empty());
    assert_eq!(packs(server, &prefix).len(), segments);
    assert_eq!(store.blob_store(), report.blobs);
    let stats = store.stats().unwrap();
    assert!(stats.bucket_bytes > 20 << 20 && stats.disk_bytes < 1 << 20, "{stats:?}");
    assert_all_there(&store, &files);
    // New uploads go to the bucket.
    let u = store.user("alice").unwrap();
    let album = u.ensure_album("Camera").unwrap();
    let late = data(5_000, 300 << 10);
    let late_id = common::put(&store, "alice", album, "late.jpg", &late, DedupMode::Hash).file_id;
    assert_eq!(packs(server, &prefix).len(), segments + 1);
    drop((u, store));

    // A reopen finds every blob in the bucket: the store records it.
    let store = Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap();
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    let mut files = files;
    files.push((late_id, late));
    assert_all_there(&store, &files);

    // And back: the bucket is let go, its claim deleted.
    let report = migrate(&store, &BlobHome::LocalDisk);
    assert!(report.done, "{report:?}");
    assert_eq!(report.segments_moved as usize, segments + 1);
    assert_eq!(report.blobs, "local disk");
    assert!(packs(server, &prefix).is_empty());
    assert!(server.get(&format!("{prefix}/keepsake-store")).is_none());
    let stats = store.stats().unwrap();
    assert!(stats.bucket_bytes == 0 && stats.disk_bytes > 20 << 20, "{stats:?}");
    assert_all_there(&store, &files);
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.blob_store(), "local disk");
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    assert_all_there(&store, &files);
    // The prefix is free for another store.
    let other = tempfile::tempdir().unwrap();
    Store::open_with(other.path(), options().bucket(server.bucket(&prefix))).unwrap();
}

/// Runs `work` while one thread uploads photos as "bob" (at least 10)
/// and another reads `files` back as "alice", checking each; gives what
/// `work` returned and what bob uploaded.
fn under_load<R>(
    store: &Arc<Store>,
    files: &[(FileId, Vec<u8>)],
    seed: u64,
    work: impl FnOnce() -> R,
) -> (R, Vec<(FileId, Vec<u8>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let u = store.user("bob").unwrap();
            let album = u.ensure_album("Phone").unwrap();
            let mut written = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 10 {
                let bytes = data(seed + i, 150 << 10);
                let name = format!("b{}.jpg", seed + i);
                let r = u
                    .upload(album, name.as_str(), bytes.clone().into(), DedupMode::Hash)
                    .unwrap();
                written.push((r.file_id, bytes));
                i += 1;
            }
            written
        })
    };
    let reader = {
        let (store, stop, files) = (store.clone(), stop.clone(), files.to_vec());
        std::thread::spawn(move || {
            let u = store.user("alice").unwrap();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (id, bytes) in &files {
                    assert!(u.read(*id).unwrap() == *bytes, "file {id} read wrong mid-migration");
                    reads += 1;
                }
            }
            reads
        })
    };
    let out = work();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(reader.join().unwrap() > 0);
    (out, written)
}

#[test]
fn uploads_and_reads_go_on_while_the_blobs_move_both_ways() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("online");
    let (dir, store, files) = local_store(40);
    let store = Arc::new(store);
    let to = to_bucket(server, &prefix);
    let (report, mut bobs) = under_load(&store, &files, 100_000, || migrate(&store, &to));
    // Segments the writer sealed locally while it ran are moved by a
    // second run.
    let report = if report.done { report } else { migrate(&store, &to) };
    assert!(report.done, "{report:?}");
    assert!(common::segment_files(dir.path()).is_empty());

    // And back, while uploads into the bucket are still in flight.
    let (report, more) = under_load(&store, &files, 200_000, || migrate(&store, &BlobHome::LocalDisk));
    bobs.extend(more);
    let report = if report.done {
        report
    } else {
        migrate(&store, &BlobHome::LocalDisk)
    };
    assert!(report.done, "{report:?}");
    assert!(packs(server, &prefix).is_empty());
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the threads are done")
    };
    drop(store);

    // Reopened, every blob is on the local disk, the bucket forgotten.
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.blob_store(), "local disk");
    assert_all_there(&store, &files);
    let u = store.user("bob").unwrap();
    for (id, bytes) in &bobs {
        assert!(u.read(*id).unwrap() == *bytes, "an upload made during a migration");
    }
}

#[test]
fn a_local_copy_is_kept_while_the_bucket_lacks_its_pack() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("keepcopy");
    let (dir, store, files) = local_store(10);
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = common::segment_files(dir.path())
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(migrate(&store, &to_bucket(server, &prefix)).done);
    drop(store);
    // The first segment's pack is lost, and its local file is back (as a
    // move cut off after its commit, then a lost pack, would leave them).
    let (path, bytes) = &saved[0];
    std::fs::write(path, bytes).unwrap();
    let pack = packs(server, &prefix).into_iter().min().unwrap();
    server.delete(&pack);

    let store = Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap();
    let notes = store.recovery_notes().join("\n");
    assert!(notes.contains("kept segment"), "{notes}");
    assert!(path.exists(), "the only whole copy was removed");
    // Nor does a migration's sweep remove it.
    migrate(&store, &to_bucket(server, &prefix));
    assert!(path.exists(), "the sweep removed the only whole copy");
    drop(store);
    // With the pack whole again, the local file is a copy, and goes.
    server.put(&pack, bytes);
    drop(Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap());
    assert!(!path.exists());
    assert_eq!(files.len(), 12);
}

/// The CLI's environment for the bucket on `server`.
fn cli(server: &Weed, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keepsake"));
    c.arg("--store")
        .arg(dir)
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null());
    c
}

#[test]
fn a_migration_killed_midway_is_finished_by_running_it_again() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("killed");
    let url = format!("s3://{BUCKET}/{prefix}");
    let (dir, store, files) = local_store(60);
    let segments = common::segment_files(dir.path()).len();
    drop(store);

    let mut child = cli(server, dir.path())
        .args(["--json", "migrate", "--blobs", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs(server, &prefix).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let moved = packs(server, &prefix).len();
    assert!(moved >= 3, "{moved} packs");

    // Mid-migration, the store serves every blob from wherever it is, and
    // gc compacts segments of both homes into the bucket.
    let store = Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap();
    assert!(!common::segment_files(dir.path()).is_empty(), "the run was not cut off");
    assert_all_there(&store, &files);
    let u = store.user("alice").unwrap();
    let (gone, files) = files.split_at(40);
    for (id, _) in gone {
        u.delete(*id).unwrap();
    }
    u.empty_trash().unwrap();
    let gc = store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(gc.segments_compacted > 0, "{gc:?}");
    assert_all_there(&store, files);
    drop((u, store));

    let out = cli(server, dir.path())
        .args(["--json", "migrate", "--blobs", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["done"], true, "{report}");
    assert!(report["segments_moved"].as_u64().unwrap() as usize <= segments);
    assert!(common::segment_files(dir.path()).is_empty());
    let store = Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap();
    assert_all_there(&store, files);
}

#[test]
fn an_object_store_that_dies_midway_fails_the_run_and_the_next_one_finishes() {
    need_weed!();
    let mut server = Weed::start();
    let prefix = weed::unique_prefix("dies");
    let (_dir, store, files) = local_store(40);
    let to = to_bucket(&server, &prefix);
    let store = Arc::new(store);
    let run = {
        let (store, to) = (store.clone(), to.clone());
        std::thread::spawn(move || store.migrate_blobs(&to, &mut |_| {}))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs(&server, &prefix).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    match run.join().unwrap() {
        Err(MigrateError::Storage(e)) => assert!(e.io_kind().is_some(), "{e}"),
        // It may have finished just before the kill.
        Ok(report) => assert!(report.done, "{report:?}"),
        Err(e) => panic!("{e}"),
    }
    // What is still on the local disk reads on; nothing is lost.
    server.restart();
    let report = migrate(&store, &to);
    assert!(report.done, "{report:?}");
    assert_all_there(&store, &files);
}

#[test]
fn a_damaged_blob_moves_as_it_was_and_stays_known_damaged() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("damaged");
    let (dir, store, files) = local_store(10);
    let (victim, bytes) = files[3].clone();
    drop(store);
    common::damage_content(dir.path(), &bytes, 1000);
    let store = Store::open_with(dir.path(), options()).unwrap();

    let report = migrate(&store, &to_bucket(server, &prefix));
    assert!(report.done, "{report:?}");
    assert_eq!(report.damaged_blobs, 1);
    let verify = store.verify(true).unwrap();
    assert_eq!(common::damaged_files(&verify), vec![victim]);
    // A re-upload of the content heals it, into the bucket.
    let u = store.user("alice").unwrap();
    let album = u.ensure_album("Camera").unwrap();
    common::put(&store, "alice", album, "again.jpg", &bytes, DedupMode::Hash);
    assert!(u.read(victim).unwrap() == bytes);
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_bucket_that_is_not_the_stores_is_refused() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("mine");
    let (_dir, store, _files) = local_store(3);
    assert!(migrate(&store, &to_bucket(server, &prefix)).done);
    // Moving on to another bucket goes through the local disk.
    let other = weed::unique_prefix("other");
    let err = store
        .migrate_blobs(&to_bucket(server, &other), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, MigrateError::Blobs(_)), "{err}");
    assert!(packs(server, &other).is_empty());

    // A prefix another store has claimed is not taken.
    let (_d2, second, _f2) = local_store(3);
    let err = second
        .migrate_blobs(&to_bucket(server, &prefix), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, MigrateError::Blobs(_)), "{err}");
    assert_eq!(second.blob_store(), "local disk");
    assert!(second.verify(true).unwrap().ok);

    // The CLI says so with exit status 2.
    let (d3, third, _f3) = local_store(1);
    drop(third);
    let out = cli(server, d3.path())
        .args(["migrate", "--blobs", &format!("s3://{BUCKET}/{prefix}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    for bad in ["ftp://x", "s3://Photos/x", "s3://photos/a/../b"] {
        let out = cli(server, d3.path())
            .args(["migrate", "--blobs", bad])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Once this store has let its bucket go, another bucket takes a
    // reopen: nothing is sent to the one it let go.
    assert!(migrate(&store, &BlobHome::LocalDisk).done);
    let err = store
        .migrate_blobs(&to_bucket(server, &other), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, MigrateError::Blobs(_)), "{err}");
    assert!(packs(server, &other).is_empty() && packs(server, &prefix).is_empty());
}

#[test]
fn serve_migrate_blobs_moves_them_while_the_server_runs() {
    use std::io::BufRead;
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("serve");
    let url = format!("s3://{BUCKET}/{prefix}");
    let (dir, store, files) = local_store(20);
    drop(store);
    let mut child = cli(server, dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--migrate-blobs", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let outcome = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("keepsake: migration"));
    child.kill().unwrap();
    child.wait().unwrap();
    let outcome = outcome.expect("the server said how its migration ended");
    assert!(outcome.contains("done: every blob is there"), "{outcome}");
    assert!(common::segment_files(dir.path()).is_empty());
    let store = Store::open_with(dir.path(), options().bucket(server.bucket(&prefix))).unwrap();
    assert_eq!(store.blob_store(), url);
    assert_all_there(&store, &files);
}
