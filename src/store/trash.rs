//! The trash: deleting a file takes it out of every album at once; it keeps
//! counting toward the quota until it is purged (by emptying the trash or
//! after the retention period), and it is never a duplicate of an upload.

use super::accounting::{
    add_member, index_live, load_album, load_file, remove_member, save_file, set_liveness, unindex_live,
    unreference_file,
};
use super::library::{live_file, FileInfo};
use super::{load_user, save_user, txn_user_id, Store};
use crate::error::{Error, Result};
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::records::{FileRecord, UserRecord};
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

/// Moves a live file to the trash: out of every album and out of the
/// duplicate indexes. Its album list is kept for restoring.
pub(crate) fn trash_file(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    fid: u64,
    file: &mut FileRecord,
    now: u64,
) -> Result<()> {
    for &album in &file.albums {
        remove_member(txn, uid, album, fid, file.size)?;
    }
    unindex_live(txn, uid, fid, file);
    set_liveness(txn, uid, user, file, false)?;
    file.trashed_ms = Some(now);
    txn.put_empty(Cf::Trash, keys::trash(uid, now, fid));
    Ok(())
}

/// Deletes for good the file trashed at `at`, dropping its references. A
/// file restored since, or restored and trashed again later, is not this
/// deletion and is left alone: it has not expired.
fn purge(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    (at, fid): (u64, u64),
    now: u64,
    report: &mut PurgeReport,
) -> Result<()> {
    let Some(file) = load_file(txn, uid, fid)? else {
        return Ok(());
    };
    if file.trashed_ms != Some(at) {
        return Ok(());
    }
    let before = user.unique_bytes;
    unreference_file(txn, uid, user, &file, now)?;
    report.files += 1;
    report.bytes_freed += before - user.unique_bytes;
    txn.delete(Cf::Trash, keys::trash(uid, at, fid));
    txn.delete(Cf::Files, keys::file(uid, fid));
    Ok(())
}

impl Store {
    /// Moves a file to the trash, out of every album at once. Its bytes keep
    /// counting toward the quota until the trash is emptied or the retention
    /// period ends.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let (a, b) = (store.ensure_album("u", "A").unwrap(), store.ensure_album("u", "B").unwrap());
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.add_to_album("u", f, b).unwrap();
    /// store.delete("u", f).unwrap();
    /// assert!(store.album_files("u", a).unwrap().is_empty() && store.album_files("u", b).unwrap().is_empty());
    /// assert_eq!(store.trash("u").unwrap()[0].id, f);
    /// ```
    pub fn delete(&self, user: &str, file: FileId) -> Result<()> {
        let now = self.inner.now_ms();
        self.inner.commit_as(user, Error::UnknownFile(file), move |txn, uid| {
            let mut f = live_file(txn, uid, file)?;
            let mut u = load_user(txn, uid)?;
            trash_file(txn, uid, &mut u, file.0, &mut f, now)?;
            save_file(txn, uid, file.0, &f);
            save_user(txn, uid, &u);
            Ok(())
        })
    }

    /// Restores a trashed file into the albums it was in (those that still
    /// exist). Returns those albums; if none is left, the file returns to
    /// the library only.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// let f = store.upload("u", a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// store.delete("u", f).unwrap();
    /// assert_eq!(store.restore("u", f).unwrap(), vec![a]);
    /// ```
    pub fn restore(&self, user: &str, file: FileId) -> Result<Vec<AlbumId>> {
        self.inner.commit_as(user, Error::UnknownFile(file), move |txn, uid| {
            let mut f = load_file(txn, uid, file.0)?.ok_or(Error::UnknownFile(file))?;
            let at = f.trashed_ms.ok_or(Error::NotTrashed(file))?;
            let mut u = load_user(txn, uid)?;
            txn.delete(Cf::Trash, keys::trash(uid, at, file.0));
            f.trashed_ms = None;
            set_liveness(txn, uid, &mut u, &f, true)?;
            index_live(txn, uid, file.0, &f);
            let was_in = std::mem::take(&mut f.albums);
            for album in was_in {
                if load_album(txn, uid, album)?.is_some() {
                    add_member(txn, uid, album, file.0, &mut f)?;
                }
            }
            save_file(txn, uid, file.0, &f);
            save_user(txn, uid, &u);
            Ok(f.albums.iter().copied().map(AlbumId).collect())
        })
    }

