//! Verification: recompute every derived fact from the file records and
//! compare it with what the store keeps, and optionally re-hash every blob.
//!
//! The file records are the source of truth. Reference counts, usage
//! counters, album counters, membership keys, the duplicate index, the
//! trash index, GC candidates and segment accounting are all derived from
//! them, so each can be checked exactly. Checks read one RocksDB snapshot,
//! so uploads running meanwhile cannot cause false reports.
//!
//! The recomputation (a [`Survey`]) attaches to each problem it can the
//! write that would make the derived record agree with the file records;
//! `verify` only reports, `repair.rs` applies those writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use crate::blob::Location;
use crate::error::{Result, StorageError};
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::meta::records::{
    AlbumRecord, BlobRecord, DamageRecord, FileRecord, Place, Record, SegmentRecord, UserBlobRecord, UserRecord,
};
use crate::meta::txn::Txn;
use crate::meta::{decode, keys, Cf, Snapshot};
use crate::names::FileName;
use crate::store::{Inner, Store};

/// One file affected by a problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AffectedFile {
    /// Its owner.
    pub user: String,
    /// Its id.
    pub file_id: FileId,
    /// Its name.
    pub name: FileName,
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

/// A write that makes one derived record agree with the file records; a
/// `value` of `None` deletes the key.
pub(crate) struct Fix {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A problem, with the write that repairs it when the file records say what
/// the right value is (`None` for damage and for facts they cannot rebuild).
pub(crate) struct Finding {
    pub problem: Problem,
    pub fix: Option<Fix>,
}

/// A visitor of one column family's entries, key and value.
pub(crate) type Visit<'f> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'f;

/// A visitor that may stop the scan it is given entries by.
pub(crate) type Step<'f> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'f;

/// Where a survey reads the metadata: a snapshot (`verify`) or the
/// transaction of a repair, which must see its own earlier fixes.
pub(crate) trait Source {
    /// Calls `f` with each entry of `cf` under `prefix` from key `start` on,
    /// in key order, until `f` breaks.
    fn scan_from(&self, cf: Cf, prefix: &[u8], start: &[u8], f: &mut Step<'_>) -> Result<()>;

    /// Calls `f` with each entry of `cf` whose key starts with `prefix`.
    fn each_under(&self, cf: Cf, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        self.scan_from(cf, prefix, prefix, &mut |k, v| {
            f(k, v)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Calls `f` with each entry of `cf`.
    fn each(&self, cf: Cf, f: &mut Visit<'_>) -> Result<()> {
        self.each_under(cf, &[], f)
    }

    /// About how many keys `cf` holds (see [`Meta::estimated_keys`]).
    fn estimated_keys(&self, cf: Cf) -> u64;
}

impl Source for Snapshot<'_> {
    fn scan_from(&self, cf: Cf, prefix: &[u8], start: &[u8], f: &mut Step<'_>) -> Result<()> {
        Snapshot::scan_from(self, cf, prefix, start, f)
    }

    fn estimated_keys(&self, cf: Cf) -> u64 {
        self.meta().estimated_keys(cf)
    }
}

impl Source for Txn<'_> {
    fn scan_from(&self, cf: Cf, prefix: &[u8], start: &[u8], f: &mut Step<'_>) -> Result<()> {
        Txn::scan_from(self, cf, prefix, start, f)
    }

    fn estimated_keys(&self, cf: Cf) -> u64 {
        Txn::estimated_keys(self, cf)
    }
}

/// The users whose ids begin keys of `cf`, found with one seek per user
/// rather than a pass over every key. Keys too short to begin with a user
/// id go to `short`.
fn owners(src: &impl Source, cf: Cf, short: &mut Vec<Vec<u8>>) -> Result<Vec<u64>> {
    let mut found = Vec::new();
    let mut start = Vec::new();
    loop {
        let mut next = None;
        src.scan_from(cf, &[], &start, &mut |k, _| {
            next = Some(k.to_vec());
            Ok(ControlFlow::Break(()))
        })?;
        let Some(key) = next else {
            return Ok(found);
        };
        match keys::u64_at(&key, 0) {
            Some(uid) => {
                found.push(uid);
                match uid.checked_add(1) {
                    Some(after) => start = keys::u64_key(after),
                    None => return Ok(found),
                }
            }
            None => {
                // The next key after this one.
                start = [&key[..], &[0]].concat();
                short.push(key);
            }
        }
    }
}

/// Which files hold each content of interest (blobs found lost or
/// damaged), to name the files a problem affects. Only those contents are
/// collected, by a pass over the file records made when there are any:
/// holding every file's name for the rare problem made a survey's memory
/// grow with the library.
#[derive(Default)]
struct Holders {
    names: HashMap<u64, String>,
    files: HashMap<ContentHash, Vec<(u64, u64, FileName)>>,
}

impl Holders {
    /// Adds the holders of each content in `wanted`.
    fn collect(&mut self, src: &impl Source, wanted: &HashSet<ContentHash>) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        src.each(Cf::Files, &mut |k, v| {
            let f: FileRecord = decode(v)?;
            if wanted.contains(&f.hash) {
                let (uid, fid) = (keys::u64_at(k, 0).unwrap_or(0), keys::last_u64(k));
                self.files.entry(f.hash).or_default().push((uid, fid, f.name));
            }
            Ok(())
        })
    }

    fn affected(&self, hash: &ContentHash) -> Vec<AffectedFile> {
        self.files
            .get(hash)
            .into_iter()
            .flatten()
            .map(|(uid, fid, name)| AffectedFile {
                user: self.names.get(uid).cloned().unwrap_or_default(),
                file_id: FileId(*fid),
                name: name.clone(),
            })
            .collect()
    }
}

/// Everything a survey found, and the blob records it read.
pub(crate) struct Survey {
    /// Every problem except missing blobs, each with its fix where there is
    /// one.
    pub findings: Vec<Finding>,
    /// Blobs that file records refer to but that have no record, with the
    /// number of file records referring to each.
    pub missing_blobs: BTreeMap<ContentHash, u64>,
    /// Blob records surveyed.
    pub blobs: u64,
    holders: Holders,
    users: u64,
    files: u64,
    segments: u64,
}

impl Survey {
    /// The files whose bytes are blob `hash`, one the survey found missing
    /// or misplaced (the only ones it collects holders for).
    pub(crate) fn affected(&self, hash: &ContentHash) -> Vec<AffectedFile> {
        self.holders.affected(hash)
    }

