//! Staging: bytes that have arrived but are not blobs yet, and what becomes
//! of them across a crash.
//!
//! Two directories of the store root hold them, both written through
//! [`Fs`]:
//!
//! - `staging/`: a one-shot upload's stream too long to hold in memory,
//!   spooled while it is hashed (`<pid>-<seq>.tmp`). Such a file belongs to
//!   an upload that has not been acknowledged, so every one found at open is
//!   removed.
//! - `uploads/`: a resumable upload session's received bytes
//!   (`<n>.part`, `n` the staged file number in the session's record). At open each is brought in line with its committed
//!   session: bytes past the committed offset were never acknowledged and
//!   are cut; a file *shorter* than its offset lost acknowledged bytes, and
//!   nothing in it can be vouched for (there is no checksum per piece), so
//!   the session restarts from offset 0 with a recovery note; a file no
//!   session names is removed.
//!
//! Both run before the store serves anything ([`recover`]), and fail with
//! the typed I/O error of the file operation that failed. A directory
//! created at open has its entry in the store root synced at once, before
//! any session can acknowledge bytes in it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Fault, OpenError};
use crate::fs::Fs;
use crate::hash::Hasher;
use crate::meta::records::UploadRecord;
use crate::meta::txn::Txn;
use crate::meta::{decode, keys, Cf, Meta};

const STAGING_DIR: &str = "staging";
const UPLOADS_DIR: &str = "uploads";

