//! Reading a file's bytes, always verified: a small blob is checked whole
//! before a byte is returned; a large one (with an outboard,
//! [`crate::blob::outboard`]) a chunk group at a time, as its bytes are
//! read, so that a seek into a video costs the range it reads.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::{Inner, Store, User};
use crate::blob::outboard::{self, Mismatch, Part, GROUP};
use crate::blob::Location;
use crate::error::{Fault, ReadError, Result};
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::meta::keys;
use crate::meta::records::{BlobRecord, FileRecord, Place};
use crate::meta::Cf;

/// A file's bytes as a stream ([`Read`] and [`Seek`]) and by range
/// ([`FileReader::range`]), backed by the blob's memory map on local disk
/// (no copy is made) or fetched by ranged GETs from a bucket; no byte is
/// returned before it is checked.
///
/// A blob of up to 16 MiB is checked whole when the reader is opened. A
/// larger one is checked as it is read, each 64 KiB chunk group the first
/// time a read touches it, against the blob's outboard: opening it costs
/// no hashing, and reading a range costs that range (from a bucket, a GET
/// of that range rounded out to whole groups, so that memory is bounded by
/// the ranges asked for, never the blob). A read that meets
/// damaged bytes fails (with [`ReadError::Integrity`], or an
/// [`io::ErrorKind::InvalidData`] error wrapping it from [`Read`]) and
/// returns none of them.
#[derive(Clone)]
pub struct FileReader {
    store: Store,
    hash: ContentHash,
    len: u64,
    body: Body,
    check: Check,
    pos: u64,
    /// The last part fetched from a bucket, checked: where it starts, and
    /// its bytes. A stream read in small pieces is served from it instead
    /// of a GET per piece.
    fetched: Option<(u64, Bytes)>,
}

/// A fetch from a bucket asks for at least this much (rounded out to
/// whole chunk groups, within the blob): a stream read 8 KiB at a time
/// costs a GET per mebibyte, not per read.
const FETCH_AHEAD: u64 = 1 << 20;

/// Where a reader's bytes come from.
#[derive(Clone)]
enum Body {
    /// The blob's bytes as mapped or held: only the parts `check` has
    /// cleared are ever handed out.
    Held(Bytes),
    /// A large blob's record in a bucket: each range is fetched when it is
    /// read and checked against the outboard (`check` is then `Groups`).
    Fetched(Location),
}

