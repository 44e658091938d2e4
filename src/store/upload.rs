//! What an upload is and what it reports: the public vocabulary of uploads.
//!
//! The operations live with the concept they belong to: getting bytes into
//! the store ([`User::upload`], [`User::upload_batch`]) in
//! [`ingest`](super::ingest), answering from a hash alone ([`User::check`],
//! [`User::link`]) in [`rules`](super::rules), with the duplicate rules
//! themselves.

use std::fmt;
use std::fs::Metadata;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

#[cfg(doc)]
use super::User;
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::names::FileName;
use crate::stamp::Stamp;

/// Which files count as duplicates of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMode {
    /// The mobile rule: any live file of the user with the same content.
    Hash,
    /// The desktop/web rule: a live file with the same name *and* content.
    /// The same content under another name is a new file, but it shares the
    /// blob: no bytes are written and the quota does not grow.
    NameAndHash,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A duplicate is already in the target album: nothing changed.
    Skipped,
    /// A duplicate exists in other albums only: it was added to the target
    /// album, no bytes written.
    Linked,
    /// A new file record was created.
    Stored,
    /// The user's only duplicates were in the trash: the oldest was restored
    /// into the target album (and no other), no bytes written. So a backup
    /// re-run after a deletion brings the photo back, and a later restore of
    /// it from the trash cannot make the album show it twice (Immich
    /// restores a trashed asset on re-upload the same way).
    Restored,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Skipped => "skipped",
            Outcome::Linked => "linked",
            Outcome::Stored => "stored",
            Outcome::Restored => "restored",
        })
    }
}

/// The result of one upload, reported once it is durable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploadReport {
    /// The file now in the album: the duplicate for `Skipped`, `Linked` and
    /// `Restored`, the new file for `Stored`.
    pub file_id: FileId,
    /// What happened.
    pub outcome: Outcome,
    /// The content's hash.
    pub hash: ContentHash,
    /// The content's size.
    pub size: u64,
    /// Blob bytes this upload wrote (and synced) for the content: its size
    /// when the content is new to *this user*, or when it heals a damaged
    /// copy; zero when the user already held it. In a batch the bytes of a
    /// content repeated are reported once, on its first successful upload.
    /// Whether any other user holds the content changes neither this figure
    /// nor the work behind it (`DESIGN.md` §1, "Privacy between users"):
    /// content the store had already is written anyway, and compaction
    /// reclaims the second copy.
    pub bytes_written: u64,
    /// What this upload added to the user's quota: the size when the content
    /// is new *to this user*, else zero.
    pub charged_bytes: u64,
}

/// What an upload would do, answered from its hash alone by
/// [`User::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "file_id")]
pub enum Preflight {
    /// A duplicate is already in the album: nothing to send.
    Skip(FileId),
    /// A duplicate of the user's is in other albums: [`User::link`] adds it
    /// to this album, nothing to send.
    Link(FileId),
    /// The only duplicates of the user's are in the trash: [`User::link`]
    /// restores the oldest into this album, nothing to send.
    Restore(FileId),
    /// The content must be uploaded. This says nothing about whether the
    /// store, or another user, already has the bytes.
    Upload,
}

/// An upload described by its content's hash instead of its bytes: what a
/// client asks [`User::check`] about before sending anything, and what
/// [`User::link`] completes when no bytes are needed (Ente's and Immich's
/// upload check, with keepsake's two duplicate rules).
///
/// ```
/// use keepsake::{AlbumId, ContentHash, DedupMode, HashedUpload};
/// let up = HashedUpload {
///     album: AlbumId(1),
///     name: "IMG_1.JPG".into(),
///     hash: ContentHash::of(b"pixels"),
///     mode: DedupMode::NameAndHash,
/// };
/// # let _ = up;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedUpload {
    /// The album the file is to go into.
    pub album: AlbumId,
    /// The file's name.
    pub name: FileName,
    /// The BLAKE3 hash of its content.
    pub hash: ContentHash,
    /// The duplicate rule to apply.
    pub mode: DedupMode,
}

