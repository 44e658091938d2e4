//! Upgrades metadata of an older format, at open, in one synced batch: a
//! crash leaves the old format whole (and the next open migrates again) or
//! the new one.
//!
//! Format 1 → 2: upload sessions were keyed `user ‖ n`, `n` a store-wide
//! sequential id that also named the staged file `uploads/<n>.part`. The
//! gap between two of one's own ids counted everyone's uploads, and a
//! session URL could be guessed. Format 2 keys each session by a random
//! 128-bit id and keeps `n` in the record as the staged file's number, so
//! no staged file is renamed and a client's acknowledged bytes stay where
//! they are. Clients of a session begun under format 1 lose its id (they
//! begin again, as after an expiry): the old id cannot be kept, being the
//! guessable thing.

use rocksdb::WriteBatch;

use super::keys;
use super::records::{Record, UploadRecord};
use super::{Cf, Meta};
use crate::error::OpenError;
use crate::ids::UploadId;

/// Rewrites every format-1 session record under a random id, and marks the
/// metadata format 2, in one batch.
pub(super) fn from_v1(meta: &Meta) -> Result<(), OpenError> {
    let corrupt = |what: &str| OpenError::Corrupt(format!("migrating from format 1: {what}"));
    let mut b = WriteBatch::default();
    for (key, value) in meta.scan_all(Cf::Uploads, &[]).map_err(|e| corrupt(&e.to_string()))? {
        let (Some(user), Some(n), 16) = (keys::u64_at(&key, 0), keys::u64_at(&key, 8), key.len()) else {
            return Err(corrupt("an upload key is not user and id"));
        };
        let rec = UploadRecord::decode_v1(&value, n).map_err(|e| corrupt(&e.to_string()))?;
        let id = UploadId::random().map_err(|source| OpenError::Io {
            context: "drawing an upload id".into(),
            source,
        })?;
        meta.batch_delete(&mut b, Cf::Uploads, &key);
        meta.batch_put(&mut b, Cf::Uploads, &keys::upload(user, &id), &rec.encode());
    }
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &2u64.encode());
    meta.write(b).map_err(|e| corrupt(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use rocksdb::WriteBatch;

    use crate::meta::records::{Record, UploadRecord};
    use crate::meta::{keys, Cf, Meta};
    use crate::{Content, DedupMode, Outcome, SessionOptions, Store, UploadStart};

    /// Rewrites a store's metadata as format 1 wrote it: sessions keyed by
    /// their staged file's number, records without it.
    fn make_format_1(root: &std::path::Path) {
        let meta = Meta::open(&root.join("meta")).unwrap();
        let mut b = WriteBatch::default();
        for (key, value) in meta.scan_all(Cf::Uploads, &[]).unwrap() {
            let rec = UploadRecord::decode(&value).unwrap();
            let mut v1 = rec.encode();
            v1[0] = 1;
            v1.truncate(v1.len() - 8);
            let user = keys::u64_at(&key, 0).unwrap();
            meta.batch_delete(&mut b, Cf::Uploads, &key);
            let old_key = [user.to_be_bytes(), rec.file.to_be_bytes()].concat();
            meta.batch_put(&mut b, Cf::Uploads, &old_key, &v1);
        }
        meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &1u64.encode());
        meta.write(b).unwrap();
    }

    #[test]
    fn a_session_begun_under_format_1_keeps_its_bytes_under_a_fresh_random_id() {
        let dir = tempfile::tempdir().unwrap();
        let video = b"the first part, then the rest".to_vec();
        {
            let store = Store::open(dir.path()).unwrap();
            let ann = store.user("ann").unwrap();
            let album = ann.ensure_album("Videos").unwrap();
            let options = SessionOptions::new(album, "v.mp4", DedupMode::Hash);
            let UploadStart::Session(id) = ann.begin_upload(options).unwrap() else {
                panic!("new content needs its bytes")
            };
            ann.append(id, 0, &video[..15]).unwrap();
        }
        make_format_1(dir.path());

        let store = Store::open(dir.path()).unwrap();
        let ann = store.user("ann").unwrap();
        let sessions = ann.uploads().unwrap();
        assert_eq!(sessions.len(), 1);
        let (id, offset) = (sessions[0].id, sessions[0].offset);
        assert_eq!(offset, 15, "the acknowledged bytes are kept");
        ann.append(id, offset, &video[15..]).unwrap();
        let r = ann.finish(id).unwrap();
        assert_eq!(
            (r.outcome, ann.read(r.file_id).unwrap().to_vec()),
            (Outcome::Stored, video.clone())
        );
        drop((ann, store));
        // Migrated once: the next open finds format 2.
        let meta = Meta::open(&dir.path().join("meta")).unwrap();
        assert_eq!(meta.get::<u64>(Cf::Meta, keys::FORMAT).unwrap(), Some(2));
        drop(meta);
        let store = Store::open(dir.path()).unwrap();
        let ann = store.user("ann").unwrap();
        let again = ann.upload(
            ann.ensure_album("Videos").unwrap(),
            "v.mp4",
            Content::from(video),
            DedupMode::Hash,
        );
        assert_eq!(again.unwrap().outcome, Outcome::Skipped);
    }
}
