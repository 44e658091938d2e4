//! Finding and merging the duplicates a user already has: files with the
//! same content under different names (the desktop rule keeps both) or from
//! imports.
//!
//! A group is identified by its content hash: within one user the hash names
//! exactly the live files that a merge would fold into one, and it stays a
//! valid name for the group after the merge (which is what makes a second
//! merge recognisable as a no-op). Groups come from the `by_name` index,
//! whose keys `user | hash | name | file` put a group's files next to each
//! other: one pass in key order sees each group whole and never holds more
//! than one group.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use super::ledger::{add_member, live_matching, load_file, load_user, save_file, save_user, trash_file};
use super::{FileInfo, User};
use crate::error::{Fault, LibraryError, Result};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::txn::Txn;
use crate::meta::Cf;

/// Bytes of the user id that start every `by_name` key, before the hash.
const USER_BYTES: usize = 8;

/// A user's live files that share one content.
///
/// ```
/// use keepsake::{Content, DedupMode, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let u = store.user("u").unwrap();
/// let a = u.ensure_album("A").unwrap();
/// u.upload(a, "1.jpg", Content::from(vec![7u8; 100]), DedupMode::NameAndHash).unwrap();
/// u.upload(a, "copy of 1.jpg", Content::from(vec![7u8; 100]), DedupMode::NameAndHash).unwrap();
/// let group = &u.duplicates().unwrap()[0];
/// assert_eq!((group.size, group.files.len(), group.logical_bytes()), (100, 2, 100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DuplicateGroup {
    /// The content the files share; what [`User::merge`] takes to name the
    /// group.
    pub hash: ContentHash,
    /// The size of that content (of each file).
    pub size: u64,
    /// The files, oldest first (by id).
    pub files: Vec<FileInfo>,
}

/// What [`User::merge`] did, or (from [`DuplicateGroup::preview_merge`])
/// would do.
///
/// ```
/// use keepsake::{Content, ContentHash, DedupMode, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let u = store.user("u").unwrap();
/// let a = u.ensure_album("A").unwrap();
/// u.upload(a, "only.jpg", Content::from(&b"x"[..]), DedupMode::Hash).unwrap();
/// let report = u.merge(ContentHash::of(b"x"), None).unwrap();
/// assert!(report.already_merged() && report.trashed.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MergeReport {
    /// The group's content.
    pub hash: ContentHash,
    /// The file that stays.
    pub kept: FileId,
    /// The files moved to the trash, in id order.
    pub trashed: Vec<FileId>,
    /// Albums the kept file joined because another file of the group was in
    /// them, in id order.
    pub albums_added: Vec<AlbumId>,
    /// What the user's logical total goes down by once the trashed files are
    /// purged. The quota does not move: it counts the content once whatever
    /// the number of files (see [`DuplicateGroup::logical_bytes`]).
    pub logical_bytes: u64,
}

impl MergeReport {
    /// Whether the group had only one live file, so the merge changed
    /// nothing: merging is idempotent.
    ///
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// for name in ["a.jpg", "b.jpg"] {
    ///     u.upload(a, name, Content::from(&b"x"[..]), DedupMode::NameAndHash).unwrap();
    /// }
    /// assert!(!u.merge(ContentHash::of(b"x"), None).unwrap().already_merged());
    /// assert!(u.merge(ContentHash::of(b"x"), None).unwrap().already_merged());
    /// ```
    pub fn already_merged(&self) -> bool {
        self.trashed.is_empty()
    }
}

impl DuplicateGroup {
    /// The bytes a merge takes off the user's *logical* total (the sum of
    /// their files' sizes) once the trashed copies are purged: every copy
    /// but one. It frees no quota: the quota charges each distinct content
    /// once per user, so the copies already cost nothing.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// for name in ["a.jpg", "b.jpg", "c.jpg"] {
    ///     u.upload(a, name, Content::from(vec![1u8; 50]), DedupMode::NameAndHash).unwrap();
    /// }
    /// assert_eq!(u.duplicates().unwrap()[0].logical_bytes(), 100);
    /// assert_eq!(u.usage().unwrap().unique_bytes, 50);
    /// ```
    pub fn logical_bytes(&self) -> u64 {
        self.size * (self.files.len() as u64).saturating_sub(1)
    }

