//! Albums and the files in them.
//!
//! A file belongs to its user, not to an album: albums hold references, so
//! one file can be in any number of albums at no cost, and a file removed
//! from its last album stays in the user's library (listed by
//! [`Store::files`]) until it is deleted.

use std::ops::ControlFlow;

use super::accounting::{add_member, load_album, load_file, remove_member, save_file};
use super::trash::trash_file;
use super::{ensure_user, load_user, save_user, Inner, Store};
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::records::{AlbumRecord, FileRecord};
use crate::meta::txn::Txn;
use crate::meta::{decode, Cf};
use crate::names::check_album_name;

/// An album as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlbumInfo {
    /// Its id.
    pub id: AlbumId,
    /// Its name, unique among the user's albums.
    pub name: String,
    /// Number of files in it.
    pub files: u64,
    /// Sum of the sizes of its files.
    pub bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A file as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileInfo {
    /// Its id.
    pub id: FileId,
    /// Its name.
    pub name: String,
    /// Its content's hash.
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
    /// Upload time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The albums it is in (for a trashed file: the albums it was in, which
    /// restoring puts it back into).
    pub albums: Vec<AlbumId>,
    /// When it was moved to the trash, if it is there.
    pub trashed_ms: Option<u64>,
}

impl FileInfo {
    pub(crate) fn new(id: u64, f: FileRecord) -> Self {
        FileInfo {
            id: FileId(id),
            name: f.name,
            hash: f.hash,
            size: f.size,
            created_ms: f.created_ms,
            albums: f.albums.into_iter().map(AlbumId).collect(),
            trashed_ms: f.trashed_ms,
        }
    }
}

/// What deleting an album does with its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlbumDeletion {
    /// Files stay in the user's library (and in their other albums).
    KeepFiles,
    /// Files that are in no other album go to the trash; files that are also
    /// in other albums only leave this one. A photo the user still shows
    /// elsewhere is never deleted by deleting one album.
    TrashFiles,
}

fn album_info(id: u64, r: AlbumRecord) -> AlbumInfo {
    AlbumInfo {
        id: AlbumId(id),
        name: r.name,
        files: r.files,
        bytes: r.bytes,
        created_ms: r.created_ms,
    }
}

/// The user's live file `fid`, or the errors a caller should see.
pub(crate) fn live_file(txn: &Txn<'_>, uid: u64, fid: FileId) -> Result<FileRecord> {
    let f = load_file(txn, uid, fid.0)?.ok_or(Error::UnknownFile(fid))?;
    if f.trashed_ms.is_some() {
        return Err(Error::FileTrashed(fid));
    }
    Ok(f)
}

fn require_album(txn: &Txn<'_>, uid: u64, album: AlbumId) -> Result<AlbumRecord> {
    load_album(txn, uid, album.0)?.ok_or_else(|| Error::UnknownAlbum(album.to_string()))
}

fn create_album_in(txn: &mut Txn<'_>, uid: u64, name: &str, now: u64) -> Result<u64> {
    let mut user = load_user(txn, uid)?;
    let id = user.next_album;
    user.next_album += 1;
    save_user(txn, uid, &user);
    txn.put(Cf::AlbumNames, keys::album_name(uid, name), &id);
    txn.put(
        Cf::Albums,
        keys::album(uid, id),
        &AlbumRecord {
            name: name.to_string(),
            created_ms: now,
            files: 0,
            bytes: 0,
        },
    );
    Ok(id)
}

