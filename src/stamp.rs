//! A file's stamp: what its metadata says about which file it is and which
//! version of it, so that a backup can tell an unchanged file from one that
//! was replaced or written.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// What a file's metadata says about its identity and version: the device
/// and inode name the file, its size and its modification and change times
/// (nanoseconds since the epoch, two's complement: only ever compared for
/// equality) the version. A write moves the size or the modification time;
/// a write followed by restoring the modification time (a tag editor's
/// "preserve file date", `touch -d`) still moves the change time, which no
/// unprivileged program can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s.wrapping_mul(1_000_000_000).wrapping_add(n) as u64;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}
