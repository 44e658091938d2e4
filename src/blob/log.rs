//! The blob log: appending records to the active segment (a local spool
//! file), making them durable in the segments' home before their commit,
//! reading them back checked, and recovering at open.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::sync::mpsc;

use super::disk::segment_name;
use super::format::{RecordHeader, ScanEnd, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::home::{self, Unreadable};
use super::outboard;
use super::placement::{Homes, Site};
use super::transfer::{self, Copied, LocalSide};
use crate::error::{Fault, Result};
use crate::fs::{Fs, FsFile};
use crate::hash::{read_full, ContentHash, Hasher};
use crate::health::Health;

/// Write buffer for streaming a source into a segment.
const WRITE_CHUNK: usize = 4 << 20;

/// Appended bytes are handed to the disk ([`FsFile::start_writeback`]) in
/// runs of this many. Without it, the kernel leaves a batch's 256 MiB dirty
/// until its `fdatasync`, and the disk sits idle while they are written;
/// 2, 8 and 32 MiB were measured, 8 was best (`DESIGN.md` §6).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub segment: u64,
    /// Offset of the record header.
    pub offset: u64,
    /// Data length (the record is `RECORD_HEADER_LEN` longer).
    pub length: u64,
}

impl Location {
    pub(crate) fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.length
    }

    pub(crate) fn end(&self) -> u64 {
        self.offset + self.record_len()
    }
}

/// The records one batch appended and has not synced yet: per segment, the
/// end of the last. The sequence "append, sync, then commit" of uploads and
/// compaction keeps one of these between its first two steps.
#[derive(Debug, Default)]
pub(crate) struct Written(std::collections::HashMap<u64, u64>);

impl Written {
    /// Notes a record appended at `loc`.
    pub(crate) fn add(&mut self, loc: Location) {
        let end = self.0.entry(loc.segment).or_default();
        *end = (*end).max(loc.end());
    }
}

/// The bytes of a record to append.
pub(crate) enum RecordData<'a> {
    /// Bytes that cannot change and are known to hash to the record's hash
    /// (in memory and hashed by the caller, or just read and verified), in
    /// pieces in order: written as they are, a write per piece, without
    /// hashing them again or joining them into one buffer.
    Verified(&'a [&'a [u8]]),
    /// A source that may have changed since the caller hashed it (a user's
    /// file, a staged stream): re-hashed as it is written, and the record
    /// rolled back with [`Fault::ContentChanged`] if it differs.
    Stream { reader: &'a mut dyn Read, length: u64 },
}

impl RecordData<'_> {
    fn len(&self) -> u64 {
        match self {
            RecordData::Verified(parts) => parts.iter().map(|p| p.len() as u64).sum(),
            RecordData::Stream { length, .. } => *length,
        }
    }
}

struct Active {
    id: u64,
    /// Whether its home keeps the spool as the segment (the local disk).
    keeps: bool,
    file: Arc<dyn FsFile>,
    /// Where the next record goes.
    len: u64,
    /// Everything below this offset is durable.
    synced: u64,
    writeback: Writeback,
}

/// How far the active segment's write-back has been started.
struct Writeback {
    /// Bytes below this offset were handed to the disk (or are durable).
    started: u64,
}

impl Writeback {
    /// Notes that the bytes up to `end` are written, and hands them to the
    /// disk once [`WRITEBACK_STEP`] of them wait.
    fn wrote(&mut self, file: &dyn FsFile, end: u64) {
        if end >= self.started + WRITEBACK_STEP {
            file.start_writeback(self.started, end - self.started);
            self.started = end;
        }
    }
}

/// What recovery found and did at open.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recovery {
    /// Segments whose file is shorter than their committed length, or
    /// missing: blobs in them cannot be served.
    pub damaged_segments: Vec<u64>,
    /// Human-readable notes of what was repaired.
    pub notes: Vec<String>,
}

pub(crate) struct BlobLog {
    fs: Arc<dyn Fs>,
    /// The spool directory: the active segment's file, and every segment
    /// on the local disk.
    dir: PathBuf,
    homes: Arc<Homes>,
    target_size: u64,
    health: Arc<Health>,
    active: Mutex<Option<Active>>,
    next_id: Mutex<u64>,
    /// Serialises the local disk's `fdatasync` calls so that concurrent
    /// committers share one.
    sync_lock: Mutex<()>,
    /// Seals into a home that does not keep spools, and their outcomes.
    sealer: Arc<Sealer>,
    /// The thread that uploads rolled segments while appends go on
    /// (started at the first roll), and the way to it.
    rolled: Mutex<Option<(mpsc::Sender<Active>, std::thread::JoinHandle<()>)>>,
    /// Per segment, records written whose commit has not finished. A pinned
    /// segment is never compacted: its metadata does not yet show records
    /// that are about to be committed.
    pins: Mutex<HashMap<u64, usize>>,
}

