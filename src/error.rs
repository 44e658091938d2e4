//! Error types, one enum per operation family.
//!
//! | family | returned by |
//! |---|---|
//! | [`OpenError`] | [`Store::open`](crate::Store::open), [`ReadOnlyStore::open`](crate::ReadOnlyStore::open) |
//! | [`NameError`] | [`Store::user`](crate::Store::user), [`ReadOnlyStore::user`](crate::ReadOnlyStore::user) |
//! | [`UploadError`] | one-shot uploads and batches, `check`, `link` |
//! | [`SessionError`] | resumable upload sessions |
//! | [`LibraryError`] | albums, files, the trash, quota, duplicates and merging, backup source records |
//! | [`ReadError`] | reading a file's bytes |
//! | [`StorageError`] | store-wide maintenance (`gc`, `verify`, `repair`, `stats`), and inside every family above as its `Storage` variant |
//!
//! Each family names only what its operations can fail with, so a `match`
//! on it is exhaustive over real outcomes; all are `#[non_exhaustive]`, so a
//! new failure mode is added without breaking callers. The I/O error stays
//! typed ([`StorageError::Io`] holds the [`std::io::Error`], its
//! [`ErrorKind`](std::io::ErrorKind) reachable with [`StorageError::io_kind`]).
//!
//! [`Error`] is any of them (each family converts into it), for a caller
//! that runs operations of several families and handles their errors alike;
//! [`Error::storage`] finds the storage failure under any of them.
//!
//! Inside, the engine passes one internal type around; converting it into a
//! family keeps the variant, and a variant the family does not have (which
//! none of the family's operations returns) becomes [`StorageError::Bug`],
//! never a silent success.

use std::io;
use std::path::PathBuf;

use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId, UploadId};

/// What kind of name failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameKind {
    /// A file's name (the last component of its original path).
    File,
    /// An album's name.
    Album,
    /// A user's name.
    User,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::File => "file name",
            NameKind::Album => "album name",
            NameKind::User => "user name",
        })
    }
}

/// A user, album or file name that is not acceptable (`DESIGN.md` §11).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {reason}")]
pub struct NameError {
    /// Which kind of name.
    pub kind: NameKind,
    /// The offending name, shortened to 64 characters for display.
    pub name: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Storing the content would take the user past their quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quota exceeded: {used} of {limit} bytes used, this upload needs {needed} more")]
pub struct QuotaExceeded {
    /// The user's limit in bytes.
    pub limit: u64,
    /// Bytes already counted against the limit: the unique bytes charged,
    /// what the user's upload sessions reserve, and (for a refusal before
    /// any byte was written) what the user's other writes in flight hold.
    pub used: u64,
    /// Bytes this upload would add.
    pub needed: u64,
}

/// The content's hash is not the one the caller declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("content hash {actual} does not match the expected {expected}")]
pub struct HashMismatch {
    /// What the caller declared.
    pub expected: ContentHash,
    /// What the bytes hash to.
    pub actual: ContentHash,
}

/// Why [`Store::open`](crate::Store::open) failed. Nothing was changed on disk
/// except what recovery had already repaired (truncated tails, orphan segment
/// and staged files), which is always safe to redo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Store` in this process) has the store open.
    #[error("store {path} is in use by another process")]
    InUse {
        /// The store directory.
        path: PathBuf,
    },
    /// The store was written by a newer, incompatible version of keepsake,
    /// or (read-only) by an older one that a writable open must migrate
    /// first.
    #[error("store {path} has format version {found}; this keepsake supports version {supported}")]
    UnsupportedFormat {
        /// The store directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The metadata database could not be opened or read.
    #[error("metadata database: {0}")]
    Database(String),
    /// The metadata is not in a form this build can read.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The blob store asked for is not the one the store keeps its blobs
    /// in (another bucket, or a bucket for a store on local disk), or
    /// this build cannot reach it (no `s3` feature).
    #[error("{0}")]
    Blobs(String),
}

/// A failure of the storage underneath an operation: the disk, the metadata
/// database, a store that refuses writes, a race to retry. Store-wide
/// maintenance returns it; every other family carries it as its `Storage`
/// variant.
///
/// Every error leaves the store consistent: an operation that fails has
/// changed nothing (its metadata batch was never committed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error; its [`kind`](io::Error::kind) tells a full
        /// disk ([`io::ErrorKind::StorageFull`]) from a permission problem.
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Database(String),
    /// A metadata record could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// An earlier write failed in a way that may have left durable state
    /// unknown (a failed `fsync`), so the store refuses writes until it is
    /// reopened, which re-establishes what is durable.
    #[error("store refuses writes after an earlier failure ({0}); reopen it")]
    Poisoned(String),
    /// The operation panicked inside its commit: nothing of it was written,
    /// and the operations committed with it were not affected. A bug in
    /// keepsake.
    #[error("internal error: the operation panicked inside its commit; nothing of it was written ({0})")]
    CommitPanicked(String),
    /// The operation lost a race with concurrent ones too many times (for
    /// example, a blob it needed was collected by `gc` again and again).
    /// Nothing was written; trying again is safe and expected to succeed.
    #[error("{0}; nothing was written, try again")]
    Contended(String),
    /// The engine produced an error that this family's operations never
    /// return: a bug in keepsake, reported rather than hidden.
    #[error("internal error: {0}")]
    Bug(String),
}