    /// A problem of `kind` for each missing blob, naming the files it
    /// affects; `more` ends the detail.
    pub(crate) fn missing_blob_problems(&self, kind: &'static str, more: &str) -> Vec<Problem> {
        self.missing_blobs
            .keys()
            .map(|hash| Problem {
                kind,
                detail: format!("blob {hash} is referenced but has no record{more}"),
                files: self.affected(hash),
            })
            .collect()
    }

    /// Reads every blob the store has now and checks its hash, returning
    /// the bytes read and a `damaged-blob` problem for each blob that
    /// fails. A failing read records the damage (see `store/damage.rs`), so
    /// that the next upload of the content heals it.
    ///
    /// The blob records are read in batches of [`SCRUB_BATCH`], each batch
    /// in the order of its places, so that memory stays bounded and the
    /// segments are read mostly forwards; each record's place is read from
    /// the record the scan gives, not looked up again. A batch is split
    /// into one contiguous run per core, hashed side by side: hashing is
    /// what a scrub's time is made of. The caller holds the GC lock:
    /// nothing else moves or removes a blob.
    pub(crate) fn scrub(&self, inner: &Inner) -> Result<(u64, Vec<Problem>)> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut scrubbed = 0u64;
        let mut failed = Vec::new();
        let mut batch: Vec<(Location, ContentHash)> = Vec::with_capacity(SCRUB_BATCH);
        let run = |batch: &mut Vec<(Location, ContentHash)>, scrubbed: &mut u64, failed: &mut Vec<_>| {
            batch.sort_unstable_by_key(|(loc, _)| (loc.segment, loc.offset));
            let per_thread = batch.len().div_ceil(threads).max(1);
            let results: Vec<(u64, Vec<(ContentHash, String)>)> = std::thread::scope(|scope| {
                let workers: Vec<_> = batch
                    .chunks(per_thread)
                    .map(|chunk| {
                        scope.spawn(move || {
                            let (mut bytes, mut bad) = (0, Vec::new());
                            for &(loc, hash) in chunk {
                                check_copy(inner, hash, &Place::Segment(loc), &mut bytes, &mut bad);
                            }
                            (bytes, bad)
                        })
                    })
                    .collect();
                // A worker that panicked checked nothing it can vouch for:
                // the scrub fails as loudly as a read on this thread would.
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            });
            for (bytes, bad) in results {
                *scrubbed += bytes;
                failed.extend(bad);
            }
            batch.clear();
        };
        inner.meta.snapshot().for_each_under(Cf::Blobs, &[], |k, v| {
            let blob: BlobRecord = decode(v)?;
            match blob.place {
                Place::Segment(loc) => batch.push((loc, hash_of(k))),
                Place::Inline(_) => check_copy(inner, hash_of(k), &blob.place, &mut scrubbed, &mut failed),
            }
            if batch.len() == SCRUB_BATCH {
                run(&mut batch, &mut scrubbed, &mut failed);
            }
            Ok(())
        })?;
        run(&mut batch, &mut scrubbed, &mut failed);
        let mut holders = Holders {
            names: self.holders.names.clone(),
            files: HashMap::new(),
        };
        holders.collect(&inner.meta.snapshot(), &failed.iter().map(|(h, _)| *h).collect())?;
        let damaged = failed
            .into_iter()
            .map(|(hash, detail)| Problem {
                kind: "damaged-blob",
                detail,
                files: holders.affected(&hash),
            })
            .collect();
        Ok((scrubbed, damaged))
    }
}

/// Checks the copy of `hash` at `place`, adding its length to `bytes` or
/// the failure to `bad`.
fn check_copy(inner: &Inner, hash: ContentHash, place: &Place, bytes: &mut u64, bad: &mut Vec<(ContentHash, String)>) {
    match inner.check_copy(&hash, place) {
        Ok(len) => *bytes += len,
        Err(e) => bad.push((hash, e.to_string())),
    }
}

/// How many blob records a scrub sorts by place at a time.
const SCRUB_BATCH: usize = 1 << 16;

#[derive(Default)]
struct Checker {
    findings: Vec<Finding>,
}

impl Checker {
    /// A problem the file records cannot repair.
    fn problem(&mut self, kind: &'static str, detail: String) {
        self.findings.push(Finding {
            problem: Problem {
                kind,
                detail,
                files: Vec::new(),
            },
            fix: None,
        });
    }

