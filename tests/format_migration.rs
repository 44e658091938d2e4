//! A store written by an older build opens in this one, with everything it
//! held. `tests/fixtures/format-3` is a store that the format-3 build's CLI
//! wrote (its info logs and the older of its two `OPTIONS` files left out):
//!
//! ```text
//! src/a.jpg, src/copy-of-a.jpg   "tiny photo" (the same content)
//! src/big.jpg                    20,000 random bytes (in a segment)
//! src/sub/old.jpg                "to be trashed"
//! bob.jpg                        "bob only"
//!
//! keepsake backup --album Camera src                  (the user "default")
//! keepsake backup --album Trip src/big.jpg
//! keepsake --user bob backup --album Bob bob.jpg src/a.jpg
//! keepsake delete 4
//! ```

mod common;

use std::path::Path;

use keepsake::testkit::meta_damage::families_on_disk;
use keepsake::{Content, ContentHash, DedupMode, FileId, OpenError, Outcome, ReadOnlyStore, Store};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writable copy of the format-3 store.
fn format_3_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-3"),
        dir.path(),
    );
    dir
}

#[test]
fn a_read_only_open_refuses_format_3_until_a_writable_open_migrates_it() {
    let dir = format_3_store();
    assert!(matches!(
        ReadOnlyStore::open(dir.path()),
        Err(OpenError::UnsupportedFormat { found: 3, .. })
    ));
    drop(Store::open(dir.path()).unwrap());
    let store = ReadOnlyStore::open(dir.path()).unwrap().expect("the store exists");
    let albums = store.user("default").unwrap().albums().unwrap();
    assert_eq!(albums.iter().map(|a| a.files).sum::<u64>(), 4, "{albums:?}");
}

#[test]
fn a_format_3_store_keeps_every_file_album_and_trash_entry_and_loses_its_hash_index() {
    let dir = format_3_store();
    assert!(families_on_disk(dir.path()).unwrap().iter().any(|f| f == "by_hash"));
    let store = Store::open(dir.path()).unwrap();
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{report:#?}");
    assert_eq!((report.users, report.files, report.blobs), (2, 6, 4));

    let ann = store.user("default").unwrap();
    let names = |album: &str| {
        let id = ann.find_album(album).unwrap().unwrap().id;
        let mut n: Vec<String> = ann
            .album_files(id)
            .unwrap()
            .into_iter()
            .map(|f| f.name.to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names("Camera"), ["a.jpg", "big.jpg", "copy-of-a.jpg"]);
    assert_eq!(names("Trip"), ["big.jpg"]);
    let trash = ann.trash().unwrap();
    assert_eq!((trash.len(), trash[0].name.to_string()), (1, "old.jpg".to_string()));
    assert_eq!(ann.read(FileId(1)).unwrap(), &b"tiny photo"[..]);
    assert_eq!(ann.read(FileId(4)).unwrap(), &b"to be trashed"[..]);
    let bob = store.user("bob").unwrap();
    assert_eq!(bob.files().unwrap().len(), 2);

    // Both duplicate rules, the duplicate groups and the lookup by content
    // answer from the one index left, oldest first.
    let photo = ContentHash::of(b"tiny photo");
    let ids: Vec<FileId> = ann.find_by_hash(photo).unwrap().iter().map(|f| f.id).collect();
    assert_eq!(ids, [FileId(1), FileId(3)]);
    let groups = ann.duplicates().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].files.iter().map(|f| f.id).collect::<Vec<_>>(), ids);
    let camera = ann.find_album("Camera").unwrap().unwrap().id;
    for (name, mode) in [("new name.jpg", DedupMode::Hash), ("a.jpg", DedupMode::NameAndHash)] {
        let r = ann
            .upload(camera, name, Content::from(&b"tiny photo"[..]), mode)
            .unwrap();
        assert_eq!((r.outcome, r.file_id), (Outcome::Skipped, FileId(1)), "{name}");
    }
    let usage = ann.usage().unwrap();
    drop((ann, bob, store));

    assert!(!families_on_disk(dir.path()).unwrap().iter().any(|f| f == "by_hash"));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.user("default").unwrap().usage().unwrap(), usage);
    assert!(store.verify(false).unwrap().ok);
}

/// The CLI's `usage` answers from a read-only open when it can; on a store
/// of an older format it takes the writable open, which migrates it.
#[test]
fn keepsake_usage_on_a_format_3_store_migrates_it_and_answers() {
    let dir = format_3_store();
    let usage = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .arg("--store")
            .arg(dir.path())
            .args(["--json", "usage"])
            .env_remove("KEEPSAKE_STORE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = usage();
    assert!(
        first.contains("\"files\":3,") && first.contains("\"trashed_files\":1,"),
        "{first}"
    );
    assert!(!families_on_disk(dir.path()).unwrap().iter().any(|f| f == "by_hash"));
    assert_eq!(usage(), first, "the read-only open answers the same");
}
