//! The per-user handle: one user's view of a store.
//!
//! Every operation a user causes (uploads, albums, files, the trash, quota,
//! upload sessions, duplicates, backup source records) is a method of
//! [`User`], so no call can name one user and act on another's records: the
//! name is checked once, when the handle is made, and every key the
//! operations read or write starts with that user's id.

use std::sync::{Arc, OnceLock};

use super::ledger::{ensure_user, txn_user_id, user_id};
use super::{Inner, Store};
use crate::error::{Fault, NameError, Result};
use crate::meta::txn::Txn;
use crate::names::check_user_name;

/// One user of a [`Store`]: their albums, files, trash, quota, upload
/// sessions and duplicates. Made by [`Store::user`].
///
/// A handle is cheap to clone and may outlive the `Store` value it came
/// from: it shares the open store, and so keeps it open (and its lock
/// held, so that a reopen meanwhile fails with `InUse`) until the last
/// handle and the last `Store` clone are dropped. A user exists once
/// something was written for them; until then every read answers empty,
/// never with an error that would tell "no such user" from "no such file".
///
/// A handle reaches only its own user's records; it is not a way to reach
/// the store (there is no accessor back to it), so a server may hand one to
/// code that should act for that user alone.
///
/// ```
/// use keepsake::{Content, DedupMode, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let ann = store.user("ann").unwrap();
/// let bob = store.user("bob").unwrap();
/// let camera = ann.ensure_album("Camera").unwrap();
/// ann.upload(camera, "IMG_1.JPG", Content::from(&b"pixels"[..]), DedupMode::Hash).unwrap();
/// assert_eq!(ann.files().unwrap().len(), 1);
/// // Another user sees none of it.
/// assert!(bob.files().unwrap().is_empty());
/// ```
#[derive(Clone)]
pub struct User {
    store: Store,
    name: Arc<str>,
    /// The user's id once the user exists: ids are never reused or
    /// removed, so it is looked up once per handle, not once per call.
    id: Arc<OnceLock<u64>>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("store", &self.store.inner.root)
            .finish()
    }
}

impl Store {
    /// The handle for the user called `name` (the embedding server's user
    /// id). Making it writes nothing: the user comes into being with their
    /// first write.
    ///
    /// # Errors
    ///
    /// - [`NameError`] if `name` is empty, only white space, longer than
    ///   [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES), or holds a control
    ///   character.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// assert_eq!(ann.name(), "ann");
    /// assert!(matches!(store.user(""), Err(keepsake::NameError { .. })));
    /// ```
    pub fn user(&self, name: &str) -> Result<User, NameError> {
        check_user_name(name)?;
        Ok(User {
            store: self.clone(),
            name: name.into(),
            id: Arc::default(),
        })
    }
}

impl User {
    /// The user's name, as given to [`Store::user`].
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.store.inner
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The user's id in the committed metadata, or `None` for a user who
    /// never stored anything.
    pub(crate) fn id(&self) -> Result<Option<u64>> {
        if let Some(&id) = self.id.get() {
            return Ok(Some(id));
        }
        let found = user_id(&self.inner().meta, &self.name)?;
        if let Some(id) = found {
            let _ = self.id.set(id);
        }
        Ok(found)
    }

    /// Runs `work` as a durable transaction on behalf of the user, who must
    /// exist: a user who never stored anything fails with `missing`, the
    /// same error an unknown (or another user's) id gives.
    pub(crate) fn commit_existing<R, F>(&self, missing: Fault, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'m> FnOnce(&mut Txn<'m>, u64) -> Result<R> + Send + 'static,
    {
        let name = self.name.clone();
        self.inner().commit(move |txn| {
            let uid = txn_user_id(txn, &name)?.ok_or(missing)?;
            work(txn, uid)
        })
    }

    /// Runs `work` as a durable transaction on behalf of the user, creating
    /// the user first if needed.
    pub(crate) fn commit_creating<R, F>(&self, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'m> FnOnce(&mut Txn<'m>, u64) -> Result<R> + Send + 'static,
    {
        let name = self.name.clone();
        self.inner().commit(move |txn| {
            let uid = ensure_user(txn, &name)?;
            work(txn, uid)
        })
    }
}
