//! Value encodings of the metadata records.
//!
//! Every value starts with a version byte, so a later release can read old
//! records and refuse unknown ones. Fields are fixed-width little-endian
//! integers and length-prefixed strings, in the order of the struct. Decoding
//! never panics on arbitrary bytes: it returns [`DecodeError`], which the
//! store reports as corruption.

use crate::blob::format::RECORD_HEADER_LEN;
use crate::blob::{Location, Site};
use crate::hash::ContentHash;
use crate::names::FileName;
use crate::stamp::Stamp;

/// The version of every record but one.
const V1: u8 = 1;
/// The version of [`UploadRecord`] since metadata format 2 (the staged file
/// number added, the key holding a random id), of [`SourceRecord`] since it
/// keeps the whole [`Stamp`], and of a [`FileRecord`] with a modification
/// time (version-1 source and file records still decode).
const V2: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {why}")]
pub(crate) struct DecodeError {
    what: &'static str,
    why: &'static str,
}

pub(crate) struct Enc(Vec<u8>);

impl Enc {
    fn new() -> Self {
        Enc(vec![V1])
    }
    fn versioned(version: u8) -> Self {
        Enc(vec![version])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        self = self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    fn hash(mut self, h: &ContentHash) -> Self {
        self.0.extend_from_slice(h.as_bytes());
        self
    }
    fn opt(self, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.u8(1).u64(v),
            None => self.u8(0),
        }
    }
}

pub(crate) struct Dec<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Dec<'a> {
    fn new(what: &'static str, b: &'a [u8]) -> Result<Self, DecodeError> {
        Self::versioned(what, b, V1)
    }
    fn versioned(what: &'static str, b: &'a [u8], version: u8) -> Result<Self, DecodeError> {
        Ok(Self::any(what, b, &[version])?.0)
    }
    /// A decoder of a record of any of `versions`, and its version.
    fn any(what: &'static str, b: &'a [u8], versions: &[u8]) -> Result<(Self, u8), DecodeError> {
        let mut d = Dec { what, rest: b };
        match d.u8()? {
            v if versions.contains(&v) => Ok((d, v)),
            _ => Err(d.err("unknown record version")),
        }
    }
    fn err(&self, why: &'static str) -> DecodeError {
        DecodeError { what: self.what, why }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(self.err("truncated"));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("invalid UTF-8"))
    }
    fn hash(&mut self) -> Result<ContentHash, DecodeError> {
        Ok(ContentHash::from_bytes(self.take(32)?.try_into().expect("32 bytes")))
    }
    fn opt(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(self.err("bad option tag")),
        }
    }
    fn finish<T>(self, v: T) -> Result<T, DecodeError> {
        if self.rest.is_empty() {
            Ok(v)
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// A value that can be stored in a column family.
pub(crate) trait Record: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(b: &[u8]) -> Result<Self, DecodeError>;
}

/// A user's counters, kept exact by updating them in the same batch as the
/// change that moves them; `verify` recomputes them from the file records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserRecord {
    pub next_album: u64,
    pub next_file: u64,
    pub limit: Option<u64>,
    /// Sum of the sizes of distinct blobs referenced by any file record
    /// (live or trashed): what the quota charges.
    pub unique_bytes: u64,
    /// Sum of the sizes of all file records, live and trashed.
    pub logical_bytes: u64,
    pub live_files: u64,
    pub trashed_files: u64,
    /// Distinct blobs referenced.
    pub blobs: u64,
    /// Sizes of the distinct blobs referenced only by trashed files: what
    /// emptying the trash would free from the quota.
    pub trash_bytes: u64,
}

