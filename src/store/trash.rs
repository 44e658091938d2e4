//! The trash: deleting a file takes it out of every album at once; it keeps
//! counting toward the quota until it is purged (by emptying the trash or
//! after the retention period). A trashed file is never a duplicate an
//! upload skips or links; an upload of its content (under the upload's rule)
//! that finds no live duplicate restores it instead (`rules`), and
//! restoring never puts a file into an album that shows a duplicate of it.

use super::ledger::{
    add_member, live_file, load_album, load_file, load_user, purge, save_file, save_user, shows_duplicate, trash_file,
    txn_user_id, untrash_file,
};
use super::{FileInfo, Store, User};
use crate::error::{Fault, LibraryError, Result, StorageError};
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::txn::Txn;
use crate::meta::Cf;

/// What a purge of the trash did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Files permanently deleted.
    pub files: u64,
    /// Bytes by which the users' quota usage went down.
    pub bytes_freed: u64,
}

impl PurgeReport {
    fn count(&mut self, purged: Option<u64>) {
        if let Some(freed) = purged {
            self.files += 1;
            self.bytes_freed += freed;
        }
    }
}

/// [`User::delete`] inside a transaction.
pub(crate) fn delete_in(txn: &mut Txn<'_>, uid: u64, file: FileId, now: u64) -> Result<()> {
    let mut f = live_file(txn, uid, file)?;
    let mut u = load_user(txn, uid)?;
    trash_file(txn, uid, &mut u, file.0, &mut f, now)?;
    save_file(txn, uid, file.0, &f);
    save_user(txn, uid, &u);
    Ok(())
}

/// [`User::restore`] inside a transaction.
pub(crate) fn restore_in(txn: &mut Txn<'_>, uid: u64, file: FileId) -> Result<Vec<AlbumId>> {
    let mut f = load_file(txn, uid, file.0)?.ok_or(Fault::UnknownFile(file))?;
    let at = f.trashed_ms.ok_or(Fault::NotTrashed(file))?;
    let mut u = load_user(txn, uid)?;
    for album in untrash_file(txn, uid, &mut u, file.0, &mut f, at)? {
        if load_album(txn, uid, album)?.is_some() && !shows_duplicate(txn, uid, album, file.0, &f)? {
            add_member(txn, uid, album, file.0, &mut f)?;
        }
    }
    save_file(txn, uid, file.0, &f);
    save_user(txn, uid, &u);
    Ok(f.albums.iter().copied().map(AlbumId).collect())
}

impl User {
    /// Moves a file to the trash, out of every album at once. Its bytes keep
    /// counting toward the quota until the trash is emptied or the retention
    /// period ends.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file (another user's
    ///   file id is unknown too).
    /// - [`LibraryError::FileTrashed`] if the file is already in the trash.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync ([`StorageError::Poisoned`]).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// let f = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.add_to_album(f, b).unwrap();
    /// u.delete(f).unwrap();
    /// assert!(u.album_files(a).unwrap().is_empty() && u.album_files(b).unwrap().is_empty());
    /// assert_eq!(u.trash().unwrap()[0].id, f);
    /// ```
    pub fn delete(&self, file: FileId) -> Result<(), LibraryError> {
        let now = self.inner().now_ms();
        Ok(self.commit_existing(Fault::UnknownFile(file), move |txn, uid| delete_in(txn, uid, file, now))?)
    }

    /// Restores a trashed file into the albums it was in (those that still
    /// exist), except an album that shows, meanwhile, a live file with the
    /// same name and content (a duplicate under either rule): no album shows
    /// the same photo twice. Returns the albums it went back into; if none,
    /// the file returns to the library only.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownFile`] if the user has no such file (another user's
    ///   file id is unknown too, and so is a file purged from the trash).
    /// - [`LibraryError::NotTrashed`] if the file is not in the trash.
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync ([`StorageError::Poisoned`]).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let f = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// u.delete(f).unwrap();
    /// assert_eq!(u.restore(f).unwrap(), vec![a]);
    /// ```
    pub fn restore(&self, file: FileId) -> Result<Vec<AlbumId>, LibraryError> {
        Ok(self.commit_existing(Fault::UnknownFile(file), move |txn, uid| restore_in(txn, uid, file))?)
    }

