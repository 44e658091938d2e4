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
//!
//! Format 2 → 3: names are compared in Unicode NFC. The `by_name` keys of
//! live files and the `album_names` keys held the names' bytes as given; a
//! name that is not in NFC (typed on macOS) gets its key in NFC. Two albums
//! of one user whose names were told apart only by normalisation are one
//! name now: the later keeps its files and is renamed `name (album N)`,
//! with `N` its id, so that none is lost and the user sees which.
//!
//! Format 3 → 4: the `by_hash` index (`user | hash | file`, one key per
//! live file) is gone. Every question it answered (a user's files with one
//! content, for the mobile rule, `find_by_hash` and the duplicate groups) is
//! a prefix scan of `by_name`, whose keys begin with the same user and
//! hash. Nothing is rewritten: the step marks format 4, and the open then
//! drops the family (a crash between the two drops it at the next open).
//!
//! Format 4 → 5: the `outboards` family holds the BLAKE3 outboards of
//! blobs larger than 16 MiB, so that a range of one is checked without
//! hashing the rest. Nothing is rewritten: the open creates the family, the
//! step marks format 5, and a blob stored before gets its outboard from the
//! first read that checks it whole (`store::read`).
//!
//! Format 5 → 6: a store may keep its sealed segments in a bucket, which
//! the `blobs` key of the `meta` family names. A store without the key
//! keeps them on local disk, as every store of format 5 did, so nothing is
//! rewritten: the step marks format 6, and an older keepsake (which would
//! find every segment of a bucket's store missing) refuses it.
//!
//! Format 6 → 7: each segment record names its site, the local disk or the
//! bucket, so that a migration can move a store's segments from one to the
//! other one at a time (`Store::migrate_blobs`). A record without a site
//! means the local disk: a store without the `blobs` key is format 7 as it
//! is, and a bucket's store gets every segment record rewritten with the
//! bucket's site, in the batch that marks format 7.

use rocksdb::WriteBatch;

use super::keys;
use super::records::{AlbumRecord, FileRecord, Record, SegmentRecord, UploadRecord};
use super::{Cf, Meta};
use crate::blob::Site;
use crate::error::OpenError;
use crate::ids::UploadId;
use crate::names::MAX_NAME_BYTES;

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

/// Marks the metadata format 4; the open drops `by_hash` after it.
pub(super) fn from_v3(meta: &Meta) -> Result<(), OpenError> {
    let mut b = WriteBatch::default();
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &4u64.encode());
    meta.write(b)
        .map_err(|e| OpenError::Corrupt(format!("migrating from format 3: {e}")))
}

/// Names the bucket as the site of every segment of a bucket's store, and
/// marks the metadata format 7, in one batch.
pub(super) fn from_v6(meta: &Meta) -> Result<(), OpenError> {
    let corrupt = |what: &str| OpenError::Corrupt(format!("migrating from format 6: {what}"));
    let mut b = WriteBatch::default();
    if meta
        .get_raw(Cf::Meta, keys::BLOBS)
        .map_err(|e| corrupt(&e.to_string()))?
        .is_some()
    {
        for (key, value) in meta.scan_all(Cf::Segments, &[]).map_err(|e| corrupt(&e.to_string()))? {
            let rec = SegmentRecord::decode(&value).map_err(|e| corrupt(&e.to_string()))?;
            let rec = SegmentRecord {
                site: Site::Bucket,
                ..rec
            };
            meta.batch_put(&mut b, Cf::Segments, &key, &rec.encode());
        }
    }
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &7u64.encode());
    meta.write(b).map_err(|e| corrupt(&e.to_string()))
}

/// Marks the metadata format 5; the open has made the `outboards` family.
pub(super) fn from_v4(meta: &Meta) -> Result<(), OpenError> {
    let mut b = WriteBatch::default();
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &5u64.encode());
    meta.write(b)
        .map_err(|e| OpenError::Corrupt(format!("migrating from format 4: {e}")))
}

/// Marks the metadata format 6: nothing else changes.
pub(super) fn from_v5(meta: &Meta) -> Result<(), OpenError> {
    let mut b = WriteBatch::default();
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &6u64.encode());
    meta.write(b)
        .map_err(|e| OpenError::Corrupt(format!("migrating from format 5: {e}")))
}

