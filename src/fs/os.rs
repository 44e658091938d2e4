//! [`Fs`] over the operating system's file system.
//!
//! This module holds the crate's one `unsafe` operation: memory-mapping
//! segment files in [`OsFs::map`]. Calling it is `unsafe` (see
//! [`Fs::map`]'s `# Safety`); its one caller is the blob log's read path.
//!
//! # The mapping contract
//!
//! A mapped file may change underneath the mapping, which Rust's aliasing
//! rules do not allow for a `&[u8]`, and truncation turns reads of the lost
//! pages into `SIGBUS`. keepsake keeps both from happening to the bytes it
//! reads through a map:
//!
//! - it only maps segment files, and never writes to bytes of a segment below
//!   its committed length: records are append-only and a record's bytes are
//!   final before any reader can learn its location;
//! - it reads through a map only records whose location the metadata gave,
//!   all below the committed length;
//! - it truncates a segment only past the end of every record anyone was
//!   given: during recovery at open (past the committed length) and when an
//!   append fails (back to where that append started);
//! - it removes whole segment files (after compaction), which on Unix leaves
//!   existing mappings valid;
//! - one process at a time owns a store (an exclusive lock at open).
//!
//! What it cannot prevent is another program truncating a segment file or a
//! disk failing under a mapping: the store's directory must be left to it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
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

    unsafe fn map(&self, path: &Path) -> io::Result<Bytes> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            // mmap of length 0 is an error on Linux.
            return Ok(Bytes::new());
        }
        // SAFETY: `Mmap::map` is unsafe because the mapped file may change or
        // shrink while the map lives. The map lives exactly as long as the
        // returned `Bytes` and its slices (`from_owner` owns it), and this
        // function's caller guarantees that for that time the bytes read
        // through them are neither modified nor truncated away (the
        // `# Safety` contract of `Fs::map`, which the blob log meets with the
        // segment contract in this module's documentation).
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

    /// `posix_fadvise(POSIX_FADV_DONTNEED)` on the range, which Linux
    /// implements by starting write-back of its dirty pages without waiting
    /// (and dropping only pages already clean: none, in bytes just
    /// appended). PostgreSQL's `pg_flush_data` falls back on the same call
    /// where `sync_file_range` is missing; this one is safe to call from
    /// Rust (rustix), where `sync_file_range` has no safe binding. Its
    /// result is dropped on purpose: an error met writing back stays
    /// recorded against the file, and the `fdatasync` that must follow
    /// reports it (Linux 4.13 on).
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = rustix::fs::fadvise(&self.0, offset, NonZeroU64::new(len), rustix::fs::Advice::DontNeed);
    }
}