    /// The user's trashed files, oldest deletion first.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let nobody = store.user("nobody").unwrap();
    /// assert!(nobody.trash().unwrap().is_empty());
    /// ```
    pub fn trash(&self) -> Result<Vec<FileInfo>, LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (k, _) in inner.meta.scan_all(Cf::Trash, &keys::u64_key(uid))? {
            if let Some(f) = inner.file_info(uid, keys::last_u64(&k))? {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Permanently deletes everything in the user's trash. Blobs no longer
    /// referenced by anyone become garbage that [`Store::gc`] reclaims.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync ([`StorageError::Poisoned`]).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let f = u.upload(a, "1.jpg", Content::from(vec![1u8; 9000]), DedupMode::Hash).unwrap().file_id;
    /// u.delete(f).unwrap();
    /// assert_eq!(u.usage().unwrap().trash_bytes, 9000);
    /// assert_eq!(u.empty_trash().unwrap().bytes_freed, 9000);
    /// assert_eq!(u.usage().unwrap().unique_bytes, 0);
    /// ```
    pub fn empty_trash(&self) -> Result<PurgeReport, LibraryError> {
        let (user, now) = (self.name().to_string(), self.inner().now_ms());
        Ok(self.inner().commit(move |txn| {
            let mut report = PurgeReport::default();
            let Some(uid) = txn_user_id(txn, &user)? else {
                return Ok(report);
            };
            let mut u = load_user(txn, uid)?;
            for (k, _) in txn.scan(Cf::Trash, &keys::u64_key(uid))? {
                let at = keys::u64_at(&k, 8).unwrap_or(0);
                report.count(purge(txn, uid, &mut u, (at, keys::last_u64(&k)), now)?);
            }
            save_user(txn, uid, &u);
            Ok(report)
        })?)
    }
}

impl Store {
    /// Permanently deletes every user's files that have been in the trash
    /// longer than the retention period. [`Store::gc`] calls this first.
    ///
    /// # Errors
    ///
    /// - [`StorageError::Database`] if the metadata database fails, and
    ///   [`StorageError::Corrupt`] if it holds a record that cannot be decoded.
    /// - [`StorageError::Poisoned`] if the store refuses writes after a failed sync.
    ///
    /// Expired files are purged in commits of up to a thousand; those committed before
    /// a failure stay purged, and the next call carries on.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert_eq!(store.purge_expired_trash().unwrap().files, 0);
    /// ```
    pub fn purge_expired_trash(&self) -> Result<PurgeReport, StorageError> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let cutoff = now.saturating_sub(inner.options.trash_retention.as_millis() as u64);
        let mut expired: Vec<(u64, (u64, u64))> = Vec::new();
        inner.meta.scan(Cf::Trash, &[], |k, _| {
            if let (Some(uid), Some(at)) = (keys::u64_at(k, 0), keys::u64_at(k, 8)) {
                if at <= cutoff {
                    expired.push((uid, (at, keys::last_u64(k))));
                }
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let mut total = PurgeReport::default();
        // Bounded batches keep one commit small however full the trash is.
        for chunk in expired.chunks(1000) {
            let chunk = chunk.to_vec();
            let r = inner.commit(move |txn| {
                let mut report = PurgeReport::default();
                for (uid, deletion) in chunk {
                    let mut u = load_user(txn, uid)?;
                    report.count(purge(txn, uid, &mut u, deletion, now)?);
                    save_user(txn, uid, &u);
                }
                Ok(report)
            })?;
            total.files += r.files;
            total.bytes_freed += r.bytes_freed;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock as Manual;
    use crate::{Content, DedupMode, StoreOptions};

    /// The expiry scan and the purge are separate steps; a file restored and
    /// trashed again between them is a new deletion and must survive.
    #[test]
    fn a_purge_never_takes_a_file_trashed_again_since_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        let store = Store::open_with(dir.path(), StoreOptions::default().clock(clock.clone())).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        let f = store
            .user("u")
            .unwrap()
            .upload(album, "x.jpg", Content::from(vec![1u8; 9000]), DedupMode::Hash)
            .unwrap()
            .file_id;
        clock.0.store(1_000, Ordering::SeqCst);
        store.user("u").unwrap().delete(f).unwrap();
        // What the expiry scan would have collected: the deletion at 1000.
        let uid = store.inner.user_id("u").unwrap().unwrap();
        store.user("u").unwrap().restore(f).unwrap();
        clock.0.store(2_000, Ordering::SeqCst);
        store.user("u").unwrap().delete(f).unwrap();
        let r = store
            .inner
            .commit(move |txn| {
                let mut report = PurgeReport::default();
                let mut u = load_user(txn, uid)?;
                report.count(purge(txn, uid, &mut u, (1_000, f.0), 3_000)?);
                save_user(txn, uid, &u);
                Ok(report)
            })
            .unwrap();
        assert_eq!(r.files, 0);
        assert_eq!(store.user("u").unwrap().trash().unwrap().len(), 1);
        assert!(store.verify(true).unwrap().ok);
    }
}
