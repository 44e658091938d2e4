//! Moving a store's blobs between the local disk and a bucket, online.
//!
//! A migration sends new segments to the destination at once, then moves
//! the sealed segments one at a time: each is copied and checked
//! (`blob::transfer`), switched to its new site in one commit (every blob
//! in it moves with it: a segment is the batch), and only after that
//! commit is its old copy removed. Uploads, reads and `gc` go on in
//! between: a segment is moved under the lock `gc` takes, reads of a
//! segment whose move commits under them are asked again of its new home,
//! and a segment still taking records (the active one, or one whose
//! records are not committed yet) is left for a later turn.
//!
//! A migration cut off anywhere is resumed by running it again: the site
//! of each segment and where new segments go are committed, a copy made
//! but not committed is found identical and kept (a pack) or made again (a
//! local file), and an old copy left after its commit is removed then or
//! at the next open. `DESIGN.md` §15 has the commit order.

use std::io;
use std::time::Duration;

use crate::blob::format::RecordHeader;
use crate::blob::{Location, Site};
#[cfg(feature = "s3")]
use crate::error::StorageError;
use crate::error::{Fault, MigrateError, Result};
use crate::meta::keys;
use crate::meta::records::{BlobRecord, Place, SegmentRecord};
use crate::meta::{decode, Cf};
#[cfg(feature = "s3")]
use crate::store::home;
use crate::store::{Inner, Store};

/// Where [`Store::migrate_blobs`] moves a store's blobs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BlobHome {
    /// The store directory's `segments/`.
    LocalDisk,
    /// An S3-compatible bucket (feature `s3`), as
    /// [`StoreOptions::bucket`](crate::StoreOptions::bucket) names one.
    #[cfg(feature = "s3")]
    Bucket(Box<crate::BucketOptions>),
}

/// How far a migration has come, for a progress bar: counted over the
/// segments it found to move when it began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrateProgress {
    /// Segments moved (or found moved, or left) so far.
    pub segments_done: u64,
    /// Segments to move.
    pub segments_total: u64,
    /// Bytes of those segments moved so far.
    pub bytes_done: u64,
    /// Bytes of the segments to move.
    pub bytes_total: u64,
}

/// What a [`Store::migrate_blobs`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Where the store's new blobs go now: `local disk`, or the bucket's URL.
    pub blobs: String,
    /// Segments moved by this run.
    pub segments_moved: u64,
    /// Bytes of those segments (their committed lengths).
    pub bytes_moved: u64,
    /// Of those, segments whose copy an earlier run had made and not
    /// committed: found identical, and not sent again.
    pub segments_found_copied: u64,
    /// Blobs whose copy failed its hash on the way. They moved as they
    /// were (the only copy there is), and are recorded as damaged, as a
    /// read that found them would: a re-upload of the content heals them.
    pub damaged_blobs: u64,
    /// Segments left where they are, one line each saying why; a later run
    /// tries them again.
    pub left: Vec<String>,
    /// Whether every segment is at the destination now. After a move to
    /// the local disk, the bucket is then let go: the store no longer
    /// records it, and its claim on the prefix is deleted.
    pub done: bool,
}

/// How long a migration waits, in all, for segments whose records are
/// still being committed.
const PINNED_PATIENCE: Duration = Duration::from_secs(10);

/// What moving one segment came to.
enum Moved {
    /// Moved: its committed length, and whether the copy was found made.
    Yes { bytes: u64, found: bool, damaged: u64 },
    /// No longer there (compacted or retired), or there already.
    Nothing,
    /// Still taking records: tried again later.
    Pinned,
    /// Left where it is, for the reason given.
    Left(String),
}

