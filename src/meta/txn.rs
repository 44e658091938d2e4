//! A read-your-writes transaction over the metadata.
//!
//! Writes are kept in an overlay until commit, and reads consult the overlay
//! first, so a batch of uploads sees its own earlier uploads (a duplicate
//! inside one batch is caught) and group commit can run many callers' work in
//! one `WriteBatch`. Savepoints undo one caller's writes when its work fails
//! without disturbing the others'.
//!
//! Isolation comes from the caller: transactions run one at a time under the
//! committer (see `commit.rs`), so reads see every committed change and no
//! other writer.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use super::records::Record;
use super::{decode, Cf, Meta};
use crate::error::Result;

type Key = (Cf, Vec<u8>);

pub(crate) struct Txn<'m> {
    meta: &'m Meta,
    writes: BTreeMap<Key, Option<Vec<u8>>>,
    /// The overlay's previous entry for each write, newest last.
    undo: Vec<(Key, Option<Option<Vec<u8>>>)>,
}

/// A point to roll a transaction back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Savepoint(usize);

impl<'m> Txn<'m> {
    pub(crate) fn new(meta: &'m Meta) -> Self {
        Txn {
            meta,
            writes: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(&(cf, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.meta.get_raw(cf, key),
        }
    }

    pub(crate) fn get<R: Record>(&self, cf: Cf, key: &[u8]) -> Result<Option<R>> {
        self.get_raw(cf, key)?.map(|v| decode(&v)).transpose()
    }

    pub(crate) fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        Ok(self.get_raw(cf, key)?.is_some())
    }

    pub(crate) fn set(&mut self, cf: Cf, key: Vec<u8>, value: Option<Vec<u8>>) {
        let k = (cf, key);
        let prev = self.writes.insert(k.clone(), value);
        self.undo.push((k, prev));
    }

    pub(crate) fn put<R: Record>(&mut self, cf: Cf, key: Vec<u8>, value: &R) {
        self.set(cf, key, Some(value.encode()));
    }

    /// Puts an index entry, whose key is all the information.
    pub(crate) fn put_empty(&mut self, cf: Cf, key: Vec<u8>) {
        self.set(cf, key, Some(Vec::new()));
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) {
        self.set(cf, key, None);
    }

    /// The entries under `prefix`, committed ones merged with this
    /// transaction's writes, in key order.
    pub(crate) fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.meta.scan_all(cf, prefix)?.into_iter().collect();
        for ((_, k), v) in self
            .writes
            .range((cf, prefix.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    pub(crate) fn savepoint(&self) -> Savepoint {
        Savepoint(self.undo.len())
    }

    pub(crate) fn rollback_to(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.0 {
            let (k, prev) = self.undo.pop().expect("length checked");
            match prev {
                Some(v) => self.writes.insert(k, v),
                None => self.writes.remove(&k),
            };
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut b = WriteBatch::default();
        for ((cf, k), v) in &self.writes {
            match v {
                Some(v) => self.meta.batch_put(&mut b, *cf, k, v),
                None => self.meta.batch_delete(&mut b, *cf, k),
            }
        }
        b
    }
}
