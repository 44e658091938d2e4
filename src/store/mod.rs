//! The store: opening it, its options, and the state every operation shares.
//!
//! One module per concept; none imports a sibling that imports it back
//! (`DESIGN.md` has the map and the allowed imports):
//!
//! | module | owns |
//! |---|---|
//! | `ledger` | every record a transaction keeps in step: users, files, albums, memberships, reference counts, usage, the quota rule, the trash move, segment occupancy |
//! | `upload` | the public vocabulary of uploads: [`Content`], [`Upload`], [`DedupMode`], [`Outcome`], [`UploadReport`], [`Preflight`] |
//! | `rules` | the duplicate rules (plan and apply of Skipped, Linked, Stored) and the hash-only operations `check` and `link` |
//! | `ingest` | getting bytes in: reading and hashing sources, spooling streams, copying into the blob log, the batch loop around the commit |
//! | `pipeline` | the reader-hasher threads that run ahead of the writer, and their buffer pool |
//! | `staging` | the `staging/` and `uploads/` directories, their recovery at open, the open session files |
//! | `delete_set` | files removed only after the commit that stops naming them |
//! | `session` | resumable upload sessions |
//! | `library` | albums and the files in them |
//! | `trash` | delete, restore, empty and expire the trash |
//! | `quota` | usage figures and the limit |
//! | `reservation` | quota held for writes in flight, before a byte is written |
//! | `merge` | finding and merging the duplicates a user already has |
//! | `damage` | damaged blobs, and healing them from a re-upload |
//! | `read` | verified reads of a file's bytes |
//! | `sources` | backup source records: what a backup saw of each file on disk |
//! | `read_only` | the read-only handle, [`ReadOnlyStore`] |
//! | `maintenance/` | store-wide work: `gc`, `verify`, `repair`, `stats` |
//! | `user` | the per-user handle, [`User`] |

mod damage;
mod delete_set;
mod edits;
mod home;
mod ingest;
mod ledger;
mod library;
mod listing;
mod maintenance;
mod merge;
mod pipeline;
mod quota;
mod read;
mod read_only;
mod reservation;
mod rules;
mod session;
mod source_file;
mod sources;
pub(crate) mod staging;
mod trash;
mod upload;
mod user;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::blob::{BlobLog, Recovery};
use crate::clock::{Clock, SystemClock};
use crate::commit::Committer;
#[cfg(feature = "testkit")]
use crate::error::StorageError;
use crate::error::{Fault, OpenError, Result};
use crate::fs::{Fs, OsFs};
use crate::health::Health;
use crate::meta::records::SegmentRecord;
use crate::meta::txn::Txn;
use crate::meta::{decode, keys, Cf, Meta};

pub use edits::FileEdit;
pub use library::{AlbumDeletion, AlbumInfo, FileInfo};
pub use listing::{Cursor, InvalidCursor, Page, MAX_PAGE};
pub use maintenance::{
    AffectedFile, BlobHome, GcReport, MigrateProgress, MigrateReport, Problem, RepairReport, Stats, VerifyReport,
};
pub use merge::{DuplicateGroup, MergeReport};
pub use quota::Usage;
pub use read::FileReader;
pub use read_only::{ReadOnlyStore, ReadOnlyUser};
pub use session::{SessionOptions, UploadStart, UploadStatus, MAX_UPLOAD_METADATA_BYTES, MAX_UPLOAD_METADATA_ENTRIES};
pub use sources::SeenPaths;
pub use trash::PurgeReport;
pub use upload::{Content, DedupMode, HashedUpload, Outcome, Preflight, Upload, UploadReport};
pub use user::User;

