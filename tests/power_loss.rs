//! Power loss and I/O errors at every file-system operation of one fixed
//! workload, on the simulated disk of `keepsake::testkit::sim_fs` (whose
//! module docs state what a crash keeps and drops).
//!
//! The workload: two users, uploads above and below the inline threshold into
//! two albums, a duplicate that links, a batch, a second user sharing a blob,
//! deletes, emptying the trash, and two `gc_with_grace(ZERO)` runs that each
//! remove blobs and compact a segment (segments are small).
//!
//! - **Fault sweep**: for every operation N of the workload, a fresh run
//!   whose operation N fails (and, for a write, a second run where it stores
//!   half its bytes first, like a full disk). The workload goes on as far as
//!   the store lets it; the store is then checked as it is, after a restart,
//!   and after a power cut.
//! - **Crash sweep**: one recording run that, at every operation and after
//!   every step, takes the exact state a power cut would leave: the blob
//!   files' durable image (clean, and per seed one with the last unsynced
//!   write torn and one with it garbled) and a RocksDB checkpoint of the
//!   metadata at the same moment. RocksDB's files do not go through the
//!   simulated disk; its contract (a synced batch is atomic and durable) is
//!   what the checkpoint reproduces. Every image is then reopened and checked.
//!
//! A check: `verify(true)` is clean; the files are exactly those the
//! acknowledged operations left (for a crash, possibly with the operation in
//! flight done whole), every one reads back its exact bytes, usage is what
//! those files imply; and the store takes new uploads.
//!
//! `KEEPSAKE_POWER_LOSS_SEEDS` (default 1): seeds per crash point for torn
//! and garbled writes. Run with `--nocapture` to see the figures.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{data, knob, put};
use keepsake::testkit::sim_fs::{CrashImage, Fault, Hook, Op, OpKind, SimFs, Tear};
use keepsake::{
    AlbumId, Content, ContentHash, DedupMode, Error, FileId, GcReport, LibraryError, Outcome, StorageError, Store,
    StoreOptions, Upload, UploadReport,
};

/// Small segments, so that the workload seals several and compacts two.
const SEGMENT_SIZE: u64 = 16 << 10;
const COMPACT_THRESHOLD: f64 = 0.25;
const USERS: [&str; 2] = ["ann", "bob"];

/// A content: deterministic bytes of a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blob {
    seed: u64,
    len: usize,
}

impl Blob {
    fn bytes(self) -> Vec<u8> {
        data(self.seed, self.len)
    }
}

const PHOTO_1: Blob = Blob { seed: 1, len: 6000 };
const PHOTO_2: Blob = Blob { seed: 2, len: 7000 };
const PHOTO_3: Blob = Blob { seed: 3, len: 5000 };
const PHOTO_4: Blob = Blob { seed: 4, len: 9000 };
const PHOTO_5: Blob = Blob { seed: 5, len: 4500 };
const PHOTO_6: Blob = Blob { seed: 6, len: 6000 };
/// Below the inline threshold: stored in the metadata.
const NOTE: Blob = Blob { seed: 7, len: 300 };
const THUMB: Blob = Blob { seed: 8, len: 2000 };
/// Uploaded after each check, to show the store still takes writes.
const AFTER: Blob = Blob { seed: 9, len: 5500 };

#[derive(Debug)]
enum Step {
    Album(&'static str, &'static str),
    Upload(&'static str, &'static str, &'static str, Blob),
    Batch(&'static str, &'static str, &'static [(&'static str, Blob)]),
    Delete(&'static str, &'static str),
    EmptyTrash(&'static str),
    Gc,
}

use Step::{Album, Batch, Delete, EmptyTrash, Gc, Upload as Put};