    /// A problem that writing `value` (or deleting, for `None`) at `key`
    /// repairs.
    fn fixable(&mut self, kind: &'static str, detail: String, cf: Cf, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.findings.push(Finding {
            problem: Problem {
                kind,
                detail,
                files: Vec::new(),
            },
            fix: Some(Fix { cf, key, value }),
        });
    }

    /// A key of `cf` that cannot be what the family holds (`what`): no
    /// file implies it, so it goes.
    fn malformed(&mut self, what: &str, cf: Cf, key: &[u8]) {
        let detail = format!("{what} key {} names no content", hex(key));
        self.fixable("stray-index-entry", detail, cf, key.to_vec(), None);
    }

    fn damaged(&mut self, detail: String, files: Vec<AffectedFile>) {
        self.findings.push(Finding {
            problem: Problem {
                kind: "damaged-blob",
                detail,
                files,
            },
            fix: None,
        });
    }

    /// Reports the differences between the keys a family should hold and
    /// the keys it holds: index entries carry no value, so adding the
    /// missing ones and deleting the stray ones rebuilds the family.
    fn compare_sets(&mut self, what: &'static str, cf: Cf, expected: &BTreeSet<Vec<u8>>, actual: &BTreeSet<Vec<u8>>) {
        for k in expected.difference(actual) {
            let detail = format!("{what}: missing entry {}", hex(k));
            self.fixable("missing-index-entry", detail, cf, k.clone(), Some(Vec::new()));
        }
        for k in actual.difference(expected) {
            let detail = format!("{what}: entry {} matches no file", hex(k));
            self.fixable("stray-index-entry", detail, cf, k.clone(), None);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every record of `cf`, decoded, under the key `key_of` makes of its raw
/// key.
fn records<K: Ord, R: Record>(src: &impl Source, cf: Cf, key_of: impl Fn(&[u8]) -> K) -> Result<BTreeMap<K, R>> {
    let mut out = BTreeMap::new();
    src.each(cf, &mut |k, v| {
        out.insert(key_of(k), decode(v)?);
        Ok(())
    })?;
    Ok(out)
}

/// The index families derived from the file records, as reports name them.
const INDEXES: [(Cf, &str); 3] = [
    (Cf::Members, "album membership"),
    (Cf::ByName, "name index"),
    (Cf::Trash, "trash index"),
];

/// The index entries file `fid` of user `uid` implies: while live, its
/// memberships of the albums that `exists` (a membership of a deleted
/// album cannot be rebuilt, so it is not expected) and its two
/// duplicate-index entries; while trashed, its trash entry.
fn implied_entries(uid: u64, fid: u64, f: &FileRecord, exists: impl Fn(u64) -> bool) -> Vec<(Cf, Vec<u8>)> {
    match f.trashed_ms {
        Some(at) => vec![(Cf::Trash, keys::trash(uid, at, fid))],
        None => f
            .albums
            .iter()
            .filter(|&&a| exists(a))
            .map(|&a| (Cf::Members, keys::member(uid, a, fid)))
            .chain([(Cf::ByName, keys::by_name(uid, &f.hash, &f.name, fid))])
            .collect(),
    }
}

/// For each index family and user, a digest of a set of keys that does not
/// depend on their order: how many, and the sum of their hashes (the first
/// 16 bytes of each key's BLAKE3 hash, as a number, wrapping). Equal digests
/// mean equal sets but for a chance of 2^-128 per pair; the sets whose
/// digests differ are compared key by key. So a survey keeps a few numbers
/// per user, not every index key of the store, whatever the library's size.
#[derive(Default)]
struct IndexDigests(HashMap<(Cf, u64), (u64, u128)>);

impl IndexDigests {
    fn add(&mut self, cf: Cf, uid: u64, key: &[u8]) {
        let hash = blake3::hash(key);
        let mut low = [0u8; 16];
        low.copy_from_slice(&hash.as_bytes()[..16]);
        let d = self.0.entry((cf, uid)).or_default();
        d.0 += 1;
        d.1 = d.1.wrapping_add(u128::from_le_bytes(low));
    }

    /// The users whose keys of `cf` differ between `self` and `other`.
    fn differing(&self, other: &IndexDigests, cf: Cf) -> BTreeSet<u64> {
        let users = |d: &IndexDigests| {
            d.0.keys()
                .filter(|(c, _)| *c == cf)
                .map(|&(_, u)| u)
                .collect::<Vec<_>>()
        };
        users(self)
            .into_iter()
            .chain(users(other))
            .filter(|u| self.0.get(&(cf, *u)) != other.0.get(&(cf, *u)))
            .collect()
    }
}

/// One of the equal slices of the hash space that a survey takes at a
/// time: the contents whose first 8 bytes, read as a big-endian number, are
/// at least `lo` and below `hi`. The first slice has no lower bound and the
/// last no upper one, so that every key of a family keyed by content (a
/// malformed one too) falls in exactly one slice. A content's leading bytes
/// are uniform, so the slices hold about as many blobs each.
struct HashRange {
    lo: Option<[u8; 8]>,
    hi: Option<[u8; 8]>,
}

impl HashRange {
    /// The `count` slices, in order.
    fn split(count: u64) -> Vec<HashRange> {
        let bound = |p: u64| {
            let lead = ((u128::from(p) << 64).div_ceil(u128::from(count))) as u64;
            (p > 0 && p < count).then(|| lead.to_be_bytes())
        };
        (0..count)
            .map(|p| HashRange {
                lo: bound(p),
                hi: bound(p + 1),
            })
            .collect()
    }

    fn contains(&self, hash: &ContentHash) -> bool {
        let b = hash.as_bytes().as_slice();
        self.lo.is_none_or(|lo| b >= lo.as_slice()) && self.hi.is_none_or(|hi| b < hi.as_slice())
    }

    /// Calls `f` with each entry of `cf` under `prefix` whose key goes on
    /// with a content in the slice: one bounded scan.
    fn each_in(&self, src: &impl Source, cf: Cf, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        let start = [prefix, self.lo.as_ref().map_or(&[][..], |lo| lo)].concat();
        let end = self.hi.map(|hi| [prefix, &hi].concat());
        src.scan_from(cf, prefix, &start, &mut |k, v| {
            if end.as_ref().is_some_and(|end| k >= end.as_slice()) {
                return Ok(ControlFlow::Break(()));
            }
            f(k, v)?;
            Ok(ControlFlow::Continue(()))
        })
    }
}

/// What the file records imply apart from the blob side: the per-user
/// counters a file adds to, album counts, id order and index digests. All
/// of it is a few numbers per user and album.
#[derive(Default)]
struct FileFacts {
    count: u64,
    /// Each user's counters as the files give them; the blob side adds the
    /// ones that count distinct blobs.
    per_user: BTreeMap<u64, UserRecord>,
    album_counts: BTreeMap<(u64, u64), (u64, u64)>,
    implied: IndexDigests,
    /// Each user's files at or above their next file id.
    bad_ids: BTreeMap<u64, Vec<u64>>,
    /// Each user's highest file id.
    top_file: BTreeMap<u64, u64>,
}

impl FileFacts {
    /// Adds file record `f`, stored at `key`.
    fn add(
        &mut self,
        c: &mut Checker,
        key: &[u8],
        mut f: FileRecord,
        users: &BTreeMap<u64, UserRecord>,
        albums: &BTreeMap<(u64, u64), AlbumRecord>,
    ) {
        let (uid, fid) = (keys::u64_at(key, 0).unwrap_or(0), keys::last_u64(key));
        self.count += 1;
        if fid >= users.get(&uid).map_or(0, |u| u.next_file) {
            self.bad_ids.entry(uid).or_default().push(fid);
        }
        let top = self.top_file.entry(uid).or_default();
        *top = (*top).max(fid);
        let user = self.per_user.entry(uid).or_default();
        user.logical_bytes += f.size;
        let exists = |a: u64| albums.contains_key(&(uid, a));
        for (cf, k) in implied_entries(uid, fid, &f, exists) {
            self.implied.add(cf, uid, &k);
        }
        if f.trashed_ms.is_some() {
            user.trashed_files += 1;
            return;
        }
        user.live_files += 1;
        // Membership of an album that is gone cannot be rebuilt: the repair
        // drops it from the file, so it is not expected.
        let gone: Vec<u64> = f.albums.iter().copied().filter(|&a| !exists(a)).collect();
        f.albums.retain(|a| !gone.contains(a));
        for a in gone {
            let detail = format!("file {fid} of user {uid} is in missing album {a}");
            c.fixable("dangling-reference", detail, Cf::Files, key.to_vec(), Some(f.encode()));
        }
        for &a in &f.albums {
            let ac = self.album_counts.entry((uid, a)).or_default();
            ac.0 += 1;
            ac.1 += f.size;
        }
    }
}

/// The blob side of one hash range as the file records in it imply it: one
/// entry per file record, sorted once the pass is over, so that the stored
/// families (each read in key order, which is hash order) are merged with
/// them rather than looked up in maps. Each file costs about 80 bytes here,
/// which is what `StoreOptions::verify_range` bounds.
#[derive(Default)]
struct BlobRange {
    /// The content of each file record.
    refs: Vec<ContentHash>,
    /// The owner, content and liveness of each file record.
    user_blobs: Vec<(u64, ContentHash, bool)>,
}

/// What the ranges add up to, and the damage they found.
#[derive(Default)]
struct BlobTally {
    blobs: u64,
    /// Each segment's bytes that blob records point at.
    seg_live: BTreeMap<u64, u64>,
    /// Referenced contents without a blob record, and their references.
    missing: BTreeMap<ContentHash, u64>,
    /// Blobs whose place cannot hold them, and why: damage, reported with
    /// the files it affects once those are collected.
    misplaced: Vec<(ContentHash, String)>,
}

/// Runs of equal items in a sorted slice, each with its length.
fn runs<T: PartialEq + Copy>(sorted: &[T]) -> impl Iterator<Item = (T, u64)> + '_ {
    sorted.chunk_by(|a, b| a == b).map(|run| (run[0], run.len() as u64))
}

impl BlobRange {
    /// Adds file record `f` of user `uid`.
    fn add(&mut self, uid: u64, f: &FileRecord) {
        self.refs.push(f.hash);
        self.user_blobs.push((uid, f.hash, f.trashed_ms.is_none()));
    }

    /// Compares the stored blob side of `range` with what the files imply:
    /// reference counts, places, GC candidacy, damage records and per-user
    /// counts (of the users in `owners`, those with any). Each family is
    /// read by one bounded scan (per owner, for the users' counts). Adds
    /// the distinct-blob counters to `per_user`, and the range's totals to
    /// `tally`. A GC candidate found missing would be stamped `now_ms`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, in the survey, which owns every argument"
    )]
    fn check(
        mut self,
        src: &impl Source,
        c: &mut Checker,
        range: &HashRange,
        owners: &[u64],
        segments: &BTreeMap<u64, SegmentRecord>,
        per_user: &mut BTreeMap<u64, UserRecord>,
        tally: &mut BlobTally,
        now_ms: u64,
    ) -> Result<()> {
        self.refs.sort_unstable();
        let mut refs = runs(&self.refs).peekable();
        let mut gc = Vec::new();
        range.each_in(src, Cf::Gc, &[], &mut |k, _| {
            match content_key(k) {
                Some(hash) => gc.push(hash),
                None => c.malformed("GC candidate", Cf::Gc, k),
            }
            Ok(())
        })?;
        // The range's blobs and their sizes, in hash order.
        let mut sizes: Vec<(ContentHash, u64)> = Vec::new();
        range.each_in(src, Cf::Blobs, &[], &mut |k, v| {
            let Some(hash) = content_key(k) else {
                c.malformed("blob", Cf::Blobs, k);
                return Ok(());
            };
            let blob: BlobRecord = decode(v)?;
            sizes.push((hash, blob.size));
            while let Some((h, n)) = refs.next_if(|(h, _)| *h < hash) {
                tally.missing.insert(h, n);
            }
            let want = refs.next_if(|(h, _)| *h == hash).map_or(0, |(_, n)| n);
            let key = hash.as_bytes().to_vec();
            if blob.refs != want {
                let fixed = BlobRecord {
                    refs: want,
                    ..blob.clone()
                };
                let detail = format!("blob {hash} counts {} references, files hold {want}", blob.refs);
                c.fixable(
                    "refcount-mismatch",
                    detail,
                    Cf::Blobs,
                    key.clone(),
                    Some(fixed.encode()),
                );
            }
            // Judged by the files' count, not the stored one: a referenced
            // blob that is a GC candidate is one a wrong count would let GC
            // remove.
            let candidate = gc.binary_search(&hash).is_ok();
            if want == 0 && !candidate {
                let detail = format!("blob {hash} has no reference and is not a GC candidate");
                c.fixable("leaked-blob", detail, Cf::Gc, key, Some(now_ms.encode()));
            } else if want > 0 && candidate {
                let detail = format!("blob {hash} is referenced but is a GC candidate");
                c.fixable("stray-index-entry", detail, Cf::Gc, key, None);
            }
            if let Place::Segment(loc) = blob.place {
                *tally.seg_live.entry(loc.segment).or_default() += loc.record_len();
                match segments.get(&loc.segment) {
                    None => tally.misplaced.push((
                        hash,
                        format!(
                            "blob {hash} is in segment {}, which the store does not have",
                            loc.segment
                        ),
                    )),
                    Some(s) if loc.end() > s.committed_len => tally.misplaced.push((
                        hash,
                        format!("blob {hash} ends past the committed length of segment {}", loc.segment),
                    )),
                    Some(_) => {}
                }
            }
            Ok(())
        })?;
        tally.missing.extend(refs);
        tally.blobs += sizes.len() as u64;
        let has_blob = |hash: &ContentHash| sizes.binary_search_by(|(h, _)| h.cmp(hash)).is_ok();
        for hash in gc.iter().filter(|h| !has_blob(h)) {
            let detail = format!("GC candidate {hash} has no blob");
            c.fixable("stray-index-entry", detail, Cf::Gc, hash.as_bytes().to_vec(), None);
        }
        // GC drops a damage record with its blob, in the same commit.
        range.each_in(src, Cf::Damaged, &[], &mut |k, v| {
            let Some(hash) = content_key(k) else {
                c.malformed("damage record", Cf::Damaged, k);
                return Ok(());
            };
            decode::<DamageRecord>(v)?;
            if !has_blob(&hash) {
                let detail = format!("damage record {hash} has no blob");
                c.fixable("stray-index-entry", detail, Cf::Damaged, k.to_vec(), None);
            }
            Ok(())
        })?;

        // GC drops an outboard with its blob too; one of the wrong length
        // (for the blob's size) could never check a range. Either is only
        // deleted: the first read that checks the blob whole makes it again.
        range.each_in(src, Cf::Outboards, &[], &mut |k, v| {
            let Some(hash) = content_key(k) else {
                c.malformed("outboard", Cf::Outboards, k);
                return Ok(());
            };
            let size = sizes.binary_search_by(|(h, _)| h.cmp(&hash)).ok().map(|i| sizes[i].1);
            let detail = match size {
                None => format!("outboard {hash} has no blob"),
                Some(size) if !crate::blob::outboard::fits(size, v.len()) => {
                    format!(
                        "outboard {hash} is {} bytes, not the length blob size {size} gives",
                        v.len()
                    )
                }
                Some(_) => return Ok(()),
            };
            c.fixable("stray-index-entry", detail, Cf::Outboards, k.to_vec(), None);
            Ok(())
        })?;

        // Each user's count of each content, as the files give it, in key
        // order (user, then hash), merged with the stored counts.
        self.user_blobs.sort_unstable();
        let mut implied = self
            .user_blobs
            .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
            .map(|run| {
                let live = run.iter().filter(|(_, _, live)| *live).count() as u64;
                let counts = UserBlobRecord {
                    refs: run.len() as u64,
                    live,
                };
                ((run[0].0, run[0].1), counts)
            })
            .peekable();
        let mut compare = |c: &mut Checker,
                           (uid, hash): (u64, ContentHash),
                           want: Option<UserBlobRecord>,
                           got: Option<UserBlobRecord>| {
            let key = keys::user_hash(uid, &hash);
            match want {
                Some(ub) => {
                    let size = sizes.binary_search_by(|(h, _)| h.cmp(&hash)).map_or(0, |i| sizes[i].1);
                    let user = per_user.entry(uid).or_default();
                    user.unique_bytes += size;
                    user.blobs += 1;
                    if ub.live == 0 {
                        user.trash_bytes += size;
                    }
                    if got != Some(ub) {
                        let detail = format!("user {uid}'s count of blob {hash} differs from the files");
                        c.fixable("refcount-mismatch", detail, Cf::UserBlobs, key, Some(ub.encode()));
                    }
                }
                None => {
                    let detail = format!("user {uid} counts blob {hash}, which no file of theirs holds");
                    c.fixable("stray-index-entry", detail, Cf::UserBlobs, key, None);
                }
            }
        };
        for &uid in owners {
            range.each_in(src, Cf::UserBlobs, &keys::u64_key(uid), &mut |k, v| {
                let Some(hash) = k.get(8..).and_then(content_key) else {
                    c.malformed("user blob count", Cf::UserBlobs, k);
                    return Ok(());
                };
                let got: UserBlobRecord = decode(v)?;
                let at = (uid, hash);
                while let Some((key, want)) = implied.next_if(|(key, _)| *key < at) {
                    compare(c, key, Some(want), None);
                }
                let want = implied.next_if(|(key, _)| *key == at).map(|(_, want)| want);
                compare(c, at, want, Some(got));
                Ok(())
            })?;
        }
        for (key, want) in implied {
            compare(c, key, Some(want), None);
        }
        Ok(())
    }
}

