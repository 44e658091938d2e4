//! Blob bytes: append-only segment files of checksummed records.
//!
//! [`format`](mod@format) defines the bytes; the log itself (`log.rs`)
//! appends records to a local spool, makes them durable before their
//! commit, serves verified reads, and recovers at open; `home.rs` is the
//! seam to where sealed segments live for good, with two sides: `disk.rs`
//! (the local disk: the spool's files are the segments) and `bucket.rs`
//! (S3-compatible object storage, feature `s3`: one pack object per
//! sealed segment); `placement.rs` knows which of the two holds each
//! segment, and `transfer.rs` copies a segment from one to the other for a
//! migration; [`outboard`] keeps the BLAKE3 trees that let a range of
//! a large blob be checked on its own.

#[cfg(feature = "s3")]
mod bucket;
mod disk;
// Crate-private: the engine's own format. Tests and fuzz targets that build
// or damage segment bytes reach it as `testkit::format`.
pub(crate) mod format;
mod home;
mod log;
pub(crate) mod outboard;
mod placement;
mod transfer;

#[cfg(feature = "s3")]
pub use bucket::BucketOptions;
#[cfg(feature = "s3")]
pub(crate) use bucket::{Bucket, Unchecked};
pub(crate) use disk::{segment_file, Disk, SEGMENTS_DIR};
pub(crate) use home::Home;
pub(crate) use log::{BlobLog, Location, Pin, RecordData, Recovery, Written};
pub(crate) use placement::{Homes, Site};
