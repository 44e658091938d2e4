//! Copying a sealed segment from its home to the other one, checked, for a
//! migration of a store's blobs (`Store::migrate_blobs`). The copy is made
//! and checked here; the commit that moves the segment to it, and the
//! removal of the old copy after that commit, are the caller's.
//!
//! What is checked: every live record of the segment on the local side
//! (the source of an upload, the copy a download made), header and BLAKE3
//! hash, so that a migration never carries damage silently (a damaged
//! record is moved as it is, the only copy there is, and named to the
//! caller, which records it as a read would); and, for an upload, the
//! whole pack read back and compared with the local bytes, so that what
//! the bucket holds is what the disk held before the disk's copy goes.

use std::io;
use std::path::Path;

use super::disk::segment_name;
use super::format::{RecordHeader, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::home::{self, Home, Unreadable};
use super::placement::{Homes, Site};
use crate::error::{Fault, Result};
use crate::fs::Fs;
use crate::hash::Hasher;
use crate::health::Health;

/// Bytes read at once: a request's worth from a bucket.
const WINDOW: u64 = 8 << 20;

/// What [`copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copied {
    /// False if the destination held an identical copy already (an earlier
    /// run cut off before its commit).
    pub written: bool,
    /// The live records whose header or hash is wrong: the copy holds them
    /// as the source did.
    pub damaged: Vec<RecordHeader>,
}

/// Where the local copies of segments are, and what their syncs answer to.
pub(crate) struct LocalSide<'a> {
    pub fs: &'a dyn Fs,
    pub dir: &'a Path,
    pub health: &'a Health,
}

/// Copies bytes `0..len` of sealed segment `id` to the home at `to`, and
/// checks the copy; `live` says which records blobs point at (those are
/// hashed). To the local disk, a file of that id already there is taken
/// if its live records all check, and replaced only once the pack is
/// known to reach `len`.
///
/// # Errors
///
/// - [`Fault::Io`] if a read, write or upload fails; of kind
///   [`io::ErrorKind::InvalidData`] if the segment's records do not reach
///   `len`, or the bucket holds a pack of this id that differs from the
///   local segment (neither is changed).
pub(crate) fn copy(
    homes: &Homes,
    local: &LocalSide<'_>,
    id: u64,
    len: u64,
    to: Site,
    live: &dyn Fn(&RecordHeader) -> bool,
) -> Result<Copied> {
    let from = homes.of(id);
    let Some(dest) = homes.home(to) else {
        return Err(Fault::io(
            format!("moving segment {id}"),
            io::Error::other("the store has no bucket"),
        ));
    };
    match to {
        Site::Bucket => {
            let damaged = check_records(from, id, len, live)?;
            let present = match dest.read(id, 0..len.min(1)) {
                Ok(_) => true,
                Err(Unreadable::Lost(_)) => false,
                Err(e) => {
                    return Err(Fault::io(
                        format!("looking for pack {id}"),
                        io::Error::other(e.to_string()),
                    ))
                }
            };
            if !present {
                let path = local.dir.join(segment_name(id));
                let file = local
                    .fs
                    .open(&path)
                    .map_err(|e| Fault::io(format!("opening {}", path.display()), e))?;
                dest.persist(id, &*file, len, local.health)?;
            }
            let differs = |why: String| {
                Err(Fault::io(
                    format!("checking pack {id} in {}", dest.name()),
                    io::Error::new(io::ErrorKind::InvalidData, why),
                ))
            };
            match same_bytes(from, dest, id, len) {
                Ok(true) => {}
                // Found there, not ours: perhaps an older copy (a segment
                // that grew on the disk after a migration left its pack).
                // It may hold what nothing else does, so it stays.
                Ok(false) | Err(_) if present => {
                    return differs(
                        "a pack of that id is there and is not the local segment: neither was changed \
                         (delete the pack to let this segment move)"
                            .into(),
                    )
                }
                // Just written and not what was sent: nothing names it.
                Ok(false) => {
                    dest.remove(id)?;
                    return differs("the pack read back differs from the local segment: deleted, try again".into());
                }
                Err(e) => return Err(e),
            }
            Ok(Copied {
                written: !present,
                damaged,
            })
        }
        Site::Disk => {
            let path = local.dir.join(segment_name(id));
            let io = |e| Fault::io(format!("writing {}", path.display()), e);
            // A file of this id is a copy an earlier run left uncommitted,
            // or one an open kept because the pack was not known whole (a
            // bucket without an answer then, §15). One with its own header
            // and every live record checking is the segment: it is made
            // durable and taken.
            let found = match local.fs.open(&path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(Fault::io(format!("opening {}", path.display()), e)),
            };
            if let Some(file) = found {
                let own_header = dest
                    .read(id, 0..SEGMENT_HEADER_LEN as u64)
                    .is_ok_and(|h| SegmentHeader::decode(&h).is_ok_and(|h| h.id == id));
                if own_header && check_records(dest, id, len, live).is_ok_and(|damaged| damaged.is_empty()) {
                    file.sync_data().map_err(io)?;
                    local.fs.sync_dir(local.dir).map_err(io)?;
                    return Ok(Copied {
                        written: false,
                        damaged: Vec::new(),
                    });
                }
                // Any other goes only once the pack is known to reach its
                // committed length: it may hold what the pack lacks.
                if len > 0 {
                    from.read(id, len - 1..len).map_err(|e| {
                        Fault::io(
                            format!("reading the end of segment {id}, before replacing its local copy"),
                            io::Error::other(e.to_string()),
                        )
                    })?;
                }
            }
            dest.remove(id)?;
            let file = local.fs.create(&path).map_err(io)?;
            let mut at = 0;
            while at < len {
                let bytes = from
                    .read(id, at..len.min(at + WINDOW))
                    .map_err(|e| Fault::io(format!("reading segment {id}"), io::Error::other(e.to_string())))?;
                file.write_all_at(at, &bytes).map_err(io)?;
                at += bytes.len() as u64;
            }
            file.sync_data().map_err(io)?;
            local.fs.sync_dir(local.dir).map_err(io)?;
            let damaged = check_records(dest, id, len, live)?;
            // A record that fails in the copy and not in the pack was
            // damaged on its way: the copy is not the pack's, and is not
            // taken.
            for h in &damaged {
                if record_ok(from, id, h)? {
                    return Err(Fault::io(
                        format!("checking the copy of segment {id}"),
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("its record at offset {} differs from the pack's: try again", h.offset),
                        ),
                    ));
                }
            }
            Ok(Copied { written: true, damaged })
        }
    }
}

