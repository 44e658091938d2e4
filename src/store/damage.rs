//! Damaged blobs, and healing them from a re-upload.
//!
//! A read or a scrub that finds a blob's bytes failing their hash records a
//! [`DamageRecord`] for the copy it read. From then on the store asks for the
//! content instead of deduplicating against it: [`User::check`] answers
//! `Upload` and [`User::link`] wants the bytes. An upload that carries the
//! content writes a fresh copy, and its commit points the blob at the copy
//! and drops the record: the photo is whole again, for every file and every
//! user that refers to it, with no change to anyone's files or quota.
//!
//! The record names the copy it is about, so a record that lost a race with
//! a heal (or anything else that moved the blob) is never taken for damage
//! of the new copy.
//!
//! A segment file found missing or short when the store opens marks every
//! blob it should hold in the same way, so the ordinary re-run of a backup
//! heals what a lost file took.
//!
//! [`User::check`]: crate::User::check
//! [`User::link`]: crate::User::link

use std::collections::HashMap;

use super::ledger::{occupy, release};
use super::Inner;
use crate::blob::Location;
use crate::error::Result;
use crate::hash::ContentHash;
use crate::meta::records::{BlobRecord, DamageRecord, Place};
use crate::meta::txn::Txn;
use crate::meta::Cf;

impl Inner {
    /// Records that the copy of `hash` at `place` failed its hash. Best
    /// effort: the caller reports the damage whether or not this commits
    /// (it cannot on a store that refuses writes).
    pub(crate) fn note_damage(&self, hash: ContentHash, place: Place) {
        let detected_ms = self.now_ms();
        let _ = self.commit(move |txn| mark_damaged(txn, &hash, &place, detected_ms));
    }
}

/// Records in `txn` that the copy of `hash` at `place` failed its hash at
/// `detected_ms`, if it is the blob's copy and the blob is not known
/// damaged already.
pub(crate) fn mark_damaged(txn: &mut Txn<'_>, hash: &ContentHash, place: &Place, detected_ms: u64) -> Result<()> {
    let key = hash.as_bytes().to_vec();
    if let Some(blob) = txn.get::<BlobRecord>(Cf::Blobs, &key)? {
        let record = DamageRecord {
            at: match place {
                Place::Inline(_) => None,
                Place::Segment(loc) => Some(*loc),
            },
            detected_ms,
        };
        if record.is_about(&blob.place) && !is_damaged(txn, hash)? {
            txn.put(Cf::Damaged, key, &record);
        }
    }
    Ok(())
}

/// Segment files found shorter than their records say (missing: 0), by
/// id, with their lengths: a copy that lies past the end of one is lost.
pub(crate) type ShortSegments = HashMap<u64, u64>;

/// Whether the copy at `loc` lies, wholly or in part, past the end of one
/// of the `short` segment files.
pub(crate) fn lost(short: &ShortSegments, loc: &Location) -> bool {
    short.get(&loc.segment).is_some_and(|&len| len < loc.end())
}

impl Inner {
    /// The segment files that recovery found missing or short at open,
    /// with their lengths now (one listing of the segments' home, none
    /// when nothing was found damaged).
    pub(crate) fn short_segments(&self) -> ShortSegments {
        if self.recovery.damaged_segments.is_empty() {
            return ShortSegments::new();
        }
        // One listing. One that fails marks nothing: damage is recorded
        // only where it was seen, and reads of what is lost fail anyway.
        let Ok(lengths) = self.blobs.homes().reconciled_lengths() else {
            return ShortSegments::new();
        };
        self.recovery
            .damaged_segments
            .iter()
            .map(|&id| (id, lengths.get(&id).copied().unwrap_or(0)))
            .collect()
    }

    /// Marks damaged every blob whose copy lies, wholly or in part, past
    /// the end of a segment file that recovery found missing or short, in
    /// one commit at open. From then on the store asks for that content
    /// ([`User::check`] answers `Upload`, a re-scan does not trust the file
    /// it came from), and the next upload of it heals it. Returns how many
    /// blobs were newly marked.
    pub(crate) fn note_lost_copies(&self) -> Result<u64> {
        let short = self.short_segments();
        if short.is_empty() {
            return Ok(0);
        }
        let mut marked = Vec::new();
        self.meta.scan(Cf::Blobs, &[], |k, v| {
            let blob: BlobRecord = crate::meta::decode(v)?;
            if let Place::Segment(loc) = blob.place {
                if lost(&short, &loc) {
                    marked.push((k.to_vec(), loc));
                }
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let detected_ms = self.now_ms();
        self.commit(move |txn| {
            let mut n = 0;
            for (key, loc) in marked {
                let here = Place::Segment(loc);
                // A record about an older copy says nothing of this one.
                if !txn
                    .get::<DamageRecord>(Cf::Damaged, &key)?
                    .is_some_and(|d| d.is_about(&here))
                {
                    let at = Some(loc);
                    txn.put(Cf::Damaged, key, &DamageRecord { at, detected_ms });
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}

/// Whether the current copy of blob `hash` is known to be damaged.
pub(crate) fn is_damaged(txn: &Txn<'_>, hash: &ContentHash) -> Result<bool> {
    let key = hash.as_bytes();
    let Some(record) = txn.get::<DamageRecord>(Cf::Damaged, key)? else {
        return Ok(false);
    };
    let Some(blob) = txn.get::<BlobRecord>(Cf::Blobs, key)? else {
        return Ok(false);
    };
    Ok(record.is_about(&blob.place))
}

/// If blob `hash` is damaged, makes the fresh, synced copy at `fresh` its
/// place; otherwise changes nothing (the fresh copy is then garbage, as any
/// copy of content the store already had is).
pub(crate) fn heal(txn: &mut Txn<'_>, hash: &ContentHash, fresh: Place) -> Result<()> {
    if !is_damaged(txn, hash)? {
        return Ok(());
    }
    let key = hash.as_bytes().to_vec();
    let Some(mut blob) = txn.get::<BlobRecord>(Cf::Blobs, &key)? else {
        return Ok(());
    };
    release(txn, &blob.place)?;
    occupy(txn, &fresh)?;
    blob.place = fresh;
    txn.put(Cf::Blobs, key.clone(), &blob);
    txn.delete(Cf::Damaged, key);
    Ok(())
}
