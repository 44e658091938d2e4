//! Store-wide maintenance: work that runs over every user's records at
//! once, on behalf of the operator rather than of one user.
//!
//! | module | owns |
//! |---|---|
//! | `gc` | purging expired trash and sessions, removing unreferenced blobs, compacting segments |
//! | `verify` | recomputing every count and index from the file records, and scrubbing every byte |
//! | `migrate` | moving a store's blobs between the local disk and a bucket, online |
//! | `repair` | rebuilding the derived records that `verify` found wrong |
//! | `stats` | the store's figures: dedup ratio, garbage, segments |

mod gc;
mod migrate;
mod repair;
mod stats;
mod verify;

pub use gc::GcReport;
pub use migrate::{BlobHome, MigrateProgress, MigrateReport};
pub use repair::RepairReport;
pub(crate) use stats::stats;
pub use stats::Stats;
pub use verify::{AffectedFile, Problem, VerifyReport};
