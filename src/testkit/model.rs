//! A reference model of the store's rules, and the means to hold a real
//! [`Store`] to it.
//!
//! [`Model`] is the store's contract (`DESIGN.md` §1) written as plain maps:
//! users, their albums and file records, and the blobs the store holds. It
//! knows nothing of RocksDB, segments, transactions or indexes, so every
//! derived figure (memberships, reference counts, usage, GC candidacy) is
//! recomputed from the file records each time it is asked for. For every
//! [`Op`] it predicts the exact [`Answer`] the store gives: outcomes, file
//! ids, `bytes_written`, `charged_bytes`, and which error.
//!
//! [`Harness`] runs the same [`Op`]s against a real store (with a clock it
//! moves by hand, and reopening), and [`check_store`] compares everything the
//! store shows with the model. A driver (the proptest state machine in
//! `tests/model_state_machine.rs`, a fuzz target) does, for each op:
//!
//! ```
//! use keepsake::testkit::model::{check_store, Harness, Model, Op};
//! use keepsake::StoreOptions;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let options = StoreOptions::default().inline_threshold(64).segment_size(4096);
//! let mut model = Model::new(&options);
//! let mut store = Harness::open(dir.path(), options).unwrap();
//! let op = Op::EnsureAlbum { user: "ann".into(), name: "Camera".into() };
//! assert_eq!(store.run(&op), model.apply(&op));
//! check_store(store.store(), &model).unwrap();
//! ```
//!
//! The model takes the clock to start at [`START_MS`] and to move only by
//! [`Op::AdvanceClock`]; the harness installs such a clock. It takes the
//! disk to be sound (no damaged blobs, no I/O faults: those have suites of
//! their own). Which names are valid it asks the store's own validators,
//! whose rules `tests/bad_input.rs` covers: it predicts that a name is
//! refused, not why.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{LibraryError, NameError, NameKind, OpenError, QuotaExceeded, StorageError, UploadError};
use crate::names::{check_album_name, check_file_name, check_user_name, comparable, FileName};
use crate::store::FileEdit;
use crate::{
    AlbumDeletion, AlbumId, AlbumInfo, Clock, Content, ContentHash, DedupMode, FileId, FileInfo, HashedUpload, Outcome,
    Preflight, PurgeReport, Store, StoreOptions, Upload, UploadReport, Usage,
};

/// The time, in milliseconds since the Unix epoch, at which the model and
/// the harness's clock start.
pub const START_MS: u64 = 1_700_000_000_000;

/// An upload's bytes. Its `Debug` shows the size and a hash prefix, so a
/// failing operation sequence stays readable.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(pub Bytes);

impl Payload {
    /// The content's hash.
    pub fn hash(&self) -> ContentHash {
        ContentHash::of(&self.0)
    }

    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hash = self.hash().to_string();
        write!(f, "Payload({} B #{})", self.0.len(), &hash[..8])
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v.into())
    }
}

/// One upload: of `data` as `name` into `album` under `mode`'s rule.
#[derive(Debug, Clone)]
pub struct Item {
    /// The target album.
    pub album: AlbumId,
    /// The file's name.
    pub name: FileName,
    /// The content.
    pub data: Payload,
    /// Which files count as duplicates.
    pub mode: DedupMode,
    /// The source's modification time, if the upload gives one.
    pub modified: Option<std::time::SystemTime>,
}

impl Item {
    /// The upload of this item.
    fn upload(&self) -> Upload {
        let up = Upload::new(
            self.album,
            self.name.clone(),
            Content::Bytes(self.data.0.clone()),
            self.mode,
        );
        match self.modified {
            Some(t) => up.modified(t),
            None => up,
        }
    }
}

/// An upload announced by its hash alone, as [`Op::Check`] and [`Op::Link`]
/// take it.
#[derive(Debug, Clone)]
pub struct Query {
    /// The user.
    pub user: String,
    /// The target album.
    pub album: AlbumId,
    /// The file's name.
    pub name: FileName,
    /// The content's hash.
    pub hash: ContentHash,
    /// Which files count as duplicates.
    pub mode: DedupMode,
}

