//! Repair: rebuild every derived record from the file records.
//!
//! The survey that `verify` runs (`verify.rs`) attaches to each problem it
//! can the write that makes the derived record agree with the file records;
//! repair applies those writes in one commit, and re-indexes referenced blobs
//! whose record is gone but whose bytes are still in a segment. The rules for
//! what the file records cannot rebuild are in `DESIGN.md` §8.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::verify::{survey, Problem, Survey};
use crate::blob::Location;
use crate::error::{Fault, Result, StorageError};
use crate::hash::ContentHash;
use crate::meta::records::{BlobRecord, Place, SegmentRecord};
use crate::meta::txn::Txn;
use crate::meta::{decode, keys, Cf};
use crate::store::{Inner, Store};

/// The result of [`Store::repair`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// True when nothing is left unrepaired: `verify` now finds the store
    /// consistent (and, after a scrub, undamaged).
    pub ok: bool,
    /// Each problem found and repaired, as `verify` names it: the derived
    /// record now agrees with the file records. A blob re-indexed from its
    /// copy in a segment is a repaired `missing-blob`.
    pub repaired: Vec<Problem>,
    /// Copies in segments of content that has no blob record
    /// (`orphan-record`): bytes written whose commit never happened, or
    /// whose blob was collected. They are garbage, which the segment
    /// accounting counts and compaction reclaims; nothing is changed for
    /// them. Second copies of content that has a blob are not listed: every
    /// upload of content new to its user writes one (`DESIGN.md` §1,
    /// "Privacy between users"), so they are the normal state of a shared
    /// store, and just as much garbage.
    pub orphans: Vec<Problem>,
    /// What could not be repaired: referenced blobs with no record and no
    /// intact copy in any segment (`lost-blob`), damaged blobs found by the
    /// scrub (`damaged-blob`, marked so that the next upload of the content
    /// heals them), damaged segments, and facts the file records cannot
    /// rebuild (a user with no name or no record).
    pub unrepaired: Vec<Problem>,
}

/// Survey-and-fix passes before giving up. The first makes every derived
/// record agree with the file records; a blob it re-indexes changes what the
/// second finds (its owners' unique bytes, its segment's live bytes); the
/// third finds nothing to fix.
const MAX_PASSES: usize = 4;

impl Store {
    /// Repairs the store: every reference count, usage and album counter,
    /// index entry, GC candidacy and segment accounting that disagrees with
    /// the file records is rebuilt from them, and a referenced blob whose
    /// record is gone is re-indexed from an intact copy in a segment. With
    /// `scrub`, every blob is then re-hashed, and those that fail are marked
    /// damaged so that the next upload of their content heals them.
    ///
    /// All repairs are one commit, made while no other commit runs (uploads
    /// wait meanwhile) and while GC and compaction are held off. Nothing a
    /// record points at is ever deleted, and no data is invented: what
    /// cannot be rebuilt is reported in [`RepairReport::unrepaired`].
    ///
    /// # Errors
    ///
    /// On any error nothing was written.
    ///
    /// - [`StorageError::Poisoned`] if the store refuses writes after a failed sync.
    /// - [`StorageError::Database`] if the metadata database fails.
    /// - [`StorageError::Corrupt`] if it holds a record that cannot be decoded, or the
    ///   repairs do not settle (a bug in them).
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = keepsake::Store::open(dir.path()).unwrap();
    /// let report = store.repair(true).unwrap();
    /// assert!(report.ok && report.repaired.is_empty());
    /// ```
    pub fn repair(&self, scrub: bool) -> Result<RepairReport, StorageError> {
        // Compaction moves blobs and removes segments; the copies found
        // below must stay where they are until the commit.
        let _no_gc = self.inner.gc_lock.lock();
        let copies = segment_copies(&self.inner)?;
        let inner = Arc::clone(&self.inner);
        let now = self.inner.now_ms();
        // A lost segment whose record it retires is removed after the
        // commit, from whichever home still holds what is left of it.
        let (repaired, orphans, survey) = self.inner.commit_then_delete(move |txn, doomed| {
            let (repaired, survey, retired) = rebuild(txn, &inner, &copies, scrub, now)?;
            for segment in retired {
                doomed.segment(segment);
            }
            let orphans = orphans(txn, &copies)?;
            Ok((repaired, orphans, survey))
        })?;
        let mut unrepaired = survey.missing_blob_problems("lost-blob", ", and no segment holds an intact copy");
        if scrub {
            unrepaired.extend(survey.scrub(&self.inner)?.1);
        }
        unrepaired.extend(survey.findings.into_iter().map(|f| f.problem));
        Ok(RepairReport {
            ok: unrepaired.is_empty(),
            repaired,
            orphans,
            unrepaired,
        })
    }
}

