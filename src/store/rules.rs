//! The duplicate rules: what an upload does, decided inside its commit.
//!
//! Given an upload (user, album, name, content hash, mode), the user's live
//! files that *match* it are those with the same hash ([`DedupMode::Hash`],
//! the mobile rule) or the same name and hash ([`DedupMode::NameAndHash`],
//! the desktop/web rule). Then (Ente's rules, `DESIGN.md` §1):
//!
//! - a match already in the album: [`Outcome::Skipped`], nothing changes;
//! - a match in other albums only: [`Outcome::Linked`], the oldest match is
//!   added to the album, no bytes needed;
//! - no live match but one in the trash: [`Outcome::Restored`], the oldest
//!   trashed match comes back into the album (and no other), no bytes
//!   needed;
//! - no match: [`Outcome::Stored`], a new file record (and the blob, if the
//!   store lacks it), charged to the quota if the content is new to the
//!   user.
//!
//! [`plan`] decides from the metadata alone (the commit step's
//! [`apply`], [`User::check`], [`User::link`], and [`link_in`] for a
//! folder linked into a second album by `User::link_sources`); nothing here touches blob
//! bytes, which [`ingest`](super::ingest) writes before the commit.

use super::damage::{heal, is_damaged};
use super::ledger::{
    add_member, check_user_quota, index_live, live_matching, load_album, load_file, load_user, occupy,
    reference_new_file, save_file, save_user, untrash_file,
};
use super::{DedupMode, HashedUpload, Outcome, Preflight, UploadReport, User};
use crate::blob::Location;
use std::sync::Arc;

use crate::error::{Fault, Result, UploadError};
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::meta::keys;
use crate::meta::records::{BlobRecord, FileRecord, Place, UserBlobRecord};
use crate::meta::txn::Txn;
use crate::meta::Cf;
use crate::names::{check_file_name, FileName};

/// A blob copy written for this batch and not yet committed.
#[derive(Debug, Clone)]
pub(crate) enum NewCopy {
    Inline(Vec<u8>),
    /// A record in a segment, with the outboard made as it was written
    /// (for a blob that wants one: `blob::outboard::wanted`).
    Segment(Location, Option<Arc<[u8]>>),
}

impl NewCopy {
    pub(crate) fn place(&self) -> Place {
        match self {
            NewCopy::Inline(data) => Place::Inline(data.clone()),
            NewCopy::Segment(loc, _) => Place::Segment(*loc),
        }
    }
}

/// Stores the outboard that `p`'s copy came with, if the blob has none: in
/// the commit that creates or heals the blob, so that no blob record is
/// ever seen without the outboard its copy was written with, and no
/// outboard outlives its blob (gc deletes both in one commit).
fn keep_outboard(txn: &mut Txn<'_>, p: &Pending) -> Result<()> {
    if let Some(NewCopy::Segment(_, Some(outboard))) = &p.copy {
        let key = p.hash.as_bytes();
        // One of the wrong length (damaged) is replaced too; one of the
        // right length that is wrong is found, and made again, by a read.
        let held = txn.get_raw(Cf::Outboards, key)?;
        if held.is_none_or(|h| !crate::blob::outboard::fits(p.size, h.len())) {
            txn.set(Cf::Outboards, key.to_vec(), Some(outboard.to_vec()));
        }
    }
    Ok(())
}

/// One upload as the commit step sees it.
pub(crate) struct Pending {
    pub(crate) index: usize,
    pub(crate) album: u64,
    pub(crate) name: FileName,
    pub(crate) mode: DedupMode,
    pub(crate) hash: ContentHash,
    pub(crate) size: u64,
    pub(crate) copy: Option<NewCopy>,
    /// The source's modification time ([`crate::clock::to_ns`]).
    pub(crate) modified_ns: Option<u64>,
}

/// How the commit step ended for one upload.
pub(crate) enum Applied {
    Done(Result<UploadReport>),
    /// The blob the write step relied on is gone: write the bytes and retry.
    NeedBytes,
}

