//! Test infrastructure shared by the integration tests and the fuzz targets:
//! a reference model of the store's rules, a file system that simulates power
//! loss and injects faults, and entry points to the metadata decoders and
//! the segment format.
//!
//! Compiled only with the `testkit` feature. It is public so that `tests/`
//! and `fuzz/` (separate crates) can use one copy of it; it is not part of
//! the storage API and carries no stability promise.

pub mod decoders;
/// The segment format: offsets, headers and the record scanner, for the
/// tests and fuzz targets that build, parse or damage segment bytes. The
/// engine's own copy is crate-private; this is the same code.
pub mod format {
    pub use crate::blob::format::*;
}
pub mod meta_damage;
pub mod model;
pub mod sim_fs;
pub mod staged;
