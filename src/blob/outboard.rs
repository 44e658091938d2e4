//! Verification outboards: the inner nodes of a large blob's BLAKE3 tree,
//! kept beside its bytes so that a range can be checked without hashing
//! the rest.
//!
//! BLAKE3 is a binary tree over 1 KiB chunks whose root is the content
//! hash. An outboard stores, for every parent node above groups of
//! [`GROUP`] bytes, the pair of its children's chaining values (64 bytes),
//! in post order, as `bao-tree` lays them out (the format iroh-blobs uses).
//! To check a range, the pairs on the paths from the root down to the
//! groups that the range touches are checked against the content hash,
//! then those groups are hashed (in place, in two halves at once for a
//! range of several groups): the work is the range's, rounded out to
//! whole groups, plus 64 bytes per tree level.
//!
//! A blob of `n` bytes has `ceil(n / GROUP) - 1` pairs: 64 bytes per
//! 64 KiB, 0.098 % of its size. Only blobs larger than [`MIN_BLOB`] get
//! one: they are the ones played and seeked (videos), and the ones whose
//! every read would otherwise hash many megabytes. Smaller blobs are
//! checked whole, in a few milliseconds at most.

use std::io::{self, Read};
use std::ops::Range;

use bao_tree::io::outboard::PostOrderMemOutboard;
use bao_tree::io::sync::outboard_post_order;
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use crate::hash::ContentHash;

/// Bytes per chunk group: the leaves of the stored tree (2^6 BLAKE3
/// chunks of 1 KiB).
pub(crate) const GROUP: u64 = 64 << 10;

const BLOCK: BlockSize = BlockSize::from_chunk_log(6);

/// Blobs larger than this get an outboard. It is also the size above
/// which an upload is streamed rather than held in memory, so every blob
/// that gets one is already hashed as it is written, and the outboard is
/// made in that same pass.
pub(crate) const MIN_BLOB: u64 = 16 << 20;

/// Whether a blob of `len` bytes has an outboard.
pub(crate) fn wanted(len: u64) -> bool {
    len > MIN_BLOB
}

/// Whether `outboard_len` bytes is the outboard length of a blob of
/// `size` bytes that wants one.
pub(crate) fn fits(size: u64, outboard_len: usize) -> bool {
    wanted(size) && BaoTree::new(size, BLOCK).outboard_size() == outboard_len as u64
}

/// Outboards read lately, by content hash: a video player asks for a
/// video a range at a time, each a new request, and reading a 2 GiB
/// video's 2 MiB outboard from the metadata again for each would cost more
/// than checking the range. Holds at most [`Cache::BYTES`] of them, the
/// least recently used going first. An entry can never make a read return
/// wrong bytes (an outboard is checked against the content hash as it is
/// used); a stale one only costs the whole check that replaces it.
#[derive(Default)]
pub(crate) struct Cache(parking_lot::Mutex<Vec<(ContentHash, std::sync::Arc<[u8]>)>>);

impl Cache {
    /// The most the cache holds, in bytes of outboards: those of 32 videos
    /// of 2 GiB.
    pub(crate) const BYTES: usize = 64 << 20;

    /// The outboard of `hash`, if held.
    pub(crate) fn get(&self, hash: &ContentHash) -> Option<std::sync::Arc<[u8]>> {
        let mut entries = self.0.lock();
        let i = entries.iter().position(|(h, _)| h == hash)?;
        let entry = entries.remove(i);
        let ob = entry.1.clone();
        entries.push(entry);
        Some(ob)
    }

    /// Holds `outboard` as `hash`'s, in place of any it had.
    pub(crate) fn put(&self, hash: ContentHash, outboard: std::sync::Arc<[u8]>) {
        if outboard.len() > Self::BYTES {
            return;
        }
        let mut entries = self.0.lock();
        entries.retain(|(h, _)| *h != hash);
        let mut held: usize = entries.iter().map(|(_, o)| o.len()).sum::<usize>() + outboard.len();
        while held > Self::BYTES {
            held -= entries.remove(0).1.len();
        }
        entries.push((hash, outboard));
    }
}

/// What failed when a range was checked.
#[derive(Debug)]
pub(crate) enum Mismatch {
    /// The blob's bytes in the chunk group starting at this offset do not
    /// hash to what the checked tree says: the copy is damaged.
    Data(u64),
    /// The outboard's pairs do not lead to the content hash: the outboard
    /// is damaged (or belongs to other bytes); the blob may be whole.
    Outboard,
}

