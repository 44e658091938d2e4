//! Ingest: getting an upload's bytes into the blob log, and the batch loop
//! around the commit that records them.
//!
//! An upload runs in three steps, so that the expensive work happens outside
//! the serialised commit and nothing is acknowledged before it is durable:
//!
//! 1. **Hash** each content (no lock held).
//! 2. **Write** every content new to the *user* to the active segment (or
//!    keep it for inlining), then `fdatasync` once for the whole batch. What
//!    other users hold never spares the write: the work done for a user,
//!    and so its time, must not tell them what others store (`DESIGN.md`
//!    §1, "Privacy between users"); a copy of content the store already
//!    had is garbage from its commit on, and compaction reclaims it. A large file or a staged stream is re-hashed as it is
//!    written, since it may have changed since step 1; bytes in memory
//!    (given, or a file of at most [`READ_WHOLE`] bytes read whole in step 1
//!    and checked unchanged by size and modification time) are written as
//!    they are. In a batch, steps 1 and 2 run as a pipeline: worker threads
//!    read and hash the next uploads while this one is written, at most
//!    [`READ_AHEAD`] uploads ahead, so memory stays bounded (see
//!    [`pipeline`](super::pipeline) and `DESIGN.md` §6).
//! 3. **Commit** one transaction that, per upload, applies the duplicate
//!    rules against the current metadata and records the outcome.
//!
//! Step 3 re-checks everything step 2 assumed. If a blob that step 2 found
//! (and so did not write) has been collected by GC in between, the upload is
//! retried from step 2 with its bytes written. If two uploads write the same
//! new content (two users, or one user's two concurrent uploads), the first
//! commit creates the blob and the second finds it and becomes a plain
//! reference; its written copy is garbage that compaction reclaims.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::damage::is_damaged;
use super::delete_set::DeleteSet;
use super::ledger::{cover, ensure_user, holds};
use super::pipeline::{ordered_map, BufferPool};
use super::reservation::Hold;
use super::rules::{apply, prefetch, Applied, NewCopy, Pending};
use super::source_file;
use super::{staging, Content, DedupMode, Inner, Upload, UploadReport, User};
use crate::blob::outboard;
use crate::blob::{Pin, RecordData, Site, Written};
use crate::error::{Fault, HashMismatch, Result, UploadError};
use crate::fs::FsFile;
use crate::hash::{read_full, ContentHash, Hasher, HASH_CHUNK};
use crate::ids::AlbumId;
use crate::meta::records::Place;
use crate::meta::txn::Txn;
use crate::meta::Cf;
use crate::names::{check_file_name, FileName};
use crate::stamp::Stamp;

/// Streams at most this large are held in memory instead of staged on disk.
const IN_MEMORY_STREAM: usize = 16 << 20;

/// Files at most this large are read once, into memory, and written from
/// there: one read and one hash. Larger files are hashed as a stream and
/// read again (and re-hashed, which also tells whether they changed in
/// between) only if their content is new, so that no more than a few
/// chunks of a 4 GiB video are ever in memory.
const READ_WHOLE: usize = 16 << 20;

/// How many uploads step 1 may run ahead of step 2. With [`READ_WHOLE`] and
/// [`IN_MEMORY_STREAM`], this bounds a batch's memory for contents read by
/// the pipeline to `(READ_AHEAD + 1) x 16 MiB`: those being read or
/// waiting, and the one being written.
const READ_AHEAD: NonZeroUsize = NonZeroUsize::new(4).expect("not zero");

/// Where a prepared content's bytes are read from when its blob is written.
pub(crate) enum Source {
    /// Bytes in memory, in pieces in order.
    Memory(Vec<Bytes>),
    /// A file read whole by step 1: written from memory, as hashed. The
    /// buffer goes back to the batch's pool after step 2.
    Read {
        path: PathBuf,
        data: Vec<u8>,
    },
    File(PathBuf),
    Staged(PathBuf, Box<dyn FsFile>),
    /// An upload session's staged file: read like a staged stream, but owned
    /// (and removed) by its session, not by this upload.
    Session(Box<dyn FsFile>),
}

/// A hashed content, ready to be written if its blob is new.
struct Prepared {
    hash: ContentHash,
    size: u64,
    source: Source,
    /// How errors name the content.
    what: String,
}

