//! Garbage collection: purging expired trash, removing blobs nobody
//! references, and compacting segments.
//!
//! # Why GC cannot lose data
//!
//! A blob is removed only by a GC transaction that, under the committer (so
//! serialised with every upload's commit), finds its reference count at zero.
//! Every reference is added by a transaction under the same committer, which
//! re-reads the blob record: if GC removed the blob first, the upload finds
//! it missing and writes the bytes itself (see `store/ingest.rs`). There is
//! no window in which an upload can reference a blob that GC is deleting.
//!
//! Segment files are removed only after the transaction that stops every
//! blob from pointing into them has committed; a crash in between leaves a
//! file no metadata names, which the next open removes.
//!
//! Compaction copies each live record (verifying its hash on the way: a
//! damaged record is never copied, and its segment is kept), syncs the
//! copies, then switches every moved blob to its copy in one transaction, and
//! only a blob still pointing at the old place is switched.

use std::collections::HashMap;
use std::time::Duration;

use crate::blob::format::SEGMENT_HEADER_LEN;
use crate::blob::{Location, RecordData, Site, Written};
use crate::error::{Result, StorageError};
use crate::hash::ContentHash;
use crate::meta::keys;
use crate::meta::records::{BlobRecord, Place, SegmentRecord};
use crate::meta::{decode, Cf};
use crate::store::ledger::{cover, occupy, release};
use crate::store::{Inner, Store};

/// What a [`Store::gc`] run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Files deleted for good because their trash retention ended.
    pub trash_purged: u64,
    /// Blobs removed because no file referenced them any more.
    pub blobs_removed: u64,
    /// Disk space given back: removed segment files, less the live records
    /// copied out of them, plus removed inline blobs.
    pub bytes_reclaimed: u64,
    /// Segments rewritten to drop their garbage.
    pub segments_compacted: u64,
    /// Expired upload sessions removed, with their staged bytes.
    pub uploads_expired: u64,
}

/// Unreferenced blobs removed per transaction.
const GC_CHUNK: usize = 1000;

impl Store {
    /// Runs a full collection with the store's configured grace period.
    ///
    /// # Errors
    ///
    /// Those of [`Store::gc_with_grace`].
    pub fn gc(&self) -> Result<GcReport, StorageError> {
        self.gc_with_grace(self.inner.options.gc_grace)
    }

    /// Runs a full collection, removing blobs unreferenced for at least
    /// `grace`. Safe to run while uploads go on, and to interrupt: each step
    /// commits on its own and the next run carries on.
    ///
    /// # Errors
    ///
    /// - [`StorageError::Poisoned`] if the store refuses writes after a failed sync.
    /// - [`StorageError::Io`] if compaction cannot write or sync its copies, or a
    ///   segment or staged file cannot be removed (what was committed stays; the next
    ///   open removes the file).
    /// - [`StorageError::Database`] if the metadata database fails, and
    ///   [`StorageError::Corrupt`] if it holds a record that cannot be decoded.
    ///
    /// ```
    /// use std::time::Duration;
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let r = u.upload(a, "x", Content::from(vec![3u8; 10_000]), DedupMode::Hash).unwrap();
    /// u.delete(r.file_id).unwrap();
    /// u.empty_trash().unwrap();
    /// assert_eq!(store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed, 1);
    /// ```
    pub fn gc_with_grace(&self, grace: Duration) -> Result<GcReport, StorageError> {
        let inner = &*self.inner;
        let _one_gc = inner.gc_lock.lock();
        inner.health.check()?;
        let mut report = GcReport {
            trash_purged: self.purge_expired_trash()?.files,
            uploads_expired: inner.expire_uploads()?,
            ..Default::default()
        };
        inner.remove_unreferenced(grace, &mut report)?;
        inner.compact_segments(&mut report)?;
        Ok(report)
    }
}

impl Inner {
    fn remove_unreferenced(&self, grace: Duration, report: &mut GcReport) -> Result<()> {
        let cutoff = self.now_ms().saturating_sub(grace.as_millis() as u64);
        let due = self.gc_candidates(cutoff)?;
        self.remove_candidates(&due, cutoff, report)
    }

    /// The GC candidates whose last reference went at or before `cutoff`,
    /// as the committed metadata shows them now. Only a hint: each is
    /// checked again inside the transaction that would remove it.
    fn gc_candidates(&self, cutoff: u64) -> Result<Vec<Vec<u8>>> {
        let mut due = Vec::new();
        for (k, v) in self.meta.scan_all(Cf::Gc, &[])? {
            if decode::<u64>(&v)? <= cutoff {
                due.push(k);
            }
        }
        Ok(due)
    }