/// How a store behaves. Every field has a default suited to a photo library.
///
/// ```
/// use std::time::Duration;
/// let opts = keepsake::StoreOptions::default()
///     .trash_retention(Duration::from_secs(7 * 24 * 3600))
///     .segment_size(64 << 20);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) inline_threshold: u64,
    pub(crate) segment_size: u64,
    pub(crate) trash_retention: Duration,
    pub(crate) gc_grace: Duration,
    pub(crate) compact_threshold: f64,
    pub(crate) upload_expiry: Duration,
    pub(crate) max_sessions_per_user: usize,
    pub(crate) max_staged_bytes: u64,
    pub(crate) metadata_cache: usize,
    pub(crate) verify_range: u64,
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) clock: Arc<dyn Clock>,
    #[cfg(feature = "s3")]
    pub(crate) bucket: Option<crate::blob::BucketOptions>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            inline_threshold: 4096,
            segment_size: 128 << 20,
            trash_retention: Duration::from_secs(30 * 24 * 3600),
            gc_grace: Duration::from_secs(15 * 60),
            compact_threshold: 0.3,
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            max_sessions_per_user: 100,
            max_staged_bytes: 64 << 30,
            metadata_cache: crate::meta::DEFAULT_CACHE,
            verify_range: 1 << 18,
            fs: Arc::new(OsFs),
            clock: Arc::new(SystemClock),
            #[cfg(feature = "s3")]
            bucket: None,
        }
    }
}

impl StoreOptions {
    /// Blobs of at most this many bytes are stored inside the metadata
    /// database rather than in segments (default 4 KiB). They then need no
    /// segment write, no second sync and no compaction.
    pub fn inline_threshold(mut self, bytes: u64) -> Self {
        self.inline_threshold = bytes;
        self
    }

    /// A segment stops taking new records once it reaches this size (default
    /// 128 MiB). A larger blob gets a segment of its own. Small segments keep
    /// compaction short.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(4096);
        self
    }

    /// How long a file stays in the trash before `gc` deletes it permanently
    /// (default 30 days).
    pub fn trash_retention(mut self, d: Duration) -> Self {
        self.trash_retention = d;
        self
    }

    /// How long a blob must have had no reference before `gc` removes it
    /// (default 15 minutes). Uploads are safe against GC without it (see
    /// `DESIGN.md`); the grace is a second line of defence.
    pub fn gc_grace(mut self, d: Duration) -> Self {
        self.gc_grace = d;
        self
    }

    /// `gc` compacts a sealed segment once at least this fraction of it is
    /// garbage (default 0.3).
    pub fn compact_threshold(mut self, fraction: f64) -> Self {
        self.compact_threshold = fraction.clamp(0.0, 1.0);
        self
    }

    /// How long a resumable upload session lives after its last append
    /// (default 7 days); `gc` then removes it and its staged bytes.
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = keepsake::StoreOptions::default().upload_expiry(Duration::from_secs(24 * 3600));
    /// # let _ = opts;
    /// ```
    pub fn upload_expiry(mut self, d: Duration) -> Self {
        self.upload_expiry = d;
        self
    }

    /// The most unexpired upload sessions one user may have open at once
    /// (default 100); `begin_upload` past it fails with
    /// [`SessionError::TooManySessions`](crate::SessionError::TooManySessions).
    /// Each session costs a record, a staged file and a synced commit, and
    /// sessions are reachable from the network: one account must not be
    /// able to open them without end.
    ///
    /// ```
    /// let opts = keepsake::StoreOptions::default().max_sessions_per_user(10);
    /// # let _ = opts;
    /// ```
    pub fn max_sessions_per_user(mut self, n: usize) -> Self {
        self.max_sessions_per_user = n;
        self
    }

    /// The most bytes all users' upload sessions together may stage
    /// (default 64 GiB): declared lengths, and the bytes received while a
    /// length is deferred. Beyond it, a begin, an append or a length is
    /// refused with [`SessionError::StagingFull`](crate::SessionError::StagingFull)
    /// until sessions finish, are aborted or expire. Per-user quotas bound
    /// each user's share of it (staged bytes count against the quota); this
    /// bounds the disk when users have no quota.
    ///
    /// ```
    /// let opts = keepsake::StoreOptions::default().max_staged_bytes(8 << 30);
    /// # let _ = opts;
    /// ```
    pub fn max_staged_bytes(mut self, bytes: u64) -> Self {
        self.max_staged_bytes = bytes;
        self
    }

    /// The memory, in bytes, that the metadata database may keep of its
    /// blocks (default 256 MiB; filled only as blocks are read). Every
    /// lookup whose block is not kept reads it again and checks its
    /// checksum: on a store of a million files, where the metadata is about
    /// 600 MB, a `--rehash` re-run of 50,000 files took 19.5 s with 64 MiB
    /// and 4.1 s with 256 MiB.
    ///
    /// ```
    /// let opts = keepsake::StoreOptions::default().metadata_cache(1 << 30);
    /// # let _ = opts;
    /// ```
    pub fn metadata_cache(mut self, bytes: usize) -> Self {
        self.metadata_cache = bytes;
        self
    }

    /// How many file records [`Store::verify`] and [`Store::repair`]
    /// recompute the blob side of at once, on average (default 262,144; at
    /// least 1). Each costs about 80 bytes, plus about 40 per blob of its
    /// range, so the default keeps a survey's recomputed facts near
    /// 30 MiB. A store with more files is surveyed one slice of the hash
    /// space at a time, each one more pass over the file records: a smaller
    /// value trades time for memory, never findings.
    ///
    /// ```
    /// let opts = keepsake::StoreOptions::default().verify_range(1 << 16);
    /// # let _ = opts;
    /// ```
    pub fn verify_range(mut self, files: u64) -> Self {
        self.verify_range = files.max(1);
        self
    }

    /// The file system for blob data (default: the real one). Tests use this
    /// to inject I/O faults and simulated power loss.
    pub fn fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// Keeps the store's blobs in an S3-compatible bucket (feature `s3`).
    ///
    /// A store that does not exist yet is created with its blobs in
    /// `bucket.url`, which it records (the URL only: endpoint, region and
    /// credentials come from these options at every open, or, when a store
    /// that records a bucket is opened without them, from the AWS
    /// environment variables, [`BucketOptions::from_env`](crate::BucketOptions::from_env)).
    /// Every other operation works unchanged; `DESIGN.md` §15 says how the
    /// bytes are laid out and when they are durable.
    ///
    /// ```no_run
    /// use keepsake::{BucketOptions, Store, StoreOptions};
    /// let mut bucket = BucketOptions::new("s3://photos/keepsake");
    /// bucket.endpoint = Some("http://127.0.0.1:8333".into());
    /// bucket.allow_http = true;
    /// let store = Store::open_with("/srv/keepsake", StoreOptions::default().bucket(bucket)).unwrap();
    /// # drop(store);
    /// ```
    #[cfg(feature = "s3")]
    pub fn bucket(mut self, bucket: crate::blob::BucketOptions) -> Self {
        self.bucket = Some(bucket);
        self
    }

    /// The source of time (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// A keepsake store: content-addressed blobs, users' files and albums, trash