/// Reads of pieces in memory, one after another.
struct PartsReader<'a> {
    parts: &'a [Bytes],
    /// How much of the first part was read.
    at: usize,
}

impl Read for PartsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((first, rest)) = self.parts.split_first() {
            let left = &first[self.at..];
            if left.is_empty() {
                (self.parts, self.at) = (rest, 0);
                continue;
            }
            let n = left.len().min(buf.len());
            buf[..n].copy_from_slice(&left[..n]);
            self.at += n;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Reads of a staged stream, sequentially through [`FsFile`].
struct StagedReader<'a> {
    file: &'a dyn FsFile,
    at: u64,
    len: u64,
}

impl Read for StagedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.len - self.at) as usize);
        self.file.read_exact_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Hashes the first `len` bytes of a staged file.
pub(crate) fn hash_staged(file: &dyn FsFile, len: u64) -> io::Result<ContentHash> {
    let (hash, _) = crate::hash::hash_reader(&mut StagedReader { file, at: 0, len })?;
    Ok(hash)
}

impl Inner {
    /// Step 1 of `user`'s upload of `content` (`name` says what it is in
    /// errors): its hash, and where its bytes are to be written from.
    fn prepare(
        &self,
        user: &str,
        content: Content,
        name: &str,
        seen: Option<Stamp>,
        buffers: &BufferPool,
    ) -> Result<Prepared> {
        match content {
            Content::Bytes(b) => Ok(Prepared {
                hash: ContentHash::of(&b),
                size: b.len() as u64,
                source: Source::Memory(vec![b]),
                what: name.to_string(),
            }),
            Content::Parts(parts) => Ok(Prepared {
                hash: ContentHash::of_parts(&parts),
                size: parts.iter().map(|p| p.len() as u64).sum(),
                source: Source::Memory(parts),
                what: name.to_string(),
            }),
            Content::Path(p) => {
                let what = p.display().to_string();
                let read = |e| Fault::io(format!("reading {what}"), e);
                let (mut f, before) = source_file::open(&p, &what, seen)?;
                if before.len() <= READ_WHOLE as u64 {
                    // Read once, so what is stored is what was hashed; but a
                    // file being written meanwhile would be stored torn. A
                    // write moves the size or the modification time: both
                    // are compared after the read, and one byte of room
                    // past the size tells a file that grew.
                    let mut data = buffers.take(before.len() as usize + 1);
                    let got = (&mut f).take(before.len() + 1).read_to_end(&mut data);
                    let checked = match (got, f.metadata()) {
                        (Ok(_), Ok(after)) if source_file::undisturbed(&before, &after, data.len()) => {
                            Ok(ContentHash::of_on_this_thread(&data))
                        }
                        (Ok(_), Ok(_)) => Err(Fault::ContentChanged(what.clone())),
                        (Err(e), _) | (_, Err(e)) => Err(read(e)),
                    };
                    return match checked {
                        Ok(hash) => Ok(Prepared {
                            hash,
                            size: data.len() as u64,
                            source: Source::Read { path: p, data },
                            what,
                        }),
                        Err(e) => {
                            buffers.give(data);
                            Err(e)
                        }
                    };
                }
                let (hash, size) = crate::hash::hash_reader(&mut f).map_err(read)?;
                Ok(Prepared {
                    hash,
                    size,
                    source: Source::File(p),
                    what,
                })
            }
            Content::Reader(mut r) => {
                // Grown as the stream yields, not allocated (and zeroed) at
                // the limit up front: a photo of 3 MiB holds 3 MiB, where a
                // 16 MiB buffer per stream made zeroing most of an HTTP
                // upload's time, and its memory.
                let mut head = Vec::new();
                (&mut r)
                    .take(IN_MEMORY_STREAM as u64 + 1)
                    .read_to_end(&mut head)
                    .map_err(|e| Fault::io(format!("reading {name}"), e))?;
                if head.len() <= IN_MEMORY_STREAM {
                    return self.prepare(user, Content::Bytes(head.into()), name, None, buffers);
                }
                self.stage(user, &head, &mut r, name)
            }
        }
    }

