//! The store's source of time, replaceable so that trash retention and the
//! GC grace period can be tested without waiting 30 days.

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
///
/// ```
/// use keepsake::{Clock, SystemClock};
/// assert!(SystemClock.now_ms() > 1_600_000_000_000);
/// ```
pub trait Clock: Send + Sync + Debug {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock the unit tests set by hand (`0.store(ms)`).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct ManualClock(pub(crate) std::sync::atomic::AtomicU64);

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A point in time as nanoseconds since the Unix epoch, two's complement
/// (so times before 1970, which old cameras write, survive), saturating
/// outside the ±292 years an `i64` holds.
pub(crate) fn to_ns(t: std::time::SystemTime) -> u64 {
    let ns = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    };
    ns as u64
}

/// The time [`to_ns`] encoded.
pub(crate) fn from_ns(ns: u64) -> std::time::SystemTime {
    let ns = ns as i64;
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_before_and_after_the_epoch_survive_to_the_nanosecond() {
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(86_400 * 365 * 20, 5),
            UNIX_EPOCH,
        ] {
            assert_eq!(from_ns(to_ns(t)), t);
        }
    }
}
