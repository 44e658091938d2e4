//! Source records for incremental backups: what a backup saw of each file on
//! disk (size, modification time, inode) and the file it became, so that a
//! re-run trusts an unchanged file without reading it, as restic does with its
//! parent snapshot.
//!
//! [`SourceIndex`] answers the same questions from a read-only open of the
//! store: a re-run over a folder where nothing changed then costs no write
//! open at all, which with RocksDB is most of such a re-run's time.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{OpenError, Result};
use crate::ids::{AlbumId, FileId};
use crate::meta::records::{FileRecord, SourceRecord};
use crate::meta::{keys, Cf, Meta};
use crate::names::check_album_name;
use crate::store::{ensure_user, lock, user_id, FileInfo, Outcome, Store, UploadReport};

/// A file modified less than this long before the scan started is not
/// recorded: a later edit within the same timestamp tick would leave its
/// stamp unchanged (the "racy" case git and restic guard against).
const RACY: Duration = Duration::from_secs(2);

fn record(meta: &Metadata, file: u64) -> SourceRecord {
    let mtime_ns = meta.mtime().wrapping_mul(1_000_000_000).wrapping_add(meta.mtime_nsec());
    SourceRecord {
        size: meta.size(),
        mtime_ns: mtime_ns as u64,
        inode: meta.ino(),
        file,
    }
}

fn key(uid: u64, album: AlbumId, path: &Path) -> Vec<u8> {
    keys::source(uid, album.0, path.as_os_str().as_bytes())
}

/// [`Store::unchanged_source`] over committed metadata.
fn unchanged(meta: &Meta, user: &str, album: AlbumId, path: &Path, seen: &Metadata) -> Result<Option<UploadReport>> {
    let Some(uid) = user_id(meta, user)? else {
        return Ok(None);
    };
    let Some(rec) = meta.get::<SourceRecord>(Cf::Sources, &key(uid, album, path))? else {
        return Ok(None);
    };
    if rec != record(seen, rec.file) {
        return Ok(None);
    }
    Ok(meta
        .get::<FileRecord>(Cf::Files, &keys::file(uid, rec.file))?
        .map(|f| FileInfo::new(rec.file, f))
        .filter(|f| f.trashed_ms.is_none() && f.albums.contains(&album))
        .map(|f| UploadReport {
            file_id: FileId(rec.file),
            outcome: Outcome::Skipped,
            hash: f.hash,
            size: f.size,
            bytes_written: 0,
            charged_bytes: 0,
        }))
}

