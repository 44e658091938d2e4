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
//! whole pack read back and hashed against the local bytes, so that what
//! the bucket holds is what the disk held before the disk's copy goes.

use std::io;
use std::path::Path;

use super::disk::segment_name;
use super::format::{RecordHeader, RECORD_HEADER_LEN};
use super::home::{self, Home};
use super::placement::{Homes, Site};
use crate::error::{Fault, Result};
use crate::fs::Fs;
use crate::hash::{ContentHash, Hasher};
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
/// hashed).
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
            let want = digest(from, id, len)?;
            let present = dest.read(id, 0..len.min(1)).is_ok();
            if !present {
                let path = local.dir.join(segment_name(id));
                let file = local
                    .fs
                    .open(&path)
                    .map_err(|e| Fault::io(format!("opening {}", path.display()), e))?;
                dest.persist(id, &*file, len, local.health)?;
            }
            if digest(dest, id, len)? != want {
                return Err(Fault::io(
                    format!("checking pack {id} in {}", dest.name()),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "it differs from the local segment of that id: neither was changed",
                    ),
                ));
            }
            Ok(Copied {
                written: !present,
                damaged,
            })
        }
        Site::Disk => {
            // A file of this id is a copy an earlier run left uncommitted.
            dest.remove(id)?;
            let path = local.dir.join(segment_name(id));
            let io = |e| Fault::io(format!("writing {}", path.display()), e);
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
        let record = home
            .read(
                id,
                header.offset..header.offset + RECORD_HEADER_LEN as u64 + header.length,
            )
            .map_err(|e| lost(e.to_string()))?;
        // The scan checked the header; the bytes are checked here.
        if ContentHash::of(&record[RECORD_HEADER_LEN..]) != header.hash {
            damaged.push(header);
        }
    }
    Ok(damaged)
}

/// The BLAKE3 hash of bytes `0..len` of segment `id` in `home`, read a
/// window at a time.
fn digest(home: &dyn Home, id: u64, len: u64) -> Result<ContentHash> {
    let mut hasher = Hasher::new();
    let mut at = 0;
    while at < len {
        let bytes = home
            .read(id, at..len.min(at + WINDOW))
            .map_err(|e| Fault::io(format!("reading segment {id}"), io::Error::other(e.to_string())))?;
        hasher.update(&bytes);
        at += bytes.len() as u64;
    }
    Ok(hasher.finalize())
}