/// A record just appended, not yet durable.
pub(crate) struct Appended<'a> {
    /// Where it lies.
    pub loc: Location,
    /// Keeps its segment out of compaction until the commit that refers to it.
    pub pin: Pin<'a>,
    /// The blob's outboard, for a streamed record that wants one.
    pub outboard: Option<Vec<u8>>,
}

/// Keeps a record's segment from being compacted until the commit that
/// decides the record's fate has finished (dropped after it).
#[must_use = "the record's segment is only protected while the pin lives"]
pub(crate) struct Pin<'a> {
    log: &'a BlobLog,
    segment: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = self.log.pins.lock();
        if let Some(n) = pins.get_mut(&self.segment) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.segment);
            }
        }
    }
}

/// A segment being sealed into a home that does not keep spools.
#[derive(Debug, Clone)]
enum Sealing {
    InFlight,
    /// Its upload failed: the records in it are never committed.
    Failed(String),
}

/// Rolled segments whose upload may be in flight at once, while appends
/// go on into the next: one uploading and one waiting keeps the link busy
/// and bounds the spools on disk.
const ROLLED_IN_FLIGHT: usize = 2;

/// What sealing a segment into a home that does not keep spools needs,
/// shared by the log and the thread that uploads rolled segments.
struct Sealer {
    homes: Arc<Homes>,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    health: Arc<Health>,
    /// Segments taken from the active slot whose upload is in flight or
    /// failed: a committer whose records are in one waits for it (on
    /// `changed`), and fails with it. Marked in flight under the active
    /// lock, in the same step that takes the segment out, so that no
    /// committer can find its segment neither active nor in flight before
    /// its pack is up.
    state: Mutex<HashMap<u64, Sealing>>,
    changed: Condvar,
}

impl Sealer {
    /// Waits for the seal of `segment`, if one is in flight, and gives its
    /// outcome; a segment never sealed (or sealed long ago) is fine.
    fn wait(&self, segment: u64) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            match state.get(&segment) {
                None => return Ok(()),
                Some(Sealing::Failed(why)) => {
                    return Err(Fault::io(
                        format!("persisting segment {segment}"),
                        io::Error::other(why.clone()),
                    ))
                }
                Some(Sealing::InFlight) => self.changed.wait(&mut state),
            }
        }
    }

    /// Marks `segment` in flight once fewer than `limit` seals are.
    fn begin(&self, segment: u64, limit: usize) {
        let mut state = self.state.lock();
        while state.values().filter(|s| matches!(s, Sealing::InFlight)).count() >= limit {
            self.changed.wait(&mut state);
        }
        state.insert(segment, Sealing::InFlight);
    }

    /// Seals `active`, taken from the active slot and marked in flight,
    /// into the home (one pack object), then drops its spool: once it is
    /// uploaded, or once its upload failed, which abandons the records in
    /// it (their commits fail with this error).
    fn seal(&self, active: Active) -> Result<()> {
        let id = active.id;
        let result = if active.len > SEGMENT_HEADER_LEN as u64 {
            self.homes.of(id).persist(id, &*active.file, active.len, &self.health)
        } else {
            Ok(())
        };
        // Uploaded, abandoned or empty: the spool has served. Left behind,
        // the next open removes it.
        drop(active);
        let _ = self.fs.remove_file(&self.dir.join(segment_name(id)));
        let mut state = self.state.lock();
        match &result {
            Ok(()) => state.remove(&id),
            Err(e) => state.insert(id, Sealing::Failed(e.to_string())),
        };
        drop(state);
        self.changed.notify_all();
        result
    }
}