/// The keys of the records of `album` for files under `root` (or `root`
/// itself) that are not in `seen`.
fn stale(meta: &Meta, uid: u64, album: AlbumId, root: &Path, seen: &HashSet<PathBuf>) -> Result<Vec<Vec<u8>>> {
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

/// A read-only view of a store's backup source records, for a backup that
/// may find nothing to do: it opens the metadata without writing anything
/// (about a fifth of the cost of [`Store::open`]) and answers what
/// [`Store::unchanged_source`] would. It holds the store's lock, as a
/// [`Store`] does; drop it before opening the store to write.
///
/// ```
/// use keepsake::{Content, DedupMode, SourceIndex, Store};
/// use std::time::{Duration, SystemTime};
/// let dir = tempfile::tempdir().unwrap();
/// let root = dir.path().join("store");
/// let path = dir.path().join("IMG_1.JPG");
/// std::fs::write(&path, b"pixels").unwrap();
/// let meta = std::fs::metadata(&path).unwrap();
/// {
///     let store = Store::open(&root).unwrap();
///     let album = store.ensure_album("u", "A").unwrap();
///     let r = store.upload("u", album, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
///     let later = SystemTime::now() + Duration::from_secs(60);
///     store.record_sources("u", album, &[(path.clone(), meta.clone(), r.file_id)], later).unwrap();
/// }
/// let index = SourceIndex::open(&root).unwrap().expect("a store is there");
/// let album = index.find_album("u", "A").unwrap().unwrap();
/// assert!(index.unchanged_source("u", album, &path, &meta).unwrap().is_some());
/// ```
pub struct SourceIndex {
    meta: Meta,
    _lock: std::fs::File,
}

impl SourceIndex {
    /// Opens the store in `dir` for reading its source records, or `None`
    /// if there is no store there. Fails as [`Store::open`] does when the
    /// store is in use or of an unknown format. Nothing is written: a store
    /// left by a crash is recovered by the next [`Store::open`], and what a
    /// `SourceIndex` reads is committed metadata, which recovery never
    /// changes.
    pub fn open(dir: impl AsRef<Path>) -> std::result::Result<Option<SourceIndex>, OpenError> {
        let root = dir.as_ref();
        if !Store::exists(root) {
            return Ok(None);
        }
        let lock = lock(root)?;
        let meta = Meta::open_read_only(&root.join("meta"))?;
        Ok(Some(SourceIndex { meta, _lock: lock }))
    }

    /// The id of the user's album called `name`, if there is one.
    pub fn find_album(&self, user: &str, name: &str) -> Result<Option<AlbumId>> {
        check_album_name(name)?;
        let Some(uid) = user_id(&self.meta, user)? else {
            return Ok(None);
        };
        Ok(self
            .meta
            .get::<u64>(Cf::AlbumNames, &keys::album_name(uid, name))?
            .map(AlbumId))
    }

    /// What [`Store::unchanged_source`] answers.
    pub fn unchanged_source(
        &self,
        user: &str,
        album: AlbumId,
        path: &Path,
        meta: &Metadata,
    ) -> Result<Option<UploadReport>> {
        unchanged(&self.meta, user, album, path, meta)
    }

    /// Whether [`Store::forget_sources`] would drop any record: a file
    /// under `root` that a backup recorded is not in `seen`.
    pub fn has_forgotten_sources(
        &self,
        user: &str,
        album: AlbumId,
        root: &Path,
        seen: &HashSet<PathBuf>,
    ) -> Result<bool> {
        let Some(uid) = user_id(&self.meta, user)? else {
            return Ok(false);
        };
        Ok(!stale(&self.meta, uid, album, root, seen)?.is_empty())
    }
}

impl Store {
    /// The file a previous backup stored from `path` into `album`, reported
    /// as [`Outcome::Skipped`], if [`record_sources`](Self::record_sources)
    /// recorded it with the size, modification time and inode `meta` shows
    /// and that file is still live in the album. `None` means "read and
    /// upload it". `path` should be absolute: records are keyed by it.
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store};
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("store")).unwrap();
    /// let album = store.ensure_album("u", "A").unwrap();
    /// let path = dir.path().join("IMG_1.JPG");
    /// std::fs::write(&path, b"pixels").unwrap();
    /// let meta = std::fs::metadata(&path).unwrap();
    /// assert!(store.unchanged_source("u", album, &path, &meta).unwrap().is_none());
    /// let r = store.upload("u", album, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
    /// // As if the scan had started a minute later: the file is not racy.
    /// let scan_start = SystemTime::now() + Duration::from_secs(60);
    /// store.record_sources("u", album, &[(path.clone(), meta.clone(), r.file_id)], scan_start).unwrap();
    /// let again = store.unchanged_source("u", album, &path, &meta).unwrap().unwrap();
    /// assert_eq!((again.file_id, again.outcome), (r.file_id, Outcome::Skipped));
    /// ```
    pub fn unchanged_source(
        &self,
        user: &str,
        album: AlbumId,
        path: &Path,
        meta: &Metadata,
    ) -> Result<Option<UploadReport>> {
        unchanged(&self.inner.meta, user, album, path, meta)
    }

    /// Records, in one durable commit, that each `(path, meta, file)` was
    /// backed up into `album` as `file`. Call it only once those uploads are
    /// durable. A file modified less than 2 s before `scan_start` is not
    /// recorded (its old record is dropped): an edit within the same
    /// timestamp tick would not show, so it is read again next time.
    pub fn record_sources(
        &self,
        user: &str,
        album: AlbumId,
        sources: &[(PathBuf, Metadata, FileId)],
        scan_start: SystemTime,
    ) -> Result<()> {
        if sources.is_empty() {
            return Ok(());
        }
        let user = user.to_string();
        let entries: Vec<_> = sources
            .iter()
            .map(|(path, meta, file)| {
                let settled = meta.modified().is_ok_and(|m| m + RACY <= scan_start);
                (path.clone(), settled.then(|| record(meta, file.0)))
            })
            .collect();
        self.inner.commit(move |txn| {
            let uid = ensure_user(txn, &user)?;
            for (path, rec) in entries {
                match rec {
                    Some(rec) => txn.put(Cf::Sources, key(uid, album, &path), &rec),
                    None => txn.delete(Cf::Sources, key(uid, album, &path)),
                }
            }
            Ok(())
        })
    }

    /// Drops the records of `album` for files under `root` (or `root`
    /// itself) that are not in `seen`: after a complete walk of `root`, those
    /// files are gone from disk. The files stored from them are untouched.
    pub fn forget_sources(&self, user: &str, album: AlbumId, root: &Path, seen: &HashSet<PathBuf>) -> Result<()> {
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
            return Ok(());
        };
        let gone = stale(&inner.meta, uid, album, root, seen)?;
        if gone.is_empty() {
            return Ok(());
        }
        inner.commit(move |txn| {
            for k in gone {
                txn.delete(Cf::Sources, k);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Content, DedupMode};

    #[test]
    fn forgetting_a_root_drops_only_unseen_records_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.ensure_album("u", "A").unwrap();
        let paths = ["r/kept", "r/sub/gone", "rx/sibling"].map(|p| dir.path().join(p));
        let mut sources = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, [i as u8]).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let r = store
                .upload("u", album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                .unwrap();
            sources.push((p.clone(), std::fs::metadata(p).unwrap(), r.file_id));
        }
        let later = SystemTime::now() + Duration::from_secs(60);
        store.record_sources("u", album, &sources, later).unwrap();

        let seen = HashSet::from([paths[0].clone()]);
        store.forget_sources("u", album, &dir.path().join("r"), &seen).unwrap();
        let trusted: Vec<bool> = sources
            .iter()
            .map(|(p, m, _)| store.unchanged_source("u", album, p, m).unwrap().is_some())
            .collect();
        assert_eq!(trusted, [true, false, true], "`rx` is a sibling of `r`, not under it");
    }

    #[test]
    fn a_source_index_holds_the_store_lock_and_finds_no_store_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        assert!(SourceIndex::open(&root).unwrap().is_none());
        assert!(!root.exists(), "looking for a store must not create one");
        drop(Store::open(&root).unwrap());
        let index = SourceIndex::open(&root).unwrap().unwrap();
        assert!(matches!(Store::open(&root), Err(OpenError::InUse { .. })));
        drop(index);
        Store::open(&root).unwrap();
    }

    #[test]
    fn a_source_index_answers_what_the_store_answers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let paths = ["kept", "edited", "never"].map(|p| dir.path().join(p));
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, [i as u8; 10]).unwrap();
        }
        let store = Store::open(&root).unwrap();
        let album = store.ensure_album("u", "A").unwrap();
        let sources: Vec<_> = paths[..2]
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                let r = store
                    .upload("u", album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                    .unwrap();
                (p.clone(), std::fs::metadata(p).unwrap(), r.file_id)
            })
            .collect();
        let later = SystemTime::now() + Duration::from_secs(60);
        store.record_sources("u", album, &sources, later).unwrap();
        std::fs::write(&paths[1], [9u8; 11]).unwrap();
        let answers = |f: &dyn Fn(&Path, &Metadata) -> Option<FileId>| -> Vec<Option<FileId>> {
            paths.iter().map(|p| f(p, &std::fs::metadata(p).unwrap())).collect()
        };
        let from_store = answers(&|p, m| store.unchanged_source("u", album, p, m).unwrap().map(|r| r.file_id));
        drop(store);
        let index = SourceIndex::open(&root).unwrap().unwrap();
        assert_eq!(index.find_album("u", "A").unwrap(), Some(album));
        assert_eq!(index.find_album("u", "B").unwrap(), None);
        assert_eq!(index.find_album("nobody", "A").unwrap(), None);
        let from_index = answers(&|p, m| index.unchanged_source("u", album, p, m).unwrap().map(|r| r.file_id));
        assert_eq!(from_index, from_store);
        assert_eq!(from_index, [Some(sources[0].2), None, None]);
        let seen = HashSet::from([paths[0].clone(), paths[1].clone()]);
        assert!(!index.has_forgotten_sources("u", album, dir.path(), &seen).unwrap());
        let seen = HashSet::from([paths[0].clone()]);
        assert!(index.has_forgotten_sources("u", album, dir.path(), &seen).unwrap());
    }

    #[test]
    fn a_file_modified_just_before_the_scan_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.ensure_album("u", "A").unwrap();
        let path = dir.path().join("fresh");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let r = store
            .upload("u", album, "fresh", Content::Path(path.clone()), DedupMode::NameAndHash)
            .unwrap();
        let scan_start = meta.modified().unwrap() + Duration::from_secs(1);
        store
            .record_sources("u", album, &[(path.clone(), meta.clone(), r.file_id)], scan_start)
            .unwrap();
        assert!(store.unchanged_source("u", album, &path, &meta).unwrap().is_none());
    }
}
