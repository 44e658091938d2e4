//! Metadata in RocksDB: one column family per kind of record.
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | `format`, `next_user` | u64 |
//! | `user_names` | user name | user id |
//! | `users` | user | [`UserRecord`](records::UserRecord) |
//! | `album_names` | user, name | album id |
//! | `albums` | user, album | `AlbumRecord` |
//! | `files` | user, file | `FileRecord` |
//! | `members` | user, album, file | empty |
//! | `by_name` | user, hash, name, file | empty (live files): a content's files, and within it a name's |
//! | `trash` | user, trashed at, file | empty |
//! | `blobs` | hash | `BlobRecord` |
//! | `user_blobs` | user, hash | `UserBlobRecord` |
//! | `gc` | hash | time the blob's last reference went |
//! | `segments` | segment id | `SegmentRecord` |
//! | `damaged` | hash | `DamageRecord`: a copy that failed its hash |
//! | `uploads` | user, upload id | `UploadRecord`: a resumable upload session |
//! | `sources` | user, album, source path | `SourceRecord`: what a backup saw of a file on disk |
//! | `outboards` | hash | a large blob's BLAKE3 outboard (`blob::outboard`), raw |
//!
//! All changes go through [`txn::Txn`] and are committed as one synced
//! `WriteBatch`: a logical operation is all or nothing.

pub(crate) mod keys;
mod migrate;
pub(crate) mod records;
pub(crate) mod txn;

use std::ops::ControlFlow;
use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions, DB,
};

use crate::error::{Fault, OpenError, Result};
use records::Record;

/// The column families. The discriminant order is also the order of writes
/// within a batch, which does not matter for atomicity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Cf {
    Meta,
    UserNames,
    Users,
    AlbumNames,
    Albums,
    Files,
    Members,
    ByName,
    Trash,
    Blobs,
    UserBlobs,
    Gc,
    Segments,
    Damaged,
    Uploads,
    Sources,
    Outboards,
}

impl Cf {
    pub(crate) const ALL: [Cf; 17] = [
        Cf::Meta,
        Cf::UserNames,
        Cf::Users,
        Cf::AlbumNames,
        Cf::Albums,
        Cf::Files,
        Cf::Members,
        Cf::ByName,
        Cf::Trash,
        Cf::Blobs,
        Cf::UserBlobs,
        Cf::Gc,
        Cf::Segments,
        Cf::Damaged,
        Cf::Uploads,
        Cf::Sources,
        Cf::Outboards,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::UserNames => "user_names",
            Cf::Users => "users",
            Cf::AlbumNames => "album_names",
            Cf::Albums => "albums",
            Cf::Files => "files",
            Cf::Members => "members",
            Cf::ByName => "by_name",
            Cf::Trash => "trash",
            Cf::Blobs => "blobs",
            Cf::UserBlobs => "user_blobs",
            Cf::Gc => "gc",
            Cf::Segments => "segments",
            Cf::Damaged => "damaged",
            Cf::Uploads => "uploads",
            Cf::Sources => "sources",
            Cf::Outboards => "outboards",
        }
    }
}

/// The metadata format version this build writes and reads. Older ones
/// are migrated at open ([`migrate`]).
pub(crate) const FORMAT_VERSION: u64 = 7;

/// Column families of older formats, dropped once a writable open has
/// migrated the store: format 3's `by_hash` index said nothing that the
/// `by_name` keys, which begin with the same user and hash, do not.
const RETIRED: [&str; 1] = ["by_hash"];

/// Column families added since format 4, which an older store lacks
/// until a writable open creates them.
const ADDED: [Cf; 1] = [Cf::Outboards];

/// A raw iterator over one column family of the metadata.
pub(crate) type DBRawIterator<'a> = rocksdb::DBRawIteratorWithThreadMode<'a, DB>;

pub(crate) struct Meta {
    db: DB,
    access: Access,
}

