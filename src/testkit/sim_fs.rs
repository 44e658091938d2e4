//! An in-memory [`Fs`] that numbers every operation that can change the disk,
//! fails the one a test picks, and produces the disk image a power cut would
//! leave at any moment.
//!
//! # What a crash keeps and drops
//!
//! Every file has *live* bytes (what reads see) and *durable* bytes (the live
//! bytes as the last successful [`FsFile::sync_data`] found them). Every
//! directory entry, of a file or of a directory, changes in the live tree at
//! once, but the change (creation or removal) becomes durable only at the next
//! [`Fs::sync_dir`] of the directory that holds it. The root given to
//! [`SimFs::new`] stands for a directory that existed before the test: it is
//! always there. A power cut ([`SimFs::crash_image`]) leaves:
//!
//! - exactly the entries that were durable. A file created since its
//!   directory was last synced vanishes, even if its data was synced; a file
//!   removed since then comes back, with its durable bytes; a directory whose
//!   own entry is not durable takes everything below it along;
//! - of each file that survives, its durable bytes: every write, truncation
//!   and extension since its last `sync_data` is lost;
//! - optionally ([`Tear`]), part of the last write that no sync covered (to
//!   a file that survives), as a disk that was writing it when the power
//!   went: a prefix of it, or all of it with its bytes in its last 512-byte
//!   sector replaced by garbage. The same file's unsynced changes made
//!   before that write are then kept too, since a file's dirty pages reach
//!   the disk in order. Which prefix and which garbage follow from the seed,
//!   so an image is reproducible.
//!
//! Bytes that a sync made durable never change in a crash (the model's disk
//! has no bit rot), which is what `DESIGN.md` §9 assumes of a real disk.
//!
//! # Operations and faults
//!
//! The operations that can change what a crash leaves are numbered from 1 in
//! the order they start: `create_dir_all` (one per call), `create`,
//! `write_all_at`, `set_len`, `sync_data`, `remove_file` and `sync_dir`.
//! Reads (`open`, `list`, `map`, `read_exact_at`, `len`) are neither numbered
//! nor failed: a crash between two reads leaves the same image as one before
//! them, so numbering reads would only repeat crash points, and a failed read
//! tests error reporting rather than durability. Numbers are deterministic
//! when one thread drives the store.
//!
//! [`SimFs::fail_at`] makes operation N fail with an `io::Error` and change
//! nothing; with [`Fault::ShortWrite`] a write first stores half of its bytes
//! (as a disk filling up does). [`SimFs::set_hook`] runs a callback as each
//! operation starts, before it has any effect: a test that takes the store's
//! metadata checkpoint and a crash image there gets the exact state a power
//! cut at that moment would leave.
//!
//! # Maps
//!
//! [`Fs::map`] returns a copy of the live bytes: a snapshot that later writes
//! do not change. The real map is shared with the file, but the engine only
//! reads bytes that are never written again nor truncated while it may read
//! them (the `# Safety` contract of [`Fs::map`]; see `fs/os.rs`), so it
//! cannot tell the two apart. A copy makes the contract moot here: calling
//! this `map` is always sound.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::fs::{Fs, FsFile};

/// The unit a torn write is garbled in: a disk sector.
const SECTOR: u64 = 512;

/// `ENOSPC`, as a full disk reports a write.
const ENOSPC: i32 = 28;

/// A numbered operation (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// `Fs::create_dir_all`.
    CreateDir,
    /// `Fs::create`.
    Create,
    /// `FsFile::write_all_at`.
    Write,
    /// `FsFile::set_len`.
    SetLen,
    /// `FsFile::sync_data`.
    SyncData,
    /// `Fs::remove_file`.
    RemoveFile,
    /// `Fs::sync_dir`.
    SyncDir,
}

/// An operation as it starts, as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its number, from 1.
    pub number: u64,
    /// What it does.
    pub kind: OpKind,
    /// The file or directory it acts on.
    pub path: PathBuf,
}