/// The content a key of a family keyed by content names, if it is one.
fn content_key(key: &[u8]) -> Option<ContentHash> {
    key.try_into().ok().map(ContentHash::from_bytes)
}

fn hash_of(key: &[u8]) -> ContentHash {
    ContentHash::from_bytes(key.try_into().unwrap_or([0; 32]))
}

/// Recomputes every derived fact from the file records in `src` and
/// compares. `check_headers` also reads every segment header (part of a
/// scrub); a new GC candidate found missing would be stamped `now_ms`.
pub(crate) fn survey(src: &impl Source, inner: &Inner, check_headers: bool, now_ms: u64) -> Result<Survey> {
    let mut c = Checker::default();
    let mut holders = Holders::default();
    src.each(Cf::UserNames, &mut |k, v| {
        holders
            .names
            .insert(decode::<u64>(v)?, String::from_utf8_lossy(k).into_owned());
        Ok(())
    })?;
    let users: BTreeMap<u64, UserRecord> = records(src, Cf::Users, keys::last_u64)?;
    let albums: BTreeMap<(u64, u64), AlbumRecord> = records(src, Cf::Albums, |k| {
        (keys::u64_at(k, 0).unwrap_or(0), keys::last_u64(k))
    })?;
    let mut album_names = BTreeSet::new();
    src.each(Cf::AlbumNames, &mut |k, v| {
        album_names.insert(k.to_vec());
        let (uid, id) = (keys::u64_at(k, 0).unwrap_or(0), decode::<u64>(v)?);
        match albums.get(&(uid, id)) {
            Some(a) if keys::album_name(uid, &a.name) == k => {}
            _ => c.fixable(
                "stray-index-entry",
                format!("album name {} names no album {id}", hex(k)),
                Cf::AlbumNames,
                k.to_vec(),
                None,
            ),
        }
        Ok(())
    })?;
    for ((uid, id), a) in &albums {
        let key = keys::album_name(*uid, &a.name);
        if !album_names.contains(&key) {
            let detail = format!("album {id} of user {uid} has no name entry");
            c.fixable("missing-index-entry", detail, Cf::AlbumNames, key, Some(id.encode()));
        }
    }

    // What the file records imply, gathered in the first pass over them.
    // The blob side is recomputed one hash range at a time, each range
    // taking a pass of its own, so that a survey holds one range's files
    // rather than every file of the store. The number of files is taken as
    // the smaller of the stored counters' sum and RocksDB's estimate of the
    // family's keys (which counts overwritten entries until compaction, but
    // which no record can make huge): a wrong one costs memory or time,
    // never findings.
    let counted = users.values().fold(0u64, |n, u| {
        n.saturating_add(u.live_files).saturating_add(u.trashed_files)
    });
    let files = counted.min(src.estimated_keys(Cf::Files));
    let ranges = files.div_ceil(inner.options.verify_range).max(1);
    let segments: BTreeMap<u64, SegmentRecord> = records(src, Cf::Segments, keys::last_u64)?;
    let mut facts = FileFacts::default();
    let mut tally = BlobTally::default();
    let mut short = Vec::new();
    let owners = owners(src, Cf::UserBlobs, &mut short)?;
    for key in short {
        c.malformed("user blob count", Cf::UserBlobs, &key);
    }
    for (i, range) in HashRange::split(ranges).iter().enumerate() {
        let mut implied_blobs = BlobRange::default();
        src.each(Cf::Files, &mut |k, v| {
            let f: FileRecord = decode(v)?;
            if range.contains(&f.hash) {
                implied_blobs.add(keys::u64_at(k, 0).unwrap_or(0), &f);
            }
            if i == 0 {
                facts.add(&mut c, k, f, &users, &albums);
            }
            Ok(())
        })?;
        implied_blobs.check(
            src,
            &mut c,
            range,
            &owners,
            &segments,
            &mut facts.per_user,
            &mut tally,
            now_ms,
        )?;
    }

    // Segments: accounting and file lengths (one listing of the home).
    let lengths = inner.blobs.lengths()?;
    for (id, s) in &segments {
        let want = tally.seg_live.get(id).copied().unwrap_or(0);
        if s.live_bytes != want {
            let fixed = SegmentRecord { live_bytes: want, ..*s };
            let detail = format!("segment {id} counts {} live bytes, blobs hold {want}", s.live_bytes);
            c.fixable(
                "segment-accounting",
                detail,
                Cf::Segments,
                keys::u64_key(*id),
                Some(fixed.encode()),
            );
        }
        let len = lengths.get(id).copied();
        // Named with its home: a mixed store (a migration under way) has
        // segments in both.
        let home = inner.blobs.homes().of(*id).name();
        match len {
            // Lost, but no blob needs it any more (each was healed by a
            // re-upload, or collected): repair retires its record.
            _ if want == 0 && len.is_none_or(|len| len < s.committed_len) => {
                let detail = format!("segment {id} ({home}) is missing or short, and no blob is left in it");
                c.fixable("lost-segment", detail, Cf::Segments, keys::u64_key(*id), None);
            }
            None => c.problem("damaged-segment", format!("segment {id} is missing from {home}")),
            Some(len) if len < s.committed_len => c.problem(
                "damaged-segment",
                format!(
                    "segment {id} ({home}) is {len} bytes, shorter than its committed {}",
                    s.committed_len
                ),
            ),
            Some(_) if check_headers => {
                // Records vouch for themselves (each names its segment
                // and offset and is hashed), so their blobs stay
                // readable; the header is still damage to report.
                if !inner.blobs.header_ok(*id)? {
                    c.problem("damaged-segment", format!("segment {id} has a damaged header"));
                }
            }
            Some(_) => {}
        }
    }
    for id in tally.seg_live.keys() {
        if !segments.contains_key(id) {
            c.problem(
                "damaged-segment",
                format!("blobs point into segment {id}, which has no record"),
            );
        }
    }

    // Per-user counters.
    let FileFacts {
        count: file_count,
        mut per_user,
        mut album_counts,
        implied,
        mut bad_ids,
        top_file,
    } = facts;
    for (uid, rec) in &users {
        let want = per_user.remove(uid).unwrap_or_default();
        // Ids are never reused: the next one goes past every file there is.
        let next_file = rec.next_file.max(top_file.get(uid).map_or(0, |top| top + 1));
        let fixed = UserRecord {
            next_album: rec.next_album,
            next_file,
            limit: rec.limit,
            ..want
        }
        .encode();
        for fid in bad_ids.remove(uid).unwrap_or_default() {
            let detail = format!("file {fid} of user {uid} is not below the user's next file id");
            c.fixable("bad-id", detail, Cf::Users, keys::u64_key(*uid), Some(fixed.clone()));
        }
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
            let detail = format!(
                "user {uid} usage (unique, logical, files, trashed, blobs, trash) is {got:?}, files give {exp:?}"
            );
            c.fixable("usage-mismatch", detail, Cf::Users, keys::u64_key(*uid), Some(fixed));
        }
        if !holders.names.contains_key(uid) {
            c.problem("missing-index-entry", format!("user {uid} has no name"));
        }
    }
    for uid in per_user.keys() {
        c.problem(
            "dangling-reference",
            format!("files belong to user {uid}, who has no record"),
        );
    }
    for ((uid, a), rec) in &albums {
        let (files, bytes) = album_counts.remove(&(*uid, *a)).unwrap_or_default();
        if (rec.files, rec.bytes) != (files, bytes) {
            let detail = format!(
                "album {a} of user {uid} counts ({}, {}) files and bytes, members give ({files}, {bytes})",
                rec.files, rec.bytes
            );
            let fixed = AlbumRecord {
                files,
                bytes,
                ..rec.clone()
            };
            let key = keys::album(*uid, *a);
            c.fixable("album-mismatch", detail, Cf::Albums, key, Some(fixed.encode()));
        }
    }

    // Index families against what the files imply: digests per user and
    // family, and the exact comparison only where they differ.
    for (cf, what) in INDEXES {
        let mut found = IndexDigests::default();
        src.each(cf, &mut |k, _| {
            match keys::u64_at(k, 0) {
                Some(uid) => found.add(cf, uid, k),
                // Too short to name a user: no file implies it.
                None => {
                    let detail = format!("{what}: entry {} matches no file", hex(k));
                    c.fixable("stray-index-entry", detail, cf, k.to_vec(), None);
                }
            }
            Ok(())
        })?;
        for uid in implied.differing(&found, cf) {
            let user = keys::u64_key(uid);
            let mut want = BTreeSet::new();
            src.each_under(Cf::Files, &user, &mut |k, v| {
                let f: FileRecord = decode(v)?;
                let exists = |a: u64| albums.contains_key(&(uid, a));
                let entries = implied_entries(uid, keys::last_u64(k), &f, exists);
                want.extend(entries.into_iter().filter(|(c, _)| *c == cf).map(|(_, key)| key));
                Ok(())
            })?;
            let mut got = BTreeSet::new();
            src.each_under(cf, &user, &mut |k, _| {
                got.insert(k.to_vec());
                Ok(())
            })?;
            c.compare_sets(what, cf, &want, &got);
        }
    }

    let wanted = tally
        .missing
        .keys()
        .chain(tally.misplaced.iter().map(|(h, _)| h))
        .copied()
        .collect();
    holders.collect(src, &wanted)?;
    for (hash, detail) in tally.misplaced {
        c.damaged(detail, holders.affected(&hash));
    }

    Ok(Survey {
        findings: c.findings,
        missing_blobs: tally.missing,
        blobs: tally.blobs,
        holders,
        users: users.len() as u64,
        files: file_count,
        segments: segments.len() as u64,
    })
}