impl Inner {
    /// Scans one user's range of a family, decoding each value.
    fn list<T>(&self, cf: Cf, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.meta.scan(cf, prefix, |k, v| {
            out.extend(f(k, v)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub(crate) fn file_info(&self, uid: u64, fid: u64) -> Result<Option<FileInfo>> {
        Ok(self
            .meta
            .get::<FileRecord>(Cf::Files, &keys::file(uid, fid))?
            .map(|f| FileInfo::new(fid, f)))
    }
}

impl Store {
    /// Creates an album. Fails with [`Error::AlbumExists`] if the user
    /// already has one of that name.
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// store.create_album("u", "Trip").unwrap();
    /// assert!(matches!(store.create_album("u", "Trip"), Err(keepsake::Error::AlbumExists(_))));
    /// ```
    pub fn create_album(&self, user: &str, name: &str) -> Result<AlbumId> {
        check_album_name(name)?;
        let inner = &self.inner;
        inner.user_id(user)?;
        let (user, name, now) = (user.to_string(), name.to_string(), inner.now_ms());
        inner.commit(move |txn| {
            let uid = ensure_user(txn, &user)?;
            if txn.exists(Cf::AlbumNames, &keys::album_name(uid, &name))? {
                return Err(Error::AlbumExists(name));
            }
            create_album_in(txn, uid, &name, now).map(AlbumId)
        })
    }

    /// The album called `name`, creating it if the user has none.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "Camera").unwrap();
    /// assert_eq!(store.ensure_album("u", "Camera").unwrap(), a);
    /// ```
    pub fn ensure_album(&self, user: &str, name: &str) -> Result<AlbumId> {
        check_album_name(name)?;
        if let Some(a) = self.find_album(user, name)? {
            return Ok(a.id);
        }
        let (user, name, now) = (user.to_string(), name.to_string(), self.inner.now_ms());
        self.inner.commit(move |txn| {
            let uid = ensure_user(txn, &user)?;
            match txn.get::<u64>(Cf::AlbumNames, &keys::album_name(uid, &name))? {
                Some(id) => Ok(AlbumId(id)),
                None => create_album_in(txn, uid, &name, now).map(AlbumId),
            }
        })
    }

    /// The user's album called `name`, if any.
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let id = store.ensure_album("u", "Trip").unwrap();
    /// assert_eq!(store.find_album("u", "Trip").unwrap().unwrap().id, id);
    /// assert!(store.find_album("someone else", "Trip").unwrap().is_none());
    /// ```
    pub fn find_album(&self, user: &str, name: &str) -> Result<Option<AlbumInfo>> {
        check_album_name(name)?;
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
            return Ok(None);
        };
        let Some(id) = inner.meta.get::<u64>(Cf::AlbumNames, &keys::album_name(uid, name))? else {
            return Ok(None);
        };
        Ok(inner
            .meta
            .get::<AlbumRecord>(Cf::Albums, &keys::album(uid, id))?
            .map(|r| album_info(id, r)))
    }

    /// Renames an album; its files are untouched.
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let id = store.ensure_album("u", "Trip").unwrap();
    /// store.rename_album("u", id, "Rome 2024").unwrap();
    /// assert_eq!(store.albums("u").unwrap()[0].name, "Rome 2024");
    /// ```
    pub fn rename_album(&self, user: &str, album: AlbumId, new_name: &str) -> Result<()> {
        check_album_name(new_name)?;
        let new_name = new_name.to_string();
        self.inner
            .commit_as(user, Error::UnknownAlbum(album.to_string()), move |txn, uid| {
                let mut rec = require_album(txn, uid, album)?;
                if rec.name == new_name {
                    return Ok(());
                }
                if txn.exists(Cf::AlbumNames, &keys::album_name(uid, &new_name))? {
                    return Err(Error::AlbumExists(new_name));
                }
                txn.delete(Cf::AlbumNames, keys::album_name(uid, &rec.name));
                txn.put(Cf::AlbumNames, keys::album_name(uid, &new_name), &album.0);
                rec.name = new_name;
                txn.put(Cf::Albums, keys::album(uid, album.0), &rec);
                Ok(())
            })
    }

    /// The user's albums, oldest first.
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// store.ensure_album("u", "B").unwrap();
    /// store.ensure_album("u", "A").unwrap();
    /// let names: Vec<_> = store.albums("u").unwrap().into_iter().map(|a| a.name).collect();
    /// assert_eq!(names, ["B", "A"]);
    /// ```
    pub fn albums(&self, user: &str) -> Result<Vec<AlbumInfo>> {
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
            return Ok(Vec::new());
        };
        inner.list(Cf::Albums, &keys::u64_key(uid), |k, v| {
            Ok(Some(album_info(keys::last_u64(k), decode(v)?)))
        })
    }

    /// Deletes an album. What happens to its files is `deletion`'s choice.
    /// Returns the files moved to the trash.
    /// ```
    /// use keepsake::{AlbumDeletion, Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let (a, b) = (store.ensure_album("u", "A").unwrap(), store.ensure_album("u", "B").unwrap());
    /// let only_a = store.upload("u", a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// let both = store.upload("u", a, "2.jpg", Content::from(&b"two"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.add_to_album("u", both, b).unwrap();
    /// // Only the file that was in no other album goes to the trash.
    /// assert_eq!(store.delete_album("u", a, AlbumDeletion::TrashFiles).unwrap(), vec![only_a]);
    /// assert_eq!(store.files("u").unwrap()[0].id, both);
    /// ```
    pub fn delete_album(&self, user: &str, album: AlbumId, deletion: AlbumDeletion) -> Result<Vec<FileId>> {
        let now = self.inner.now_ms();
        self.inner
            .commit_as(user, Error::UnknownAlbum(album.to_string()), move |txn, uid| {
                let rec = require_album(txn, uid, album)?;
                let mut user_rec = load_user(txn, uid)?;
                let mut trashed = Vec::new();
                for (k, _) in txn.scan(Cf::Members, &keys::album(uid, album.0))? {
                    let fid = keys::last_u64(&k);
                    let mut file = load_file(txn, uid, fid)?
                        .ok_or_else(|| Error::Corrupt(format!("album member {fid} has no file record")))?;
                    remove_member(txn, uid, album.0, fid, file.size)?;
                    file.albums.retain(|a| *a != album.0);
                    if deletion == AlbumDeletion::TrashFiles && file.albums.is_empty() {
                        // Restoring puts it back where it was; the album is gone,
                        // so it returns to the library.
                        trash_file(txn, uid, &mut user_rec, fid, &mut file, now)?;
                        trashed.push(FileId(fid));
                    }
                    save_file(txn, uid, fid, &file);
                }
                save_user(txn, uid, &user_rec);
                txn.delete(Cf::AlbumNames, keys::album_name(uid, &rec.name));
                txn.delete(Cf::Albums, keys::album(uid, album.0));
                Ok(trashed)
            })
    }

    /// The live files in an album, oldest first.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// store.upload("u", a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap();
    /// assert_eq!(store.album_files("u", a).unwrap()[0].name, "1.jpg");
    /// ```
    pub fn album_files(&self, user: &str, album: AlbumId) -> Result<Vec<FileInfo>> {
        let inner = &self.inner;
        let missing = || Error::UnknownAlbum(album.to_string());
        let uid = inner.user_id(user)?.ok_or_else(missing)?;
        if inner.meta.get_raw(Cf::Albums, &keys::album(uid, album.0))?.is_none() {
            return Err(missing());
        }
        inner.list(Cf::Members, &keys::album(uid, album.0), |k, _| {
            inner.file_info(uid, keys::last_u64(k))
        })
    }

    /// All the user's live files (in albums or not), oldest first.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.remove_from_album("u", f, a).unwrap();
    /// // In no album, but still in the library.
    /// assert_eq!(store.files("u").unwrap()[0].id, f);
    /// ```
    pub fn files(&self, user: &str) -> Result<Vec<FileInfo>> {
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
            return Ok(Vec::new());
        };
        inner.list(Cf::Files, &keys::u64_key(uid), |k, v| {
            let f: FileRecord = decode(v)?;
            Ok(f.trashed_ms.is_none().then(|| FileInfo::new(keys::last_u64(k), f)))
        })
    }

    /// One of the user's files, live or trashed.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// assert_eq!(store.file("u", f).unwrap().size, 3);
    /// // Another user's id is unknown to this user.
    /// assert!(matches!(store.file("v", f), Err(keepsake::Error::UnknownFile(_))));
    /// ```
    pub fn file(&self, user: &str, file: FileId) -> Result<FileInfo> {
        let inner = &self.inner;
        let uid = inner.user_id(user)?.ok_or(Error::UnknownFile(file))?;
        inner.file_info(uid, file.0)?.ok_or(Error::UnknownFile(file))
    }

    /// The user's live files with this content, oldest first.
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// store.upload("u", a, "1.jpg", Content::from(&b"same"[..]), DedupMode::NameAndHash).unwrap();
    /// store.upload("u", a, "2.jpg", Content::from(&b"same"[..]), DedupMode::NameAndHash).unwrap();
    /// assert_eq!(store.find_by_hash("u", ContentHash::of(b"same")).unwrap().len(), 2);
    /// ```
    pub fn find_by_hash(&self, user: &str, hash: ContentHash) -> Result<Vec<FileInfo>> {
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
            return Ok(Vec::new());
        };
        inner.list(Cf::ByHash, &keys::user_hash(uid, &hash), |k, _| {
            inner.file_info(uid, keys::last_u64(k))
        })
    }

