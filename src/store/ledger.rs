//! The ledger: every read and write of the records that one transaction
//! keeps in step (users, files, albums and their memberships, reference
//! counts, usage, the quota rule, the trash, segment occupancy).
//!
//! Every change to a file's existence, liveness or album membership goes
//! through these functions, inside the transaction that makes the change, so
//! the counters move in the same atomic batch as the references that cause
//! them. No merge operators: the store must see a count reach zero to make
//! the blob a GC candidate. `verify` recomputes everything from the file
//! records and compares.
//!
//! The ledger imports no other module of the store: the operations (uploads,
//! the library, the trash, sessions, maintenance) are built on it, never the
//! other way round.

use crate::blob::Site;
use crate::error::{Fault, QuotaExceeded, Result};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::keys;
use crate::meta::records::{
    AlbumRecord, BlobRecord, FileRecord, Place, SegmentRecord, UploadRecord, UserBlobRecord, UserRecord,
};
use crate::meta::txn::Txn;
use crate::meta::{decode, Cf, Meta};
use crate::names::check_user_name;

/// The id of `user` in the committed metadata, or `None`: reads never
/// create users.
pub(crate) fn user_id(meta: &Meta, user: &str) -> Result<Option<u64>> {
    check_user_name(user)?;
    meta.get::<u64>(Cf::UserNames, user.as_bytes())
}

/// The id of `user` inside a transaction, or `None`.
pub(crate) fn txn_user_id(txn: &Txn<'_>, user: &str) -> Result<Option<u64>> {
    txn.get::<u64>(Cf::UserNames, user.as_bytes())
}

/// The id of `user`, creating the user if needed.
pub(crate) fn ensure_user(txn: &mut Txn<'_>, user: &str) -> Result<u64> {
    if let Some(id) = txn_user_id(txn, user)? {
        return Ok(id);
    }
    let id = txn.get::<u64>(Cf::Meta, keys::NEXT_USER)?.unwrap_or(1);
    txn.put(Cf::Meta, keys::NEXT_USER.to_vec(), &(id + 1));
    txn.put(Cf::UserNames, user.as_bytes().to_vec(), &id);
    txn.put(
        Cf::Users,
        keys::u64_key(id),
        &UserRecord {
            next_album: 1,
            next_file: 1,
            ..Default::default()
        },
    );
    Ok(id)
}

pub(crate) fn load_user(txn: &Txn<'_>, uid: u64) -> Result<UserRecord> {
    txn.get(Cf::Users, &keys::u64_key(uid))?
        .ok_or_else(|| Fault::Corrupt(format!("user {uid} has a name but no record")))
}

pub(crate) fn save_user(txn: &mut Txn<'_>, uid: u64, rec: &UserRecord) {
    txn.put(Cf::Users, keys::u64_key(uid), rec);
}

/// Whether the user holds content `hash`: a file record of theirs, live or
/// in the trash, refers to it. Content the user holds charges nothing.
pub(crate) fn holds(txn: &Txn<'_>, uid: u64, hash: &ContentHash) -> Result<bool> {
    Ok(txn
        .get::<UserBlobRecord>(Cf::UserBlobs, &keys::user_hash(uid, hash))?
        .is_some_and(|ub| ub.refs > 0))
}

/// What the user's unexpired upload sessions reserve of the quota, but the
/// session keyed `except` (the one being finished).
pub(crate) fn staged_bytes(txn: &Txn<'_>, uid: u64, now: u64, except: Option<&[u8]>) -> Result<u64> {
    let mut total = 0u64;
    for (key, value) in txn.scan(Cf::Uploads, &keys::u64_key(uid))? {
        let rec: UploadRecord = decode(&value)?;
        if rec.expires_ms > now && except != Some(key.as_slice()) {
            // Staged bytes take disk whatever their content: reserved even
            // when the user holds what the session declared.
            total = total.saturating_add(rec.declared.unwrap_or(rec.offset));
        }
    }
    Ok(total)
}

/// The quota rule: an upload is refused only if it would *charge* bytes
/// past the limit, beside what is used: the unique bytes charged and what
/// the user's sessions reserve (`staged`, from [`staged_bytes`]). What
/// charges nothing (a duplicate, content the user already references)
/// always passes, even when a lowered limit is below current usage.
/// `charged` may come from a client (a declared length): a sum past
/// `u64::MAX` is past any limit, never a wrapped small number.
/// [`check_quota`] as a commit applies it, reading what the user's sessions
/// (but the one keyed `except`) reserve only when there is a limit to pass.
pub(crate) fn check_user_quota(
    txn: &Txn<'_>,
    uid: u64,
    user: &UserRecord,
    charged: u64,
    now: u64,
    except: Option<&[u8]>,
) -> Result<()> {
    if user.limit.is_none() || charged == 0 {
        return Ok(());
    }
    check_quota(user, staged_bytes(txn, uid, now, except)?, charged)
}

