//! The backup walk: which files under the paths a user named are backed up,
//! which entries are not and why, and which paths could not be read.
//!
//! Folders are listed through descriptors: each subfolder is opened relative
//! to its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`; each entry is
//! known by its listing's type and inode, or examined with
//! `fstatat(AT_SYMLINK_NOFOLLOW)` where the listing does not say; and each
//! file's path must still lead to the inode the listing named (or, where the
//! listing's inode is not the file's own, to the file `fstatat` sees through
//! the folder's descriptor). So no
//! symbolic link is followed at any depth, not even one swapped in for a
//! folder while the walk runs, and a file costs one `lstat`. Only the paths
//! the user named are followed if they are links.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, Metadata};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// Why the store's own folders are never backed up: a backup of `~` that
/// contains the default store would otherwise store its segments as photos,
/// and grow by the store's size on every run.
pub(crate) const STORE_ITSELF: &str = "the store's own directory (never backed up)";

/// A regular file found by the walk, with its `lstat` metadata.
pub(crate) struct Found {
    pub path: PathBuf,
    pub meta: Metadata,
}

/// What a walk found.
#[derive(Default)]
pub(crate) struct Walk {
    pub found: Vec<Found>,
    /// Entries not backed up, and why: links, FIFOs, sockets, devices, the
    /// store itself.
    pub ignored: Vec<(PathBuf, &'static str)>,
    /// Paths that could not be read, and why.
    pub errors: Vec<(PathBuf, String)>,
    /// Whether any named path is a file or folder that can be backed up:
    /// if none is, the backup creates nothing.
    pub readable: bool,
}

/// The identities (device, inode) of the store's directory and every
/// directory in it: whatever path leads into one, the walk knows it.
pub(crate) struct StoreDirs(HashSet<(u64, u64)>);

impl StoreDirs {
    /// The directories of the store at `dir`; none if there is no store yet.
    pub(crate) fn of(dir: &Path) -> StoreDirs {
        let mut ids = HashSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            // The store's own path may be a link (to a bigger disk): it is
            // followed; links inside the store are not.
            let m = if d == dir {
                fs::metadata(&d)
            } else {
                fs::symlink_metadata(&d)
            };
            let Ok(m) = m else { continue };
            if m.is_dir() && ids.insert((m.dev(), m.ino())) {
                let entries = fs::read_dir(&d).into_iter().flatten().flatten();
                stack.extend(entries.map(|e| e.path()));
            }
        }
        StoreDirs(ids)
    }

    fn holds(&self, dev: u64, ino: u64) -> bool {
        self.0.contains(&(dev, ino))
    }

    /// Whether `path` (a named path, links resolved) is in one of them.
    fn contains(&self, path: &Path) -> bool {
        let Ok(real) = fs::canonicalize(path) else { return false };
        real.ancestors()
            .filter_map(|a| fs::metadata(a).ok())
            .any(|m| self.holds(m.dev(), m.ino()))
    }
}

/// The device and inode in a `stat`.
#[allow(clippy::unnecessary_cast, reason = "u64 on 64-bit Linux, other widths elsewhere")]
fn identity(st: &rustix::fs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Why an entry that is not a regular file or a folder is not backed up.
fn reason(t: FileType) -> &'static str {
    match t {
        FileType::Symlink => "symbolic link (not followed)",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::BlockDevice | FileType::CharacterDevice => "device",
        _ => "file of an unknown kind",
    }
}

/// A folder to list: its parent's descriptor, its name there, and what
/// `fstatat` saw of it.
struct Pending {
    parent: Rc<OwnedFd>,
    name: CString,
    path: PathBuf,
    id: (u64, u64),
}

/// A walk entry in the order of the walk: sorted by name, depth first, as a
/// listing of the tree prints them; so a backup's order (and which of two
/// duplicates is "first") is reproducible.
enum Entry {
    File(Listed),
    Folder(Pending),
}

/// A file as its folder's listing showed it: the folder's descriptor, its
/// name there, and the device and inode the listing gave.
struct Listed {
    dir: Rc<OwnedFd>,
    name: CString,
    path: PathBuf,
    id: (u64, u64),
}

impl Listed {
    /// The file's `lstat` metadata, if its path leads, through no folder
    /// swapped for a link, to a regular file in the folder the descriptor
    /// walk listed. One `lstat` of the path answers it when the listing's
    /// inode (`d_ino`) is the file's. Where it is not (a file bind-mounted
    /// over another, overlayfs, or one renamed over since the listing),
    /// `fstatat` through the folder's descriptor must see the same regular
    /// file as the path: then it is the file in that folder now, and that
    /// file is what the upload opens and checks (device and inode included).
    fn metadata(&self) -> Result<Metadata, String> {
        let meta = fs::symlink_metadata(&self.path).map_err(|e| e.to_string())?;
        let id = (meta.dev(), meta.ino());
        if id == self.id {
            return Ok(meta);
        }
        let st = rustix::fs::statat(&*self.dir, self.name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| std::io::Error::from(e).to_string())?;
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && identity(&st) == id {
            Ok(meta)
        } else {
            Err("changed during the walk".into())
        }
    }
}

