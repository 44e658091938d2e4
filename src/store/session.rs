//! Resumable upload sessions: a large content sent in pieces, over hours
//! and across restarts of client and store, then stored exactly as a
//! one-shot upload of the same bytes would be.
//!
//! A session is a record in the `uploads` column family (keyed by user and
//! id, 128 random bits) and a staged file `uploads/<n>.part` written through
//! [`Fs`], `n` a store-wide number kept in the record and never shown. A
//! session is found only through its owner: another user's id is
//! [`SessionError::UnknownUpload`], exactly like an id that never existed
//! (or a malformed one, which never parses).
//!
//! The protocol is one of offsets, which tus 1.0 and the IETF
//! resumable-upload draft both speak:
//!
//! - `append` writes the bytes at the session's durable offset, makes them
//!   durable (`fdatasync`), and only then commits the new offset (synced).
//!   So the committed offset never names a byte that is not on disk, and a
//!   byte past it was never acknowledged.
//! - At open, [`staging`](super::staging) brings each staged file in line
//!   with its committed offset (a session that lost acknowledged bytes
//!   restarts from 0, with a recovery note). A client asks for the offset
//!   before resuming, so it re-sends instead of storing wrong bytes.
//! - `finish` hashes the received bytes (with the hasher kept between
//!   appends, or by reading the staged file again after a restart) and hands
//!   them to the one-shot upload path, which copies them once into a segment.
//!   The staged file cannot itself become a segment without a rename in
//!   [`Fs`]: a known limit.
//! - `finish_whole` is the shortcut of a session that receives its every
//!   byte in one request: the bytes, held in memory by the caller, go
//!   straight to a segment as a one-shot upload's would, and nothing is
//!   staged or synced twice. A request that breaks off appends instead.
//! - The session record is deleted in the commit that stores the file, so
//!   a crash leaves the session or the file, never both; the staged bytes
//!   are removed after that commit, through a
//!   [`DeleteSet`](super::delete_set::DeleteSet) (at the next open, if a
//!   crash intervened).
//! - Sessions expire [`StoreOptions::upload_expiry`](crate::StoreOptions::upload_expiry)
//!   after their last append; an expired session is unknown, and `gc`
//!   removes its record and then its staged file.
//!
//! Staged bytes count against the user's quota from the moment they are
//! promised: a declared length when it is declared, bytes of a deferred
//! length as they arrive (held before they are written:
//! [`reservation`](super::reservation)), until the session is finished
//! (its reservation becomes the file's charge in the same commit), aborted
//! or expired. All sessions together stage at most
//! [`StoreOptions::max_staged_bytes`](crate::StoreOptions::max_staged_bytes).
//! No session keeps a file descriptor between requests.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::delete_set::DeleteSet;
use super::ingest::{hash_staged, Source};
use super::ledger::{check_user_quota, load_album, load_user, staged_bytes};
use super::staging::{self, Slot};
use super::{DedupMode, HashedUpload, Inner, UploadReport, User};
use crate::error::{Fault, HashMismatch, Result, SessionError};
use crate::fs::FsFile;
use crate::hash::{ContentHash, Hasher};
use crate::ids::{AlbumId, UploadId};
use crate::meta::records::UploadRecord;
use crate::meta::txn::Txn;
use crate::meta::{decode, keys, Cf};
use crate::names::{check_file_name, FileName};

/// The most client metadata entries a session keeps; more are refused
/// with [`SessionError::MetadataTooLarge`].
///
/// ```
/// assert!(keepsake::MAX_UPLOAD_METADATA_ENTRIES >= 8);
/// ```
pub const MAX_UPLOAD_METADATA_ENTRIES: usize = 32;
/// The most bytes of client metadata (keys and values together) a session
/// keeps: enough for a file type and a few names, not a side channel.
///
/// ```
/// assert!(keepsake::MAX_UPLOAD_METADATA_BYTES >= 1024);
/// ```
pub const MAX_UPLOAD_METADATA_BYTES: usize = 4096;

/// What a resumable upload session will store, and how: the arguments of
/// [`User::begin_upload`], as a protocol's creation request carries them
/// (tus `Upload-Length`, `Upload-Defer-Length` and `Upload-Metadata`; the
/// IETF draft's upload creation).
///
/// ```
/// use keepsake::{AlbumId, DedupMode, SessionOptions};
/// let options = SessionOptions {
///     length: Some(50_000),
///     ..SessionOptions::new(AlbumId(1), "VID.MP4", DedupMode::Hash)
/// };
/// assert_eq!(options.expected_hash, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// The album the file goes into; it must exist.
    pub album: AlbumId,
    /// The file's name.
    pub name: FileName,
    /// The duplicate rule `finish` applies.
    pub mode: DedupMode,
    /// The content's length in bytes, or `None` to declare it later with
    /// [`User::set_upload_length`] (tus's creation-defer-length). A declared
    /// length is checked against the quota at once.
    pub length: Option<u64>,
    /// The BLAKE3 hash of the whole content, if the client knows it:
    /// `finish` then refuses any other bytes, and content the duplicate
    /// rules skip or link needs no bytes at all.
    pub expected_hash: Option<ContentHash>,
    /// The client's metadata, kept for it (at most
    /// [`MAX_UPLOAD_METADATA_ENTRIES`] entries and
    /// [`MAX_UPLOAD_METADATA_BYTES`] bytes).
    pub metadata: BTreeMap<String, String>,
}