/// One operation on the store, as the model and the harness both take it.
#[derive(Debug, Clone)]
pub enum Op {
    /// [`User::ensure_album`](crate::User::ensure_album).
    EnsureAlbum {
        /// The user.
        user: String,
        /// The album's name.
        name: String,
    },
    /// [`User::create_album`](crate::User::create_album) (fails if the name is taken).
    CreateAlbum {
        /// The user.
        user: String,
        /// The album's name.
        name: String,
    },
    /// [`User::upload`](crate::User::upload) of one item.
    Upload {
        /// The user.
        user: String,
        /// The upload.
        item: Item,
    },
    /// [`User::upload_batch`](crate::User::upload_batch): one commit, each
    /// item judged after the items before it.
    UploadBatch {
        /// The user.
        user: String,
        /// The uploads, in order.
        items: Vec<Item>,
    },
    /// [`User::check`](crate::User::check): what an upload of this hash would do.
    Check(Query),
    /// [`User::link`](crate::User::link): an upload completed from its hash alone.
    Link(Query),
    /// [`User::add_to_album`](crate::User::add_to_album).
    AddToAlbum {
        /// The user.
        user: String,
        /// The file.
        file: FileId,
        /// The album.
        album: AlbumId,
    },
    /// [`User::remove_from_album`](crate::User::remove_from_album).
    RemoveFromAlbum {
        /// The user.
        user: String,
        /// The file.
        file: FileId,
        /// The album.
        album: AlbumId,
    },
    /// [`User::move_file`](crate::User::move_file).
    MoveFile {
        /// The user.
        user: String,
        /// The file.
        file: FileId,
        /// The album it leaves.
        from: AlbumId,
        /// The album it joins.
        to: AlbumId,
    },
    /// [`User::delete`](crate::User::delete): to the trash.
    Delete {
        /// The user.
        user: String,
        /// The file.
        file: FileId,
    },
    /// [`User::restore`](crate::User::restore).
    Restore {
        /// The user.
        user: String,
        /// The file.
        file: FileId,
    },
    /// [`User::edit_files`](crate::User::edit_files): many edits, one
    /// commit, each on its own.
    EditFiles {
        /// The user.
        user: String,
        /// The edits, in order.
        edits: Vec<FileEdit>,
    },
    /// [`User::empty_trash`](crate::User::empty_trash).
    EmptyTrash {
        /// The user.
        user: String,
    },
    /// [`Store::purge_expired_trash`].
    PurgeExpiredTrash,
    /// [`User::delete_album`](crate::User::delete_album).
    DeleteAlbum {
        /// The user.
        user: String,
        /// The album.
        album: AlbumId,
        /// What happens to its files.
        deletion: AlbumDeletion,
    },
    /// [`User::set_quota`](crate::User::set_quota).
    SetQuota {
        /// The user.
        user: String,
        /// The new limit on unique bytes, or none.
        limit: Option<u64>,
    },
    /// [`Store::gc_with_grace`].
    Gc {
        /// How long a blob must have been unreferenced to be removed.
        grace: Duration,
    },
    /// Moves the clock forward (saturating at `u64::MAX` milliseconds).
    AdvanceClock(Duration),
    /// Closes the store and opens it again from its directory.
    Reopen,
}

/// What an operation returned, when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An album's id ([`Op::EnsureAlbum`], [`Op::CreateAlbum`]).
    Album(AlbumId),
    /// One upload's report ([`Op::Upload`], [`Op::Link`]).
    Upload(UploadReport),
    /// Each upload's result, in order ([`Op::UploadBatch`]).
    Uploads(Vec<Result<UploadReport, Refusal>>),
    /// [`Op::Check`]'s answer.
    Preflight(Preflight),
    /// Whether [`Op::AddToAlbum`] added the file (false: it was there).
    Added(bool),
    /// The albums [`Op::Restore`] put the file back into.
    Restored(Vec<AlbumId>),
    /// Each edit's result, for [`Op::EditFiles`].
    Edited(Vec<Result<(), Refusal>>),
    /// The files [`Op::DeleteAlbum`] moved to the trash.
    Trashed(Vec<FileId>),
    /// What a purge of the trash did.
    Purged(PurgeReport),
    /// What [`Op::Gc`] collected. The disk figures (bytes reclaimed,
    /// segments compacted) depend on the segment layout, which the model
    /// does not know; they are left out.
    Collected {
        /// Files purged from the trash.
        trash_purged: u64,
        /// Blobs removed.
        blobs_removed: u64,
    },
    /// The operation returns nothing.
    Done,
}

/// An error as the model predicts it: the store's error families without
/// the parts (messages, I/O sources) that the model has no opinion on, and
/// without the family (each operation has one; the model predicts the
/// variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `InvalidName`, by kind.
    InvalidName(NameKind),
    /// `UnknownFile`.
    UnknownFile(FileId),
    /// `UnknownAlbum`.
    UnknownAlbum(String),
    /// [`LibraryError::AlbumExists`].
    AlbumExists(String),
    /// [`LibraryError::FileTrashed`].
    FileTrashed(FileId),
    /// [`LibraryError::NotTrashed`].
    NotTrashed(FileId),
    /// [`LibraryError::NotInAlbum`].
    NotInAlbum {
        /// The file.
        file: FileId,
        /// The album.
        album: AlbumId,
    },
    /// `QuotaExceeded`.
    QuotaExceeded {
        /// The limit.
        limit: u64,
        /// Unique bytes charged before the upload.
        used: u64,
        /// What the upload would charge.
        needed: u64,
    },
    /// [`UploadError::ContentRequired`].
    ContentRequired,
    /// Any other error: the model never predicts one, so it is always a
    /// divergence.
    Unexpected(String),
}

impl From<NameError> for Refusal {
    fn from(e: NameError) -> Self {
        Refusal::InvalidName(e.kind)
    }
}