    /// Spools a long stream of `user`'s to the staging directory while
    /// hashing it. The spooled bytes take disk whatever their content, so
    /// they are held against the user's quota as they arrive (as a
    /// session's are, §7a): a stream longer than the user has room for,
    /// beside what the user's other writes hold, is refused once it passes
    /// the room, not spooled whole first. The holds go when the stream is
    /// spooled; the write that follows holds its own.
    fn stage(&self, user: &str, head: &[u8], rest: &mut dyn Read, name: &str) -> Result<Prepared> {
        let fs = &*self.options.fs;
        let uid = self.user_id(user)?;
        let path = staging::new_stream_path(&self.root);
        let io = |e| Fault::io(format!("staging {name}"), e);
        let file = fs.create(&path).map_err(io)?;
        let mut hasher = Hasher::new();
        let mut at = 0u64;
        let mut holds = Vec::new();
        let mut put = |chunk: &[u8], hasher: &mut Hasher| -> Result<()> {
            if let Some(uid) = uid {
                holds.extend(self.hold_quota(uid, chunk.len() as u64, false, None)?);
            }
            hasher.update(chunk);
            file.write_all_at(at, chunk).map_err(io)?;
            at += chunk.len() as u64;
            Ok(())
        };
        let staged = (|| {
            put(head, &mut hasher)?;
            let mut buf = vec![0u8; HASH_CHUNK];
            loop {
                let n = read_full(rest, &mut buf).map_err(|e| Fault::io(format!("reading {name}"), e))?;
                if n == 0 {
                    return Ok(());
                }
                put(&buf[..n], &mut hasher)?;
            }
        })();
        if let Err(e) = staged {
            let _ = fs.remove_file(&path);
            return Err(e);
        }
        Ok(Prepared {
            hash: hasher.finalize(),
            size: at,
            source: Source::Staged(path, file),
            what: name.to_string(),
        })
    }

    /// Drops the bytes of a file read whole once step 2 is done with them:
    /// the upload goes back to being a path (read and checked again if a
    /// retry needs its bytes), so a batch holds only the uploads in flight.
    fn release(p: &mut Prepared, buffers: &BufferPool) {
        if let Source::Read { path, data } = &mut p.source {
            buffers.give(std::mem::take(data));
            p.source = Source::File(std::mem::take(path));
        }
    }

    /// Removes the streams that `prepared` spooled, once their uploads are
    /// done (committed or failed). Best effort: what is left is cleared from
    /// `staging/` at the next open, and it must not turn an upload's outcome
    /// into an I/O error.
    fn discard<'p>(&self, prepared: impl IntoIterator<Item = &'p Prepared>) {
        let mut spooled = DeleteSet::default();
        for p in prepared {
            if let Source::Staged(path, _) = &p.source {
                spooled.stream(path.clone());
            }
        }
        let _ = self.delete(spooled);
    }

    /// Whether an upload of `size` bytes of `hash` by `user` must write its
    /// bytes, with the quota it holds for them until its commit. Only the
    /// user's own holdings decide, never the store's: content the user holds
    /// (live or in the trash) is written only to heal a damaged copy;
    /// content new to the user is written whether or not the store has it
    /// for someone else, unless it does not fit the user's quota beside
    /// what is committed, reserved by their sessions (but `except`, the
    /// session being finished) and held by their other writes in flight
    /// (its bytes could then never commit; the commit step refuses it,
    /// exactly).
    ///
    /// A `retry` comes after a commit that found no blob to refer to: gc
    /// collected the one the user held (so the bytes are written), or the
    /// first pass did not write for the quota that other writes held. With
    /// `wait` (a retry that holds nothing yet), it then waits for those
    /// writes before it decides, so that it neither overtakes them nor
    /// gives up while they are in flight.
    fn must_write(
        &self,
        user: &str,
        hash: &ContentHash,
        size: u64,
        except: Option<&[u8]>,
        retry: bool,
        wait: bool,
    ) -> Result<(bool, Option<Hold<'_>>)> {
        let Some(uid) = self.user_id(user)? else {
            return Ok((true, None));
        };
        let txn = Txn::new(&self.meta);
        if holds(&txn, uid, hash)? {
            return Ok((retry || is_damaged(&txn, hash)?, None));
        }
        match self.hold_quota(uid, size, wait, except) {
            Ok(hold) => Ok((true, hold)),
            // Without waiting, a guess the commit settles; after waiting,
            // the answer (the user's other writes are done, or have held
            // the room for longer than a wait lasts).
            Err(Fault::QuotaExceeded(_)) if !wait => Ok((false, None)),
            Err(e) => Err(e),
        }
    }

    fn append_verified(&self, p: &Prepared, parts: &[&[u8]]) -> Result<(NewCopy, Option<Pin<'_>>)> {
        let appended = self.blobs.append(p.hash, RecordData::Verified(parts), &p.what)?;
        Ok((NewCopy::Segment(appended.loc, None), Some(appended.pin)))
    }

    /// Writes (or keeps for inlining) the bytes of `p`. Bytes in memory
    /// cannot change and were hashed by `prepare`, so they are written as
    /// they are; a file or staged stream is read again and checked against
    /// the hash as it is written. A segment copy comes with the pin that
    /// protects it until its commit.
    fn write_copy(&self, p: &Prepared) -> Result<(NewCopy, Option<Pin<'_>>)> {
        let inline = p.size <= self.options.inline_threshold;
        let mut reader: Box<dyn Read + '_> = match &p.source {
            Source::Memory(parts) if inline => return Ok((NewCopy::Inline(parts.concat()), None)),
            Source::Read { data, .. } if inline => return Ok((NewCopy::Inline(data.clone()), None)),
            // Written as a stream only to make its outboard in the same pass.
            Source::Memory(parts) if outboard::wanted(p.size) => Box::new(PartsReader { parts, at: 0 }),
            Source::Memory(parts) => return self.append_verified(p, &parts.iter().map(|b| &b[..]).collect::<Vec<_>>()),
            Source::Read { data, .. } => return self.append_verified(p, &[data]),
            Source::File(path) => Box::new(source_file::open(path, &p.what, None)?.0),
            Source::Staged(_, f) | Source::Session(f) => Box::new(StagedReader {
                file: &**f,
                at: 0,
                len: p.size,
            }),
        };
        if inline {
            let mut data = Vec::with_capacity(p.size as usize);
            reader
                .read_to_end(&mut data)
                .map_err(|e| Fault::io(format!("reading {}", p.what), e))?;
            if data.len() as u64 != p.size || ContentHash::of(&data) != p.hash {
                return Err(Fault::ContentChanged(p.what.clone()));
            }
            return Ok((NewCopy::Inline(data), None));
        }
        let data = RecordData::Stream {
            reader: &mut reader,
            length: p.size,
        };
        let appended = self.blobs.append(p.hash, data, &p.what)?;
        let outboard = appended.outboard.map(Arc::from);
        Ok((NewCopy::Segment(appended.loc, outboard), Some(appended.pin)))
    }
}

