//! The segment decoders and the record scan (what recovery, compaction and
//! verification run over bytes read from disk) on arbitrary bytes: they must
//! never panic, and every record they accept must be self-consistent.
//!
//! `cargo +nightly fuzz run segment_scan`

#![no_main]

use keepsake::testkit::format::{scan_records, RecordHeader, SegmentHeader, SEGMENT_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SegmentHeader::decode(data) {
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }
    if let Ok(h) = RecordHeader::decode(data) {
        assert_eq!(RecordHeader::decode(&h.encode()), Ok(h));
    }
    let id = data.first().copied().unwrap_or(1) as u64;
    let (records, end) = scan_records(data, id);
    let mut at = SEGMENT_HEADER_LEN as u64;
    for r in &records {
        assert_eq!((r.segment, r.offset), (id, at), "a record must name its own place");
        at += r.total_len();
        assert!(at <= data.len() as u64, "a record must lie within the bytes");
    }
    assert_eq!(end.offset, at);
});