impl From<QuotaExceeded> for Refusal {
    fn from(QuotaExceeded { limit, used, needed }: QuotaExceeded) -> Self {
        Refusal::QuotaExceeded { limit, used, needed }
    }
}

impl From<UploadError> for Refusal {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::InvalidName(n) => n.into(),
            UploadError::UnknownAlbum(a) => Refusal::UnknownAlbum(a),
            UploadError::QuotaExceeded(q) => q.into(),
            UploadError::ContentRequired => Refusal::ContentRequired,
            other => Refusal::Unexpected(other.to_string()),
        }
    }
}

impl From<LibraryError> for Refusal {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::InvalidName(n) => n.into(),
            LibraryError::UnknownFile(f) => Refusal::UnknownFile(f),
            LibraryError::UnknownAlbum(a) => Refusal::UnknownAlbum(a),
            LibraryError::AlbumExists(a) => Refusal::AlbumExists(a),
            LibraryError::FileTrashed(f) => Refusal::FileTrashed(f),
            LibraryError::NotTrashed(f) => Refusal::NotTrashed(f),
            LibraryError::NotInAlbum { file, album } => Refusal::NotInAlbum { file, album },
            other => Refusal::Unexpected(other.to_string()),
        }
    }
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        Refusal::Unexpected(e.to_string())
    }
}

/// The one-file operation an edit of [`Op::EditFiles`] is.
fn single_edit(user: &str, edit: FileEdit) -> Op {
    let user = user.to_string();
    match edit {
        FileEdit::AddToAlbum { file, album } => Op::AddToAlbum { user, file, album },
        FileEdit::RemoveFromAlbum { file, album } => Op::RemoveFromAlbum { user, file, album },
        FileEdit::Move { file, from, to } => Op::MoveFile { user, file, from, to },
        FileEdit::Delete(file) => Op::Delete { user, file },
        FileEdit::Restore(file) => Op::Restore { user, file },
    }
}

/// What an operation gives: its reply, or the error it fails with.
pub type Answer = Result<Reply, Refusal>;

#[derive(Debug, Clone)]
struct FileModel {
    name: FileName,
    hash: ContentHash,
    size: u64,
    created_ms: u64,
    /// In the order the store keeps them. For a trashed file, the albums it
    /// was in (some may be gone since).
    albums: Vec<u64>,
    trashed_ms: Option<u64>,
    modified: Option<std::time::SystemTime>,
}

impl FileModel {
    fn live(&self) -> bool {
        self.trashed_ms.is_none()
    }

    fn info(&self, id: u64) -> FileInfo {
        FileInfo {
            id: FileId(id),
            name: self.name.clone(),
            hash: self.hash,
            size: self.size,
            created_ms: self.created_ms,
            albums: self.albums.iter().copied().map(AlbumId).collect(),
            trashed_ms: self.trashed_ms,
            modified: self.modified,
        }
    }
}

#[derive(Debug, Clone)]
struct AlbumModel {
    name: String,
    created_ms: u64,
}

#[derive(Debug, Clone)]
struct UserModel {
    limit: Option<u64>,
    next_file: u64,
    next_album: u64,
    albums: BTreeMap<u64, AlbumModel>,
    /// Every file record, live and trashed; ids ascending, so oldest first.
    files: BTreeMap<u64, FileModel>,
}

impl UserModel {
    fn new() -> Self {
        UserModel {
            limit: None,
            next_file: 1,
            next_album: 1,
            albums: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// Per distinct content: its size, and whether a live file holds it.
    fn holdings(&self) -> BTreeMap<ContentHash, (u64, bool)> {
        let mut out: BTreeMap<ContentHash, (u64, bool)> = BTreeMap::new();
        for f in self.files.values() {
            out.entry(f.hash).or_insert((f.size, false)).1 |= f.live();
        }
        out
    }

    fn unique_bytes(&self) -> u64 {
        self.holdings().values().map(|(size, _)| size).sum()
    }

    fn usage(&self, user: &str) -> Usage {
        let holdings = self.holdings();
        let live = self.files.values().filter(|f| f.live()).count() as u64;
        Usage {
            user: user.to_string(),
            unique_bytes: holdings.values().map(|(size, _)| size).sum(),
            logical_bytes: self.files.values().map(|f| f.size).sum(),
            files: live,
            trashed_files: self.files.len() as u64 - live,
            blobs: holdings.len() as u64,
            trash_bytes: holdings.values().filter(|(_, live)| !live).map(|(size, _)| size).sum(),
            staged_bytes: 0,
            limit: self.limit,
        }
    }

    /// The live file `file`, or the error an operation on it gives.
    fn live_file(&mut self, file: FileId) -> Result<&mut FileModel, Refusal> {
        let f = self.files.get_mut(&file.0).ok_or(Refusal::UnknownFile(file))?;
        if !f.live() {
            return Err(Refusal::FileTrashed(file));
        }
        Ok(f)
    }

    fn require_album(&self, album: AlbumId) -> Result<(), Refusal> {
        match self.albums.contains_key(&album.0) {
            true => Ok(()),
            false => Err(Refusal::UnknownAlbum(album.to_string())),
        }
    }

    /// The live files in `album`, oldest first.
    fn members(&self, album: u64) -> impl Iterator<Item = (u64, &FileModel)> {
        self.files
            .iter()
            .filter(move |(_, f)| f.live() && f.albums.contains(&album))
            .map(|(&id, f)| (id, f))
    }
}

#[derive(Debug, Clone)]
struct BlobModel {
    data: Payload,
    /// When its last reference went; `None` while any file holds it.
    orphaned_ms: Option<u64>,
}

/// The reference model: the store's observable state as plain maps, and its
/// rules as plain code. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Model {
    retention_ms: u64,
    now_ms: u64,
    /// Users that exist in the store (created by their first write).
    users: BTreeMap<String, UserModel>,
    /// Every blob the store holds, referenced or waiting for GC.
    blobs: BTreeMap<ContentHash, BlobModel>,
}

impl Model {
    /// An empty store opened with `options` (only the trash retention
    /// matters to the model) at [`START_MS`].
    pub fn new(options: &StoreOptions) -> Model {
        Model {
            retention_ms: options.trash_retention.as_millis() as u64,
            now_ms: START_MS,
            users: BTreeMap::new(),
            blobs: BTreeMap::new(),
        }
    }