/// and quota, in one directory.
///
/// `Store` is `Send + Sync`; clone it (cheaply) or share it between threads.
/// One process at a time may open a store directory.
///
/// ```
/// use keepsake::{Content, DedupMode, Outcome, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let alice = store.user("alice").unwrap();
/// let album = alice.ensure_album("Camera").unwrap();
/// let first = alice
///     .upload(album, "IMG_1.JPG", Content::from(&b"pixels"[..]), DedupMode::NameAndHash)
///     .unwrap();
/// assert_eq!(first.outcome, Outcome::Stored);
/// let again = alice
///     .upload(album, "IMG_1.JPG", Content::from(&b"pixels"[..]), DedupMode::NameAndHash)
///     .unwrap();
/// assert_eq!(again.outcome, Outcome::Skipped);
/// assert_eq!(alice.read(first.file_id).unwrap(), &b"pixels"[..]);
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) meta: Meta,
    pub(crate) blobs: BlobLog,
    /// Outboards read lately (`store::read`).
    pub(crate) outboards: crate::blob::outboard::Cache,
    /// Uploads and commits counted for [`Store::metrics`].
    pub(crate) counters: crate::metrics::Counters,
    pub(crate) committer: Committer,
    pub(crate) health: Arc<Health>,
    pub(crate) options: StoreOptions,
    /// One GC or compaction at a time, and no segment moved by a migration
    /// while one runs.
    pub(crate) gc_lock: Mutex<()>,
    /// One migration of the blobs at a time.
    pub(crate) migration: Mutex<()>,
    pub(crate) recovery: Recovery,
    pub(crate) sessions: staging::Sessions,
    /// Quota held for writes in flight.
    pub(crate) holds: reservation::Holds,
    /// Held for the store's lifetime: the lock that keeps a second process
    /// out.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default options.
    ///
    /// # Errors
    ///
    /// Those of [`Store::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, OpenError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens the store in `dir`. Recovery runs first: bytes written after the
    /// last commit are dropped, segment files no commit refers to are removed.
    ///
    /// Fails with [`OpenError::InUse`] while another `Store` (in any process)
    /// has the directory open.
    ///
    /// # Errors
    ///
    /// - [`OpenError::InUse`] while another `Store` or [`ReadOnlyStore`] (in any
    ///   process) has the directory open.
    /// - [`OpenError::UnsupportedFormat`] if a newer, incompatible version of keepsake
    ///   wrote the store.
    /// - [`OpenError::Io`] if a file operation fails: creating the directory, taking
    ///   the lock, or recovery's reads, truncations and removals.
    /// - [`OpenError::Database`] if the metadata database cannot be opened.
    /// - [`OpenError::Corrupt`] if the metadata is not in a form this build can read.
    /// - [`OpenError::Blobs`] if the options name a bucket the store does not keep
    ///   its blobs in, or the store keeps them in a bucket and this build has no
    ///   `s3` feature.
    /// - [`OpenError::Io`] also if the store's bucket answers that it is not
    ///   this store's (another store claimed the prefix, or it holds none of
    ///   the store's packs), or refuses the request (no such bucket,
    ///   credentials refused). A bucket that gives no answer (no connection,
    ///   timeouts, 5xx after the retries) is not an error: the store opens
    ///   with a recovery note, and checks the bucket when it first needs it.
    ///
    /// ```
    /// use keepsake::{Store, StoreOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open_with(dir.path(), StoreOptions::default().segment_size(16 << 20)).unwrap();
    /// assert!(matches!(Store::open(dir.path()), Err(keepsake::OpenError::InUse { .. })));
    /// # drop(store);
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store, OpenError> {
        let root = dir.as_ref().to_path_buf();
        let io = |what: &str, p: &Path| {
            let context = format!("{what} {}", p.display());
            move |source| OpenError::Io { context, source }
        };
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        let lock = lock(&root)?;
        let meta = Meta::open(&root.join("meta"), options.metadata_cache)?;
        let mut committed = BTreeMap::new();
        for (k, v) in meta.scan_all(Cf::Segments, &[])? {
            let id = keys::u64_at(&k, 0).ok_or_else(|| OpenError::Corrupt("bad segment key".into()))?;
            let rec: SegmentRecord = decode(&v)?;
            committed.insert(id, (rec.committed_len, rec.site));
        }
        let health = Arc::new(Health::default());
        let holds_packs = committed.values().any(|&(_, site)| site == crate::blob::Site::Bucket);
        let homes = home::open(&root, &meta, &options, holds_packs)?;
        if let Some(id) = committed
            .iter()
            .find(|(_, &(_, site))| homes.home(site).is_none())
            .map(|(id, _)| id)
        {
            return Err(OpenError::Corrupt(format!(
                "segment {id} is in a bucket, and the store records none"
            )));
        }
        let (blobs, mut recovery) = BlobLog::open(
            options.fs.clone(),
            root.join(crate::blob::SEGMENTS_DIR),
            Arc::new(homes),
            &committed,
            options.segment_size,
            health.clone(),
        )
        .map_err(|e| match e {
            Fault::Io { context, source } => OpenError::Io { context, source },
            other => OpenError::Corrupt(other.to_string()),
        })?;
        let staged = staging::recover(&*options.fs, &root, &meta)?;
        let staging_limit = options.max_staged_bytes;
        recovery.notes.extend(staged.notes);
        let mut store = Store {
            inner: Arc::new(Inner {
                root,
                meta,
                blobs,
                outboards: Default::default(),
                counters: Default::default(),
                committer: Committer::default(),
                health,
                options,
                gc_lock: Mutex::new(()),
                migration: Mutex::new(()),
                recovery,
                sessions: staging::Sessions::new(staged.bytes, staging_limit),
                holds: Default::default(),
                _lock: lock,
            }),
        };
        // Best effort, as noting damage always is: a store that cannot
        // record it (a full disk) still opens, so that what is left can be
        // read, collected and repaired.
        let note = match store.inner.note_lost_copies() {
            Ok(0) => None,
            Ok(marked) => Some(format!(
                "{marked} blobs of missing or short segments marked damaged: the next upload of their content heals them (`verify --scrub` names the files)"
            )),
            Err(e) => Some(format!("could not mark the blobs of missing or short segments damaged: {e}")),
        };
        if let Some(note) = note {
            // Notes are read-only once the store is shared; it is not yet.
            let inner = Arc::get_mut(&mut store.inner).expect("not yet shared");
            inner.recovery.notes.push(note);
        }
        Ok(store)
    }

    /// Whether `dir` holds a store (without opening or creating it).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// assert!(!keepsake::Store::exists(dir.path()));
    /// drop(keepsake::Store::open(dir.path()).unwrap());
    /// assert!(keepsake::Store::exists(dir.path()));
    /// ```
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join("meta").join("CURRENT").is_file()
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.root
    }

    /// Where the store's new blobs go: `local disk`, or its bucket's
    /// `s3://BUCKET/PREFIX`. That is where all of them live, unless a
    /// migration between the two is under way or was cut off
    /// ([`Store::migrate_blobs`]); [`Stats`]' `disk_bytes` and
    /// `bucket_bytes` say how much is in each.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert_eq!(store.blob_store(), "local disk");
    /// ```
    pub fn blob_store(&self) -> &str {
        self.inner.blobs.home_name()
    }

    /// What recovery repaired or found damaged when the store was opened,
    /// one line each; empty after a clean shutdown.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert!(store.recovery_notes().is_empty());
    /// assert_eq!(store.path(), dir.path());
    /// ```
    pub fn recovery_notes(&self) -> &[String] {
        &self.inner.recovery.notes
    }

    /// Writes a copy of the metadata database as it is at this moment to
    /// `dest`, a directory that must not exist yet. Every commit is synced,
    /// so with the blob files' durable state at the same moment (see
    /// `testkit::sim_fs`) it makes the exact store a power cut would leave:
    /// put it in place of `meta/` to reopen that store. Test infrastructure
    /// only (feature `testkit`).
    ///
    /// # Errors
    ///
    /// - [`StorageError::Database`] if the database cannot make the copy (`dest`
    ///   exists, say).
    #[cfg(feature = "testkit")]
    pub fn checkpoint_metadata(&self, dest: &Path) -> Result<(), StorageError> {
        Ok(self.inner.meta.checkpoint(dest)?)
    }
}

impl Inner {
    pub(crate) fn now_ms(&self) -> u64 {
        self.options.clock.now_ms()
    }

    /// Runs `work` as a durable transaction through the group committer.
    pub(crate) fn commit<R, F>(&self, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'m> FnOnce(&mut Txn<'m>) -> Result<R> + Send + 'static,
    {
        let start = std::time::Instant::now();
        let out = self.committer.run(&self.meta, &self.health, work);
        if out.is_ok() {
            self.counters.commit(start.elapsed());
        }
        out
    }

    /// The id of an existing user, or `None`: reads never create users.
    pub(crate) fn user_id(&self, user: &str) -> Result<Option<u64>> {
        ledger::user_id(&self.meta, user)
    }
}

/// Takes the store's exclusive lock, held as long as the returned file is
/// open: one process (and one `Store` or `ReadOnlyStore`) at a time.
pub(crate) fn lock(root: &Path) -> Result<File, OpenError> {
    let lock_path = root.join("keepsake.lock");
    let io = |what: &str| {
        let context = format!("{what} {}", lock_path.display());
        move |source| OpenError::Io { context, source }
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("opening"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: root.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io("locking")(e)),
    }
}

/// `Store` is shared between threads by design; this fails to compile if a
/// field ever stops it.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};