    /// Removes the blobs of `due` that are, inside the serialised
    /// transaction, still unreferenced and unreferenced since `cutoff` or
    /// earlier. A candidate whose count went up and down again after the
    /// scan has a newer stamp, and its grace starts over.
    fn remove_candidates(&self, due: &[Vec<u8>], cutoff: u64, report: &mut GcReport) -> Result<()> {
        for chunk in due.chunks(GC_CHUNK) {
            let chunk = chunk.to_vec();
            let (removed, freed) = self.commit(move |txn| {
                let (mut removed, mut freed) = (0u64, 0u64);
                for key in chunk {
                    match txn.get::<u64>(Cf::Gc, &key)? {
                        Some(since) if since <= cutoff => {}
                        // Referenced again since the scan, or unreferenced
                        // again later: not due (yet).
                        _ => continue,
                    }
                    txn.delete(Cf::Gc, key.clone());
                    let Some(blob) = txn.get::<BlobRecord>(Cf::Blobs, &key)? else {
                        continue;
                    };
                    // The re-check that makes GC safe: only a count that is
                    // still zero inside the serialised transaction counts.
                    if blob.refs > 0 {
                        continue;
                    }
                    txn.delete(Cf::Damaged, key.clone());
                    txn.delete(Cf::Outboards, key.clone());
                    txn.delete(Cf::Blobs, key);
                    removed += 1;
                    if let Place::Inline(_) = blob.place {
                        freed += blob.size;
                    }
                    release(txn, &blob.place)?;
                }
                Ok((removed, freed))
            })?;
            report.blobs_removed += removed;
            report.bytes_reclaimed += freed;
        }
        Ok(())
    }

    fn compact_segments(&self, report: &mut GcReport) -> Result<()> {
        // Compaction removes segments: none from a bucket not yet known to
        // be the store's (§15), whose removal would fail after its commit.
        self.blobs.homes().reach()?;
        self.compact_segments_below(self.blobs.sealed_below(), report)
    }

    /// Compacts the segments below `frontier` that are worth it. Segment
    /// ids only grow and a segment takes records only while it is the
    /// active one, so every segment below the frontier read before the scan
    /// is sealed for good: a segment rolled to while the scan runs (and
    /// committed into, so that it shows in the scan) is at or above it, and
    /// is never compacted into itself or removed while in use.
    fn compact_segments_below(&self, frontier: u64, report: &mut GcReport) -> Result<()> {
        let threshold = self.options.compact_threshold;
        for (k, v) in self.meta.scan_all(Cf::Segments, &[])? {
            let id = keys::last_u64(&k);
            let seg: SegmentRecord = decode(&v)?;
            // A sealed segment takes no new records, so once it is unpinned
            // every record written to it has been committed or abandoned.
            // A damaged segment is never compacted (what is readable in it
            // stays where verify and repair can find it), but once no blob
            // is left in it (each healed by a re-upload, or collected), it
            // is retired.
            let damaged = self.recovery.damaged_segments.contains(&id);
            if id >= frontier || (damaged && seg.live_bytes > 0) || self.blobs.is_pinned(id) {
                continue;
            }
            let payload = seg.committed_len.saturating_sub(SEGMENT_HEADER_LEN as u64);
            let garbage = payload.saturating_sub(seg.live_bytes);
            let worth_it = seg.live_bytes == 0 || (payload > 0 && garbage as f64 / payload as f64 >= threshold);
            if worth_it && self.compact(id, seg)? {
                report.segments_compacted += 1;
                // A lost segment's bytes were gone already.
                if !damaged {
                    report.bytes_reclaimed += seg.committed_len.saturating_sub(seg.live_bytes);
                }
            }
        }
        Ok(())
    }

