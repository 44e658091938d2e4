//! Verification: recompute every derived fact from the file records and
//! compare it with what the store keeps, and optionally re-hash every blob.
//!
//! The file records are the source of truth. Reference counts, usage
//! counters, album counters, membership keys, the duplicate indexes, the
//! trash index, GC candidates and segment accounting are all derived from
//! them, so each can be checked exactly. Checks read one RocksDB snapshot,
//! so uploads running meanwhile cannot cause false reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::blob::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::error::Result;
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::meta::records::{
    AlbumRecord, BlobRecord, DamageRecord, FileRecord, Place, SegmentRecord, UserBlobRecord, UserRecord,
};
use crate::meta::{decode, keys, Cf};
use crate::store::Store;

/// One file affected by a problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AffectedFile {
    /// Its owner.
    pub user: String,
    /// Its id.
    pub file_id: FileId,
    /// Its name.
    pub name: String,
}

/// One inconsistency or damage found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// A stable, machine-readable kind, such as `damaged-blob` or
    /// `refcount-mismatch`.
    pub kind: &'static str,
    /// What exactly is wrong.
    pub detail: String,
    /// The files whose bytes are affected, where that is known.
    pub files: Vec<AffectedFile>,
}

/// The result of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifyReport {
    /// True when no problem was found.
    pub ok: bool,
    /// Users checked.
    pub users: u64,
    /// File records checked.
    pub files: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// Segments checked.
    pub segments: u64,
    /// Blob bytes re-hashed (scrub only).
    pub scrubbed_bytes: u64,
    /// Everything found, in no particular order.
    pub problems: Vec<Problem>,
}

