//! Group commit: many callers' transactions, one synced write.
//!
//! A synced RocksDB write costs an `fsync` of the write-ahead log, about the
//! same whether the batch holds one upload or a thousand. Callers hand their
//! work to the committer as a closure. If no commit is in progress the caller
//! becomes the leader: it takes every queued closure, runs them one after
//! another on one [`Txn`] (each behind a savepoint, so one caller's error
//! undoes only its own writes), writes the batch once with sync, and hands
//! each caller its result. Callers that arrive while a leader is writing wait
//! and are taken by the next leader. A lone caller pays nothing extra.
//!
//! Closures run one at a time, so each sees every write committed or queued
//! before it: the metadata behaves as if operations were serial, in the order
//! the leader ran them.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::error::{Fault, Result};
use crate::health::Health;
use crate::meta::txn::Txn;
use crate::meta::Meta;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn for<'m> FnOnce(&mut Txn<'m>) -> Result<Output> + Send>;

/// Where the leader puts a caller's answer.
type Slot = Mutex<Option<Result<Output>>>;

struct Request {
    work: Work,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Queue {
    leader_active: bool,
    pending: Vec<Request>,
}

#[derive(Default)]
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    /// Signalled when a leader finishes, so a waiting follower whose request
    /// was not taken can lead.
    leader_done: Condvar,
}

impl Committer {
    /// Runs `work` in a transaction and commits it durably, possibly together
    /// with other callers' work. Returns once the commit is durable.
    pub(crate) fn run<R, F>(&self, meta: &Meta, health: &Health, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'m> FnOnce(&mut Txn<'m>) -> Result<R> + Send + 'static,
    {
        health.check()?;
        let slot: Arc<Slot> = Arc::new(Mutex::new(None));
        let work: Work = Box::new(move |txn| work(txn).map(|r| Box::new(r) as Output));
        {
            let mut q = self.queue.lock();
            q.pending.push(Request {
                work,
                slot: slot.clone(),
            });
            loop {
                if slot.lock().is_some() {
                    break;
                }
                if !q.leader_active {
                    q.leader_active = true;
                    let batch = std::mem::take(&mut q.pending);
                    drop(q);
                    lead(meta, health, batch);
                    q = self.queue.lock();
                    q.leader_active = false;
                    self.leader_done.notify_all();
                    continue;
                }
                // Wait for the current leader; its end either answers us or
                // lets us lead.
                self.leader_done.wait(&mut q);
            }
        }
        let out = slot.lock().take().expect("answered above");
        out.map(|b| *b.downcast::<R>().expect("result type matches its work"))
    }
}

fn lead(meta: &Meta, health: &Health, batch: Vec<Request>) {
    let mut txn = Txn::committing(meta);
    let mut done = Vec::with_capacity(batch.len());
    for req in batch {
        let sp = txn.savepoint();
        // A panicking operation must not leave its writes in the batch nor
        // leave the callers behind it unanswered: it fails alone.
        let out = panic::catch_unwind(AssertUnwindSafe(|| (req.work)(&mut txn))).unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(Fault::CommitPanicked(message))
        });
        if out.is_err() {
            txn.rollback_to(sp);
        }
        done.push((req.slot, out));
    }
    let commit = if txn.is_empty() {
        Ok(())
    } else {
        meta.write(txn.into_batch())
    };
    if let Err(e) = &commit {
        // The WAL may or may not hold the batch: only reopening tells.
        health.poison(format!("metadata commit failed: {e}"));
    }
    for (slot, out) in done {
        let answer = match (&commit, out) {
            (Ok(()), out) => out,
            (Err(_), Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(Fault::Database(format!("commit failed: {e}"))),
        };
        *slot.lock() = Some(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::meta::{Cf, DEFAULT_CACHE};

    fn setup() -> (tempfile::TempDir, Arc<Meta>, Arc<Health>, Arc<Committer>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(dir.path(), DEFAULT_CACHE).unwrap());
        (dir, meta, Arc::default(), Arc::default())
    }

    #[test]
    fn a_panicking_operation_fails_alone_and_writes_nothing() {
        let (_dir, meta, health, c) = setup();
        let r: Result<()> = c.run(&meta, &health, |txn| {
            txn.put(Cf::Meta, b"a".to_vec(), &1u64);
            panic!("boom")
        });
        assert!(matches!(&r, Err(Fault::CommitPanicked(m)) if m == "boom"), "{r:?}");
        assert_eq!(meta.get::<u64>(Cf::Meta, b"a").unwrap(), None);
        c.run(&meta, &health, |txn| {
            txn.put(Cf::Meta, b"b".to_vec(), &2u64);
            Ok(())
        })
        .unwrap();
        assert_eq!(meta.get::<u64>(Cf::Meta, b"b").unwrap(), Some(2));
    }

    /// Read-modify-write from many threads loses no update: operations are
    /// serial even when grouped into shared commits.
    #[test]
    fn concurrent_increments_are_serialisable() {
        let (_dir, meta, health, c) = setup();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (meta, health, c) = (meta.clone(), health.clone(), c.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        c.run(&meta, &health, |txn| {
                            let n = txn.get::<u64>(Cf::Meta, b"n")?.unwrap_or(0);
                            txn.put(Cf::Meta, b"n".to_vec(), &(n + 1));
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(meta.get::<u64>(Cf::Meta, b"n").unwrap(), Some(400));
    }

    #[test]
    fn an_error_rolls_back_only_its_own_writes() {
        let (_dir, meta, health, c) = setup();
        let r: Result<()> = c.run(&meta, &health, |txn| {
            txn.put(Cf::Meta, b"x".to_vec(), &1u64);
            Err(Fault::ContentRequired)
        });
        assert!(matches!(r, Err(Fault::ContentRequired)));
        assert_eq!(meta.get::<u64>(Cf::Meta, b"x").unwrap(), None);
    }
}
