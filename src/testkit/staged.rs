//! Where a session's staged bytes are: the file's name is the store's own
//! business (a number in the session's record), but tests that damage or
//! inspect it need the path.

use std::path::PathBuf;

use crate::meta::keys;
use crate::meta::records::UploadRecord;
use crate::meta::Cf;
use crate::{Store, UploadId};

/// The staged file of `user`'s session `id`, or `None` if the store has no
/// record of it (expired sessions keep theirs until `gc`).
pub fn staged_path(store: &Store, user: &str, id: UploadId) -> Option<PathBuf> {
    let inner = &store.inner;
    let uid = inner.user_id(user).ok()??;
    let rec = inner
        .meta
        .get::<UploadRecord>(Cf::Uploads, &keys::upload(uid, &id))
        .ok()??;
    Some(crate::store::staging::session_path(&inner.root, rec.file))
}
