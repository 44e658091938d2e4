//! Shared setup for the integration tests: opening stores, deterministic
//! content, a manual clock, a fault-injecting file system, and the
//! end-of-scenario integrity check.
#![allow(dead_code, reason = "each test crate uses its own subset of these helpers")]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keepsake::fs::{Fs, FsFile, OsFs};
use keepsake::{
    AlbumId, Clock, Content, ContentHash, DedupMode, Error, LibraryError, ReadError, SessionError, SessionOptions,
    Store, StoreOptions, UploadError, UploadId, UploadReport, UploadStart,
};

pub mod weed;

/// Above the default 4096-byte inline threshold, so blobs go to segments.
pub const BIG: usize = 10 * 1024;

/// Opens (or reopens) the store in `dir` with default options.
pub fn open(dir: &Path) -> Store {
    Store::open_with(dir, weed::for_dir(dir, StoreOptions::default())).expect("open store")
}

/// A fresh store opened with `options` in a temporary directory (kept
/// alive by the returned guard).
pub fn fresh_store(options: StoreOptions) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_with(dir.path(), weed::for_dir(dir.path(), options)).expect("open store");
    (dir, store)
}

/// A fresh store in a temporary directory (kept alive by the returned
/// guard), with one album for one user: the start of most scenarios.
pub fn store_with_album(user: &str, album: &str) -> (tempfile::TempDir, Store, AlbumId) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(dir.path());
    let album = store.user(user).unwrap().ensure_album(album).expect("album");
    (dir, store, album)
}

/// Deterministic pseudo-random bytes: distinct seeds give distinct contents.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Uploads `bytes` and unwraps the result.
pub fn put(store: &Store, user: &str, album: AlbumId, name: &str, bytes: &[u8], mode: DedupMode) -> UploadReport {
    store
        .user(user)
        .unwrap()
        .upload(album, name, Content::from(bytes), mode)
        .unwrap_or_else(|e| panic!("upload of {name} by {user}: {e}"))
}

/// Uploads each content as `{i}.jpg` with the mobile rule, returning the
/// new files' ids in order.
pub fn put_all(store: &Store, user: &str, album: AlbumId, contents: &[Vec<u8>]) -> Vec<keepsake::FileId> {
    contents
        .iter()
        .enumerate()
        .map(|(i, c)| put(store, user, album, &format!("{i}.jpg"), c, DedupMode::Hash).file_id)
        .collect()
}

/// Like [`put`], but returns the error the upload is expected to fail with.
pub fn put_err(store: &Store, user: &str, album: AlbumId, name: &str, bytes: &[u8], mode: DedupMode) -> UploadError {
    match store
        .user(user)
        .unwrap()
        .upload(album, name, Content::from(bytes), mode)
    {
        Ok(r) => panic!("upload of {name} by {user} should have failed, got {r:?}"),
        Err(e) => e,
    }
}

/// Whether `r` failed because the user has no file `id` (whichever family
/// the operation's error is: a read's or the library's).
pub fn is_unknown_file<T>(r: Result<T, Error>, id: keepsake::FileId) -> bool {
    matches!(r, Err(Error::Library(LibraryError::UnknownFile(f)) | Error::Read(ReadError::UnknownFile(f))) if f == id)
}

/// Whether `r` failed because the user has no such album.
pub fn is_unknown_album<T>(r: Result<T, Error>) -> bool {
    matches!(
        r,
        Err(Error::Library(LibraryError::UnknownAlbum(_))
            | Error::Upload(UploadError::UnknownAlbum(_))
            | Error::Session(SessionError::Upload(UploadError::UnknownAlbum(_))))
    )
}

/// Asserts that a full verification with scrub finds no problem.
#[track_caller]
pub fn assert_verified(store: &Store) {
    let report = store.verify(true).expect("verify runs");
    assert!(report.ok, "verify found problems: {:#?}", report.problems);
}

/// The files that a verify report says have damaged bytes.
pub fn damaged_files(report: &keepsake::VerifyReport) -> Vec<keepsake::FileId> {
    report
        .problems
        .iter()
        .filter(|p| p.kind == "damaged-blob")
        .flat_map(|p| p.files.iter().map(|f| f.file_id))
        .collect()
}

/// The ids of the files in an album, oldest first.
pub fn album_ids(store: &Store, user: &str, album: AlbumId) -> Vec<u64> {
    store
        .user(user)
        .unwrap()
        .album_files(album)
        .expect("album_files")
        .iter()
        .map(|f| f.id.0)
        .collect()
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at a plausible present time.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Default options driven by `clock`.
pub fn options_with_clock(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions::default().clock(clock.clone())
}

/// The real file system with faults to inject into segment and staging
/// files: `sync_data` failing while `fail_sync` is set; writes failing with
/// `ENOSPC` after writing half their bytes while `disk_full` is set, as a
/// filling disk does; and `sync_data` pausing once, on request, until
/// released (to hold an upload between writing its bytes and committing
/// them); and mapping a file failing with `EMFILE` (too many open files)
/// while `fail_map` is set.
#[derive(Debug, Clone, Default)]
pub struct TestFs {
    pub fail_sync: Arc<AtomicBool>,
    pub disk_full: Arc<AtomicBool>,
    pub fail_map: Arc<AtomicBool>,
    pub io: Arc<IoCounts>,
    gate: Arc<SyncGate>,
}

/// Work done on files through a [`TestFs`].
#[derive(Debug, Default)]
pub struct IoCounts {
    pub bytes_written: AtomicU64,
    pub syncs: AtomicU64,
    pub creates: AtomicU64,
}

impl IoCounts {
    /// (bytes written, syncs of files and directories, files created) so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.bytes_written.load(Ordering::SeqCst),
            self.syncs.load(Ordering::SeqCst),
            self.creates.load(Ordering::SeqCst),
        )
    }
}

