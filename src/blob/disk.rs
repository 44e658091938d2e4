//! The local disk as the home of sealed segments: the spool directory's
//! files are the segments, made durable by `fdatasync` and read through
//! memory maps.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::home::{Elsewhere, Home, Reconciled, Unreadable};
use crate::error::{Fault, Result};
use crate::fs::{Fs, FsFile};
use crate::health::Health;

/// Segment maps kept for reuse. A store of many terabytes has tens of
/// thousands of segments, more than the kernel's default limit on mappings
/// per process (`vm.max_map_count`, 65,530); evicting a view only drops the
/// cache's reference, and the mapping lives on while a returned `Bytes`
/// uses it.
pub(super) const MAX_VIEWS: usize = 1024;

/// The store's directory of segment files.
pub(crate) const SEGMENTS_DIR: &str = "segments";

pub(super) fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The path of segment `id` of the store at `root`, for a reader that has
/// no blob log (a read-only open checks that every segment is whole).
pub(crate) fn segment_file(root: &Path, id: u64) -> PathBuf {
    root.join(SEGMENTS_DIR).join(segment_name(id))
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Segment files in one directory.
pub(crate) struct Disk {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Whole-file views of segments, remapped when a read needs more than a
    /// view covers (the active segment grows).
    views: RwLock<HashMap<u64, Bytes>>,
}

impl Disk {
    pub(crate) fn new(fs: Arc<dyn Fs>, dir: PathBuf) -> Disk {
        Disk {
            fs,
            dir,
            views: RwLock::new(HashMap::new()),
        }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// A view of segment `id` covering at least `need` bytes.
    fn view(&self, id: u64, need: u64) -> std::result::Result<Bytes, Unreadable> {
        if let Some(v) = self.views.read().get(&id).filter(|v| v.len() as u64 >= need) {
            return Ok(v.clone());
        }
        let path = self.path(id);
        // SAFETY: `Fs::map` requires that no byte read through the view is
        // modified or truncated away while the view lives. Every read through
        // a view stops at `need`, the end of a record whose location the
        // metadata gave (or of a segment's committed part, for a scan).
        // Those bytes are final: a segment is append-only below its
        // committed length, each record is written once, before the commit
        // that makes its location known, and removing a compacted segment
        // leaves existing maps valid. A segment is only ever truncated by
        // recovery at open (past its committed length) and by a failed
        // append (back to the offset that append started at, the end of
        // every record written before it); both cut only bytes past every
        // record anyone was given. A view taken while an append is in flight
        // does cover that append's first bytes, which a failure cuts off
        // again, but nothing reads them.
        let v = unsafe { self.fs.map(&path) }.map_err(|e| match e.kind() {
            // The file is gone: what it held is lost, as damage is.
            io::ErrorKind::NotFound => Unreadable::Lost(format!("segment {id} is missing")),
            // Anything else (too many open files, no memory, an I/O error)
            // says nothing about the bytes: the next read may succeed.
            _ => Unreadable::Io(format!("mapping segment {id}"), e),
        })?;
        if (v.len() as u64) < need {
            return Err(Unreadable::Lost(format!(
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

    #[cfg(test)]
    pub(super) fn views_held(&self) -> usize {
        self.views.read().len()
    }
}

impl Home for Disk {
    fn name(&self) -> &str {
        "local disk"
    }

    fn keeps_spool(&self) -> bool {
        true
    }

    fn persist(&self, id: u64, spool: &dyn FsFile, _len: u64, health: &Health) -> Result<()> {
        spool.sync_data().map_err(|e| {
            // The kernel may have dropped the dirty pages it could not
            // write: nothing written since the last sync can be trusted.
            health.poison(format!("fsync of segment {id} failed: {e}"));
            Fault::io(format!("syncing segment {id}"), e)
        })
    }

    fn read(&self, id: u64, range: Range<u64>) -> std::result::Result<Bytes, Unreadable> {
        let view = self.view(id, range.end)?;
        Ok(view.slice(range.start as usize..range.end as usize))
    }

    fn scan_window(&self) -> u64 {
        // A map costs nothing until its pages are touched.
        u64::MAX
    }

    fn lengths(&self) -> Result<BTreeMap<u64, u64>> {
        let mut out = BTreeMap::new();
        for name in self
            .fs
            .list(&self.dir)
            .map_err(|e| Fault::io(format!("listing {}", self.dir.display()), e))?
        {
            let Some(id) = parse_segment_name(&name) else { continue };
            if let Some(len) = self.fs.open(&self.path(id)).ok().and_then(|f| f.len().ok()) {
                out.insert(id, len);
            }
        }
        Ok(out)
    }

    fn release(&self, _claim: &str) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, id: u64) -> Result<()> {
        self.views.write().remove(&id);
        let path = self.path(id);
        match self.fs.remove_file(&path) {
            // Nothing to make durable.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            removed => removed.and_then(|()| self.fs.sync_dir(&self.dir)),
        }
        .map_err(|e| Fault::io(format!("removing {}", path.display()), e))
    }

    /// - a file that no committed metadata names holds only records that
    ///   were never acknowledged (a crash before their commit, or a segment
    ///   already compacted away whose removal was interrupted): it is removed;
    /// - a file of a segment committed to the bucket is a spool or a copy a
    ///   migration left: removed if the bucket holds the segment whole,
    ///   kept (and named) if not, being perhaps its only copy;
    /// - bytes past a segment's committed length were never acknowledged:
    ///   they are truncated;
    /// - a file shorter than its committed length, or missing, is reported.
    ///
    /// Every step is idempotent, so a crash during it is recovered by the
    /// next open.
    fn reconcile(&self, committed: &BTreeMap<u64, u64>, elsewhere: &Elsewhere) -> Result<Reconciled> {
        let fs = &*self.fs;
        let dir = &self.dir;
        let mut out = Reconciled::default();
        let mut on_disk = BTreeMap::new();
        for name in fs
            .list(dir)
            .map_err(|e| Fault::io(format!("listing {}", dir.display()), e))?
        {
            if let Some(id) = parse_segment_name(&name) {
                on_disk.insert(id, ());
            }
        }
        let mut removed_any = false;
        for &id in on_disk.keys() {
            if committed.contains_key(&id) {
                continue;
            }
            match elsewhere.get(&id) {
                Some(None) => {
                    out.notes.push(format!(
                        "kept segment {id}: it is committed to the bucket, whose pack of it is not known to be whole"
                    ));
                    continue;
                }
                Some(Some(_)) => {}
                None => out
                    .notes
                    .push(format!("removed segment {id}: no committed record refers to it")),
            }
            let path = self.path(id);
            fs.remove_file(&path)
                .map_err(|e| Fault::io(format!("removing orphan {}", path.display()), e))?;
            removed_any = true;
        }
        if removed_any {
            fs.sync_dir(dir)
                .map_err(|e| Fault::io(format!("syncing {}", dir.display()), e))?;
        }
        for (&id, &len) in committed {
            let path = self.path(id);
            if !on_disk.contains_key(&id) {
                out.damaged.push(id);
                out.notes.push(format!("segment {id} is missing"));
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
                out.notes
                    .push(format!("segment {id}: dropped {} uncommitted bytes", actual - len));
            } else if actual < len {
                out.damaged.push(id);
                out.notes.push(format!(
                    "segment {id} is {actual} bytes, shorter than its committed {len}"
                ));
            }
        }
        out.highest = on_disk.keys().chain(committed.keys()).max().copied().unwrap_or(0);
        Ok(out)
    }
}