impl BlobLog {
    /// Opens the spool directory `dir` and reconciles each of `homes` with
    /// the segments committed to it (`committed`: id to committed length
    /// and site; see [`Home::reconcile`]): what no commit names is removed,
    /// bytes past a committed length are dropped, a segment missing or
    /// short is reported and its blobs refused, never served.
    ///
    /// A copy of a segment in the home that does not hold it (a spool whose
    /// pack is up, what a migration left behind) is removed where the other
    /// home holds the segment whole ([`Homes::reconcile`]).
    ///
    /// Every step is idempotent, so a crash during recovery is recovered by
    /// the next open.
    pub(crate) fn open(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        homes: Arc<Homes>,
        committed: &BTreeMap<u64, (u64, Site)>,
        target_size: u64,
        health: Arc<Health>,
    ) -> Result<(BlobLog, Recovery)> {
        fs.create_dir_all(&dir)
            .map_err(|e| Fault::io(format!("creating {}", dir.display()), e))?;
        // Syncing this directory makes the names of the segments in it
        // durable, not its own name in its parent: without this, a power cut
        // after the first commit to a new store could lose the directory and
        // every segment in it.
        if let Some(parent) = dir.parent() {
            fs.sync_dir(parent)
                .map_err(|e| Fault::io(format!("syncing {}", parent.display()), e))?;
        }
        let reconciled = homes.reconcile(committed)?;
        let recovery = Recovery {
            damaged_segments: reconciled.damaged,
            notes: reconciled.notes,
        };
        let sealer = Arc::new(Sealer {
            homes: homes.clone(),
            fs: fs.clone(),
            dir: dir.clone(),
            health: health.clone(),
            state: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        });
        let log = BlobLog {
            fs,
            dir,
            homes,
            target_size,
            health,
            active: Mutex::new(None),
            next_id: Mutex::new(reconciled.highest + 1),
            sync_lock: Mutex::new(()),
            sealer,
            rolled: Mutex::new(None),
            pins: Mutex::new(HashMap::new()),
        };
        // Keep appending to the newest segment while it has room, so that a
        // CLI that opens the store once per command does not leave a trail of
        // tiny segments. A sealed pack is immutable: a bucket's store starts
        // a new one.
        let newest = committed
            .iter()
            .next_back()
            .filter(|(_, &(_, site))| site == Site::Disk && log.homes.writes() == Site::Disk);
        if let Some((&id, &(len, _))) = newest {
            if len < target_size && !log.is_damaged(&recovery, id) {
                let path = log.path(id);
                let file: Arc<dyn FsFile> = Arc::from(
                    log.fs
                        .open(&path)
                        .map_err(|e| Fault::io(format!("opening {}", path.display()), e))?,
                );
                let mut head = [0u8; SEGMENT_HEADER_LEN];
                let header_ok =
                    file.read_exact_at(0, &mut head).is_ok() && SegmentHeader::decode(&head).map(|h| h.id) == Ok(id);
                if header_ok {
                    *log.active.lock() = Some(Active {
                        id,
                        keeps: true,
                        file,
                        len,
                        synced: len,
                        writeback: Writeback { started: len },
                    });
                }
            }
        }
        Ok((log, recovery))
    }

