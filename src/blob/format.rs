//! The on-disk format of segment files: the one source of truth for every
//! byte offset. `DESIGN.md` draws the same layout, and a test checks that the
//! document and these constants agree.
//!
//! A segment file is a 32-byte segment header followed by records, each a
//! 64-byte record header and the blob's bytes. Integers are little-endian.
//!
//! ```text
//! segment header (32 bytes)
//! 0      8      16     24    28    32
//! +------+------+------+-----+-----+
//! |magic |ver|0 | id   |  0  |crc32|     crc32 over bytes 0..28
//! +------+------+------+-----+-----+
//!
//! record header (64 bytes), then `length` bytes of data
//! 0     4     8          16         24         32                 64
//! +-----+-----+----------+----------+----------+------------------+
//! |magic|crc32| segment  | offset   | length   | BLAKE3 hash      |
//! +-----+-----+----------+----------+----------+------------------+
//! crc32 over bytes 8..64
//! ```
//!
//! A record names its own segment and offset so that a record found at the
//! wrong place (a misdirected write, a copy of a file under another name) is
//! detected, and carries the hash of its data so that a scan can rebuild or
//! check the index without the metadata.
//!
//! ```
//! use keepsake::testkit::format::{RecordHeader, RECORD_HEADER_LEN};
//! use keepsake::ContentHash;
//! let h = RecordHeader { segment: 3, offset: 32, length: 5, hash: ContentHash::of(b"hello") };
//! let bytes = h.encode();
//! assert_eq!(bytes.len(), RECORD_HEADER_LEN);
//! assert_eq!(RecordHeader::decode(&bytes).unwrap(), h);
//! ```

use crate::hash::ContentHash;

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"KSSEGMNT";
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Offset of the segment format version (u32).
pub const SEG_VERSION_AT: usize = 8;
/// Offset of the segment id (u64).
pub const SEG_ID_AT: usize = 16;
/// Offset of the segment header's crc32 (u32), computed over bytes `0..28`.
pub const SEG_CRC_AT: usize = 28;

/// Magic bytes at the start of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"KSR1";
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 64;
/// Offset of the record header's crc32 (u32), computed over bytes `8..64`.
pub const REC_CRC_AT: usize = 4;
/// Offset of the id of the segment the record was written to (u64).
pub const REC_SEGMENT_AT: usize = 8;
/// Offset of the record's own offset within its segment (u64).
pub const REC_OFFSET_AT: usize = 16;
/// Offset of the data length (u64).
pub const REC_LENGTH_AT: usize = 24;
/// Offset of the BLAKE3 hash of the data (32 bytes).
pub const REC_HASH_AT: usize = 32;

/// Why a header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a header.
    #[error("truncated header")]
    Truncated,
    /// The magic bytes are wrong: not a header at all.
    #[error("bad magic")]
    BadMagic,
    /// The header's checksum does not match its contents.
    #[error("header checksum mismatch")]
    BadChecksum,
    /// A segment of a version this build does not read.
    #[error("unsupported segment version {0}")]
    UnsupportedVersion(u32),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header at the start of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's id, which is also its file name.
    pub id: u64,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[..8].copy_from_slice(&SEGMENT_MAGIC);
        b[SEG_VERSION_AT..SEG_VERSION_AT + 4].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[SEG_ID_AT..SEG_ID_AT + 8].copy_from_slice(&self.id.to_le_bytes());
        let crc = crc32fast::hash(&b[..SEG_CRC_AT]);
        b[SEG_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a segment header from the start of `b`.
    ///
    /// # Errors
    ///
    /// - [`FormatError::Truncated`] if `b` is shorter than a segment header.
    /// - [`FormatError::BadMagic`] if it does not start with the segment magic.
    /// - [`FormatError::BadChecksum`] if the header's checksum does not match.
    /// - [`FormatError::UnsupportedVersion`] for a segment version this build
    ///   does not read.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let b = b.get(..SEGMENT_HEADER_LEN).ok_or(FormatError::Truncated)?;
        if b[..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if crc32fast::hash(&b[..SEG_CRC_AT]) != u32_at(b, SEG_CRC_AT) {
            return Err(FormatError::BadChecksum);
        }
        let version = u32_at(b, SEG_VERSION_AT);
        if version != SEGMENT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            id: u64_at(b, SEG_ID_AT),
        })
    }
}