pub(crate) fn check_quota(user: &UserRecord, staged: u64, charged: u64) -> Result<()> {
    let used = user.unique_bytes.saturating_add(staged);
    let past = |limit: u64| used.checked_add(charged).is_none_or(|total| total > limit);
    match user.limit {
        Some(limit) if charged > 0 && past(limit) => Err(Fault::QuotaExceeded(QuotaExceeded {
            limit,
            used,
            needed: charged,
        })),
        _ => Ok(()),
    }
}

/// A user's standing with one blob, as it contributes to the usage
/// counters.
fn contribution(r: UserBlobRecord) -> (bool, bool) {
    let referenced = r.refs > 0;
    let trash_only = referenced && r.live == 0;
    (referenced, trash_only)
}

/// Moves a user's reference counts for `hash` by `d_refs` file records, of
/// which `d_live` live ones, and keeps the user's unique, blob and trash
/// counters in step.
pub(crate) fn adjust_user_blob(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    hash: &ContentHash,
    size: u64,
    d_refs: i64,
    d_live: i64,
) -> Result<()> {
    let key = keys::user_hash(uid, hash);
    let before: UserBlobRecord = txn.get(Cf::UserBlobs, &key)?.unwrap_or_default();
    let apply = |v: u64, d: i64| {
        v.checked_add_signed(d)
            .ok_or_else(|| Fault::Corrupt(format!("reference count of {hash} for user {uid} would go negative")))
    };
    let after = UserBlobRecord {
        refs: apply(before.refs, d_refs)?,
        live: apply(before.live, d_live)?,
    };
    let (was_ref, was_trash) = contribution(before);
    let (is_ref, is_trash) = contribution(after);
    match (was_ref, is_ref) {
        (false, true) => {
            user.unique_bytes += size;
            user.blobs += 1;
        }
        (true, false) => {
            user.unique_bytes -= size;
            user.blobs -= 1;
        }
        _ => {}
    }
    match (was_trash, is_trash) {
        (false, true) => user.trash_bytes += size,
        (true, false) => user.trash_bytes -= size,
        _ => {}
    }
    if after.refs == 0 {
        txn.delete(Cf::UserBlobs, key);
    } else {
        txn.put(Cf::UserBlobs, key, &after);
    }
    Ok(())
}

/// Moves a blob's global reference count. When it reaches zero the blob
/// becomes a GC candidate stamped `now_ms`; when it leaves zero it stops
/// being one.
pub(crate) fn adjust_blob_refs(txn: &mut Txn<'_>, hash: &ContentHash, delta: i64, now_ms: u64) -> Result<()> {
    let key = hash.as_bytes().to_vec();
    let mut blob: BlobRecord = txn
        .get(Cf::Blobs, &key)?
        .ok_or_else(|| Fault::Corrupt(format!("a file references blob {hash}, which has no record")))?;
    let before = blob.refs;
    blob.refs = before
        .checked_add_signed(delta)
        .ok_or_else(|| Fault::Corrupt(format!("reference count of blob {hash} would go negative")))?;
    if before > 0 && blob.refs == 0 {
        txn.put(Cf::Gc, key.clone(), &now_ms);
    } else if before == 0 && blob.refs > 0 {
        txn.delete(Cf::Gc, key.clone());
    }
    txn.put(Cf::Blobs, key, &blob);
    Ok(())
}

/// Adds a new file record's references: the blob's and the user's counts.
pub(crate) fn reference_new_file(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    file: &FileRecord,
    now_ms: u64,
) -> Result<()> {
    adjust_blob_refs(txn, &file.hash, 1, now_ms)?;
    adjust_user_blob(txn, uid, user, &file.hash, file.size, 1, 1)?;
    user.logical_bytes += file.size;
    user.live_files += 1;
    Ok(())
}

/// Drops a file record's references when it is deleted for good.
pub(crate) fn unreference_file(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    file: &FileRecord,
    now_ms: u64,
) -> Result<()> {
    let live = file.trashed_ms.is_none();
    adjust_user_blob(txn, uid, user, &file.hash, file.size, -1, if live { -1 } else { 0 })?;
    adjust_blob_refs(txn, &file.hash, -1, now_ms)?;
    user.logical_bytes -= file.size;
    if live {
        user.live_files -= 1;
    } else {
        user.trashed_files -= 1;
    }
    Ok(())
}

