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

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, ControlFlow};

use rocksdb::WriteBatch;

use super::records::Record;
use super::{decode, Cf, DBRawIterator, Meta};
use crate::error::Result;

/// A write's value: `None` deletes.
type Value = Option<Vec<u8>>;

/// One column family's writes.
type Writes = BTreeMap<Vec<u8>, Value>;

pub(crate) struct Txn<'m> {
    meta: &'m Meta,
    /// The writes, one map per column family (indexed by `Cf as usize`),
    /// so that a read looks a key up by its bytes without building an
    /// owned key first.
    writes: Vec<Writes>,
    /// Committed values read ahead by [`prefetch`](Self::prefetch). They
    /// stay true for the transaction's life: no other writer runs while it
    /// does.
    read: Vec<HashMap<Vec<u8>, Value>>,
    /// The overlay's previous entry (if any) for each write, newest last.
    undo: Vec<(Cf, Vec<u8>, Option<Value>)>,
    /// For the committer's transactions, one iterator per column family,
    /// made by its first scan and kept for the next: no other writer runs
    /// while the committer's transaction does, so the committed metadata
    /// cannot change under it, and making an iterator costs more than
    /// seeking one (a batch of links scans the duplicate index once per
    /// file). A scan takes it out while it runs, so a scan from inside
    /// another's visitor makes its own. A transaction only read from, outside
    /// the committer, makes a fresh one for each scan, which sees what its
    /// point reads see.
    iters: Option<Vec<Cell<Option<DBRawIterator<'m>>>>>,
}

/// A point to roll a transaction back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Savepoint(usize);

impl<'m> Txn<'m> {
    pub(crate) fn new(meta: &'m Meta) -> Self {
        Txn {
            meta,
            writes: Cf::ALL.iter().map(|_| Writes::new()).collect(),
            read: Cf::ALL.iter().map(|_| HashMap::new()).collect(),
            undo: Vec::new(),
            iters: None,
        }
    }

