//! A read-only handle on a store, in the manner of redb's
//! `ReadOnlyDatabase`: what a backup re-run needs to find that it has
//! nothing to do, and what a monitoring process reads (usage, albums,
//! statistics), without writing anything.
//!
//! A RocksDB read-only open writes no `OPTIONS` file, manifest or log: it
//! costs about a fifth of a write open, which on a re-run over a folder
//! where nothing changed is most of the run's time (`DESIGN.md` §12). What
//! it reads is committed metadata, which recovery never changes, so a store
//! left by a crash reads the same here as after the next [`Store::open`].

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::damage::ShortSegments;
use super::ledger::user_id;
use super::library::{albums, find_album};
use super::maintenance::stats;
use super::quota::usage;
use super::sources::{stale, unchanged, SeenPaths};
use super::{lock, AlbumInfo, Stats, Store, UploadReport, Usage};
use crate::blob::segment_file;
use crate::blob::Site;
use crate::clock::{Clock, SystemClock};
use crate::error::{LibraryError, NameError, OpenError, Result, StorageError};
use crate::ids::AlbumId;
use crate::meta::records::SegmentRecord;
use crate::meta::{decode, keys, Cf, Meta};
use crate::names::{check_album_lookup, check_user_name};

/// A store opened for reading only. It holds the store's lock, as a
/// [`Store`] does (one opener at a time, in any process): drop it before
/// opening the store to write.
///
/// ```
/// use keepsake::{Content, DedupMode, ReadOnlyStore, Store};
/// use std::time::{Duration, SystemTime};
/// let dir = tempfile::tempdir().unwrap();
/// let root = dir.path().join("store");
/// let path = dir.path().join("IMG_1.JPG");
/// std::fs::write(&path, b"pixels").unwrap();
/// let meta = std::fs::metadata(&path).unwrap();
/// {
///     let u = Store::open(&root).unwrap().user("u").unwrap();
///     let album = u.ensure_album("A").unwrap();
///     let r = u.upload(album, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
///     let later = SystemTime::now() + Duration::from_secs(60);
///     u.record_sources(album, &[(path.clone(), meta.clone(), r.file_id)], later).unwrap();
/// }
/// let store = ReadOnlyStore::open(&root).unwrap().expect("a store is there");
/// let u = store.user("u").unwrap();
/// let album = u.find_album("A").unwrap().unwrap().id;
/// assert!(u.unchanged_sources(album, &[(&path, &meta)]).unwrap()[0].is_some());
/// assert_eq!(u.usage().unwrap().unique_bytes, 6);
/// ```
pub struct ReadOnlyStore {
    root: PathBuf,
    meta: Meta,
    /// The segment files shorter than their records say (missing: 0), and
    /// their lengths: a source whose content lies past the end of one is
    /// not trusted from here, so that the backup reads and heals it.
    short_segments: ShortSegments,
    _lock: File,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// One user of a [`ReadOnlyStore`], made by [`ReadOnlyStore::user`]: the
/// reads of [`User`](crate::User) that a re-run or a monitor needs.
pub struct ReadOnlyUser<'s> {
    meta: &'s Meta,
    name: String,
    short_segments: &'s ShortSegments,
    /// The user's id, looked up once (nothing changes under a read-only
    /// open).
    id: OnceLock<Option<u64>>,
}

impl std::fmt::Debug for ReadOnlyUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReadOnlyStore {
    /// Opens the store in `dir` for reading, or `None` if there is no store
    /// there (nothing is created).
    ///
    /// # Errors
    ///
    /// As [`Store::open`]:
    ///
    /// - [`OpenError::InUse`] while another process (or a `Store` or
    ///   `ReadOnlyStore` in this one) has it open.
    /// - [`OpenError::UnsupportedFormat`] for a store of a newer format, or of an
    ///   older one (a writable [`Store::open`] migrates it).
    /// - [`OpenError::Io`] if the lock file cannot be opened or locked.
    /// - [`OpenError::Database`] if the metadata database cannot be opened.
    /// - [`OpenError::Corrupt`] if the metadata has no format version, or it cannot be
    ///   read.
    pub fn open(dir: impl AsRef<Path>) -> Result<Option<ReadOnlyStore>, OpenError> {
        let root = dir.as_ref();
        if !Store::exists(root) {
            return Ok(None);
        }
        let lock = lock(root)?;
        let meta = Meta::open_read_only(&root.join("meta"), crate::meta::DEFAULT_CACHE)?;
        let mut short_segments = ShortSegments::new();
        // A bucket's packs are checked by the writable open, which marks
        // what it finds lost damaged: those marks are what this one sees.
        let segments = meta
            .scan_all(Cf::Segments, &[])
            .map_err(|e| OpenError::Corrupt(e.to_string()))?;
        for (k, v) in segments {
            let id = keys::u64_at(&k, 0).ok_or_else(|| OpenError::Corrupt("bad segment key".into()))?;
            let rec: SegmentRecord = decode(&v).map_err(|e| OpenError::Corrupt(e.to_string()))?;
            if rec.site != Site::Disk {
                continue;
            }
            let len = std::fs::metadata(segment_file(root, id)).map_or(0, |m| m.len());
            if len < rec.committed_len {
                short_segments.insert(id, len);
            }
        }
        Ok(Some(ReadOnlyStore {
            root: root.to_path_buf(),
            meta,
            short_segments,
            _lock: lock,
        }))
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The reads of the user called `name`.
    ///
    /// # Errors
    ///
    /// - [`NameError`] if `name` is not an acceptable user name, as for
    ///   [`Store::user`].
    pub fn user(&self, name: &str) -> Result<ReadOnlyUser<'_>, NameError> {
        check_user_name(name)?;
        Ok(ReadOnlyUser {
            meta: &self.meta,
            name: name.to_string(),
            short_segments: &self.short_segments,
            id: OnceLock::new(),
        })
    }