impl User {
    /// What uploading content with this hash as `name` into `album` would
    /// do, without sending it. Only the user's own files are considered,
    /// so the answer never depends on other users' content. A duplicate whose
    /// blob a read or scrub found damaged answers `Upload`: the upload of the
    /// content heals it (see [`Store::verify`](crate::Store::verify)).
    ///
    /// # Errors
    ///
    /// - [`UploadError::InvalidName`] if `upload.name` is not an acceptable file name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`UploadError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`UploadError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, HashedUpload, Preflight, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let camera = ann.ensure_album("Camera").unwrap();
    /// let trip = ann.ensure_album("Trip").unwrap();
    /// let r = ann.upload(camera, "a.jpg", Content::from(&b"img"[..]), DedupMode::Hash).unwrap();
    /// let h = ContentHash::of(b"img");
    /// assert_eq!(ann.check(&HashedUpload { album: camera, name: "a.jpg".into(), hash: h, mode: DedupMode::Hash }).unwrap(), Preflight::Skip(r.file_id));
    /// assert_eq!(ann.check(&HashedUpload { album: trip, name: "a.jpg".into(), hash: h, mode: DedupMode::Hash }).unwrap(), Preflight::Link(r.file_id));
    /// ```
    pub fn check(&self, upload: &HashedUpload) -> Result<Preflight, UploadError> {
        let HashedUpload {
            album,
            name,
            hash,
            mode,
        } = upload;
        check_file_name(name)?;
        let Some(uid) = self.id()? else {
            return Err(Fault::UnknownAlbum(album.to_string()).into());
        };
        let txn = Txn::new(&self.inner().meta);
        Ok(preflight(&txn, uid, album.0, name, hash, *mode, None)?)
    }

    /// Completes an upload from its hash alone when [`check`](Self::check)
    /// says `Skip`, `Link` or `Restore`: the duplicate must be one of the
    /// user's own files, live or in the trash. Otherwise fails with
    /// [`UploadError::ContentRequired`] and changes nothing: across users,
    /// content must be sent in full.
    ///
    /// # Errors
    ///
    /// - [`UploadError::InvalidName`] if `upload.name` is not an acceptable file name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`UploadError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`UploadError::ContentRequired`] if no file of the user matches, or the
    ///   match's blob is damaged: [`check`](Self::check) says `Upload`, and the bytes
    ///   must be sent.
    /// - [`UploadError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{Content, ContentHash, DedupMode, HashedUpload, Outcome, Store, UploadError};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let bob = store.user("bob").unwrap();
    /// let (a, b) = (ann.ensure_album("A").unwrap(), ann.ensure_album("B").unwrap());
    /// ann.upload(a, "1.jpg", Content::from(&b"img"[..]), DedupMode::Hash).unwrap();
    /// let h = ContentHash::of(b"img");
    /// assert_eq!(ann.link(&HashedUpload { album: b, name: "1.jpg".into(), hash: h, mode: DedupMode::Hash }).unwrap().outcome, Outcome::Linked);
    /// // Another user must send the bytes.
    /// let other = bob.ensure_album("A").unwrap();
    /// assert!(matches!(bob.link(&HashedUpload { album: other, name: "1.jpg".into(), hash: h, mode: DedupMode::Hash }), Err(UploadError::ContentRequired)));
    /// ```
    pub fn link(&self, upload: &HashedUpload) -> Result<UploadReport, UploadError> {
        Ok(self.link_hashed(upload)?)
    }

    /// [`link`](Self::link) inside the engine, for a session's begin too.
    pub(crate) fn link_hashed(&self, upload: &HashedUpload) -> Result<UploadReport> {
        check_file_name(&upload.name)?;
        let up = upload.clone();
        let report = self.commit_existing(Fault::UnknownAlbum(up.album.to_string()), move |txn, uid| {
            link_in(txn, uid, &up, None)
        })?;
        self.inner().counters.upload(&report);
        Ok(report)
    }
}

/// [`User::link`] inside a transaction (the name already checked):
/// [`Fault::ContentRequired`] when no duplicate of the user's lets the
/// upload skip, link or restore. `known` is a live file of the user's
/// known to hold the content, if the caller has one (see [`plan`]).
pub(crate) fn link_in(txn: &mut Txn<'_>, uid: u64, up: &HashedUpload, known: Option<u64>) -> Result<UploadReport> {
    let album = up.album.0;
    match preflight(txn, uid, album, &up.name, &up.hash, up.mode, known)? {
        Preflight::Skip(f) => duplicate_report(txn, uid, f, Outcome::Skipped),
        Preflight::Link(f) => link_existing(txn, uid, album, f),
        Preflight::Restore(f) => restore_into(txn, uid, album, f),
        Preflight::Upload => Err(Fault::ContentRequired),
    }
}