/// Why [`Store::migrate_blobs`](crate::Store::migrate_blobs) could not
/// move a store's blobs. What committed before the error stays committed;
/// running the migration again goes on from there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The destination cannot be this store's: a bucket other than the one
    /// it records, or a prefix another store has claimed.
    #[error("{0}")]
    Blobs(String),
    /// A migration of this store's blobs is running already.
    #[error("a migration of this store's blobs is running already")]
    Busy,
    /// A read, write, request or commit failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl StorageError {
    /// The kind of the underlying I/O error, if this is one.
    ///
    /// ```
    /// use std::io;
    /// let e = keepsake::StorageError::Io { context: "writing".into(), source: io::ErrorKind::StorageFull.into() };
    /// assert_eq!(e.io_kind(), Some(io::ErrorKind::StorageFull));
    /// ```
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Why an upload ([`User::upload`](crate::User::upload),
/// [`User::upload_batch`](crate::User::upload_batch),
/// [`User::check`](crate::User::check), [`User::link`](crate::User::link))
/// failed. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The file name is not acceptable.
    #[error(transparent)]
    InvalidName(NameError),
    /// No such album for this user.
    #[error("no album {0}")]
    UnknownAlbum(String),
    /// Storing the content would take the user past their quota.
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// The content's hash is not the one the caller declared.
    #[error(transparent)]
    HashMismatch(HashMismatch),
    /// The source changed while it was being read: its size, modification
    /// time or change time moved during the read, what was read disagrees
    /// with its size, (a file read twice) its content differs between the
    /// hashing pass and the writing pass, or (with
    /// [`Upload::expect_source`](crate::Upload::expect_source)) it is not the
    /// file, or not the version of it, that the caller saw.
    #[error("{0} changed while it was being read; nothing was stored")]
    ContentChanged(String),
    /// A [`Content::Path`](crate::Content::Path) is not a regular file: a
    /// symbolic link (never followed, not even one swapped in after a walk
    /// saw a file), a FIFO, a socket or a device. Nothing was read from it,
    /// and opening it did not block.
    #[error("{0} is not a regular file (symbolic links are never followed); nothing was stored")]
    NotAFile(String),
    /// [`User::link`](crate::User::link) was asked to complete an upload
    /// that needs the content: only a duplicate of the user's own live file
    /// can be completed from its hash alone.
    #[error("this upload needs its content: no live file of this user matches")]
    ContentRequired,
    /// The storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

/// Why an operation on a resumable upload session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The upload the session makes was refused, as a one-shot upload of
    /// the same content would be: at `begin_upload` (its file name, its
    /// album, its declared length against the quota, a declared hash that
    /// completes it at once) or at `finish` (the duplicate rules, the quota,
    /// the declared hash).
    #[error(transparent)]
    Upload(UploadError),
    /// No upload session with this id for this user: it never existed, was
    /// finished, aborted or expired, or belongs to another user (which is
    /// deliberately indistinguishable).
    #[error("no upload session {0}")]
    UnknownUpload(UploadId),
    /// An append did not start where the session's durable bytes end. The
    /// client resumes by sending again from `expected` (tus's 409 with
    /// `Upload-Offset`).
    #[error("upload offset mismatch: the session has {expected} durable bytes, resume from there")]
    OffsetMismatch {
        /// The session's durable length.
        expected: u64,
    },
    /// Another append, finish or abort of this upload session is in
    /// progress; one writer at a time.
    #[error("upload session {0} is busy with another request")]
    UploadBusy(UploadId),
    /// The bytes would run past the session's declared length.
    #[error("upload would exceed its declared length of {declared} bytes")]
    LengthExceeded {
        /// The declared length.
        declared: u64,
    },
    /// A declared length cannot be set: it was already set to another value,
    /// or it is below the bytes already received.
    #[error("cannot set the upload length to {requested}: {reason}")]
    InvalidLength {
        /// The length asked for.
        requested: u64,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A session with a declared length was finished before all of it
    /// arrived.
    #[error("upload incomplete: {offset} of {declared} declared bytes received")]
    UploadIncomplete {
        /// Bytes received.
        offset: u64,
        /// The declared length.
        declared: u64,
    },
    /// The user already has as many unexpired sessions open as the store
    /// allows ([`StoreOptions::max_sessions_per_user`](crate::StoreOptions::max_sessions_per_user)):
    /// finish or abort one first, or let one expire.
    #[error("too many upload sessions open: at most {limit} per user")]
    TooManySessions {
        /// The most sessions a user may have open.
        limit: usize,
    },
    /// All users' sessions together already stage as many bytes as the store
    /// allows ([`StoreOptions::max_staged_bytes`](crate::StoreOptions::max_staged_bytes)),
    /// or this user's sessions a quarter of that (so that no user, even one
    /// without a quota, takes the room from everyone else): try again once
    /// sessions have finished. It says how busy the store is, never what
    /// anyone stores.
    #[error("the staging space for uploads in progress is full (at most {limit} bytes); try again once some finish")]
    StagingFull {
        /// The most bytes that may be staged: all sessions', or the user's share.
        limit: u64,
    },
    /// An upload session's client metadata is larger than the store keeps.
    #[error("upload metadata too large: at most {max_entries} entries of {max_bytes} bytes in all")]
    MetadataTooLarge {
        /// The most entries accepted.
        max_entries: usize,
        /// The most bytes of keys and values accepted, in all.
        max_bytes: usize,
    },
    /// An upload session's client metadata has a key or a value that could
    /// forge a header line or be misread: a key that is empty or holds a
    /// space, a comma or a control character (the tus protocol's
    /// `Upload-Metadata` rule), a value with CR, LF or NUL.
    #[error("upload metadata \"{key}\": {reason}")]
    InvalidMetadata {
        /// The entry's key, escaped for display.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

/// Why an operation on the user's library (albums, files, the trash,
/// quota, duplicates, backup source records) failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// An album name is not acceptable.
    #[error(transparent)]
    InvalidName(NameError),
    /// No such file for this user (it may exist for another user: that is
    /// deliberately indistinguishable).
    #[error("no file {0}")]
    UnknownFile(FileId),
    /// No such album for this user.
    #[error("no album {0}")]
    UnknownAlbum(String),
    /// An album of that name already exists for this user.
    #[error("album {0:?} already exists")]
    AlbumExists(String),
    /// The file is in the trash; restore it first.
    #[error("file {0} is in the trash")]
    FileTrashed(FileId),
    /// The file is not in the trash, so it cannot be restored.
    #[error("file {0} is not in the trash")]
    NotTrashed(FileId),
    /// The file is not in the album it was to be moved or removed from.
    #[error("file {file} is not in album {album}")]
    NotInAlbum {
        /// The file.
        file: FileId,
        /// The album.
        album: AlbumId,
    },
    /// The user has no live file with this content, so there is no
    /// duplicate group to merge.
    #[error("no live file with content {0}")]
    NoSuchContent(ContentHash),
    /// The file chosen to survive a merge is not one of the group's live
    /// files.
    #[error("file {file} is not a live file with content {hash}")]
    NotADuplicate {
        /// The file.
        file: FileId,
        /// The group's content.
        hash: ContentHash,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

/// Why reading a file's bytes failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No such file for this user (or another user's file).
    #[error("no file {0}")]
    UnknownFile(FileId),
    /// Stored bytes failed their integrity check. The store never returns
    /// bytes that do not hash to the file's recorded hash; the damage is
    /// recorded, and an upload of the same content heals it.
    #[error("integrity error in blob {hash}: {detail}")]
    Integrity {
        /// The blob that failed.
        hash: ContentHash,
        /// What failed.
        detail: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(StorageError),
}

/// Every failure, as the engine passes it around inside; operations hand
/// their callers the family they belong to (each converts from it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fault {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("no file {0}")]
    UnknownFile(FileId),
    #[error("no album {0}")]
    UnknownAlbum(String),
    #[error("album {0:?} already exists")]
    AlbumExists(String),
    #[error("file {0} is in the trash")]
    FileTrashed(FileId),
    #[error("file {0} is not in the trash")]
    NotTrashed(FileId),
    #[error("file {file} is not in album {album}")]
    NotInAlbum { file: FileId, album: AlbumId },
    #[error("no live file with content {0}")]
    NoSuchContent(ContentHash),
    #[error("file {file} is not a live file with content {hash}")]
    NotADuplicate { file: FileId, hash: ContentHash },
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    #[error("this upload needs its content: no live file of this user matches")]
    ContentRequired,
    #[error(transparent)]
    HashMismatch(HashMismatch),
    #[error("no upload session {0}")]
    UnknownUpload(UploadId),
    #[error("upload offset mismatch: the session has {expected} durable bytes")]
    OffsetMismatch { expected: u64 },
    #[error("upload session {0} is busy with another request")]
    UploadBusy(UploadId),
    #[error("upload would exceed its declared length of {declared} bytes")]
    LengthExceeded { declared: u64 },
    #[error("cannot set the upload length to {requested}: {reason}")]
    InvalidLength { requested: u64, reason: &'static str },
    #[error("upload incomplete: {offset} of {declared} declared bytes received")]
    UploadIncomplete { offset: u64, declared: u64 },
    #[error("upload metadata too large")]
    MetadataTooLarge { max_entries: usize, max_bytes: usize },
    #[error("upload metadata \"{key}\": {reason}")]
    InvalidMetadata { key: String, reason: &'static str },
    #[error("too many upload sessions open: at most {limit} per user")]
    TooManySessions { limit: usize },
    #[error("the staging space for uploads in progress is full (at most {limit} bytes); try again once some finish")]
    StagingFull { limit: u64 },
    #[error("{0} changed while it was being read")]
    ContentChanged(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("integrity error in blob {hash}: {detail}")]
    Integrity { hash: ContentHash, detail: String },
    #[error("store refuses writes after an earlier failure ({0})")]
    Poisoned(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("metadata database: {0}")]
    Database(String),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("the operation panicked inside its commit ({0})")]
    CommitPanicked(String),
    #[error("{0}")]
    Contended(String),
}

impl Fault {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Fault::Io {
            context: context.into(),
            source,
        }
    }

    /// The same failure again, for each of several callers one failure
    /// answers (the uploads of a batch whose one commit failed). Only the
    /// storage failures a commit can end with keep their variant; the I/O
    /// error keeps its kind and message.
    pub(crate) fn replicate(&self) -> Fault {
        match self {
            Fault::Io { context, source } => Fault::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Fault::Database(m) => Fault::Database(m.clone()),
            Fault::Corrupt(m) => Fault::Corrupt(m.clone()),
            Fault::Poisoned(m) => Fault::Poisoned(m.clone()),
            Fault::CommitPanicked(m) => Fault::CommitPanicked(m.clone()),
            Fault::Contended(m) => Fault::Contended(m.clone()),
            other => Fault::Database(other.to_string()),
        }
    }

    /// Whether this is a failure of the storage rather than a refusal.
    pub(crate) fn is_storage(&self) -> bool {
        matches!(
            self,
            Fault::Io { .. }
                | Fault::Database(_)
                | Fault::Corrupt(_)
                | Fault::Poisoned(_)
                | Fault::CommitPanicked(_)
                | Fault::Contended(_)
        )
    }
}

impl From<rocksdb::Error> for Fault {
    fn from(e: rocksdb::Error) -> Self {
        Fault::Database(e.into_string())
    }
}

impl From<Fault> for StorageError {
    /// The storage failure `e` is; anything else is a [`StorageError::Bug`].
    fn from(e: Fault) -> Self {
        match e {
            Fault::Io { context, source } => StorageError::Io { context, source },
            Fault::Database(m) => StorageError::Database(m),
            Fault::Corrupt(m) => StorageError::Corrupt(m),
            Fault::Poisoned(m) => StorageError::Poisoned(m),
            Fault::CommitPanicked(m) => StorageError::CommitPanicked(m),
            Fault::Contended(m) => StorageError::Contended(m),
            other => StorageError::Bug(other.to_string()),
        }
    }
}

impl From<Fault> for MigrateError {
    fn from(e: Fault) -> Self {
        MigrateError::Storage(e.into())
    }
}

impl From<Fault> for UploadError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::InvalidName(n) => UploadError::InvalidName(n),
            Fault::UnknownAlbum(a) => UploadError::UnknownAlbum(a),
            Fault::QuotaExceeded(q) => UploadError::QuotaExceeded(q),
            Fault::HashMismatch(h) => UploadError::HashMismatch(h),
            Fault::ContentChanged(what) => UploadError::ContentChanged(what),
            Fault::NotAFile(what) => UploadError::NotAFile(what),
            Fault::ContentRequired => UploadError::ContentRequired,
            other => UploadError::Storage(other.into()),
        }
    }
}

