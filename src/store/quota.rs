//! Quota: what a user is charged, and the limit.
//!
//! A user is charged the sizes of the distinct blobs their files reference,
//! live or trashed: the same content in two albums, or under two names,
//! counts once. Another user's copy of the same content does not lower this
//! user's charge (each pays for what they keep), even though it is stored
//! once.

use super::{ensure_user, load_user, save_user, Store};
use crate::error::{Error, Result};
use crate::meta::records::UserRecord;
use crate::meta::txn::Txn;

/// The quota rule: an upload is refused only if it would *charge* bytes
/// past the limit. What charges nothing (a duplicate, content the user
/// already references) always passes, even when a lowered limit is below
/// current usage.
pub(crate) fn check_quota(user: &UserRecord, charged: u64) -> Result<()> {
    match user.limit {
        Some(limit) if charged > 0 && user.unique_bytes + charged > limit => Err(Error::QuotaExceeded {
            limit,
            used: user.unique_bytes,
            needed: charged,
        }),
        _ => Ok(()),
    }
}

/// A user's storage figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    /// The limit on `unique_bytes`, if one is set.
    pub limit: Option<u64>,
}

impl Store {
    /// The user's usage. A user who never stored anything has zero usage.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// let b = store.ensure_album("u", "B").unwrap();
    /// store.upload("u", a, "x.jpg", Content::from(vec![7u8; 5000]), DedupMode::NameAndHash).unwrap();
    /// store.upload("u", b, "y.jpg", Content::from(vec![7u8; 5000]), DedupMode::NameAndHash).unwrap();
    /// let usage = store.usage("u").unwrap();
    /// assert_eq!((usage.unique_bytes, usage.logical_bytes, usage.files), (5000, 10000, 2));
    /// ```
    pub fn usage(&self, user: &str) -> Result<Usage> {
        let inner = &self.inner;
        let rec = match inner.user_id(user)? {
            Some(uid) => load_user(&Txn::new(&inner.meta), uid)?,
            None => Default::default(),
        };
        Ok(Usage {
            user: user.to_string(),
            unique_bytes: rec.unique_bytes,
            logical_bytes: rec.logical_bytes,
            files: rec.live_files,
            trashed_files: rec.trashed_files,
            blobs: rec.blobs,
            trash_bytes: rec.trash_bytes,
            limit: rec.limit,
        })
    }

    /// Sets (`Some`) or clears (`None`) the user's limit on unique bytes.
    /// Lowering it below current usage deletes nothing; it only refuses
    /// uploads that would charge more.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Error, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let a = store.ensure_album("u", "A").unwrap();
    /// store.set_quota("u", Some(10_000)).unwrap();
    /// let big = Content::from(vec![0u8; 20_000]);
    /// assert!(matches!(store.upload("u", a, "big.mov", big, DedupMode::Hash), Err(Error::QuotaExceeded { .. })));
    /// ```
    pub fn set_quota(&self, user: &str, limit: Option<u64>) -> Result<()> {
        self.inner.user_id(user)?;
        let user = user.to_string();
        self.inner.commit(move |txn| {
            let uid = ensure_user(txn, &user)?;
            let mut rec = load_user(txn, uid)?;
            rec.limit = limit;
            save_user(txn, uid, &rec);
            Ok(())
        })
    }
}