/// The user's live files that match an upload under `mode`, oldest first.
fn matches(txn: &Txn<'_>, uid: u64, hash: &ContentHash, name: &FileName, mode: DedupMode) -> Result<Vec<u64>> {
    let prefix = match mode {
        DedupMode::Hash => keys::user_hash(uid, hash),
        DedupMode::NameAndHash => keys::by_name_prefix(uid, hash, name),
    };
    live_matching(txn, &prefix)
}

/// Skip if any duplicate is already in the album (the oldest such), else
/// link the oldest duplicate, else restore the oldest trashed one, else
/// upload. Checking every duplicate, not just the oldest, matters where
/// several are live: an album must never show the same photo twice because
/// of a re-upload.
///
/// `known` is a file of the user's that held the content when the caller
/// looked (a backup into a second album knows the file its source record
/// names). Where it is still live with the content and the user's only
/// live file with it, the duplicates are it or nobody, and the index is not
/// scanned: over a folder of distinct photos, that scan was a fifth of the
/// time. If it was trashed or purged since (by work earlier in the same
/// group commit), the one live file is another, and the index is scanned.
fn plan(
    txn: &Txn<'_>,
    uid: u64,
    album: u64,
    name: &FileName,
    hash: &ContentHash,
    mode: DedupMode,
    known: Option<u64>,
) -> Result<Preflight> {
    if load_album(txn, uid, album)?.is_none() {
        return Err(Fault::UnknownAlbum(album.to_string()));
    }
    // The user's count for the blob exists while any file of theirs, live
    // or trashed, holds the content: new content (most of a first backup)
    // costs this one lookup, which a batch reads ahead, and no scan.
    let Some(held) = txn
        .get::<UserBlobRecord>(Cf::UserBlobs, &keys::user_hash(uid, hash))?
        .filter(|b| b.refs > 0)
    else {
        return Ok(Preflight::Upload);
    };
    let dups = match (held.live, known) {
        // Only trashed files hold it.
        (0, _) => Vec::new(),
        (1, Some(k)) => match load_file(txn, uid, k)? {
            Some(f) if f.trashed_ms.is_none() && f.hash == *hash => {
                if mode == DedupMode::Hash || f.name.same_as(name) {
                    vec![k]
                } else {
                    Vec::new()
                }
            }
            _ => matches(txn, uid, hash, name, mode)?,
        },
        _ => matches(txn, uid, hash, name, mode)?,
    };
    for &f in &dups {
        if txn.exists(Cf::Members, &keys::member(uid, album, f))? {
            return Ok(Preflight::Skip(FileId(f)));
        }
    }
    if let Some(&f) = dups.first() {
        return Ok(Preflight::Link(FileId(f)));
    }
    Ok(trashed_match(txn, uid, hash, name, mode)?.map_or(Preflight::Upload, |f| Preflight::Restore(FileId(f))))
}

/// The oldest of the user's trashed files that matches an upload under
/// `mode`. It costs a scan of the user's trash, made only when a trashed
/// file holds the content (the user's count for the blob says so).
fn trashed_match(txn: &Txn<'_>, uid: u64, hash: &ContentHash, name: &FileName, mode: DedupMode) -> Result<Option<u64>> {
    let held = txn.get::<UserBlobRecord>(Cf::UserBlobs, &keys::user_hash(uid, hash))?;
    if held.is_none_or(|b| b.refs == b.live) {
        return Ok(None);
    }
    let mut oldest: Option<u64> = None;
    for (k, _) in txn.scan(Cf::Trash, &keys::u64_key(uid))? {
        let fid = keys::last_u64(&k);
        let Some(f) = load_file(txn, uid, fid)? else { continue };
        if f.hash == *hash && (mode == DedupMode::Hash || f.name.same_as(name)) {
            oldest = Some(oldest.map_or(fid, |o| o.min(fid)));
        }
    }
    Ok(oldest)
}

/// Restores the trashed file `fid` into `album` only: an upload of its
/// content asked for it there.
fn restore_into(txn: &mut Txn<'_>, uid: u64, album: u64, fid: FileId) -> Result<UploadReport> {
    let mut file =
        load_file(txn, uid, fid.0)?.ok_or_else(|| Fault::Corrupt(format!("trashed file {fid} has no record")))?;
    let at = file
        .trashed_ms
        .ok_or_else(|| Fault::Corrupt(format!("trash entry of live file {fid}")))?;
    let mut user = load_user(txn, uid)?;
    untrash_file(txn, uid, &mut user, fid.0, &mut file, at)?;
    add_member(txn, uid, album, fid.0, &mut file)?;
    save_file(txn, uid, fid.0, &file);
    save_user(txn, uid, &user);
    duplicate_report(txn, uid, fid, Outcome::Restored)
}