#[derive(Debug, Default)]
struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    paused: bool,
    released: bool,
}

impl TestFs {
    /// The next `sync_data` (of any file) waits for [`release_sync`](Self::release_sync).
    pub fn pause_next_sync(&self) {
        self.gate.state.lock().unwrap().armed = true;
    }

    /// Blocks until a `sync_data` is paused.
    pub fn wait_until_sync_paused(&self) {
        let mut s = self.gate.state.lock().unwrap();
        while !s.paused {
            s = self.gate.changed.wait(s).unwrap();
        }
    }

    /// Lets the paused `sync_data` go on.
    pub fn release_sync(&self) {
        self.gate.state.lock().unwrap().released = true;
        self.gate.changed.notify_all();
    }

    fn wrap(&self, inner: Box<dyn FsFile>) -> Box<dyn FsFile> {
        Box::new(TestFile {
            inner,
            fs: self.clone(),
        })
    }
}

struct TestFile {
    inner: Box<dyn FsFile>,
    fs: TestFs,
}

impl Fs for TestFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        OsFs.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.io.creates.fetch_add(1, Ordering::SeqCst);
        Ok(self.wrap(OsFs.create(path)?))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(self.wrap(OsFs.open(path)?))
    }
    unsafe fn map(&self, path: &Path) -> io::Result<Bytes> {
        if self.fail_map.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(24));
        }
        // SAFETY: the caller's contract (`Fs::map`) is passed on unchanged.
        unsafe { OsFs.map(path) }
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.io.syncs.fetch_add(1, Ordering::SeqCst);
        OsFs.sync_dir(dir)
    }
}

impl FsFile for TestFile {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.fs.disk_full.load(Ordering::SeqCst) {
            self.inner.write_all_at(offset, &buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.fs.io.bytes_written.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.inner.write_all_at(offset, buf)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fs.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.fs.io.syncs.fetch_add(1, Ordering::SeqCst);
        let gate = &self.fs.gate;
        let mut s = gate.state.lock().unwrap();
        if s.armed {
            s.armed = false;
            s.paused = true;
            gate.changed.notify_all();
            while !s.released {
                s = gate.changed.wait(s).unwrap();
            }
            *s = GateState::default();
        }
        drop(s);
        self.inner.sync_data()
    }
}

/// The segment files of the store in `store_dir`, oldest first.
pub fn segment_files(store_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(store_dir.join("segments"))
        .expect("segments directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips one bit of `content`'s bytes, `at` bytes into them, in the segment
/// file that holds them (the store in `store_dir` must be closed), or in
/// its pack in the bucket, in s3 mode ([`weed::s3_mode`]).
pub fn damage_content(store_dir: &Path, content: &[u8], at: usize) {
    if weed::s3_mode() {
        let server = weed::shared();
        for key in server.keys(&format!("{}/packs/", weed::prefix_for(store_dir))) {
            let mut bytes = server.get(&key).expect("a listed pack");
            if let Some(start) = bytes.windows(64).position(|w| w == &content[..64]) {
                bytes[start + at] ^= 0x10;
                server.put(&key, &bytes);
                return;
            }
        }
        panic!("the content is in no pack");
    }
    for seg in segment_files(store_dir) {
        let mut bytes = std::fs::read(&seg).unwrap();
        if let Some(start) = bytes.windows(64).position(|w| w == &content[..64]) {
            bytes[start + at] ^= 0x10;
            std::fs::write(&seg, &bytes).unwrap();
            return;
        }
    }
    panic!("the content is in no segment");
}

/// A test's size knob: the environment variable `name` as a number, else
/// `default`. A value that is not a number is a mistake worth stopping for,
/// not a reason to run the default quietly.
pub fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Begins a session that needs bytes, returning its id.
pub fn begin(
    store: &Store,
    user: &str,
    album: AlbumId,
    name: &str,
    length: Option<u64>,
    expected: Option<ContentHash>,
) -> UploadId {
    begin_mode(store, user, album, name, DedupMode::Hash, length, expected)
}

pub fn begin_mode(
    store: &Store,
    user: &str,
    album: AlbumId,
    name: &str,
    mode: DedupMode,
    length: Option<u64>,
    expected: Option<ContentHash>,
) -> UploadId {
    match store.user(user).unwrap().begin_upload(SessionOptions {
        length,
        expected_hash: expected,
        ..SessionOptions::new(album, name, mode)
    }) {
        Ok(UploadStart::Session(id)) => id,
        other => panic!("begin_upload of {name} should open a session, got {other:?}"),
    }
}
