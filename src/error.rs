//! Error types, one enum per operation family.
//!
//! Opening a store can fail in ways that no later operation can (another
//! process holds it, the format is newer than this build), so [`OpenError`]
//! is separate from [`Error`], which every operation on an open store returns.
//! Both are `#[non_exhaustive]`: new failure modes are added without breaking
//! callers that match on them.

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

/// Why [`Store::open`](crate::Store::open) failed. Nothing was changed on disk
/// except what recovery had already repaired (truncated tails, orphan segment
/// files), which is always safe to redo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Store` in this process) has the store open.
    #[error("store {path} is in use by another process")]
    InUse {
        /// The store directory.
        path: PathBuf,
    },
    /// The store was written by a newer, incompatible version of keepsake.
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
}

/// Why an operation on an open [`Store`](crate::Store) failed.
///
/// Every error leaves the store consistent: an operation that fails has
/// changed nothing (its metadata batch was never committed), except where a
/// variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A user, album or file name is not acceptable.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        kind: NameKind,
        /// The offending name, possibly shortened for display.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
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
    /// Storing this content would take the user past their quota.
    #[error("quota exceeded: {used} of {limit} bytes used, this upload needs {needed} more")]
    QuotaExceeded {
        /// The user's limit in bytes.
        limit: u64,
        /// Unique bytes already charged.
        used: u64,
        /// Bytes this upload would add.
        needed: u64,
    },
    /// [`User::link`](crate::User::link) was asked to complete an upload
    /// that needs the content: only a duplicate of the user's own live file
    /// can be completed from its hash alone.
    #[error("this upload needs its content: no live file of this user matches")]
    ContentRequired,
    /// The content's hash is not the one the caller declared.
    #[error("content hash {actual} does not match the expected {expected}")]
    HashMismatch {
        /// What the caller declared.
        expected: ContentHash,
        /// What the bytes hash to.
        actual: ContentHash,
    },
    /// No upload session with this id for this user: it never existed, was
    /// finished, aborted or expired, or belongs to another user (which is
    /// deliberately indistinguishable).
    #[error("no upload session {0}")]
    UnknownUpload(UploadId),
    /// An append did not start where the session's durable bytes end. The
    /// client resumes by sending again from `expected`.
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
    /// An upload session's client metadata is larger than the store keeps.
    #[error("upload metadata too large: at most {max_entries} entries of {max_bytes} bytes in all")]
    MetadataTooLarge {
        /// The most entries accepted.
        max_entries: usize,
        /// The most bytes of keys and values accepted, in all.
        max_bytes: usize,
    },
    /// The source changed while it was being read: its size or modification
    /// time changed during the read, what was read disagrees with its size,
    /// or (a file read twice) its content differs between the hashing pass
    /// and the writing pass. Nothing was stored.
    #[error("{0} changed while it was being read; nothing was stored")]
    ContentChanged(String),
    /// Stored bytes failed their integrity check. The store never returns
    /// bytes that do not hash to the file's recorded hash.
    #[error("integrity error in blob {hash}: {detail}")]
    Integrity {
        /// The blob that failed.
        hash: ContentHash,
        /// What failed.
        detail: String,
    },
    /// An earlier write failed in a way that may have left durable state
    /// unknown (a failed `fsync`), so the store refuses writes until it is
    /// reopened, which re-establishes what is durable.
    #[error("store refuses writes after an earlier failure ({0}); reopen it")]
    Poisoned(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Database(String),
    /// A metadata record could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Database(e.into_string())
    }
}

impl From<Error> for OpenError {
    /// An operation's error met while opening: I/O and database errors keep
    /// their kind, anything else means metadata this build cannot read.
    fn from(e: Error) -> Self {
        match e {
            Error::Io { context, source } => OpenError::Io { context, source },
            Error::Database(msg) => OpenError::Database(msg),
            other => OpenError::Corrupt(other.to_string()),
        }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