static STREAM_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh path in `staging/` for spooling one stream.
pub(crate) fn new_stream_path(root: &Path) -> PathBuf {
    root.join(STAGING_DIR).join(format!(
        "{}-{}.tmp",
        std::process::id(),
        STREAM_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The directory of the sessions' staged files.
pub(crate) fn sessions_dir(root: &Path) -> PathBuf {
    root.join(UPLOADS_DIR)
}

/// Where the session with staged file number `file` keeps its received
/// bytes.
pub(crate) fn session_path(root: &Path, file: u64) -> PathBuf {
    sessions_dir(root).join(format!("{file}.part"))
}

/// The in-process side of the sessions: one slot per session in use, whose
/// lock makes a session have one writer at a time, and the bytes all
/// sessions stage.
pub(crate) struct Sessions {
    slots: Mutex<HashMap<u64, Arc<Mutex<Slot>>>>,
    /// What all sessions stage.
    pub(crate) staged: StagedBytes,
}

/// One user's sessions stage at most this fraction of the store's limit
/// (a quarter).
pub(crate) const USER_SHARE: u64 = 4;

/// What all sessions stage (declared lengths, and bytes received while a
/// length is deferred) against the store's limit. Counted at open; raised
/// inside the commit that raises it (commits run one at a time, so the
/// check there is exact); lowered once the commit that ends a session has
/// returned (so for an instant it is high, never low). Cloned into commit
/// closures.
#[derive(Clone)]
pub(crate) struct StagedBytes {
    total: Arc<AtomicU64>,
    limit: u64,
}

impl StagedBytes {
    /// Refuses `bytes` more if they would take the total past the limit.
    ///
    /// # Errors
    ///
    /// [`Fault::StagingFull`].
    pub(crate) fn check(&self, bytes: u64) -> Result<(), Fault> {
        let total = self.total.load(Ordering::SeqCst);
        match total.checked_add(bytes) {
            Some(t) if t <= self.limit => Ok(()),
            _ => Err(Fault::StagingFull { limit: self.limit }),
        }
    }

    /// Refuses `bytes` more for a user whose sessions stage `user_staged`
    /// already, if that would take them past [`USER_SHARE`] of the limit:
    /// a user without a quota (nothing else bounds their reservations)
    /// cannot take the whole staging room from everyone else.
    ///
    /// # Errors
    ///
    /// [`Fault::StagingFull`], naming the user's share as the limit.
    pub(crate) fn check_share(&self, user_staged: u64, bytes: u64) -> Result<(), Fault> {
        let share = self.limit / USER_SHARE;
        match user_staged.checked_add(bytes) {
            Some(t) if t <= share => Ok(()),
            _ => Err(Fault::StagingFull { limit: share }),
        }
    }

    /// [`check`](Self::check)s `bytes` and adds them. Called last in a
    /// commit closure: the commit then cannot fail after it (short of a
    /// failed write, which refuses all writes until a reopen recounts).
    pub(crate) fn raise(&self, bytes: u64) -> Result<(), Fault> {
        self.check(bytes)?;
        self.total.fetch_add(bytes, Ordering::SeqCst);
        Ok(())
    }

    /// The bytes staged now.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Takes `bytes` off, once the commit that ended their session has
    /// returned.
    pub(crate) fn lower(&self, bytes: u64) {
        let _ = self
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_sub(bytes)));
    }
}

/// What this process holds of one session between its requests: no open
/// file (each request opens the staged file and closes it).
#[derive(Default)]
pub(crate) struct Slot {
    /// The hash of the bytes up to the offset it is paired with, while this
    /// process has seen every append since offset 0.
    pub(crate) hasher: Option<(Hasher, u64)>,
}

impl Sessions {
    /// Sessions that stage `staged` bytes at open, of at most `limit`.
    pub(crate) fn new(staged: u64, limit: u64) -> Self {
        Sessions {
            slots: Mutex::default(),
            staged: StagedBytes {
                total: Arc::new(AtomicU64::new(staged)),
                limit,
            },
        }
    }

    /// The slot of the session with staged file `file`, made if it has none.
    pub(crate) fn slot(&self, file: u64) -> Arc<Mutex<Slot>> {
        self.slots.lock().entry(file).or_default().clone()
    }

    /// Forgets the slot of the session with staged file `file`.
    pub(crate) fn forget(&self, file: u64) {
        self.slots.lock().remove(&file);
    }
}

/// What recovery found of the sessions.
pub(crate) struct Recovered {
    /// One note per session that lost acknowledged bytes.
    pub(crate) notes: Vec<String>,
    /// What all sessions stage, as [`Sessions::staged`] counts it.
    pub(crate) bytes: u64,
}

/// Brings both staging directories in line with the committed metadata, at
/// open (see the module documentation for the rules).
///
/// # Errors
///
/// [`OpenError::Io`] for a file operation that failed, with the directory in
/// its context; [`OpenError::Database`] or [`OpenError::Corrupt`] for
/// session records that cannot be read or updated.
pub(crate) fn recover(fs: &dyn Fs, root: &Path, meta: &Meta) -> Result<Recovered, OpenError> {
    clear_streams(fs, root)?;
    recover_sessions(fs, root, meta)
}

/// Makes `root/name` exist, its entry in `root` durable when it had to be
/// created: a staged file a session acknowledged bytes in must not vanish
/// with a directory that a power cut forgot.
fn ensure_dir(fs: &dyn Fs, root: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = root.join(name);
    let missing = match fs.list(&dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    fs.create_dir_all(&dir)?;
    if missing {
        fs.sync_dir(root)?;
    }
    Ok(dir)
}

fn io_error(what: &str, dir: &Path) -> impl Fn(std::io::Error) -> OpenError {
    let context = format!("{what} {}", dir.display());
    move |source| OpenError::Io {
        context: context.clone(),
        source,
    }
}

/// Removes spooled streams left by a crash: they belong to uploads that
/// were never acknowledged.
fn clear_streams(fs: &dyn Fs, root: &Path) -> Result<(), OpenError> {
    let io = io_error("clearing", &root.join(STAGING_DIR));
    let dir = ensure_dir(fs, root, STAGING_DIR).map_err(&io)?;
    for name in fs.list(&dir).map_err(&io)? {
        fs.remove_file(&dir.join(name)).map_err(&io)?;
    }
    Ok(())
}

fn recover_sessions(fs: &dyn Fs, root: &Path, meta: &Meta) -> Result<Recovered, OpenError> {
    let io = io_error("recovering", &sessions_dir(root));
    let dir = ensure_dir(fs, root, UPLOADS_DIR).map_err(&io)?;
    let mut unclaimed: HashSet<String> = fs.list(&dir).map_err(&io)?.into_iter().collect();
    let mut txn = Txn::new(meta);
    let mut notes = Vec::new();
    let mut bytes = 0u64;
    for (key, value) in meta.scan_all(Cf::Uploads, &[])? {
        let id = keys::upload_id(&key).ok_or_else(|| OpenError::Corrupt("bad upload key".into()))?;
        let mut rec: UploadRecord = decode(&value)?;
        let len = match unclaimed.remove(&format!("{}.part", rec.file)) {
            true => {
                let file = fs.open(&session_path(root, rec.file)).map_err(&io)?;
                let len = file.len().map_err(&io)?;
                // Bytes past the offset were never acknowledged; bytes short
                // of it cannot be vouched for, so none are kept.
                let keep = if len < rec.offset { 0 } else { rec.offset };
                if len != keep {
                    file.set_len(keep).and_then(|()| file.sync_data()).map_err(&io)?;
                }
                len
            }
            false => 0,
        };
        if len < rec.offset {
            notes.push(format!(
                "upload session {id}: staged file has {len} of {} acknowledged bytes; the upload restarts from 0",
                rec.offset
            ));
            rec.offset = 0;
            txn.put(Cf::Uploads, key, &rec);
        }
        bytes = bytes.saturating_add(rec.declared.unwrap_or(rec.offset));
    }
    for orphan in &unclaimed {
        fs.remove_file(&dir.join(orphan)).map_err(&io)?;
    }
    if !txn.is_empty() {
        meta.write(txn.into_batch()).map_err(OpenError::from)?;
    }
    Ok(Recovered { notes, bytes })
}