    /// Store-wide statistics, as [`Store::stats`] computes them.
    ///
    /// # Errors
    ///
    /// - [`StorageError::Database`] if the metadata database fails.
    /// - [`StorageError::Corrupt`] if it holds a record that cannot be decoded.
    pub fn stats(&self) -> Result<Stats, StorageError> {
        Ok(stats(&self.meta)?)
    }
}

impl ReadOnlyUser<'_> {
    fn id(&self) -> Result<Option<u64>> {
        if let Some(&id) = self.id.get() {
            return Ok(id);
        }
        let id = user_id(self.meta, &self.name)?;
        let _ = self.id.set(id);
        Ok(id)
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What [`User::find_album`](crate::User::find_album) answers.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::InvalidName`] for a name no album can have.
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn find_album(&self, name: &str) -> Result<Option<AlbumInfo>, LibraryError> {
        check_album_lookup(name)?;
        match user_id(self.meta, &self.name)? {
            Some(uid) => Ok(find_album(self.meta, uid, name)?),
            None => Ok(None),
        }
    }

    /// What [`User::albums`](crate::User::albums) answers.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn albums(&self) -> Result<Vec<AlbumInfo>, LibraryError> {
        match user_id(self.meta, &self.name)? {
            Some(uid) => Ok(albums(self.meta, uid)?),
            None => Ok(Vec::new()),
        }
    }

    /// What [`User::usage`](crate::User::usage) answers (sessions expire by
    /// the system clock here: a read-only handle has no store options).
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn usage(&self) -> Result<Usage, LibraryError> {
        Ok(usage(self.meta, &self.name, SystemClock.now_ms())?)
    }

    /// What [`User::unchanged_sources`](crate::User::unchanged_sources)
    /// answers, a segment file found missing or short at this open
    /// included.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn unchanged_sources(
        &self,
        album: AlbumId,
        files: &[(&Path, &Metadata)],
    ) -> Result<Vec<Option<UploadReport>>, LibraryError> {
        Ok(unchanged(self.meta, self.short_segments, self.id()?, album, files)?)
    }

    /// Whether [`User::forget_sources`](crate::User::forget_sources) would
    /// drop any record: a file under `root` that a backup recorded is not in
    /// `seen`.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn has_forgotten_sources(&self, album: AlbumId, root: &Path, seen: &SeenPaths) -> Result<bool, LibraryError> {
        match user_id(self.meta, &self.name)? {
            Some(uid) => Ok(!stale(self.meta, uid, album, root, seen)?.is_empty()),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ids::FileId;
    use crate::store::{Content, DedupMode};

    #[test]
    fn a_read_only_store_holds_the_store_lock_and_finds_no_store_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        assert!(ReadOnlyStore::open(&root).unwrap().is_none());
        assert!(!root.exists(), "looking for a store must not create one");
        drop(Store::open(&root).unwrap());
        let index = ReadOnlyStore::open(&root).unwrap().unwrap();
        assert!(index.user("").is_err(), "a read-only handle for an invalid name");
        assert!(matches!(Store::open(&root), Err(OpenError::InUse { .. })));
        drop(index);
        Store::open(&root).unwrap();
    }

    #[test]
    fn a_read_only_store_answers_what_the_store_answers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let paths = ["kept", "edited", "never"].map(|p| dir.path().join(p));
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, [i as u8; 10]).unwrap();
        }
        let store = Store::open(&root).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        let sources: Vec<_> = paths[..2]
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                let r = store
                    .user("u")
                    .unwrap()
                    .upload(album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                    .unwrap();
                (p.clone(), std::fs::metadata(p).unwrap(), r.file_id)
            })
            .collect();
        let later = SystemTime::now() + Duration::from_secs(60);
        store.user("u").unwrap().record_sources(album, &sources, later).unwrap();
        std::fs::write(&paths[1], [9u8; 11]).unwrap();
        let metas: Vec<Metadata> = paths.iter().map(|p| std::fs::metadata(p).unwrap()).collect();
        let files: Vec<(&Path, &Metadata)> = paths.iter().map(PathBuf::as_path).zip(&metas).collect();
        let ids = |r: Vec<Option<UploadReport>>| -> Vec<Option<FileId>> {
            r.into_iter().map(|r| r.map(|r| r.file_id)).collect()
        };
        let from_store = ids(store.user("u").unwrap().unchanged_sources(album, &files).unwrap());
        drop(store);
        let store_ro = ReadOnlyStore::open(&root).unwrap().unwrap();
        let index = store_ro.user("u").unwrap();
        assert_eq!(
            store_ro.user("u").unwrap().find_album("A").unwrap().map(|a| a.id),
            Some(album)
        );
        assert_eq!(store_ro.user("u").unwrap().find_album("B").unwrap(), None);
        assert_eq!(store_ro.user("nobody").unwrap().find_album("A").unwrap(), None);
        let from_index = ids(index.unchanged_sources(album, &files).unwrap());
        assert_eq!(from_index, from_store);
        assert_eq!(from_index, [Some(sources[0].2), None, None]);
        let seen = SeenPaths::from_iter([paths[0].clone(), paths[1].clone()]);
        assert!(!index.has_forgotten_sources(album, dir.path(), &seen).unwrap());
        let seen = SeenPaths::from_iter([paths[0].clone()]);
        assert!(index.has_forgotten_sources(album, dir.path(), &seen).unwrap());
    }
}