    /// The ids of the user's file records (live and trashed), oldest first:
    /// what a driver picks file operations' targets from.
    pub fn file_ids(&self, user: &str) -> Vec<FileId> {
        self.users
            .get(user)
            .map_or_else(Vec::new, |u| u.files.keys().copied().map(FileId).collect())
    }

    /// The ids of the user's trashed files, oldest first: what restoring
    /// can bring back.
    pub fn trashed_ids(&self, user: &str) -> Vec<FileId> {
        self.users.get(user).map_or_else(Vec::new, |u| {
            let trashed = u.files.iter().filter(|(_, f)| !f.live());
            trashed.map(|(&id, _)| FileId(id)).collect()
        })
    }

    /// The ids of the user's albums, oldest first.
    pub fn album_ids(&self, user: &str) -> Vec<AlbumId> {
        self.users
            .get(user)
            .map_or_else(Vec::new, |u| u.albums.keys().copied().map(AlbumId).collect())
    }

    /// Applies `op` to the model and returns what the store must answer.
    pub fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::EnsureAlbum { user, name } => self.album(user, name, false).map(Reply::Album),
            Op::CreateAlbum { user, name } => self.album(user, name, true).map(Reply::Album),
            Op::Upload { user, item } => self.upload(user, item).map(Reply::Upload),
            Op::UploadBatch { user, items } => Ok(Reply::Uploads(
                items.iter().map(|item| self.upload(user, item)).collect(),
            )),
            Op::Check(q) => self.preflight(q).map(Reply::Preflight),
            Op::Link(q) => {
                let plan = self.preflight(q)?;
                self.reuse(&q.user, q.album, plan).map(Reply::Upload)
            }
            Op::EditFiles { user, edits } => Ok(Reply::Edited(
                edits
                    .iter()
                    .map(|&e| self.apply(&single_edit(user, e)).map(drop))
                    .collect(),
            )),
            Op::AddToAlbum { user, file, album } => {
                let u = self.user_mut(user, Refusal::UnknownFile(*file))?;
                u.live_file(*file)?;
                u.require_album(*album)?;
                let f = u.live_file(*file)?;
                let added = !f.albums.contains(&album.0);
                if added {
                    f.albums.push(album.0);
                }
                Ok(Reply::Added(added))
            }
            Op::RemoveFromAlbum { user, file, album } => self.move_between(user, *file, Some(*album), None),
            Op::MoveFile { user, file, from, to } => self.move_between(user, *file, Some(*from), Some(*to)),
            Op::Delete { user, file } => {
                let now = self.now_ms;
                self.user_mut(user, Refusal::UnknownFile(*file))?
                    .live_file(*file)?
                    .trashed_ms = Some(now);
                Ok(Reply::Done)
            }
            Op::Restore { user, file } => {
                let u = self.user_mut(user, Refusal::UnknownFile(*file))?;
                let f = u.files.get(&file.0).ok_or(Refusal::UnknownFile(*file))?;
                if f.live() {
                    return Err(Refusal::NotTrashed(*file));
                }
                // Not into an album that shows a live file of the same
                // name and content: no album shows the same photo twice.
                let shown_twice = |a: &u64| {
                    u.files.iter().any(|(id, g)| {
                        id != &file.0 && g.live() && g.hash == f.hash && g.name.same_as(&f.name) && g.albums.contains(a)
                    })
                };
                let back: Vec<u64> = f
                    .albums
                    .iter()
                    .copied()
                    .filter(|a| u.albums.contains_key(a) && !shown_twice(a))
                    .collect();
                let f = u.files.get_mut(&file.0).expect("found above");
                f.trashed_ms = None;
                f.albums = back;
                Ok(Reply::Restored(f.albums.iter().copied().map(AlbumId).collect()))
            }
            Op::EmptyTrash { user } => {
                check_user_name(user)?;
                let trashed: Vec<(String, u64)> = self.users.get(user).map_or_else(Vec::new, |u| {
                    let ids = u.files.iter().filter(|(_, f)| !f.live());
                    ids.map(|(&id, _)| (user.clone(), id)).collect()
                });
                Ok(Reply::Purged(self.purge(trashed)))
            }
            Op::PurgeExpiredTrash => Ok(Reply::Purged(self.purge_expired())),
            Op::DeleteAlbum { user, album, deletion } => self.delete_album(user, *album, *deletion),
            Op::SetQuota { user, limit } => {
                check_user_name(user)?;
                self.users.entry(user.clone()).or_insert_with(UserModel::new).limit = *limit;
                Ok(Reply::Done)
            }
            Op::Gc { grace } => {
                let trash_purged = self.purge_expired().files;
                let cutoff = self.now_ms.saturating_sub(grace.as_millis() as u64);
                let before = self.blobs.len();
                self.blobs.retain(|_, b| b.orphaned_ms.is_none_or(|at| at > cutoff));
                Ok(Reply::Collected {
                    trash_purged,
                    blobs_removed: (before - self.blobs.len()) as u64,
                })
            }
            Op::AdvanceClock(by) => {
                self.now_ms = self.now_ms.saturating_add(by.as_millis() as u64);
                Ok(Reply::Done)
            }
            Op::Reopen => Ok(Reply::Done),
        }
    }

    /// An existing user, or `missing`: operations on a user who never wrote
    /// anything fail as if the file or album did not exist.
    fn user_mut(&mut self, user: &str, missing: Refusal) -> Result<&mut UserModel, Refusal> {
        check_user_name(user)?;
        self.users.get_mut(user).ok_or(missing)
    }

    fn album(&mut self, user: &str, name: &str, create: bool) -> Result<AlbumId, Refusal> {
        // The user's name first: the store makes the user's handle before it
        // looks at anything else.
        check_user_name(user)?;
        check_album_name(name)?;
        let now = self.now_ms;
        let u = self.users.entry(user.to_string()).or_insert_with(UserModel::new);
        if let Some((&id, _)) = u.albums.iter().find(|(_, a)| comparable(&a.name) == comparable(name)) {
            return match create {
                true => Err(Refusal::AlbumExists(name.to_string())),
                false => Ok(AlbumId(id)),
            };
        }
        let id = u.next_album;
        u.next_album += 1;
        let album = AlbumModel {
            name: name.to_string(),
            created_ms: now,
        };
        u.albums.insert(id, album);
        Ok(AlbumId(id))
    }

    /// The duplicate rules (`DESIGN.md` §1): skip if any of the user's live
    /// duplicates is in the album (the oldest such), else link the oldest,
    /// else upload.
    fn plan(
        &self,
        user: &str,
        album: AlbumId,
        name: &FileName,
        hash: &ContentHash,
        mode: DedupMode,
    ) -> Result<Preflight, Refusal> {
        let u = self
            .users
            .get(user)
            .ok_or_else(|| Refusal::UnknownAlbum(album.to_string()))?;
        u.require_album(album)?;
        let dups: Vec<(u64, &FileModel)> = u
            .files
            .iter()
            .filter(|(_, f)| f.live() && f.hash == *hash && (mode == DedupMode::Hash || f.name.same_as(name)))
            .map(|(&id, f)| (id, f))
            .collect();
        if let Some((id, _)) = dups.iter().find(|(_, f)| f.albums.contains(&album.0)) {
            return Ok(Preflight::Skip(FileId(*id)));
        }
        if let Some((id, _)) = dups.first() {
            return Ok(Preflight::Link(FileId(*id)));
        }
        // No live duplicate: the oldest trashed one comes back.
        Ok(u.files
            .iter()
            .find(|(_, f)| !f.live() && f.hash == *hash && (mode == DedupMode::Hash || f.name.same_as(name)))
            .map_or(Preflight::Upload, |(&id, _)| Preflight::Restore(FileId(id))))
    }

    /// Carries out a `Skip` or `Link` plan: nothing written, nothing charged.
    fn reuse(&mut self, user: &str, album: AlbumId, plan: Preflight) -> Result<UploadReport, Refusal> {
        let (file, outcome) = match plan {
            Preflight::Skip(f) => (f, Outcome::Skipped),
            Preflight::Link(f) => (f, Outcome::Linked),
            Preflight::Restore(f) => (f, Outcome::Restored),
            Preflight::Upload => return Err(Refusal::ContentRequired),
        };
        let f = self
            .users
            .get_mut(user)
            .and_then(|u| u.files.get_mut(&file.0))
            .expect("a planned duplicate exists");
        match outcome {
            Outcome::Linked => f.albums.push(album.0),
            // Into the upload's album only.
            Outcome::Restored => {
                f.trashed_ms = None;
                f.albums = vec![album.0];
            }
            _ => {}
        }
        Ok(UploadReport {
            file_id: file,
            outcome,
            hash: f.hash,
            size: f.size,
            bytes_written: 0,
            charged_bytes: 0,
        })
    }

    /// [`Model::plan`] for a client that sends only the hash.
    fn preflight(&self, q: &Query) -> Result<Preflight, Refusal> {
        check_user_name(&q.user)?;
        check_file_name(&q.name)?;
        self.plan(&q.user, q.album, &q.name, &q.hash, q.mode)
    }

    fn upload(&mut self, user: &str, item: &Item) -> Result<UploadReport, Refusal> {
        check_user_name(user)?;
        check_file_name(&item.name)?;
        let hash = item.data.hash();
        match self.plan(user, item.album, &item.name, &hash, item.mode)? {
            Preflight::Upload => self.store_new(user, item, hash),
            plan => self.reuse(user, item.album, plan),
        }
    }

    /// A new file record. The user is charged the size unless one of their
    /// records (live or trashed) already holds the content, and the bytes
    /// are written exactly when charged: whether the store had the blob for
    /// someone else never shows.
    fn store_new(&mut self, user: &str, item: &Item, hash: ContentHash) -> Result<UploadReport, Refusal> {
        let now = self.now_ms;
        let size = item.data.size();
        let u = self.users.get_mut(user).expect("plan found the user's album");
        let used = u.unique_bytes();
        let charged = match u.files.values().any(|f| f.hash == hash) {
            true => 0,
            false => size,
        };
        if let Some(limit) = u.limit {
            if charged > 0 && used + charged > limit {
                return Err(Refusal::QuotaExceeded {
                    limit,
                    used,
                    needed: charged,
                });
            }
        }
        let id = u.next_file;
        u.next_file += 1;
        let file = FileModel {
            name: item.name.clone(),
            hash,
            size,
            created_ms: now,
            albums: vec![item.album.0],
            trashed_ms: None,
            modified: item.modified,
        };
        u.files.insert(id, file);
        match self.blobs.get_mut(&hash) {
            Some(blob) => blob.orphaned_ms = None,
            None => {
                let blob = BlobModel {
                    data: item.data.clone(),
                    orphaned_ms: None,
                };
                self.blobs.insert(hash, blob);
            }
        }
        Ok(UploadReport {
            file_id: FileId(id),
            outcome: Outcome::Stored,
            hash,
            size,
            bytes_written: charged,
            charged_bytes: charged,
        })
    }

    fn move_between(&mut self, user: &str, file: FileId, from: Option<AlbumId>, to: Option<AlbumId>) -> Answer {
        let u = self.user_mut(user, Refusal::UnknownFile(file))?;
        u.live_file(file)?;
        for album in to.iter().chain(&from) {
            u.require_album(*album)?;
        }
        let f = u.live_file(file)?;
        if let Some(from) = from {
            if !f.albums.contains(&from.0) {
                return Err(Refusal::NotInAlbum { file, album: from });
            }
            f.albums.retain(|a| *a != from.0);
        }
        if let Some(to) = to.filter(|to| !f.albums.contains(&to.0)) {
            f.albums.push(to.0);
        }
        Ok(Reply::Done)
    }

    fn delete_album(&mut self, user: &str, album: AlbumId, deletion: AlbumDeletion) -> Answer {
        let now = self.now_ms;
        let u = self.user_mut(user, Refusal::UnknownAlbum(album.to_string()))?;
        u.require_album(album)?;
        let mut trashed = Vec::new();
        for (&id, f) in u
            .files
            .iter_mut()
            .filter(|(_, f)| f.live() && f.albums.contains(&album.0))
        {
            f.albums.retain(|a| *a != album.0);
            if deletion == AlbumDeletion::TrashFiles && f.albums.is_empty() {
                f.trashed_ms = Some(now);
                trashed.push(FileId(id));
            }
        }
        u.albums.remove(&album.0);
        Ok(Reply::Trashed(trashed))
    }

    /// Deletes the trashed files whose deletion is at least the retention
    /// old, for every user.
    fn purge_expired(&mut self) -> PurgeReport {
        let cutoff = self.now_ms.saturating_sub(self.retention_ms);
        let expired = self
            .users
            .iter()
            .flat_map(|(name, u)| {
                let ids = u
                    .files
                    .iter()
                    .filter(|(_, f)| f.trashed_ms.is_some_and(|at| at <= cutoff));
                ids.map(move |(&id, _)| (name.clone(), id))
            })
            .collect();
        self.purge(expired)
    }

    /// Deletes file records for good. A blob whose last reference (of any
    /// user) goes becomes a GC candidate stamped now.
    fn purge(&mut self, files: Vec<(String, u64)>) -> PurgeReport {
        let mut report = PurgeReport::default();
        for (user, id) in files {
            let u = self
                .users
                .get_mut(&user)
                .expect("purged files belong to existing users");
            let before = u.unique_bytes();
            let f = u.files.remove(&id).expect("purged files exist");
            report.files += 1;
            report.bytes_freed += before - u.unique_bytes();
            let held = self.users.values().any(|u| u.files.values().any(|g| g.hash == f.hash));
            if !held {
                let blob = self.blobs.get_mut(&f.hash).expect("a referenced blob is in the store");
                blob.orphaned_ms = Some(self.now_ms);
            }
        }
        report
    }
}