#[derive(Clone)]
enum Check {
    /// Every byte was checked.
    Whole,
    /// Checked a chunk group at a time against `outboard`; `done` has a bit
    /// per group already checked.
    Groups {
        outboard: Arc<[u8]>,
        place: Place,
        done: Vec<u64>,
    },
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("hash", &self.hash)
            .field("len", &self.len())
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl FileReader {
    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's content hash (BLAKE3).
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// The bytes of `range` (byte offsets; the part of it that lies within
    /// the file), checked: on local disk without a copy (the `Bytes`
    /// borrows the blob's memory map), from a bucket as one ranged GET. The
    /// stream position does not move.
    ///
    /// # Errors
    ///
    /// - [`ReadError::Integrity`] if a chunk group the range touches fails its
    ///   check: none of the range is returned, the damage is remembered, and an
    ///   upload of the same content heals it.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let album = u.ensure_album("A").unwrap();
    /// let video: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    /// let r = u.upload(album, "v.mp4", Content::from(video.clone()), DedupMode::Hash).unwrap();
    /// let mut reader = u.open_file(r.file_id).unwrap();
    /// assert_eq!(reader.range(10_000_000..10_000_100).unwrap(), &video[10_000_000..10_000_100]);
    /// assert_eq!(reader.range(19_999_990..u64::MAX).unwrap().len(), 10);
    /// ```
    pub fn range(&mut self, range: Range<u64>) -> Result<Bytes, ReadError> {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        match self.body.clone() {
            Body::Held(data) => {
                if start < end {
                    self.check(start, end)?;
                }
                Ok(data.slice(start as usize..end as usize))
            }
            Body::Fetched(_) if start == end => Ok(Bytes::new()),
            Body::Fetched(loc) => {
                if let Some((at, bytes)) = &self.fetched {
                    if *at <= start && end <= at + bytes.len() as u64 {
                        return Ok(bytes.slice((start - at) as usize..(end - at) as usize));
                    }
                }
                self.fetch(loc, start, end, true)
            }
        }
    }

    /// Fetches the groups of `start..end` from the bucket and checks them;
    /// a damaged outboard is made again from the whole blob once (`retry`).
    fn fetch(&mut self, loc: Location, start: u64, end: u64, retry: bool) -> Result<Bytes, ReadError> {
        let Check::Groups { outboard, place, .. } = &self.check else {
            unreachable!("a fetched body is checked by groups");
        };
        let (outboard, place) = (outboard.clone(), place.clone());
        let inner = &self.store.inner;
        let ahead = end.max(start.saturating_add(FETCH_AHEAD)).min(self.len);
        let span = start / GROUP * GROUP..(ahead.div_ceil(GROUP) * GROUP).min(self.len);
        let bytes = match inner.blobs.data_range(loc, self.hash, span.clone()) {
            Ok(bytes) => bytes,
            Err(e @ Fault::Integrity { .. }) => {
                // A compaction may have moved the blob since the reader was
                // opened, and deleted the pack it was in: read it where it
                // is now. Only damage at an unchanged place is damage.
                let now = inner.blob_place(&self.hash)?;
                if let Place::Segment(moved) = &now {
                    if *moved != loc && moved.length == loc.length {
                        self.body = Body::Fetched(*moved);
                        if let Check::Groups { place, .. } = &mut self.check {
                            *place = now.clone();
                        }
                        return self.fetch(*moved, start, end, retry);
                    }
                }
                inner.note_damage(self.hash, place.clone());
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let part = Part {
            size: self.len,
            at: span.start,
            bytes: &bytes,
        };
        let damaged = |detail: String| {
            inner.note_damage(self.hash, place.clone());
            ReadError::Integrity {
                hash: self.hash,
                detail,
            }
        };
        match outboard::check(&self.hash, part, &outboard, span.clone()) {
            Ok(()) => {
                let out = bytes.slice((start - span.start) as usize..(end - span.start) as usize);
                self.fetched = Some((span.start, bytes));
                Ok(out)
            }
            Err(Mismatch::Data(at)) => Err(damaged(format!(
                "the chunk group at byte {at} does not match the blob's hash"
            ))),
            Err(Mismatch::Outboard) if retry => {
                match inner.outboard_of(&self.hash, &mut inner.blobs.reader(loc, self.hash), self.len) {
                    Some(ob) => {
                        if let Check::Groups { outboard, .. } = &mut self.check {
                            *outboard = ob;
                        }
                        self.fetch(loc, start, end, false)
                    }
                    None => Err(damaged("the data does not hash to the blob's hash".into())),
                }
            }
            Err(Mismatch::Outboard) => Err(damaged("the blob's outboard does not match its hash".into())),
        }
    }

    /// Checks the groups of `start..end` not checked yet.
    fn check(&mut self, start: u64, end: u64) -> Result<(), ReadError> {
        let Check::Groups { outboard, place, done } = &mut self.check else {
            return Ok(());
        };
        let is_done = |g: u64| done[(g / 64) as usize] & (1 << (g % 64)) != 0;
        let groups = start / GROUP..end.div_ceil(GROUP);
        let Some(first) = groups.clone().find(|&g| !is_done(g)) else {
            return Ok(());
        };
        let last = groups.rev().find(|&g| !is_done(g)).unwrap_or(first);
        let span = first * GROUP..((last + 1) * GROUP).min(self.len);
        let inner = &self.store.inner;
        let Body::Held(data) = &self.body else {
            unreachable!("only held bytes are checked in place");
        };
        match outboard::check(&self.hash, Part::whole(data), outboard, span) {
            Ok(()) => {
                for g in first..=last {
                    done[(g / 64) as usize] |= 1 << (g % 64);
                }
                Ok(())
            }
            Err(Mismatch::Data(at)) => {
                inner.note_damage(self.hash, place.clone());
                Err(ReadError::Integrity {
                    hash: self.hash,
                    detail: format!("the chunk group at byte {at} does not match the blob's hash"),
                })
            }
            Err(Mismatch::Outboard) => {
                // The tree kept beside the bytes is wrong, not necessarily
                // the bytes: they are checked whole, and if they are right,
                // the outboard is made again from them.
                let place = place.clone();
                match inner.outboard_of(&self.hash, &mut &data[..], self.len) {
                    Some(_) => {
                        self.check = Check::Whole;
                        Ok(())
                    }
                    None => {
                        inner.note_damage(self.hash, place);
                        Err(ReadError::Integrity {
                            hash: self.hash,
                            detail: "the data does not hash to the blob's hash".into(),
                        })
                    }
                }
            }
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.len().saturating_sub(self.pos));
        let bytes = self
            .range(self.pos..self.pos + want)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        self.pos += bytes.len() as u64;
        Ok(bytes.len())
    }
}

impl Seek for FileReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let to = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = to.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(self.pos)
    }
}

impl Inner {
    /// The verified bytes of blob `hash`.
    pub(crate) fn read_blob(&self, hash: &ContentHash) -> Result<Bytes> {
        self.at_place(hash, |place| self.read_place(hash, place))
    }