/// The header in front of each blob's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The segment the record was written to.
    pub segment: u64,
    /// The record's offset (of its header) within that segment.
    pub offset: u64,
    /// The number of data bytes after the header.
    pub length: u64,
    /// The BLAKE3 hash of the data.
    pub hash: ContentHash,
}

impl RecordHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[..4].copy_from_slice(&RECORD_MAGIC);
        b[REC_SEGMENT_AT..REC_SEGMENT_AT + 8].copy_from_slice(&self.segment.to_le_bytes());
        b[REC_OFFSET_AT..REC_OFFSET_AT + 8].copy_from_slice(&self.offset.to_le_bytes());
        b[REC_LENGTH_AT..REC_LENGTH_AT + 8].copy_from_slice(&self.length.to_le_bytes());
        b[REC_HASH_AT..REC_HASH_AT + 32].copy_from_slice(self.hash.as_bytes());
        let crc = crc32fast::hash(&b[REC_SEGMENT_AT..]);
        b[REC_CRC_AT..REC_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a record header from the start of `b`.
    ///
    /// # Errors
    ///
    /// - [`FormatError::Truncated`] if `b` is shorter than a record header.
    /// - [`FormatError::BadMagic`] if it does not start with the record magic.
    /// - [`FormatError::BadChecksum`] if the header's checksum does not match.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        let b = b.get(..RECORD_HEADER_LEN).ok_or(FormatError::Truncated)?;
        if b[..4] != RECORD_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if crc32fast::hash(&b[REC_SEGMENT_AT..]) != u32_at(b, REC_CRC_AT) {
            return Err(FormatError::BadChecksum);
        }
        let hash: [u8; 32] = b[REC_HASH_AT..REC_HASH_AT + 32].try_into().expect("32 bytes");
        Ok(RecordHeader {
            segment: u64_at(b, REC_SEGMENT_AT),
            offset: u64_at(b, REC_OFFSET_AT),
            length: u64_at(b, REC_LENGTH_AT),
            hash: ContentHash::from_bytes(hash),
        })
    }

    /// Total bytes the record occupies: header and data.
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.length
    }
}

/// Walks the records of a segment's bytes from the first record on, yielding
/// each header that decodes and fits. It stops at the first header that does
/// not (the end of the written part, or damage), returning that error and its
/// offset; it never panics on arbitrary input.
///
/// ```
/// use keepsake::testkit::format::{scan_records, SegmentHeader};
/// let seg = SegmentHeader { id: 1 }.encode();
/// let (records, end) = scan_records(&seg, 1);
/// assert!(records.is_empty());
/// assert_eq!(end.offset, 32);
/// ```
// The store scans through `scan_window`, a window at a time; the whole
// walk is for tests, fuzzing and tools that hold a segment's bytes.
#[cfg(any(test, feature = "testkit"))]
pub fn scan_records(segment: &[u8], id: u64) -> (Vec<RecordHeader>, ScanEnd) {
    let mut records = Vec::new();
    let at = SEGMENT_HEADER_LEN as u64;
    let end = segment.len() as u64;
    if at >= end {
        return (
            records,
            ScanEnd {
                offset: at,
                error: None,
            },
        );
    }
    match scan_window(&segment[at as usize..], at, id, end, &mut records) {
        Ok(offset) => (records, ScanEnd { offset, error: None }),
        Err(stop) => (records, stop),
    }
}

/// Walks the record headers in `window`, the bytes of segment `id` from
/// offset `at` on, of a segment whose written part ends at `end`, pushing
/// each that decodes, names its own place and fits before `end`. Returns
/// where a walk goes on: `end`, or the first header that `window` does not
/// hold whole (a record whose data runs past the window is skipped unread).
/// Stops, with where and why, at the first header that is wrong.
pub(crate) fn scan_window(
    window: &[u8],
    at: u64,
    id: u64,
    end: u64,
    records: &mut Vec<RecordHeader>,
) -> Result<u64, ScanEnd> {
    let window_end = at + window.len() as u64;
    let mut here = at;
    while here < end {
        if end - here < RECORD_HEADER_LEN as u64 {
            return Err(ScanEnd {
                offset: here,
                error: Some("undecodable record header"),
            });
        }
        if here + RECORD_HEADER_LEN as u64 > window_end {
            return Ok(here);
        }
        let error = match RecordHeader::decode(&window[(here - at) as usize..]) {
            Ok(h) if h.segment != id || h.offset != here => "record names another place",
            Ok(h) if h.total_len() > end - here => "record extends past the end",
            Ok(h) => {
                here += h.total_len();
                records.push(h);
                continue;
            }
            Err(_) => "undecodable record header",
        };
        return Err(ScanEnd {
            offset: here,
            error: Some(error),
        });
    }
    Ok(here)
}