    /// What [`User::merge`] of this group with `keep` would do, changing
    /// nothing: a dry run. `keep` must be one of the group's files; `None`
    /// keeps the oldest (earliest `created_ms`, then lowest id).
    ///
    /// # Errors
    ///
    /// Only what the merge itself would refuse; the store is not read.
    ///
    /// - [`LibraryError::NotADuplicate`] if `keep` is not one of the group's files.
    /// - [`LibraryError::NoSuchContent`] if the group has no files (and `keep` is
    ///   `None`).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// let first = u.upload(a, "1.jpg", Content::from(&b"x"[..]), DedupMode::NameAndHash).unwrap().file_id;
    /// let second = u.upload(b, "2.jpg", Content::from(&b"x"[..]), DedupMode::NameAndHash).unwrap().file_id;
    /// let plan = u.duplicates().unwrap()[0].preview_merge(None).unwrap();
    /// assert_eq!((plan.kept, plan.trashed, plan.albums_added), (first, vec![second], vec![b]));
    /// assert_eq!(u.files().unwrap().len(), 2);
    /// ```
    pub fn preview_merge(&self, keep: Option<FileId>) -> Result<MergeReport, LibraryError> {
        Ok(self.plan(keep)?)
    }

    /// What merging would do, as the merge's own transaction decides it.
    fn plan(&self, keep: Option<FileId>) -> Result<MergeReport> {
        let kept = match keep {
            Some(id) => self.files.iter().find(|f| f.id == id).ok_or(Fault::NotADuplicate {
                file: id,
                hash: self.hash,
            })?,
            None => self
                .files
                .iter()
                .min_by_key(|f| (f.created_ms, f.id))
                .ok_or(Fault::NoSuchContent(self.hash))?,
        };
        let others = self.files.iter().filter(|f| f.id != kept.id);
        let albums: BTreeSet<AlbumId> = others.clone().flat_map(|f| f.albums.iter().copied()).collect();
        let trashed: Vec<FileId> = others.map(|f| f.id).collect();
        Ok(MergeReport {
            hash: self.hash,
            kept: kept.id,
            logical_bytes: self.size * trashed.len() as u64,
            trashed,
            albums_added: albums.into_iter().filter(|a| !kept.albums.contains(a)).collect(),
        })
    }
}

/// The group `hash` as the transaction sees it: every live file of the user
/// with that content.
fn group_in(txn: &Txn<'_>, uid: u64, hash: ContentHash) -> Result<DuplicateGroup> {
    let mut files = Vec::new();
    for fid in live_matching(txn, &keys::user_hash(uid, &hash))? {
        let rec = load_file(txn, uid, fid)?
            .ok_or_else(|| Fault::Corrupt(format!("by_name entry for file {fid} has no file record")))?;
        files.push(FileInfo::new(fid, rec));
    }
    let size = files.first().map_or(0, |f| f.size);
    Ok(DuplicateGroup { hash, size, files })
}

