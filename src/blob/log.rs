//! The blob log: appending records to the active segment, syncing them,
//! reading them back through memory maps, and recovering at open.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::format::{RecordHeader, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::outboard;
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

/// Segment maps kept for reuse. A store of many terabytes has tens of
/// thousands of segments, more than the kernel's default limit on mappings
/// per process (`vm.max_map_count`, 65,530); evicting a view only drops the
/// cache's reference, and the mapping lives on while a returned `Bytes`
/// uses it.
const MAX_VIEWS: usize = 1024;

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

/// Why a segment could not be viewed: its bytes are lost (the file is
/// gone or shorter than the metadata says, which is damage), or the system
/// could not map it now (which is not).
enum ViewError {
    Lost(String),
    Io(String, io::Error),
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
    dir: PathBuf,
    target_size: u64,
    health: Arc<Health>,
    active: Mutex<Option<Active>>,
    next_id: Mutex<u64>,
    /// Serialises `fdatasync` calls so that concurrent committers share one.
    sync_lock: Mutex<()>,
    /// Whole-file views of segments, remapped when a read needs more than a
    /// view covers (the active segment grows).
    views: RwLock<HashMap<u64, Bytes>>,
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

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The path of segment `id` of the store at `root`, for a reader that has
/// no blob log (a read-only open checks that every segment is whole).
pub(crate) fn segment_file(root: &Path, id: u64) -> PathBuf {
    root.join(SEGMENTS_DIR).join(segment_name(id))
}

/// The store's directory of segment files.
pub(crate) const SEGMENTS_DIR: &str = "segments";

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl BlobLog {
    /// Opens the segment directory, reconciling it with the committed
    /// segment lengths from the metadata:
    ///
    /// - a file that no committed metadata names holds only records that were
    ///   never acknowledged (a crash before their commit, or a segment already
    ///   compacted away whose removal was interrupted): it is removed;
    /// - bytes past a segment's committed length were never acknowledged:
    ///   they are truncated;
    /// - a file shorter than its committed length, or missing, is reported
    ///   and its blobs refused, never served.
    ///
    /// Every step is idempotent, so a crash during recovery is recovered by
    /// the next open.
    pub(crate) fn open(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        committed: &BTreeMap<u64, u64>,
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
        let mut recovery = Recovery::default();
        let mut on_disk = BTreeMap::new();
        for name in fs
            .list(&dir)
            .map_err(|e| Fault::io(format!("listing {}", dir.display()), e))?
        {
            if let Some(id) = parse_segment_name(&name) {
                on_disk.insert(id, ());
            }
        }
        let mut removed_any = false;
        for &id in on_disk.keys() {
            if !committed.contains_key(&id) {
                let path = dir.join(segment_name(id));
                fs.remove_file(&path)
                    .map_err(|e| Fault::io(format!("removing orphan {}", path.display()), e))?;
                recovery
                    .notes
                    .push(format!("removed segment {id}: no committed record refers to it"));
                removed_any = true;
            }
        }
        if removed_any {
            fs.sync_dir(&dir)
                .map_err(|e| Fault::io(format!("syncing {}", dir.display()), e))?;
        }
        for (&id, &len) in committed {
            let path = dir.join(segment_name(id));
            if !on_disk.contains_key(&id) {
                recovery.damaged_segments.push(id);
                recovery.notes.push(format!("segment {id} is missing"));
                continue;
            }
            let file = fs
                .open(&path)
                .map_err(|e| Fault::io(format!("opening {}", path.display()), e))?;
            let actual = file
                .len()
                .map_err(|e| Fault::io(format!("reading length of {}", path.display()), e))?;
            if actual > len {
                file.set_len(len)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Fault::io(format!("truncating {}", path.display()), e))?;
                recovery
                    .notes
                    .push(format!("segment {id}: dropped {} uncommitted bytes", actual - len));
            } else if actual < len {
                recovery.damaged_segments.push(id);
                recovery.notes.push(format!(
                    "segment {id} is {actual} bytes, shorter than its committed {len}"
                ));
            }
        }
        let next_id = on_disk.keys().chain(committed.keys()).max().map_or(1, |m| m + 1);
        let log = BlobLog {
            fs,
            dir,
            target_size,
            health,
            active: Mutex::new(None),
            next_id: Mutex::new(next_id),
            sync_lock: Mutex::new(()),
            views: RwLock::new(HashMap::new()),
            pins: Mutex::new(HashMap::new()),
        };
        // Keep appending to the newest segment while it has room, so that a
        // CLI that opens the store once per command does not leave a trail of
        // tiny segments.
        if let Some((&id, &len)) = committed.iter().next_back() {
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

    /// The lowest segment id that may still take records: the active
    /// segment's, or the next one's while none is open. Ids only grow, so
    /// every segment below it is sealed for good.
    pub(crate) fn sealed_below(&self) -> u64 {
        // The active lock first: a roll holds it while it takes the next id.
        let active = self.active.lock();
        active.as_ref().map_or_else(|| *self.next_id.lock(), |a| a.id)
    }

    /// Starts a new segment: header written and synced, directory entry
    /// synced, before any record in it can be committed.
    fn roll(&self, active: &mut Option<Active>) -> Result<()> {
        if let Some(old) = active.take() {
            if old.synced < old.len {
                if let Err(e) = old.file.sync_data() {
                    self.health.poison(format!("fsync of segment {} failed: {e}", old.id));
                    return Err(Fault::io(format!("syncing segment {}", old.id), e));
                }
            }
        }
        let id = {
            let mut next = self.next_id.lock();
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
        let durable = file
            .write_all_at(0, &SegmentHeader { id }.encode())
            .and_then(|()| file.sync_data())
            .and_then(|()| self.fs.sync_dir(&self.dir));
        if let Err(e) = durable {
            // The file holds nothing committed; recovery removes it if this
            // removal does not happen.
            let _ = self.fs.remove_file(&path);
            return Err(Fault::io(format!("creating segment {}", path.display()), e));
        }
        *active = Some(Active {
            id,
            file,
            len: SEGMENT_HEADER_LEN as u64,
            synced: SEGMENT_HEADER_LEN as u64,
            writeback: Writeback {
                started: SEGMENT_HEADER_LEN as u64,
            },
        });
        Ok(())
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
        let mut guard = self.active.lock();
        let full = guard.as_ref().is_none_or(|a| {
            a.len > SEGMENT_HEADER_LEN as u64 && a.len + RECORD_HEADER_LEN as u64 + length > self.target_size
        });
        if full {
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
    /// callers share one `fdatasync`: a caller whose bytes an earlier sync
    /// already covered returns at once.
    pub(crate) fn sync(&self, segment: u64, end: u64) -> Result<()> {
        let covered = |a: &Option<Active>| a.as_ref().is_none_or(|a| a.id != segment || a.synced >= end);
        if covered(&self.active.lock()) {
            // A rolled segment was synced when it was rolled.
            return Ok(());
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
        if let Err(e) = file.sync_data() {
            self.health.poison(format!("fsync of segment {segment} failed: {e}"));
            return Err(Fault::io(format!("syncing segment {segment}"), e));
        }
        if let Some(a) = self.active.lock().as_mut().filter(|a| a.id == segment) {
            a.synced = a.synced.max(target);
        }
        Ok(())
    }

    /// The data of the record at `loc`, which must be the blob `hash`.
    /// Everything is checked before a byte is returned: the record header
    /// (magic, checksum, its own place, length, hash) and the BLAKE3 hash of
    /// the data. The returned `Bytes` borrows the segment's memory map.
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
        let view = self.view(loc.segment, loc.end()).map_err(|e| match e {
            ViewError::Lost(detail) => Fault::Integrity { hash, detail },
            ViewError::Io(context, source) => Fault::Io { context, source },
        })?;
        let integrity = |detail: String| Fault::Integrity { hash, detail };
        // Only the record's own bytes are ever looked at (not the view's
        // tail, which may be an append in flight): see `view`.
        let record = view.slice(loc.offset as usize..loc.end() as usize);
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

    /// A view of segment `id` covering at least `need` bytes.
    fn view(&self, id: u64, need: u64) -> std::result::Result<Bytes, ViewError> {
        if let Some(v) = self.views.read().get(&id).filter(|v| v.len() as u64 >= need) {
            return Ok(v.clone());
        }
        let path = self.path(id);
        // SAFETY: `Fs::map` requires that no byte read through the view is
        // modified or truncated away while the view lives. Every read through
        // a view stops at `need`, the end of a record whose location the
        // metadata gave: `read` slices out that one record, `segment_bytes`
        // the segment's committed part. Those bytes are final: a segment is
        // append-only below its committed length, each record is written
        // once, before the commit that makes its location known, and removing
        // a compacted segment leaves existing maps valid. A segment is only
        // ever truncated by recovery at open (past its committed length) and
        // by a failed append (back to the offset that append started at, the
        // end of every record written before it); both cut only bytes past
        // every record anyone was given. A view taken while an append is in
        // flight does cover that append's first bytes, which a failure cuts
        // off again, but nothing reads them.
        let v = unsafe { self.fs.map(&path) }.map_err(|e| match e.kind() {
            // The file is gone: what it held is lost, as damage is.
            io::ErrorKind::NotFound => ViewError::Lost(format!("segment {id} is missing")),
            // Anything else (too many open files, no memory, an I/O error)
            // says nothing about the bytes: the next read may succeed.
            _ => ViewError::Io(format!("mapping segment {id}"), e),
        })?;
        if (v.len() as u64) < need {
            return Err(ViewError::Lost(format!(
                "segment {id} is {} bytes, the record ends at {need}",
                v.len()
            )));
        }
        let mut views = self.views.write();
        if views.len() >= MAX_VIEWS && !views.contains_key(&id) {
            // Any victim will do: a hot segment is simply mapped again.
            if let Some(&victim) = views.keys().next() {
                views.remove(&victim);
            }
        }
        views.insert(id, v.clone());
        Ok(v)
    }

    /// The whole committed part of a segment, for compaction and scrubbing.
    pub(crate) fn segment_bytes(&self, id: u64, committed: u64) -> std::result::Result<Bytes, String> {
        match self.view(id, committed) {
            Ok(v) => Ok(v.slice(..committed as usize)),
            Err(ViewError::Lost(detail)) => Err(detail),
            Err(ViewError::Io(context, e)) => Err(format!("{context}: {e}")),
        }
    }

    /// Removes a segment file whose removal from the metadata has committed;
    /// a file already gone (a lost segment retired) is not an error.
    pub(crate) fn remove_segment(&self, id: u64) -> Result<()> {
        self.views.write().remove(&id);
        let path = self.path(id);
        self.fs
            .remove_file(&path)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|()| self.fs.sync_dir(&self.dir))
            .map_err(|e| Fault::io(format!("removing {}", path.display()), e))
    }

    /// Length of a segment file on disk (for statistics and verification).
    pub(crate) fn file_len(&self, id: u64) -> Option<u64> {
        self.fs.open(&self.path(id)).ok()?.len().ok()
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
    use crate::fs::OsFs;

    /// Reading more segments than the view cache holds keeps every read
    /// working and the cache bounded.
    #[test]
    fn the_map_cache_stays_bounded_across_many_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = BlobLog::open(
            Arc::new(OsFs),
            dir.path().to_path_buf(),
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
        assert!(log.views.read().len() <= MAX_VIEWS);
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
        let (log, _) = BlobLog::open(
            Arc::new(fs),
            dir.path().to_path_buf(),
            &BTreeMap::new(),
            1 << 40,
            Arc::default(),
        )
        .unwrap();
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