    /// Runs `read` on the place of blob `hash`, again if a compaction moved
    /// the blob in between reading its record and mapping its segment:
    /// only then is another attempt worth making, damage at an unchanged
    /// place being final. Damage is remembered, so that an upload of the
    /// content heals it.
    fn at_place<T>(&self, hash: &ContentHash, read: impl Fn(&Place) -> Result<T>) -> Result<T> {
        let mut place = self.blob_place(hash)?;
        loop {
            let err = match read(&place) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let now = self.blob_place(hash)?;
            if now == place {
                if matches!(err, Fault::Integrity { .. }) {
                    self.note_damage(*hash, place);
                }
                return Err(err);
            }
            place = now;
        }
    }

    /// The bytes of blob `hash` and how a reader checks them: a blob with
    /// an outboard ([`outboard::wanted`]) a group at a time, any other
    /// whole, here. A large blob stored before outboards existed (or whose
    /// outboard is gone) is checked whole here too, and gets its outboard
    /// from that same pass. A large blob in a bucket is not fetched here:
    /// the reader fetches each range it is asked for.
    fn open_blob(&self, hash: &ContentHash) -> Result<(Body, Check)> {
        self.at_place(hash, |place| match place {
            Place::Segment(loc) if outboard::wanted(loc.length) => {
                let held = match self.outboards.get(hash) {
                    Some(ob) => Some(ob),
                    None => self.meta.get_raw(Cf::Outboards, hash.as_bytes())?.map(Arc::from),
                };
                let held = held.filter(|ob| outboard::fits(loc.length, ob.len()));
                let groups = |outboard| Check::Groups {
                    outboard,
                    place: place.clone(),
                    done: vec![0; loc.length.div_ceil(GROUP).div_ceil(64) as usize],
                };
                // Mapped on the local disk, or read a range at a time: a
                // segment that moves to the bucket meanwhile is never
                // fetched whole.
                let Some(data) = self.blobs.mapped_record(*loc, *hash)? else {
                    let ob = match held {
                        Some(ob) => ob,
                        None => {
                            let mut reader = self.blobs.reader(*loc, *hash);
                            match self.outboard_of(hash, &mut reader, loc.length) {
                                Some(ob) => ob,
                                None => return Err(reader.failed.unwrap_or_else(|| not_its_hash(hash))),
                            }
                        }
                    };
                    self.outboards.put(*hash, ob.clone());
                    return Ok((Body::Fetched(*loc), groups(ob)));
                };
                match held {
                    Some(ob) => {
                        self.outboards.put(*hash, ob.clone());
                        Ok((Body::Held(data), groups(ob)))
                    }
                    None => match self.outboard_of(hash, &mut &data[..], loc.length) {
                        Some(_) => Ok((Body::Held(data), Check::Whole)),
                        None => Err(not_its_hash(hash)),
                    },
                }
            }
            _ => Ok((Body::Held(self.read_place(hash, place)?), Check::Whole)),
        })
    }

    /// Hashes `len` bytes of `source`, a whole copy of blob `hash`, making
    /// its outboard in the same pass, and keeps the outboard if the bytes
    /// are right: `None` if they are not (or could not be read). Keeping it
    /// is best effort (a store that refuses writes serves the read all the
    /// same, and makes it again next time).
    fn outboard_of(&self, hash: &ContentHash, source: &mut dyn Read, len: u64) -> Option<Arc<[u8]>> {
        let (actual, ob) = outboard::create(source, len, &mut |_| Ok(())).ok()?;
        if actual != *hash {
            return None;
        }
        let hash = *hash;
        let kept: Arc<[u8]> = Arc::from(&ob[..]);
        self.outboards.put(hash, kept.clone());
        let _ = self.commit(move |txn| {
            if txn.exists(Cf::Blobs, hash.as_bytes())? {
                txn.set(Cf::Outboards, hash.as_bytes().to_vec(), Some(ob));
            }
            Ok(())
        });
        Some(kept)
    }

    /// Reads the copy of blob `hash` at `place` and checks it, returning
    /// its length: a scrub's read, which has the place from the record it
    /// scanned. A copy that fails its hash is remembered as damaged, as a
    /// failed [`read_blob`](Self::read_blob) remembers it.
    pub(crate) fn check_copy(&self, hash: &ContentHash, place: &Place) -> Result<u64> {
        let checked = match place {
            // A large blob in a bucket is hashed as it streams by, never
            // held whole.
            Place::Segment(loc) if !self.blobs.maps_records(loc.segment) && outboard::wanted(loc.length) => {
                self.hash_record(*loc, hash)
            }
            _ => self.read_place(hash, place).map(|b| b.len() as u64),
        };
        match checked {
            Ok(len) => Ok(len),
            Err(e) => {
                if matches!(e, Fault::Integrity { .. }) {
                    self.note_damage(*hash, place.clone());
                }
                Err(e)
            }
        }
    }

