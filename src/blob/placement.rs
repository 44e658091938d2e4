//! Which home holds each segment.
//!
//! A store's segments live on its local disk or in its bucket. Most of the
//! time all of them live in one; while a migration moves them
//! (`Store::migrate_blobs`), and after one that was cut off, some live in
//! each, and every read goes to the home of its own segment. Each
//! segment's *site* is committed in its metadata record; [`Homes`] is the
//! copy in memory, changed only after the commit that moves a segment, and
//! where new segments go (the *writes* site) is the store's choice of home.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::home::{Elsewhere, Home, Reconciled, Unreadable};
use crate::error::{Fault, Result};

/// Where a segment lives: on the local disk or in the store's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Site {
    /// A segment file under `segments/`.
    #[default]
    Disk,
    /// A pack object in the store's bucket.
    Bucket,
}

/// The homes of a store's segments and the site of each.
pub(crate) struct Homes {
    disk: Arc<dyn Home>,
    /// Attached at open when the store records a bucket, or by the
    /// migration that gives it one.
    bucket: OnceLock<Arc<dyn Home>>,
    /// Every segment's site, committed or being written.
    sites: RwLock<HashMap<u64, Site>>,
    /// Where new segments go.
    writes: RwLock<Site>,
    /// The bucket, while it has not answered since the store opened.
    unreached: Mutex<Option<Unreached>>,
    /// The highest pack id a late check of the bucket found: new segment
    /// ids go past it. Set before `unreached` is cleared, so that whoever
    /// finds the bucket checked finds it too.
    floor: AtomicU64,
    /// Whether `unreached` holds a bucket: read without its lock, which a
    /// check holds for as long as its requests take.
    deferred: AtomicBool,
    /// How many late checks have ended: a caller that waited for one to
    /// end takes its failure instead of waiting out the retries again.
    checks: AtomicU64,
}

/// A bucket that gave no answer when the store opened (see
/// [`Homes::defer_bucket`]).
struct Unreached {
    /// Checks that the prefix is the store's.
    check: Box<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    /// What the open was told.
    why: String,
    /// How the last late check failed.
    failed: Option<Fault>,
}

impl Homes {
    /// The homes of a store whose new segments go to `writes`.
    pub(crate) fn new(disk: Arc<dyn Home>, bucket: Option<Arc<dyn Home>>, writes: Site) -> Homes {
        let homes = Homes {
            disk,
            bucket: OnceLock::new(),
            sites: RwLock::new(HashMap::new()),
            writes: RwLock::new(writes),
            unreached: Mutex::new(None),
            floor: AtomicU64::new(0),
            deferred: AtomicBool::new(false),
            checks: AtomicU64::new(0),
        };
        if let Some(bucket) = bucket {
            homes.attach(bucket);
        }
        homes
    }