impl Drop for Meta {
    /// Flushes the memtables of a store opened to write as it closes. Every
    /// commit is already durable in the write-ahead log; what the flush
    /// saves is the next open's replay of that log into memtables, which
    /// after a backup of many small files is most of a re-run's time (a
    /// re-run over 50,000 files spent it in memtable inserts and WAL
    /// checksums). Best effort: a failed flush leaves the log to replay.
    fn drop(&mut self) {
        if self.access == Access::Write {
            let cfs: Vec<_> = Cf::ALL.iter().filter_map(|cf| self.db.cf_handle(cf.name())).collect();
            let _ = self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default());
        }
    }
}

/// The block cache a store gets unless its options say otherwise (see
/// `StoreOptions::metadata_cache`): index, filter and data blocks, shared
/// by all column families.
pub(crate) const DEFAULT_CACHE: usize = 256 << 20;

/// RocksDB info logs (`meta/LOG*`) kept across opens: enough to look back
/// over a few restarts when something went wrong.
const KEEP_INFO_LOGS: usize = 5;

fn db_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    // Whether a blob exists is a point lookup of a key that usually does not
    // (new content): bloom filters answer most of them without a block read.
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(cache);
    table.set_cache_index_and_filter_blocks(true);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    // Blocks are compressed as they are written to table files (by flushes
    // and compactions, in the background), and kept uncompressed in the
    // block cache, so a cached read pays nothing. LZ4 is cheap enough for
    // data that will be compacted again; the last level, where most of it
    // ends up, gets zstd.
    o.set_compression_type(DBCompressionType::Lz4);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    o
}

/// How the metadata is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Created if missing; writes allowed.
    Write,
    /// An existing store, read only: RocksDB then replays its log in memory
    /// and writes nothing (no new `OPTIONS` file, manifest or log), which
    /// is most of what an open costs (see `DESIGN.md` §4).
    ReadOnly,
}

impl Meta {
    /// Opens (creating if missing) the metadata at `path`, keeping up to
    /// `cache` bytes of its blocks in memory.
    pub(crate) fn open(path: &Path, cache: usize) -> Result<Meta, OpenError> {
        Meta::open_as(path, Access::Write, cache)
    }

    /// Opens existing metadata for reading only (see [`Access::ReadOnly`]).
    pub(crate) fn open_read_only(path: &Path, cache: usize) -> Result<Meta, OpenError> {
        Meta::open_as(path, Access::ReadOnly, cache)
    }

    fn open_as(path: &Path, access: Access, cache: usize) -> Result<Meta, OpenError> {
        let cache = Cache::new_lru_cache(cache);
        let mut opts = db_options(&cache);
        // RocksDB opens each column family's table files with this many
        // threads, started per column family: its default of 16 costs 16 x 16
        // thread creations, most of a CLI command's time, on 2 cores.
        opts.set_max_file_opening_threads(1);
        // Info level writes every option of every column family to the log
        // at each open (a CLI opens once per command); warnings and errors
        // are what the log is kept for, and the OPTIONS file has the rest.
        opts.set_log_level(rocksdb::LogLevel::Warn);
        // Durability comes from syncing the WAL on every commit; the WAL must
        // never be skipped or recycled unsafely.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        // Each open starts a new info log; RocksDB would keep a thousand, and
        // a CLI opens the store once per command.
        opts.set_keep_log_file_num(KEEP_INFO_LOGS);
        if access == Access::Write {
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            opts.increase_parallelism(2);
        }
        let open = |retired: &[&str], missing: &[Cf]| {
            let cfs = Cf::ALL
                .iter()
                .filter(|cf| !missing.contains(cf))
                .map(|cf| cf.name())
                .chain(retired.iter().copied())
                .map(|name| ColumnFamilyDescriptor::new(name, db_options(&cache)));
            match access {
                Access::Write => DB::open_cf_descriptors(&opts, path, cfs),
                Access::ReadOnly => DB::open_cf_descriptors_read_only(&opts, path, cfs, false),
            }
        };
        // A writable open must name every family the store has. A store of
        // an older format (or one whose migration stopped before the drop)
        // still has a retired one, which RocksDB names in its refusal; the
        // open is then made again with it. (Listing the families first
        // would cost every open a read of the manifest, and RocksDB's C
        // listing leaks its strings.)
        let (db, retired) = match open(&[], &[]) {
            Ok(db) => (db, Vec::new()),
            Err(e) if access == Access::Write && e.as_ref().contains("Column families not opened") => {
                let retired: Vec<&str> = RETIRED.into_iter().filter(|r| e.as_ref().contains(r)).collect();
                let db = open(&retired, &[]).map_err(|e| OpenError::Database(e.into_string()))?;
                (db, retired)
            }
            // A store of an older format lacks the families added since,
            // which a read-only open cannot create: it is opened without
            // them to read its format, which `check_format` then refuses
            // as older (a writable open migrates it).
            Err(e) if access == Access::ReadOnly && e.as_ref().contains("Column family not found") => {
                let db = open(&[], &ADDED).map_err(|e| OpenError::Database(e.into_string()))?;
                let meta = Meta { db, access };
                meta.check_format(path, access)?;
                return Err(OpenError::Corrupt(format!(
                    "the metadata is format {FORMAT_VERSION} but lacks a column family: {e}"
                )));
            }
            Err(e) => return Err(OpenError::Database(e.into_string())),
        };
        let mut meta = Meta { db, access };
        meta.check_format(path, access)?;
        // After the migration's own commit: a crash between the two finds
        // the family again at the next open, and drops it then.
        for name in retired {
            meta.db
                .drop_cf(name)
                .map_err(|e| OpenError::Database(e.into_string()))?;
        }
        Ok(meta)
    }