impl User {
    /// Uploads one content as `name` into `album`, applying the duplicate
    /// rules of `mode`. Returns once the outcome is durable.
    ///
    /// The album must exist (see [`User::ensure_album`]).
    ///
    /// # Errors
    ///
    /// - [`UploadError::InvalidName`] if `name` is not an acceptable file name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`UploadError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`UploadError::QuotaExceeded`] if storing the content would take the user past
    ///   their quota (content the user already holds charges nothing).
    /// - [`UploadError::NotAFile`] if a [`Content::Path`] is a symbolic link (never
    ///   followed), a FIFO, a socket or a device.
    /// - [`UploadError::ContentChanged`] if a [`Content::Path`] file changed while it
    ///   was read: its size, modification or change time moved, or its bytes differ
    ///   between the hashing pass and the writing pass.
    /// - [`UploadError::Storage`] if reading the content fails
    ///   ([`StorageError::Io`](crate::StorageError::Io)), the disk or the metadata
    ///   database fails, the store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)), or the upload
    ///   lost a race with `gc` three times
    ///   ([`StorageError::Contended`](crate::StorageError::Contended); trying again is
    ///   safe).
    pub fn upload(
        &self,
        album: AlbumId,
        name: impl Into<FileName>,
        content: Content,
        mode: DedupMode,
    ) -> Result<UploadReport, UploadError> {
        self.upload_batch(vec![Upload::new(album, name, content, mode)])
            .pop()
            .expect("one result per upload")
    }