    /// Marks the bucket as one the open could not reach (`why`): the
    /// open's reconciliation then keeps every local copy of a segment
    /// committed to it and checks none of its packs, and until
    /// [`reach`](Self::reach) has run `check` (that its prefix is the
    /// store's) and listed its packs, no segment is started in either home
    /// (its id might be a pack's), nothing is deleted from it, and nothing
    /// is read from it: what a prefix not known to be the store's holds or
    /// lacks says nothing of the store.
    #[cfg_attr(
        not(feature = "s3"),
        expect(
            dead_code,
            reason = "only an open that reaches for a bucket defers it, and buckets need `s3`"
        )
    )]
    pub(crate) fn defer_bucket(&self, check: Box<dyn Fn() -> std::io::Result<()> + Send + Sync>, why: String) {
        *self.unreached.lock() = Some(Unreached {
            check,
            why,
            failed: None,
        });
        self.deferred.store(true, Ordering::SeqCst);
    }

    /// Whether the bucket has not answered since the store opened.
    pub(crate) fn deferred(&self) -> bool {
        self.deferred.load(Ordering::SeqCst)
    }

    /// Checks the bucket the open could not reach, if it has not answered
    /// since: its claim, then its packs' ids, the highest of which becomes
    /// the [`id_floor`](Self::id_floor), since packs no commit names (an
    /// upload cut off before its commit) keep their names. Nothing to do
    /// for a bucket checked at open, or for none.
    ///
    /// # Errors
    ///
    /// [`Fault::Io`] if it still gives no answer, or says its prefix is not
    /// the store's; the store is then left as it was. Callers that queued
    /// behind a check that failed get its error at once (an outage does
    /// not make a hundred readers wait out the retries in turn); a call
    /// that queued behind none asks again.
    pub(crate) fn reach(&self) -> Result<()> {
        if !self.deferred() {
            return Ok(());
        }
        let seen = self.checks.load(Ordering::SeqCst);
        let mut pending = self.unreached.lock();
        let (Some(unreached), Some(bucket)) = (pending.as_mut(), self.bucket.get()) else {
            return Ok(());
        };
        let context = format!(
            "checking that {} is this store's (it could not be reached when the store opened: {})",
            bucket.name(),
            unreached.why
        );
        if let Some(failed) = unreached
            .failed
            .as_ref()
            .filter(|_| self.checks.load(Ordering::SeqCst) != seen)
        {
            return Err(failed.replicate());
        }
        let checked = (unreached.check)()
            .map_err(|e| Fault::io(context, e))
            .and_then(|()| bucket.lengths());
        self.checks.fetch_add(1, Ordering::SeqCst);
        let highest = match checked {
            Ok(lengths) => lengths.keys().max().copied().unwrap_or(0),
            Err(e) => {
                unreached.failed = Some(e.replicate());
                return Err(e);
            }
        };
        self.floor.fetch_max(highest, Ordering::SeqCst);
        *pending = None;
        self.deferred.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The highest pack id a late [`reach`](Self::reach) found in the
    /// bucket (0 if none ran): new segment ids go past it.
    pub(crate) fn id_floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Gives the store a bucket; false if it had one already (which stays).
    pub(crate) fn attach(&self, bucket: Arc<dyn Home>) -> bool {
        self.bucket.set(bucket).is_ok()
    }

    /// The home at `site`, if the store has one there.
    pub(crate) fn home(&self, site: Site) -> Option<&dyn Home> {
        match site {
            Site::Disk => Some(&*self.disk),
            Site::Bucket => self.bucket.get().map(|b| &**b),
        }
    }

    /// The home of segment `id`. A bucket site without a bucket cannot
    /// happen (the open refuses such metadata, and a migration attaches
    /// the bucket before it places anything there); the local disk is then
    /// asked, and says the segment is missing.
    pub(crate) fn of(&self, id: u64) -> &dyn Home {
        self.home(self.site(id)).unwrap_or(&*self.disk)
    }

    /// The home new segments go to.
    pub(crate) fn of_writes(&self) -> &dyn Home {
        self.home(self.writes()).unwrap_or(&*self.disk)
    }

    /// The site of segment `id`: a segment not yet placed is where new
    /// segments go.
    pub(crate) fn site(&self, id: u64) -> Site {
        self.sites
            .read()
            .get(&id)
            .copied()
            .unwrap_or_else(|| *self.writes.read())
    }

    /// Notes that segment `id` lives at `site`: a new segment, or one whose
    /// move has committed.
    pub(crate) fn place(&self, id: u64, site: Site) {
        self.sites.write().insert(id, site);
    }

    /// Forgets segment `id`, removed.
    pub(crate) fn forget(&self, id: u64) {
        self.sites.write().remove(&id);
    }

    /// Where new segments go.
    pub(crate) fn writes(&self) -> Site {
        *self.writes.read()
    }

    /// Sends new segments to `site`.
    pub(crate) fn set_writes(&self, site: Site) {
        *self.writes.write() = site;
    }

    /// Bytes `range` of segment `id`, from its home. A segment whose move
    /// committed while the read was on its way finds its old copy gone:
    /// the read is asked again of the new home, so that a move never shows
    /// as a lost segment.
    pub(crate) fn read(&self, id: u64, range: Range<u64>) -> std::result::Result<Bytes, Unreadable> {
        let site = self.site(id);
        if site == Site::Bucket {
            self.reach()
                .map_err(|e| Unreadable::Io(format!("reading pack {id}"), std::io::Error::other(e.to_string())))?;
        }
        match self.home(site).unwrap_or(&*self.disk).read(id, range.clone()) {
            Err(Unreadable::Lost(_)) if self.site(id) != site => self.of(id).read(id, range),
            other => other,
        }
    }

    /// As [`lengths`](Self::lengths), of the homes the open's
    /// reconciliation looked at: the local disk alone while the bucket has
    /// not answered (its segments were not found damaged), so that the
    /// open asks nothing more of it.
    ///
    /// # Errors
    ///
    /// A listing's.
    pub(crate) fn reconciled_lengths(&self) -> Result<BTreeMap<u64, u64>> {
        if self.deferred() {
            return self.disk.lengths();
        }
        self.lengths()
    }

    /// The length of every segment held, by id, each from its own home
    /// (during a move a segment has a copy in both); a segment no record
    /// names, from whichever home holds it.
    ///
    /// # Errors
    ///
    /// A listing's; [`reach`](Self::reach)'s for a bucket that has not
    /// answered since the open.
    pub(crate) fn lengths(&self) -> Result<BTreeMap<u64, u64>> {
        self.reach()?;
        let mut out = self.disk.lengths()?;
        let Some(bucket) = self.bucket.get() else {
            return Ok(out);
        };
        let sites = self.sites.read();
        out.retain(|id, _| sites.get(id) != Some(&Site::Bucket));
        for (id, len) in bucket.lengths()? {
            if sites.get(&id) != Some(&Site::Disk) {
                out.insert(id, len);
            }
        }
        Ok(out)
    }

    /// Reconciles each home with the segments `committed` to it (id to
    /// committed length and site), and places them all.
    ///
    /// # Errors
    ///
    /// A home's reconciliation's.
    pub(crate) fn reconcile(&self, committed: &BTreeMap<u64, (u64, Site)>) -> Result<Reconciled> {
        let at = |site: Site| -> BTreeMap<u64, u64> {
            committed
                .iter()
                .filter(|(_, &(_, s))| s == site)
                .map(|(&id, &(len, _))| (id, len))
                .collect()
        };
        let (on_disk, in_bucket) = (at(Site::Disk), at(Site::Bucket));
        let out = match self.bucket.get() {
            None => self.disk.reconcile(&on_disk, &Elsewhere::new())?,
            Some(bucket) if self.deferred() => {
                // Nothing is known of the packs: every local copy stays.
                let unknown: Elsewhere = in_bucket.keys().map(|&id| (id, None)).collect();
                let mut out = self.disk.reconcile(&on_disk, &unknown)?;
                if let Some(unreached) = self.unreached.lock().as_ref() {
                    out.notes.push(format!(
                        "{} could not be reached ({}): its packs are not checked, and nothing is \
                         written to it or deleted from it until it answers",
                        bucket.name(),
                        unreached.why
                    ));
                }
                out.highest = out.highest.max(in_bucket.keys().max().copied().unwrap_or(0));
                out
            }
            Some(bucket) => {
                // A copy is dropped from one home only where the other
                // holds the segment whole. The local files' lengths come
                // from a directory listing; the bucket is listed once, by
                // its own reconciliation, whose damage says which packs
                // are not whole.
                let files = self.disk.lengths()?;
                let local: Elsewhere = on_disk
                    .iter()
                    .map(|(&id, &len)| (id, files.get(&id).is_some_and(|&held| held >= len).then_some(len)))
                    .collect();
                let more = bucket.reconcile(&in_bucket, &local)?;
                let uploaded: Elsewhere = in_bucket
                    .iter()
                    .map(|(&id, &len)| (id, (!more.damaged.contains(&id)).then_some(len)))
                    .collect();
                let mut out = self.disk.reconcile(&on_disk, &uploaded)?;
                out.damaged.extend(more.damaged);
                out.notes.extend(more.notes);
                out.highest = out.highest.max(more.highest);
                out
            }
        };
        self.sites
            .write()
            .extend(committed.iter().map(|(&id, &(_, site))| (id, site)));
        Ok(out)
    }
}
