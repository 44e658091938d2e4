//! Edits of many files in one durable commit: adding to and removing from
//! albums, moving, deleting and restoring, each edit succeeding or failing
//! on its own, as the uploads of a batch do.
//!
//! One synced metadata write for a whole batch, instead of one per file, is
//! what makes deleting or re-filing tens of thousands of photos take
//! seconds rather than minutes.

use super::ledger::load_file;
use super::library::{add_in, move_in};
use super::trash::{delete_in, restore_in};
use super::User;
use crate::error::{LibraryError, Result, StorageError};
use crate::ids::{AlbumId, FileId};
use crate::meta::txn::Txn;
use crate::meta::{keys, Cf};

/// One change to one of the user's files, for [`User::edit_files`]. Each
/// does what the method of the same name does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileEdit {
    /// [`User::add_to_album`]: adding a file already there is no error.
    AddToAlbum {
        /// The file.
        file: FileId,
        /// The album it goes into.
        album: AlbumId,
    },
    /// [`User::remove_from_album`].
    RemoveFromAlbum {
        /// The file.
        file: FileId,
        /// The album it leaves.
        album: AlbumId,
    },
    /// [`User::move_file`].
    Move {
        /// The file.
        file: FileId,
        /// The album it leaves.
        from: AlbumId,
        /// The album it goes into.
        to: AlbumId,
    },
    /// [`User::delete`]: out of every album, into the trash.
    Delete(FileId),
    /// [`User::restore`]: out of the trash, into the albums it was in
    /// (except one that shows a live duplicate of it meanwhile).
    Restore(FileId),
}

impl FileEdit {
    /// The file the edit is about.
    pub fn file(&self) -> FileId {
        match *self {
            FileEdit::AddToAlbum { file, .. }
            | FileEdit::RemoveFromAlbum { file, .. }
            | FileEdit::Move { file, .. } => file,
            FileEdit::Delete(file) | FileEdit::Restore(file) => file,
        }
    }
}

impl User {
    /// Applies `edits`, in order, in one durable commit: one synced metadata
    /// write for the whole batch. Each edit succeeds or fails on its own: a
    /// failed edit changes nothing and the others still apply, each seeing
    /// the ones before it (a file deleted earlier in the batch can be
    /// restored later in it). The results are in the order of `edits`.
    ///
    /// The whole batch is one write in memory until it commits: a caller
    /// with hundreds of thousands of edits sends them in batches of some
    /// thousands (the CLI sends 4096).
    ///
    /// # Errors
    ///
    /// The outer [`StorageError`] if the commit fails (the disk or the
    /// metadata database fails, or the store refuses writes after a failed
    /// sync, [`StorageError::Poisoned`]): then no edit applied. Otherwise
    /// each edit's own result has the error its method would return:
    /// [`LibraryError::UnknownFile`] (another user's file id is unknown
    /// too), [`LibraryError::UnknownAlbum`], [`LibraryError::FileTrashed`],
    /// [`LibraryError::NotInAlbum`], [`LibraryError::NotTrashed`].
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, FileEdit, FileId, LibraryError, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, fav) = (u.ensure_album("A").unwrap(), u.ensure_album("Fav").unwrap());
    /// let f = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap().file_id;
    /// let results = u
    ///     .edit_files(vec![
    ///         FileEdit::AddToAlbum { file: f, album: fav },
    ///         FileEdit::Delete(FileId(99)),
    ///         FileEdit::Delete(f),
    ///     ])
    ///     .unwrap();
    /// assert!(results[0].is_ok() && results[2].is_ok());
    /// assert!(matches!(results[1], Err(LibraryError::UnknownFile(_))));
    /// assert_eq!(u.trash().unwrap()[0].albums, vec![a, fav]);
    /// ```
    pub fn edit_files(&self, edits: Vec<FileEdit>) -> Result<Vec<Result<(), LibraryError>>, StorageError> {
        let unknown = |edits: &[FileEdit]| edits.iter().map(|e| Err(LibraryError::UnknownFile(e.file()))).collect();
        let Some(_) = self.id()? else {
            return Ok(unknown(&edits));
        };
        let now = self.inner().now_ms();
        let missing = crate::error::Fault::UnknownFile(edits.first().map_or(FileId(0), FileEdit::file));
        let all = edits.clone();
        let committed = self.commit_existing(missing, move |txn, uid| {
            prefetch(txn, uid, &edits)?;
            let mut results = Vec::with_capacity(edits.len());
            for edit in edits {
                let sp = txn.savepoint();
                let r = match edit {
                    FileEdit::AddToAlbum { file, album } => add_in(txn, uid, file, album).map(drop),
                    FileEdit::RemoveFromAlbum { file, album } => move_in(txn, uid, file, Some(album), None),
                    FileEdit::Move { file, from, to } => move_in(txn, uid, file, Some(from), Some(to)),
                    FileEdit::Delete(file) => delete_in(txn, uid, file, now),
                    FileEdit::Restore(file) => restore_in(txn, uid, file).map(drop),
                };
                if r.is_err() {
                    txn.rollback_to(sp);
                }
                results.push(r);
            }
            Ok(results)
        });
        match committed {
            Ok(results) => Ok(results.into_iter().map(|r| r.map_err(LibraryError::from)).collect()),
            // The user went away between the look and the commit: as if
            // never there.
            Err(crate::error::Fault::UnknownFile(_)) => Ok(unknown(&all)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads ahead, in one pass per kind of record, what the edits will ask
/// for: their files (whose ids lie close together), then the memberships
/// each edit tests, and the user's counts for the contents whose liveness
/// changes (a delete's or a restore's). Memberships are keyed by album and
/// then file, so those of one album lie close together too, as ids of a
/// batch mostly do: they are read by stepping, not by lookups.
fn prefetch(txn: &mut Txn<'_>, uid: u64, edits: &[FileEdit]) -> Result<()> {
    let ids: Vec<u64> = edits.iter().map(|e| e.file().0).collect();
    txn.prefetch(Cf::Files, ids.iter().map(|&f| keys::file(uid, f)).collect(), true)?;
    let (mut members, mut counts) = (Vec::new(), Vec::new());
    for edit in edits {
        let fid = edit.file().0;
        // A record that does not decode is the edit's own error to report,
        // not the batch's: it is only not read ahead.
        let Ok(Some(file)) = load_file(txn, uid, fid) else {
            continue;
        };
        let tested: Vec<u64> = match *edit {
            FileEdit::AddToAlbum { album, .. } => vec![album.0],
            FileEdit::RemoveFromAlbum { album, .. } => vec![album.0],
            FileEdit::Move { from, to, .. } => vec![from.0, to.0],
            FileEdit::Delete(_) | FileEdit::Restore(_) => {
                counts.push(keys::user_hash(uid, &file.hash));
                file.albums
            }
        };
        members.extend(tested.into_iter().map(|a| keys::member(uid, a, fid)));
    }
    txn.prefetch(Cf::Members, members, true)?;
    txn.prefetch(Cf::UserBlobs, counts, false)
}