/// Segment 1 takes photos 1 and 2, the batch fills segment 2 (photos 3, 4)
/// and starts segment 3. The first GC collects photo 3 and the note and
/// compacts segment 2; the second collects photo 1 and compacts segment 1.
const WORKLOAD: &[Step] = &[
    Album("ann", "Camera"),
    Album("ann", "Trip"),
    Put("ann", "Camera", "IMG_1.jpg", PHOTO_1),
    Put("ann", "Camera", "note.txt", NOTE),
    Put("ann", "Trip", "IMG_2.jpg", PHOTO_2),
    Put("ann", "Trip", "IMG_1.jpg", PHOTO_1),
    Batch(
        "ann",
        "Camera",
        &[
            ("IMG_3.jpg", PHOTO_3),
            ("thumb.jpg", THUMB),
            ("IMG_4.jpg", PHOTO_4),
            ("IMG_5.jpg", PHOTO_5),
        ],
    ),
    Album("bob", "Camera"),
    Put("bob", "Camera", "IMG_2.jpg", PHOTO_2),
    Delete("ann", "IMG_2.jpg"),
    Delete("ann", "IMG_3.jpg"),
    Delete("ann", "note.txt"),
    EmptyTrash("ann"),
    Put("ann", "Camera", "IMG_6.jpg", PHOTO_6),
    Gc,
    Put("ann", "Trip", "IMG_3.jpg", PHOTO_3),
    Delete("ann", "IMG_1.jpg"),
    EmptyTrash("ann"),
    Gc,
];

/// What the acknowledged operations say the store holds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Library {
    albums: BTreeMap<(&'static str, &'static str), AlbumId>,
    files: BTreeMap<(&'static str, FileId), FileState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    name: &'static str,
    blob: Blob,
    albums: BTreeSet<AlbumId>,
    trashed: bool,
}

/// A file as the store lists it.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    name: String,
    hash: ContentHash,
    albums: BTreeSet<AlbumId>,
    trashed: bool,
}