    /// Refuses a format this build does not know, and migrates an older
    /// one it does. New metadata gets this build's version, unless it is
    /// opened read-only: then it is refused, as is an older format (a
    /// writable open migrates it first).
    fn check_format(&self, path: &Path, access: Access) -> Result<(), OpenError> {
        let corrupt = |e: Fault| OpenError::Corrupt(e.to_string());
        match self.get::<u64>(Cf::Meta, keys::FORMAT).map_err(corrupt)? {
            Some(FORMAT_VERSION) => Ok(()),
            // One step at a time, each marking the next format in its own
            // batch: a crash between two resumes at the next open.
            Some(found @ 1..FORMAT_VERSION) if access == Access::Write => {
                (found..FORMAT_VERSION).try_for_each(|from| match from {
                    1 => migrate::from_v1(self),
                    2 => migrate::from_v2(self),
                    3 => migrate::from_v3(self),
                    4 => migrate::from_v4(self),
                    5 => migrate::from_v5(self),
                    6 => migrate::from_v6(self),
                    _ => Err(OpenError::Corrupt(format!("no migration from format {from}"))),
                })
            }
            Some(found) => Err(OpenError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: found as u32,
                supported: FORMAT_VERSION as u32,
            }),
            None if access == Access::ReadOnly => Err(OpenError::Corrupt("the metadata has no format version".into())),
            None => {
                let mut b = WriteBatch::default();
                b.put_cf(self.cf(Cf::Meta), keys::FORMAT, FORMAT_VERSION.encode());
                self.write(b).map_err(corrupt)
            }
        }
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("every column family is opened")
    }

    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    pub(crate) fn get<R: Record>(&self, cf: Cf, key: &[u8]) -> Result<Option<R>> {
        self.get_raw(cf, key)?.map(|v| decode(&v)).transpose()
    }

    /// The records at `keys`, in their order, read in one batched lookup
    /// ([`multi_get_raw`](Self::multi_get_raw)).
    pub(crate) fn multi_get<R: Record>(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<R>>> {
        decode_all(self.multi_get_raw(cf, keys)?)
    }

    /// The values at `keys`, in their order, read in one batched lookup:
    /// RocksDB reads each block the keys share once, and skips a table
    /// file by its bloom filter, where as many point reads would each walk
    /// the index, the filter and the block again (most of a re-run's time,
    /// before). The keys are sorted here, with plain byte comparisons,
    /// rather than by RocksDB through its comparator.
    pub(crate) fn multi_get_raw(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let order = sorted_order(keys);
        let sorted: Vec<&[u8]> = order.iter().map(|&i| keys[i].as_slice()).collect();
        let mut out: Vec<Option<Vec<u8>>> = keys.iter().map(|_| None).collect();
        for (i, v) in order
            .into_iter()
            .zip(self.db.batched_multi_get_cf(self.cf(cf), &sorted, true))
        {
            out[i] = v?.map(|v| v.to_vec());
        }
        Ok(out)
    }

    /// The records at `keys`, in their order, for keys that lie close
    /// together ([`get_near_raw`](Self::get_near_raw)).
    pub(crate) fn get_near<R: Record>(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<R>>> {
        decode_all(self.get_near_raw(cf, keys)?)
    }

    /// [`multi_get_raw`](Self::multi_get_raw) for keys that lie close
    /// together (a backup's source records of one folder tree, files in the
    /// order they were stored): one iterator steps from each key to the
    /// next, and seeks only over a gap, where a batched lookup would search
    /// the index again for every key.
    pub(crate) fn get_near_raw(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        /// Steps taken towards a key before a seek is cheaper.
        const STEPS: usize = 8;
        let order = sorted_order(keys);
        let mut out: Vec<Option<Vec<u8>>> = keys.iter().map(|_| None).collect();
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        if let Some(&first) = order.first() {
            it.seek(&keys[first]);
        }
        for i in order {
            let key = keys[i].as_slice();
            let mut steps = 0;
            while it.key().is_some_and(|k| k < key) {
                if steps == STEPS {
                    it.seek(key);
                    break;
                }
                it.next();
                steps += 1;
            }
            if it.key() == Some(key) {
                out[i] = it.value().map(<[u8]>::to_vec);
            }
        }
        it.status()?;
        Ok(out)
    }

    /// Whether `cf` holds no entry at all.
    pub(crate) fn is_empty(&self, cf: Cf) -> Result<bool> {
        let mut empty = true;
        self.scan(cf, &[], |_, _| {
            empty = false;
            Ok(ControlFlow::Break(()))
        })?;
        Ok(empty)
    }

    /// Calls `f` with each entry whose key starts with `prefix`, in key order,
    /// until it breaks.
    pub(crate) fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scan_range(None, cf, prefix, prefix, f)
    }

    /// [`scan`](Self::scan) from `start` (a key at or after `prefix`) on.
    pub(crate) fn scan_from(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scan_range(None, cf, prefix, start, f)
    }

    fn scan_range(
        &self,
        snapshot: Option<&rocksdb::Snapshot<'_>>,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut ro = ReadOptions::default();
        if let Some(s) = snapshot {
            ro.set_snapshot(s);
        }
        // Scans of a whole family (GC), and every scan of a snapshot (verify
        // and stats, which read the whole store), should not evict the hot
        // set, nor grow the cache, which is memory of the process.
        ro.fill_cache(snapshot.is_none() && !prefix.is_empty());
        let iter = self
            .db
            .iterator_cf_opt(self.cf(cf), ro, IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || f(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Collects the entries under `prefix`.
    pub(crate) fn scan_all(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan(cf, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// A consistent point-in-time view, for checks that read everything.
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            meta: self,
            snap: self.db.snapshot(),
        }
    }

    /// Copies the database as it is now into `dest` (which must not exist).
    /// Every commit is synced, so this is the metadata a power cut at this
    /// moment would leave: power-loss tests pair it with the blob files'
    /// durable state.
    #[cfg(feature = "testkit")]
    pub(crate) fn checkpoint(&self, dest: &Path) -> Result<()> {
        Ok(rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dest)?)
    }

    /// Writes a batch and syncs the write-ahead log: when this returns, the
    /// whole batch is durable, and a crash leaves all of it or none.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// RocksDB's estimate of how many keys `cf` holds: entries of the table
    /// files and memtables, so an overwritten or deleted key counts until
    /// compaction drops it; 0 if RocksDB cannot say.
    pub(crate) fn estimated_keys(&self, cf: Cf) -> u64 {
        self.db
            .property_int_value_cf(self.cf(cf), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// An iterator over the committed entries of `cf`, for a caller that
    /// seeks it many times; `fill_cache` as for [`scan`](Self::scan), false
    /// for a pass over a whole family.
    pub(crate) fn raw_iterator(&self, cf: Cf, fill_cache: bool) -> DBRawIterator<'_> {
        let mut ro = ReadOptions::default();
        ro.fill_cache(fill_cache);
        self.db.raw_iterator_cf_opt(self.cf(cf), ro)
    }

    pub(crate) fn batch_put(&self, b: &mut WriteBatch, cf: Cf, key: &[u8], value: &[u8]) {
        b.put_cf(self.cf(cf), key, value);
    }

    pub(crate) fn batch_delete(&self, b: &mut WriteBatch, cf: Cf, key: &[u8]) {
        b.delete_cf(self.cf(cf), key);
    }
}

fn decode_all<R: Record>(values: Vec<Option<Vec<u8>>>) -> Result<Vec<Option<R>>> {
    values.into_iter().map(|v| v.map(|v| decode(&v)).transpose()).collect()
}

/// The indexes of `keys` in the keys' byte order.
fn sorted_order(keys: &[Vec<u8>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
    order
}

pub(crate) fn decode<R: Record>(v: &[u8]) -> Result<R> {
    R::decode(v).map_err(|e| Fault::Corrupt(e.to_string()))
}

/// Reads of the metadata as it was at one instant.
pub(crate) struct Snapshot<'a> {
    meta: &'a Meta,
    snap: rocksdb::Snapshot<'a>,
}

impl Snapshot<'_> {
    /// Calls `f` with every entry of `cf`, decoding nothing.
    pub(crate) fn for_each(&self, cf: Cf, f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        self.for_each_under(cf, &[], f)
    }

    /// Calls `f` with every entry of `cf` under `prefix`, decoding nothing.
    pub(crate) fn for_each_under(
        &self,
        cf: Cf,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.scan_from(cf, prefix, prefix, |k, v| {
            f(k, v)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// The metadata the snapshot was taken of.
    pub(crate) fn meta(&self) -> &Meta {
        self.meta
    }

    /// Calls `f` with each entry of `cf` under `prefix`, from key `start`
    /// on, until `f` breaks.
    pub(crate) fn scan_from(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.meta.scan_range(Some(&self.snap), cf, prefix, start, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both batched reads answer, for keys in any order, with repeats, gaps
    /// longer than the stepping limit and keys past the last, what point
    /// reads answer.
    #[test]
    fn batched_reads_answer_what_point_reads_answer() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path(), DEFAULT_CACHE).unwrap();
        let mut b = WriteBatch::default();
        let key = |i: u64| keys::u64_key(i);
        for i in (0..300).filter(|i| i % 3 == 0 || (100..140).contains(i)) {
            meta.batch_put(&mut b, Cf::Files, &key(i), &i.to_le_bytes());
        }
        meta.write(b).unwrap();
        let asked: Vec<Vec<u8>> = [5u64, 0, 299, 120, 3, 3, 400, 150, 1, 139, 297, 9, 60]
            .iter()
            .chain(&(0..320).rev().step_by(7).collect::<Vec<_>>())
            .map(|&i| key(i))
            .collect();
        let point: Vec<_> = asked.iter().map(|k| meta.get_raw(Cf::Files, k).unwrap()).collect();
        assert!(point.iter().any(Option::is_some) && point.iter().any(Option::is_none));
        assert_eq!(meta.multi_get_raw(Cf::Files, &asked).unwrap(), point);
        assert_eq!(meta.get_near_raw(Cf::Files, &asked).unwrap(), point);
        assert_eq!(
            meta.get_near_raw(Cf::Files, &[]).unwrap(),
            Vec::<Option<Vec<u8>>>::new()
        );
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path(), DEFAULT_CACHE).unwrap();
        let mut b = WriteBatch::default();
        meta.batch_put(&mut b, Cf::Meta, keys::FORMAT, &(FORMAT_VERSION + 1).encode());
        meta.write(b).unwrap();
        drop(meta);
        match Meta::open(dir.path(), DEFAULT_CACHE) {
            Err(OpenError::UnsupportedFormat { found, supported, .. }) => {
                assert_eq!((found as u64, supported as u64), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            other => panic!("expected UnsupportedFormat, got {:?}", other.map(|_| ())),
        }
    }
}
