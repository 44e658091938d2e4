//! Source records for incremental backups: what a backup saw of each file on
//! disk (its [`Stamp`]: device, inode, size, modification and change time)
//! and the file it became, so that a
//! re-run trusts an unchanged file without reading it, as restic does with its
//! parent snapshot.
//!
//! [`ReadOnlyStore`](crate::ReadOnlyStore) answers the same questions from a
//! read-only open of the store: a re-run over a folder where nothing changed
//! then costs no write open at all.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{FileInfo, Outcome, UploadReport, User};
use crate::blob::Location;
use crate::error::{LibraryError, Result};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::records::{BlobRecord, DamageRecord, FileRecord, Place, Seen, SourceRecord};
use crate::meta::{keys, Cf, Meta};
use crate::stamp::Stamp;

/// A file modified less than this long before the scan started is not
/// recorded: a later edit within the same timestamp tick would leave its
/// stamp unchanged (the "racy" case git and restic guard against).
const RACY: Duration = Duration::from_secs(2);

fn key(uid: u64, album: AlbumId, path: &Path) -> Vec<u8> {
    keys::source(uid, album.0, path.as_os_str().as_bytes())
}

/// [`User::unchanged_source`] over committed metadata.
pub(crate) fn unchanged(
    meta: &Meta,
    lost: &dyn Fn(&Location) -> bool,
    uid: Option<u64>,
    album: AlbumId,
    path: &Path,
    seen: &Metadata,
) -> Result<Option<UploadReport>> {
    let Some(uid) = uid else {
        return Ok(None);
    };
    let Some(rec) = meta.get::<SourceRecord>(Cf::Sources, &key(uid, album, path))? else {
        return Ok(None);
    };
    if rec.seen != Seen::Stamp(Stamp::of(seen)) {
        return Ok(None);
    }
    let Some(file) = meta
        .get::<FileRecord>(Cf::Files, &keys::file(uid, rec.file))?
        .map(|f| FileInfo::new(rec.file, f))
        .filter(|f| f.trashed_ms.is_none() && f.albums.contains(&album))
    else {
        return Ok(None);
    };
    if !intact(meta, lost, &file.hash)? {
        return Ok(None);
    }
    Ok(Some(UploadReport {
        file_id: FileId(rec.file),
        outcome: Outcome::Skipped,
        hash: file.hash,
        size: file.size,
        bytes_written: 0,
        charged_bytes: 0,
    }))
}

/// Whether the store holds content `hash` whole as far as it knows without
/// reading it: its blob has a record, no damage is known of the copy the
/// record names (a read or a scrub that failed its hash, a segment file
/// found missing or short at open), and `lost` does not say its copy lies
/// past the end of its segment file. A file whose content is not whole is
/// read again, so that the ordinary re-run of a backup heals it, as
/// restic's backup re-reads files whose stored data is missing.
fn intact(meta: &Meta, lost: &dyn Fn(&Location) -> bool, hash: &ContentHash) -> Result<bool> {
    let key = hash.as_bytes();
    let Some(blob) = meta.get::<BlobRecord>(Cf::Blobs, key)? else {
        return Ok(false);
    };
    if let Place::Segment(loc) = &blob.place {
        if lost(loc) {
            return Ok(false);
        }
    }
    let damage = meta.get::<DamageRecord>(Cf::Damaged, key)?;
    Ok(!damage.is_some_and(|d| d.is_about(&blob.place)))
}

/// The keys of the records of `album` for files under `root` (or `root`
/// itself) that are not in `seen`.
pub(crate) fn stale(
    meta: &Meta,
    uid: u64,
    album: AlbumId,
    root: &Path,
    seen: &HashSet<PathBuf>,
) -> Result<Vec<Vec<u8>>> {
    let prefix = key(uid, album, root);
    let path_at = key(uid, album, Path::new("")).len();
    let mut gone = Vec::new();
    for (k, _) in meta.scan_all(Cf::Sources, &prefix)? {
        // `/a/bc` shares the prefix of root `/a/b` without being under it.
        let rest = &k[prefix.len()..];
        let under = rest.is_empty() || rest[0] == b'/' || prefix.ends_with(b"/");
        if under && !seen.contains(Path::new(OsStr::from_bytes(&k[path_at..]))) {
            gone.push(k);
        }
    }
    Ok(gone)
}

