//! Test infrastructure shared by the integration tests and the fuzz targets:
//! a reference model of the store's rules, a file system that simulates power
//! loss and injects faults, and entry points to the metadata decoders.
//!
//! Compiled only with the `testkit` feature. It is public so that `tests/`
//! and `fuzz/` (separate crates) can use one copy of it; it is not part of
//! the storage API and carries no stability promise.

pub mod decoders;
pub mod meta_damage;
pub mod model;
pub mod sim_fs;