/// How an injected fault fails its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation fails with an I/O error and changes nothing.
    Error,
    /// A write stores the first half of its bytes, then fails with `ENOSPC`.
    /// Any other operation fails as with [`Fault::Error`].
    ShortWrite,
}

/// What a crash does to the last write that no sync covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// It is lost, like every unsynced change.
    None,
    /// A prefix of it (shorter than the whole, maybe empty) reached the disk.
    Prefix {
        /// Chooses the prefix's length.
        seed: u64,
    },
    /// All of it reached the disk, but its bytes in its last sector are
    /// garbage.
    Garbage {
        /// Chooses the garbage.
        seed: u64,
    },
}

/// Called as each numbered operation starts.
pub type Hook = Arc<dyn Fn(&Op) + Send + Sync>;

/// The disk a power cut leaves: each surviving file's bytes and each
/// surviving directory, by path relative to the file system's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashImage {
    /// `None` for a directory.
    entries: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl CrashImage {
    /// The bytes of the file at `path` (relative to the root), if it survived.
    pub fn file(&self, path: &Path) -> Option<&[u8]> {
        self.entries.get(path)?.as_deref()
    }
}

/// The simulated file system. Clones share one disk.
#[derive(Clone)]
pub struct SimFs {
    shared: Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    ops: AtomicU64,
    /// Orders writes across files, to find the last one for [`Tear`].
    writes: AtomicU64,
    faults: Mutex<BTreeMap<u64, Fault>>,
    hook: Mutex<Option<Hook>>,
    tree: Mutex<Tree>,
}

/// Entries by path relative to the root, which is in neither map.
#[derive(Default)]
struct Tree {
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
}

#[derive(Clone)]
enum Node {
    Dir,
    File(Arc<Inode>),
}

/// A file's data, shared by its entries (live and durable) and its handles,
/// so that a removed file's open handles and its durable entry still see it.
#[derive(Default)]
struct Inode(Mutex<Contents>);

#[derive(Default)]
struct Contents {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync, each with its place in the global order
    /// of writes.
    unsynced: Vec<(u64, Change)>,
}

#[derive(Clone)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, to: &mut Vec<u8>) {
        match self {
            Change::Write { offset, bytes } => {
                let start = *offset as usize;
                let end = start + bytes.len();
                if to.len() < end {
                    to.resize(end, 0);
                }
                to[start..end].copy_from_slice(bytes);
            }
            Change::SetLen(len) => to.resize(*len as usize, 0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not turn every later check into a
    // poisoned-lock panic that hides the first failure.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

/// `n` bytes that follow from `seed` alone, for reproducible tears.
fn seeded_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFs")
            .field("root", &self.shared.root)
            .field("ops", &self.ops())
            .finish_non_exhaustive()
    }
}

impl SimFs {
    /// An empty file system whose root is `root`: every path the store uses
    /// must lie below it (the store's directory).
    pub fn new(root: impl Into<PathBuf>) -> SimFs {
        SimFs {
            shared: Arc::new(Shared {
                root: root.into(),
                ops: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                faults: Mutex::new(BTreeMap::new()),
                hook: Mutex::new(None),
                tree: Mutex::new(Tree::default()),
            }),
        }
    }

    /// How many numbered operations have started so far.
    pub fn ops(&self) -> u64 {
        self.shared.ops.load(Ordering::SeqCst)
    }

    /// Makes operation `number` fail (see [`Fault`]).
    pub fn fail_at(&self, number: u64, fault: Fault) {
        lock(&self.shared.faults).insert(number, fault);
    }

    /// Sets (or with `None` removes) the callback run as each numbered
    /// operation starts, before it has any effect. It runs on the thread
    /// doing the operation, with no lock of this file system held, so it may
    /// call [`crash_image`](Self::crash_image) or use the store.
    pub fn set_hook(&self, hook: Option<Hook>) {
        *lock(&self.shared.hook) = hook;
    }