impl From<Fault> for SessionError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::UnknownUpload(id) => SessionError::UnknownUpload(id),
            Fault::OffsetMismatch { expected } => SessionError::OffsetMismatch { expected },
            Fault::UploadBusy(id) => SessionError::UploadBusy(id),
            Fault::LengthExceeded { declared } => SessionError::LengthExceeded { declared },
            Fault::InvalidLength { requested, reason } => SessionError::InvalidLength { requested, reason },
            Fault::UploadIncomplete { offset, declared } => SessionError::UploadIncomplete { offset, declared },
            Fault::MetadataTooLarge { max_entries, max_bytes } => {
                SessionError::MetadataTooLarge { max_entries, max_bytes }
            }
            Fault::InvalidMetadata { key, reason } => SessionError::InvalidMetadata { key, reason },
            Fault::TooManySessions { limit } => SessionError::TooManySessions { limit },
            Fault::StagingFull { limit } => SessionError::StagingFull { limit },
            storage if storage.is_storage() => SessionError::Storage(storage.into()),
            other => SessionError::Upload(other.into()),
        }
    }
}

impl From<Fault> for LibraryError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::InvalidName(n) => LibraryError::InvalidName(n),
            Fault::UnknownFile(f) => LibraryError::UnknownFile(f),
            Fault::UnknownAlbum(a) => LibraryError::UnknownAlbum(a),
            Fault::AlbumExists(a) => LibraryError::AlbumExists(a),
            Fault::FileTrashed(f) => LibraryError::FileTrashed(f),
            Fault::NotTrashed(f) => LibraryError::NotTrashed(f),
            Fault::NotInAlbum { file, album } => LibraryError::NotInAlbum { file, album },
            Fault::NoSuchContent(h) => LibraryError::NoSuchContent(h),
            Fault::NotADuplicate { file, hash } => LibraryError::NotADuplicate { file, hash },
            other => LibraryError::Storage(other.into()),
        }
    }
}