impl Record for UserRecord {
    fn encode(&self) -> Vec<u8> {
        Enc::new()
            .u64(self.next_album)
            .u64(self.next_file)
            .opt(self.limit)
            .u64(self.unique_bytes)
            .u64(self.logical_bytes)
            .u64(self.live_files)
            .u64(self.trashed_files)
            .u64(self.blobs)
            .u64(self.trash_bytes)
            .0
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("user record", b)?;
        let r = UserRecord {
            next_album: d.u64()?,
            next_file: d.u64()?,
            limit: d.opt()?,
            unique_bytes: d.u64()?,
            logical_bytes: d.u64()?,
            live_files: d.u64()?,
            trashed_files: d.u64()?,
            blobs: d.u64()?,
            trash_bytes: d.u64()?,
        };
        d.finish(r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlbumRecord {
    pub name: String,
    pub created_ms: u64,
    /// Number of member files, and the sum of their sizes.
    pub files: u64,
    pub bytes: u64,
}

impl Record for AlbumRecord {
    fn encode(&self) -> Vec<u8> {
        Enc::new()
            .bytes(self.name.as_bytes())
            .u64(self.created_ms)
            .u64(self.files)
            .u64(self.bytes)
            .0
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("album record", b)?;
        let r = AlbumRecord {
            name: d.string()?,
            created_ms: d.u64()?,
            files: d.u64()?,
            bytes: d.u64()?,
        };
        d.finish(r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRecord {
    pub name: FileName,
    pub hash: ContentHash,
    pub size: u64,
    pub created_ms: u64,
    /// The albums the file is in; while trashed, the albums it was in, so
    /// that restoring puts it back.
    pub albums: Vec<u64>,
    pub trashed_ms: Option<u64>,
    /// The source's modification time, nanoseconds since the epoch (two's
    /// complement), if the upload gave one. A record without one is written
    /// as version 1, a record with one as version 2, so every record of
    /// either version re-encodes to its own bytes.
    pub modified_ns: Option<u64>,
}

impl Record for FileRecord {
    fn encode(&self) -> Vec<u8> {
        let version = if self.modified_ns.is_some() { V2 } else { V1 };
        let mut e = Enc::versioned(version)
            .bytes(self.name.as_bytes())
            .hash(&self.hash)
            .u64(self.size)
            .u64(self.created_ms)
            .opt(self.trashed_ms)
            .u64(self.albums.len() as u64);
        for a in &self.albums {
            e = e.u64(*a);
        }
        match self.modified_ns {
            Some(t) => e.u64(t).0,
            None => e.0,
        }
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let (mut d, version) = Dec::any("file record", b, &[V1, V2])?;
        let name = FileName::from(d.bytes()?.to_vec());
        let hash = d.hash()?;
        let size = d.u64()?;
        let created_ms = d.u64()?;
        let trashed_ms = d.opt()?;
        let n = d.u64()?;
        if n > d.rest.len() as u64 / 8 {
            return Err(d.err("album count exceeds the record"));
        }
        let albums = (0..n).map(|_| d.u64()).collect::<Result<_, _>>()?;
        let modified_ns = match version {
            V1 => None,
            _ => Some(d.u64()?),
        };
        d.finish(FileRecord {
            name,
            hash,
            size,
            created_ms,
            albums,
            trashed_ms,
            modified_ns,
        })
    }
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// Small blobs live in the metadata itself.
    Inline(Vec<u8>),
    Segment(Location),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    pub size: u64,
    /// File records of all users that reference this blob. Exact: updated in
    /// the batch that adds or drops the reference.
    pub refs: u64,
    pub place: Place,
}

impl Record for BlobRecord {
    fn encode(&self) -> Vec<u8> {
        let e = Enc::new().u64(self.size).u64(self.refs);
        match &self.place {
            Place::Inline(data) => e.u8(0).bytes(data).0,
            Place::Segment(l) => e.u8(1).u64(l.segment).u64(l.offset).0,
        }
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("blob record", b)?;
        let size = d.u64()?;
        let refs = d.u64()?;
        let place = match d.u8()? {
            0 => {
                let data = d.bytes()?;
                if data.len() as u64 != size {
                    return Err(d.err("inline data length differs from size"));
                }
                Place::Inline(data.to_vec())
            }
            1 => {
                let (segment, offset) = (d.u64()?, d.u64()?);
                Place::Segment(location(&d, segment, offset, size)?)
            }
            _ => return Err(d.err("bad place tag")),
        };
        d.finish(BlobRecord { size, refs, place })
    }
}

/// A record's place in a segment, refused if the record would end past
/// `u64::MAX`: no segment is that long, and every read computes the end, so
/// a damaged size must be a decoding error, not an overflow.
fn location(d: &Dec<'_>, segment: u64, offset: u64, length: u64) -> Result<Location, DecodeError> {
    let fits = offset
        .checked_add(RECORD_HEADER_LEN as u64)
        .and_then(|header_end| header_end.checked_add(length))
        .is_some();
    if !fits {
        return Err(d.err("record would end past the largest offset"));
    }
    Ok(Location {
        segment,
        offset,
        length,
    })
}

/// One user's references to one blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UserBlobRecord {
    /// The user's file records (live and trashed) with this content.
    pub refs: u64,
    /// Of those, the live ones.
    pub live: u64,
}

impl Record for UserBlobRecord {
    fn encode(&self) -> Vec<u8> {
        Enc::new().u64(self.refs).u64(self.live).0
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("user blob record", b)?;
        let r = UserBlobRecord {
            refs: d.u64()?,
            live: d.u64()?,
        };
        d.finish(r)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegmentRecord {
    /// Bytes of the file that committed metadata vouches for; anything after
    /// is truncated at open.
    pub committed_len: u64,
    /// Bytes of records that blobs point at. The rest below
    /// `committed_len` (after the header) is garbage for compaction.
    pub live_bytes: u64,
    /// Which home holds it. Encoded as a trailing byte `1` for the bucket
    /// and as nothing for the local disk, which is how every record before
    /// format 7 reads.
    pub site: Site,
}

impl Record for SegmentRecord {
    fn encode(&self) -> Vec<u8> {
        let e = Enc::new().u64(self.committed_len).u64(self.live_bytes);
        match self.site {
            Site::Disk => e.0,
            Site::Bucket => e.u8(1).0,
        }
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("segment record", b)?;
        let committed_len = d.u64()?;
        let live_bytes = d.u64()?;
        let site = match d.rest.first() {
            None => Site::Disk,
            Some(1) => {
                d.u8()?;
                Site::Bucket
            }
            Some(_) => return Err(d.err("bad segment site")),
        };
        d.finish(SegmentRecord {
            committed_len,
            live_bytes,
            site,
        })
    }
}

/// A blob whose bytes failed their hash at the place its record names. The
/// next upload that carries the content writes a fresh copy there instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DamageRecord {
    /// The damaged copy: a segment location, or `None` for inline data.
    pub at: Option<Location>,
    /// When a read or scrub found it (milliseconds since the epoch).
    pub detected_ms: u64,
}

impl DamageRecord {
    /// Whether this record is about the copy at `place`: a copy written since
    /// (a heal) is not damaged by what was found in the old one.
    pub(crate) fn is_about(&self, place: &Place) -> bool {
        match (place, self.at) {
            (Place::Inline(_), None) => true,
            (Place::Segment(l), Some(at)) => *l == at,
            _ => false,
        }
    }
}

impl Record for DamageRecord {
    fn encode(&self) -> Vec<u8> {
        let e = Enc::new().u64(self.detected_ms);
        match self.at {
            None => e.u8(0).0,
            Some(l) => e.u8(1).u64(l.segment).u64(l.offset).u64(l.length).0,
        }
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("damage record", b)?;
        let detected_ms = d.u64()?;
        let at = match d.u8()? {
            0 => None,
            1 => {
                let (segment, offset, length) = (d.u64()?, d.u64()?, d.u64()?);
                Some(location(&d, segment, offset, length)?)
            }
            _ => return Err(d.err("bad place tag")),
        };
        d.finish(DamageRecord { at, detected_ms })
    }
}

/// A resumable upload session: where the client's bytes have durably got
/// to, and what to do with them at finish. Protocol-neutral: tus and the
/// IETF resumable-upload draft both map onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadRecord {
    pub album: u64,
    pub name: FileName,
    /// 0: `DedupMode::Hash`, 1: `DedupMode::NameAndHash`.
    pub mode: u8,
    /// `None` while the length is deferred.
    pub declared: Option<u64>,
    /// Bytes of the staged file that are durable and acknowledged.
    pub offset: u64,
    pub expected: Option<ContentHash>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Client metadata, sorted by key (bounded in size at begin).
    pub metadata: Vec<(String, String)>,
    /// The number of the staged file, `uploads/<file>.part`: a store-wide
    /// counter, never shown (the session's id is its key).
    pub file: u64,
}

impl Record for UploadRecord {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::versioned(V2)
            .u64(self.album)
            .bytes(self.name.as_bytes())
            .u8(self.mode)
            .opt(self.declared)
            .u64(self.offset);
        e = match &self.expected {
            Some(h) => e.u8(1).hash(h),
            None => e.u8(0),
        };
        e = e
            .u64(self.created_ms)
            .u64(self.expires_ms)
            .u64(self.metadata.len() as u64);
        for (k, v) in &self.metadata {
            e = e.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        e.u64(self.file).0
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::versioned("upload record", b, V2)?;
        let mut rec = UploadRecord::fields(&mut d)?;
        rec.file = d.u64()?;
        d.finish(rec)
    }
}

impl UploadRecord {
    /// A record of metadata format 1, whose staged file was named by the
    /// session's (sequential) id, `file`.
    pub(crate) fn decode_v1(b: &[u8], file: u64) -> Result<Self, DecodeError> {
        let mut d = Dec::new("upload record of format 1", b)?;
        let rec = UploadRecord::fields(&mut d)?;
        d.finish(UploadRecord { file, ..rec })
    }

    /// The fields both versions share, in order; `file` is left 0.
    fn fields(d: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let album = d.u64()?;
        let name = FileName::from(d.bytes()?.to_vec());
        let mode = d.u8()?;
        if mode > 1 {
            return Err(d.err("bad dedup mode"));
        }
        let declared = d.opt()?;
        let offset = d.u64()?;
        let expected = match d.u8()? {
            0 => None,
            1 => Some(d.hash()?),
            _ => return Err(d.err("bad option tag")),
        };
        let created_ms = d.u64()?;
        let expires_ms = d.u64()?;
        let n = d.u64()?;
        // Each entry takes at least two length prefixes.
        if n > d.rest.len() as u64 / 16 {
            return Err(d.err("metadata count exceeds the record"));
        }
        let metadata = (0..n)
            .map(|_| Ok((d.string()?, d.string()?)))
            .collect::<Result<_, DecodeError>>()?;
        Ok(UploadRecord {
            album,
            name,
            mode,
            declared,
            offset,
            expected,
            created_ms,
            expires_ms,
            metadata,
            file: 0,
        })
    }
}

/// What a backup saw of a file on disk when it stored it as `file`: while
/// the file still shows the same stamp, it is trusted unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceRecord {
    pub seen: Seen,
    pub file: u64,
}

/// A source record's view of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Version 1: size, modification time and inode, without the change
    /// time. Kept only to be re-encoded as it was; never trusted, because
    /// an edit that restores the modification time would not show (the
    /// file is read again once, and its record rewritten).
    Legacy([u64; 3]),
    /// Version 2: the whole stamp.
    Stamp(Stamp),
}

impl Record for SourceRecord {
    fn encode(&self) -> Vec<u8> {
        match self.seen {
            Seen::Legacy([size, mtime_ns, inode]) => Enc::new().u64(size).u64(mtime_ns).u64(inode).u64(self.file).0,
            Seen::Stamp(s) => {
                Enc::versioned(V2)
                    .u64(s.size)
                    .u64(s.mtime_ns)
                    .u64(s.ino)
                    .u64(self.file)
                    .u64(s.dev)
                    .u64(s.ctime_ns)
                    .0
            }
        }
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let (mut d, version) = Dec::any("source record", b, &[V1, V2])?;
        let (size, mtime_ns, ino, file) = (d.u64()?, d.u64()?, d.u64()?, d.u64()?);
        let seen = match version {
            V1 => Seen::Legacy([size, mtime_ns, ino]),
            _ => Seen::Stamp(Stamp {
                dev: d.u64()?,
                ino,
                size,
                mtime_ns,
                ctime_ns: d.u64()?,
            }),
        };
        d.finish(SourceRecord { seen, file })
    }
}

/// A single u64 value (ids, timestamps), versioned like every other value.
impl Record for u64 {
    fn encode(&self) -> Vec<u8> {
        Enc::new().u64(*self).0
    }
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec::new("integer", b)?;
        let v = d.u64()?;
        d.finish(v)
    }
}

/// Decodes `bytes` as every kind of value, and checks that each decoding that
/// succeeds is exact: encoding the value again gives `bytes` back. So no two
/// encodings mean the same record, and nothing a decoder accepts is lost on
/// the next write. Panics on a violation; never on the input alone.
#[cfg(any(test, feature = "testkit"))]
pub(crate) fn check_decoders(bytes: &[u8]) {
    fn exact<R: Record + std::fmt::Debug>(bytes: &[u8]) {
        if let Ok(r) = R::decode(bytes) {
            assert_eq!(
                r.encode(),
                bytes,
                "{r:?} does not re-encode to the bytes it was decoded from"
            );
        }
    }
    exact::<UserRecord>(bytes);
    exact::<AlbumRecord>(bytes);
    exact::<FileRecord>(bytes);
    exact::<BlobRecord>(bytes);
    exact::<UserBlobRecord>(bytes);
    exact::<SegmentRecord>(bytes);
    exact::<DamageRecord>(bytes);
    exact::<UploadRecord>(bytes);
    exact::<SourceRecord>(bytes);
    exact::<u64>(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(r: R) {
        assert_eq!(R::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn records_round_trip() {
        round_trip(FileRecord {
            name: "IMG.JPG".into(),
            hash: ContentHash::of(b"a"),
            size: 3,
            created_ms: 4,
            albums: vec![1, 9],
            trashed_ms: Some(5),
            modified_ns: None,
        });
        round_trip(FileRecord {
            name: "IMG.JPG".into(),
            hash: ContentHash::of(b"a"),
            size: 3,
            created_ms: 4,
            albums: vec![],
            trashed_ms: None,
            modified_ns: Some((-7i64) as u64),
        });
        round_trip(BlobRecord {
            size: 2,
            refs: 7,
            place: Place::Inline(vec![1, 2]),
        });
        round_trip(BlobRecord {
            size: 2,
            refs: 7,
            place: Place::Segment(Location {
                segment: 1,
                offset: 32,
                length: 2,
            }),
        });
        round_trip(UserRecord {
            limit: Some(10),
            ..Default::default()
        });
        round_trip(AlbumRecord {
            name: "x".into(),
            created_ms: 1,
            files: 2,
            bytes: 3,
        });
        round_trip(UserBlobRecord { refs: 2, live: 1 });
        round_trip(SegmentRecord {
            committed_len: 9,
            live_bytes: 8,
            site: Site::Disk,
        });
        round_trip(SegmentRecord {
            committed_len: 9,
            live_bytes: 8,
            site: Site::Bucket,
        });
        round_trip(DamageRecord {
            at: None,
            detected_ms: 3,
        });
        round_trip(DamageRecord {
            at: Some(Location {
                segment: 4,
                offset: 96,
                length: 5,
            }),
            detected_ms: 3,
        });
        round_trip(UploadRecord {
            album: 3,
            name: "VID.MP4".into(),
            mode: 1,
            declared: Some(2 << 30),
            offset: 4096,
            expected: Some(ContentHash::of(b"v")),
            created_ms: 5,
            expires_ms: 6,
            metadata: vec![("filetype".into(), "video/mp4".into())],
            file: 12,
        });
        round_trip(UploadRecord {
            album: 1,
            name: "a".into(),
            mode: 0,
            declared: None,
            offset: 0,
            expected: None,
            created_ms: 0,
            expires_ms: 0,
            metadata: Vec::new(),
            file: 1,
        });
        round_trip(SourceRecord {
            seen: Seen::Legacy([7, (-5i64) as u64, 9]),
            file: 3,
        });
        round_trip(SourceRecord {
            seen: Seen::Stamp(Stamp {
                dev: 2,
                ino: 9,
                size: 7,
                mtime_ns: (-5i64) as u64,
                ctime_ns: 11,
            }),
            file: 3,
        });
        round_trip(42u64);
    }

    /// A format-1 upload record is the format-2 one without the staged file
    /// number, which its key held; each format refuses the other's bytes.
    #[test]
    fn an_upload_record_of_format_1_decodes_with_its_file_number() {
        let rec = UploadRecord {
            album: 3,
            name: "VID.MP4".into(),
            mode: 0,
            declared: None,
            offset: 7,
            expected: None,
            created_ms: 5,
            expires_ms: 6,
            metadata: vec![("k".into(), "v".into())],
            file: 41,
        };
        let mut v1 = rec.encode();
        v1[0] = V1;
        v1.truncate(v1.len() - 8);
        assert_eq!(UploadRecord::decode_v1(&v1, 41).unwrap(), rec);
        assert!(UploadRecord::decode(&v1).is_err());
        assert!(UploadRecord::decode_v1(&rec.encode(), 41).is_err());
    }

    /// A damaged size or offset that would put a record's end past
    /// `u64::MAX` is refused when decoding: reads compute that end.
    #[test]
    fn a_segment_place_ending_past_the_largest_offset_does_not_decode() {
        let huge = BlobRecord {
            size: u64::MAX - 10,
            refs: 1,
            place: Place::Segment(Location {
                segment: 1,
                offset: 4096,
                length: u64::MAX - 10,
            }),
        };
        assert!(BlobRecord::decode(&huge.encode()).is_err());
        let damage = DamageRecord {
            at: Some(Location {
                segment: 1,
                offset: u64::MAX - 1,
                length: 1,
            }),
            detected_ms: 0,
        };
        assert!(DamageRecord::decode(&damage.encode()).is_err());
        let fine = BlobRecord {
            size: 10,
            refs: 1,
            place: Place::Segment(Location {
                segment: 1,
                offset: 4096,
                length: 10,
            }),
        };
        assert_eq!(BlobRecord::decode(&fine.encode()).unwrap(), fine);
    }

    proptest! {
        #[test]
        fn decoders_are_exact_and_never_panic_on_arbitrary_bytes(
            b in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            check_decoders(&b);
        }
    }
}