    fn is_damaged(&self, recovery: &Recovery, id: u64) -> bool {
        recovery.damaged_segments.contains(&id)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// Whether records of `segment` are written and not yet committed.
    pub(crate) fn is_pinned(&self, segment: u64) -> bool {
        self.pins.lock().contains_key(&segment)
    }

    /// Waits, for at most `patience`, until no segment away from `site` is
    /// being sealed or holds records whose commit has not finished; true
    /// if none is. Once new segments go to `site`, the segments elsewhere
    /// then stop changing: every record in them is committed or
    /// abandoned, and a scan of the metadata sees them all.
    pub(crate) fn settle_away_from(&self, site: Site, patience: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let sealing = self
                .sealer
                .state
                .lock()
                .iter()
                .any(|(&id, s)| matches!(s, Sealing::InFlight) && self.homes.site(id) != site);
            let pinned = self.pins.lock().keys().any(|&id| self.homes.site(id) != site);
            if !sealing && !pinned {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The lowest segment id that may still take records: the active
    /// segment's, or the next one's while none is open. Ids only grow, so
    /// every segment below it is sealed for good.
    pub(crate) fn sealed_below(&self) -> u64 {
        // The active lock first: a roll holds it while it takes the next id.
        let active = self.active.lock();
        active.as_ref().map_or_else(|| *self.next_id.lock(), |a| a.id)
    }

    /// Starts a new segment: header written and synced, directory entry
    /// synced, before any record in it can be committed. The full one is
    /// persisted first on the local disk (synced), so that every segment
    /// but the active one is durable; for a home that does not keep
    /// spools it is marked in flight and handed to the thread that uploads
    /// rolled segments: appends go on while it uploads (waiting here only
    /// while [`ROLLED_IN_FLIGHT`] seals are in flight).
    fn roll(&self, active: &mut Option<Active>) -> Result<()> {
        self.seal_active(active)?;
        *active = Some(self.start_segment()?);
        Ok(())
    }

    /// Seals the active segment, if any, as [`roll`](Self::roll) does,
    /// leaving none active.
    fn seal_active(&self, active: &mut Option<Active>) -> Result<()> {
        if let Some(old) = active.take() {
            if old.keeps {
                if old.synced < old.len {
                    self.homes
                        .of(old.id)
                        .persist(old.id, &*old.file, old.len, &self.health)?;
                }
            } else {
                self.sealer.begin(old.id, ROLLED_IN_FLIGHT);
                self.hand_over(old);
            }
        }
        Ok(())
    }

    /// Sends new segments to `site` from now on. The active segment, if
    /// it lives elsewhere, is sealed (synced, or handed to the uploading
    /// thread), so that every segment but the next one is sealed, and a
    /// migration finds it below [`sealed_below`](Self::sealed_below).
    ///
    /// # Errors
    ///
    /// The seal's (a failed `fdatasync` of the local disk).
    pub(crate) fn send_new_segments_to(&self, site: Site) -> Result<()> {
        let mut active = self.active.lock();
        self.homes.set_writes(site);
        if active.as_ref().is_some_and(|a| self.homes.site(a.id) != site) {
            self.seal_active(&mut active)?;
        }
        Ok(())
    }

    /// Gives a rolled segment, marked in flight, to the uploading thread,
    /// started the first time; sealed here if the thread cannot be had.
    fn hand_over(&self, old: Active) {
        let mut rolled = self.rolled.lock();
        if rolled.is_none() {
            let (tx, rx) = mpsc::channel::<Active>();
            let sealer = self.sealer.clone();
            let spawned = std::thread::Builder::new().name("keepsake-seal".into()).spawn(move || {
                for segment in rx {
                    // Its committers learn the outcome from the seal.
                    let _ = sealer.seal(segment);
                }
            });
            if let Ok(handle) = spawned {
                *rolled = Some((tx, handle));
            }
        }
        let unsent = match rolled.as_ref() {
            Some((tx, _)) => tx.send(old).err().map(|mpsc::SendError(old)| old),
            None => Some(old),
        };
        drop(rolled);
        if let Some(old) = unsent {
            let _ = self.sealer.seal(old);
        }
    }

    /// Creates the next segment's spool: header written and synced, the
    /// directory entry synced.
    fn start_segment(&self) -> Result<Active> {
        // A new id may be a pack's that no commit names, in a bucket the
        // open could not list ([`Homes::reach`]); `append` has asked it
        // already, outside the active lock, so this is no request unless
        // the check failed meanwhile.
        self.homes.reach()?;
        let id = {
            let mut next = self.next_id.lock();
            *next = (*next).max(self.homes.id_floor() + 1);
            let id = *next;
            *next += 1;
            id
        };
        let path = self.path(id);
        let file: Arc<dyn FsFile> = Arc::from(
            self.fs
                .create(&path)
                .map_err(|e| Fault::io(format!("creating {}", path.display()), e))?,
        );
        let site = self.homes.writes();
        self.homes.place(id, site);
        // A spool that is not the segment's home needs no durability: a
        // crash drops every spool, and the pack is what is made durable.
        let keeps = self.homes.of(id).keeps_spool();
        let durable = file
            .write_all_at(0, &SegmentHeader { id }.encode())
            .and_then(|()| if keeps { file.sync_data() } else { Ok(()) })
            .and_then(|()| if keeps { self.fs.sync_dir(&self.dir) } else { Ok(()) });
        if let Err(e) = durable {
            // The file holds nothing committed; recovery removes it if this
            // removal does not happen.
            let _ = self.fs.remove_file(&path);
            return Err(Fault::io(format!("creating segment {}", path.display()), e));
        }
        Ok(Active {
            id,
            keeps,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            synced: SEGMENT_HEADER_LEN as u64,
            writeback: Writeback {
                started: SEGMENT_HEADER_LEN as u64,
            },
        })
    }

    /// Appends a record of `data`, which must hash to `hash` (a
    /// [`RecordData::Stream`] is checked as it is written; see there).
    ///
    /// The record is not durable until [`sync`](Self::sync) covers it.
    ///
    /// Its segment stays out of compaction while the returned pin lives.
    /// A streamed record of a blob that wants an outboard
    /// ([`outboard::wanted`]) comes with it, made as the bytes went by.
    pub(crate) fn append(&self, hash: ContentHash, data: RecordData<'_>, what: &str) -> Result<Appended<'_>> {
        self.health.check()?;
        let length = data.len();
        let full = |active: &Option<Active>| {
            active.as_ref().is_none_or(|a| {
                a.len > SEGMENT_HEADER_LEN as u64 && a.len + RECORD_HEADER_LEN as u64 + length > self.target_size
            })
        };
        // A new segment waits for a bucket without an answer to be checked
        // (`start_segment`); that is asked with the lock every append and
        // commit takes let go, so that the wait holds no one else up.
        let mut guard = self.active.lock();
        while full(&guard) && self.homes.deferred() {
            drop(guard);
            self.homes.reach()?;
            guard = self.active.lock();
        }
        if full(&guard) {
            self.roll(&mut guard)?;
        }
        let active = guard.as_mut().expect("rolled above");
        let loc = Location {
            segment: active.id,
            offset: active.len,
            length,
        };
        match write_record(&*active.file, &mut active.writeback, loc, hash, data, what) {
            Ok(outboard) => {
                active.len = loc.end();
                // Pinned while the segment is still active (the lock is held),
                // so compaction, which only takes sealed segments, can never
                // see this record's segment unpinned before its commit.
                *self.pins.lock().entry(loc.segment).or_default() += 1;
                Ok(Appended {
                    loc,
                    pin: Pin {
                        log: self,
                        segment: loc.segment,
                    },
                    outboard,
                })
            }
            Err(e) => {
                // Leave no trace: the next record reuses this offset.
                active.writeback.started = active.writeback.started.min(loc.offset);
                if let Err(undo) = active.file.set_len(loc.offset) {
                    self.health.poison(format!(
                        "rolling back a failed write to segment {}: {undo}",
                        loc.segment
                    ));
                }
                Err(e)
            }
        }
    }

    /// Makes every record in `written` durable: one `fdatasync` per segment
    /// at most, before the commit that points at them.
    pub(crate) fn sync_written(&self, written: &Written) -> Result<()> {
        written
            .0
            .iter()
            .try_for_each(|(&segment, &end)| self.sync(segment, end))
    }

    /// Makes every record up to `end` of `segment` durable. Concurrent
    /// callers share one persist: a caller whose bytes an earlier one
    /// already covered returns at once, or once the seal in flight that
    /// covers them ends (with its error, if it failed).
    pub(crate) fn sync(&self, segment: u64, end: u64) -> Result<()> {
        let covered = |a: &Option<Active>| a.as_ref().is_none_or(|a| a.id != segment || a.synced >= end);
        {
            let mut guard = self.active.lock();
            if covered(&guard) {
                drop(guard);
                // A rolled segment of the local disk was synced when it was
                // rolled; one of a bucket may still be uploading.
                return self.sealer.wait(segment);
            }
            if guard.as_ref().is_some_and(|a| !a.keeps) {
                let active = guard.take().expect("not covered, so active");
                self.sealer.begin(segment, usize::MAX);
                drop(guard);
                return self.sealer.seal(active);
            }
        }
        let _one_sync_at_a_time = self.sync_lock.lock();
        let (file, target) = {
            let a = self.active.lock();
            if covered(&a) {
                return Ok(());
            }
            let a = a.as_ref().expect("checked above");
            (a.file.clone(), a.len)
        };
        self.homes.of(segment).persist(segment, &*file, target, &self.health)?;
        if let Some(a) = self.active.lock().as_mut().filter(|a| a.id == segment) {
            a.synced = a.synced.max(target);
        }
        Ok(())
    }

    /// The data of the record at `loc`, which must be the blob `hash`.
    /// Everything is checked before a byte is returned: the record header
    /// (magic, checksum, its own place, length, hash) and the BLAKE3 hash of
    /// the data. On local disk the returned `Bytes` borrows the segment's
    /// memory map; from a bucket it holds the ranged GET's answer.
    pub(crate) fn read(&self, loc: Location, hash: ContentHash) -> Result<Bytes> {
        let data = self.record(loc, hash)?;
        let actual = ContentHash::of(&data);
        if actual != hash {
            return Err(Fault::Integrity {
                hash,
                detail: format!("data hashes to {actual}"),
            });
        }
        Ok(data)
    }

    /// The data of the record at `loc`, which must be the blob `hash`, with
    /// its header checked but its bytes not hashed: for a caller that checks
    /// the parts it uses against the blob's outboard.
    pub(crate) fn record(&self, loc: Location, hash: ContentHash) -> Result<Bytes> {
        let record = self
            .homes
            .read(loc.segment, loc.offset..loc.end())
            .map_err(|e| unreadable(hash, e))?;
        checked_record(record, loc, hash)
    }

    /// As [`record`](Self::record), from a home whose records cost nothing
    /// to hold until read (a memory map of the local disk); `None` if the
    /// segment is not in one, or its move away committed meanwhile: the
    /// caller then reads the parts it needs instead of the whole record.
    pub(crate) fn mapped_record(&self, loc: Location, hash: ContentHash) -> Result<Option<Bytes>> {
        let site = self.homes.site(loc.segment);
        let Some(home) = self.homes.home(site).filter(|h| h.keeps_spool()) else {
            return Ok(None);
        };
        match home.read(loc.segment, loc.offset..loc.end()) {
            Err(Unreadable::Lost(_)) if self.homes.site(loc.segment) != site => Ok(None),
            read => checked_record(read.map_err(|e| unreadable(hash, e))?, loc, hash).map(Some),
        }
    }

    /// Bytes `range` of the data of the record at `loc` (blob `hash`),
    /// unchecked: for a reader that checks them against the blob's
    /// outboard, without the record's other bytes crossing the network.
    pub(crate) fn data_range(&self, loc: Location, hash: ContentHash, range: Range<u64>) -> Result<Bytes> {
        let at = loc.offset + RECORD_HEADER_LEN as u64;
        self.homes
            .read(loc.segment, at + range.start..at + range.end.min(loc.length))
            .map_err(|e| unreadable(hash, e))
    }

    /// The data of the record at `loc` (blob `hash`) as a stream, fetched
    /// [`READ_WINDOW`] at a time and unchecked: for a pass that hashes a
    /// large blob in a bucket without holding it whole.
    pub(crate) fn reader(&self, loc: Location, hash: ContentHash) -> RecordReader<'_> {
        RecordReader {
            log: self,
            loc,
            hash,
            pos: 0,
            buf: Bytes::new(),
            failed: None,
        }
    }

    /// Whether a whole record of `segment` costs nothing to hold until it
    /// is read (a memory map of a local segment): a reader may then take
    /// the whole record and check it a part at a time. From a bucket, it
    /// reads the parts it checks ([`data_range`](Self::data_range)).
    pub(crate) fn maps_records(&self, segment: u64) -> bool {
        self.homes.of(segment).keeps_spool()
    }

    /// The record headers in the committed part (`committed` bytes) of
    /// segment `id`, for compaction and repair: see [`home::scan`].
    pub(crate) fn scan(&self, id: u64, committed: u64) -> std::result::Result<(Vec<RecordHeader>, ScanEnd), String> {
        if self.homes.site(id) == Site::Bucket {
            self.homes.reach().map_err(|e| e.to_string())?;
        }
        home::scan(self.homes.of(id), id, committed).map_err(|e| e.to_string())
    }

    /// Whether segment `id` starts with its own, whole header.
    ///
    /// # Errors
    ///
    /// [`Fault::Io`] if its home could not give the bytes now (a bucket
    /// that timed out): that is not damage.
    pub(crate) fn header_ok(&self, id: u64) -> Result<bool> {
        match self.homes.read(id, 0..SEGMENT_HEADER_LEN as u64) {
            Ok(h) => Ok(SegmentHeader::decode(&h).is_ok_and(|h| h.id == id)),
            Err(Unreadable::Lost(_)) => Ok(false),
            Err(Unreadable::Io(context, source)) => Err(Fault::Io { context, source }),
        }
    }

    /// Removes a segment whose removal from the metadata has committed; a
    /// segment already gone (a lost segment retired) is not an error.
    ///
    /// Ids are never reused, so once its record is gone every copy of it
    /// is garbage: one a migration left in the other home goes too.
    pub(crate) fn remove_segment(&self, id: u64) -> Result<()> {
        // Nothing is deleted from a prefix not known to be the store's. If
        // it still gives no answer, the local copy goes at the next open
        // (no commit names it) and the pack stays, as one no commit names.
        self.homes.reach()?;
        let site = self.homes.site(id);
        let removed = self.homes.of(id).remove(id);
        let other = [Site::Disk, Site::Bucket]
            .into_iter()
            .filter(|&s| s != site)
            .find_map(|s| self.homes.home(s))
            .map_or(Ok(()), |home| home.remove(id));
        self.homes.forget(id);
        removed.and(other)
    }

    /// The length of every segment its home holds (for statistics and
    /// verification): one listing.
    pub(crate) fn lengths(&self) -> Result<BTreeMap<u64, u64>> {
        self.homes.lengths()
    }

    /// How messages name where new segments go.
    pub(crate) fn home_name(&self) -> &str {
        self.homes.of_writes().name()
    }

    /// The homes of the segments, and the site of each.
    pub(crate) fn homes(&self) -> &Homes {
        &self.homes
    }

    /// Copies sealed segment `id` (its committed part, `0..len`) to the
    /// home at `to`, checked: see [`transfer::copy`]. The segment stays
    /// where it was until [`finish_move`](Self::finish_move).
    pub(crate) fn copy_segment(
        &self,
        id: u64,
        len: u64,
        to: Site,
        live: &dyn Fn(&RecordHeader) -> bool,
    ) -> Result<Copied> {
        let local = LocalSide {
            fs: &*self.fs,
            dir: &self.dir,
            health: &self.health,
        };
        transfer::copy(&self.homes, &local, id, len, to, live)
    }

    /// Serves segment `id` from `to`, where the commit that moves it there
    /// has put it, and removes its copy at its old site. A read on its way
    /// to the old copy is asked again of the new one
    /// ([`Homes::read`]).
    ///
    /// # Errors
    ///
    /// The removal's: the segment has moved all the same, and the old copy
    /// is removed by the migration's sweep or at the next open.
    pub(crate) fn finish_move(&self, id: u64, to: Site) -> Result<()> {
        let from = self.homes.site(id);
        self.homes.place(id, to);
        match self.homes.home(from) {
            Some(old) if from != to => old.remove(id),
            _ => Ok(()),
        }
    }
}

impl Drop for BlobLog {
    /// Lets the uploads of rolled segments finish: their committers are
    /// gone, but a pack cut off mid-upload would leave parts behind.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.rolled.get_mut().take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// How much of a record a [`RecordReader`] fetches at once.
const READ_WINDOW: u64 = 8 << 20;

/// A record's data as a [`Read`] stream; see [`BlobLog::reader`].
pub(crate) struct RecordReader<'a> {
    log: &'a BlobLog,
    loc: Location,
    hash: ContentHash,
    pos: u64,
    buf: Bytes,
    /// The read that failed, told apart from the stream's own errors (an
    /// `io::Error` that only says one happened).
    pub(crate) failed: Option<Fault>,
}

impl Read for RecordReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.loc.length {
                return Ok(0);
            }
            let end = self.loc.length.min(self.pos + READ_WINDOW);
            match self.log.data_range(self.loc, self.hash, self.pos..end) {
                Ok(b) if !b.is_empty() => self.buf = b,
                Ok(_) => return Ok(0),
                Err(e) => {
                    let message = e.to_string();
                    self.failed = Some(e);
                    return Err(io::Error::other(message));
                }
            }
            self.pos += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// The data of `record`, the bytes at `loc`, once its header is checked
/// to be blob `hash`'s, there.
fn checked_record(record: Bytes, loc: Location, hash: ContentHash) -> Result<Bytes> {
    let integrity = |detail: String| Fault::Integrity { hash, detail };
    let header = RecordHeader::decode(&record)
        .map_err(|e| integrity(format!("record header in segment {}: {e}", loc.segment)))?;
    let expected = RecordHeader {
        segment: loc.segment,
        offset: loc.offset,
        length: loc.length,
        hash,
    };
    if header != expected {
        return Err(integrity(format!(
            "record at segment {} offset {} is not this blob",
            loc.segment, loc.offset
        )));
    }
    Ok(record.slice(RECORD_HEADER_LEN..))
}

/// A read of a record that failed: lost bytes are damage to the blob,
/// anything else an I/O error to retry.
fn unreadable(hash: ContentHash, e: Unreadable) -> Fault {
    match e {
        Unreadable::Lost(detail) => Fault::Integrity { hash, detail },
        Unreadable::Io(context, source) => Fault::Io { context, source },
    }
}

fn write_record(
    file: &dyn FsFile,
    writeback: &mut Writeback,
    loc: Location,
    hash: ContentHash,
    data: RecordData<'_>,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    let header = RecordHeader {
        segment: loc.segment,
        offset: loc.offset,
        length: loc.length,
        hash,
    };
    let io = |e| Fault::io(format!("writing segment {}", loc.segment), e);
    file.write_all_at(loc.offset, &header.encode()).map_err(io)?;
    let mut at = loc.offset + RECORD_HEADER_LEN as u64;
    let source = match data {
        RecordData::Verified(parts) => {
            for part in parts {
                file.write_all_at(at, part).map_err(io)?;
                at += part.len() as u64;
            }
            writeback.wrote(file, at);
            return Ok(None);
        }
        RecordData::Stream { reader, .. } => reader,
    };
    // A write error, told apart from the source's errors, which the
    // outboard's pass returns alike.
    let mut failed = None;
    let mut put = |chunk: &[u8]| -> io::Result<()> {
        if let Err(e) = file.write_all_at(at, chunk) {
            failed = Some(e);
            return Err(io::Error::other("the segment write failed"));
        }
        at += chunk.len() as u64;
        writeback.wrote(file, at);
        Ok(())
    };
    let (actual, outboard) = if outboard::wanted(loc.length) {
        let made = outboard::create(source, loc.length, &mut put);
        if let Some(e) = failed.take() {
            return Err(io(e));
        }
        match made {
            Ok((actual, ob)) => (actual, Some(ob)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Fault::ContentChanged(what.to_string())),
            Err(e) => return Err(Fault::io(format!("reading {what}"), e)),
        }
    } else {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; WRITE_CHUNK.min(loc.length.max(1) as usize)];
        let mut remaining = loc.length;
        while remaining > 0 {
            let want = buf.len().min(remaining as usize);
            let n = read_full(source, &mut buf[..want]).map_err(|e| Fault::io(format!("reading {what}"), e))?;
            if n < want {
                return Err(Fault::ContentChanged(what.to_string()));
            }
            hasher.update(&buf[..n]);
            if put(&buf[..n]).is_err() {
                return Err(io(failed.take().expect("put failed")));
            }
            remaining -= n as u64;
        }
        (hasher.finalize(), None)
    };
    let mut probe = [0u8; 1];
    let grew = read_full(source, &mut probe).map_err(|e| Fault::io(format!("reading {what}"), e))? > 0;
    if grew || actual != hash {
        return Err(Fault::ContentChanged(what.to_string()));
    }
    Ok(outboard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::disk::{Disk, MAX_VIEWS};
    use crate::fs::OsFs;
    use std::path::Path;

    fn open_local(fs: Arc<dyn Fs>, dir: &Path, target_size: u64) -> BlobLog {
        let home = Arc::new(Disk::new(fs.clone(), dir.to_path_buf()));
        BlobLog::open(
            fs,
            dir.to_path_buf(),
            Arc::new(Homes::new(home, None, Site::Disk)),
            &BTreeMap::new(),
            target_size,
            Arc::default(),
        )
        .unwrap()
        .0
    }

    /// Reading more segments than the view cache holds keeps every read
    /// working and the cache bounded.
    #[test]
    fn the_map_cache_stays_bounded_across_many_segments() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Disk::new(Arc::new(OsFs), dir.path().to_path_buf()));
        let (log, _) = BlobLog::open(
            Arc::new(OsFs),
            dir.path().to_path_buf(),
            Arc::new(Homes::new(disk.clone(), None, Site::Disk)),
            &BTreeMap::new(),
            4096,
            Arc::default(),
        )
        .unwrap();
        let mut written = Vec::new();
        for i in 0..(MAX_VIEWS + 50) as u32 {
            let data = i.to_le_bytes().repeat(1024);
            let hash = ContentHash::of(&data);
            let loc = log.append(hash, RecordData::Verified(&[&data]), "test").unwrap().loc;
            written.push((loc, hash, data));
        }
        let segments: std::collections::HashSet<_> = written.iter().map(|(l, _, _)| l.segment).collect();
        assert!(segments.len() > MAX_VIEWS, "each record fills its own segment");
        let held: Vec<Bytes> = written
            .iter()
            .map(|(loc, hash, data)| {
                let got = log.read(*loc, *hash).unwrap();
                assert_eq!(&got[..], &data[..]);
                got
            })
            .collect();
        assert!(disk.views_held() <= MAX_VIEWS);
        // Bytes handed out before their view was evicted are still valid.
        assert_eq!(&held[0][..], &written[0].2[..]);
    }
    /// The real file system, noting every write-back hint its files get.
    #[derive(Debug, Default)]
    struct HintedFs(Arc<Mutex<Vec<(u64, u64)>>>);