/// [`plan`] as a client sees it: a duplicate whose blob is damaged wants the
/// content sent, so that the upload heals it.
fn preflight(
    txn: &Txn<'_>,
    uid: u64,
    album: u64,
    name: &FileName,
    hash: &ContentHash,
    mode: DedupMode,
    known: Option<u64>,
) -> Result<Preflight> {
    let plan = plan(txn, uid, album, name, hash, mode, known)?;
    if plan != Preflight::Upload && is_damaged(txn, hash)? {
        return Ok(Preflight::Upload);
    }
    Ok(plan)
}

fn duplicate_report(txn: &Txn<'_>, uid: u64, fid: FileId, outcome: Outcome) -> Result<UploadReport> {
    let file =
        load_file(txn, uid, fid.0)?.ok_or_else(|| Fault::Corrupt(format!("indexed file {fid} has no record")))?;
    Ok(UploadReport {
        file_id: fid,
        outcome,
        hash: file.hash,
        size: file.size,
        bytes_written: 0,
        charged_bytes: 0,
    })
}

fn link_existing(txn: &mut Txn<'_>, uid: u64, album: u64, fid: FileId) -> Result<UploadReport> {
    let mut file =
        load_file(txn, uid, fid.0)?.ok_or_else(|| Fault::Corrupt(format!("indexed file {fid} has no record")))?;
    add_member(txn, uid, album, fid.0, &mut file)?;
    save_file(txn, uid, fid.0, &file);
    duplicate_report(txn, uid, fid, Outcome::Linked)
}

/// The commit step for one upload. Its report's `bytes_written` is the
/// caller's to fill in: what the upload wrote does not depend on what the
/// commit found.
pub(crate) fn apply(txn: &mut Txn<'_>, uid: u64, p: &Pending, now: u64) -> Applied {
    let reported = |txn: &mut Txn<'_>, r: Result<UploadReport>| {
        let r = r?;
        heal_with(txn, p)?;
        Ok(r)
    };
    match plan(txn, uid, p.album, &p.name, &p.hash, p.mode, None) {
        Ok(Preflight::Skip(f)) => {
            let r = duplicate_report(txn, uid, f, Outcome::Skipped);
            Applied::Done(reported(txn, r))
        }
        Ok(Preflight::Link(f)) => {
            let r = link_existing(txn, uid, p.album, f);
            Applied::Done(reported(txn, r))
        }
        Ok(Preflight::Restore(f)) => {
            let r = restore_into(txn, uid, p.album, f);
            Applied::Done(reported(txn, r))
        }
        Ok(Preflight::Upload) => match store_new(txn, uid, p, now) {
            Ok(Some(r)) => Applied::Done(Ok(r)),
            Ok(None) => Applied::NeedBytes,
            Err(e) => Applied::Done(Err(e)),
        },
        Err(e) => Applied::Done(Err(e)),
    }
}

/// Reads ahead, in one batched lookup per kind, the records the commit step
/// of these uploads asks for by hash (the user's counts and the blobs),
/// and their albums, which [`plan`] reads for every upload: a batch that
/// writes nothing (a `--rehash` of a folder already stored) would read
/// each from the database again.
pub(crate) fn prefetch(txn: &mut Txn<'_>, uid: u64, pending: &[Pending]) -> Result<()> {
    let mut albums: Vec<u64> = pending.iter().map(|p| p.album).collect();
    albums.sort_unstable();
    albums.dedup();
    txn.prefetch(
        Cf::Albums,
        albums.into_iter().map(|a| keys::album(uid, a)).collect(),
        true,
    )?;
    let counts = pending.iter().map(|p| keys::user_hash(uid, &p.hash)).collect();
    txn.prefetch(Cf::UserBlobs, counts, false)?;
    let blobs = pending.iter().map(|p| p.hash.as_bytes().to_vec()).collect();
    txn.prefetch(Cf::Blobs, blobs, false)
}