/// Compares everything `store` shows with `model`: the store-wide counts,
/// and for every user their usage, albums (with their counters and
/// members), library, trash, the exact bytes of every file record, and
/// finally a full `verify` with scrub. Returns the first difference.
///
/// # Errors
///
/// The first difference, described; a store operation that fails is one too.
pub fn check_store(store: &Store, model: &Model) -> Result<(), String> {
    fn same<T: PartialEq + fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
        match got == want {
            true => Ok(()),
            false => Err(format!("{what}: the store shows {got:#?}\nthe model expects {want:#?}")),
        }
    }
    fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
        move |e| format!("{what} failed: {e}")
    }

    let stats = store.stats().map_err(fail("stats"))?;
    let files: u64 = model.users.values().map(|u| u.files.len() as u64).sum();
    let logical: u64 = model
        .users
        .values()
        .flat_map(|u| u.files.values())
        .map(|f| f.size)
        .sum();
    let physical: u64 = model.blobs.values().map(|b| b.data.size()).sum();
    let orphans = model.blobs.values().filter(|b| b.orphaned_ms.is_some()).count() as u64;
    same(
        "store-wide (users, files, logical, blobs, physical, gc candidates)",
        (
            stats.users,
            stats.files,
            stats.logical_bytes,
            stats.blobs,
            stats.physical_bytes,
            stats.gc_candidates,
        ),
        (
            model.users.len() as u64,
            files,
            logical,
            model.blobs.len() as u64,
            physical,
            orphans,
        ),
    )?;

    for (name, u) in &model.users {
        same(
            &format!("usage of {name}"),
            store.user(name).map_err(fail("user"))?.usage().map_err(fail("usage"))?,
            u.usage(name),
        )?;
        let albums: Vec<AlbumInfo> = u
            .albums
            .iter()
            .map(|(&id, a)| {
                let members: Vec<_> = u.members(id).collect();
                AlbumInfo {
                    id: AlbumId(id),
                    name: a.name.clone(),
                    files: members.len() as u64,
                    bytes: members.iter().map(|(_, f)| f.size).sum(),
                    created_ms: a.created_ms,
                }
            })
            .collect();
        same(
            &format!("albums of {name}"),
            store
                .user(name)
                .map_err(fail("user"))?
                .albums()
                .map_err(fail("albums"))?,
            albums,
        )?;
        for &id in u.albums.keys() {
            let want: Vec<FileInfo> = u.members(id).map(|(fid, f)| f.info(fid)).collect();
            let got = store
                .user(name)
                .map_err(fail("user"))?
                .album_files(AlbumId(id))
                .map_err(fail("album_files"))?;
            same(&format!("files in album {id} of {name}"), got, want)?;
        }
        let live: Vec<FileInfo> = u
            .files
            .iter()
            .filter(|(_, f)| f.live())
            .map(|(&id, f)| f.info(id))
            .collect();
        same(
            &format!("library of {name}"),
            store.user(name).map_err(fail("user"))?.files().map_err(fail("files"))?,
            live,
        )?;
        let mut trash: Vec<(u64, FileInfo)> = u
            .files
            .iter()
            .filter_map(|(&id, f)| Some((f.trashed_ms?, f.info(id))))
            .collect();
        trash.sort_by_key(|(at, f)| (*at, f.id));
        let trash: Vec<FileInfo> = trash.into_iter().map(|(_, f)| f).collect();
        same(
            &format!("trash of {name}"),
            store.user(name).map_err(fail("user"))?.trash().map_err(fail("trash"))?,
            trash,
        )?;
        for (&id, f) in &u.files {
            let got = store
                .user(name)
                .map_err(fail("user"))?
                .read(FileId(id))
                .map_err(fail("read"))?;
            let want = &model
                .blobs
                .get(&f.hash)
                .expect("a referenced blob is in the model")
                .data;
            if got != want.0 {
                return Err(format!(
                    "file {id} of {name} reads back {} other bytes than {want:?}",
                    got.len()
                ));
            }
        }
    }

    let report = store.verify(true).map_err(fail("verify"))?;
    match report.ok {
        true => Ok(()),
        false => Err(format!("verify found problems: {:#?}", report.problems)),
    }
}