/// Rewrites the name keys that NFC changes, and marks the metadata format
/// 3, in one batch.
pub(super) fn from_v2(meta: &Meta) -> Result<(), OpenError> {
    let corrupt = |what: &str| OpenError::Corrupt(format!("migrating from format 2: {what}"));
    let scan = |cf| meta.scan_all(cf, &[]).map_err(|e| corrupt(&e.to_string()));
    let mut b = WriteBatch::default();
    for (key, value) in scan(Cf::Files)? {
        let (Some(user), Some(file)) = (keys::u64_at(&key, 0), keys::u64_at(&key, 8)) else {
            return Err(corrupt("a file key is not user and id"));
        };
        let rec = FileRecord::decode(&value).map_err(|e| corrupt(&e.to_string()))?;
        if rec.trashed_ms.is_some() {
            continue;
        }
        let new = keys::by_name(user, &rec.hash, &rec.name, file);
        let raw = rec.name.as_bytes();
        let len = u16::try_from(raw.len()).map_err(|_| corrupt("a file name is too long"))?;
        let old = [
            &user.to_be_bytes()[..],
            rec.hash.as_bytes(),
            &len.to_be_bytes(),
            raw,
            &file.to_be_bytes(),
        ]
        .concat();
        if old != new {
            meta.batch_delete(&mut b, Cf::ByName, &old);
            meta.batch_put(&mut b, Cf::ByName, &new, &[]);
        }
    }
    let mut taken = std::collections::HashSet::new();
    let mut renames = Vec::new();
    for (key, value) in scan(Cf::Albums)? {
        let (Some(user), Some(album)) = (keys::u64_at(&key, 0), keys::u64_at(&key, 8)) else {
            return Err(corrupt("an album key is not user and id"));
        };
        let rec = AlbumRecord::decode(&value).map_err(|e| corrupt(&e.to_string()))?;
        let old = [&user.to_be_bytes()[..], rec.name.as_bytes()].concat();
        let new = keys::album_name(user, &rec.name);
        if taken.insert(new.clone()) {
            if old != new {
                meta.batch_delete(&mut b, Cf::AlbumNames, &old);
                meta.batch_put(&mut b, Cf::AlbumNames, &new, &album.encode());
            }
        } else {
            renames.push((key, rec, old, user, album));
        }
    }
    for (key, mut rec, old, user, album) in renames {
        rec.name = free_name(&rec.name, album, |n| !taken.contains(&keys::album_name(user, n)));
        let new = keys::album_name(user, &rec.name);
        taken.insert(new.clone());
        // Its old key may be the very key its twin now holds.
        if !taken.contains(&old) {
            meta.batch_delete(&mut b, Cf::AlbumNames, &old);
        }
        meta.batch_put(&mut b, Cf::AlbumNames, &new, &album.encode());
        meta.batch_put(&mut b, Cf::Albums, &key, &rec.encode());
    }
    meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &3u64.encode());
    meta.write(b).map_err(|e| corrupt(&e.to_string()))
}

/// A name for album `album`, whose `name` its twin keeps: `name (album N)`,
/// then `name (album N, 2)` and on until `free` says it is free; the name
/// is shortened, at a character boundary, so that the whole stays within
/// [`MAX_NAME_BYTES`].
fn free_name(name: &str, album: u64, free: impl Fn(&str) -> bool) -> String {
    (1u64..)
        .map(|n| {
            let tail = match n {
                1 => format!(" (album {album})"),
                n => format!(" (album {album}, {n})"),
            };
            let mut head = name.len().min(MAX_NAME_BYTES.saturating_sub(tail.len()));
            while !name.is_char_boundary(head) {
                head -= 1;
            }
            format!("{}{tail}", name[..head].trim_end())
        })
        .find(|n| free(n))
        .expect("the counter finds a free name")
}

#[cfg(test)]
mod tests {
    use rocksdb::WriteBatch;

    use crate::meta::records::{AlbumRecord, Record, UploadRecord};
    use crate::meta::{keys, Cf, Meta, DEFAULT_CACHE, FORMAT_VERSION};
    use crate::{Content, DedupMode, Outcome, SessionOptions, Store, UploadStart};

    /// Rewrites a store's metadata as format 1 wrote it: sessions keyed by
    /// their staged file's number, records without it.
    fn make_format_1(root: &std::path::Path) {
        let meta = Meta::open(&root.join("meta"), DEFAULT_CACHE).unwrap();
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
        // Migrated once, through formats 2, 3 and 4: the next open finds
        // this build's format.
        let meta = Meta::open(&dir.path().join("meta"), DEFAULT_CACHE).unwrap();
        assert_eq!(meta.get::<u64>(Cf::Meta, keys::FORMAT).unwrap(), Some(FORMAT_VERSION));
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

    /// Format 6 named no segment's site: a bucket's store gets the bucket's
    /// for every segment, a local store's records read as they are.
    #[test]
    fn format_6_segment_records_get_the_site_of_their_stores_home() {
        use crate::blob::Site;
        use crate::meta::records::SegmentRecord;
        for (bucket, site) in [(true, Site::Bucket), (false, Site::Disk)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("meta");
            let key = keys::u64_key(3);
            {
                let meta = Meta::open(&path, DEFAULT_CACHE).unwrap();
                let mut b = WriteBatch::default();
                if bucket {
                    meta.batch_put(&mut b, Cf::Meta, keys::BLOBS, b"s3://b/p");
                }
                let old = SegmentRecord {
                    committed_len: 100,
                    live_bytes: 60,
                    site: Site::Disk,
                };
                meta.batch_put(&mut b, Cf::Segments, &key, &old.encode());
                meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &6u64.encode());
                meta.write(b).unwrap();
            }
            let meta = Meta::open(&path, DEFAULT_CACHE).unwrap();
            let rec = meta.get::<SegmentRecord>(Cf::Segments, &key).unwrap().unwrap();
            assert_eq!((rec.committed_len, rec.live_bytes, rec.site), (100, 60, site));
            assert_eq!(meta.get::<u64>(Cf::Meta, keys::FORMAT).unwrap(), Some(FORMAT_VERSION));
        }
    }