    /// Adds a file to an album (a reference: no data is copied). Returns
    /// false if it was already there.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let (a, fav) = (store.ensure_album("u", "A").unwrap(), store.ensure_album("u", "Fav").unwrap());
    /// let f = store.upload("u", a, "1.jpg", Content::from(vec![0u8; 8000]), DedupMode::Hash).unwrap().file_id;
    /// assert!(store.add_to_album("u", f, fav).unwrap());
    /// assert!(!store.add_to_album("u", f, fav).unwrap());
    /// assert_eq!(store.usage("u").unwrap().unique_bytes, 8000);
    /// ```
    pub fn add_to_album(&self, user: &str, file: FileId, album: AlbumId) -> Result<bool> {
        self.inner.commit_as(user, Error::UnknownFile(file), move |txn, uid| {
            let mut f = live_file(txn, uid, file)?;
            require_album(txn, uid, album)?;
            let added = add_member(txn, uid, album.0, file.0, &mut f)?;
            save_file(txn, uid, file.0, &f);
            Ok(added)
        })
    }

    /// Removes a file from one album; it stays in its other albums, and in
    /// the library if this was its last album.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let (a, b) = (store.ensure_album("u", "A").unwrap(), store.ensure_album("u", "B").unwrap());
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.add_to_album("u", f, b).unwrap();
    /// store.remove_from_album("u", f, a).unwrap();
    /// assert_eq!(store.file("u", f).unwrap().albums, vec![b]);
    /// ```
    pub fn remove_from_album(&self, user: &str, file: FileId, album: AlbumId) -> Result<()> {
        self.move_between(user, file, Some(album), None)
    }