    struct HintedFile(Box<dyn FsFile>, Arc<Mutex<Vec<(u64, u64)>>>);

    impl Fs for HintedFs {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            OsFs.create_dir_all(dir)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            OsFs.list(dir)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(HintedFile(OsFs.create(path)?, self.0.clone())))
        }
        fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(HintedFile(OsFs.open(path)?, self.0.clone())))
        }
        unsafe fn map(&self, path: &Path) -> io::Result<Bytes> {
            // SAFETY: the caller's contract, passed on unchanged.
            unsafe { OsFs.map(path) }
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            OsFs.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            OsFs.sync_dir(dir)
        }
    }

    impl FsFile for HintedFile {
        fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.0.write_all_at(offset, buf)
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_exact_at(offset, buf)
        }
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn start_writeback(&self, offset: u64, len: u64) {
            self.1.lock().push((offset, len));
        }
    }

    /// Small records and a streamed one are handed to the disk in runs of
    /// at least [`WRITEBACK_STEP`] bytes, each run starting where the last
    /// ended, none past what was written: the disk works during the
    /// batch, not only at its sync.
    #[test]
    fn appended_bytes_are_handed_to_the_disk_in_runs_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let fs = HintedFs::default();
        let hints = fs.0.clone();
        let log = open_local(Arc::new(fs), dir.path(), 1 << 40);
        let mut end = 0;
        for i in 0..40u32 {
            let data = i.to_le_bytes().repeat(64 << 10);
            let loc = log
                .append(ContentHash::of(&data), RecordData::Verified(&[&data]), "small")
                .unwrap()
                .loc;
            end = loc.end();
        }
        let big = vec![7u8; 5 * WRITE_CHUNK + 5];
        let mut reader = &big[..];
        let stream = RecordData::Stream {
            reader: &mut reader,
            length: big.len() as u64,
        };
        let loc = log.append(ContentHash::of(&big), stream, "big").unwrap().loc;
        assert!(loc.offset == end && loc.end() > end + 2 * WRITEBACK_STEP);

        let hints = hints.lock().clone();
        let mut at = SEGMENT_HEADER_LEN as u64;
        for &(offset, len) in &hints {
            assert_eq!(offset, at, "{hints:?}");
            assert!(len >= WRITEBACK_STEP, "{hints:?}");
            at += len;
        }
        assert!(at <= loc.end() && loc.end() - at < WRITEBACK_STEP, "{hints:?}");
        let inside_the_stream = |&(o, l): &(u64, u64)| (loc.offset..loc.end()).contains(&(o + l));
        assert!(hints.iter().any(inside_the_stream), "{hints:?}");
    }
}