#[derive(Default)]
struct Expected {
    user: UserRecord,
    blobs: BTreeMap<ContentHash, UserBlobRecord>,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, kind: &'static str, detail: String) {
        self.problems.push(Problem {
            kind,
            detail,
            files: Vec::new(),
        });
    }

    /// Reports the differences between the keys a family should hold and
    /// the keys it holds.
    fn compare_sets(&mut self, what: &'static str, expected: &BTreeSet<Vec<u8>>, actual: &BTreeSet<Vec<u8>>) {
        for k in expected.difference(actual) {
            self.problem("missing-index-entry", format!("{what}: missing entry {}", hex(k)));
        }
        for k in actual.difference(expected) {
            self.problem("stray-index-entry", format!("{what}: entry {} matches no file", hex(k)));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// Checks the whole store. With `scrub`, also reads every blob and checks
    /// its hash. Problems are reported, not repaired; the one write is that a
    /// blob the scrub finds damaged is remembered as such (as a failed read
    /// does), so that the next upload of the content heals it.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert!(store.verify(true).unwrap().ok);
    /// ```
    pub fn verify(&self, scrub: bool) -> Result<VerifyReport> {
        let inner = &*self.inner;
        // Compaction moves blobs; holding the GC lock keeps segments still.
        let _no_gc = inner.gc_lock.lock();
        let snap = inner.meta.snapshot();
        let mut c = Checker { problems: Vec::new() };

        let mut names: HashMap<u64, String> = HashMap::new();
        snap.for_each(Cf::UserNames, |k, v| {
            names.insert(decode::<u64>(v)?, String::from_utf8_lossy(k).into_owned());
            Ok(())
        })?;
        let mut users: BTreeMap<u64, UserRecord> = BTreeMap::new();
        snap.for_each(Cf::Users, |k, v| {
            users.insert(keys::last_u64(k), decode(v)?);
            Ok(())
        })?;
        let mut albums: BTreeMap<(u64, u64), AlbumRecord> = BTreeMap::new();
        snap.for_each(Cf::Albums, |k, v| {
            albums.insert((keys::u64_at(k, 0).unwrap_or(0), keys::last_u64(k)), decode(v)?);
            Ok(())
        })?;
        let mut album_names = BTreeSet::new();
        snap.for_each(Cf::AlbumNames, |k, v| {
            album_names.insert(k.to_vec());
            let (uid, id) = (keys::u64_at(k, 0).unwrap_or(0), decode::<u64>(v)?);
            match albums.get(&(uid, id)) {
                Some(a) if keys::album_name(uid, &a.name) == k => {}
                _ => c.problem(
                    "stray-index-entry",
                    format!("album name {} names no album {id}", hex(k)),
                ),
            }
            Ok(())
        })?;
        for ((uid, id), a) in &albums {
            if !album_names.contains(&keys::album_name(*uid, &a.name)) {
                c.problem(
                    "missing-index-entry",
                    format!("album {id} of user {uid} has no name entry"),
                );
            }
        }

        // Everything derived from the file records.
        let mut expected: BTreeMap<u64, Expected> = BTreeMap::new();
        let mut blob_refs: BTreeMap<ContentHash, u64> = BTreeMap::new();
        let mut holders: HashMap<ContentHash, Vec<(u64, u64, String)>> = HashMap::new();
        let mut album_counts: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
        let (mut members, mut by_hash, mut by_name, mut trash) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut file_count = 0u64;
        snap.for_each(Cf::Files, |k, v| {
            let (uid, fid) = (keys::u64_at(k, 0).unwrap_or(0), keys::last_u64(k));
            let f: FileRecord = decode(v)?;
            file_count += 1;
            let e = expected.entry(uid).or_default();
            if fid >= users.get(&uid).map_or(0, |u| u.next_file) {
                c.problem(
                    "bad-id",
                    format!("file {fid} of user {uid} is not below the user's next file id"),
                );
            }
            e.user.logical_bytes += f.size;
            let ub = e.blobs.entry(f.hash).or_default();
            ub.refs += 1;
            *blob_refs.entry(f.hash).or_default() += 1;
            holders.entry(f.hash).or_default().push((uid, fid, f.name.clone()));
            match f.trashed_ms {
                None => {
                    ub.live += 1;
                    e.user.live_files += 1;
                    by_hash.insert(keys::by_hash(uid, &f.hash, fid));
                    by_name.insert(keys::by_name(uid, &f.hash, &f.name, fid));
                    for &a in &f.albums {
                        if !albums.contains_key(&(uid, a)) {
                            c.problem(
                                "dangling-reference",
                                format!("file {fid} of user {uid} is in missing album {a}"),
                            );
                        }
                        members.insert(keys::member(uid, a, fid));
                        let ac = album_counts.entry((uid, a)).or_default();
                        ac.0 += 1;
                        ac.1 += f.size;
                    }
                }
                Some(at) => {
                    e.user.trashed_files += 1;
                    trash.insert(keys::trash(uid, at, fid));
                }
            }
            Ok(())
        })?;

        let mut blobs: BTreeMap<ContentHash, BlobRecord> = BTreeMap::new();
        snap.for_each(Cf::Blobs, |k, v| {
            let hash = ContentHash::from_bytes(k.try_into().unwrap_or([0; 32]));
            blobs.insert(hash, decode(v)?);
            Ok(())
        })?;
        let mut segments: BTreeMap<u64, SegmentRecord> = BTreeMap::new();
        snap.for_each(Cf::Segments, |k, v| {
            segments.insert(keys::last_u64(k), decode(v)?);
            Ok(())
        })?;
        let mut gc = BTreeSet::new();
        snap.for_each(Cf::Gc, |k, _| {
            gc.insert(k.to_vec());
            Ok(())
        })?;

        // Blobs: reference counts, places, GC candidacy.
        let mut seg_live: BTreeMap<u64, u64> = BTreeMap::new();
        let affected = |hash: &ContentHash| -> Vec<AffectedFile> {
            holders
                .get(hash)
                .into_iter()
                .flatten()
                .map(|(uid, fid, name)| AffectedFile {
                    user: names.get(uid).cloned().unwrap_or_default(),
                    file_id: FileId(*fid),
                    name: name.clone(),
                })
                .collect()
        };
        for hash in blob_refs.keys() {
            if !blobs.contains_key(hash) {
                c.problems.push(Problem {
                    kind: "missing-blob",
                    detail: format!("blob {hash} is referenced but has no record"),
                    files: affected(hash),
                });
            }
        }
        let mut scrubbed = 0u64;
        for (hash, blob) in &blobs {
            let want = blob_refs.get(hash).copied().unwrap_or(0);
            if blob.refs != want {
                c.problem(
                    "refcount-mismatch",
                    format!("blob {hash} counts {} references, files hold {want}", blob.refs),
                );
            }
            let candidate = gc.contains(hash.as_bytes().as_slice());
            if blob.refs == 0 && !candidate {
                c.problem(
                    "leaked-blob",
                    format!("blob {hash} has no reference and is not a GC candidate"),
                );
            }
            if blob.refs > 0 && candidate {
                c.problem(
                    "stray-index-entry",
                    format!("blob {hash} is referenced but is a GC candidate"),
                );
            }
            if let Place::Segment(loc) = blob.place {
                *seg_live.entry(loc.segment).or_default() += loc.record_len();
                match segments.get(&loc.segment) {
                    None => c.problems.push(Problem {
                        kind: "damaged-blob",
                        detail: format!(
                            "blob {hash} is in segment {}, which the store does not have",
                            loc.segment
                        ),
                        files: affected(hash),
                    }),
                    Some(s) if loc.end() > s.committed_len => c.problems.push(Problem {
                        kind: "damaged-blob",
                        detail: format!("blob {hash} ends past the committed length of segment {}", loc.segment),
                        files: affected(hash),
                    }),
                    Some(_) => {}
                }
            }
            if scrub {
                match inner.read_blob(hash) {
                    Ok(b) => scrubbed += b.len() as u64,
                    Err(e) => c.problems.push(Problem {
                        kind: "damaged-blob",
                        detail: e.to_string(),
                        files: affected(hash),
                    }),
                }
            }
        }
        for k in &gc {
            let hash = ContentHash::from_bytes(k.as_slice().try_into().unwrap_or([0; 32]));
            if !blobs.contains_key(&hash) {
                c.problem("stray-index-entry", format!("GC candidate {hash} has no blob"));
            }
        }
        // GC drops a damage record with its blob, in the same commit.
        snap.for_each(Cf::Damaged, |k, v| {
            let hash = ContentHash::from_bytes(k.try_into().unwrap_or([0; 32]));
            decode::<DamageRecord>(v)?;
            if !blobs.contains_key(&hash) {
                c.problem("stray-index-entry", format!("damage record {hash} has no blob"));
            }
            Ok(())
        })?;

        // Segments: accounting and file lengths.
        for (id, s) in &segments {
            let want = seg_live.get(id).copied().unwrap_or(0);
            if s.live_bytes != want {
                c.problem(
                    "segment-accounting",
                    format!("segment {id} counts {} live bytes, blobs hold {want}", s.live_bytes),
                );
            }
            match inner.blobs.file_len(*id) {
                None => c.problem("damaged-segment", format!("segment {id} file is missing")),
                Some(len) if len < s.committed_len => c.problem(
                    "damaged-segment",
                    format!(
                        "segment {id} file is {len} bytes, shorter than its committed {}",
                        s.committed_len
                    ),
                ),
                Some(_) if scrub => {
                    // Records vouch for themselves (each names its segment
                    // and offset and is hashed), so their blobs stay
                    // readable; the header is still damage to report.
                    let header = inner.blobs.segment_bytes(*id, SEGMENT_HEADER_LEN as u64);
                    let fine = header.is_ok_and(|h| SegmentHeader::decode(&h).is_ok_and(|h| h.id == *id));
                    if !fine {
                        c.problem("damaged-segment", format!("segment {id} has a damaged header"));
                    }
                }
                Some(_) => {}
            }
        }
        for id in seg_live.keys() {
            if !segments.contains_key(id) {
                c.problem(
                    "damaged-segment",
                    format!("blobs point into segment {id}, which has no record"),
                );
            }
        }

        // Per-user counters and per-user blob counts.
        let mut actual_ub: BTreeMap<(u64, ContentHash), UserBlobRecord> = BTreeMap::new();
        snap.for_each(Cf::UserBlobs, |k, v| {
            let hash = ContentHash::from_bytes(k.get(8..40).and_then(|h| h.try_into().ok()).unwrap_or([0; 32]));
            actual_ub.insert((keys::u64_at(k, 0).unwrap_or(0), hash), decode(v)?);
            Ok(())
        })?;
        for (uid, e) in &mut expected {
            for (hash, ub) in &e.blobs {
                let size = blobs.get(hash).map_or(0, |b| b.size);
                e.user.unique_bytes += size;
                e.user.blobs += 1;
                if ub.live == 0 {
                    e.user.trash_bytes += size;
                }
                if actual_ub.remove(&(*uid, *hash)) != Some(*ub) {
                    c.problem(
                        "refcount-mismatch",
                        format!("user {uid}'s count of blob {hash} differs from the files"),
                    );
                }
            }
        }
        for (uid, hash) in actual_ub.keys() {
            c.problem(
                "stray-index-entry",
                format!("user {uid} counts blob {hash}, which no file of theirs holds"),
            );
        }
        for (uid, rec) in &users {
            let want = expected.remove(uid).unwrap_or_default().user;
            let got = (
                rec.unique_bytes,
                rec.logical_bytes,
                rec.live_files,
                rec.trashed_files,
                rec.blobs,
                rec.trash_bytes,
            );
            let exp = (
                want.unique_bytes,
                want.logical_bytes,
                want.live_files,
                want.trashed_files,
                want.blobs,
                want.trash_bytes,
            );
            if got != exp {
                c.problem(
                    "usage-mismatch",
                    format!("user {uid} usage (unique, logical, files, trashed, blobs, trash) is {got:?}, files give {exp:?}"),
                );
            }
            if !names.contains_key(uid) {
                c.problem("missing-index-entry", format!("user {uid} has no name"));
            }
        }
        for uid in expected.keys() {
            c.problem(
                "dangling-reference",
                format!("files belong to user {uid}, who has no record"),
            );
        }
        for ((uid, a), rec) in &albums {
            let (files, bytes) = album_counts.remove(&(*uid, *a)).unwrap_or_default();
            if (rec.files, rec.bytes) != (files, bytes) {
                c.problem(
                    "album-mismatch",
                    format!(
                        "album {a} of user {uid} counts ({}, {}) files and bytes, members give ({files}, {bytes})",
                        rec.files, rec.bytes
                    ),
                );
            }
        }

        // Index families against what the files imply.
        for (cf, what, want) in [
            (Cf::Members, "album membership", &members),
            (Cf::ByHash, "hash index", &by_hash),
            (Cf::ByName, "name index", &by_name),
            (Cf::Trash, "trash index", &trash),
        ] {
            let mut got = BTreeSet::new();
            snap.for_each(cf, |k, _| {
                got.insert(k.to_vec());
                Ok(())
            })?;
            c.compare_sets(what, want, &got);
        }

        Ok(VerifyReport {
            ok: c.problems.is_empty(),
            users: users.len() as u64,
            files: file_count,
            blobs: blobs.len() as u64,
            segments: segments.len() as u64,
            scrubbed_bytes: scrubbed,
            problems: c.problems,
        })
    }
}
