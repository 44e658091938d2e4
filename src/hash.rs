//! Content hashes: BLAKE3 over the whole content, a blob's identity.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// The BLAKE3 hash of a content, which names its blob.
///
/// ```
/// use keepsake::ContentHash;
/// let h = ContentHash::of(b"hello");
/// let parsed: ContentHash = h.to_string().parse().unwrap();
/// assert_eq!(h, parsed);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// The error of parsing a [`ContentHash`] from text: it must be exactly 64
/// hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a content hash is 64 hexadecimal digits")]
pub struct ParseHashError;

/// Inputs at least this large are hashed on all cores: below it, rayon's
/// fork-join costs more than it saves.
const PARALLEL_HASH_MIN: usize = 1 << 20;

/// Read size for hashing streams: large enough for rayon to split well.
pub(crate) const HASH_CHUNK: usize = 8 << 20;

impl ContentHash {
    /// Hashes `data` (on all cores when it is large).
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finalize()
    }

    /// Hashes the concatenation of `parts` (a body as it arrived), on the
    /// calling thread: pieces are too small for rayon to split well.
    pub(crate) fn of_parts(parts: &[bytes::Bytes]) -> Self {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        ContentHash(*h.finalize().as_bytes())
    }

    /// Hashes `data` on the calling thread only, for callers that already
    /// keep every core busy with a content each (the ingest pipeline's
    /// workers): rayon's fork-join between them would only add switches.
    pub(crate) fn of_on_this_thread(data: &[u8]) -> Self {
        ContentHash(*blake3::hash(data).as_bytes())
    }

    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ParseHashError);
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or(ParseHashError)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(ParseHashError)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(ContentHash(out))
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An incremental hasher that switches to multi-core hashing for large
/// updates.
pub(crate) struct Hasher(blake3::Hasher);

impl Hasher {
    pub(crate) fn new() -> Self {
        Hasher(blake3::Hasher::new())
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        if data.len() >= PARALLEL_HASH_MIN {
            self.0.update_rayon(data);
        } else {
            self.0.update(data);
        }
    }

    pub(crate) fn finalize(&self) -> ContentHash {
        ContentHash(*self.0.finalize().as_bytes())
    }
}

/// Hashes everything `reader` yields, returning the hash and the length.
///
/// Deliberately not memory-mapped: a user's file that is truncated while
/// mapped raises `SIGBUS`, and files changing under a backup are expected.
pub(crate) fn hash_reader(reader: &mut dyn Read) -> io::Result<(ContentHash, u64)> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut total = 0u64;
    loop {
        let n = read_full(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize(), total))
}

/// Reads until `buf` is full or the reader is exhausted, so that hashing
/// sees large chunks even from readers that return little at a time.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_and_serial_hashing_agree() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(ContentHash::of(&data).0, *blake3::hash(&data).as_bytes());
        let (h, n) = hash_reader(&mut &data[..]).unwrap();
        assert_eq!(h, ContentHash::of(&data));
        assert_eq!(n, data.len() as u64);
    }

    #[test]
    fn hex_round_trip_and_rejects_bad_text() {
        let h = ContentHash::of(b"x");
        assert_eq!(h.to_string().parse::<ContentHash>().unwrap(), h);
        assert!("zz".parse::<ContentHash>().is_err());
        assert!("g".repeat(64).parse::<ContentHash>().is_err());
        assert!(format!("{h}0").parse::<ContentHash>().is_err());
    }
}