impl Walk {
    /// Walks `root`, a path the user named.
    pub(crate) fn add(&mut self, root: &Path, store: &StoreDirs) {
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) => return self.errors.push((root.to_path_buf(), e.to_string())),
        };
        if store.contains(root) {
            return self.ignored.push((root.to_path_buf(), STORE_ITSELF));
        }
        if meta.is_file() {
            // A named link is followed: its target is what the user meant,
            // and reading it by its own path opens no link.
            let path = match fs::symlink_metadata(root) {
                Ok(m) if m.is_symlink() => fs::canonicalize(root),
                _ => Ok(root.to_path_buf()),
            };
            return match path.and_then(|p| fs::symlink_metadata(&p).map(|m| (p, m))) {
                Ok((path, meta)) => {
                    self.readable = true;
                    self.found.push(Found { path, meta })
                }
                Err(e) => self.errors.push((root.to_path_buf(), e.to_string())),
            };
        }
        if !meta.is_dir() {
            let what = reason(FileType::from_raw_mode(meta.mode()));
            return self.errors.push((
                root.to_path_buf(),
                format!("is a {what}, not a regular file or a folder; nothing was backed up from it"),
            ));
        }
        // Without blocking, and only the folder just looked at: a root
        // swapped for a FIFO meanwhile must not hang the backup.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let opened = rustix::fs::open(root, flags, Mode::empty())
            .map_err(std::io::Error::from)
            .and_then(|fd| Ok((rustix::fs::fstat(&fd)?, fd)));
        match opened {
            Ok((st, fd)) if identity(&st) == (meta.dev(), meta.ino()) => {
                self.readable = true;
                self.list(root, fd, meta.dev(), store);
            }
            Ok(_) => self.errors.push((root.to_path_buf(), "changed during the walk".into())),
            Err(e) => self.errors.push((root.to_path_buf(), e.to_string())),
        }
    }

    /// Lists the folder open as `dir` at `path`, and everything under it.
    fn list(&mut self, path: &Path, dir: OwnedFd, dev: u64, store: &StoreDirs) {
        let mut stack = Vec::new();
        self.push_entries(path, Rc::new(dir), dev, store, &mut stack);
        while let Some(entry) = stack.pop() {
            match entry {
                Entry::File(file) => match file.metadata() {
                    Ok(meta) => self.found.push(Found { path: file.path, meta }),
                    Err(e) => self.errors.push((file.path, e)),
                },
                Entry::Folder(p) => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let opened = rustix::fs::openat(&*p.parent, p.name.as_c_str(), flags, Mode::empty())
                        .map_err(std::io::Error::from)
                        .and_then(|fd| Ok((rustix::fs::fstat(&fd)?, fd)));
                    match opened {
                        Ok((st, fd)) if identity(&st) == p.id => {
                            self.push_entries(&p.path, Rc::new(fd), p.id.0, store, &mut stack)
                        }
                        Ok(_) => self.errors.push((p.path, "changed during the walk".into())),
                        Err(e) => self.errors.push((p.path, e.to_string())),
                    }
                }
            }
        }
    }

    /// Pushes the entries of the folder `dir` (at `path`, on device `dev`)
    /// on `stack`, the first on top, and notes those not backed up. A
    /// regular file is known from the listing (`d_type`, `d_ino`); its path
    /// is checked against it when it is taken off the stack
    /// ([`Listed::metadata`]). Anything else, or an entry whose listing
    /// does not say its type, is examined with `fstatat`.
    fn push_entries(&mut self, path: &Path, dir: Rc<OwnedFd>, dev: u64, store: &StoreDirs, stack: &mut Vec<Entry>) {
        let names = Dir::read_from(&*dir).and_then(|d| {
            d.filter_map(|e| match e {
                Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => None,
                Ok(e) => Some(Ok((e.file_name().to_owned(), e.file_type(), e.ino()))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
        });
        let mut names = match names {
            Ok(n) => n,
            Err(e) => {
                return self
                    .errors
                    .push((path.to_path_buf(), std::io::Error::from(e).to_string()))
            }
        };
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut entries = Vec::new();
        for (name, listed_type, ino) in names {
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            if listed_type == FileType::RegularFile {
                entries.push(Entry::File(Listed {
                    dir: Rc::clone(&dir),
                    name,
                    path: child,
                    id: (dev, ino),
                }));
                continue;
            }
            let st = match rustix::fs::statat(&*dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => {
                    self.errors.push((child, std::io::Error::from(e).to_string()));
                    continue;
                }
            };
            let id = identity(&st);
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => entries.push(Entry::File(Listed {
                    dir: Rc::clone(&dir),
                    name,
                    path: child,
                    id,
                })),
                FileType::Directory if store.holds(id.0, id.1) => self.ignored.push((child, STORE_ITSELF)),
                FileType::Directory => entries.push(Entry::Folder(Pending {
                    parent: Rc::clone(&dir),
                    name,
                    path: child,
                    id,
                })),
                t => self.ignored.push((child, reason(t))),
            }
        }
        stack.extend(entries.into_iter().rev());
    }
}
