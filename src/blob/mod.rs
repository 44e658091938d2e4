//! Blob bytes: append-only segment files of checksummed records.
//!
//! [`format`](mod@format) defines the bytes; the log itself (`log.rs`) appends records,
//! makes them durable, serves verified zero-copy reads, and recovers the
//! segment directory at open; [`outboard`] keeps the BLAKE3 trees that let a
//! range of a large blob be checked on its own.

// Crate-private: the engine's own format. Tests and fuzz targets that build
// or damage segment bytes reach it as `testkit::format`.
pub(crate) mod format;
mod log;
pub(crate) mod outboard;

pub(crate) use log::{segment_file, BlobLog, Location, Pin, RecordData, Recovery, Written, SEGMENTS_DIR};