/// Reads `length` bytes from `source`, handing each run to `sink` as it
/// is read, and returns their BLAKE3 hash with the outboard of their tree.
///
/// # Errors
///
/// The first error of `source` or `sink`; [`io::ErrorKind::UnexpectedEof`]
/// if `source` ends early.
pub(crate) fn create(
    source: &mut dyn Read,
    length: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(ContentHash, Vec<u8>)> {
    struct Tee<'a> {
        source: &'a mut dyn Read,
        sink: &'a mut dyn FnMut(&[u8]) -> io::Result<()>,
    }
    impl Read for Tee<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.source.read(buf)?;
            (self.sink)(&buf[..n])?;
            Ok(n)
        }
    }
    let tree = BaoTree::new(length, BLOCK);
    let mut outboard = Vec::with_capacity(usize::try_from(tree.outboard_size()).unwrap_or(0));
    let root = outboard_post_order(&mut Tee { source, sink }, tree, &mut outboard)?;
    Ok((ContentHash::from_bytes(*root.as_bytes()), outboard))
}

/// Ranges of at least this many groups are checked in two halves at once,
/// on blake3's thread pool: one core hashes about 3 GiB/s, a memory copy
/// several times that.
const PARALLEL_GROUPS: u64 = 4;

/// Some bytes of a blob, unverified: `bytes` are the blob's bytes from
/// offset `at` on, of a blob of `size` bytes in all.
#[derive(Clone, Copy)]
pub(crate) struct Part<'a> {
    pub size: u64,
    pub at: u64,
    pub bytes: &'a [u8],
}

