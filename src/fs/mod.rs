//! The file-system interface of the blob log.
//!
//! Every byte of blob data that keepsake writes, syncs, maps or removes goes
//! through [`Fs`] and [`FsFile`]: nothing in the blob log touches `std::fs`
//! directly. That single seam is what lets tests substitute a file system that
//! fails the Nth operation or forgets every write that was not synced, and so
//! check the commit protocol against power loss (see `DESIGN.md`).
//!
//! RocksDB's own files do not go through this trait; its contract (a synced
//! write batch is atomic and durable) is assumed instead.
//!
//! ```
//! use keepsake::fs::{Fs, OsFs};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("x");
//! let fs = OsFs;
//! let f = fs.create(&path).unwrap();
//! f.write_all_at(0, b"hello").unwrap();
//! f.sync_data().unwrap();
//! // SAFETY: nothing writes to or truncates the file while `view` lives:
//! // `f` is not used again and the directory is this example's own.
//! let view = unsafe { fs.map(&path) }.unwrap();
//! assert_eq!(&view[..], b"hello");
//! ```

mod os;

use std::fmt::Debug;
use std::io;
use std::path::Path;

use bytes::Bytes;

pub use os::OsFs;

/// A directory tree of files, as the blob log needs it.
pub trait Fs: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file, failing if it exists, open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// A read-only, zero-copy view of the whole file as it is now. The view
    /// stays valid after the file is removed; it does not see later appends.
    ///
    /// # Safety
    ///
    /// The view may be a memory map of the file itself (it is, for
    /// [`OsFs`]). While the returned `Bytes`, or any slice of it, lives, the
    /// caller must ensure that the bytes read through it are not modified
    /// (the bytes behind a `&[u8]` must not change) and that the file is not
    /// truncated below them (reading a page that truncation took away raises
    /// `SIGBUS`). Appending to the file and removing it are fine. The blob
    /// log meets this with the segment contract: readers read only committed
    /// records, whose bytes are written once, before any reader learns where
    /// they are, and which no truncation reaches (recovery at open cuts only
    /// past the committed length, a failed append only its own bytes).
    unsafe fn map(&self, path: &Path) -> io::Result<Bytes>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the creation and removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Writes are positional, so one handle serves concurrent
/// readers and the single appender without a shared cursor.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is a position to append at, not a container size"
)]
pub trait FsFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`, failing if the file ends first.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Asks the system to start writing the `len` bytes at `offset` to the
    /// disk, and returns without waiting. A hint, not a promise: nothing is
    /// durable until [`sync_data`](Self::sync_data) returns, and a failure
    /// to write is that call's to report. The blob log gives it every few
    /// MiB it appends, so that the disk works while the next bytes are
    /// written instead of all at the batch's sync. The default does
    /// nothing.
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}