/// Where and why [`scan_records`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// The offset after the last good record.
    pub offset: u64,
    /// Why the scan stopped before the end of the bytes, if it did.
    pub error: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte diagrams in DESIGN.md are checked against these constants, so
    /// the document cannot drift from the code.
    #[test]
    fn design_document_tables_match_the_offsets() {
        let design = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/DESIGN.md")).unwrap();
        let rows = [
            format!("| 0 | 8 | magic `{}` |", std::str::from_utf8(&SEGMENT_MAGIC).unwrap()),
            format!("| {SEG_VERSION_AT} | 4 | format version ({SEGMENT_VERSION}) |"),
            format!("| {SEG_ID_AT} | 8 | segment id |"),
            format!("| {SEG_CRC_AT} | 4 | crc32 of bytes 0..{SEG_CRC_AT} |"),
            format!("| 0 | 4 | magic `{}` |", std::str::from_utf8(&RECORD_MAGIC).unwrap()),
            format!("| {REC_CRC_AT} | 4 | crc32 of bytes {REC_SEGMENT_AT}..{RECORD_HEADER_LEN} |"),
            format!("| {REC_SEGMENT_AT} | 8 | segment id |"),
            format!("| {REC_OFFSET_AT} | 8 | offset of this record |"),
            format!("| {REC_LENGTH_AT} | 8 | data length |"),
            format!("| {REC_HASH_AT} | 32 | BLAKE3 hash of the data |"),
        ];
        for row in rows {
            assert!(design.contains(&row), "DESIGN.md lacks the row {row}");
        }
    }

    #[test]
    fn encoded_fields_sit_at_their_documented_offsets() {
        let h = RecordHeader {
            segment: 0x0102,
            offset: 0x0304,
            length: 0x0506,
            hash: ContentHash::from_bytes([9; 32]),
        };
        let b = h.encode();
        assert_eq!(&b[..4], b"KSR1");
        assert_eq!(u64_at(&b, REC_SEGMENT_AT), 0x0102);
        assert_eq!(u64_at(&b, REC_OFFSET_AT), 0x0304);
        assert_eq!(u64_at(&b, REC_LENGTH_AT), 0x0506);
        assert_eq!(&b[REC_HASH_AT..], &[9; 32]);
        let s = SegmentHeader { id: 77 }.encode();
        assert_eq!(u64_at(&s, SEG_ID_AT), 77);
        assert_eq!(u32_at(&s, SEG_VERSION_AT), SEGMENT_VERSION);
    }

    #[test]
    fn any_flipped_header_bit_is_detected() {
        let h = RecordHeader {
            segment: 1,
            offset: 32,
            length: 10,
            hash: ContentHash::of(b"0123456789"),
        };
        let b = h.encode();
        for bit in 0..RECORD_HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(RecordHeader::decode(&c).is_err(), "bit {bit} flip undetected");
        }
    }

    #[test]
    fn scan_stops_at_a_torn_tail() {
        let mut seg = SegmentHeader { id: 5 }.encode().to_vec();
        let data = b"photo bytes";
        let h = RecordHeader {
            segment: 5,
            offset: seg.len() as u64,
            length: data.len() as u64,
            hash: ContentHash::of(data),
        };
        seg.extend_from_slice(&h.encode());
        seg.extend_from_slice(data);
        let good_end = seg.len() as u64;
        seg.extend_from_slice(&h.encode()[..20]);
        let (records, end) = scan_records(&seg, 5);
        assert_eq!(records, vec![h]);
        assert_eq!(end.offset, good_end);
        assert!(end.error.is_some());
    }
}