    /// Whether `path` exists now (not necessarily durably).
    pub fn exists(&self, path: &Path) -> bool {
        self.shared
            .rel(path)
            .is_ok_and(|rel| rel.as_os_str().is_empty() || lock(&self.shared.tree).live.contains_key(&rel))
    }

    /// The disk a power cut at this moment would leave (see the
    /// [module docs](self)).
    pub fn crash_image(&self, tear: Tear) -> CrashImage {
        let tree = lock(&self.shared.tree);
        let reachable = |path: &Path| {
            path.ancestors()
                .skip(1)
                .take_while(|a| !a.as_os_str().is_empty())
                .all(|a| matches!(tree.durable.get(a), Some(Node::Dir)))
        };
        let survivors: Vec<(&PathBuf, &Node)> = tree.durable.iter().filter(|(p, _)| reachable(p)).collect();
        // The last unsynced write of any surviving file is the one a tear
        // affects.
        let torn = survivors
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(inode) => lock(&inode.0)
                    .unsynced
                    .iter()
                    .filter(|(_, c)| matches!(c, Change::Write { .. }))
                    .map(|(seq, _)| *seq)
                    .max()
                    .map(|seq| (seq, (*p).clone())),
                Node::Dir => None,
            })
            .max();
        let mut image = CrashImage::default();
        for (path, node) in survivors {
            let entry = match node {
                Node::Dir => None,
                Node::File(inode) => {
                    let contents = lock(&inode.0);
                    let mut bytes = contents.durable.clone();
                    match &torn {
                        Some((seq, p)) if p == path && tear != Tear::None => {
                            tear_last_write(&mut bytes, &contents.unsynced, *seq, tear)
                        }
                        _ => {}
                    }
                    Some(bytes)
                }
            };
            image.entries.insert(path.clone(), entry);
        }
        image
    }

    /// Replaces the whole disk with `image`, every entry and byte of it
    /// durable: the disk as the machine finds it after a power cut. The
    /// operation count, the faults and the hook stay as they are.
    pub fn restore(&self, image: &CrashImage) {
        let mut tree = lock(&self.shared.tree);
        *tree = Tree::default();
        for (path, entry) in &image.entries {
            let node = match entry {
                None => Node::Dir,
                Some(bytes) => Node::File(Arc::new(Inode(Mutex::new(Contents {
                    live: bytes.clone(),
                    durable: bytes.clone(),
                    unsynced: Vec::new(),
                })))),
            };
            tree.live.insert(path.clone(), node.clone());
            tree.durable.insert(path.clone(), node);
        }
    }
}

/// Applies to `bytes` (a file's durable bytes) its unsynced changes up to
/// write `seq`, and that write torn as `tear` says.
fn tear_last_write(bytes: &mut Vec<u8>, unsynced: &[(u64, Change)], seq: u64, tear: Tear) {
    for (s, change) in unsynced {
        if *s < seq {
            change.apply(bytes);
            continue;
        }
        let Change::Write { offset, bytes: data } = change else {
            continue;
        };
        if *s != seq {
            continue;
        }
        match tear {
            Tear::None => {}
            Tear::Prefix { seed } => {
                let draw = u64::from_le_bytes(seeded_bytes(seed, 8).try_into().expect("8 bytes"));
                let keep = (draw % (data.len() as u64).max(1)) as usize;
                Change::Write {
                    offset: *offset,
                    bytes: data[..keep].to_vec(),
                }
                .apply(bytes);
            }
            Tear::Garbage { seed } => {
                change.apply(bytes);
                let end = offset + data.len() as u64;
                let start = (*offset).max(end.saturating_sub(1) / SECTOR * SECTOR);
                let garbage = seeded_bytes(seed, (end - start) as usize);
                bytes[start as usize..end as usize].copy_from_slice(&garbage);
            }
        }
    }
}