impl From<Fault> for ReadError {
    fn from(e: Fault) -> Self {
        match e {
            Fault::UnknownFile(f) => ReadError::UnknownFile(f),
            Fault::Integrity { hash, detail } => ReadError::Integrity { hash, detail },
            other => ReadError::Storage(other.into()),
        }
    }
}

macro_rules! name_errors_convert {
    ($($family:ident),*) => {$(
        impl From<NameError> for $family {
            fn from(e: NameError) -> Self {
                $family::InvalidName(e)
            }
        }
    )*};
}
name_errors_convert!(UploadError, LibraryError);

impl From<Fault> for OpenError {
    /// An operation's error met while opening: I/O and database errors keep
    /// their kind, anything else means metadata this build cannot read.
    fn from(e: Fault) -> Self {
        match e {
            Fault::Io { context, source } => OpenError::Io { context, source },
            Fault::Database(msg) => OpenError::Database(msg),
            other => OpenError::Corrupt(other.to_string()),
        }
    }
}

/// Any keepsake error: each family converts into it, so a function that
/// calls operations of several families can return `keepsake::Error` and
/// use `?` throughout.
///
/// ```
/// fn first_album_files(store: &keepsake::Store) -> Result<usize, keepsake::Error> {
///     let ann = store.user("ann")?; // NameError
///     let album = ann.ensure_album("Camera")?; // LibraryError
///     Ok(ann.album_files(album)?.len())
/// }
/// let dir = tempfile::tempdir().unwrap();
/// let store = keepsake::Store::open(dir.path()).unwrap();
/// assert_eq!(first_album_files(&store).unwrap(), 0);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening a store failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A name was refused.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An upload failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// An upload session operation failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A library operation failed.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Store-wide maintenance failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// The storage failure under this error, whatever its family: for
    /// example, whether an operation failed because the store refuses writes
    /// ([`StorageError::Poisoned`]).
    ///
    /// ```
    /// let e = keepsake::Error::from(keepsake::UploadError::Storage(keepsake::StorageError::Poisoned("fsync".into())));
    /// assert!(matches!(e.storage(), Some(keepsake::StorageError::Poisoned(_))));
    /// ```
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            Error::Upload(UploadError::Storage(s))
            | Error::Session(SessionError::Storage(s) | SessionError::Upload(UploadError::Storage(s)))
            | Error::Library(LibraryError::Storage(s))
            | Error::Read(ReadError::Storage(s))
            | Error::Storage(s) => Some(s),
            _ => None,
        }
    }
}