    /// A store as format 2 wrote it, with names not in NFC: a file named on
    /// macOS (NFD) and two albums whose names differ only by normalisation.
    #[test]
    fn names_not_in_nfc_get_nfc_keys_and_an_album_that_became_a_twin_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let (nfd, nfc) = ("Cafe\u{301}", "Caf\u{e9}");
        let photo = b"the same photo".to_vec();
        let (a1, a2, f) = {
            let store = Store::open(dir.path()).unwrap();
            let ann = store.user("ann").unwrap();
            let a1 = ann.ensure_album(nfd).unwrap();
            let a2 = ann.ensure_album("placeholder").unwrap();
            let name = format!("{nfd}.jpg");
            let f = ann.upload(a1, name.as_str(), Content::from(photo.clone()), DedupMode::NameAndHash);
            (a1, a2, f.unwrap().file_id)
        };
        {
            // Format 2: keys of the names' bytes as given; the second album
            // renamed to the NFC twin of the first.
            let meta = Meta::open(&dir.path().join("meta"), DEFAULT_CACHE).unwrap();
            let mut b = WriteBatch::default();
            let user = 1u64.to_be_bytes();
            for (k, _) in meta.scan_all(Cf::ByName, &[]).unwrap() {
                meta.batch_delete(&mut b, Cf::ByName, &k);
                let name = format!("{nfd}.jpg");
                let len = (name.len() as u16).to_be_bytes();
                let raw = [&k[..40], &len, name.as_bytes(), &f.0.to_be_bytes()].concat();
                meta.batch_put(&mut b, Cf::ByName, &raw, &[]);
            }
            for (k, _) in meta.scan_all(Cf::AlbumNames, &[]).unwrap() {
                meta.batch_delete(&mut b, Cf::AlbumNames, &k);
            }
            meta.batch_put(
                &mut b,
                Cf::AlbumNames,
                &[&user, nfd.as_bytes()].concat(),
                &a1.0.encode(),
            );
            meta.batch_put(
                &mut b,
                Cf::AlbumNames,
                &[&user, nfc.as_bytes()].concat(),
                &a2.0.encode(),
            );
            let key = keys::album(1, a2.0);
            let mut rec = meta.get::<AlbumRecord>(Cf::Albums, &key).unwrap().unwrap();
            rec.name = nfc.to_string();
            meta.batch_put(&mut b, Cf::Albums, &key, &rec.encode());
            meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &2u64.encode());
            meta.write(b).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let ann = store.user("ann").unwrap();
        let again = ann.upload(a1, format!("{nfc}.jpg"), Content::from(photo), DedupMode::NameAndHash);
        assert_eq!(again.unwrap().outcome, Outcome::Skipped, "the NFC name is the NFD one");
        assert_eq!(
            ann.find_album(nfc).unwrap().unwrap().id,
            a1,
            "the older album keeps the name"
        );
        let renamed = ann.albums().unwrap().into_iter().find(|a| a.id == a2).unwrap();
        assert_eq!(renamed.name, format!("{nfc} (album {})", a2.0));
        assert_eq!(
            ann.file(f).unwrap().name,
            format!("{nfd}.jpg"),
            "the name is kept as given"
        );
        let report = store.verify(false).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
    }

    #[test]
    fn a_twin_gets_a_free_name_within_the_length_limit() {
        let long = "\u{e9}".repeat(127);
        let n = super::free_name(&long, 7, |_| true);
        assert!(
            n.len() <= crate::names::MAX_NAME_BYTES && n.ends_with(" (album 7)"),
            "{n}"
        );
        assert_eq!(
            super::free_name("Trip", 7, |n| n != "Trip (album 7)"),
            "Trip (album 7, 2)"
        );
    }
}
