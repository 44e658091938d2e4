//! # keepsake
//!
//! A storage engine for photo and video backup. Every distinct content is
//! stored once, under its BLAKE3 hash; users organise *files* (a name and a
//! reference to content) into *albums* (references to files) freely, and are
//! charged for each distinct content once however many albums or names point
//! at it.
//!
//! The duplicate rules reproduce those of Ente Photos' backup:
//!
//! - re-uploading what is already in the album is [`Outcome::Skipped`];
//! - uploading what the user has in another album is [`Outcome::Linked`]
//!   (added to this album, no bytes sent);
//! - uploading what the user has only in the trash is [`Outcome::Restored`]
//!   (back into this album, no bytes sent), so that no album ever shows one
//!   photo twice;
//! - [`DedupMode::Hash`] (mobile) matches on content alone,
//!   [`DedupMode::NameAndHash`] (desktop/web) on name and content.
//!
//! ```
//! use keepsake::{Content, DedupMode, Outcome, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let alice = store.user("alice").unwrap();
//! let camera = alice.ensure_album("Camera").unwrap();
//! let trip = alice.ensure_album("Trip").unwrap();
//!
//! let photo = vec![42u8; 100_000];
//! let first = alice.upload(camera, "IMG_1.JPG", Content::from(photo.clone()), DedupMode::Hash).unwrap();
//! assert_eq!((first.outcome, first.bytes_written), (Outcome::Stored, 100_000));
//!
//! // The same photo into another album: a reference, no bytes.
//! let linked = alice.upload(trip, "IMG_1.JPG", Content::from(photo), DedupMode::Hash).unwrap();
//! assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, first.file_id));
//!
//! // Charged once.
//! assert_eq!(alice.usage().unwrap().unique_bytes, 100_000);
//! ```
//!
//! Durability: an operation returns only once it is durable. Blob bytes are
//! synced before the metadata that points at them is committed; see
//! `DESIGN.md` for the formats and the argument.

#![warn(missing_docs)]
// A storage engine reports failures as errors; a panic is a decision the code
// states with `expect` and a reason. Unit tests may unwrap (clippy.toml).
#![deny(clippy::unwrap_used)]

mod blob;
mod clock;
mod commit;
mod error;
pub mod fs;
mod hash;
mod health;
#[cfg(feature = "http")]
pub mod http;
mod ids;
mod meta;
mod metrics;
mod names;
mod stamp;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(feature = "s3")]
pub use blob::BucketOptions;
pub use clock::{Clock, SystemClock};
pub use error::{
    Error, HashMismatch, LibraryError, MigrateError, NameError, NameKind, OpenError, QuotaExceeded, ReadError,
    SessionError, StorageError, UploadError,
};
pub use hash::{ContentHash, ParseHashError};
pub use ids::{AlbumId, FileId, InvalidUploadId, UploadId};
pub use metrics::{Metrics, COMMIT_BUCKETS};
pub use names::{FileName, MAX_NAME_BYTES};
pub use store::{
    AffectedFile, AlbumDeletion, AlbumInfo, BlobHome, Content, Cursor, DedupMode, DuplicateGroup, FileEdit, FileInfo,
    FileReader, GcReport, HashedUpload, InvalidCursor, MergeReport, MigrateProgress, MigrateReport, Outcome, Page,
    Preflight, Problem, PurgeReport, ReadOnlyStore, ReadOnlyUser, RepairReport, SeenPaths, SessionOptions, Stats,
    Store, StoreOptions, Upload, UploadReport, UploadStart, UploadStatus, Usage, User, VerifyReport, MAX_PAGE,
    MAX_UPLOAD_METADATA_BYTES, MAX_UPLOAD_METADATA_ENTRIES,
};

/// Shorthand for results of keepsake operations, with [`Error`] for any of
/// them.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples are compiled as doc tests, so it cannot drift from
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