impl Store {
    /// Moves this store's blobs to `to`, online: uploads, reads and `gc`
    /// go on while it runs, and new blobs go to `to` from its first step.
    /// Each segment is copied, checked (its live records hashed on the
    /// local side; an uploaded pack read back whole and compared), switched
    /// in one commit, and its old copy removed only after that commit.
    /// Cut off anywhere (a crash, a kill, a failed request), running it
    /// again finishes the work; see `DESIGN.md` §15.
    ///
    /// `progress` is called after each segment.
    ///
    /// A segment that cannot be moved now (damaged beyond its records, a
    /// pack of its id that differs, records still being committed after a
    /// while) is left where it is, named in [`MigrateReport::left`], and
    /// the run goes on with the others: it is not [`done`](MigrateReport::done).
    ///
    /// # Errors
    ///
    /// - [`MigrateError::Blobs`] if `to` cannot be this store's: a bucket
    ///   other than the one it records, or a prefix another store claimed.
    /// - [`MigrateError::Busy`] if a migration is running on this store.
    /// - [`MigrateError::Storage`] if a read, write, request or commit
    ///   fails ([`StorageError::Io`] for the object store's errors, after
    ///   its retries): what committed stays, and the next run goes on.
    ///
    /// ```
    /// use keepsake::{BlobHome, Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// u.upload(a, "x.jpg", Content::from(vec![7u8; 10_000]), DedupMode::Hash).unwrap();
    /// // Already on the local disk: nothing to move.
    /// let report = store.migrate_blobs(&BlobHome::LocalDisk, &mut |_| {}).unwrap();
    /// assert!(report.done && report.segments_moved == 0);
    /// ```
    pub fn migrate_blobs(
        &self,
        to: &BlobHome,
        progress: &mut dyn FnMut(MigrateProgress),
    ) -> std::result::Result<MigrateReport, MigrateError> {
        let inner = &*self.inner;
        let Some(_one) = inner.migration.try_lock() else {
            return Err(MigrateError::Busy);
        };
        inner.health.check()?;
        let site = match to {
            BlobHome::LocalDisk => Site::Disk,
            #[cfg(feature = "s3")]
            BlobHome::Bucket(options) => {
                inner.take_bucket(options)?;
                Site::Bucket
            }
        };
        let has_bucket = inner.blobs.homes().home(Site::Bucket).is_some();
        if site == Site::Disk && !has_bucket {
            return Ok(MigrateReport {
                blobs: inner.blobs.home_name().to_string(),
                done: true,
                ..MigrateReport::default()
            });
        }
        inner.send_new_segments_to(site)?;
        let mut report = MigrateReport::default();
        let todo = inner.segments_away_from(site)?;
        let mut at = MigrateProgress {
            segments_total: todo.len() as u64,
            bytes_total: todo.iter().map(|(_, len)| len).sum(),
            ..MigrateProgress::default()
        };
        progress(at);
        let mut pinned = Vec::new();
        let mut waited = Duration::ZERO;
        let mut turn: Vec<(u64, u64)> = todo;
        loop {
            for (id, len) in turn.drain(..) {
                match inner.move_segment(id, site)? {
                    Moved::Pinned => {
                        pinned.push((id, len));
                        continue;
                    }
                    Moved::Yes { bytes, found, damaged } => {
                        report.segments_moved += 1;
                        report.bytes_moved += bytes;
                        report.segments_found_copied += u64::from(found);
                        report.damaged_blobs += damaged;
                    }
                    Moved::Nothing => {}
                    Moved::Left(why) => report.left.push(why),
                }
                at.segments_done += 1;
                at.bytes_done += len;
                progress(at);
            }
            if pinned.is_empty() {
                break;
            }
            if waited >= PINNED_PATIENCE {
                for (id, len) in pinned.drain(..) {
                    report
                        .left
                        .push(format!("segment {id}: its records were still being committed"));
                    at.segments_done += 1;
                    at.bytes_done += len;
                }
                progress(at);
                break;
            }
            let pause = Duration::from_millis(20);
            std::thread::sleep(pause);
            waited += pause;
            turn = std::mem::take(&mut pinned);
        }
        report.done = report.left.is_empty() && inner.segments_away_from(site)?.is_empty();
        #[cfg(feature = "s3")]
        if report.done && site == Site::Disk {
            home::let_bucket_go(&inner.meta, &inner.options).map_err(from_open)?;
        }
        report.blobs = inner.blobs.home_name().to_string();
        Ok(report)
    }
}

