//! The store's write health: after a failure that leaves durable state
//! unknown, every later write is refused until the store is reopened.
//!
//! A failed `fsync` is the canonical case: the kernel may have dropped the
//! dirty pages and cleared the error, so retrying and succeeding proves
//! nothing (the "fsyncgate" lesson). Reopening re-derives what is durable from
//! the committed metadata and truncates anything after it.

use parking_lot::Mutex;

use crate::error::Fault;

#[derive(Debug, Default)]
pub(crate) struct Health {
    poisoned: Mutex<Option<String>>,
}

impl Health {
    /// Fails if the store has been poisoned.
    pub(crate) fn check(&self) -> Result<(), Fault> {
        match &*self.poisoned.lock() {
            Some(reason) => Err(Fault::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Refuses all further writes, keeping the first reason.
    pub(crate) fn poison(&self, reason: impl Into<String>) {
        self.poisoned.lock().get_or_insert_with(|| reason.into());
    }
}