    /// Moves a file from one album to another, atomically.
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let (a, b) = (store.ensure_album("u", "A").unwrap(), store.ensure_album("u", "B").unwrap());
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.move_file("u", f, a, b).unwrap();
    /// assert_eq!(store.file("u", f).unwrap().albums, vec![b]);
    /// ```
    pub fn move_file(&self, user: &str, file: FileId, from: AlbumId, to: AlbumId) -> Result<()> {
        self.move_between(user, file, Some(from), Some(to))
    }

    fn move_between(&self, user: &str, file: FileId, from: Option<AlbumId>, to: Option<AlbumId>) -> Result<()> {
        self.inner.commit_as(user, Error::UnknownFile(file), move |txn, uid| {
            let mut f = live_file(txn, uid, file)?;
            if let Some(to) = to {
                require_album(txn, uid, to)?;
            }
            if let Some(from) = from {
                require_album(txn, uid, from)?;
                if !remove_member(txn, uid, from.0, file.0, f.size)? {
                    return Err(Error::NotInAlbum { file, album: from });
                }
                f.albums.retain(|a| *a != from.0);
            }
            if let Some(to) = to {
                add_member(txn, uid, to.0, file.0, &mut f)?;
            }
            save_file(txn, uid, file.0, &f);
            Ok(())
        })
    }
}