impl SessionOptions {
    /// Refuses what [`User::begin_upload`] would refuse of these options
    /// before it looks at the store: the name and the metadata. A protocol
    /// that may store a small upload without a session checks its request
    /// with this, so that the answer does not depend on which way it went.
    ///
    /// # Errors
    ///
    /// - [`SessionError::Upload`] with [`UploadError::InvalidName`](crate::UploadError::InvalidName)
    ///   if `name` is not an acceptable file name.
    /// - [`SessionError::MetadataTooLarge`] and [`SessionError::InvalidMetadata`]
    ///   as for [`User::begin_upload`].
    ///
    /// ```
    /// use keepsake::{AlbumId, DedupMode, SessionOptions};
    /// let mut options = SessionOptions::new(AlbumId(1), "VID.MP4", DedupMode::Hash);
    /// assert!(options.check().is_ok());
    /// options.metadata.insert("bad key".into(), "x".into());
    /// assert!(options.check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), SessionError> {
        check_file_name(&self.name).map_err(Fault::from)?;
        check_metadata(self.metadata.clone())?;
        Ok(())
    }

    /// A session for `name` into `album` under `mode`, with its length
    /// deferred, no expected hash and no metadata.
    pub fn new(album: AlbumId, name: impl Into<FileName>, mode: DedupMode) -> Self {
        SessionOptions {
            album,
            name: name.into(),
            mode,
            length: None,
            expected_hash: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// What [`User::begin_upload`] answered.
///
/// ```
/// use keepsake::{Content, ContentHash, DedupMode, Outcome, SessionOptions, Store, UploadStart};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let ann = store.user("ann").unwrap();
/// let album = ann.ensure_album("Videos").unwrap();
/// ann.upload(album, "v.mp4", Content::from(&b"video"[..]), DedupMode::Hash).unwrap();
/// // The same content again, announced by its hash: nothing to send.
/// let hash = Some(ContentHash::of(b"video"));
/// let start = ann.begin_upload(SessionOptions { length: Some(5), expected_hash: hash, ..SessionOptions::new(album, "v.mp4", DedupMode::Hash) }).unwrap();
/// assert!(matches!(start, UploadStart::Done(r) if r.outcome == Outcome::Skipped));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStart {
    /// A new session: send the bytes with [`User::append`].
    Session(UploadId),
    /// The declared hash made bytes unnecessary (a duplicate was skipped or
    /// linked): the upload is already done, as [`User::link`] reports it.
    Done(UploadReport),
}

/// The state of an upload session, as [`User::upload_status`] and
/// [`User::uploads`] report it.
///
/// ```
/// use keepsake::{DedupMode, SessionOptions, Store, UploadStart};
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path()).unwrap();
/// let ann = store.user("ann").unwrap();
/// let album = ann.ensure_album("Videos").unwrap();
/// let UploadStart::Session(id) =
///     ann.begin_upload(SessionOptions { length: Some(4), ..SessionOptions::new(album, "v.mp4", DedupMode::Hash) }).unwrap()
/// else { unreachable!() };
/// ann.append(id, 0, b"vid").unwrap();
/// let status = &ann.uploads().unwrap()[0];
/// assert_eq!((status.id, status.offset, status.complete), (id, 3, false));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UploadStatus {
    /// The session's id.
    pub id: UploadId,
    /// Where the file will go.
    pub album: AlbumId,
    /// The file's name.
    pub name: FileName,
    /// The duplicate rule `finish` applies.
    pub mode: DedupMode,
    /// Bytes received and durable: the next append starts here.
    pub offset: u64,
    /// The content's length, or `None` while deferred.
    pub declared_length: Option<u64>,
    /// Whether every declared byte has arrived.
    pub complete: bool,
    /// The hash `finish` will insist on, if the client declared one.
    pub expected_hash: Option<ContentHash>,
    /// When the session began (milliseconds since the epoch).
    pub created_ms: u64,
    /// When the session expires unless appended to.
    pub expires_ms: u64,
    /// The client's metadata, as given at begin.
    pub metadata: BTreeMap<String, String>,
}

fn mode_code(mode: DedupMode) -> u8 {
    match mode {
        DedupMode::Hash => 0,
        DedupMode::NameAndHash => 1,
    }
}

fn mode_of(code: u8) -> DedupMode {
    match code {
        0 => DedupMode::Hash,
        _ => DedupMode::NameAndHash,
    }
}