impl<'a> Part<'a> {
    /// The whole blob.
    pub(crate) fn whole(data: &'a [u8]) -> Part<'a> {
        Part {
            size: data.len() as u64,
            at: 0,
            bytes: data,
        }
    }
}

/// Checks the chunk groups that `range` touches, whose bytes `part`
/// holds, against `outboard` and the blob's `hash`.
///
/// `part` must hold every group `range` touches, whole (a group that it
/// does not hold fails as [`Mismatch::Data`]).
pub(crate) fn check(hash: &ContentHash, part: Part<'_>, outboard: &[u8], range: Range<u64>) -> Result<(), Mismatch> {
    let (first, end) = (range.start / GROUP, range.end.div_ceil(GROUP));
    if end - first < PARALLEL_GROUPS {
        return check_groups(hash, part, outboard, range);
    }
    let middle = (first + end) / 2 * GROUP;
    let (a, b) = rayon_core::join(
        || check_groups(hash, part, outboard, range.start..middle),
        || check_groups(hash, part, outboard, middle..range.end),
    );
    a.and(b)
}

/// The walk `bao-tree`'s `encode_ranges_validated` makes, from the root
/// down to the groups of `range` (in pre order: each pair is checked
/// against the value its parent gave it before its children are trusted),
/// hashing each group where it lies in `part` rather than from a copy:
/// a copy of each group was a third of a range's time.
fn check_groups(hash: &ContentHash, part: Part<'_>, outboard: &[u8], range: Range<u64>) -> Result<(), Mismatch> {
    use bao_tree::io::sync::Outboard as _;
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
    let tree = BaoTree::new(part.size, BLOCK);
    if outboard.len() as u64 != tree.outboard_size() {
        return Err(Mismatch::Outboard);
    }
    let ob = PostOrderMemOutboard {
        root: blake3::Hash::from_bytes(*hash.as_bytes()),
        tree,
        data: outboard,
    };
    // Whole groups: a leaf is then hashed as one subtree, never split.
    let first = range.start / GROUP * (GROUP / 1024);
    let end = range.end.div_ceil(GROUP) * (GROUP / 1024);
    let chunks = ChunkRanges::from(ChunkNum(first)..ChunkNum(end.max(first + 1)));
    let mut expected: Vec<blake3::Hash> = vec![ob.root];
    for item in tree.ranges_pre_order_chunks_iter_ref(&chunks, 0) {
        let want = expected.pop().ok_or(Mismatch::Outboard)?;
        match item {
            BaoChunk::Parent {
                node,
                is_root,
                left,
                right,
                ..
            } => {
                let Ok(Some((l, r))) = ob.load(node) else {
                    return Err(Mismatch::Outboard);
                };
                let actual = if is_root {
                    merge_subtrees_root(l.as_bytes(), r.as_bytes(), Mode::Hash)
                } else {
                    blake3::Hash::from(merge_subtrees_non_root(l.as_bytes(), r.as_bytes(), Mode::Hash))
                };
                if actual != want {
                    return Err(Mismatch::Outboard);
                }
                if right {
                    expected.push(r);
                }
                if left {
                    expected.push(l);
                }
            }
            BaoChunk::Leaf {
                start_chunk,
                size,
                is_root,
                ..
            } => {
                let at = start_chunk.0 * 1024;
                let Some(group) = at
                    .checked_sub(part.at)
                    .and_then(|from| part.bytes.get(from as usize..from as usize + size))
                else {
                    return Err(Mismatch::Data(at));
                };
                let actual = if is_root {
                    blake3::hash(group)
                } else {
                    let mut h = blake3::Hasher::new();
                    h.set_input_offset(at);
                    h.update(group);
                    blake3::Hash::from(h.finalize_non_root())
                };
                if actual != want {
                    return Err(Mismatch::Data(at));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn made(data: &[u8]) -> (ContentHash, Vec<u8>, Vec<u8>) {
        let mut seen = Vec::new();
        let (hash, ob) = create(&mut &data[..], data.len() as u64, &mut |b| {
            seen.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        (hash, ob, seen)
    }

    #[test]
    fn the_root_is_the_content_hash_and_the_sink_sees_every_byte() {
        for len in [0, 1, 1024, GROUP as usize, GROUP as usize + 1, 5 * GROUP as usize + 77] {
            let data = blob(len);
            let (hash, ob, seen) = made(&data);
            assert_eq!(hash, ContentHash::of(&data), "length {len}");
            assert_eq!(seen, data);
            assert_eq!(ob.len() as u64, (len as u64).div_ceil(GROUP).saturating_sub(1) * 64);
        }
    }

    #[test]
    fn a_range_of_whole_bytes_checks_and_a_damaged_group_is_found_only_by_ranges_that_touch_it() {
        let mut data = blob(40 * GROUP as usize + 123);
        let (hash, ob, _) = made(&data);
        let len = data.len() as u64;
        for r in [
            0..1,
            0..len,
            GROUP - 1..GROUP + 1,
            len - 1..len,
            17 * GROUP + 5..20 * GROUP,
        ] {
            check(&hash, Part::whole(&data), &ob, r.clone()).unwrap_or_else(|e| panic!("{r:?}: {e:?}"));
        }
        data[(30 * GROUP + 9) as usize] ^= 1;
        assert!(matches!(
            check(&hash, Part::whole(&data), &ob, 29 * GROUP..30 * GROUP + 10),
            Err(Mismatch::Data(o)) if o == 30 * GROUP
        ));
        check(&hash, Part::whole(&data), &ob, 0..30 * GROUP).unwrap();
        check(&hash, Part::whole(&data), &ob, 31 * GROUP..len).unwrap();
    }

    /// A range checks from a part that holds only its groups (a ranged
    /// GET's bytes), and a range whose groups the part lacks fails.
    #[test]
    fn a_range_checks_from_a_part_holding_only_its_groups() {
        let data = blob(40 * GROUP as usize + 123);
        let (hash, ob, _) = made(&data);
        let size = data.len() as u64;
        let (from, to) = (17 * GROUP, 21 * GROUP);
        let part = Part {
            size,
            at: from,
            bytes: &data[from as usize..to as usize],
        };
        check(&hash, part, &ob, from + 5..to - 1).unwrap();
        let tail = Part {
            size,
            at: 40 * GROUP,
            bytes: &data[40 * GROUP as usize..],
        };
        check(&hash, tail, &ob, size - 3..size).unwrap();
        assert!(matches!(check(&hash, part, &ob, from..to + 1), Err(Mismatch::Data(_))));
        let mut shifted = data[from as usize + 1..to as usize + 1].to_vec();
        shifted.truncate(part.bytes.len());
        let wrong = Part {
            bytes: &shifted,
            ..part
        };
        assert!(matches!(check(&hash, wrong, &ob, from..to), Err(Mismatch::Data(_))));
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_bound() {
        let cache = Cache::default();
        let ob = |n: usize| std::sync::Arc::<[u8]>::from(vec![0u8; n]);
        let (a, b, c) = (ContentHash::of(b"a"), ContentHash::of(b"b"), ContentHash::of(b"c"));
        cache.put(a, ob(Cache::BYTES / 2));
        cache.put(b, ob(Cache::BYTES / 2));
        assert!(cache.get(&a).is_some());
        cache.put(c, ob(1));
        assert!(cache.get(&b).is_none(), "the least recently used went");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        cache.put(b, ob(Cache::BYTES + 1));
        assert!(cache.get(&b).is_none(), "too big to hold");
    }

    #[test]
    fn a_damaged_outboard_or_the_wrong_hash_is_told_from_damaged_data() {
        let data = blob(9 * GROUP as usize);
        let (hash, mut ob, _) = made(&data);
        assert!(matches!(
            check(&ContentHash::of(b"other"), Part::whole(&data), &ob, 0..10),
            Err(Mismatch::Outboard)
        ));
        assert!(matches!(
            check(&hash, Part::whole(&data), &ob[1..], 0..10),
            Err(Mismatch::Outboard)
        ));
        ob[3] ^= 1;
        assert!(matches!(
            check(&hash, Part::whole(&data), &ob, 0..10),
            Err(Mismatch::Outboard)
        ));
    }
}
