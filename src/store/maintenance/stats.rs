//! Store-wide figures: what deduplication saves, and how much garbage waits
//! for compaction (a scan); what the store has done since it opened (its
//! counters, `crate::metrics`).

use crate::blob::format::SEGMENT_HEADER_LEN;
use crate::blob::Site;
use crate::error::{Result, StorageError};
use crate::meta::records::{BlobRecord, Place, SegmentRecord, UserRecord};
use crate::meta::{decode, Cf, Meta};
use crate::store::Store;

/// Store-wide statistics (see [`Store::stats`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Users with any record.
    pub users: u64,
    /// File records, live and trashed, of all users.
    pub files: u64,
    /// Distinct blobs stored.
    pub blobs: u64,
    /// Bytes of distinct content: each blob's size once.
    pub physical_bytes: u64,
    /// Bytes on the local disk for blobs: segment files up to their
    /// committed length, and inline blobs (in the metadata).
    pub disk_bytes: u64,
    /// Bytes in the store's bucket for blobs: packs up to their committed
    /// length (0 for a store whose blobs are all on the local disk).
    pub bucket_bytes: u64,
    /// The sum of every user's file sizes, as if nothing were shared.
    pub logical_bytes: u64,
    /// `logical_bytes / physical_bytes` (1.0 for an empty store).
    pub dedup_ratio: f64,
    /// Segments, on the local disk (files) and in the bucket (packs).
    pub segments: u64,
    /// Bytes in segments that no blob uses, reclaimable by compaction.
    pub garbage_bytes: u64,
    /// Blobs no file references, waiting for GC.
    pub gc_candidates: u64,
}

impl Store {
    /// Store-wide statistics, computed by a scan of the metadata.
    ///
    /// # Errors
    ///
    /// - [`StorageError::Database`] if the metadata database fails.
    /// - [`StorageError::Corrupt`] if it holds a record that cannot be decoded.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert_eq!(store.stats().unwrap().blobs, 0);
    /// ```
    pub fn stats(&self) -> Result<Stats, StorageError> {
        Ok(stats(&self.inner.meta)?)
    }

    /// What this store has done since it was opened (uploads by outcome and
    /// their bytes, commits and their latency) and what it holds now (open
    /// upload sessions, staged bytes): counters kept as the work finishes,
    /// and one count of the session records. What `GET /metrics` serves.
    ///
    /// # Errors
    ///
    /// - [`StorageError::Database`] if counting the session records fails.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// u.upload(a, "1.jpg", Content::from(vec![1u8; 1000]), DedupMode::Hash).unwrap();
    /// u.upload(a, "2.jpg", Content::from(vec![1u8; 1000]), DedupMode::Hash).unwrap();
    /// let m = store.metrics().unwrap();
    /// assert!(m.uploads.contains(&(Outcome::Stored, 1, 1000)));
    /// assert!(m.uploads.contains(&(Outcome::Skipped, 1, 1000)));
    /// assert_eq!((m.bytes_written, m.bytes_deduplicated()), (1000, 1000));
    /// ```
    pub fn metrics(&self) -> Result<crate::Metrics, StorageError> {
        let inner = &*self.inner;
        let mut sessions = 0u64;
        inner.meta.scan(Cf::Uploads, &[], |_, _| {
            sessions += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        Ok(inner.counters.snapshot(sessions, inner.sessions.staged.total()))
    }
}

/// The store's statistics from one snapshot of its committed metadata.
pub(crate) fn stats(meta: &Meta) -> Result<Stats> {
    let snap = meta.snapshot();
    let mut s = Stats {
        users: 0,
        files: 0,
        blobs: 0,
        physical_bytes: 0,
        disk_bytes: 0,
        bucket_bytes: 0,
        logical_bytes: 0,
        dedup_ratio: 1.0,
        segments: 0,
        garbage_bytes: 0,
        gc_candidates: 0,
    };
    snap.for_each(Cf::Users, |_, v| {
        let u: UserRecord = decode(v)?;
        s.users += 1;
        s.files += u.live_files + u.trashed_files;
        s.logical_bytes += u.logical_bytes;
        Ok(())
    })?;
    snap.for_each(Cf::Blobs, |_, v| {
        let b: BlobRecord = decode(v)?;
        s.blobs += 1;
        s.physical_bytes += b.size;
        if let Place::Inline(d) = b.place {
            s.disk_bytes += d.len() as u64;
        }
        Ok(())
    })?;
    snap.for_each(Cf::Segments, |_, v| {
        let seg: SegmentRecord = decode(v)?;
        s.segments += 1;
        match seg.site {
            Site::Disk => s.disk_bytes += seg.committed_len,
            Site::Bucket => s.bucket_bytes += seg.committed_len,
        }
        s.garbage_bytes += seg
            .committed_len
            .saturating_sub(SEGMENT_HEADER_LEN as u64)
            .saturating_sub(seg.live_bytes);
        Ok(())
    })?;
    snap.for_each(Cf::Gc, |_, _| {
        s.gc_candidates += 1;
        Ok(())
    })?;
    if s.physical_bytes > 0 {
        s.dedup_ratio = s.logical_bytes as f64 / s.physical_bytes as f64;
    }
    Ok(s)
}
