//! Reading a file's bytes, always verified.

use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;

use super::{Inner, User};
use crate::error::{Fault, ReadError, Result};
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::meta::keys;
use crate::meta::records::{BlobRecord, FileRecord, Place};
use crate::meta::Cf;

/// A file's bytes as a stream ([`Read`] and [`Seek`]), backed by the verified
/// memory-mapped blob: no copy is made.
#[derive(Debug, Clone)]
pub struct FileReader(io::Cursor<Bytes>);

impl FileReader {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.0.get_ref().len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.0.get_ref().is_empty()
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for FileReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Inner {
    /// The verified bytes of blob `hash`.
    pub(crate) fn read_blob(&self, hash: &ContentHash) -> Result<Bytes> {
        let mut place = self.blob_place(hash)?;
        loop {
            let err = match self.read_place(hash, &place) {
                Ok(bytes) => return Ok(bytes),
                Err(e) => e,
            };
            // A compaction may have moved the blob between reading its
            // record and mapping its segment. Only then is another attempt
            // worth making: damage at an unchanged place is final.
            let now = self.blob_place(hash)?;
            if now == place {
                if matches!(err, Fault::Integrity { .. }) {
                    // Remembered, so that an upload of this content heals it.
                    self.note_damage(*hash, place);
                }
                return Err(err);
            }
            place = now;
        }
    }

    /// Reads the copy of blob `hash` at `place` and checks it, returning
    /// its length: a scrub's read, which has the place from the record it
    /// scanned. A copy that fails its hash is remembered as damaged, as a
    /// failed [`read_blob`](Self::read_blob) remembers it.
    pub(crate) fn check_copy(&self, hash: &ContentHash, place: &Place) -> Result<u64> {
        match self.read_place(hash, place) {
            Ok(bytes) => Ok(bytes.len() as u64),
            Err(e) => {
                if matches!(e, Fault::Integrity { .. }) {
                    self.note_damage(*hash, place.clone());
                }
                Err(e)
            }
        }
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
    /// A file's bytes (live or trashed), zero-copy from the segment's memory
    /// map. The bytes are checked against the file's BLAKE3 hash first: a
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
        let inner = self.inner();
        let uid = self.id()?.ok_or(Fault::UnknownFile(file))?;
        let rec: FileRecord = inner
            .meta
            .get(Cf::Files, &keys::file(uid, file.0))?
            .ok_or(Fault::UnknownFile(file))?;
        Ok(inner.read_blob(&rec.hash)?)
    }

    /// A file's bytes as a verified stream.
    ///
    /// The whole file is checked, as [`User::read`] checks it, before the
    /// reader is returned: reading from it never fails.
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
        Ok(FileReader(io::Cursor::new(self.read(file)?)))
    }
}
