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
use crate::hash::ContentHash;
use crate::meta::keys;
use crate::meta::records::{BlobRecord, Place, SegmentRecord};
use crate::meta::{decode, Cf};
use crate::store::damage::mark_damaged;
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
    /// What else a user should know: an old copy that stayed behind, a
    /// bucket kept because it holds packs no record names.
    pub notes: Vec<String>,
    /// Whether every segment is at the destination now. After a move to
    /// the local disk, the bucket is then let go: the store no longer
    /// records it, and its claim on the prefix is deleted.
    pub done: bool,
}

/// How long a migration waits, in all, for segments whose records are
/// still being committed (or whose pack is still uploading).
const PINNED_PATIENCE: Duration = Duration::from_secs(10);

/// What moving one segment came to.
enum Moved {
    /// Moved: its committed length, whether the copy was found made, the
    /// blobs found damaged, and a note if its old copy stayed behind.
    Yes {
        bytes: u64,
        found: bool,
        damaged: u64,
        note: Option<String>,
    },
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
    /// again finishes the work; see `DESIGN.md` §15. A bucket the store
    /// records already is reached as the store was opened with.
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
    ///   other than the one it records, a prefix another store claimed,
    ///   or a second bucket after this process let one go (reopen the
    ///   store first).
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
        let mut report = MigrateReport::default();
        if site == Site::Disk && home_recorded(inner)?.is_none() {
            report.blobs = inner.blobs.home_name().to_string();
            report.done = true;
            return Ok(report);
        }
        // Nothing moves to or from a bucket the open could not reach until
        // it answers as the store's.
        inner.blobs.homes().reach()?;
        inner.send_new_segments_to(site)?;
        // Segments sealed into the other home by uploads before the switch
        // are committed first, so that the scan below sees them.
        inner.blobs.settle_away_from(site, PINNED_PATIENCE);
        let todo = inner.segments_away_from(site)?;
        let mut at = MigrateProgress {
            segments_total: todo.len() as u64,
            bytes_total: todo.iter().map(|(_, len)| len).sum(),
            ..MigrateProgress::default()
        };
        progress(at);
        let mut turn = todo;
        let mut waited = Duration::ZERO;
        loop {
            let mut pinned = Vec::new();
            for (id, len) in turn.drain(..) {
                match inner.move_segment(id, site)? {
                    Moved::Pinned => {
                        pinned.push((id, len));
                        continue;
                    }
                    Moved::Yes {
                        bytes,
                        found,
                        damaged,
                        note,
                    } => {
                        report.segments_moved += 1;
                        report.bytes_moved += bytes;
                        report.segments_found_copied += u64::from(found);
                        report.damaged_blobs += damaged;
                        report.notes.extend(note);
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
                for (id, len) in pinned {
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
            turn = pinned;
        }
        report.notes.extend(inner.sweep_old_copies(site)?);
        let settled = inner.blobs.settle_away_from(site, PINNED_PATIENCE);
        report.done = settled && report.left.is_empty() && inner.segments_away_from(site)?.is_empty();
        #[cfg(feature = "s3")]
        if report.done && site == Site::Disk {
            report.notes.extend(inner.let_bucket_go()?);
        }
        report.blobs = inner.blobs.home_name().to_string();
        Ok(report)
    }
}

/// The bucket the store records, if any.
fn home_recorded(inner: &Inner) -> std::result::Result<Option<String>, MigrateError> {
    #[cfg(feature = "s3")]
    return home::recorded(&inner.meta).map_err(from_open);
    #[cfg(not(feature = "s3"))]
    {
        let _ = inner;
        Ok(None)
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
            None if self.blobs.homes().home(Site::Bucket).is_some() => Err(MigrateError::Blobs(
                "this store let its bucket go since it was opened: reopen it to take a bucket again".into(),
            )),
            None => {
                let bucket = home::take_bucket(&self.meta, options).map_err(|e| match e {
                    // Another store's prefix, or a URL or endpoint that
                    // cannot be used as given.
                    crate::OpenError::Io { context, source }
                        if matches!(
                            source.kind(),
                            io::ErrorKind::AlreadyExists | io::ErrorKind::InvalidInput
                        ) =>
                    {
                        MigrateError::Blobs(format!("{context}: {source}"))
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
        // Pins first: a sealed segment takes no new record, so once it is
        // unpinned its record below is final.
        if self.blobs.is_pinned(id) {
            return Ok(Moved::Pinned);
        }
        let key = keys::u64_key(id);
        let Some(seg) = self.meta.get::<SegmentRecord>(Cf::Segments, &key)? else {
            return Ok(Moved::Nothing);
        };
        if seg.site == site {
            return Ok(Moved::Nothing);
        }
        if self.recovery.damaged_segments.contains(&id) {
            return Ok(Moved::Left(format!(
                "segment {id}: it was found missing or short at open (`keepsake verify` names the files it holds)"
            )));
        }
        let meta = &self.meta;
        let at = |h: &RecordHeader| {
            Place::Segment(Location {
                segment: id,
                offset: h.offset,
                length: h.length,
            })
        };
        let live = |h: &RecordHeader| matches!(meta.get::<BlobRecord>(Cf::Blobs, h.hash.as_bytes()), Ok(Some(b)) if b.place == at(h));
        let copied = match self.blobs.copy_segment(id, seg.committed_len, site, &live) {
            Ok(copied) => copied,
            // What no retry mends: this segment stays, the others go on.
            Err(Fault::Io { context, source })
                if matches!(
                    source.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::FileTooLarge | io::ErrorKind::AlreadyExists
                ) =>
            {
                return Ok(Moved::Left(format!("segment {id}: {context}: {source}")))
            }
            Err(e) => return Err(e),
        };
        let damaged: Vec<(ContentHash, Place)> = copied.damaged.iter().map(|h| (h.hash, at(h))).collect();
        let found_damaged = damaged.len() as u64;
        let expected = seg;
        let now_ms = self.now_ms();
        let switched = self.commit(move |txn| {
            let Some(now) = txn.get::<SegmentRecord>(Cf::Segments, &key)? else {
                return Ok(None);
            };
            // Its live bytes may have changed (a heal releases a copy of
            // it); its length and site change only by compaction, which
            // removes it, and by a migration, which holds this lock.
            if now.committed_len != expected.committed_len || now.site != expected.site {
                return Ok(Some(false));
            }
            txn.put(Cf::Segments, key, &SegmentRecord { site, ..now });
            // The damage found on the way moves with the segment, known.
            for (hash, place) in &damaged {
                mark_damaged(txn, hash, place, now_ms)?;
            }
            Ok(Some(true))
        })?;
        if switched != Some(true) {
            // The copy serves nothing: one this run wrote, or any once the
            // segment is gone. A copy it found there stays, as it was.
            if copied.written || switched.is_none() {
                if let Some(dest) = self.blobs.homes().home(site) {
                    dest.remove(id)?;
                }
            }
            return Ok(if switched.is_none() {
                Moved::Nothing
            } else {
                Moved::Pinned
            });
        }
        let note = self
            .blobs
            .finish_move(id, site)
            .err()
            .map(|e| format!("segment {id} moved, and its old copy stayed behind: {e}"));
        Ok(Moved::Yes {
            bytes: seg.committed_len,
            found: !copied.written,
            damaged: found_damaged,
            note,
        })
    }

    /// Removes what the other home still holds of segments now at `site`
    /// (old copies whose removal failed after their move), one note per
    /// copy that stays. As at open, a copy goes only where `site` holds
    /// the segment whole: one the open kept, its other copy missing or
    /// short, may be the only one.
    fn sweep_old_copies(&self, site: Site) -> Result<Vec<String>> {
        let other = match site {
            Site::Disk => Site::Bucket,
            Site::Bucket => Site::Disk,
        };
        let (Some(home), Some(dest)) = (self.blobs.homes().home(other), self.blobs.homes().home(site)) else {
            return Ok(Vec::new());
        };
        let held = dest.lengths()?;
        let mut notes = Vec::new();
        for id in home.lengths()?.into_keys() {
            let whole = |seg: &SegmentRecord| held.get(&id).is_some_and(|&len| len >= seg.committed_len);
            let moved = !self.recovery.damaged_segments.contains(&id)
                && self
                    .meta
                    .get::<SegmentRecord>(Cf::Segments, &keys::u64_key(id))?
                    .is_some_and(|seg| seg.site == site && self.blobs.homes().site(id) == site && whole(&seg));
            if moved {
                if let Err(e) = home.remove(id) {
                    notes.push(format!("the old copy of segment {id} stayed behind: {e}"));
                }
            }
        }
        Ok(notes)
    }

    /// Lets the store's bucket go once no segment record names it, in one
    /// commit, then deletes its claim on the prefix. A bucket that still
    /// holds packs no record names (uploads cut off before their commits,
    /// kept at open) is kept, and a note says so: letting it go would
    /// forget them.
    #[cfg(feature = "s3")]
    fn let_bucket_go(&self) -> std::result::Result<Vec<String>, MigrateError> {
        let Some(bucket) = self.blobs.homes().home(Site::Bucket) else {
            return Ok(Vec::new());
        };
        let packs = bucket.lengths()?;
        if !packs.is_empty() {
            let ids: Vec<String> = packs.keys().map(u64::to_string).collect();
            return Ok(vec![format!(
                "kept {}: it holds {} pack(s) no record names ({}); delete them, then run again to let it go",
                bucket.name(),
                packs.len(),
                ids.join(", ")
            )]);
        }
        let claim = self.meta.get_raw(Cf::Meta, keys::BLOBS_CLAIM)?;
        let gone = self.commit(|txn| {
            for (_, v) in txn.scan(Cf::Segments, &[])? {
                if decode::<SegmentRecord>(&v)?.site == Site::Bucket {
                    return Ok(false);
                }
            }
            for key in [keys::BLOBS, keys::BLOBS_CLAIM, keys::BLOBS_WRITES] {
                txn.delete(Cf::Meta, key.to_vec());
            }
            Ok(true)
        })?;
        if let (true, Some(claim)) = (gone, claim) {
            // The records are gone: a claim left behind (this failing)
            // only keeps the prefix from another store.
            bucket
                .release(&String::from_utf8_lossy(&claim))
                .map_err(|source| StorageError::Io {
                    context: format!("releasing the claim on {}", bucket.name()),
                    source,
                })?;
        }
        Ok(Vec::new())
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
