//! The store's running counters, for an operator's dashboard: uploads by
//! outcome and their bytes, how long commits take. Plain atomics, counted
//! where the engine finishes the work; [`Store::metrics`] reads them with
//! the gauges (open upload sessions, staged bytes), and the HTTP face
//! serves them to Prometheus (`GET /metrics`).
//!
//! Counters start at zero when the store opens: they count this process's
//! work, as Prometheus counters do (a restart is a reset, which its `rate`
//! handles).
//!
//! [`Store::metrics`]: crate::Store::metrics

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{Outcome, UploadReport};

/// Upper bounds of the commit-latency histogram's buckets, in seconds: a
/// commit is one `fsync` of RocksDB's log at least (about a millisecond on
/// a good SSD, tens on a disk), plus its wait for the commit before it.
pub const COMMIT_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

const OUTCOMES: [Outcome; 4] = [Outcome::Stored, Outcome::Linked, Outcome::Skipped, Outcome::Restored];

fn index(outcome: Outcome) -> usize {
    OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0)
}

#[derive(Default)]
pub(crate) struct Counters {
    uploads: [AtomicU64; 4],
    upload_bytes: [AtomicU64; 4],
    bytes_written: AtomicU64,
    commits: AtomicU64,
    /// Nanoseconds.
    commit_time: AtomicU64,
    /// Per bucket of [`COMMIT_BUCKETS`], then the overflow: not cumulative.
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
}

impl Counters {
    /// Counts a finished upload (durable when this is called).
    pub(crate) fn upload(&self, report: &UploadReport) {
        let i = index(report.outcome);
        self.uploads[i].fetch_add(1, Ordering::Relaxed);
        self.upload_bytes[i].fetch_add(report.size, Ordering::Relaxed);
        self.bytes_written.fetch_add(report.bytes_written, Ordering::Relaxed);
    }

    /// Counts a commit that took `took`, from its call to its durable end.
    pub(crate) fn commit(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_time
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.commit_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, open_sessions: u64, staged_bytes: u64) -> Metrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let commit_buckets = COMMIT_BUCKETS
            .iter()
            .zip(&self.commit_buckets)
            .map(|(bound, n)| {
                cumulative += load(n);
                (*bound, cumulative)
            })
            .collect();
        Metrics {
            uploads: OUTCOMES
                .iter()
                .zip(self.uploads.iter().zip(&self.upload_bytes))
                .map(|(o, (n, b))| (*o, load(n), load(b)))
                .collect(),
            bytes_written: load(&self.bytes_written),
            commits: load(&self.commits),
            commit_seconds: load(&self.commit_time) as f64 / 1e9,
            commit_buckets,
            open_sessions,
            staged_bytes,
        }
    }
}

/// What the store has done since it opened, and what it holds now
/// ([`Store::metrics`](crate::Store::metrics)).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Per outcome: finished uploads (one-shot, batch, session, link), and
    /// the sum of their sizes in bytes. The bytes of every outcome but
    /// `Stored` were deduplicated: no byte of them was written. A backup's
    /// files trusted from their source records, or linked into a second
    /// album from them (`User::unchanged_sources`, `User::link_sources`),
    /// are not uploads and are not counted.
    pub uploads: Vec<(Outcome, u64, u64)>,
    /// Blob bytes uploads wrote and synced (`UploadReport::bytes_written`;
    /// a small blob's go into the metadata): a stored upload of content its
    /// user already held wrote none.
    pub bytes_written: u64,
    /// Commits made (each durable).
    pub commits: u64,
    /// Their total time, in seconds, from call to durable end (a commit's
    /// wait for the group commit before it counts).
    pub commit_seconds: f64,
    /// Commits that took at most each bound of [`COMMIT_BUCKETS`], in
    /// seconds: `(bound, count)`, cumulative, as Prometheus's buckets are
    /// (`commits` is the `+Inf` bucket).
    pub commit_buckets: Vec<(f64, u64)>,
    /// Resumable upload sessions open now (begun, neither finished nor
    /// aborted; an expired one counts until gc collects it), of every user.
    pub open_sessions: u64,
    /// Bytes the sessions hold staged now against the store's limit (a
    /// session's declared length, or what arrived while its length is
    /// deferred).
    pub staged_bytes: u64,
}

impl Metrics {
    /// Bytes of uploads whose content was not written: every outcome but
    /// `Stored`, and stored uploads of content their user already held.
    pub fn bytes_deduplicated(&self) -> u64 {
        let total: u64 = self.uploads.iter().map(|(_, _, b)| b).sum();
        total.saturating_sub(self.bytes_written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_buckets_are_cumulative_and_end_with_every_commit_below_the_last_bound() {
        let c = Counters::default();
        for ms in [0, 3, 3, 40, 9_000] {
            c.commit(Duration::from_millis(ms));
        }
        let m = c.snapshot(2, 7);
        assert_eq!(m.commits, 5);
        assert_eq!(m.commit_buckets[0], (0.001, 1));
        assert_eq!(m.commit_buckets[2], (0.005, 3));
        assert_eq!(m.commit_buckets.last(), Some(&(5.0, 4)), "9 s lies past the last bound");
        assert!((m.commit_seconds - 9.046).abs() < 1e-9);
        assert_eq!((m.open_sessions, m.staged_bytes), (2, 7));
    }
}
