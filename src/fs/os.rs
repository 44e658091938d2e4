//! [`Fs`] over the operating system's file system.
//!
//! This module holds the crate's only `unsafe` code: memory-mapping segment
//! files in [`OsFs::map`].
//!
//! # The mapping contract
//!
//! A mapped file may change underneath the mapping, which Rust's aliasing
//! rules do not allow for a `&[u8]`, and truncation turns reads of the lost
//! pages into `SIGBUS`. keepsake keeps both from happening to the files it
//! maps:
//!
//! - it only maps segment files, and never writes to bytes of a segment below
//!   its committed length: records are append-only and a record's bytes are
//!   final before any reader can learn its location;
//! - it only truncates a segment during recovery at open, before anything is
//!   mapped, and only past the committed length, which no reader ever maps;
//! - it removes whole segment files (after compaction), which on Unix leaves
//!   existing mappings valid;
//! - one process at a time owns a store (an exclusive lock at open).
//!
//! What it cannot prevent is another program truncating a segment file or a
//! disk failing under a mapping: the store's directory must be left to it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::{Fs, FsFile};

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

struct OsFile(File);

impl Fs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }

    fn map(&self, path: &Path) -> io::Result<Bytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            // mmap of length 0 is an error on Linux.
            return Ok(Bytes::new());
        }
        // SAFETY: segment files are append-only below their committed length
        // and are never truncated while the store is open (see the module's
        // mapping contract), so the mapped bytes that callers slice never
        // change or disappear while the `Bytes` lives.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Bytes::from_owner(map))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl FsFile for OsFile {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
