//! The seam between the blob log and where its sealed segments live.
//!
//! The log ([`BlobLog`](super::BlobLog)) always appends to a local file,
//! the *spool*: records are written, hashed and outboarded there whatever
//! the home. What happens to a segment once it must be durable is the
//! home's: the local disk ([`Disk`](super::disk::Disk)) syncs the spool,
//! which is the segment for good; a bucket
//! ([`Bucket`](super::bucket::Bucket), feature `s3`) uploads it as one
//! immutable *pack* object, and the spool is dropped. `DESIGN.md` §15 has
//! the layout and the commit order.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use bytes::Bytes;

use super::format::{scan_window, RecordHeader, ScanEnd, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::error::Result;
use crate::fs::FsFile;
use crate::health::Health;

/// Why bytes of a segment could not be read: they are lost (the segment is
/// gone or shorter than the metadata says, which is damage), or its home
/// could not give them now (which is not: the next read may succeed).
#[derive(Debug)]
pub(crate) enum Unreadable {
    Lost(String),
    Io(String, io::Error),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Lost(detail) => f.write_str(detail),
            Unreadable::Io(context, e) => write!(f, "{context}: {e}"),
        }
    }
}

/// What a home found at open, reconciling what it holds with the committed
/// segment lengths.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// Segments it should hold and does not, wholly.
    pub damaged: Vec<u64>,
    /// One line per repair made or damage found.
    pub notes: Vec<String>,
    /// The highest segment id it holds or held, committed or not: ids are
    /// never reused, so that a create-only name is never taken twice.
    pub highest: u64,
}

/// The segments committed to the other home: id to the committed length,
/// if that home holds the segment whole (`None`: it is missing or short
/// there).
pub(crate) type Elsewhere = BTreeMap<u64, Option<u64>>;

/// Where sealed segments live for good.
pub(crate) trait Home: Send + Sync {
    /// How messages name it: `local disk`, or the bucket's URL.
    fn name(&self) -> &str;

    /// Whether a segment stays where it was spooled (the local disk): the
    /// log then keeps appending to a durable segment until it is full, and
    /// reopens the newest one at open. A home that does not (a bucket)
    /// takes each segment once, sealed, when its records must be durable:
    /// one group commit, one pack.
    fn keeps_spool(&self) -> bool;

    /// Makes bytes `0..len` of segment `id`, written to `spool`, durable in
    /// this home. Called before the commit that points at them, so that
    /// nothing acknowledged is only in memory or in a spool a crash drops.
    ///
    /// # Errors
    ///
    /// The write's, with the segment named. A local `fdatasync` that fails
    /// poisons `health` (the page cache may have dropped the bytes); a
    /// failed upload does not (the spool still holds them).
    fn persist(&self, id: u64, spool: &dyn FsFile, len: u64, health: &Health) -> Result<()>;

    /// Bytes `range` of segment `id`, unverified: callers check the
    /// headers and hashes of what they use.
    ///
    /// # Errors
    ///
    /// [`Unreadable::Lost`] if the segment is missing or shorter than
    /// `range.end`, [`Unreadable::Io`] if it could not be read now.
    fn read(&self, id: u64, range: Range<u64>) -> std::result::Result<Bytes, Unreadable>;

    /// The bytes a scan of segment records should fetch at once: the whole
    /// segment where reading it costs nothing until it is looked at (a
    /// memory map), a window where each read is a request.
    fn scan_window(&self) -> u64;

    /// The length of every segment held, by id.
    ///
    /// # Errors
    ///
    /// The listing's.
    fn lengths(&self) -> Result<BTreeMap<u64, u64>>;

    /// Removes segment `id`, whose removal from the metadata has committed;
    /// one already gone is not an error.
    ///
    /// # Errors
    ///
    /// The removal's.
    fn remove(&self, id: u64) -> Result<()>;

    /// Gives up the store's claim `claim` on this home, which the store no
    /// longer uses (a bucket's prefix; the local disk has none).
    ///
    /// # Errors
    ///
    /// The request's.
    #[cfg_attr(
        not(feature = "s3"),
        expect(dead_code, reason = "only a migration lets a bucket go, and buckets need `s3`")
    )]
    fn release(&self, claim: &str) -> io::Result<()>;

    /// Reconciles what the home holds with `committed` (segment id to its
    /// committed length) at open: what no commit names was never
    /// acknowledged and is removed, what is missing or short is reported.
    /// `elsewhere` names the segments committed to the other home, each
    /// with its committed length if the other home holds it whole: a copy
    /// of one of those here (a spool whose pack is up, what a move cut off
    /// after its commit left behind) is removed; a copy of one the other
    /// home lacks may be the only one, and is kept.
    ///
    /// # Errors
    ///
    /// A listing or removal that fails.
    fn reconcile(&self, committed: &BTreeMap<u64, u64>, elsewhere: &Elsewhere) -> Result<Reconciled>;
}

/// Walks the record headers of segment `id`, whose committed part ends at
/// `end`, reading it `home`'s [`scan_window`](Home::scan_window) at a time:
/// the records of a pack of thumbnails come a window per request, a video
/// that fills its pack costs one window for its header. Stops as
/// [`scan_records`](super::format::scan_records) stops, at the first header
/// that does not decode, name its own place or fit.
///
/// # Errors
///
/// The first read that fails.
pub(crate) fn scan(
    home: &dyn Home,
    id: u64,
    end: u64,
) -> std::result::Result<(Vec<RecordHeader>, ScanEnd), Unreadable> {
    let window = home.scan_window().max(RECORD_HEADER_LEN as u64);
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as u64;
    while at < end {
        let upto = end.min(at.saturating_add(window));
        let bytes = home.read(id, at..upto)?;
        if (bytes.len() as u64) < upto - at {
            return Err(Unreadable::Lost(format!(
                "segment {id} ended at {} of the {upto} bytes read",
                at + bytes.len() as u64
            )));
        }
        // The window holds at least one header, so each turn moves on.
        match scan_window(&bytes, at, id, end, &mut records) {
            Ok(next) => at = next,
            Err(stop) => return Ok((records, stop)),
        }
    }
    Ok((
        records,
        ScanEnd {
            offset: at,
            error: None,
        },
    ))
}