/// Shorthand for the engine's results inside.
pub(crate) type Result<T, E = Fault> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in a commit and a lost race keep their own variants all the
    /// way to the caller, whatever the family, and the I/O error stays
    /// typed.
    #[test]
    fn storage_failures_keep_their_kind_in_every_family() {
        let panicked = || Fault::CommitPanicked("boom".into());
        assert!(matches!(
            UploadError::from(panicked()),
            UploadError::Storage(StorageError::CommitPanicked(m)) if m == "boom"
        ));
        assert!(matches!(
            LibraryError::from(Fault::Contended("gc".into())),
            LibraryError::Storage(StorageError::Contended(_))
        ));
        let full = SessionError::from(Fault::io("writing", io::ErrorKind::StorageFull.into()));
        let SessionError::Storage(storage) = full else {
            panic!("an I/O error is a storage failure")
        };
        assert_eq!(storage.io_kind(), Some(io::ErrorKind::StorageFull));
        assert!(matches!(
            Error::from(ReadError::from(panicked())).storage(),
            Some(StorageError::CommitPanicked(_))
        ));
    }

    /// One failed commit answers every upload of its batch with a failure
    /// of the same kind, not a generic database error.
    #[test]
    fn a_failure_replicated_for_a_batch_keeps_its_kind() {
        assert!(matches!(Fault::Poisoned("fsync".into()).replicate(), Fault::Poisoned(m) if m == "fsync"));
        assert!(matches!(
            Fault::CommitPanicked("boom".into()).replicate(),
            Fault::CommitPanicked(_)
        ));
        let io = Fault::io("writing", io::ErrorKind::StorageFull.into()).replicate();
        assert!(matches!(io, Fault::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull));
    }

    /// An error no operation of the family returns is reported as a bug in
    /// keepsake, never turned into another meaning.
    #[test]
    fn an_error_outside_its_family_is_a_bug_not_a_success() {
        let foreign = ReadError::from(Fault::AlbumExists("A".into()));
        assert!(
            matches!(&foreign, ReadError::Storage(StorageError::Bug(m)) if m.contains("already exists")),
            "{foreign:?}"
        );
        assert!(matches!(
            UploadError::from(Fault::UnknownUpload(UploadId::from_bytes([3; 16]))),
            UploadError::Storage(StorageError::Bug(_))
        ));
    }
}