fn check_metadata(metadata: BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    let bytes = metadata
        .iter()
        .fold(0usize, |n, (k, v)| n.saturating_add(k.len()).saturating_add(v.len()));
    if metadata.len() > MAX_UPLOAD_METADATA_ENTRIES || bytes > MAX_UPLOAD_METADATA_BYTES {
        return Err(Fault::MetadataTooLarge {
            max_entries: MAX_UPLOAD_METADATA_ENTRIES,
            max_bytes: MAX_UPLOAD_METADATA_BYTES,
        });
    }
    for (k, v) in &metadata {
        let invalid = |reason| {
            let mut key = String::new();
            let _ = crate::names::write_escaped(&mut key, k.as_bytes());
            Err(Fault::InvalidMetadata { key, reason })
        };
        if k.is_empty() || k.chars().any(|c| c == ' ' || c == ',' || c.is_control()) {
            return invalid("a key must be non-empty, without spaces, commas or control characters");
        }
        if v.contains(['\r', '\n', '\0']) {
            return invalid("a value must not contain CR, LF or NUL");
        }
    }
    Ok(metadata.into_iter().collect())
}

/// Refuses a session's reservation growing to `length` (all its bytes) if
/// the user's quota cannot take it beside everything else it counts; the
/// session keyed `this` (if it exists yet) is counted as `length`. Staged
/// bytes take disk whatever their content, so they are reserved even when
/// the user holds the declared content (whose finish then charges
/// nothing).
fn check_declared(txn: &Txn<'_>, uid: u64, length: u64, now: u64, this: Option<&[u8]>) -> Result<()> {
    check_user_quota(txn, uid, &load_user(txn, uid)?, length, now, this)
}

fn status(id: UploadId, rec: UploadRecord) -> UploadStatus {
    UploadStatus {
        id,
        album: AlbumId(rec.album),
        mode: mode_of(rec.mode),
        offset: rec.offset,
        declared_length: rec.declared,
        complete: rec.declared == Some(rec.offset),
        expected_hash: rec.expected,
        created_ms: rec.created_ms,
        expires_ms: rec.expires_ms,
        metadata: rec.metadata.into_iter().collect(),
        name: rec.name,
    }
}

impl Inner {
    fn upload_expiry_ms(&self) -> u64 {
        self.options.upload_expiry.as_millis() as u64
    }

    fn slot(&self, rec: &UploadRecord) -> Arc<Mutex<Slot>> {
        self.sessions.slot(rec.file)
    }

    /// The user's live session `id`. Expired sessions are unknown even
    /// before `gc` removes them.
    fn session(&self, user: &str, id: UploadId) -> Result<(u64, UploadRecord)> {
        let uid = self.user_id(user)?.ok_or(Fault::UnknownUpload(id))?;
        let rec = self
            .meta
            .get::<UploadRecord>(Cf::Uploads, &keys::upload(uid, &id))?
            .filter(|r| r.expires_ms > self.now_ms())
            .ok_or(Fault::UnknownUpload(id))?;
        Ok((uid, rec))
    }

    /// Runs `work` as the session's only writer, with its record as
    /// committed. Ownership is checked before the lock is tried, so another
    /// user learns nothing from a busy session.
    fn with_session<R>(
        &self,
        user: &str,
        id: UploadId,
        work: impl FnOnce(&mut Slot, u64, UploadRecord) -> Result<R>,
    ) -> Result<R> {
        let (_, rec) = self.session(user, id)?;
        let cell = self.slot(&rec);
        let mut slot = cell.try_lock().ok_or(Fault::UploadBusy(id))?;
        // Again under the lock: the previous writer may have moved the
        // offset or ended the session.
        let (uid, rec) = self.session(user, id)?;
        work(&mut slot, uid, rec)
    }

