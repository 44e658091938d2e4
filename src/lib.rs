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
//! - [`DedupMode::Hash`] (mobile) matches on content alone,
//!   [`DedupMode::NameAndHash`] (desktop/web) on name and content.
//!
//! ```
//! use keepsake::{Content, DedupMode, Outcome, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let camera = store.ensure_album("alice", "Camera").unwrap();
//! let trip = store.ensure_album("alice", "Trip").unwrap();
//!
//! let photo = vec![42u8; 100_000];
//! let first = store.upload("alice", camera, "IMG_1.JPG", Content::from(photo.clone()), DedupMode::Hash).unwrap();
//! assert_eq!((first.outcome, first.bytes_written), (Outcome::Stored, 100_000));
//!
//! // The same photo into another album: a reference, no bytes.
//! let linked = store.upload("alice", trip, "IMG_1.JPG", Content::from(photo), DedupMode::Hash).unwrap();
//! assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, first.file_id));
//!
//! // Charged once.
//! assert_eq!(store.usage("alice").unwrap().unique_bytes, 100_000);
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
mod gc;
mod hash;
mod health;
mod ids;
mod meta;
mod names;
mod repair;
mod stats;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod verify;

pub use clock::{Clock, SystemClock};
pub use error::{Error, NameKind, OpenError, Result};
pub use gc::GcReport;
pub use hash::{ContentHash, ParseHashError};
pub use ids::{AlbumId, FileId};
pub use names::MAX_NAME_BYTES;
pub use repair::RepairReport;
pub use stats::Stats;
pub use store::{
    AlbumDeletion, AlbumInfo, Content, DedupMode, DuplicateGroup, FileInfo, FileReader, MergeReport, Outcome,
    Preflight, PurgeReport, SourceIndex, Store, StoreOptions, Upload, UploadReport, UploadStart, UploadStatus, Usage,
    MAX_UPLOAD_METADATA_BYTES, MAX_UPLOAD_METADATA_ENTRIES,
};
pub use verify::{AffectedFile, Problem, VerifyReport};

/// The README's examples are compiled as doc tests, so it cannot drift from
/// the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
