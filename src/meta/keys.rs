//! Key encodings of the metadata column families.
//!
//! Integers are big-endian so that RocksDB's byte order is numeric order:
//! a user's files iterate oldest first, the trash iterates by deletion time.
//! Every key that belongs to a user starts with the user's id, so a user's
//! data is one contiguous range of each family.

use crate::hash::ContentHash;
use crate::ids::UploadId;
use crate::names::{comparable, FileName};

pub(crate) const FORMAT: &[u8] = b"format";
/// The store's bucket, `s3://BUCKET/PREFIX` (UTF-8), where its new
/// segments go; absent for a store whose blobs are all on the local disk.
/// Never a credential. Each segment's own site is in its record.
pub(crate) const BLOBS: &[u8] = b"blobs";
/// Present (`disk`) while a store that has a bucket sends its new segments
/// to the local disk: a migration of its blobs to the disk is under way,
/// and the bucket is let go once no segment is left in it.
pub(crate) const BLOBS_WRITES: &[u8] = b"blobs_writes";
/// The random id the store wrote as `PREFIX/keepsake-store` when it
/// claimed its bucket prefix, checked at every open: two stores never share
/// a prefix (each would take the other's packs for orphans).
#[cfg(feature = "s3")]
pub(crate) const BLOBS_CLAIM: &[u8] = b"blobs_claim";
pub(crate) const NEXT_USER: &[u8] = b"next_user";
/// The next upload session id: global, so that staged files are named by id
/// alone.
pub(crate) const NEXT_UPLOAD: &[u8] = b"next_upload";

pub(crate) fn u64_key(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `user | album`, in `albums`; `user | album` is also the prefix of that
/// album's `members` keys.
pub(crate) fn album(user: u64, album: u64) -> Vec<u8> {
    join(&[&user.to_be_bytes(), &album.to_be_bytes()])
}

/// `user | name in NFC`, in `album_names`: names that print alike are one.
pub(crate) fn album_name(user: u64, name: &str) -> Vec<u8> {
    join(&[&user.to_be_bytes(), comparable(name).as_bytes()])
}

/// `user | file`, in `files`.
pub(crate) fn file(user: u64, file: u64) -> Vec<u8> {
    join(&[&user.to_be_bytes(), &file.to_be_bytes()])
}

/// `user | album | file`, in `members`.
pub(crate) fn member(user: u64, album: u64, file: u64) -> Vec<u8> {
    join(&[&user.to_be_bytes(), &album.to_be_bytes(), &file.to_be_bytes()])
}

/// `user | hash`: in `user_blobs` the whole key, in `by_name` the prefix of
/// the user's live files with that content.
pub(crate) fn user_hash(user: u64, hash: &ContentHash) -> Vec<u8> {
    join(&[&user.to_be_bytes(), hash.as_bytes()])
}

/// `user | hash | name length (u16) | name in NFC`: the prefix of `by_name`
/// keys of files with this name (as the duplicate rules compare names) and
/// content. The length keeps one name from being a prefix of another.
pub(crate) fn by_name_prefix(user: u64, hash: &ContentHash, name: &FileName) -> Vec<u8> {
    let name = name.comparable();
    // NFC can lengthen a name, at most threefold: 765 bytes.
    let len = u16::try_from(name.len()).expect("names are at most 255 bytes before NFC");
    join(&[&user.to_be_bytes(), hash.as_bytes(), &len.to_be_bytes(), &name])
}

/// `user | hash | name length | name | file`, in `by_name`.
pub(crate) fn by_name(user: u64, hash: &ContentHash, name: &FileName, file: u64) -> Vec<u8> {
    let mut k = by_name_prefix(user, hash, name);
    k.extend_from_slice(&file.to_be_bytes());
    k
}

/// `user | upload id (16 bytes)`, in `uploads`: a user's sessions are one
/// range, and another user's id is simply not found.
pub(crate) fn upload(user: u64, id: &UploadId) -> Vec<u8> {
    join(&[&user.to_be_bytes(), id.as_bytes()])
}

/// The upload id of an `uploads` key.
pub(crate) fn upload_id(key: &[u8]) -> Option<UploadId> {
    Some(UploadId::from_bytes(key.get(8..24)?.try_into().ok()?))
}

/// `user | album | source path bytes`, in `sources`. A folder's records are
/// the range under `source(user, album, folder)` followed by `/`.
pub(crate) fn source(user: u64, album: u64, path: &[u8]) -> Vec<u8> {
    join(&[&user.to_be_bytes(), &album.to_be_bytes(), path])
}

/// `user | trashed at (ms) | file`, in `trash`.
pub(crate) fn trash(user: u64, at_ms: u64, file: u64) -> Vec<u8> {
    join(&[&user.to_be_bytes(), &at_ms.to_be_bytes(), &file.to_be_bytes()])
}

/// The trailing big-endian u64 of a key (the file id of `members`,
/// `by_name` and `trash` keys).
pub(crate) fn last_u64(key: &[u8]) -> u64 {
    let tail = &key[key.len().saturating_sub(8)..];
    let mut b = [0u8; 8];
    b[8 - tail.len()..].copy_from_slice(tail);
    u64::from_be_bytes(b)
}

/// The big-endian u64 at `at` in a key, or `None` if the key is too short.
pub(crate) fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_is_never_the_prefix_of_another() {
        let h = ContentHash::of(b"x");
        let a = by_name(1, &h, &"IMG_1.JPG".into(), 5);
        assert!(!a.starts_with(&by_name_prefix(1, &h, &"IMG_1".into())));
        assert!(a.starts_with(&by_name_prefix(1, &h, &"IMG_1.JPG".into())));
        assert_eq!(last_u64(&a), 5);
    }

    #[test]
    fn keys_order_numerically() {
        assert!(file(1, 2) < file(1, 256));
        assert!(file(1, u64::MAX) < file(2, 0));
        assert!(trash(1, 10, 9) < trash(1, 11, 1));
    }
}
