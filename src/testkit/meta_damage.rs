//! Raw access to the metadata column families, for tests that damage the
//! metadata on purpose to show that `verify` finds it and `repair` rebuilds
//! it. RocksDB is reachable only through the engine, hence this door.
//!
//! Writes here bypass the committer and every rule of the store: they leave
//! exactly what a bug or a damaged database would. Families are named as in
//! `DESIGN.md` §4, and so are the key and value layouts a test must build.

use rocksdb::WriteBatch;

use crate::error::StorageError;
use crate::meta::Cf;
use crate::Store;

/// The column family called `name`.
///
/// # Panics
///
/// If no family has that name: a test that names one that does not exist is
/// wrong, not the store.
fn family(name: &str) -> Cf {
    Cf::ALL
        .into_iter()
        .find(|cf| cf.name() == name)
        .unwrap_or_else(|| panic!("no column family {name:?}"))
}

/// One raw entry of a column family: its key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Every entry of the column family `name`, in key order.
///
/// # Errors
///
/// [`StorageError::Database`] if the metadata database fails.
///
/// # Panics
///
/// If no family is called `name`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let store = keepsake::Store::open(dir.path()).unwrap();
/// store.user("ann").unwrap().ensure_album("A").unwrap();
/// let names = keepsake::testkit::meta_damage::entries(&store, "user_names").unwrap();
/// assert_eq!(names[0].0, b"ann");
/// ```
pub fn entries(store: &Store, name: &str) -> Result<Vec<Entry>, StorageError> {
    Ok(store.inner.meta.scan_all(family(name), &[])?)
}

/// Sets `key` in the column family `name` to `value`, or deletes it for
/// `None`, in one synced write outside any transaction.
///
/// # Errors
///
/// [`StorageError::Database`] if the write fails.
///
/// # Panics
///
/// If no family is called `name`.
///
/// ```
/// use keepsake::testkit::meta_damage::{entries, set};
/// let dir = tempfile::tempdir().unwrap();
/// let store = keepsake::Store::open(dir.path()).unwrap();
/// store.user("ann").unwrap().ensure_album("A").unwrap();
/// set(&store, "user_names", b"ann", None).unwrap();
/// assert!(entries(&store, "user_names").unwrap().is_empty());
/// ```
pub fn set(store: &Store, name: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
    let meta = &store.inner.meta;
    let mut batch = WriteBatch::default();
    match value {
        Some(v) => meta.batch_put(&mut batch, family(name), key, v),
        None => meta.batch_delete(&mut batch, family(name), key),
    }
    Ok(meta.write(batch)?)
}

/// The names of the column families the metadata of the store in
/// `store_dir` has on disk (the store must not be open). Formats differ in
/// their families: a test of a migration checks that retired ones are gone.
///
/// # Errors
///
/// RocksDB's message, if the metadata cannot be listed.
pub fn families_on_disk(store_dir: &std::path::Path) -> Result<Vec<String>, String> {
    rocksdb::DB::list_cf(&rocksdb::Options::default(), store_dir.join("meta")).map_err(|e| e.into_string())
}
