//! Quota: what a user is charged, and the limit.
//!
//! A user is charged the sizes of the distinct blobs their files reference,
//! live or trashed: the same content in two albums, or under two names,
//! counts once. Another user's copy of the same content does not lower this
//! user's charge (each pays for what they keep), even though it is stored
//! once.

use super::ledger::{load_user, save_user, staged_bytes, user_id};
use super::User;
use crate::error::{LibraryError, Result};
use crate::meta::txn::Txn;
use crate::meta::Meta;

/// A user's storage figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// The user.
    pub user: String,
    /// What the quota charges: the sizes of the distinct blobs the user's
    /// files (live and trashed) reference.
    pub unique_bytes: u64,
    /// The sum of the sizes of all the user's files, live and trashed, as if
    /// nothing were shared; `logical_bytes - unique_bytes` is what
    /// deduplication saved.
    pub logical_bytes: u64,
    /// Live files.
    pub files: u64,
    /// Files in the trash.
    pub trashed_files: u64,
    /// Distinct blobs referenced.
    pub blobs: u64,
    /// What emptying the trash would free: the sizes of the blobs that only
    /// trashed files reference.
    pub trash_bytes: u64,
    /// What the user's unexpired upload sessions reserve: declared lengths,
    /// and the bytes received while a length is deferred, whatever their
    /// content. The limit applies to `unique_bytes + staged_bytes`.
    pub staged_bytes: u64,
    /// The limit on `unique_bytes + staged_bytes`, if one is set.
    pub limit: Option<u64>,
}

/// The usage of the user called `name`, in committed metadata: zero for a
/// user who never stored anything.
pub(crate) fn usage(meta: &Meta, name: &str, now: u64) -> Result<Usage> {
    let txn = Txn::new(meta);
    let (rec, staged) = match user_id(meta, name)? {
        Some(uid) => (load_user(&txn, uid)?, staged_bytes(&txn, uid, now, None)?),
        None => Default::default(),
    };
    Ok(Usage {
        user: name.to_string(),
        unique_bytes: rec.unique_bytes,
        logical_bytes: rec.logical_bytes,
        files: rec.live_files,
        trashed_files: rec.trashed_files,
        blobs: rec.blobs,
        trash_bytes: rec.trash_bytes,
        staged_bytes: staged,
        limit: rec.limit,
    })
}

impl User {
    /// The user's usage. A user who never stored anything has zero usage.
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
    /// let b = u.ensure_album("B").unwrap();
    /// u.upload(a, "x.jpg", Content::from(vec![7u8; 5000]), DedupMode::NameAndHash).unwrap();
    /// u.upload(b, "y.jpg", Content::from(vec![7u8; 5000]), DedupMode::NameAndHash).unwrap();
    /// let usage = u.usage().unwrap();
    /// assert_eq!((usage.unique_bytes, usage.logical_bytes, usage.files), (5000, 10000, 2));
    /// ```
    pub fn usage(&self) -> Result<Usage, LibraryError> {
        Ok(usage(&self.inner().meta, self.name(), self.inner().now_ms())?)
    }

    /// Sets (`Some`) or clears (`None`) the user's limit on unique bytes
    /// plus the bytes their upload sessions reserve.
    /// Lowering it below current usage deletes nothing; it only refuses
    /// uploads that would charge more.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store, UploadError};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// u.set_quota(Some(10_000)).unwrap();
    /// let big = Content::from(vec![0u8; 20_000]);
    /// assert!(matches!(u.upload(a, "big.mov", big, DedupMode::Hash), Err(UploadError::QuotaExceeded(_))));
    /// ```
    pub fn set_quota(&self, limit: Option<u64>) -> Result<(), LibraryError> {
        Ok(self.commit_creating(move |txn, uid| {
            let mut rec = load_user(txn, uid)?;
            rec.limit = limit;
            save_user(txn, uid, &rec);
            Ok(())
        })?)
    }
}