    /// A transaction of the committer, the one writer: its scans reuse
    /// their iterators.
    pub(crate) fn committing(meta: &'m Meta) -> Self {
        Txn {
            iters: Some(Cf::ALL.iter().map(|_| Cell::new(None)).collect()),
            ..Txn::new(meta)
        }
    }

    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_value(cf, key, |v| Ok(v.map(<[u8]>::to_vec)))
    }

    /// Calls `f` with the value at `key`, borrowed where this transaction
    /// holds it (written or read ahead): a batch's reads of the records it
    /// has just written or read ahead copy nothing.
    fn with_value<T>(&self, cf: Cf, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> Result<T>) -> Result<T> {
        let held = self.writes[cf as usize]
            .get(key)
            .or_else(|| self.read[cf as usize].get(key));
        match held {
            Some(v) => f(v.as_deref()),
            None => f(self.meta.get_raw(cf, key)?.as_deref()),
        }
    }

    pub(crate) fn get<R: Record>(&self, cf: Cf, key: &[u8]) -> Result<Option<R>> {
        self.with_value(cf, key, |v| v.map(decode).transpose())
    }

    pub(crate) fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        self.with_value(cf, key, |v| Ok(v.is_some()))
    }

    /// Reads the committed values at `keys` in one batched lookup, so that
    /// the gets of a batch of work that follow are answered from memory:
    /// a commit of thousands of files then makes one pass over the
    /// database per kind of record instead of a point read per file and
    /// kind. `near` says the keys lie close together (see
    /// [`Meta::get_near`]).
    pub(crate) fn prefetch(&mut self, cf: Cf, keys: Vec<Vec<u8>>, near: bool) -> Result<()> {
        let read = &mut self.read[cf as usize];
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| !read.contains_key(k)).collect();
        let values = if near {
            self.meta.get_near_raw(cf, &keys)?
        } else {
            self.meta.multi_get_raw(cf, &keys)?
        };
        read.extend(keys.into_iter().zip(values));
        Ok(())
    }

    pub(crate) fn set(&mut self, cf: Cf, key: Vec<u8>, value: Option<Vec<u8>>) {
        let prev = self.writes[cf as usize].insert(key.clone(), value);
        self.undo.push((cf, key, prev));
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
        let mut out = Vec::new();
        self.scan_from(cf, prefix, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Calls `f` with each entry under `prefix` from key `start` on,
    /// committed ones merged with this transaction's writes, in key order,
    /// until `f` breaks. The committed entries stream from one iterator:
    /// nothing is collected.
    pub(crate) fn scan_from(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut ours = self.writes[cf as usize]
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut stopped = false;
        let mut committed = |k: &[u8], v: &[u8]| -> Result<ControlFlow<()>> {
            // This transaction's writes up to `k`; one at `k` replaces it.
            while let Some((ours_k, ours_v)) = ours.next_if(|(ours_k, _)| ours_k.as_slice() <= k) {
                if let Some(ours_v) = ours_v {
                    stopped = f(ours_k, ours_v)?.is_break();
                }
                if stopped {
                    return Ok(ControlFlow::Break(()));
                }
                if ours_k.as_slice() == k {
                    return Ok(ControlFlow::Continue(()));
                }
            }
            let step = f(k, v)?;
            stopped = step.is_break();
            Ok(step)
        };
        // A pass over a whole family (repair's survey) makes its own
        // iterator, which leaves the block cache to the hot set, as
        // `Meta::scan` does.
        let whole = prefix.is_empty();
        let slot = self.iters.as_ref().filter(|_| !whole).map(|iters| &iters[cf as usize]);
        let mut it = slot
            .and_then(Cell::take)
            .unwrap_or_else(|| self.meta.raw_iterator(cf, !whole));
        it.seek(start);
        let mut walked = Ok(());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            match committed(k, v) {
                Ok(ControlFlow::Continue(())) => it.next(),
                Ok(ControlFlow::Break(())) => break,
                Err(e) => {
                    walked = Err(e);
                    break;
                }
            }
        }
        let status = it.status();
        if let Some(slot) = slot {
            slot.set(Some(it));
        }
        walked?;
        status?;
        for (k, v) in ours.filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
            if stopped || f(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// About how many keys `cf` holds with this transaction's writes: the
    /// committed estimate plus the keys written.
    pub(crate) fn estimated_keys(&self, cf: Cf) -> u64 {
        self.meta.estimated_keys(cf) + self.writes[cf as usize].len() as u64
    }

    pub(crate) fn savepoint(&self) -> Savepoint {
        Savepoint(self.undo.len())
    }

    pub(crate) fn rollback_to(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.0 {
            let (cf, k, prev) = self.undo.pop().expect("length checked");
            let writes = &mut self.writes[cf as usize];
            match prev {
                Some(v) => writes.insert(k, v),
                None => writes.remove(&k),
            };
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writes.iter().all(BTreeMap::is_empty)
    }

    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut b = WriteBatch::default();
        for (cf, writes) in Cf::ALL.iter().zip(&self.writes) {
            for (k, v) in writes {
                match v {
                    Some(v) => self.meta.batch_put(&mut b, *cf, k, v),
                    None => self.meta.batch_delete(&mut b, *cf, k),
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{keys, DEFAULT_CACHE};

    /// What was read ahead answers reads only where the transaction has not
    /// written since, and a rollback brings the read-ahead value back.
    #[test]
    fn read_ahead_values_yield_to_the_transactions_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path(), DEFAULT_CACHE).unwrap();
        let (a, b, gone) = (keys::u64_key(1), keys::u64_key(2), keys::u64_key(3));
        let mut batch = WriteBatch::default();
        meta.batch_put(&mut batch, Cf::Files, &a, b"a0");
        meta.batch_put(&mut batch, Cf::Files, &b, b"b0");
        meta.write(batch).unwrap();
        let mut txn = Txn::new(&meta);
        let sp = txn.savepoint();
        txn.set(Cf::Files, b.clone(), Some(b"b1".to_vec()));
        txn.prefetch(Cf::Files, vec![a.clone(), b.clone(), gone.clone()], true)
            .unwrap();
        txn.delete(Cf::Files, a.clone());
        assert_eq!(txn.get_raw(Cf::Files, &a).unwrap(), None);
        assert_eq!(txn.get_raw(Cf::Files, &b).unwrap(), Some(b"b1".to_vec()));
        assert_eq!(txn.get_raw(Cf::Files, &gone).unwrap(), None);
        txn.rollback_to(sp);
        assert_eq!(txn.get_raw(Cf::Files, &a).unwrap(), Some(b"a0".to_vec()));
        assert_eq!(txn.get_raw(Cf::Files, &b).unwrap(), Some(b"b0".to_vec()));
        assert!(txn.is_empty());
    }

    /// A scan from a key sees the committed entries with the
    /// transaction's writes laid over them (a put replaces, a delete
    /// hides, a new key joins in order), and stops where its visitor does;
    /// each later scan, on the reused iterator, sees the same.
    #[test]
    fn scan_from_merges_the_transactions_writes_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path(), DEFAULT_CACHE).unwrap();
        let key = |i: u64| keys::u64_key(i);
        let mut batch = WriteBatch::default();
        for i in [1, 3, 5, 7] {
            meta.batch_put(&mut batch, Cf::Files, &key(i), b"old");
        }
        meta.write(batch).unwrap();
        // The committer's kind, whose scans reuse one iterator.
        let mut txn = Txn::committing(&meta);
        txn.set(Cf::Files, key(3), Some(b"new".to_vec()));
        txn.delete(Cf::Files, key(5));
        txn.set(Cf::Files, key(6), Some(b"new".to_vec()));
        txn.set(Cf::Files, key(9), Some(b"new".to_vec()));
        let seen = |start: u64, stop_after: usize| {
            let mut seen = Vec::new();
            txn.scan_from(Cf::Files, &[], &key(start), |k, v| {
                seen.push((keys::last_u64(k), v.to_vec()));
                Ok(if seen.len() == stop_after {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })
            .unwrap();
            seen
        };
        let (old, new) = (b"old".to_vec(), b"new".to_vec());
        assert_eq!(
            seen(2, usize::MAX),
            vec![(3, new.clone()), (6, new.clone()), (7, old.clone()), (9, new.clone())]
        );
        assert_eq!(seen(0, 2), vec![(1, old.clone()), (3, new.clone())]);
        assert_eq!(seen(8, 1), vec![(9, new.clone())]);
        assert_eq!(txn.scan(Cf::Files, &[]).unwrap().len(), 5);
        // A write after the iterator was made is seen by the next scan.
        txn.set(Cf::Files, key(2), Some(b"new".to_vec()));
        let firsts: Vec<u64> = txn
            .scan(Cf::Files, &[])
            .unwrap()
            .iter()
            .map(|(k, _)| keys::last_u64(k))
            .collect();
        assert_eq!(firsts, [1, 2, 3, 6, 7, 9]);
    }
}