/// Every record in the committed part of every segment, by the hash it
/// claims. Only headers are read here; a copy is re-hashed before it is
/// trusted.
fn segment_copies(inner: &Inner) -> Result<BTreeMap<ContentHash, Vec<Location>>> {
    let mut copies: BTreeMap<ContentHash, Vec<Location>> = BTreeMap::new();
    for (k, v) in inner.meta.scan_all(Cf::Segments, &[])? {
        let id = keys::last_u64(&k);
        let seg: SegmentRecord = decode(&v)?;
        // A missing or short file is damage the survey reports.
        let Ok((records, _)) = inner.blobs.scan(id, seg.committed_len) else {
            continue;
        };
        // A damaged header ends the scan: records past it cannot be found.
        for h in records {
            copies.entry(h.hash).or_default().push(Location {
                segment: h.segment,
                offset: h.offset,
                length: h.length,
            });
        }
    }
    Ok(copies)
}

/// Applies the survey's fixes until a survey finds nothing more to fix, and
/// returns the problems repaired and that last survey. Fails, writing
/// nothing, if the fixes do not settle: that would be a bug in them.
fn rebuild(
    txn: &mut Txn<'_>,
    inner: &Inner,
    copies: &BTreeMap<ContentHash, Vec<Location>>,
    scrub: bool,
    now: u64,
) -> Result<(Vec<Problem>, Survey, Vec<u64>)> {
    let mut repaired = Vec::new();
    // Segments whose records a fix deletes (lost, and no blob left in them).
    let mut retired = Vec::new();
    for _ in 0..MAX_PASSES {
        let mut s = survey(txn, inner, scrub, now)?;
        // Re-indexed blobs come first and alone: with their records back,
        // the next survey no longer sees the usage and segment accounting
        // they seemed to unbalance, so nothing right is rewritten.
        if reindex(txn, inner, copies, &s, &mut repaired) {
            continue;
        }
        let (mut left, mut fixed_any) = (Vec::new(), false);
        for finding in std::mem::take(&mut s.findings) {
            match finding.fix {
                Some(fix) => {
                    if fix.cf == Cf::Segments && fix.value.is_none() {
                        retired.push(keys::last_u64(&fix.key));
                    }
                    txn.set(fix.cf, fix.key, fix.value);
                    repaired.push(finding.problem);
                    fixed_any = true;
                }
                None => left.push(finding),
            }
        }
        if !fixed_any {
            s.findings = left;
            return Ok((repaired, s, retired));
        }
    }
    Err(Fault::Corrupt(format!(
        "repair did not settle after {MAX_PASSES} passes; nothing was written"
    )))
}

/// Gives each missing blob that has an intact copy in a segment a record
/// pointing at it, counting the file records that refer to it. Returns
/// whether it re-indexed any.
fn reindex(
    txn: &mut Txn<'_>,
    inner: &Inner,
    copies: &BTreeMap<ContentHash, Vec<Location>>,
    s: &Survey,
    repaired: &mut Vec<Problem>,
) -> bool {
    let mut any = false;
    for (hash, refs) in &s.missing_blobs {
        let intact = copies
            .get(hash)
            .into_iter()
            .flatten()
            .find(|loc| inner.blobs.read(**loc, *hash).is_ok());
        if let Some(&loc) = intact {
            let blob = BlobRecord {
                size: loc.length,
                refs: *refs,
                place: Place::Segment(loc),
            };
            txn.put(Cf::Blobs, hash.as_bytes().to_vec(), &blob);
            repaired.push(Problem {
                kind: "missing-blob",
                detail: format!(
                    "blob {hash} had no record; re-indexed its copy at segment {} offset {}",
                    loc.segment, loc.offset
                ),
                files: s.affected(hash),
            });
            any = true;
        }
    }
    any
}

/// The copies of content that has no blob record (after the repair's own
/// writes, which `txn` holds).
fn orphans(txn: &Txn<'_>, copies: &BTreeMap<ContentHash, Vec<Location>>) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    for (hash, locs) in copies {
        if txn.get_raw(Cf::Blobs, hash.as_bytes())?.is_some() {
            continue;
        }
        out.extend(locs.iter().map(|loc| Problem {
            kind: "orphan-record",
            detail: format!(
                "segment {} offset {}: a copy of content {hash} ({} bytes) that no blob record holds, garbage for compaction",
                loc.segment, loc.offset, loc.length
            ),
            files: Vec::new(),
        }));
    }
    Ok(out)
}