/// Checks the header and hash of every record of segment `id` (committed
/// part `0..len`) that `live` names, in `home`, and returns those that
/// fail.
///
/// # Errors
///
/// [`Fault::Io`] if the records cannot be read, or (of kind
/// [`io::ErrorKind::InvalidData`]) do not reach `len`: the segment is not
/// what its record says, and is not moved.
fn check_records(
    home: &dyn Home,
    id: u64,
    len: u64,
    live: &dyn Fn(&RecordHeader) -> bool,
) -> Result<Vec<RecordHeader>> {
    let lost = |detail: String| Fault::io(format!("reading segment {id}"), io::Error::other(detail));
    let (records, end) = home::scan(home, id, len).map_err(|e| lost(e.to_string()))?;
    if end.error.is_some() || end.offset != len {
        let why = end.error.unwrap_or("the scan stopped short");
        return Err(Fault::io(
            format!("checking segment {id}"),
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("its records end at offset {} of its committed {len}: {why}", end.offset),
            ),
        ));
    }
    let mut damaged = Vec::new();
    for header in records.into_iter().filter(|h| live(h)) {
        if !record_ok(home, id, &header)? {
            damaged.push(header);
        }
    }
    Ok(damaged)
}

/// Whether the data of the record `header` names, in segment `id` of
/// `home`, hashes to its hash (the scan that found the header checked it),
/// read a window at a time: a video in a pack is never held whole.
fn record_ok(home: &dyn Home, id: u64, header: &RecordHeader) -> Result<bool> {
    let start = header.offset + RECORD_HEADER_LEN as u64;
    let end = start + header.length;
    let mut hasher = Hasher::new();
    let mut at = start;
    while at < end {
        let bytes = home
            .read(id, at..end.min(at + WINDOW))
            .map_err(|e| Fault::io(format!("reading segment {id}"), io::Error::other(e.to_string())))?;
        hasher.update(&bytes);
        at += bytes.len() as u64;
    }
    Ok(hasher.finalize() == header.hash)
}

/// Whether bytes `0..len` of segment `id` are the same in `a` and `b`,
/// compared a window at a time: byte for byte, which is stronger than a
/// hash and costs less than one.
fn same_bytes(a: &dyn Home, b: &dyn Home, id: u64, len: u64) -> Result<bool> {
    let read = |home: &dyn Home, range: std::ops::Range<u64>| {
        home.read(id, range)
            .map_err(|e| Fault::io(format!("reading segment {id}"), io::Error::other(e.to_string())))
    };
    let mut at = 0;
    while at < len {
        let range = at..len.min(at + WINDOW);
        if read(a, range.clone())? != read(b, range.clone())? {
            return Ok(false);
        }
        at = range.end;
    }
    Ok(true)
}