impl Store {
    /// Checks the whole store. With `scrub`, also reads every blob and checks
    /// its hash. Problems are reported, not repaired (see
    /// [`Store::repair`]); the one write is that a blob the scrub finds
    /// damaged is remembered as such (as a failed read does), so that the
    /// next upload of the content heals it.
    ///
    /// # Errors
    ///
    /// Inconsistencies and damage are [`VerifyReport::problems`], not errors. It fails
    /// only if the metadata, or the segments' homes, cannot be read:
    ///
    /// - [`StorageError::Database`] if the metadata database fails.
    /// - [`StorageError::Corrupt`] if it holds a record that cannot be decoded.
    /// - [`StorageError::Io`] if a home cannot be listed or read now (a
    ///   bucket that does not answer): what it could not say is not
    ///   reported as damage.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// assert!(store.verify(true).unwrap().ok);
    /// ```
    pub fn verify(&self, scrub: bool) -> Result<VerifyReport, StorageError> {
        let inner = &*self.inner;
        // Compaction moves blobs; holding the GC lock keeps segments still.
        let _no_gc = inner.gc_lock.lock();
        let survey = survey(&inner.meta.snapshot(), inner, scrub, inner.now_ms())?;
        let (scrubbed, damaged) = if scrub { survey.scrub(inner)? } else { (0, Vec::new()) };
        let mut problems = survey.missing_blob_problems("missing-blob", "");
        problems.extend(damaged);
        problems.extend(survey.findings.into_iter().map(|f| f.problem));
        Ok(VerifyReport {
            ok: problems.is_empty(),
            users: survey.users,
            files: survey.files,
            blobs: survey.blobs,
            segments: survey.segments,
            scrubbed_bytes: scrubbed,
            problems,
        })
    }
}