    /// Moves the live records out of segment `id` and removes it. Returns
    /// false, keeping the segment, if anything about it is not as the
    /// metadata says (damage is never compacted away).
    fn compact(&self, id: u64, seg: SegmentRecord) -> Result<bool> {
        let mut moves: Vec<(ContentHash, Location, Location)> = Vec::new();
        let mut pins = Vec::new();
        if seg.live_bytes > 0 {
            let Ok((records, end)) = self.blobs.scan(id, seg.committed_len) else {
                return Ok(false);
            };
            if end.error.is_some() || end.offset != seg.committed_len {
                return Ok(false);
            }
            let mut written = Written::default();
            let mut live = 0;
            for h in records {
                let Some(blob) = self.meta.get::<BlobRecord>(Cf::Blobs, h.hash.as_bytes())? else {
                    continue;
                };
                let Place::Segment(old) = blob.place else { continue };
                if old.segment != id || old.offset != h.offset {
                    continue;
                }
                let Ok(data) = self.blobs.read(old, h.hash) else {
                    return Ok(false);
                };
                // The outboard, kept by hash, is the same wherever the bytes lie.
                let appended = self
                    .blobs
                    .append(h.hash, RecordData::Verified(&[&data]), "compaction")?;
                let new = appended.loc;
                pins.push(appended.pin);
                written.add(new);
                live += old.record_len();
                moves.push((h.hash, old, new));
            }
            if live != seg.live_bytes {
                return Ok(false);
            }
            self.blobs.sync_written(&written)?;
        }
        // Where each segment the copies went to lives, for its record.
        let sites: HashMap<u64, Site> = moves
            .iter()
            .map(|(_, _, new)| (new.segment, self.blobs.homes().site(new.segment)))
            .collect();
        // The old segment goes only once no committed metadata names it.
        let removed = self.commit_then_delete(move |txn, doomed| {
            let skey = keys::u64_key(id);
            let Some(mut old_seg) = txn.get::<SegmentRecord>(Cf::Segments, &skey)? else {
                return Ok(false);
            };
            for (hash, old, new) in moves {
                let bkey = hash.as_bytes().to_vec();
                let Some(mut blob) = txn.get::<BlobRecord>(Cf::Blobs, &bkey)? else {
                    continue;
                };
                if blob.place != Place::Segment(old) {
                    continue;
                }
                blob.place = Place::Segment(new);
                txn.put(Cf::Blobs, bkey, &blob);
                old_seg.live_bytes -= old.record_len();
                occupy(txn, &Place::Segment(new))?;
                cover(txn, &Place::Segment(new), &|segment| {
                    sites.get(&segment).copied().unwrap_or_default()
                })?;
            }
            if old_seg.live_bytes == 0 {
                txn.delete(Cf::Segments, skey);
                doomed.segment(id);
                Ok(true)
            } else {
                txn.put(Cf::Segments, skey, &old_seg);
                Ok(false)
            }
        })?;
        drop(pins);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock as Manual;
    use crate::{Content, DedupMode, StoreOptions};

    const PHOTO: usize = 40 << 10;

    fn open(dir: &std::path::Path, clock: Arc<Manual>) -> Store {
        let options = StoreOptions::default().segment_size(64 << 10).clock(clock);
        Store::open_with(dir, options).unwrap()
    }

    /// The interleaving that once lost every blob of a segment: gc reads
    /// which segment is active, an upload then opens a new one and commits
    /// into it, and the scan finds the new segment full of garbage. Taking
    /// the frontier first and the uploads after is that interleaving.
    #[test]
    fn a_segment_opened_after_gc_read_the_frontier_is_never_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        let store = open(dir.path(), clock.clone());
        let frontier = store.inner.blobs.sealed_below();

        // Meanwhile: a photo lands in a new segment and becomes garbage.
        let u = store.user("u").unwrap();
        let album = u.ensure_album("A").unwrap();
        let gone = u
            .upload(album, "gone.jpg", Content::from(vec![1u8; PHOTO]), DedupMode::Hash)
            .unwrap();
        u.delete(gone.file_id).unwrap();
        u.empty_trash().unwrap();
        let mut report = GcReport::default();
        store.inner.remove_unreferenced(Duration::ZERO, &mut report).unwrap();
        assert_eq!(report.blobs_removed, 1);
        let active = store.inner.blobs.sealed_below();
        assert!(active >= frontier, "segment ids only grow");

        store.inner.compact_segments_below(frontier, &mut report).unwrap();
        assert_eq!(report.segments_compacted, 0, "the segment in use was compacted");
        let kept = u
            .upload(album, "kept.jpg", Content::from(vec![2u8; PHOTO / 2]), DedupMode::Hash)
            .unwrap();
        drop(u);
        drop(store);
        let store = open(dir.path(), clock);
        let u = store.user("u").unwrap();
        assert_eq!(u.read(kept.file_id).unwrap(), vec![2u8; PHOTO / 2]);
        assert!(store.verify(true).unwrap().ok);
    }

    /// The other interleaving: gc lists a blob as due, then the blob is
    /// referenced again and dropped again (a fresh stamp) before gc's
    /// transaction runs. Its grace starts over; gc must not take it.
    #[test]
    fn a_candidate_unreferenced_again_after_the_scan_keeps_its_new_grace() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        let store = open(dir.path(), clock.clone());
        let u = store.user("u").unwrap();
        let album = u.ensure_album("A").unwrap();
        let photo = vec![3u8; PHOTO];
        let trash_it = |at: u64| {
            clock.0.store(at, Ordering::SeqCst);
            let r = u
                .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
                .unwrap();
            u.delete(r.file_id).unwrap();
            u.empty_trash().unwrap();
        };
        trash_it(1_000);
        clock.0.store(10_000, Ordering::SeqCst);
        let cutoff = 5_000;
        let due = store.inner.gc_candidates(cutoff).unwrap();
        assert_eq!(due.len(), 1, "unreferenced since 1000, due at cutoff 5000");

        // Between the scan and gc's transaction: referenced and dropped again.
        trash_it(10_000);
        let mut report = GcReport::default();
        store.inner.remove_candidates(&due, cutoff, &mut report).unwrap();
        assert_eq!(
            report.blobs_removed, 0,
            "a blob unreferenced at 10000 was taken at cutoff 5000"
        );
        assert_eq!(
            store.inner.gc_candidates(10_000).unwrap(),
            due,
            "still a candidate, with its new stamp"
        );
        // Once its new grace has passed, it goes.
        store.inner.remove_candidates(&due, 10_000, &mut report).unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert!(store.verify(true).unwrap().ok);
    }
}