impl Shared {
    /// `path` relative to the root, or an error for a path outside it.
    fn rel(&self, path: &Path) -> io::Result<PathBuf> {
        path.strip_prefix(&self.root).map(Path::to_path_buf).map_err(|_| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is outside the simulated file system", path.display()),
            )
        })
    }

    /// Numbers an operation, runs the hook, and returns the fault to inject,
    /// if any.
    fn begin(&self, kind: OpKind, path: &Path) -> Option<Fault> {
        let number = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let hook = lock(&self.hook).clone();
        if let Some(hook) = hook {
            hook(&Op {
                number,
                kind,
                path: path.to_path_buf(),
            });
        }
        lock(&self.faults).remove(&number)
    }

    /// Runs a numbered operation on the directory tree, which `f` gets with
    /// `path` relative to the root.
    fn tree_op<T>(
        &self,
        kind: OpKind,
        path: &Path,
        f: impl FnOnce(&mut Tree, &Path) -> io::Result<T>,
    ) -> io::Result<T> {
        let rel = self.rel(path)?;
        self.op(kind, path, || f(&mut lock(&self.tree), &rel))
    }

    /// Runs a numbered operation that has no partial effect.
    fn op<T>(&self, kind: OpKind, path: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match self.begin(kind, path) {
            Some(_) => Err(injected(kind, path)),
            None => f(),
        }
    }
}

fn injected(kind: OpKind, path: &Path) -> io::Error {
    io::Error::other(format!("injected fault: {kind:?} of {}", path.display()))
}

fn is_dir(tree: &Tree, rel: &Path) -> bool {
    rel.as_os_str().is_empty() || matches!(tree.live.get(rel), Some(Node::Dir))
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.shared.tree_op(OpKind::CreateDir, dir, |tree, rel| {
            let mut missing: Vec<&Path> = rel
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty())
                .filter(|a| !is_dir(tree, a))
                .collect();
            if missing.iter().any(|a| tree.live.contains_key(*a)) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("a file is in the way of {}", dir.display()),
                ));
            }
            missing.reverse();
            for a in missing {
                tree.live.insert(a.to_path_buf(), Node::Dir);
            }
            Ok(())
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let rel = self.shared.rel(dir)?;
        let tree = lock(&self.shared.tree);
        if !is_dir(&tree, &rel) {
            return Err(not_found(dir));
        }
        Ok(tree
            .live
            .keys()
            .filter(|p| p.parent() == Some(rel.as_path()))
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.shared.tree_op(OpKind::Create, path, |tree, rel| {
            if !rel.parent().is_some_and(|p| is_dir(tree, p)) {
                return Err(not_found(path));
            }
            if tree.live.contains_key(rel) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            let inode = Arc::new(Inode::default());
            tree.live.insert(rel.to_path_buf(), Node::File(inode.clone()));
            Ok(self.handle(path, inode))
        })
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let rel = self.shared.rel(path)?;
        match lock(&self.shared.tree).live.get(&rel) {
            Some(Node::File(inode)) => Ok(self.handle(path, inode.clone())),
            _ => Err(not_found(path)),
        }
    }

    /// A copy of the live bytes: sound to call whatever happens to the file
    /// afterwards (the trait's contract binds callers of real maps).
    unsafe fn map(&self, path: &Path) -> io::Result<Bytes> {
        let rel = self.shared.rel(path)?;
        match lock(&self.shared.tree).live.get(&rel) {
            Some(Node::File(inode)) => Ok(Bytes::copy_from_slice(&lock(&inode.0).live)),
            _ => Err(not_found(path)),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared
            .tree_op(OpKind::RemoveFile, path, |tree, rel| match tree.live.get(rel) {
                Some(Node::File(_)) => {
                    tree.live.remove(rel);
                    Ok(())
                }
                Some(Node::Dir) => Err(io::Error::other(format!("{} is a directory", path.display()))),
                None => Err(not_found(path)),
            })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.shared.tree_op(OpKind::SyncDir, dir, |tree, rel| {
            if !is_dir(tree, rel) {
                return Err(not_found(dir));
            }
            let in_dir = |p: &PathBuf| p.parent() == Some(rel);
            tree.durable.retain(|p, _| !in_dir(p));
            let now: Vec<(PathBuf, Node)> = tree
                .live
                .iter()
                .filter(|(p, _)| in_dir(p))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect();
            tree.durable.extend(now);
            Ok(())
        })
    }
}