impl User {
    /// Calls `f` with each group of the user's live files that share one
    /// content (two files or more), in hash order, until it breaks.
    ///
    /// Streams: one pass over the `by_name` index, holding only the group
    /// being built, so any number of groups costs the memory of the largest
    /// one. The pass reads the index as it was when it started, so `f` may
    /// merge the group it is given (as `keepsake dedupe` does) without
    /// disturbing the groups still to come; a file trashed meanwhile is left
    /// out of its group, and a group left with one file is skipped.
    ///
    /// # Errors
    ///
    /// - Whatever `f` returns: the pass stops there, and the error is handed back as
    ///   it is.
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// for name in ["a.jpg", "b.jpg"] {
    ///     u.upload(a, name, Content::from(&b"same"[..]), DedupMode::NameAndHash).unwrap();
    /// }
    /// let mut merged = 0;
    /// u.for_each_duplicate_group(|group| {
    ///         merged += u.merge(group.hash, None)?.trashed.len();
    ///         Ok(ControlFlow::Continue(()))
    ///     })
    ///     .unwrap();
    /// assert_eq!((merged, u.files().unwrap().len()), (1, 1));
    /// ```
    pub fn for_each_duplicate_group(
        &self,
        mut f: impl FnMut(DuplicateGroup) -> Result<ControlFlow<()>, LibraryError>,
    ) -> Result<(), LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(());
        };
        let mut current: Option<(ContentHash, Vec<u64>)> = None;
        // The caller's own error stops the pass and is handed back as it is.
        let mut failed: Option<LibraryError> = None;
        let mut emit = |(hash, mut ids): (ContentHash, Vec<u64>)| -> Result<ControlFlow<()>> {
            if ids.len() < 2 {
                return Ok(ControlFlow::Continue(()));
            }
            // Oldest first: the index orders a group by name before id.
            ids.sort_unstable();
            let mut files = Vec::with_capacity(ids.len());
            for fid in ids {
                files.extend(inner.file_info(uid, fid)?.filter(|i| i.trashed_ms.is_none()));
            }
            match files.first() {
                Some(first) if files.len() >= 2 => Ok(f(DuplicateGroup {
                    hash,
                    size: first.size,
                    files,
                })
                .unwrap_or_else(|e| {
                    failed = Some(e);
                    ControlFlow::Break(())
                })),
                _ => Ok(ControlFlow::Continue(())),
            }
        };
        let mut stopped = false;
        inner.meta.scan(Cf::ByName, &keys::u64_key(uid), |k, _| {
            let hash = k
                .get(USER_BYTES..USER_BYTES + 32)
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .map(ContentHash::from_bytes)
                .ok_or_else(|| Fault::Corrupt("by_name key of the wrong length".into()))?;
            match &mut current {
                Some((h, ids)) if *h == hash => ids.push(keys::last_u64(k)),
                slot => {
                    if let Some(done) = slot.replace((hash, vec![keys::last_u64(k)])) {
                        if emit(done)?.is_break() {
                            stopped = true;
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some(last) = current.filter(|_| !stopped) {
            let _last_group_needs_no_flow = emit(last)?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The user's duplicate groups, collected. A convenience for small
    /// libraries: [`User::for_each_duplicate_group`] streams them instead.
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
    /// u.upload(a, "a.jpg", Content::from(&b"one"[..]), DedupMode::NameAndHash).unwrap();
    /// u.upload(a, "b.jpg", Content::from(&b"two"[..]), DedupMode::NameAndHash).unwrap();
    /// assert!(u.duplicates().unwrap().is_empty());
    /// ```
    pub fn duplicates(&self) -> Result<Vec<DuplicateGroup>, LibraryError> {
        let mut groups = Vec::new();
        self.for_each_duplicate_group(|g| {
            groups.push(g);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(groups)
    }

    /// Merges the user's live files with content `hash` into one: keeps
    /// `keep` (which must be one of them; `None` keeps the oldest), adds it
    /// to every album any of them was in, and moves the others to the trash,
    /// where they can be restored like any deleted file until purged.
    ///
    /// One atomic commit: a reader sees the group before or after, never
    /// half-merged. Idempotent: a group with one live file left is already
    /// merged, and merging it changes nothing
    /// ([`MergeReport::already_merged`]). Fails with
    /// [`LibraryError::NoSuchContent`] if the user has no live file with that
    /// content, and [`LibraryError::NotADuplicate`] if `keep` is not one of them.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::NoSuchContent`] if the user has no live file with content
    ///   `hash` and `keep` is `None` (or the user never stored anything).
    /// - [`LibraryError::NotADuplicate`] if `keep` is not one of the user's live files
    ///   with content `hash` (a trashed file, another user's, or none of that content).
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
    /// u.upload(a, "IMG_1.JPG", Content::from(&b"x"[..]), DedupMode::NameAndHash).unwrap();
    /// let copy = u.upload(b, "IMG_1 (1).JPG", Content::from(&b"x"[..]), DedupMode::NameAndHash).unwrap();
    /// let report = u.merge(ContentHash::of(b"x"), Some(copy.file_id)).unwrap();
    /// assert_eq!((report.kept, report.albums_added.clone()), (copy.file_id, vec![a]));
    /// assert_eq!(u.file(copy.file_id).unwrap().albums, vec![b, a]);
    /// assert!(u.merge(ContentHash::of(b"x"), None).unwrap().already_merged());
    /// ```
    pub fn merge(&self, hash: ContentHash, keep: Option<FileId>) -> Result<MergeReport, LibraryError> {
        let now = self.inner().now_ms();
        Ok(self.commit_existing(Fault::NoSuchContent(hash), move |txn, uid| {
            let report = group_in(txn, uid, hash)?.plan(keep)?;
            if report.already_merged() {
                return Ok(report);
            }
            let mut kept = load_file(txn, uid, report.kept.0)?
                .ok_or_else(|| Fault::Corrupt(format!("file {} vanished during its merge", report.kept)))?;
            for album in &report.albums_added {
                add_member(txn, uid, album.0, report.kept.0, &mut kept)?;
            }
            save_file(txn, uid, report.kept.0, &kept);
            let mut user_rec = load_user(txn, uid)?;
            for id in &report.trashed {
                let mut file = load_file(txn, uid, id.0)?
                    .ok_or_else(|| Fault::Corrupt(format!("file {id} vanished during its merge")))?;
                trash_file(txn, uid, &mut user_rec, id.0, &mut file, now)?;
                save_file(txn, uid, id.0, &file);
            }
            save_user(txn, uid, &user_rec);
            Ok(report)
        })?)
    }
}