impl User {
    /// The file a previous backup stored from `path` into `album`, reported
    /// as [`Outcome::Skipped`], if [`record_sources`](Self::record_sources)
    /// recorded it with the device, inode, size, modification time and change
    /// time `meta` shows and that file is still live in the album. `None`
    /// means "read and upload it"; so does content the store does not hold
    /// whole (its blob damaged, or in a segment found missing or short), so
    /// that the ordinary re-run heals it. `path` should be absolute: records
    /// are keyed by it. The change time is what catches an edit that kept the
    /// modification time (restic and git compare it too); a record written
    /// before change times were kept is never trusted.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store};
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("store")).unwrap();
    /// let u = store.user("u").unwrap();
    /// let album = u.ensure_album("A").unwrap();
    /// let path = dir.path().join("IMG_1.JPG");
    /// std::fs::write(&path, b"pixels").unwrap();
    /// let meta = std::fs::metadata(&path).unwrap();
    /// assert!(u.unchanged_source(album, &path, &meta).unwrap().is_none());
    /// let r = u.upload(album, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
    /// // As if the scan had started a minute later: the file is not racy.
    /// let scan_start = SystemTime::now() + Duration::from_secs(60);
    /// u.record_sources(album, &[(path.clone(), meta.clone(), r.file_id)], scan_start).unwrap();
    /// let again = u.unchanged_source(album, &path, &meta).unwrap().unwrap();
    /// assert_eq!((again.file_id, again.outcome), (r.file_id, Outcome::Skipped));
    /// ```
    pub fn unchanged_source(
        &self,
        album: AlbumId,
        path: &Path,
        meta: &Metadata,
    ) -> Result<Option<UploadReport>, LibraryError> {
        let inner = self.inner();
        let lost = |loc: &Location| {
            inner.recovery.damaged_segments.contains(&loc.segment)
                && inner.blobs.file_len(loc.segment).unwrap_or(0) < loc.end()
        };
        Ok(unchanged(&inner.meta, &lost, self.id()?, album, path, meta)?)
    }

    /// Records, in one durable commit, that each `(path, meta, file)` was
    /// backed up into `album` as `file`. Call it only once those uploads are
    /// durable. A file modified less than 2 s before `scan_start` is not
    /// recorded (its old record is dropped): an edit within the same
    /// timestamp tick would not show, so it is read again next time.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    pub fn record_sources(
        &self,
        album: AlbumId,
        sources: &[(PathBuf, Metadata, FileId)],
        scan_start: SystemTime,
    ) -> Result<(), LibraryError> {
        if sources.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = sources
            .iter()
            .map(|(path, meta, file)| {
                let settled = meta.modified().is_ok_and(|m| m + RACY <= scan_start);
                (
                    path.clone(),
                    settled.then(|| SourceRecord {
                        seen: Seen::Stamp(Stamp::of(meta)),
                        file: file.0,
                    }),
                )
            })
            .collect();
        Ok(self.commit_creating(move |txn, uid| {
            for (path, rec) in entries {
                match rec {
                    Some(rec) => txn.put(Cf::Sources, key(uid, album, &path), &rec),
                    None => txn.delete(Cf::Sources, key(uid, album, &path)),
                }
            }
            Ok(())
        })?)
    }

    /// Drops the records of `album` for files under `root` (or `root`
    /// itself) that are not in `seen`: after a complete walk of `root`, those
    /// files are gone from disk. The files stored from them are untouched.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    pub fn forget_sources(&self, album: AlbumId, root: &Path, seen: &HashSet<PathBuf>) -> Result<(), LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(());
        };
        let gone = stale(&inner.meta, uid, album, root, seen)?;
        if gone.is_empty() {
            return Ok(());
        }
        Ok(inner.commit(move |txn| {
            for k in gone {
                txn.delete(Cf::Sources, k);
            }
            Ok(())
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Content, DedupMode};
    use crate::Store;

    #[test]
    fn forgetting_a_root_drops_only_unseen_records_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        let paths = ["r/kept", "r/sub/gone", "rx/sibling"].map(|p| dir.path().join(p));
        let mut sources = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, [i as u8]).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let r = store
                .user("u")
                .unwrap()
                .upload(album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                .unwrap();
            sources.push((p.clone(), std::fs::metadata(p).unwrap(), r.file_id));
        }
        let later = SystemTime::now() + Duration::from_secs(60);
        store.user("u").unwrap().record_sources(album, &sources, later).unwrap();

        let seen = HashSet::from([paths[0].clone()]);
        store
            .user("u")
            .unwrap()
            .forget_sources(album, &dir.path().join("r"), &seen)
            .unwrap();
        let trusted: Vec<bool> = sources
            .iter()
            .map(|(p, m, _)| {
                store
                    .user("u")
                    .unwrap()
                    .unchanged_source(album, p, m)
                    .unwrap()
                    .is_some()
            })
            .collect();
        assert_eq!(trusted, [true, false, true], "`rx` is a sibling of `r`, not under it");
    }

    #[test]
    fn a_file_modified_just_before_the_scan_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        let path = dir.path().join("fresh");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let r = store
            .user("u")
            .unwrap()
            .upload(album, "fresh", Content::Path(path.clone()), DedupMode::NameAndHash)
            .unwrap();
        let scan_start = meta.modified().unwrap() + Duration::from_secs(1);
        store
            .user("u")
            .unwrap()
            .record_sources(album, &[(path.clone(), meta.clone(), r.file_id)], scan_start)
            .unwrap();
        assert!(store
            .user("u")
            .unwrap()
            .unchanged_source(album, &path, &meta)
            .unwrap()
            .is_none());
    }
}