/// Heals the blob with the copy this upload wrote, if it is damaged. Any
/// other copy of content the store already had is garbage.
fn heal_with(txn: &mut Txn<'_>, p: &Pending) -> Result<()> {
    match &p.copy {
        Some(copy) => {
            heal(txn, &p.hash, copy.place())?;
            keep_outboard(txn, p)
        }
        None => Ok(()),
    }
}

/// Creates the new file record, and the blob if the store lacks it. Returns
/// `None` when the upload needs its bytes written: the blob is missing, or
/// the content is new to the user and this upload wrote no copy.
fn store_new(txn: &mut Txn<'_>, uid: u64, p: &Pending, now: u64) -> Result<Option<UploadReport>> {
    let mut user = load_user(txn, uid)?;
    let ub: UserBlobRecord = txn
        .get(Cf::UserBlobs, &keys::user_hash(uid, &p.hash))?
        .unwrap_or_default();
    let charged = if ub.refs > 0 { 0 } else { p.size };
    check_user_quota(txn, uid, &user, charged, now, None)?;
    // Content new to the user is stored from its own copy, or not at all:
    // if the write step did not write one (the quota that the user's other
    // writes held), the upload is retried with its bytes, whether or not
    // the store has the blob for someone else.
    if charged > 0 && p.copy.is_none() {
        return Ok(None);
    }
    let blob_key = p.hash.as_bytes().to_vec();
    if txn.exists(Cf::Blobs, &blob_key)? {
        heal_with(txn, p)?;
    } else {
        let Some(copy) = &p.copy else {
            return Ok(None);
        };
        let place = copy.place();
        occupy(txn, &place)?;
        keep_outboard(txn, p)?;
        txn.put(
            Cf::Blobs,
            blob_key,
            &BlobRecord {
                size: p.size,
                refs: 0,
                place,
            },
        );
    }
    let fid = user.next_file;
    user.next_file += 1;
    let mut file = FileRecord {
        name: p.name.clone(),
        hash: p.hash,
        size: p.size,
        created_ms: now,
        albums: Vec::new(),
        trashed_ms: None,
        modified_ns: p.modified_ns,
    };
    reference_new_file(txn, uid, &mut user, &file, now)?;
    add_member(txn, uid, p.album, fid, &mut file)?;
    index_live(txn, uid, fid, &file);
    save_file(txn, uid, fid, &file);
    save_user(txn, uid, &user);
    Ok(Some(UploadReport {
        file_id: FileId(fid),
        outcome: Outcome::Stored,
        hash: p.hash,
        size: p.size,
        bytes_written: 0,
        charged_bytes: charged,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::trash::delete_in;
    use crate::store::{Content, Store};

    /// A known file trashed earlier in the same transaction is no
    /// duplicate, and the only live copy left is another file: the rules
    /// find that one (already in the album: skipped), never restore the
    /// trashed one beside it.
    #[test]
    fn a_known_file_trashed_earlier_in_the_transaction_gives_way_to_the_live_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let u = store.user("u").unwrap();
        let (camera, trip) = (u.ensure_album("Camera").unwrap(), u.ensure_album("Trip").unwrap());
        let known = u
            .upload(camera, "a.jpg", Content::from(&b"img"[..]), DedupMode::NameAndHash)
            .unwrap();
        let other = u
            .upload(trip, "b.jpg", Content::from(&b"img"[..]), DedupMode::NameAndHash)
            .unwrap();
        assert_eq!(other.outcome, Outcome::Stored);
        let uid = u.id().unwrap().unwrap();
        let hash = ContentHash::of(b"img");
        let mut txn = Txn::committing(&store.inner.meta);
        let name = FileName::from("a.jpg");
        assert_eq!(
            plan(&txn, uid, trip.0, &name, &hash, DedupMode::Hash, Some(known.file_id.0)).unwrap(),
            Preflight::Skip(other.file_id)
        );
        delete_in(&mut txn, uid, known.file_id, 1).unwrap();
        assert_eq!(
            plan(&txn, uid, trip.0, &name, &hash, DedupMode::Hash, Some(known.file_id.0)).unwrap(),
            Preflight::Skip(other.file_id)
        );
        // Under the desktop rule only a.jpg matches, and it is in the trash.
        assert_eq!(
            plan(
                &txn,
                uid,
                trip.0,
                &name,
                &hash,
                DedupMode::NameAndHash,
                Some(known.file_id.0)
            )
            .unwrap(),
            Preflight::Restore(known.file_id)
        );
    }
}