/// The store's clock for a [`Harness`]: it stands still unless moved, so the
/// model can know every timestamp.
#[derive(Debug)]
struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A real store run by [`Op`]s: it owns what reopening needs (the
/// directory, the options) and the clock that [`Op::AdvanceClock`] moves.
#[derive(Debug)]
pub struct Harness {
    dir: PathBuf,
    options: StoreOptions,
    clock: Arc<HandClock>,
    /// `None` only while reopening, or after a reopen failed.
    store: Option<Store>,
}

impl Harness {
    /// Opens the store in `dir` with `options`, its clock replaced by one at
    /// [`START_MS`] that only [`Op::AdvanceClock`] moves.
    ///
    /// # Errors
    ///
    /// Those of [`Store::open_with`].
    pub fn open(dir: impl Into<PathBuf>, options: StoreOptions) -> Result<Harness, OpenError> {
        let dir = dir.into();
        let clock = Arc::new(HandClock(AtomicU64::new(START_MS)));
        let options = options.clock(clock.clone());
        let store = Store::open_with(&dir, options.clone())?;
        Ok(Harness {
            dir,
            options,
            clock,
            store: Some(store),
        })
    }

    /// The store.
    ///
    /// # Panics
    ///
    /// If the last [`Op::Reopen`] failed (its answer said so).
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("the store failed to reopen")
    }

    /// Closes the store, runs `between` (say, replacing the disk with what a
    /// power cut leaves: see `testkit::sim_fs`), and opens it again. After
    /// an error the harness has no store until a later call succeeds.
    ///
    /// # Errors
    ///
    /// Those of [`Store::open_with`].
    pub fn reopen_after(&mut self, between: impl FnOnce()) -> Result<(), OpenError> {
        // The old store must be closed (its lock released) first.
        self.store = None;
        between();
        self.store = Some(Store::open_with(&self.dir, self.options.clone())?);
        Ok(())
    }

    /// Runs `op` against the store.
    pub fn run(&mut self, op: &Op) -> Answer {
        let s = self.store();
        Ok(match op {
            Op::EnsureAlbum { user, name } => Reply::Album(s.user(user)?.ensure_album(name)?),
            Op::CreateAlbum { user, name } => Reply::Album(s.user(user)?.create_album(name)?),
            Op::Upload { user, item } => {
                let mut results = s.user(user)?.upload_batch(vec![item.upload()]);
                Reply::Upload(results.pop().expect("one result per upload")?)
            }
            Op::UploadBatch { user, items } => {
                let uploads = items.iter().map(Item::upload).collect();
                let results = s.user(user)?.upload_batch(uploads);
                Reply::Uploads(results.into_iter().map(|r| r.map_err(Refusal::from)).collect())
            }
            Op::Check(q) => Reply::Preflight(s.user(&q.user)?.check(&HashedUpload {
                album: q.album,
                name: q.name.clone(),
                hash: q.hash,
                mode: q.mode,
            })?),
            Op::Link(q) => Reply::Upload(s.user(&q.user)?.link(&HashedUpload {
                album: q.album,
                name: q.name.clone(),
                hash: q.hash,
                mode: q.mode,
            })?),
            Op::EditFiles { user, edits } => Reply::Edited(
                s.user(user)?
                    .edit_files(edits.clone())?
                    .into_iter()
                    .map(|r| r.map_err(Refusal::from))
                    .collect(),
            ),
            Op::AddToAlbum { user, file, album } => Reply::Added(s.user(user)?.add_to_album(*file, *album)?),
            Op::RemoveFromAlbum { user, file, album } => {
                s.user(user)?.remove_from_album(*file, *album)?;
                Reply::Done
            }
            Op::MoveFile { user, file, from, to } => {
                s.user(user)?.move_file(*file, *from, *to)?;
                Reply::Done
            }
            Op::Delete { user, file } => {
                s.user(user)?.delete(*file)?;
                Reply::Done
            }
            Op::Restore { user, file } => Reply::Restored(s.user(user)?.restore(*file)?),
            Op::EmptyTrash { user } => Reply::Purged(s.user(user)?.empty_trash()?),
            Op::PurgeExpiredTrash => Reply::Purged(s.purge_expired_trash()?),
            Op::DeleteAlbum { user, album, deletion } => Reply::Trashed(s.user(user)?.delete_album(*album, *deletion)?),
            Op::SetQuota { user, limit } => {
                s.user(user)?.set_quota(*limit)?;
                Reply::Done
            }
            Op::Gc { grace } => {
                let r = s.gc_with_grace(*grace)?;
                Reply::Collected {
                    trash_purged: r.trash_purged,
                    blobs_removed: r.blobs_removed,
                }
            }
            Op::AdvanceClock(by) => {
                let by = by.as_millis() as u64;
                let _ = self
                    .clock
                    .0
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(by)));
                Reply::Done
            }
            Op::Reopen => {
                self.reopen_after(|| {})
                    .map_err(|e| Refusal::Unexpected(format!("reopening: {e}")))?;
                Reply::Done
            }
        })
    }
}