    /// Hashes the record at `loc` as it streams from its home, and checks
    /// it is blob `hash`: its length.
    fn hash_record(&self, loc: Location, hash: &ContentHash) -> Result<u64> {
        let mut reader = self.blobs.reader(loc, *hash);
        let mut hasher = crate::hash::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) => {
                    return Err(reader
                        .failed
                        .take()
                        .unwrap_or_else(|| Fault::io(format!("reading blob {hash}"), e)))
                }
            }
        }
        if hasher.finalize() != *hash {
            return Err(not_its_hash(hash));
        }
        Ok(loc.length)
    }

    fn blob_place(&self, hash: &ContentHash) -> Result<Place> {
        let blob: BlobRecord = self
            .meta
            .get(Cf::Blobs, hash.as_bytes())?
            .ok_or_else(|| Fault::Integrity {
                hash: *hash,
                detail: "a file refers to it but the blob has no record".into(),
            })?;
        Ok(blob.place)
    }

    fn read_place(&self, hash: &ContentHash, place: &Place) -> Result<Bytes> {
        match place {
            Place::Inline(data) if ContentHash::of(data) == *hash => Ok(Bytes::copy_from_slice(data)),
            Place::Inline(_) => Err(Fault::Integrity {
                hash: *hash,
                detail: "inline data does not match its hash".into(),
            }),
            Place::Segment(loc) => self.blobs.read(*loc, *hash),
        }
    }
}

impl User {
    /// A file's bytes (live or trashed): zero-copy from the segment's memory
    /// map on local disk, one ranged GET from a bucket. The bytes are checked against the file's BLAKE3 hash first: a
    /// damaged blob gives [`ReadError::Integrity`], never wrong bytes, and is
    /// remembered as damaged so that the next upload of the content heals it.
    ///
    /// # Errors
    ///
    /// - [`ReadError::UnknownFile`] if the user has no such file, live or trashed
    ///   (another user's file id is unknown too).
    /// - [`ReadError::Integrity`] if the stored bytes fail their check (damaged or
    ///   missing segment, bad record, wrong hash); the damage is remembered, and an upload
    ///   of the same content heals it.
    /// - [`ReadError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// let f = u.upload(a, "1.jpg", Content::from(vec![9u8; 50_000]), DedupMode::Hash).unwrap().file_id;
    /// assert_eq!(u.read(f).unwrap(), vec![9u8; 50_000]);
    /// ```
    pub fn read(&self, file: FileId) -> Result<Bytes, ReadError> {
        let hash = self.file_hash(file)?;
        Ok(self.inner().read_blob(&hash)?)
    }

    /// A file's bytes as a verified stream, and by verified range: see
    /// [`FileReader`]. A file of up to 16 MiB is checked whole here, as
    /// [`User::read`] checks it; a larger one as it is read, so that opening
    /// it costs no hashing and a range costs its own length.
    ///
    /// # Errors
    ///
    /// - [`ReadError::UnknownFile`] if the user has no such file, live or trashed
    ///   (another user's file id is unknown too).
    /// - [`ReadError::Integrity`] if the stored bytes fail their check (damaged or
    ///   missing segment, bad record, wrong hash); the damage is remembered, and an upload
    ///   of the same content heals it.
    /// - [`ReadError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use std::io::Read;
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let album = u.ensure_album("A").unwrap();
    /// let r = u.upload(album, "v.mp4", Content::from(vec![1u8; 10_000]), DedupMode::Hash).unwrap();
    /// let mut out = Vec::new();
    /// u.open_file(r.file_id).unwrap().read_to_end(&mut out).unwrap();
    /// assert_eq!(out, vec![1u8; 10_000]);
    /// ```
    pub fn open_file(&self, file: FileId) -> Result<FileReader, ReadError> {
        let inner = self.inner();
        let hash = self.file_hash(file)?;
        let (body, check) = inner.open_blob(&hash)?;
        let len = match &body {
            Body::Held(data) => data.len() as u64,
            Body::Fetched(loc) => loc.length,
        };
        Ok(FileReader {
            store: self.store().clone(),
            hash,
            len,
            body,
            check,
            pos: 0,
            fetched: None,
        })
    }

    fn file_hash(&self, file: FileId) -> Result<ContentHash> {
        let uid = self.id()?.ok_or(Fault::UnknownFile(file))?;
        let rec: FileRecord = self
            .inner()
            .meta
            .get(Cf::Files, &keys::file(uid, file.0))?
            .ok_or(Fault::UnknownFile(file))?;
        Ok(rec.hash)
    }
}

fn not_its_hash(hash: &ContentHash) -> Fault {
    Fault::Integrity {
        hash: *hash,
        detail: "the data does not hash to the blob's hash".into(),
    }
}