    /// Uploads many contents in one durable commit: one `fdatasync` of the
    /// segment and one synced metadata write for the whole batch. Results are
    /// in the order of `uploads`; each upload succeeds or fails on its own
    /// (a quota overflow in the middle of a batch fails only the uploads past
    /// the limit). Duplicates within the batch are caught: the second of two
    /// identical uploads is `Skipped` or `Linked` against the first.
    ///
    /// # Errors
    ///
    /// Each upload's result has its own error, one of:
    ///
    /// - [`UploadError::InvalidName`] if its name is not an acceptable file name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`UploadError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`UploadError::QuotaExceeded`] if storing the content would take the user past
    ///   their quota (content the user already holds charges nothing).
    /// - [`UploadError::HashMismatch`] if the content does not hash to the one declared
    ///   with [`Upload::expect_hash`].
    /// - [`UploadError::NotAFile`] if a [`Content::Path`] is a symbolic link (never
    ///   followed), a FIFO, a socket or a device.
    /// - [`UploadError::ContentChanged`] if a [`Content::Path`] file changed while it
    ///   was read: its size, modification or change time moved, or its bytes differ
    ///   between the hashing pass and the writing pass; or it is not the file
    ///   [`Upload::expect_source`] describes.
    /// - [`UploadError::Storage`] if reading the content fails
    ///   ([`StorageError::Io`](crate::StorageError::Io)), the disk or the metadata
    ///   database fails, the store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)), or the upload
    ///   lost a race with `gc` three times
    ///   ([`StorageError::Contended`](crate::StorageError::Contended); trying again is
    ///   safe).
    ///
    /// A failed sync of the batch's bytes fails every upload still waiting for
    /// its commit, with [`StorageError::Poisoned`](crate::StorageError::Poisoned):
    /// none of them is acknowledged.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store, Upload};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let bob = store.user("bob").unwrap();
    /// let album = bob.ensure_album("Trip").unwrap();
    /// let results = bob.upload_batch(vec![
    ///     Upload::new(album, "a.jpg", Content::from(&b"same"[..]), DedupMode::Hash),
    ///     Upload::new(album, "b.jpg", Content::from(&b"same"[..]), DedupMode::Hash),
    /// ]);
    /// assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Stored);
    /// assert_eq!(results[1].as_ref().unwrap().outcome, Outcome::Skipped);
    /// ```
    pub fn upload_batch(&self, uploads: Vec<Upload>) -> Vec<Result<UploadReport, UploadError>> {
        let (inner, user) = (self.inner(), self.name());
        let count = uploads.len();
        let buffers = &BufferPool::default();
        if count < 2 {
            let hashed = uploads
                .into_iter()
                .enumerate()
                .map(|(i, up)| (i, inner.hash_upload(user, up, buffers)));
            return narrow(inner.store_prepared(user, count, hashed, buffers, None));
        }
        // Reading and hashing on every core, one upload per worker: a
        // single reader's copies out of the page cache would not overlap
        // its hashing.
        let workers = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        ordered_map(
            uploads,
            workers,
            READ_AHEAD,
            |up| inner.hash_upload(user, up, buffers),
            |hashed| narrow(inner.store_prepared(user, count, hashed, buffers, None)),
        )
    }
}

/// Each upload's result as its caller sees it.
fn narrow(results: Vec<Result<UploadReport>>) -> Vec<Result<UploadReport, UploadError>> {
    results.into_iter().map(|r| r.map_err(UploadError::from)).collect()
}

impl Inner {
    /// Step 1 for one upload: its names checked, its content hashed and
    /// compared with the hash the client declared.
    fn hash_upload(&self, user: &str, mut up: Upload, buffers: &BufferPool) -> Result<(Upload, Prepared)> {
        check_file_name(&up.name)?;
        self.health.check()?;
        let content = std::mem::replace(&mut up.content, Content::Bytes(Bytes::new()));
        let p = self.prepare(user, content, &up.name.to_string(), up.seen, buffers)?;
        match up.expected {
            Some(expected) if expected != p.hash => {
                self.discard([&p]);
                Err(Fault::HashMismatch(HashMismatch {
                    expected,
                    actual: p.hash,
                }))
            }
            _ => Ok((up, p)),
        }
    }
}

impl Inner {
    /// Stores an upload session's received bytes as `name` into `album`,
    /// exactly as a one-shot upload of them would be stored. The bytes
    /// (`source`: the session's staged file, which stays the session's, or
    /// the whole content in memory) are copied once into a segment (or
    /// inlined). The session's record (`session`, its key) goes in the same
    /// commit as the file comes.
    #[expect(clippy::too_many_arguments, reason = "one upload's fields, as `Upload` holds them")]
    pub(crate) fn upload_from_session(
        &self,
        user: &str,
        album: AlbumId,
        name: &FileName,
        mode: DedupMode,
        hash: ContentHash,
        size: u64,
        source: Source,
        session: Vec<u8>,
    ) -> Result<UploadReport> {
        self.health.check()?;
        let prepared = Prepared {
            hash,
            size,
            source,
            what: name.to_string(),
        };
        let up = Upload::new(album, name, Content::Bytes(Bytes::new()), mode);
        self.store_prepared(
            user,
            1,
            [(0, Ok((up, prepared)))],
            &BufferPool::default(),
            Some(session),
        )
        .pop()
        .expect("one result per upload")
    }