/// Where an upload's bytes come from.
#[non_exhaustive]
pub enum Content {
    /// Bytes in memory.
    Bytes(Bytes),
    /// Bytes in memory in pieces, in order: a body as an HTTP server
    /// receives it. The pieces are hashed and written one after another,
    /// never joined into one buffer.
    Parts(Vec<Bytes>),
    /// A regular file, read twice (hashing, then writing if the blob is new)
    /// and never memory-mapped, so a file that changes in between is
    /// detected rather than mis-stored. It is opened without following a
    /// symbolic link and without blocking, and must be a regular file when
    /// open; anything else is [`UploadError::NotAFile`](crate::UploadError::NotAFile).
    Path(PathBuf),
    /// A stream, read once: streams of at most 16 MiB are held in memory,
    /// longer ones spooled to the store's staging directory, their bytes
    /// held against the user's quota as they spool (the disk is taken
    /// whatever the content turns out to be).
    Reader(Box<dyn Read + Send>),
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "Content::Bytes({} bytes)", b.len()),
            Content::Parts(p) => write!(
                f,
                "Content::Parts({} bytes in {} parts)",
                p.iter().map(Bytes::len).sum::<usize>(),
                p.len()
            ),
            Content::Path(p) => write!(f, "Content::Path({})", p.display()),
            Content::Reader(_) => f.write_str("Content::Reader(..)"),
        }
    }
}

impl From<Bytes> for Content {
    fn from(b: Bytes) -> Self {
        Content::Bytes(b)
    }
}

impl From<Vec<u8>> for Content {
    fn from(b: Vec<u8>) -> Self {
        Content::Bytes(b.into())
    }
}

impl From<&[u8]> for Content {
    fn from(b: &[u8]) -> Self {
        Content::Bytes(Bytes::copy_from_slice(b))
    }
}

impl From<&Path> for Content {
    fn from(p: &Path) -> Self {
        Content::Path(p.to_path_buf())
    }
}

/// One upload of a batch (see [`User::upload_batch`]).
///
/// ```
/// use keepsake::{AlbumId, Content, DedupMode, Upload};
/// let up = Upload::new(AlbumId(1), "IMG_1.JPG", Content::from(&b"x"[..]), DedupMode::Hash)
///     .expect_hash(keepsake::ContentHash::of(b"x"));
/// # let _ = up;
/// ```
#[derive(Debug)]
pub struct Upload {
    pub(crate) album: AlbumId,
    pub(crate) name: FileName,
    pub(crate) content: Content,
    pub(crate) mode: DedupMode,
    pub(crate) expected: Option<ContentHash>,
    pub(crate) seen: Option<Stamp>,
    pub(crate) modified: Option<SystemTime>,
}

impl Upload {
    /// An upload of `content` as `name` into `album`.
    pub fn new(album: AlbumId, name: impl Into<FileName>, content: Content, mode: DedupMode) -> Self {
        Upload {
            album,
            name: name.into(),
            content,
            mode,
            expected: None,
            seen: None,
            modified: None,
        }
    }

    /// Refuses the upload with
    /// [`UploadError::HashMismatch`](crate::UploadError::HashMismatch) unless
    /// the content hashes to `hash`: a client that declared a hash gets
    /// exactly what it declared or nothing.
    pub fn expect_hash(mut self, hash: ContentHash) -> Self {
        self.expected = Some(hash);
        self
    }

    /// Refuses a [`Content::Path`] upload with
    /// [`UploadError::ContentChanged`](crate::UploadError::ContentChanged)
    /// unless the file it opens is the one `seen` describes (the metadata a
    /// directory walk took with `symlink_metadata`): the same device and
    /// inode, so not another file moved or linked into its place, and the
    /// same size, modification time and change time, so not a version
    /// written since. A backup that decided to read a file from what it saw
    /// reads that file or nothing. Other contents ignore it.
    pub fn expect_source(mut self, seen: &Metadata) -> Self {
        self.seen = Some(Stamp::of(seen));
        self
    }

    /// Records `time` as the photo's modification time (the source file's
    /// mtime: what photo apps sort by, and what a restore sets again) with
    /// the file this upload stores, to the nanosecond. An upload that finds
    /// a duplicate changes nothing, so the time of the file already there
    /// stays. Without it the file has no such time
    /// ([`FileInfo::modified`](crate::FileInfo::modified) is `None`); a
    /// [`Content::Path`] does not imply its file's time.
    pub fn modified(mut self, time: SystemTime) -> Self {
        self.modified = Some(time);
        self
    }
}