impl SimFs {
    fn handle(&self, path: &Path, inode: Arc<Inode>) -> Box<dyn FsFile> {
        Box::new(SimFile {
            shared: self.shared.clone(),
            inode,
            path: path.to_path_buf(),
        })
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    shared: Arc<Shared>,
    inode: Arc<Inode>,
    path: PathBuf,
}

impl SimFile {
    fn change(&self, change: Change) {
        let seq = self.shared.writes.fetch_add(1, Ordering::SeqCst);
        let mut c = lock(&self.inode.0);
        change.apply(&mut c.live);
        c.unsynced.push((seq, change));
    }
}

impl FsFile for SimFile {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match self.shared.begin(OpKind::Write, &self.path) {
            None => {
                self.change(Change::Write {
                    offset,
                    bytes: buf.to_vec(),
                });
                Ok(())
            }
            Some(Fault::ShortWrite) => {
                self.change(Change::Write {
                    offset,
                    bytes: buf[..buf.len() / 2].to_vec(),
                });
                Err(io::Error::from_raw_os_error(ENOSPC))
            }
            Some(Fault::Error) => Err(injected(OpKind::Write, &self.path)),
        }
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let c = lock(&self.inode.0);
        let start = offset as usize;
        let src = c
            .live
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.inode.0).live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.op(OpKind::SetLen, &self.path, || {
            self.change(Change::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.shared.op(OpKind::SyncData, &self.path, || {
            let mut c = lock(&self.inode.0);
            c.durable = c.live.clone();
            c.unsynced.clear();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> SimFs {
        let fs = SimFs::new("/store");
        fs.create_dir_all(Path::new("/store/seg")).unwrap();
        fs.sync_dir(Path::new("/store")).unwrap();
        fs
    }

    /// `seg/a`, created with `bytes` synced (but not its directory entry).
    fn synced_file(fs: &SimFs, bytes: &[u8]) -> Box<dyn FsFile> {
        let f = fs.create(Path::new("/store/seg/a")).unwrap();
        f.write_all_at(0, bytes).unwrap();
        f.sync_data().unwrap();
        f
    }

    fn image_of(fs: &SimFs, tear: Tear, path: &str) -> Option<Vec<u8>> {
        fs.crash_image(tear).file(Path::new(path)).map(<[u8]>::to_vec)
    }

    #[test]
    fn a_crash_keeps_synced_bytes_of_durable_entries_only() {
        let fs = sim();
        let f = synced_file(&fs, b"hello");
        assert_eq!(image_of(&fs, Tear::None, "seg/a"), None, "entry not synced yet");
        fs.sync_dir(Path::new("/store/seg")).unwrap();
        f.write_all_at(5, b" world").unwrap();
        assert_eq!(image_of(&fs, Tear::None, "seg/a").unwrap(), b"hello");
        // SAFETY: a SimFs map is a copy of the bytes: nothing can invalidate it.
        let view = unsafe { fs.map(Path::new("/store/seg/a")) }.unwrap();
        assert_eq!(&view[..], b"hello world");
    }

    #[test]
    fn an_unsynced_removal_is_undone_by_a_crash() {
        let fs = sim();
        synced_file(&fs, b"kept");
        fs.sync_dir(Path::new("/store/seg")).unwrap();
        fs.remove_file(Path::new("/store/seg/a")).unwrap();
        assert!(!fs.exists(Path::new("/store/seg/a")));
        assert_eq!(image_of(&fs, Tear::None, "seg/a").unwrap(), b"kept");
        fs.sync_dir(Path::new("/store/seg")).unwrap();
        assert_eq!(image_of(&fs, Tear::None, "seg/a"), None);
    }

    #[test]
    fn a_directory_whose_entry_is_not_durable_loses_its_files() {
        let fs = SimFs::new("/store");
        fs.create_dir_all(Path::new("/store/seg")).unwrap();
        synced_file(&fs, b"");
        fs.sync_dir(Path::new("/store/seg")).unwrap();
        assert_eq!(image_of(&fs, Tear::None, "seg/a"), None);
        fs.sync_dir(Path::new("/store")).unwrap();
        assert_eq!(image_of(&fs, Tear::None, "seg/a").unwrap(), b"");
    }

    #[test]
    fn a_torn_write_keeps_a_seeded_prefix_or_garbles_its_last_sector() {
        let fs = sim();
        let f = synced_file(&fs, &[1; 100]);
        fs.sync_dir(Path::new("/store/seg")).unwrap();
        f.write_all_at(100, &[2; 1000]).unwrap();
        f.write_all_at(1100, &[3; 700]).unwrap();
        let prefix = image_of(&fs, Tear::Prefix { seed: 7 }, "seg/a").unwrap();
        assert!(
            prefix.len() >= 1100 && prefix.len() < 1800,
            "earlier unsynced write kept, last one cut"
        );
        assert_eq!(prefix, image_of(&fs, Tear::Prefix { seed: 7 }, "seg/a").unwrap());
        let garbled = image_of(&fs, Tear::Garbage { seed: 7 }, "seg/a").unwrap();
        assert_eq!(garbled.len(), 1800);
        assert!(garbled[1100..1536].iter().all(|&b| b == 3), "before the last sector");
        assert_ne!(&garbled[1536..], &[3; 264][..]);
        assert_eq!(image_of(&fs, Tear::None, "seg/a").unwrap(), vec![1; 100]);
    }

    #[test]
    fn the_chosen_operation_fails_and_changes_nothing() {
        let fs = sim();
        let f = fs.create(Path::new("/store/seg/a")).unwrap();
        let next = fs.ops() + 1;
        fs.fail_at(next, Fault::Error);
        fs.fail_at(next + 1, Fault::ShortWrite);
        assert!(f.write_all_at(0, b"abcd").is_err());
        assert_eq!(f.len().unwrap(), 0);
        let e = f.write_all_at(0, b"abcd").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        // SAFETY: a SimFs map is a copy of the bytes: nothing can invalidate it.
        let view = unsafe { fs.map(Path::new("/store/seg/a")) }.unwrap();
        assert_eq!(&view[..], b"ab");
        f.write_all_at(2, b"cd").unwrap();
        assert_eq!(fs.ops(), next + 2);
    }

    #[test]
    fn create_refuses_an_existing_file_and_a_missing_directory() {
        let fs = sim();
        fs.create(Path::new("/store/seg/a")).unwrap();
        let exists = fs.create(Path::new("/store/seg/a")).map(|_| ()).unwrap_err();
        assert_eq!(exists.kind(), io::ErrorKind::AlreadyExists);
        let missing = fs.create(Path::new("/store/nope/a")).map(|_| ()).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs.list(Path::new("/store/seg")).unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn a_map_is_a_snapshot_that_outlives_the_file() {
        let fs = sim();
        let f = fs.create(Path::new("/store/seg/a")).unwrap();
        f.write_all_at(0, b"abc").unwrap();
        // SAFETY: a SimFs map is a copy of the bytes, which is what this test
        // checks: the writes and the removal below cannot invalidate it.
        let view = unsafe { fs.map(Path::new("/store/seg/a")) }.unwrap();
        f.write_all_at(3, b"def").unwrap();
        fs.remove_file(Path::new("/store/seg/a")).unwrap();
        assert_eq!(&view[..], b"abc");
    }
}