    /// Step 2 for one hashed upload: the copy of its bytes that the commit
    /// will point at, if the user's holdings call for one. `copies` holds the copies this
    /// batch wrote, so that a content repeated in a batch is written once;
    /// `force` marks a retry (see [`Inner::must_write`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "the batch loop's state, borrowed for one upload"
    )]
    fn copy_for<'a>(
        &'a self,
        user: &str,
        p: &Prepared,
        force: bool,
        except: Option<&[u8]>,
        copies: &mut HashMap<ContentHash, NewCopy>,
        pins: &mut Vec<Pin<'a>>,
        holds: &mut Vec<Hold<'a>>,
    ) -> Result<Option<NewCopy>> {
        if let Some(c) = copies.get(&p.hash) {
            return Ok(Some(c.clone()));
        }
        // Only a retry that holds nothing may wait: a writer that holds
        // quota and waits for another could be waited for in turn.
        let wait = force && holds.is_empty();
        let (write, hold) = self.must_write(user, &p.hash, p.size, except, force, wait)?;
        if !write {
            return Ok(None);
        }
        // A write that fails gives its hold back at once.
        let (copy, pin) = self.write_copy(p)?;
        holds.extend(hold);
        pins.extend(pin);
        copies.insert(p.hash, copy.clone());
        Ok(Some(copy))
    }

    /// Steps 2 and 3 for the `count` uploads of a batch, as step 1 hands
    /// them over (in the batch's order, each with its index). Step 2 starts
    /// on the first upload while step 1 is still hashing the next.
    ///
    /// `buffers` takes back the read buffers of uploads step 2 is done with.
    ///
    /// `retire` is the record of the upload session the content comes from:
    /// it is deleted in the commit that stores the file, so a crash leaves
    /// either the session or the file, never both.
    fn store_prepared(
        &self,
        user: &str,
        count: usize,
        hashed: impl IntoIterator<Item = (usize, Result<(Upload, Prepared)>)>,
        buffers: &BufferPool,
        retire: Option<Vec<u8>>,
    ) -> Vec<Result<UploadReport>> {
        let inner = self;
        let mut results: Vec<Option<Result<UploadReport>>> = (0..count).map(|_| None).collect();
        let mut prepared: Vec<(usize, Upload, Prepared)> = Vec::new();
        let mut copies: HashMap<ContentHash, NewCopy> = HashMap::new();
        let mut reported: HashSet<ContentHash> = HashSet::new();
        // Held until every commit of this batch has finished.
        let mut pins = Vec::new();
        let mut holds = Vec::new();
        let mut hashed = Some(hashed.into_iter());
        let mut todo: Vec<usize> = Vec::new();
        // Retries go on while each settles at least one upload (each lets
        // its first upload wait for the user's other holds, so each does);
        // three in a row that settle none (a gc collecting, again and
        // again, what the uploads relied on) end them.
        let (mut attempt, mut stalls) = (0, 0);
        loop {
            let force = attempt > 0;
            attempt += 1;
            let tried = todo.len();
            let mut pending = Vec::new();
            let mut written = Written::default();
            let mut step2 = |k: usize, p: &Prepared, up: &Upload| match inner.copy_for(
                user,
                p,
                force,
                retire.as_deref(),
                &mut copies,
                &mut pins,
                &mut holds,
            ) {
                Ok(copy) => {
                    if let Some(NewCopy::Segment(loc, _)) = &copy {
                        written.add(*loc);
                    }
                    pending.push(Pending {
                        index: k,
                        album: up.album.0,
                        name: up.name.clone(),
                        mode: up.mode,
                        hash: p.hash,
                        size: p.size,
                        copy,
                        modified_ns: up.modified.map(crate::clock::to_ns),
                    });
                    None
                }
                Err(e) => Some(e),
            };
            if let Some(first) = hashed.take() {
                for (i, item) in first {
                    match item {
                        Ok((up, mut p)) => {
                            if let Some(e) = step2(prepared.len(), &p, &up) {
                                results[i] = Some(Err(e));
                            }
                            Inner::release(&mut p, buffers);
                            prepared.push((i, up, p));
                        }
                        Err(e) => results[i] = Some(Err(e)),
                    }
                }
            } else if todo.is_empty() {
                break;
            } else {
                for &k in &todo {
                    let (i, up, p) = &prepared[k];
                    if let Some(e) = step2(k, p, up) {
                        results[*i] = Some(Err(e));
                    }
                }
            }
            // Bytes durable before the metadata that points at them.
            if let Err(e) = inner.blobs.sync_written(&written) {
                // Every upload of the batch fails, none is acknowledged. A
                // failed local sync has poisoned the store; a failed upload
                // to a bucket has not (the next batch writes a new pack),
                // and each upload fails with its error.
                let poisoned = inner.health.check().is_err();
                let kind = match &e {
                    Fault::Io { source, .. } => source.kind(),
                    _ => std::io::ErrorKind::Other,
                };
                let msg = e.to_string();
                for p in &pending {
                    let failed = if poisoned {
                        Fault::Poisoned(msg.clone())
                    } else {
                        Fault::io("storing the batch's blobs", std::io::Error::new(kind, msg.clone()))
                    };
                    results[prepared[p.index].0] = Some(Err(failed));
                }
                todo.clear();
                break;
            }
            let user_name = user.to_string();
            let now = inner.now_ms();
            let retire = retire.clone();
            // Where each segment this batch wrote to lives, for its record.
            let sites: HashMap<u64, Site> = pending
                .iter()
                .filter_map(|p| match p.copy.as_ref()?.place() {
                    Place::Segment(loc) => Some(loc.segment),
                    Place::Inline(_) => None,
                })
                .map(|segment| (segment, inner.blobs.homes().site(segment)))
                .collect();
            let applied = inner.commit(move |txn| {
                let before_user = txn.savepoint();
                let uid = ensure_user(txn, &user_name)?;
                // The session goes first, so that the quota no longer counts
                // what it reserved when its file is charged.
                if let Some(session) = &retire {
                    txn.delete(Cf::Uploads, session.clone());
                }
                prefetch(txn, uid, &pending)?;
                let fresh: Vec<_> = pending.iter().filter_map(|p| p.copy.clone()).collect();
                let applied: Vec<_> = pending
                    .into_iter()
                    .map(|p| {
                        let sp = txn.savepoint();
                        let out = apply(txn, uid, &p, now);
                        if !matches!(out, Applied::Done(Ok(_))) {
                            txn.rollback_to(sp);
                        }
                        (p.index, out)
                    })
                    .collect();
                // A batch that stored nothing leaves no trace, not even a new
                // user.
                if !applied.iter().any(|(_, a)| matches!(a, Applied::Done(Ok(_)))) {
                    txn.rollback_to(before_user);
                    return Ok(applied);
                }
                // Every copy this batch wrote is inside its segment's
                // committed length from now on, live or garbage, so that
                // recovery keeps it and compaction counts it.
                for copy in &fresh {
                    cover(txn, &copy.place(), &|segment| {
                        sites.get(&segment).copied().unwrap_or_default()
                    })?;
                }
                Ok(applied)
            });
            // What the holds kept room for is committed now, or failed.
            holds.clear();
            todo.clear();
            match applied {
                Ok(applied) => {
                    for (k, out) in applied {
                        match out {
                            Applied::Done(r) => {
                                // What this upload wrote: the copy's bytes,
                                // reported once per batch.
                                let r = r.map(|mut r| {
                                    let wrote = copies.contains_key(&r.hash) && reported.insert(r.hash);
                                    r.bytes_written = if wrote { r.size } else { 0 };
                                    r
                                });
                                results[prepared[k].0] = Some(r);
                            }
                            Applied::NeedBytes => todo.push(k),
                        }
                    }
                }
                Err(e) => {
                    // The batch's one commit failed: every upload of it gets
                    // the same failure, of the same kind (a poisoned store
                    // is `Poisoned`, a panic `CommitPanicked`).
                    for (i, _, _) in &prepared {
                        results[*i].get_or_insert_with(|| Err(e.replicate()));
                    }
                }
            }
            if force && todo.len() >= tried {
                stalls += 1;
                if stalls == 3 {
                    break;
                }
            } else {
                stalls = 0;
            }
        }
        for k in todo {
            results[prepared[k].0] = Some(Err(Fault::Contended(
                "three retries in a row found the blob this upload relied on collected by a concurrent gc".into(),
            )));
        }
        drop((pins, holds));
        inner.discard(prepared.iter().map(|(_, _, p)| p));
        let results: Vec<Result<UploadReport>> = results
            .into_iter()
            .map(|r| r.expect("every upload has a result"))
            .collect();
        results.iter().flatten().for_each(|r| inner.counters.upload(r));
        results
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{DedupMode, Store};

    fn setup() -> (tempfile::TempDir, Store, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let file = dir.path().join("IMG.JPG");
        std::fs::write(&file, vec![5u8; 100_000]).unwrap();
        (dir, store, file)
    }

    /// Hashes `file` and lets go of the bytes read, as step 2 does once done
    /// with an upload: what a retry (or any file too large to be read whole)
    /// writes from is the file again.
    fn hashed_path(inner: &Inner, file: &Path) -> Prepared {
        let buffers = BufferPool::default();
        let mut prepared = inner
            .prepare("ann", Content::Path(file.to_path_buf()), "IMG.JPG", None, &buffers)
            .unwrap();
        Inner::release(&mut prepared, &buffers);
        assert!(matches!(prepared.source, Source::File(_)));
        prepared
    }

    /// A file edited between the hashing pass and the writing pass is
    /// refused, and the half-written record is rolled back.
    #[test]
    fn a_file_that_changes_while_being_read_stores_nothing() {
        let (_dir, store, file) = setup();
        let inner = &store.inner;
        let prepared = hashed_path(inner, &file);
        std::fs::write(&file, vec![6u8; 100_000]).unwrap();
        assert!(matches!(inner.write_copy(&prepared), Err(Fault::ContentChanged(_))));
        // Same length but grown: also refused.
        std::fs::write(&file, vec![5u8; 100_001]).unwrap();
        assert!(matches!(inner.write_copy(&prepared), Err(Fault::ContentChanged(_))));
        // Nothing of either attempt is left: the next record starts where the
        // first would have.
        std::fs::write(&file, vec![5u8; 100_000]).unwrap();
        let (NewCopy::Segment(loc, _), _pin) = inner.write_copy(&prepared).unwrap() else {
            panic!("100 KB is not inlined")
        };
        assert_eq!(loc.offset, crate::blob::format::SEGMENT_HEADER_LEN as u64);
    }

    /// A content in pieces is the blob of the pieces joined, whether it is
    /// inlined, written with one write per piece, or streamed to make its
    /// outboard; pieces of every size, empty ones too, are taken in order.
    #[test]
    fn a_content_in_parts_is_stored_as_its_pieces_joined() {
        let (_dir, store, _) = setup();
        let ann = store.user("ann").unwrap();
        let album = ann.ensure_album("A").unwrap();
        for (i, len) in [100usize, 3 << 20, (17 << 20) + 5].into_iter().enumerate() {
            let whole: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
            let mut parts: Vec<Bytes> = Vec::new();
            let mut at = 0;
            for size in [1usize, 0, 65_536, 7, 1 << 20].into_iter().cycle() {
                let end = (at + size).min(len);
                parts.push(whole[at..end].to_vec().into());
                at = end;
                if at == len {
                    break;
                }
            }
            let name = format!("{len}.bin");
            let report = ann
                .upload(album, name.as_str(), Content::Parts(parts), DedupMode::Hash)
                .unwrap();
            assert_eq!(report.hash, ContentHash::of(&whole), "{len}");
            assert_eq!(ann.read(report.file_id).unwrap(), whole, "{len}");
        }
        assert!(store.verify(true).unwrap().ok);
    }

    #[test]
    fn a_file_that_vanishes_while_being_read_stores_nothing() {
        let (_dir, store, file) = setup();
        let prepared = hashed_path(&store.inner, &file);
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(store.inner.write_copy(&prepared), Err(Fault::Io { .. })));
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        assert!(store
            .user("u")
            .unwrap()
            .upload(album, "IMG.JPG", Content::Path(file), DedupMode::Hash)
            .is_err());
        assert!(store.user("u").unwrap().files().unwrap().is_empty());
        assert!(store.verify(true).unwrap().ok);
    }
}