type Listing = BTreeMap<(&'static str, FileId), Listed>;

impl Library {
    fn uploaded(&mut self, user: &'static str, album: AlbumId, name: &'static str, blob: Blob, r: &UploadReport) {
        match r.outcome {
            Outcome::Stored => {
                let file = FileState {
                    name,
                    blob,
                    albums: BTreeSet::from([album]),
                    trashed: false,
                };
                self.files.insert((user, r.file_id), file);
            }
            Outcome::Linked => {
                let file = self.files.get_mut(&(user, r.file_id));
                file.expect("a link names an acknowledged file").albums.insert(album);
            }
            Outcome::Restored => {
                let file = self.files.get_mut(&(user, r.file_id));
                let file = file.expect("a restore names an acknowledged file");
                (file.trashed, file.albums) = (false, BTreeSet::from([album]));
            }
            Outcome::Skipped => {}
        }
    }

    fn live_file(&self, user: &str, name: &str) -> Option<FileId> {
        self.files
            .iter()
            .find(|((u, _), f)| *u == user && f.name == name && !f.trashed)
            .map(|((_, id), _)| *id)
    }

    fn listing(&self) -> Listing {
        self.files
            .iter()
            .map(|(&key, f)| {
                let listed = Listed {
                    name: f.name.to_string(),
                    hash: ContentHash::of(&f.blob.bytes()),
                    albums: f.albums.clone(),
                    trashed: f.trashed,
                };
                (key, listed)
            })
            .collect()
    }
}

/// What one operation of the workload returned.
#[derive(Debug)]
enum Ack {
    Album,
    Upload(UploadReport),
    Delete,
    EmptyTrash,
    Gc(GcReport),
}

/// Whether an operation was refused because the store refuses writes.
fn poisoned(r: &Result<Ack, Error>) -> bool {
    matches!(
        r.as_ref().err().and_then(Error::storage),
        Some(StorageError::Poisoned(_))
    )
}

/// What a run of the workload was told, in order.
#[derive(Debug, Default)]
struct Acks {
    library: Library,
    /// One per operation (an upload of a batch is one); an operation whose
    /// album or file an earlier failure left missing is not attempted.
    results: Vec<Result<Ack, Error>>,
}

impl Acks {
    /// Runs one step, recording what the store answered.
    fn run(&mut self, store: &Store, step: &Step) {
        let lib = &mut self.library;
        match *step {
            Album(user, name) => {
                let r = store.user(user).unwrap().ensure_album(name);
                if let Ok(id) = &r {
                    lib.albums.insert((user, name), *id);
                }
                self.results.push(r.map(|_| Ack::Album).map_err(Error::from));
            }
            Put(user, album, name, blob) => self.batch(store, user, album, &[(name, blob)]),
            Batch(user, album, files) => self.batch(store, user, album, files),
            Delete(user, name) => {
                let Some(id) = lib.live_file(user, name) else { return };
                let r = store.user(user).unwrap().delete(id);
                if r.is_ok() {
                    lib.files.get_mut(&(user, id)).expect("listed above").trashed = true;
                }
                self.results.push(r.map(|()| Ack::Delete).map_err(Error::from));
            }
            EmptyTrash(user) => {
                let r = store.user(user).unwrap().empty_trash();
                if r.is_ok() {
                    lib.files.retain(|(u, _), f| !(*u == user && f.trashed));
                }
                self.results.push(r.map(|_| Ack::EmptyTrash).map_err(Error::from));
            }
            Gc => self
                .results
                .push(store.gc_with_grace(Duration::ZERO).map(Ack::Gc).map_err(Error::from)),
        }
    }

    fn batch(&mut self, store: &Store, user: &'static str, album: &'static str, files: &[(&'static str, Blob)]) {
        let Some(&album) = self.library.albums.get(&(user, album)) else {
            return;
        };
        let uploads = files
            .iter()
            .map(|(name, blob)| Upload::new(album, *name, Content::from(blob.bytes()), DedupMode::Hash))
            .collect();
        for (r, &(name, blob)) in store.user(user).unwrap().upload_batch(uploads).into_iter().zip(files) {
            if let Ok(report) = &r {
                self.library.uploaded(user, album, name, blob, report);
            }
            self.results.push(r.map(Ack::Upload).map_err(Error::from));
        }
    }

    /// A failed `fsync` poisons the store: once an operation has been
    /// refused for it, no later one may succeed before a reopen.
    fn poison_is_sticky(&self) -> Result<(), String> {
        let Some(first) = self.results.iter().position(poisoned) else {
            return Ok(());
        };
        match self.results[first..].iter().find(|r| r.is_ok()) {
            Some(ok) => Err(format!("{ok:?} succeeded after the store was poisoned")),
            None => Ok(()),
        }
    }
}

fn options(sim: &SimFs) -> StoreOptions {
    StoreOptions::default()
        .segment_size(SEGMENT_SIZE)
        .compact_threshold(COMPACT_THRESHOLD)
        .fs(Arc::new(sim.clone()))
}

fn listing(store: &Store) -> Result<Listing, LibraryError> {
    let mut out = Listing::new();
    for user in USERS {
        for f in store
            .user(user)
            .unwrap()
            .files()?
            .into_iter()
            .chain(store.user(user).unwrap().trash()?)
        {
            let listed = Listed {
                name: f.name.to_string(),
                hash: f.hash,
                albums: f.albums.into_iter().collect(),
                trashed: f.trashed_ms.is_some(),
            };
            out.insert((user, f.id), listed);
        }
    }
    Ok(out)
}

/// Checks everything a reader of `store` can see against the libraries it
/// may hold: the acknowledged one, and (after a crash) the one with the
/// operation that was in flight done whole.
fn check_store(store: &Store, allowed: &[&Library]) -> Result<(), String> {
    let report = store.verify(true).map_err(|e| format!("verify failed: {e}"))?;
    if !report.ok {
        return Err(format!("verify found {:?}", report.problems));
    }
    let listed = listing(store).map_err(|e| format!("listing failed: {e}"))?;
    let Some(lib) = allowed.iter().find(|l| l.listing() == listed) else {
        let expected: Vec<Listing> = allowed.iter().map(|l| l.listing()).collect();
        return Err(format!("the store lists {listed:?}, expected one of {expected:?}"));
    };
    for (&(user, id), f) in &lib.files {
        match store.user(user).unwrap().read(id) {
            Ok(bytes) if bytes == f.blob.bytes() => {}
            Ok(_) => return Err(format!("{user}'s {} reads back other bytes", f.name)),
            Err(e) => return Err(format!("{user}'s {} cannot be read: {e}", f.name)),
        }
    }
    for user in USERS {
        let files: Vec<&FileState> = lib
            .files
            .iter()
            .filter(|((u, _), _)| *u == user)
            .map(|(_, f)| f)
            .collect();
        let distinct: BTreeMap<u64, usize> = files.iter().map(|f| (f.blob.seed, f.blob.len)).collect();
        let want = (
            distinct.values().sum::<usize>() as u64,
            files.iter().map(|f| f.blob.len as u64).sum::<u64>(),
            files.iter().filter(|f| !f.trashed).count() as u64,
            files.iter().filter(|f| f.trashed).count() as u64,
        );
        let u = store
            .user(user)
            .unwrap()
            .usage()
            .map_err(|e| format!("usage failed: {e}"))?;
        let got = (u.unique_bytes, u.logical_bytes, u.files, u.trashed_files);
        if got != want {
            return Err(format!(
                "{user}'s usage (unique, logical, files, trashed) is {got:?}, files imply {want:?}"
            ));
        }
    }
    Ok(())
}

/// The store takes a new upload and reads it back.
fn goes_on(store: &Store) -> Result<(), String> {
    let carol = store.user("carol").unwrap();
    let wrote = (|| -> Result<_, Error> {
        let album = carol.ensure_album("After")?;
        let r = carol.upload(album, "after.jpg", Content::from(AFTER.bytes()), DedupMode::Hash)?;
        Ok(carol.read(r.file_id)?)
    })();
    match wrote {
        Ok(bytes) if bytes == AFTER.bytes() => Ok(()),
        Ok(_) => Err("a new upload reads back other bytes".into()),
        Err(e) => Err(format!("the store refuses a new upload: {e}")),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A store opened from a crash image and a metadata checkpoint, on a disk of
/// its own. Fields drop in order: the store closes before its directory goes.
struct Reopened {
    store: Store,
    sim: SimFs,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

fn reopen(meta: &Path, image: &CrashImage) -> Result<Reopened, String> {
    reopen_watched(meta, image, |_| {})
}

/// Like [`reopen`], with `watch` called on the disk before the store opens
/// on it (to hook the operations of recovery).
fn reopen_watched(meta: &Path, image: &CrashImage, watch: impl FnOnce(&SimFs)) -> Result<Reopened, String> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    copy_dir(meta, &root.join("meta"));
    let sim = SimFs::new(&root);
    sim.restore(image);
    watch(&sim);
    let store = Store::open_with(&root, options(&sim)).map_err(|e| format!("reopening failed: {e}"))?;
    Ok(Reopened {
        store,
        sim,
        root,
        _dir: dir,
    })
}

/// Seeds per crash point for torn and garbled writes.
fn seeds() -> u64 {
    knob("KEEPSAKE_POWER_LOSS_SEEDS", 1)
}

/// The images a power cut at this moment may leave, without repeats (with
/// no unsynced write, a tear changes nothing).
fn crash_images(sim: &SimFs) -> Vec<(Tear, CrashImage)> {
    let mut out = vec![(Tear::None, sim.crash_image(Tear::None))];
    for seed in 0..seeds() {
        for tear in [Tear::Prefix { seed }, Tear::Garbage { seed }] {
            let image = sim.crash_image(tear);
            if out.iter().all(|(_, i)| *i != image) {
                out.push((tear, image));
            }
        }
    }
    out
}

/// The state a power cut leaves at one moment of the recording run.
struct CrashPoint {
    /// Steps of the workload that had returned.
    acked: usize,
    /// Whether step `acked` was running (its effect may be there or not).
    in_flight: bool,
    /// The operation about to start; `None` between two steps.
    op: Option<Op>,
    meta: PathBuf,
    images: Vec<(Tear, CrashImage)>,
}

impl CrashPoint {
    fn allowed<'a>(&self, libraries: &'a [Library]) -> Vec<&'a Library> {
        let last = if self.in_flight { self.acked + 1 } else { self.acked };
        libraries[self.acked..=last].iter().collect()
    }

    fn describe(&self, tear: Tear) -> String {
        let during = self.in_flight.then(|| format!("during {:?}", WORKLOAD[self.acked]));
        let at = self.op.as_ref().map(|op| format!("before {op:?}"));
        format!(
            "crash after {} steps {} {} ({tear:?})",
            self.acked,
            during.unwrap_or_default(),
            at.unwrap_or_default()
        )
    }
}

/// One run of the workload with the crash state taken at every operation
/// and after every step. The run is deterministic, so each test records its
/// own (in about a second) rather than sharing one that nothing would clean
/// up.
struct Recording {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ops: Vec<Op>,
    /// `libraries[k]`: what the first `k` steps leave.
    libraries: Vec<Library>,
    acks: Acks,
    points: Vec<CrashPoint>,
    took: Duration,
}

fn record() -> Recording {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir(&checkpoints).unwrap();
    let sim = SimFs::new(&root);
    // The hook needs the store, which does not exist while it opens: until
    // then nothing is acknowledged and no crash point is taken.
    let slot: Arc<Mutex<Option<Store>>> = Arc::default();
    let step = Arc::new(AtomicUsize::new(0));
    let points: Arc<Mutex<Vec<CrashPoint>>> = Arc::default();
    let ops: Arc<Mutex<Vec<Op>>> = Arc::default();
    let take = {
        let (sim, points) = (sim.clone(), points.clone());
        move |store: &Store, acked: usize, op: Option<Op>| {
            let mut points = points.lock().unwrap();
            let meta = checkpoints.join(points.len().to_string());
            store.checkpoint_metadata(&meta).expect("checkpoint");
            points.push(CrashPoint {
                acked,
                in_flight: op.is_some(),
                op,
                meta,
                images: crash_images(&sim),
            });
        }
    };
    let hook: Hook = {
        let (slot, step, ops, take) = (slot.clone(), step.clone(), ops.clone(), take.clone());
        Arc::new(move |op: &Op| {
            ops.lock().unwrap().push(op.clone());
            let store = slot.lock().unwrap().clone();
            if let Some(store) = store {
                take(&store, step.load(Ordering::SeqCst), Some(op.clone()));
            }
        })
    };
    sim.set_hook(Some(hook));
    let store = Store::open_with(&root, options(&sim)).expect("open");
    *slot.lock().unwrap() = Some(store.clone());
    let mut acks = Acks::default();
    let mut libraries = vec![Library::default()];
    for (k, s) in WORKLOAD.iter().enumerate() {
        step.store(k, Ordering::SeqCst);
        acks.run(&store, s);
        libraries.push(acks.library.clone());
        take(&store, k + 1, None);
    }
    // The hook holds the file system and the store: let both go.
    sim.set_hook(None);
    slot.lock().unwrap().take();
    if let Some(e) = acks.results.iter().find_map(|r| r.as_ref().err()) {
        panic!("the workload fails without faults: {e}");
    }
    let ops = std::mem::take(&mut *ops.lock().unwrap());
    let points = std::mem::take(&mut *points.lock().unwrap());
    Recording {
        _dir: dir,
        root,
        ops,
        libraries,
        acks,
        points,
        took: started.elapsed(),
    }
}

/// Fails with the first few failures of a sweep, and how many there were.
#[track_caller]
fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {what} failed; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .map(|f| f.chars().take(800).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Runs `check` on the crash images of every crash point (the clean one
/// only, unless `torn_too`), with the libraries the store may hold there.
/// Returns how many stores the checks opened, and the failures, each named
/// by its crash point.
fn sweep(
    rec: &Recording,
    torn_too: bool,
    mut check: impl FnMut(&CrashPoint, &CrashImage, &[&Library]) -> Result<usize, String>,
) -> (usize, Vec<String>) {
    let mut opened = 0;
    let mut failures = Vec::new();
    for point in &rec.points {
        let allowed = point.allowed(&rec.libraries);
        let images = if torn_too {
            &point.images[..]
        } else {
            &point.images[..1]
        };
        for (tear, image) in images {
            match check(point, image, &allowed) {
                Ok(n) => opened += n,
                Err(e) => failures.push(format!("{}: {e}", point.describe(*tear))),
            }
        }
    }
    (opened, failures)
}

/// The workload really exercises what the sweeps are about: links, a blob
/// shared between users, inline blobs, segment rolls, and GC runs that
/// remove blobs, compact segments and remove their files.
#[test]
fn the_workload_collects_blobs_and_compacts_segments() {
    let rec = &record();
    let outcomes: Vec<Outcome> = rec
        .acks
        .results
        .iter()
        .filter_map(|r| match r {
            Ok(Ack::Upload(u)) => Some(u.outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Linked).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Stored).count(), 10);
    let gcs: Vec<(u64, u64)> = rec
        .acks
        .results
        .iter()
        .filter_map(|r| match r {
            Ok(Ack::Gc(g)) => Some((g.blobs_removed, g.segments_compacted)),
            _ => None,
        })
        .collect();
    // The first GC also compacts away the segment of the shared blob's
    // second copy (the other user's upload writes one: DESIGN.md §1,
    // "Privacy between users").
    assert_eq!(gcs, [(2, 2), (1, 1)], "(blobs removed, segments compacted) per GC");
    let kinds: BTreeSet<OpKind> = rec.ops.iter().map(|op| op.kind).collect();
    for kind in [
        OpKind::Create,
        OpKind::Write,
        OpKind::SyncData,
        OpKind::SyncDir,
        OpKind::RemoveFile,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} in the workload");
    }
    eprintln!(
        "workload: {} steps, {} file-system operations, {} crash points recorded in {:.1?}",
        WORKLOAD.len(),
        rec.ops.len(),
        rec.points.len(),
        rec.took
    );
}

/// Runs the workload with operation `n` failing, then checks the store as
/// it is, after a restart, and after a power cut. Returns whether the fault
/// poisoned the store.
fn run_with_fault(n: u64, fault: Fault) -> Result<bool, String> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let sim = SimFs::new(&root);
    sim.fail_at(n, fault);
    let mut acks = Acks::default();
    let mut power_cut = None;
    if let Ok(store) = Store::open_with(&root, options(&sim)) {
        for step in WORKLOAD {
            acks.run(&store, step);
        }
        if acks.results.iter().all(Result::is_ok) {
            return Err("every operation succeeded: the fault was swallowed".into());
        }
        acks.poison_is_sticky()?;
        check_store(&store, &[&acks.library]).map_err(|e| format!("as is: {e}"))?;
        let meta = dir.path().join("checkpoint");
        store.checkpoint_metadata(&meta).expect("checkpoint");
        power_cut = Some((meta, sim.crash_image(Tear::None)));
    }
    if sim.ops() < n {
        return Err(format!("the run has only {} operations", sim.ops()));
    }
    let store = Store::open_with(&root, options(&sim)).map_err(|e| format!("restart failed: {e}"))?;
    check_store(&store, &[&acks.library]).map_err(|e| format!("after restart: {e}"))?;
    goes_on(&store).map_err(|e| format!("after restart: {e}"))?;
    drop(store);
    if let Some((meta, image)) = power_cut {
        let r = reopen(&meta, &image)?;
        check_store(&r.store, &[&acks.library]).map_err(|e| format!("after a power cut: {e}"))?;
    }
    Ok(acks.results.iter().any(poisoned))
}

/// Whatever operation fails, and however (an error, or a write that stores
/// half its bytes before failing for lack of space): some operation reports
/// it (or the open does); every operation that was acknowledged is there,
/// exact; every operation that failed left no trace at all (with faults
/// only in blob I/O, none fails after its commit); a failed `fsync` refuses
/// every later write until the store is reopened; and this holds as the
/// store is, after a restart, and after a power cut that follows the fault.
#[test]
fn a_failed_operation_anywhere_loses_nothing_acknowledged_and_leaves_no_trace() {
    let started = Instant::now();
    let kinds = operation_kinds();
    let mut failures = Vec::new();
    let (mut injected, mut poisoned) = (0, 0);
    for (i, kind) in kinds.iter().enumerate() {
        let n = i as u64 + 1;
        let faults: &[Fault] = match kind {
            OpKind::Write => &[Fault::Error, Fault::ShortWrite],
            _ => &[Fault::Error],
        };
        for &fault in faults {
            injected += 1;
            match run_with_fault(n, fault) {
                Ok(p) => poisoned += usize::from(p),
                Err(e) => failures.push(format!("{fault:?} at operation {n} ({kind:?}): {e}")),
            }
        }
    }
    eprintln!(
        "fault sweep: {} operations, {injected} faults injected ({poisoned} poisoned the store), in {:.1?}",
        kinds.len(),
        started.elapsed()
    );
    assert_no_failures("the faulted runs", &failures);
}

/// The kind of each file-system operation of a fault-free run, in order.
fn operation_kinds() -> Vec<OpKind> {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(dir.path());
    let kinds: Arc<Mutex<Vec<OpKind>>> = Arc::default();
    let seen = kinds.clone();
    sim.set_hook(Some(Arc::new(move |op: &Op| seen.lock().unwrap().push(op.kind))));
    let store = Store::open_with(dir.path(), options(&sim)).unwrap();
    let mut acks = Acks::default();
    for step in WORKLOAD {
        acks.run(&store, step);
    }
    sim.set_hook(None);
    let kinds = kinds.lock().unwrap().clone();
    kinds
}

/// A power cut at any operation or between any two steps, clean or with the
/// last unsynced write torn or garbled: after reopening, every acknowledged
/// operation (uploads, deletes, emptied trash) is there, the one in flight
/// is there whole or not at all, every file reads back exactly, and the
/// store takes new uploads.
#[test]
fn acknowledged_operations_survive_a_power_cut_at_any_point() {
    let started = Instant::now();
    let rec = &record();
    let (opened, failures) = sweep(rec, true, |point, image, allowed| {
        let r = reopen(&point.meta, image)?;
        check_store(&r.store, allowed)?;
        goes_on(&r.store)?;
        Ok(1)
    });
    eprintln!(
        "crash sweep: {} crash points, {opened} images reopened and checked, in {:.1?}",
        rec.points.len(),
        started.elapsed()
    );
    assert_no_failures("the crash images", &failures);
}

/// At every moment of the workload, every blob the committed metadata
/// references is already durable: reopened on a disk that holds only the
/// durable bytes, with the metadata as it was at that moment, the store
/// finds every segment at least as long as committed and every referenced
/// blob (of any file, live or trashed, or awaiting GC) re-hashes correctly.
#[test]
fn blob_bytes_are_durable_before_the_metadata_that_points_at_them() {
    let (_, failures) = sweep(&record(), false, |point, durable, _| {
        let r = reopen(&point.meta, durable)?;
        let report = r.store.verify(true).map_err(|e| format!("verify failed: {e}"))?;
        match report.problems.as_slice() {
            [] => Ok(1),
            problems => Err(format!("metadata points at bytes that are not durable: {problems:?}")),
        }
    });
    assert_no_failures("the crash points", &failures);
}

/// Compaction removes a segment file only once the commit that moves its
/// blobs out has happened: at the moment of each removal, the metadata of
/// that moment no longer names the file, so reopening from that moment's
/// disk (where the file is still there) removes it as an orphan, and every
/// file still reads back.
#[test]
fn segment_files_are_removed_only_after_the_commit_that_drops_them() {
    let rec = &record();
    let removals: Vec<(&CrashPoint, PathBuf)> = rec
        .points
        .iter()
        .filter_map(|p| {
            let op = p.op.as_ref().filter(|op| op.kind == OpKind::RemoveFile)?;
            let rel = op.path.strip_prefix(&rec.root).expect("below the root");
            rel.starts_with("segments").then(|| (p, rel.to_path_buf()))
        })
        .collect();
    assert_eq!(removals.len(), 3, "one segment per compaction");
    let mut failures = Vec::new();
    for (point, segment) in removals {
        let (tear, durable) = &point.images[0];
        assert!(
            durable.file(&segment).is_some(),
            "{} is on disk before its removal",
            segment.display()
        );
        let checked = reopen(&point.meta, durable).and_then(|r| {
            if r.sim.exists(&r.root.join(&segment)) {
                return Err(format!("{} is still named by the metadata", segment.display()));
            }
            check_store(&r.store, &point.allowed(&rec.libraries))
        });
        if let Err(e) = checked {
            failures.push(format!("{}: {e}", point.describe(*tear)));
        }
    }
    assert_no_failures("the removals", &failures);
}

/// The images a power cut at each operation of the recovery of `image` (at
/// the next open) would leave, without those equal to `image` itself. The
/// metadata stays `meta`: recovery commits nothing.
fn recovery_images(meta: &Path, image: &CrashImage) -> Result<Vec<(Op, CrashImage)>, String> {
    let taken: Arc<Mutex<Vec<(Op, CrashImage)>>> = Arc::default();
    let reopened = reopen_watched(meta, image, |sim| {
        let (disk, taken, before) = (sim.clone(), taken.clone(), image.clone());
        let hook: Hook = Arc::new(move |op: &Op| {
            let during = disk.crash_image(Tear::None);
            let mut taken = taken.lock().unwrap();
            if during != before && taken.iter().all(|(_, i)| *i != during) {
                taken.push((op.clone(), during));
            }
        });
        sim.set_hook(Some(hook));
    })?;
    reopened.sim.set_hook(None);
    let taken = std::mem::take(&mut *taken.lock().unwrap());
    Ok(taken)
}

/// Recovery at open is idempotent: a power cut while it truncates
/// unacknowledged bytes or removes orphan segments leaves a store that the
/// next open recovers just as well, with every acknowledged operation there.
#[test]
fn a_power_cut_during_recovery_is_recovered_by_the_next_open() {
    let started = Instant::now();
    let (opened, failures) = sweep(&record(), true, |point, image, allowed| {
        let during = recovery_images(&point.meta, image)?;
        for (op, second) in &during {
            let r = reopen(&point.meta, second)?;
            check_store(&r.store, allowed).map_err(|e| format!("power cut before recovery's {op:?}: {e}"))?;
        }
        Ok(during.len())
    });
    eprintln!(
        "recovery sweep: {opened} images of a power cut during recovery checked, in {:.1?}",
        started.elapsed()
    );
    assert!(opened > 0, "recovery repaired nothing in any crash image");
    assert_no_failures("the crash images", &failures);
}

/// Regression: the store synced each new segment's entry in `segments/` but
/// never `segments/`'s own entry in the store directory, so a power cut
/// after the first acknowledged upload to a new store could lose the whole
/// directory, and every blob in it.
#[test]
fn an_upload_to_a_new_store_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let sim = SimFs::new(&root);
    let store = Store::open_with(&root, options(&sim)).unwrap();
    let album = store.user("ann").unwrap().ensure_album("Camera").unwrap();
    let r = put(&store, "ann", album, "IMG_1.jpg", &PHOTO_1.bytes(), DedupMode::Hash);
    let meta = dir.path().join("checkpoint");
    store.checkpoint_metadata(&meta).unwrap();
    let reopened = reopen(&meta, &sim.crash_image(Tear::None)).unwrap();
    assert_eq!(
        reopened.store.user("ann").unwrap().read(r.file_id).unwrap(),
        PHOTO_1.bytes()
    );
}

/// A new store's `uploads/` directory entry must be durable before the
/// first session acknowledges bytes: a power cut right after an append must
/// leave the session at its acknowledged offset with its staged bytes, not
/// restart it from 0 because its directory vanished.
#[test]
fn a_new_stores_first_session_survives_a_power_cut_after_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let sim = SimFs::new(&root);
    let store = Store::open_with(&root, options(&sim)).unwrap();
    let ann = store.user("ann").unwrap();
    let album = ann.ensure_album("Videos").unwrap();
    let video = PHOTO_1.bytes();
    let options = keepsake::SessionOptions {
        length: Some(video.len() as u64),
        ..keepsake::SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
    };
    let keepsake::UploadStart::Session(id) = ann.begin_upload(options).unwrap() else {
        panic!("new content needs its bytes")
    };
    let half = video.len() / 2;
    assert_eq!(ann.append(id, 0, &video[..half]).unwrap(), half as u64);
    let meta = dir.path().join("checkpoint");
    store.checkpoint_metadata(&meta).unwrap();
    let reopened = reopen(&meta, &sim.crash_image(Tear::None)).unwrap();
    assert!(
        reopened.store.recovery_notes().is_empty(),
        "{:?}",
        reopened.store.recovery_notes()
    );
    let ann = reopened.store.user("ann").unwrap();
    assert_eq!(
        ann.upload_status(id).unwrap().offset,
        half as u64,
        "acknowledged bytes lost"
    );
    ann.append(id, half as u64, &video[half..]).unwrap();
    let r = ann.finish(id).unwrap();
    assert_eq!(ann.read(r.file_id).unwrap(), video);
}
