//! Albums and the files in them.
//!
//! A file belongs to its user, not to an album: albums hold references, so
//! one file can be in any number of albums at no cost, and a file removed
//! from its last album stays in the user's library (listed by
//! [`User::files`]) until it is deleted.

use std::ops::ControlFlow;

use super::ledger::{
    add_member, live_file, load_file, load_user, remove_member, require_album, save_file, save_user, trash_file,
};
use super::{Inner, User};
use crate::error::{Fault, LibraryError, Result};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::records::{AlbumRecord, FileRecord};
use crate::meta::txn::Txn;
use crate::meta::{decode, Cf, Meta};
use crate::names::{check_album_lookup, check_album_name, FileName};

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
    /// Its name, exactly as uploaded.
    pub name: FileName,
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
    /// The source's modification time, to the nanosecond, if its upload
    /// gave one ([`Upload::modified`](crate::Upload::modified); the CLI's
    /// backup takes each file's mtime): what photo apps sort by.
    pub modified: Option<std::time::SystemTime>,
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
            modified: f.modified_ns.map(crate::clock::from_ns),
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

/// Scans one user's range of a family, keeping what `f` makes of each
/// entry.
fn list<T>(meta: &Meta, cf: Cf, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    meta.scan(cf, prefix, |k, v| {
        out.extend(f(k, v)?);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// User `uid`'s album called `name`, in committed metadata.
pub(crate) fn find_album(meta: &Meta, uid: u64, name: &str) -> Result<Option<AlbumInfo>> {
    let Some(id) = meta.get::<u64>(Cf::AlbumNames, &keys::album_name(uid, name))? else {
        return Ok(None);
    };
    Ok(meta
        .get::<AlbumRecord>(Cf::Albums, &keys::album(uid, id))?
        .map(|r| album_info(id, r)))
}

/// [`User::add_to_album`] inside a transaction.
pub(crate) fn add_in(txn: &mut Txn<'_>, uid: u64, file: FileId, album: AlbumId) -> Result<bool> {
    let mut f = live_file(txn, uid, file)?;
    require_album(txn, uid, album)?;
    let added = add_member(txn, uid, album.0, file.0, &mut f)?;
    save_file(txn, uid, file.0, &f);
    Ok(added)
}

/// Takes a live file out of `from` and puts it into `to` (either may be
/// absent), inside a transaction: [`User::remove_from_album`] and
/// [`User::move_file`].
pub(crate) fn move_in(
    txn: &mut Txn<'_>,
    uid: u64,
    file: FileId,
    from: Option<AlbumId>,
    to: Option<AlbumId>,
) -> Result<()> {
    let mut f = live_file(txn, uid, file)?;
    if let Some(to) = to {
        require_album(txn, uid, to)?;
    }
    if let Some(from) = from {
        require_album(txn, uid, from)?;
        if !remove_member(txn, uid, from.0, file.0, f.size)? {
            return Err(Fault::NotInAlbum { file, album: from });
        }
        f.albums.retain(|a| *a != from.0);
    }
    if let Some(to) = to {
        add_member(txn, uid, to.0, file.0, &mut f)?;
    }
    save_file(txn, uid, file.0, &f);
    Ok(())
}

/// User `uid`'s albums, oldest first, in committed metadata.
pub(crate) fn albums(meta: &Meta, uid: u64) -> Result<Vec<AlbumInfo>> {
    list(meta, Cf::Albums, &keys::u64_key(uid), |k, v| {
        Ok(Some(album_info(keys::last_u64(k), decode(v)?)))
    })
}

impl Inner {
    pub(crate) fn file_info(&self, uid: u64, fid: u64) -> Result<Option<FileInfo>> {
        Ok(self
            .meta
            .get::<FileRecord>(Cf::Files, &keys::file(uid, fid))?
            .map(|f| FileInfo::new(fid, f)))
    }
}

impl User {
    /// Creates an album. Fails with [`LibraryError::AlbumExists`] if the user
    /// already has one of that name.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::InvalidName`] if `name` is not an acceptable album name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`LibraryError::AlbumExists`] if the user already has an album called `name`.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// u.create_album("Trip").unwrap();
    /// assert!(matches!(u.create_album("Trip"), Err(keepsake::LibraryError::AlbumExists(_))));
    /// ```
    pub fn create_album(&self, name: &str) -> Result<AlbumId, LibraryError> {
        check_album_name(name)?;
        let (name, now) = (name.to_string(), self.inner().now_ms());
        Ok(self.commit_creating(move |txn, uid| {
            if txn.exists(Cf::AlbumNames, &keys::album_name(uid, &name))? {
                return Err(Fault::AlbumExists(name));
            }
            create_album_in(txn, uid, &name, now).map(AlbumId)
        })?)
    }

    /// The album called `name`, creating it if the user has none.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::InvalidName`] if `name` is not an acceptable album name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("Camera").unwrap();
    /// assert_eq!(u.ensure_album("Camera").unwrap(), a);
    /// ```
    pub fn ensure_album(&self, name: &str) -> Result<AlbumId, LibraryError> {
        // An album named before the stricter rules is still found (a
        // nightly backup into it goes on); only a new name must meet them.
        if let Some(a) = self.find_album(name)? {
            return Ok(a.id);
        }
        check_album_name(name)?;
        let (name, now) = (name.to_string(), self.inner().now_ms());
        Ok(self.commit_creating(move |txn, uid| {
            match txn.get::<u64>(Cf::AlbumNames, &keys::album_name(uid, &name))? {
                Some(id) => Ok(AlbumId(id)),
                None => create_album_in(txn, uid, &name, now).map(AlbumId),
            }
        })?)
    }

    /// The user's album called `name`, if any.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::InvalidName`] if `name` is not an acceptable album name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let id = u.ensure_album("Trip").unwrap();
    /// assert_eq!(u.find_album("Trip").unwrap().unwrap().id, id);
    /// assert!(store.user("someone else").unwrap().find_album("Trip").unwrap().is_none());
    /// ```
    pub fn find_album(&self, name: &str) -> Result<Option<AlbumInfo>, LibraryError> {
        check_album_lookup(name)?;
        match self.id()? {
            Some(uid) => Ok(find_album(&self.inner().meta, uid, name)?),
            None => Ok(None),
        }
    }

    /// Renames an album; its files are untouched.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::InvalidName`] if `new_name` is not an acceptable album name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`LibraryError::AlbumExists`] if another of the user's albums is called
    ///   `new_name`.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let id = u.ensure_album("Trip").unwrap();
    /// u.rename_album(id, "Rome 2024").unwrap();
    /// assert_eq!(u.albums().unwrap()[0].name, "Rome 2024");
    /// ```
    pub fn rename_album(&self, album: AlbumId, new_name: &str) -> Result<(), LibraryError> {
        check_album_name(new_name)?;
        let new_name = new_name.to_string();
        Ok(
            self.commit_existing(Fault::UnknownAlbum(album.to_string()), move |txn, uid| {
                let mut rec = require_album(txn, uid, album)?;
                let (old_key, new_key) = (keys::album_name(uid, &rec.name), keys::album_name(uid, &new_name));
                // Another spelling of its own name (NFD to NFC) keeps its key.
                if old_key != new_key {
                    if txn.exists(Cf::AlbumNames, &new_key)? {
                        return Err(Fault::AlbumExists(new_name));
                    }
                    txn.delete(Cf::AlbumNames, old_key);
                    txn.put(Cf::AlbumNames, new_key, &album.0);
                }
                rec.name = new_name;
                txn.put(Cf::Albums, keys::album(uid, album.0), &rec);
                Ok(())
            })?,
        )
    }

    /// The user's albums, oldest first.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// u.ensure_album("B").unwrap();
    /// u.ensure_album("A").unwrap();
    /// let names: Vec<_> = u.albums().unwrap().into_iter().map(|a| a.name).collect();
    /// assert_eq!(names, ["B", "A"]);
    /// ```
    pub fn albums(&self) -> Result<Vec<AlbumInfo>, LibraryError> {
        match self.id()? {
            Some(uid) => Ok(albums(&self.inner().meta, uid)?),
            None => Ok(Vec::new()),
        }
    }

    /// Deletes an album. What happens to its files is `deletion`'s choice.
    /// Returns the files moved to the trash.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{AlbumDeletion, Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// let only_a = u.upload(a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// let both = u.upload(a, "2.jpg", Content::from(&b"two"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.add_to_album(both, b).unwrap();
    /// // Only the file that was in no other album goes to the trash.
    /// assert_eq!(u.delete_album(a, AlbumDeletion::TrashFiles).unwrap(), vec![only_a]);
    /// assert_eq!(u.files().unwrap()[0].id, both);
    /// ```
    pub fn delete_album(&self, album: AlbumId, deletion: AlbumDeletion) -> Result<Vec<FileId>, LibraryError> {
        let now = self.inner().now_ms();
        Ok(
            self.commit_existing(Fault::UnknownAlbum(album.to_string()), move |txn, uid| {
                let rec = require_album(txn, uid, album)?;
                let mut user_rec = load_user(txn, uid)?;
                let mut trashed = Vec::new();
                for (k, _) in txn.scan(Cf::Members, &keys::album(uid, album.0))? {
                    let fid = keys::last_u64(&k);
                    let mut file = load_file(txn, uid, fid)?
                        .ok_or_else(|| Fault::Corrupt(format!("album member {fid} has no file record")))?;
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
            })?,
        )
    }

    /// The live files in an album, oldest first.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// u.upload(a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap();
    /// assert_eq!(u.album_files(a).unwrap()[0].name, "1.jpg");
    /// ```
    pub fn album_files(&self, album: AlbumId) -> Result<Vec<FileInfo>, LibraryError> {
        let inner = self.inner();
        let missing = || Fault::UnknownAlbum(album.to_string());
        let uid = self.id()?.ok_or_else(missing)?;
        if inner.meta.get_raw(Cf::Albums, &keys::album(uid, album.0))?.is_none() {
            return Err(missing().into());
        }
        Ok(list(&inner.meta, Cf::Members, &keys::album(uid, album.0), |k, _| {
            inner.file_info(uid, keys::last_u64(k))
        })?)
    }

    /// All the user's live files (in albums or not), oldest first.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let f = u.upload(a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.remove_from_album(f, a).unwrap();
    /// // In no album, but still in the library.
    /// assert_eq!(u.files().unwrap()[0].id, f);
    /// ```
    pub fn files(&self) -> Result<Vec<FileInfo>, LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(Vec::new());
        };
        Ok(list(&inner.meta, Cf::Files, &keys::u64_key(uid), |k, v| {
            let f: FileRecord = decode(v)?;
            Ok(f.trashed_ms.is_none().then(|| FileInfo::new(keys::last_u64(k), f)))
        })?)
    }

    /// One of the user's files, live or trashed.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file, live or trashed
    ///   (another user's file id is unknown too).
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let v = store.user("v").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let f = u.upload(a, "1.jpg", Content::from(&b"one"[..]), DedupMode::Hash).unwrap().file_id;
    /// assert_eq!(u.file(f).unwrap().size, 3);
    /// // Another user's id is unknown to this user.
    /// assert!(matches!(v.file(f), Err(keepsake::LibraryError::UnknownFile(_))));
    /// ```
    pub fn file(&self, file: FileId) -> Result<FileInfo, LibraryError> {
        let inner = self.inner();
        let uid = self.id()?.ok_or(Fault::UnknownFile(file))?;
        inner.file_info(uid, file.0)?.ok_or(LibraryError::UnknownFile(file))
    }

    /// The user's live files with this content, oldest first.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// u.upload(a, "1.jpg", Content::from(&b"same"[..]), DedupMode::NameAndHash).unwrap();
    /// u.upload(a, "2.jpg", Content::from(&b"same"[..]), DedupMode::NameAndHash).unwrap();
    /// assert_eq!(u.find_by_hash(ContentHash::of(b"same")).unwrap().len(), 2);
    /// ```
    pub fn find_by_hash(&self, hash: ContentHash) -> Result<Vec<FileInfo>, LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(Vec::new());
        };
        let mut files = list(&inner.meta, Cf::ByName, &keys::user_hash(uid, &hash), |k, _| {
            inner.file_info(uid, keys::last_u64(k))
        })?;
        // Oldest first: the index orders a content's files by name first.
        files.sort_unstable_by_key(|f| f.id);
        Ok(files)
    }

    /// Adds a file to an album (a reference: no data is copied). Returns
    /// false if it was already there.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file (another user's
    ///   file id is unknown too).
    /// - [`LibraryError::FileTrashed`] if the file is in the trash; restore it first.
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, fav) = (u.ensure_album("A").unwrap(), u.ensure_album("Fav").unwrap());
    /// let f = u.upload(a, "1.jpg", Content::from(vec![0u8; 8000]), DedupMode::Hash).unwrap().file_id;
    /// assert!(u.add_to_album(f, fav).unwrap());
    /// assert!(!u.add_to_album(f, fav).unwrap());
    /// assert_eq!(u.usage().unwrap().unique_bytes, 8000);
    /// ```
    pub fn add_to_album(&self, file: FileId, album: AlbumId) -> Result<bool, LibraryError> {
        Ok(self.commit_existing(Fault::UnknownFile(file), move |txn, uid| add_in(txn, uid, file, album))?)
    }

    /// Removes a file from one album; it stays in its other albums, and in
    /// the library if this was its last album.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file (another user's
    ///   file id is unknown too).
    /// - [`LibraryError::FileTrashed`] if the file is in the trash (it is in no album
    ///   then).
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album.
    /// - [`LibraryError::NotInAlbum`] if the file is not in `album`.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// let f = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.add_to_album(f, b).unwrap();
    /// u.remove_from_album(f, a).unwrap();
    /// assert_eq!(u.file(f).unwrap().albums, vec![b]);
    /// ```
    pub fn remove_from_album(&self, file: FileId, album: AlbumId) -> Result<(), LibraryError> {
        Ok(self.move_between(file, Some(album), None)?)
    }

    /// Moves a file from one album to another, atomically.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file (another user's
    ///   file id is unknown too).
    /// - [`LibraryError::FileTrashed`] if the file is in the trash; restore it first.
    /// - [`LibraryError::UnknownAlbum`] if the user has no album `from` or no album
    ///   `to`.
    /// - [`LibraryError::NotInAlbum`] if the file is not in `from`.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// let f = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.move_file(f, a, b).unwrap();
    /// assert_eq!(u.file(f).unwrap().albums, vec![b]);
    /// ```
    pub fn move_file(&self, file: FileId, from: AlbumId, to: AlbumId) -> Result<(), LibraryError> {
        Ok(self.move_between(file, Some(from), Some(to))?)
    }

    fn move_between(&self, file: FileId, from: Option<AlbumId>, to: Option<AlbumId>) -> Result<()> {
        self.commit_existing(Fault::UnknownFile(file), move |txn, uid| {
            move_in(txn, uid, file, from, to)
        })
    }
}