    /// The session's staged file, opened for one request and closed with
    /// it: no descriptor stays open between requests, so the number of
    /// sessions (each user's, everyone's) never bounds what the process can
    /// open. Created if a crash came between the session's commit and the
    /// file's creation.
    fn staged_file(&self, rec: &UploadRecord) -> Result<Box<dyn FsFile>> {
        let fs = &*self.options.fs;
        let path = staging::session_path(&self.root, rec.file);
        let io = |e| Fault::io(format!("opening {}", path.display()), e);
        match fs.open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let f = fs.create(&path).map_err(io)?;
                fs.sync_dir(&staging::sessions_dir(&self.root)).map_err(io)?;
                Ok(f)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The end of finishing session `id` (record `rec`, the user's id
    /// `uid`) whose `size` bytes, read from `source`, hash to `hash`: a
    /// hash other than the one the client declared ends the session with
    /// nothing stored; else the file is stored in the commit that drops the
    /// record, and then the staged bytes go.
    #[expect(clippy::too_many_arguments, reason = "one session's fields and its content's")]
    fn store_session(
        &self,
        user: &str,
        uid: u64,
        id: UploadId,
        rec: &UploadRecord,
        hash: ContentHash,
        size: u64,
        source: Source,
    ) -> Result<UploadReport> {
        if let Some(expected) = rec.expected.filter(|&e| e != hash) {
            self.drop_session(uid, id, rec)?;
            return Err(Fault::HashMismatch(HashMismatch { expected, actual: hash }));
        }
        // The commit that stores the file drops the session record; the
        // staged bytes go only after it.
        let report = self.upload_from_session(
            user,
            AlbumId(rec.album),
            &rec.name,
            mode_of(rec.mode),
            hash,
            size,
            source,
            keys::upload(uid, &id),
        )?;
        self.end_session(rec)?;
        Ok(report)
    }

    /// Drops a session: its record first, then (once nothing names it) its
    /// staged file. A crash in between leaves a file that the next open
    /// removes.
    fn drop_session(&self, uid: u64, id: UploadId, rec: &UploadRecord) -> Result<()> {
        self.commit(move |txn| {
            txn.delete(Cf::Uploads, keys::upload(uid, &id));
            Ok(())
        })?;
        self.end_session(rec)
    }

    /// What follows the commit that ended session `rec`: its bytes no longer
    /// count as staged (first, so that a failed removal cannot leave them
    /// counted), then its staged file goes (or, if removing it fails, at
    /// the next open).
    fn end_session(&self, rec: &UploadRecord) -> Result<()> {
        self.unstage(rec);
        let mut doomed = DeleteSet::default();
        doomed.session(rec.file);
        self.delete(doomed)
    }

    /// Lowers the bytes all sessions stage by what the ended session `rec`
    /// staged, once the commit that ended it has returned.
    fn unstage(&self, rec: &UploadRecord) {
        self.sessions.staged.lower(rec.declared.unwrap_or(rec.offset));
    }

    /// Removes the sessions that expired, for `gc`. A session busy with an
    /// append is left alone: the append renews it. Returns how many went.
    pub(crate) fn expire_uploads(&self) -> Result<u64> {
        let now = self.now_ms();
        let mut expired = 0;
        for (key, value) in self.meta.scan_all(Cf::Uploads, &[])? {
            let rec = decode::<UploadRecord>(&value)?;
            if rec.expires_ms > now {
                continue;
            }
            let cell = self.slot(&rec);
            let Some(_writer) = cell.try_lock() else {
                continue;
            };
            let gone = self.commit(move |txn| match txn.get::<UploadRecord>(Cf::Uploads, &key)? {
                Some(rec) if rec.expires_ms <= now => {
                    txn.delete(Cf::Uploads, key);
                    Ok(Some(rec))
                }
                _ => Ok(None),
            })?;
            if let Some(rec) = &gone {
                // A file that cannot be removed now goes at the next open;
                // the other sessions still expire.
                let _ = self.end_session(rec);
                expired += 1;
            }
        }
        Ok(expired)
    }
}

impl User {
    /// Begins a resumable upload of `name` into `album`. With
    /// `expected_hash`, a content the duplicate rules would skip or link
    /// needs no bytes: the answer is then [`UploadStart::Done`] with the
    /// report of [`User::link`] (a link is made). Otherwise a session is
    /// opened. A declared length is checked against the quota now, as
    /// content new to the user; it may instead be declared later with
    /// [`set_upload_length`](Self::set_upload_length).
    ///
    /// `metadata` is kept for the client (at most
    /// [`MAX_UPLOAD_METADATA_ENTRIES`] entries and
    /// [`MAX_UPLOAD_METADATA_BYTES`] bytes, else
    /// [`SessionError::MetadataTooLarge`]).
    ///
    /// # Errors
    ///
    /// - [`SessionError::Upload`] with [`UploadError::InvalidName`](crate::UploadError::InvalidName) if `name` is not an acceptable file name
    ///   ([`NameError`](crate::NameError) says why).
    /// - [`SessionError::MetadataTooLarge`] if `metadata` has more entries or bytes than
    ///   a session keeps.
    /// - [`SessionError::InvalidMetadata`] if a key is empty or holds a space, a comma
    ///   or a control character, or a value holds CR, LF or NUL.
    /// - [`SessionError::TooManySessions`] if the user already has
    ///   [`StoreOptions::max_sessions_per_user`](crate::StoreOptions::max_sessions_per_user)
    ///   sessions open.
    /// - [`SessionError::Upload`] with [`UploadError::UnknownAlbum`](crate::UploadError::UnknownAlbum) if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`SessionError::Upload`] with [`UploadError::QuotaExceeded`](crate::UploadError::QuotaExceeded) if a declared length would take the user past
    ///   their quota, counting what their files and other sessions use (staged bytes
    ///   are reserved even for content the user holds).
    /// - [`SessionError::StagingFull`] if the declared length would take all sessions
    ///   past [`StoreOptions::max_staged_bytes`](crate::StoreOptions::max_staged_bytes).
    /// - [`SessionError::Storage`] if the disk or the metadata database fails (creating
    ///   the staged file, say: the session is then dropped), or the store refuses writes
    ///   after a failed sync ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{DedupMode, Outcome, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let video = vec![7u8; 50_000];
    /// let options = SessionOptions {
    ///     length: Some(50_000),
    ///     ..SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
    /// };
    /// let start = ann.begin_upload(options).unwrap();
    /// let UploadStart::Session(id) = start else { panic!("new content needs its bytes") };
    /// assert_eq!(ann.append(id, 0, &video[..20_000]).unwrap(), 20_000);
    /// assert_eq!(ann.append(id, 20_000, &video[20_000..]).unwrap(), 50_000);
    /// assert_eq!(ann.finish(id).unwrap().outcome, Outcome::Stored);
    /// ```
    pub fn begin_upload(&self, options: SessionOptions) -> Result<UploadStart, SessionError> {
        let SessionOptions {
            album,
            name,
            mode,
            length: declared_length,
            expected_hash,
            metadata,
        } = options;
        check_file_name(&name).map_err(Fault::from)?;
        self.inner().health.check()?;
        let metadata = check_metadata(metadata)?;
        if let Some(hash) = expected_hash {
            let known = HashedUpload {
                album,
                name: name.clone(),
                hash,
                mode,
            };
            match self.link_hashed(&known) {
                Ok(report) => return Ok(UploadStart::Done(report)),
                Err(Fault::ContentRequired) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let now = self.inner().now_ms();
        let rec = UploadRecord {
            album: album.0,
            name,
            mode: mode_code(mode),
            declared: declared_length,
            offset: 0,
            expected: expected_hash,
            created_ms: now,
            expires_ms: now.saturating_add(self.inner().upload_expiry_ms()),
            metadata,
            // Numbered in the commit.
            file: 0,
        };
        let missing = Fault::UnknownAlbum(album.to_string());
        let limit = self.inner().options.max_sessions_per_user;
        let id = UploadId::random().map_err(|e| Fault::io("drawing an upload id", e))?;
        let inner = self.inner();
        // The declared length is held before the commit, so that uploads
        // in flight and this reservation cannot together pass the quota.
        let _hold = match (self.id()?, declared_length) {
            (Some(uid), Some(length)) => inner.hold_quota(uid, length, true, None)?,
            _ => None,
        };
        let staged = inner.sessions.staged.clone();
        let (uid, rec) = self.commit_existing(missing, move |txn, uid| {
            if load_album(txn, uid, rec.album)?.is_none() {
                return Err(Fault::UnknownAlbum(album.to_string()));
            }
            // Counted inside the commit, so that concurrent begins cannot
            // together pass the limit. Expired sessions are unknown already.
            let mut open = 0;
            for (_, value) in txn.scan(Cf::Uploads, &keys::u64_key(uid))? {
                if decode::<UploadRecord>(&value)?.expires_ms > now {
                    open += 1;
                }
            }
            if open >= limit {
                return Err(Fault::TooManySessions { limit });
            }
            if let Some(length) = rec.declared {
                check_declared(txn, uid, length, now, None)?;
                staged.check_share(staged_bytes(txn, uid, now, None)?, length)?;
            }
            let file = txn.get::<u64>(Cf::Meta, keys::NEXT_UPLOAD)?.unwrap_or(1);
            txn.put(Cf::Meta, keys::NEXT_UPLOAD.to_vec(), &(file + 1));
            let rec = UploadRecord { file, ..rec };
            let key = keys::upload(uid, &id);
            if txn.exists(Cf::Uploads, &key)? {
                return Err(Fault::Contended(
                    "the random upload id drawn is taken; trying again draws another".into(),
                ));
            }
            txn.put(Cf::Uploads, key, &rec);
            staged.raise(rec.declared.unwrap_or(0))?;
            Ok((uid, rec))
        })?;
        let created = self.inner().staged_file(&rec).map(drop);
        if let Err(e) = created {
            // No bytes can be taken without the file: the session goes too.
            self.inner().drop_session(uid, id, &rec)?;
            return Err(e.into());
        }
        Ok(UploadStart::Session(id))
    }

    /// Appends `bytes` at `offset`, which must be the session's durable
    /// length (else [`SessionError::OffsetMismatch`], which names it). Returns the
    /// new durable offset once the bytes are synced and the offset
    /// committed. Bytes past a declared length are refused
    /// ([`SessionError::LengthExceeded`]); a concurrent request on the same
    /// session gets [`SessionError::UploadBusy`]. Each append renews the session's
    /// expiry.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::UploadBusy`] while another append, finish or abort of the
    ///   session is in progress.
    /// - [`SessionError::OffsetMismatch`] if `offset` is not the session's durable
    ///   length; `expected` is where to resume (tus's 409 with `Upload-Offset`).
    /// - [`SessionError::LengthExceeded`] if the bytes would run past the declared
    ///   length.
    /// - [`SessionError::Upload`] with [`UploadError::QuotaExceeded`](crate::UploadError::QuotaExceeded)
    ///   if the length is deferred and the bytes would take the user past their quota;
    ///   nothing is written.
    /// - [`SessionError::StagingFull`] if the length is deferred and the bytes would take
    ///   all sessions past [`StoreOptions::max_staged_bytes`](crate::StoreOptions::max_staged_bytes);
    ///   nothing is acknowledged (the bytes are normally not even written; if the
    ///   total filled up while they were, the next append overwrites them).
    /// - [`SessionError::Storage`] if writing or syncing the bytes fails
    ///   ([`StorageError::Io`](crate::StorageError::Io); nothing is acknowledged, and the
    ///   next append from the same offset overwrites them), the metadata database fails,
    ///   or the store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{DedupMode, SessionError, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let UploadStart::Session(id) =
    ///     ann.begin_upload(SessionOptions::new(album, "v.mp4", DedupMode::Hash)).unwrap()
    /// else { unreachable!() };
    /// ann.append(id, 0, b"first").unwrap();
    /// // A retry of a piece that did arrive: the error says where to resume.
    /// assert!(matches!(ann.append(id, 0, b"first"), Err(SessionError::OffsetMismatch { expected: 5 })));
    /// ```
    pub fn append(&self, id: UploadId, offset: u64, bytes: &[u8]) -> Result<u64, SessionError> {
        let inner = self.inner();
        inner.health.check()?;
        Ok(inner.with_session(self.name(), id, |slot, uid, rec| {
            if offset != rec.offset {
                return Err(Fault::OffsetMismatch { expected: rec.offset });
            }
            let Some(end) = offset.checked_add(bytes.len() as u64) else {
                return Err(Fault::LengthExceeded { declared: u64::MAX });
            };
            if let Some(declared) = rec.declared.filter(|&d| end > d) {
                return Err(Fault::LengthExceeded { declared });
            }
            if bytes.is_empty() {
                return Ok(offset);
            }
            // A deferred length reserves the bytes as they arrive: held
            // before they are written, checked again by the commit, and
            // counted against the store's staging limit there.
            let n = bytes.len() as u64;
            let deferred = rec.declared.is_none();
            let charged = if deferred { n } else { 0 };
            let _hold = inner.hold_quota(uid, charged, true, None)?;
            let staged = inner.sessions.staged.clone();
            if deferred {
                staged.check(n)?;
            }
            let file = inner.staged_file(&rec)?;
            let written = file.write_all_at(offset, bytes).and_then(|()| file.sync_data());
            drop(file);
            if let Err(e) = written {
                // Unacknowledged: the next append overwrites these bytes and
                // syncs them again, through a fresh handle.
                return Err(Fault::io(format!("writing upload {id}"), e));
            }
            let now = inner.now_ms();
            let expires_ms = now.saturating_add(inner.upload_expiry_ms());
            inner.commit(move |txn| {
                let key = keys::upload(uid, &id);
                // Expired meanwhile: unknown, not renewed.
                let mut rec = txn
                    .get::<UploadRecord>(Cf::Uploads, &key)?
                    .filter(|r| r.offset == offset && r.expires_ms > now)
                    .ok_or(Fault::UnknownUpload(id))?;
                check_user_quota(txn, uid, &load_user(txn, uid)?, charged, now, None)?;
                if deferred {
                    staged.check_share(staged_bytes(txn, uid, now, None)?, n)?;
                }
                rec.offset = end;
                rec.expires_ms = expires_ms;
                txn.put(Cf::Uploads, key, &rec);
                if deferred {
                    staged.raise(n)?;
                }
                Ok(())
            })?;
            let tracked = match slot.hasher.take() {
                Some((h, at)) if at == offset => Some(h),
                _ if offset == 0 => Some(Hasher::new()),
                _ => None,
            };
            slot.hasher = tracked.map(|mut h| {
                h.update(bytes);
                (h, end)
            });
            Ok(end)
        })?)
    }

    /// Declares the length of a session begun without one. It can be set
    /// once (setting the same value again is accepted), not below the bytes
    /// already received, and is checked against the quota.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::UploadBusy`] while another append, finish or abort of the
    ///   session is in progress.
    /// - [`SessionError::InvalidLength`] if the session's length was already declared
    ///   as another value, or `length` is below the bytes already received.
    /// - [`SessionError::Upload`] with [`UploadError::QuotaExceeded`](crate::UploadError::QuotaExceeded) if `length` would take the user past their
    ///   quota.
    /// - [`SessionError::StagingFull`] if `length` would take all sessions past
    ///   [`StoreOptions::max_staged_bytes`](crate::StoreOptions::max_staged_bytes).
    /// - [`SessionError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    ///
    /// ```
    /// use keepsake::{DedupMode, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let UploadStart::Session(id) =
    ///     ann.begin_upload(SessionOptions::new(album, "v.mp4", DedupMode::Hash)).unwrap()
    /// else { unreachable!() };
    /// ann.append(id, 0, b"abc").unwrap();
    /// ann.set_upload_length(id, 6).unwrap();
    /// ann.append(id, 3, b"def").unwrap();
    /// assert!(ann.upload_status(id).unwrap().complete);
    /// ```
    pub fn set_upload_length(&self, id: UploadId, length: u64) -> Result<(), SessionError> {
        let inner = self.inner();
        Ok(inner.with_session(self.name(), id, |_, uid, rec| {
            let refuse = |reason| {
                Err(Fault::InvalidLength {
                    requested: length,
                    reason,
                })
            };
            match rec.declared {
                Some(d) if d == length => return Ok(()),
                Some(_) => return refuse("the length was already declared"),
                None if length < rec.offset => return refuse("more bytes than that were already received"),
                None => {}
            }
            // The reservation grows from the bytes received to the length.
            let more = length - rec.offset;
            let _hold = inner.hold_quota(uid, more, true, None)?;
            let staged = inner.sessions.staged.clone();
            let now = inner.now_ms();
            inner.commit(move |txn| {
                let key = keys::upload(uid, &id);
                let mut rec = txn
                    .get::<UploadRecord>(Cf::Uploads, &key)?
                    .filter(|r| r.expires_ms > now)
                    .ok_or(Fault::UnknownUpload(id))?;
                check_declared(txn, uid, length, now, Some(&key))?;
                staged.check_share(staged_bytes(txn, uid, now, None)?, more)?;
                rec.declared = Some(length);
                txn.put(Cf::Uploads, key, &rec);
                staged.raise(more)
            })
        })?)
    }

    /// The state of one of the user's sessions.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use keepsake::{DedupMode, SessionError, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let bob = store.user("bob").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let meta = BTreeMap::from([("filetype".to_string(), "video/mp4".to_string())]);
    /// let UploadStart::Session(id) =
    ///     ann.begin_upload(SessionOptions { length: Some(10), metadata: meta.clone(), ..SessionOptions::new(album, "v.mp4", DedupMode::Hash) }).unwrap()
    /// else { unreachable!() };
    /// let status = ann.upload_status(id).unwrap();
    /// assert_eq!((status.offset, status.declared_length, status.complete), (0, Some(10), false));
    /// assert_eq!(status.metadata, meta);
    /// // Sessions are per user.
    /// bob.ensure_album("Videos").unwrap();
    /// assert!(matches!(bob.upload_status(id), Err(SessionError::UnknownUpload(_))));
    /// ```
    pub fn upload_status(&self, id: UploadId) -> Result<UploadStatus, SessionError> {
        let (_, rec) = self.inner().session(self.name(), id)?;
        Ok(status(id, rec))
    }

    /// The user's unexpired sessions, oldest first.
    ///
    /// # Errors
    ///
    /// - [`SessionError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{DedupMode, SessionOptions, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let nobody = store.user("nobody").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// ann.begin_upload(SessionOptions::new(album, "v.mp4", DedupMode::Hash)).unwrap();
    /// assert_eq!(ann.uploads().unwrap().len(), 1);
    /// assert!(nobody.uploads().unwrap().is_empty());
    /// ```
    pub fn uploads(&self) -> Result<Vec<UploadStatus>, SessionError> {
        let Some(uid) = self.id()? else {
            return Ok(Vec::new());
        };
        let now = self.inner().now_ms();
        let mut out = Vec::new();
        for (key, value) in self.inner().meta.scan_all(Cf::Uploads, &keys::u64_key(uid))? {
            let rec: UploadRecord = decode(&value)?;
            let id = keys::upload_id(&key).ok_or_else(|| Fault::Corrupt("bad upload key".into()))?;
            if rec.expires_ms > now {
                out.push(status(id, rec));
            }
        }
        // Oldest first: ids are random, so their order says nothing.
        out.sort_by_key(|s| s.created_ms);
        Ok(out)
    }

    /// Stores what the session received, exactly as a one-shot upload of
    /// the same bytes would ([`User::upload`]: same duplicate rules, same
    /// report, quota checked by the same commit), and ends the session. A
    /// declared length must have arrived in full
    /// ([`SessionError::UploadIncomplete`]); a deferred one becomes the bytes
    /// received. If the bytes do not hash to the declared hash the session
    /// is discarded and [`SessionError::Upload`] with [`UploadError::HashMismatch`](crate::UploadError::HashMismatch) returned; other failures
    /// (the quota, say) leave the session to be finished again.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::UploadBusy`] while another append, finish or abort of the
    ///   session is in progress.
    /// - [`SessionError::UploadIncomplete`] if fewer bytes than the declared length
    ///   arrived.
    /// - [`SessionError::Upload`] with [`UploadError::HashMismatch`](crate::UploadError::HashMismatch) if the bytes do not hash to `expected_hash`;
    ///   the session is gone.
    /// - [`SessionError::Upload`] with [`UploadError::UnknownAlbum`](crate::UploadError::UnknownAlbum) if the album was deleted since the session
    ///   began.
    /// - [`SessionError::Upload`] with [`UploadError::QuotaExceeded`](crate::UploadError::QuotaExceeded) if storing the content would take the user past
    ///   their quota.
    /// - [`SessionError::Upload`] with [`UploadError::ContentChanged`](crate::UploadError::ContentChanged) if the staged bytes changed while they were
    ///   stored.
    /// - [`SessionError::Storage`] if the disk or the metadata database fails, the store
    ///   refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)), or the upload lost
    ///   a race with `gc` three times
    ///   ([`StorageError::Contended`](crate::StorageError::Contended)). If only removing
    ///   the staged bytes fails ([`StorageError::Io`](crate::StorageError::Io)), the
    ///   file is stored and the session ended; the next open removes them.
    ///
    /// ```
    /// use keepsake::{ContentHash, DedupMode, SessionError, SessionOptions, Store, UploadError, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let claimed = Some(ContentHash::of(b"what was meant"));
    /// let UploadStart::Session(id) =
    ///     ann.begin_upload(SessionOptions { expected_hash: claimed, ..SessionOptions::new(album, "v.mp4", DedupMode::Hash) }).unwrap()
    /// else { unreachable!() };
    /// ann.append(id, 0, b"what arrived").unwrap();
    /// assert!(matches!(ann.finish(id), Err(SessionError::Upload(UploadError::HashMismatch(_)))));
    /// assert!(ann.files().unwrap().is_empty());
    /// ```
    pub fn finish(&self, id: UploadId) -> Result<UploadReport, SessionError> {
        let inner = self.inner();
        inner.health.check()?;
        Ok(inner.with_session(self.name(), id, |slot, uid, rec| {
            if let Some(declared) = rec.declared.filter(|&d| d != rec.offset) {
                return Err(Fault::UploadIncomplete {
                    offset: rec.offset,
                    declared,
                });
            }
            let tracked = slot
                .hasher
                .as_ref()
                .filter(|(_, at)| *at == rec.offset)
                .map(|(h, _)| h.finalize());
            let file = inner.staged_file(&rec)?;
            let hash = match tracked {
                Some(h) => h,
                None => hash_staged(&*file, rec.offset).map_err(|e| Fault::io(format!("reading upload {id}"), e))?,
            };
            let size = rec.offset;
            inner.store_session(self.name(), uid, id, &rec, hash, size, Source::Session(file))
        })?)
    }

    /// Finishes a session that has received nothing yet with its whole
    /// content, `parts` in order (a body as it arrived), in one durable
    /// write: the bytes go from memory straight
    /// into a segment, never to staging, and the commit that stores the
    /// file ends the session. The result is what [`append`](User::append)
    /// of the bytes at offset 0 and then [`finish`](User::finish) would
    /// give, for half the bytes written and one sync instead of three.
    /// A session whose length is deferred takes the content's.
    ///
    /// It is meant for a protocol request that carries an upload's every
    /// byte (a tus `PATCH` from offset 0 to the length): the request holds
    /// the bytes until the last has arrived, and if it breaks off, appends
    /// what did arrive instead, so the client resumes from there.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::UploadBusy`] while another append, finish or abort of the
    ///   session is in progress.
    /// - [`SessionError::OffsetMismatch`] if the session has received bytes already;
    ///   `expected` is where to [`append`](User::append) from.
    /// - [`SessionError::LengthExceeded`] if the content is longer than the declared
    ///   length, and [`SessionError::UploadIncomplete`] if it is shorter; nothing is
    ///   kept.
    /// - [`SessionError::Upload`] with the errors of [`finish`](User::finish): a
    ///   [`UploadError::HashMismatch`](crate::UploadError::HashMismatch) ends the
    ///   session; after the others (the quota, a deleted album) it stays, empty.
    /// - [`SessionError::Storage`] as for [`finish`](User::finish).
    ///
    /// ```
    /// use keepsake::{DedupMode, Outcome, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Photos").unwrap();
    /// let options = SessionOptions { length: Some(5), ..SessionOptions::new(album, "p.jpg", DedupMode::Hash) };
    /// let UploadStart::Session(id) = ann.begin_upload(options).unwrap() else { unreachable!() };
    /// let report = ann.finish_whole(id, vec![b"pho"[..].into(), b"to"[..].into()]).unwrap();
    /// assert_eq!(report.outcome, Outcome::Stored);
    /// assert!(ann.uploads().unwrap().is_empty());
    /// ```
    pub fn finish_whole(&self, id: UploadId, parts: Vec<Bytes>) -> Result<UploadReport, SessionError> {
        let inner = self.inner();
        inner.health.check()?;
        Ok(inner.with_session(self.name(), id, |_, uid, rec| {
            if rec.offset != 0 {
                return Err(Fault::OffsetMismatch { expected: rec.offset });
            }
            let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
            match rec.declared {
                Some(declared) if size > declared => return Err(Fault::LengthExceeded { declared }),
                Some(declared) if size < declared => return Err(Fault::UploadIncomplete { offset: 0, declared }),
                _ => {}
            }
            let hash = ContentHash::of_parts(&parts);
            inner.store_session(self.name(), uid, id, &rec, hash, size, Source::Memory(parts))
        })?)
    }

    /// Ends a session without storing anything, removing its staged bytes.
    ///
    /// # Errors
    ///
    /// - [`SessionError::UnknownUpload`] if the user has no such session: it never
    ///   existed, was finished, aborted or expired, or is another user's.
    /// - [`SessionError::UploadBusy`] while another append, finish or abort of the
    ///   session is in progress.
    /// - [`SessionError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)). If only removing
    ///   the staged bytes fails ([`StorageError::Io`](crate::StorageError::Io)), the
    ///   session is ended; the next open removes them.
    ///
    /// ```
    /// use keepsake::{DedupMode, SessionError, SessionOptions, Store, UploadStart};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let ann = store.user("ann").unwrap();
    /// let album = ann.ensure_album("Videos").unwrap();
    /// let UploadStart::Session(id) =
    ///     ann.begin_upload(SessionOptions::new(album, "v.mp4", DedupMode::Hash)).unwrap()
    /// else { unreachable!() };
    /// ann.abort(id).unwrap();
    /// assert!(matches!(ann.append(id, 0, b"late"), Err(SessionError::UnknownUpload(_))));
    /// ```
    pub fn abort(&self, id: UploadId) -> Result<(), SessionError> {
        let inner = self.inner();
        Ok(inner.with_session(self.name(), id, |_, uid, rec| inner.drop_session(uid, id, &rec))?)
    }
}