impl Inner {
    /// Records the bucket `options` names as the store's and attaches it,
    /// unless it is the store's already.
    #[cfg(feature = "s3")]
    fn take_bucket(&self, options: &crate::BucketOptions) -> std::result::Result<(), MigrateError> {
        match home::recorded(&self.meta).map_err(from_open)? {
            Some(url) if url == options.url => Ok(()),
            Some(url) => Err(MigrateError::Blobs(format!(
                "the store's blobs are in {url}, not {}: move them to the local disk first",
                options.url
            ))),
            None => {
                let bucket = home::take_bucket(&self.meta, options).map_err(|e| match e {
                    // Another store's prefix.
                    crate::OpenError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                        MigrateError::Blobs(source.to_string())
                    }
                    other => from_open(other),
                })?;
                self.blobs.homes().attach(bucket);
                Ok(())
            }
        }
    }

    /// Sends new segments to `site`, committed first: a store reopened
    /// mid-migration goes on sending them there.
    fn send_new_segments_to(&self, site: Site) -> Result<()> {
        let mut b = rocksdb::WriteBatch::default();
        match site {
            Site::Disk => self.meta.batch_put(&mut b, Cf::Meta, keys::BLOBS_WRITES, b"disk"),
            Site::Bucket => self.meta.batch_delete(&mut b, Cf::Meta, keys::BLOBS_WRITES),
        }
        self.meta.write(b)?;
        self.blobs.send_new_segments_to(site)
    }

    /// The segments not at `site`, with their committed lengths, that are
    /// sealed: every one, once new segments go to `site`.
    fn segments_away_from(&self, site: Site) -> Result<Vec<(u64, u64)>> {
        let frontier = self.blobs.sealed_below();
        let mut out = Vec::new();
        for (k, v) in self.meta.scan_all(Cf::Segments, &[])? {
            let id = keys::last_u64(&k);
            let seg: SegmentRecord = decode(&v)?;
            if seg.site != site && id < frontier {
                out.push((id, seg.committed_len));
            }
        }
        Ok(out)
    }

    /// Moves segment `id` to `site`: copy, check, commit, then remove the
    /// old copy.
    fn move_segment(&self, id: u64, site: Site) -> Result<Moved> {
        let _no_gc = self.gc_lock.lock();
        let key = keys::u64_key(id);
        let Some(seg) = self.meta.get::<SegmentRecord>(Cf::Segments, &key)? else {
            return Ok(Moved::Nothing);
        };
        if seg.site == site {
            return Ok(Moved::Nothing);
        }
        if self.blobs.is_pinned(id) {
            return Ok(Moved::Pinned);
        }
        if self.recovery.damaged_segments.contains(&id) {
            return Ok(Moved::Left(format!(
                "segment {id}: it was found missing or short at open (`keepsake verify` names the files it holds)"
            )));
        }
        let meta = &self.meta;
        let live = |h: &RecordHeader| {
            let at = Place::Segment(Location {
                segment: id,
                offset: h.offset,
                length: h.length,
            });
            matches!(meta.get::<BlobRecord>(Cf::Blobs, h.hash.as_bytes()), Ok(Some(b)) if b.place == at)
        };
        let copied = match self.blobs.copy_segment(id, seg.committed_len, site, &live) {
            Ok(copied) => copied,
            Err(Fault::Io { context, source }) if source.kind() == io::ErrorKind::InvalidData => {
                return Ok(Moved::Left(format!("segment {id}: {context}: {source}")))
            }
            Err(e) => return Err(e),
        };
        let damaged = copied.damaged.len() as u64;
        for h in &copied.damaged {
            self.note_damage(
                h.hash,
                Place::Segment(Location {
                    segment: id,
                    offset: h.offset,
                    length: h.length,
                }),
            );
        }
        let expected = seg;
        let switched = self.commit(move |txn| {
            let Some(now) = txn.get::<SegmentRecord>(Cf::Segments, &key)? else {
                return Ok(false);
            };
            // Its live bytes may have changed (a heal releases a copy of
            // it); its length and site change only by compaction, which
            // removes it, and by a migration, which holds this lock.
            if now.committed_len != expected.committed_len || now.site != expected.site {
                return Ok(false);
            }
            txn.put(Cf::Segments, key, &SegmentRecord { site, ..now });
            Ok(true)
        })?;
        if !switched {
            // Compacted or changed since: the copy serves nothing.
            if let Some(dest) = self.blobs.homes().home(site) {
                dest.remove(id)?;
            }
            return Ok(Moved::Nothing);
        }
        self.blobs.finish_move(id, site)?;
        Ok(Moved::Yes {
            bytes: seg.committed_len,
            found: !copied.written,
            damaged,
        })
    }
}

/// A failure of the store's bucket records, in this family's terms.
#[cfg(feature = "s3")]
fn from_open(e: crate::OpenError) -> MigrateError {
    use crate::OpenError;
    MigrateError::Storage(match e {
        OpenError::Io { context, source } => StorageError::Io { context, source },
        OpenError::Database(why) => StorageError::Database(why),
        OpenError::Corrupt(why) => StorageError::Corrupt(why),
        other => return MigrateError::Blobs(other.to_string()),
    })
}
