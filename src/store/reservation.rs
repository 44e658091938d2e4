//! Quota held for writes in flight: bytes an upload or an append is about
//! to write, counted against its user's limit before a byte is written, so
//! that concurrent uploads that each fit alone but not together do not both
//! write (what the quota alone decides; an upload can still fail at its
//! commit for another reason, an album deleted meanwhile, after writing).
//!
//! The commit stays the exact judge (it re-checks the quota against the
//! committed records); a hold only keeps a write from starting that the
//! commit would refuse. A hold is taken against the committed usage read
//! under the holds' lock, and dropped once its write's commit has returned,
//! so for an instant a committed write is counted twice (committed and
//! held). An operation that holds nothing else (an append, a session's
//! begin or length) therefore waits for the other holds of its user before
//! it refuses: the answer is then exact. A batch's first pass never waits,
//! since it may already hold (two batches waiting on each other would
//! deadlock); an upload it does not write is decided by its commit, or
//! retried with its bytes, and a retry that holds nothing waits.
//!
//! Users without a limit take no hold: nothing to count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::ledger::{check_quota, load_user, staged_bytes};
use super::Inner;
use crate::error::{Fault, Result};
use crate::meta::txn::Txn;

/// The longest a write waits for its user's other writes before it
/// refuses: a batch of large files may hold its quota for as long as it
/// takes to write them all.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Users are spread over this many locks, so that one user's checks (which
/// read the metadata under the lock) do not queue another's.
const SHARDS: usize = 16;

/// The bytes held per user id.
#[derive(Default)]
pub(crate) struct Holds {
    shards: [Shard; SHARDS],
}

#[derive(Default)]
struct Shard {
    held: Mutex<HashMap<u64, u64>>,
    released: Condvar,
}

/// Bytes of one user's quota held until this is dropped.
#[must_use = "a hold is released when dropped"]
pub(crate) struct Hold<'h> {
    shard: &'h Shard,
    uid: u64,
    bytes: u64,
}

impl Holds {
    /// Holds `bytes` of user `uid`'s quota if `check(others)` passes: the
    /// bytes fit beside `others`, the bytes other writes of the user hold
    /// (including the caller's own earlier holds). `check` fails with
    /// [`Fault::QuotaExceeded`] when they do not; with `wait`, that failure
    /// waits first until no other hold stands in the way (at most
    /// [`MAX_WAIT`], then it stands).
    ///
    /// `check` reads the committed usage; it runs under the user's lock.
    pub(crate) fn hold(&self, uid: u64, bytes: u64, wait: bool, check: impl Fn(u64) -> Result<()>) -> Result<Hold<'_>> {
        let shard = &self.shards[(uid % SHARDS as u64) as usize];
        let deadline = Instant::now() + MAX_WAIT;
        let mut held = shard.held.lock();
        loop {
            let others = held.get(&uid).copied().unwrap_or(0);
            match check(others) {
                Ok(()) => {
                    *held.entry(uid).or_default() += bytes;
                    return Ok(Hold { shard, uid, bytes });
                }
                Err(Fault::QuotaExceeded(q)) if wait && others > 0 => {
                    if shard.released.wait_until(&mut held, deadline).timed_out() {
                        return Err(Fault::QuotaExceeded(q));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Inner {
    /// Holds `charged` bytes of `uid`'s quota for a write about to start,
    /// checked against the committed usage (unique bytes and the sessions'
    /// reservations, but the session keyed `except`) and the other holds.
    /// A user without a limit, or a write that charges nothing, holds
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Fault::QuotaExceeded`] if the bytes do not fit (after waiting for
    /// the user's other holds, with `wait`); a storage failure reading the
    /// usage.
    pub(crate) fn hold_quota(
        &self,
        uid: u64,
        charged: u64,
        wait: bool,
        except: Option<&[u8]>,
    ) -> Result<Option<Hold<'_>>> {
        let limited = load_user(&Txn::new(&self.meta), uid)?.limit.is_some();
        if !limited || charged == 0 {
            return Ok(None);
        }
        let now = self.now_ms();
        let hold = self.holds.hold(uid, charged, wait, |others| {
            let txn = Txn::new(&self.meta);
            let staged = staged_bytes(&txn, uid, now, except)?;
            check_quota(&load_user(&txn, uid)?, staged.saturating_add(others), charged)
        })?;
        Ok(Some(hold))
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut held = self.shard.held.lock();
        if let Some(v) = held.get_mut(&self.uid) {
            *v -= self.bytes;
            if *v == 0 {
                held.remove(&self.uid);
            }
        }
        self.shard.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QuotaExceeded;

    /// A limit of 10 bytes, nothing committed.
    fn fits(bytes: u64) -> impl Fn(u64) -> Result<()> {
        move |others| match others + bytes <= 10 {
            true => Ok(()),
            false => Err(Fault::QuotaExceeded(QuotaExceeded {
                limit: 10,
                used: others,
                needed: bytes,
            })),
        }
    }

    #[test]
    fn a_hold_counts_until_dropped_and_a_waiter_decides_after_it() {
        let holds = Holds::default();
        let first = holds.hold(1, 6, false, fits(6)).unwrap();
        assert!(holds.hold(1, 6, false, fits(6)).is_err());
        // Another user is not affected.
        assert!(holds.hold(2, 6, false, fits(6)).is_ok());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| holds.hold(1, 6, true, fits(6)).map(drop));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "waits while another hold stands in the way");
            drop(first);
            assert!(waiter.join().unwrap().is_ok(), "fits once the other hold is gone");
        });
        // With no other hold in the way, a refusal is at once.
        assert!(holds.hold(1, 11, true, fits(11)).is_err());
    }
}