/// Moves a file between live and trashed in the user's counts.
pub(crate) fn set_liveness(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    file: &FileRecord,
    live: bool,
) -> Result<()> {
    let d = if live { 1 } else { -1 };
    adjust_user_blob(txn, uid, user, &file.hash, file.size, 0, d)?;
    if live {
        user.live_files += 1;
        user.trashed_files -= 1;
    } else {
        user.live_files -= 1;
        user.trashed_files += 1;
    }
    Ok(())
}

/// Puts a live file into the duplicate-detection index. One key serves
/// both rules: its prefix `user | hash` finds the files with a content (the
/// mobile rule), the longer prefix with the name those with a name too.
pub(crate) fn index_live(txn: &mut Txn<'_>, uid: u64, fid: u64, file: &FileRecord) {
    txn.put_empty(Cf::ByName, keys::by_name(uid, &file.hash, &file.name, fid));
}

/// Takes a file out of the duplicate-detection index (trashed files are
/// never duplicates).
pub(crate) fn unindex_live(txn: &mut Txn<'_>, uid: u64, fid: u64, file: &FileRecord) {
    txn.delete(Cf::ByName, keys::by_name(uid, &file.hash, &file.name, fid));
}

/// The ids of the user's live files under `prefix` of the duplicate index
/// (a [`keys::user_hash`] or a [`keys::by_name_prefix`]), oldest (lowest
/// id) first: the index orders a content's files by name before id.
pub(crate) fn live_matching(txn: &Txn<'_>, prefix: &[u8]) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = txn
        .scan(Cf::ByName, prefix)?
        .into_iter()
        .map(|(k, _)| keys::last_u64(&k))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

pub(crate) fn load_album(txn: &Txn<'_>, uid: u64, album: u64) -> Result<Option<AlbumRecord>> {
    txn.get(Cf::Albums, &keys::album(uid, album))
}

/// Adds `fid` to `album`: the membership key, the file's album list and the
/// album's counters. Returns false if it was already a member.
pub(crate) fn add_member(txn: &mut Txn<'_>, uid: u64, album: u64, fid: u64, file: &mut FileRecord) -> Result<bool> {
    let mkey = keys::member(uid, album, fid);
    if txn.exists(Cf::Members, &mkey)? {
        return Ok(false);
    }
    let mut rec = load_album(txn, uid, album)?.ok_or_else(|| Fault::UnknownAlbum(album.to_string()))?;
    rec.files += 1;
    rec.bytes += file.size;
    txn.put(Cf::Albums, keys::album(uid, album), &rec);
    txn.put_empty(Cf::Members, mkey);
    if !file.albums.contains(&album) {
        file.albums.push(album);
    }
    Ok(true)
}

/// Takes `fid` out of `album`'s membership and counters. The file's album
/// list is left to the caller: a trashed file keeps it for restoring.
pub(crate) fn remove_member(txn: &mut Txn<'_>, uid: u64, album: u64, fid: u64, size: u64) -> Result<bool> {
    let mkey = keys::member(uid, album, fid);
    if !txn.exists(Cf::Members, &mkey)? {
        return Ok(false);
    }
    if let Some(mut rec) = load_album(txn, uid, album)? {
        rec.files -= 1;
        rec.bytes -= size;
        txn.put(Cf::Albums, keys::album(uid, album), &rec);
    }
    txn.delete(Cf::Members, mkey);
    Ok(true)
}

/// The user's album `album`, or [`Fault::UnknownAlbum`].
pub(crate) fn require_album(txn: &Txn<'_>, uid: u64, album: AlbumId) -> Result<AlbumRecord> {
    load_album(txn, uid, album.0)?.ok_or_else(|| Fault::UnknownAlbum(album.to_string()))
}

pub(crate) fn load_file(txn: &Txn<'_>, uid: u64, fid: u64) -> Result<Option<FileRecord>> {
    txn.get(Cf::Files, &keys::file(uid, fid))
}

/// The user's live file `fid`, or the errors a caller should see.
pub(crate) fn live_file(txn: &Txn<'_>, uid: u64, fid: FileId) -> Result<FileRecord> {
    let f = load_file(txn, uid, fid.0)?.ok_or(Fault::UnknownFile(fid))?;
    if f.trashed_ms.is_some() {
        return Err(Fault::FileTrashed(fid));
    }
    Ok(f)
}

pub(crate) fn save_file(txn: &mut Txn<'_>, uid: u64, fid: u64, file: &FileRecord) {
    txn.put(Cf::Files, keys::file(uid, fid), file);
}

/// Counts a blob copy at `place` as live in its segment, and extends what
/// the segment's committed length vouches for to cover it.
pub(crate) fn occupy(txn: &mut Txn<'_>, place: &Place) -> Result<()> {
    adjust_segment(txn, place, true, None)
}

/// Takes the copy at `place` into its segment's committed length without
/// making it live: a copy this commit wrote but no blob points at (its
/// content was in the store already) is garbage, kept by recovery and
/// counted by compaction like any other. `site_of` names the home of the
/// copy's segment, which its record takes: every copy a commit makes is
/// covered, so every segment's record names its site from its first
/// commit on.
pub(crate) fn cover(txn: &mut Txn<'_>, place: &Place, site_of: &dyn Fn(u64) -> Site) -> Result<()> {
    adjust_segment(txn, place, false, Some(site_of))
}

fn adjust_segment(txn: &mut Txn<'_>, place: &Place, live: bool, site_of: Option<&dyn Fn(u64) -> Site>) -> Result<()> {
    if let Place::Segment(loc) = place {
        let key = keys::u64_key(loc.segment);
        let mut seg: SegmentRecord = txn.get(Cf::Segments, &key)?.unwrap_or_default();
        seg.committed_len = seg.committed_len.max(loc.end());
        if let Some(site_of) = site_of {
            seg.site = site_of(loc.segment);
        }
        if live {
            seg.live_bytes += loc.record_len();
        }
        txn.put(Cf::Segments, key, &seg);
    }
    Ok(())
}

/// The reverse of [`occupy`]: the copy at `place` is garbage from this
/// commit on, for compaction to reclaim.
pub(crate) fn release(txn: &mut Txn<'_>, place: &Place) -> Result<()> {
    if let Place::Segment(loc) = place {
        let key = keys::u64_key(loc.segment);
        if let Some(mut seg) = txn.get::<SegmentRecord>(Cf::Segments, &key)? {
            seg.live_bytes = seg.live_bytes.saturating_sub(loc.record_len());
            txn.put(Cf::Segments, key, &seg);
        }
    }
    Ok(())
}

/// Moves a live file to the trash: out of every album and out of the
/// duplicate index. Its album list is kept for restoring.
pub(crate) fn trash_file(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    fid: u64,
    file: &mut FileRecord,
    now: u64,
) -> Result<()> {
    for &album in &file.albums {
        remove_member(txn, uid, album, fid, file.size)?;
    }
    unindex_live(txn, uid, fid, file);
    set_liveness(txn, uid, user, file, false)?;
    file.trashed_ms = Some(now);
    txn.put_empty(Cf::Trash, keys::trash(uid, now, fid));
    Ok(())
}

/// Takes a trashed file out of the trash, live again and back in the
/// duplicate index, in no album yet. Returns the albums it was in, for the
/// caller to put it back into those it chooses.
pub(crate) fn untrash_file(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    fid: u64,
    file: &mut FileRecord,
    at: u64,
) -> Result<Vec<u64>> {
    txn.delete(Cf::Trash, keys::trash(uid, at, fid));
    file.trashed_ms = None;
    set_liveness(txn, uid, user, file, true)?;
    index_live(txn, uid, fid, file);
    Ok(std::mem::take(&mut file.albums))
}

/// Whether `album` shows a live file other than `fid` with the same name
/// and content as `file`: a duplicate under either rule, which restoring
/// `file` into the album would show twice.
pub(crate) fn shows_duplicate(txn: &Txn<'_>, uid: u64, album: u64, fid: u64, file: &FileRecord) -> Result<bool> {
    for (k, _) in txn.scan(Cf::ByName, &keys::by_name_prefix(uid, &file.hash, &file.name))? {
        let other = keys::last_u64(&k);
        if other != fid && txn.exists(Cf::Members, &keys::member(uid, album, other))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Deletes for good the file trashed at `at`, dropping its references, and
/// returns the bytes by which the user's usage went down. A file restored
/// since, or restored and trashed again later, is not this deletion and is
/// left alone (`None`): it has not expired.
pub(crate) fn purge(
    txn: &mut Txn<'_>,
    uid: u64,
    user: &mut UserRecord,
    (at, fid): (u64, u64),
    now: u64,
) -> Result<Option<u64>> {
    let Some(file) = load_file(txn, uid, fid)? else {
        return Ok(None);
    };
    if file.trashed_ms != Some(at) {
        return Ok(None);
    }
    let before = user.unique_bytes;
    unreference_file(txn, uid, user, &file, now)?;
    txn.delete(Cf::Trash, keys::trash(uid, at, fid));
    txn.delete(Cf::Files, keys::file(uid, fid));
    Ok(Some(before - user.unique_bytes))
}