    /// The user's trashed files, oldest deletion first.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert!(store.trash("nobody").unwrap().is_empty());
    /// ```
    pub fn trash(&self, user: &str) -> Result<Vec<FileInfo>> {
        let inner = &self.inner;
        let Some(uid) = inner.user_id(user)? else {
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
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// let f = store.upload("u", a, "1.jpg", Content::from(vec![1u8; 9000]), DedupMode::Hash).unwrap().file_id;
    /// store.delete("u", f).unwrap();
    /// assert_eq!(store.usage("u").unwrap().trash_bytes, 9000);
    /// assert_eq!(store.empty_trash("u").unwrap().bytes_freed, 9000);
    /// assert_eq!(store.usage("u").unwrap().unique_bytes, 0);
    /// ```
    pub fn empty_trash(&self, user: &str) -> Result<PurgeReport> {
        self.inner.user_id(user)?;
        let (user, now) = (user.to_string(), self.inner.now_ms());
        self.inner.commit(move |txn| {
            let mut report = PurgeReport::default();
            let Some(uid) = txn_user_id(txn, &user)? else {
                return Ok(report);
            };
            let mut u = load_user(txn, uid)?;
            for (k, _) in txn.scan(Cf::Trash, &keys::u64_key(uid))? {
                let at = keys::u64_at(&k, 8).unwrap_or(0);
                purge(txn, uid, &mut u, (at, keys::last_u64(&k)), now, &mut report)?;
            }
            save_user(txn, uid, &u);
            Ok(report)
        })
    }

    /// Permanently deletes every user's files that have been in the trash
    /// longer than the retention period. [`Store::gc`] calls this first.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert_eq!(store.purge_expired_trash().unwrap().files, 0);
    /// ```
    pub fn purge_expired_trash(&self) -> Result<PurgeReport> {
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
                    purge(txn, uid, &mut u, deletion, now, &mut report)?;
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::{Clock, Content, DedupMode, StoreOptions};

    #[derive(Debug, Default)]
    struct Manual(AtomicU64);
    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// The expiry scan and the purge are separate steps; a file restored and
    /// trashed again between them is a new deletion and must survive.
    #[test]
    fn a_purge_never_takes_a_file_trashed_again_since_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Manual::default());
        let store = Store::open_with(dir.path(), StoreOptions::default().clock(clock.clone())).unwrap();
        let album = store.ensure_album("u", "A").unwrap();
        let f = store
            .upload("u", album, "x.jpg", Content::from(vec![1u8; 9000]), DedupMode::Hash)
            .unwrap()
            .file_id;
        clock.0.store(1_000, Ordering::SeqCst);
        store.delete("u", f).unwrap();
        // What the expiry scan would have collected: the deletion at 1000.
        let uid = store.inner.user_id("u").unwrap().unwrap();
        store.restore("u", f).unwrap();
        clock.0.store(2_000, Ordering::SeqCst);
        store.delete("u", f).unwrap();
        let r = store
            .inner
            .commit(move |txn| {
                let mut report = PurgeReport::default();
                let mut u = load_user(txn, uid)?;
                purge(txn, uid, &mut u, (1_000, f.0), 3_000, &mut report)?;
                save_user(txn, uid, &u);
                Ok(report)
            })
            .unwrap();
        assert_eq!(r.files, 0);
        assert_eq!(store.trash("u").unwrap().len(), 1);
        assert!(store.verify(true).unwrap().ok);
    }
}
