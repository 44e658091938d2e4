//! Damage to segment files: every kind is found by a scrub, named by file,
//! never served as wrong bytes, and healed by a re-upload of the content.
//!
//! `KEEPSAKE_CORRUPTION_ROUNDS` (default 8) sets how many rounds of random
//! bit flips `random_bit_flips_are_all_found_and_nothing_else_is_lost` runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{data, knob, put, put_all, segment_files, BIG};
use keepsake::testkit::format::{scan_records, RECORD_HEADER_LEN, REC_HASH_AT, REC_LENGTH_AT, SEGMENT_HEADER_LEN};
use keepsake::{
    AlbumId, Content, ContentHash, DedupMode, FileId, HashedUpload, Outcome, Preflight, ReadError, Store, StoreOptions,
    UploadError,
};

/// Small segments, so that damage lands in sealed and active ones alike.
fn options() -> StoreOptions {
    StoreOptions::default().segment_size(64 << 10)
}

fn reopen(dir: &Path) -> Store {
    Store::open_with(dir, options()).expect("open store")
}

/// Where each blob's record is: its segment file and the record's offset.
fn records(dir: &Path) -> BTreeMap<ContentHash, (PathBuf, usize)> {
    let mut out = BTreeMap::new();
    for path in segment_files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let id: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let (headers, end) = scan_records(&bytes, id);
        assert!(end.error.is_none(), "pristine segment {id}: {:?}", end.error);
        for h in headers {
            // The first copy of a content is the live one; a later copy
            // (another user's upload of it) is garbage.
            out.entry(h.hash).or_insert((path.clone(), h.offset as usize));
        }
    }
    out
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// A store with `n` photos of `ann`, the first half also uploaded by `bob`,
/// and one inline file; returns ann's and bob's file ids per content.
struct Library {
    dir: tempfile::TempDir,
    contents: Vec<Vec<u8>>,
    ann: Vec<FileId>,
    bob: Vec<FileId>,
    album: AlbumId,
}

fn library(n: u64) -> Library {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(dir.path());
    let album = store.user("ann").unwrap().ensure_album("Camera").unwrap();
    let contents: Vec<Vec<u8>> = (0..n).map(|i| data(5000 + i, BIG + i as usize * 97)).collect();
    let ann = put_all(&store, "ann", album, &contents);
    let b = store.user("bob").unwrap().ensure_album("Shared").unwrap();
    let bob = put_all(&store, "bob", b, &contents[..n as usize / 2]);
    put(
        &store,
        "ann",
        album,
        "note.txt",
        b"small enough to be inline",
        DedupMode::Hash,
    );
    Library {
        dir,
        contents,
        ann,
        bob,
        album,
    }
}

/// Checks that exactly the contents in `damaged` are refused with an
/// integrity error, for every user, and everything else reads back exactly;
/// then that a scrub names exactly the damaged files.
#[track_caller]
fn assert_exactly_damaged(store: &Store, lib: &Library, damaged: &BTreeSet<usize>) {
    for (i, content) in lib.contents.iter().enumerate() {
        let holders = [("ann", lib.ann.get(i)), ("bob", lib.bob.get(i))];
        for (user, id) in holders.into_iter().filter_map(|(u, id)| Some((u, *id?))) {
            match store.user(user).unwrap().read(id) {
                Ok(bytes) => {
                    assert!(!damaged.contains(&i), "damaged content {i} was served to {user}");
                    assert_eq!(bytes, content[..], "content {i} read back wrong for {user}");
                }
                Err(ReadError::Integrity { hash, .. }) => {
                    assert!(damaged.contains(&i), "intact content {i} refused for {user}");
                    assert_eq!(hash, ContentHash::of(content));
                }
                Err(e) => panic!("content {i} for {user}: expected bytes or an integrity error, got {e}"),
            }
        }
    }
    let report = store.verify(true).unwrap();
    let mut named = BTreeSet::new();
    for p in &report.problems {
        assert!(
            p.kind == "damaged-blob",
            "only damage is reported, got {}: {}",
            p.kind,
            p.detail
        );
        for f in &p.files {
            named.insert((f.user.clone(), f.file_id));
        }
    }
    let mut want = BTreeSet::new();
    for &i in damaged {
        want.insert(("ann".to_string(), lib.ann[i]));
        if let Some(&b) = lib.bob.get(i) {
            want.insert(("bob".to_string(), b));
        }
    }
    assert_eq!(named, want, "the scrub names exactly the damaged files");
    assert_eq!(report.ok, damaged.is_empty());
}

#[test]
fn every_kind_of_record_damage_is_found_and_only_the_damaged_files_are_refused() {
    let lib = library(12);
    let at = records(lib.dir.path());
    let rec = |i: usize| at[&ContentHash::of(&lib.contents[i])].clone();
    // 0: a flipped bit in the data.
    let (p, off) = rec(0);
    edit(&p, |b| b[off + RECORD_HEADER_LEN + 17] ^= 0x04);
    // 1: a flipped bit in the header's hash.
    let (p, off) = rec(1);
    edit(&p, |b| b[off + REC_HASH_AT + 3] ^= 0x80);
    // 2: a flipped bit in the header's length.
    let (p, off) = rec(2);
    edit(&p, |b| b[off + REC_LENGTH_AT] ^= 0x01);
    // 3: a well-formed record whose data is another content of the same
    // length: only hashing the data can tell.
    let (p, off) = rec(3);
    let impostor = data(9999, lib.contents[3].len());
    edit(&p, |b| {
        b[off + RECORD_HEADER_LEN..off + RECORD_HEADER_LEN + impostor.len()].copy_from_slice(&impostor)
    });
    // 4 and 5: a zeroed range across the end of one record and the start of
    // the next in the same segment.
    let (p4, _) = rec(4);
    let (p5, off5) = rec(5);
    assert_eq!(p4, p5, "consecutive uploads share a segment");
    edit(&p4, |b| b[off5 - 100..off5 + 100].fill(0));

    let store = reopen(lib.dir.path());
    assert_exactly_damaged(&store, &lib, &BTreeSet::from([0, 1, 2, 3, 4, 5]));
}

#[test]
fn damaged_segment_headers_are_reported_and_their_intact_records_still_served() {
    let lib = library(12);
    let segments = segment_files(lib.dir.path());
    assert!(segments.len() >= 3, "the library spans several segments");
    edit(&segments[0], |b| b[3] ^= 0xFF);
    // The active segment too: reopening must not append behind a header it
    // cannot trust.
    let last = segments.last().unwrap();
    edit(last, |b| b[SEGMENT_HEADER_LEN - 1] ^= 0x10);

    let store = reopen(lib.dir.path());
    let fresh = data(7777, BIG);
    let r = put(&store, "ann", lib.album, "after.jpg", &fresh, DedupMode::Hash);
    assert_eq!(r.bytes_written, BIG as u64);
    assert_eq!(
        segment_files(lib.dir.path()).len(),
        segments.len() + 1,
        "a new segment took it"
    );
    assert_eq!(store.user("ann").unwrap().read(r.file_id).unwrap(), fresh);
    // Each record names its segment and offset and its data is hashed, so
    // nothing needs the segment header to be served correctly.
    for (i, content) in lib.contents.iter().enumerate() {
        assert_eq!(store.user("ann").unwrap().read(lib.ann[i]).unwrap(), content[..]);
    }
    let report = store.verify(true).unwrap();
    let kinds: Vec<&str> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["damaged-segment", "damaged-segment"], "{:#?}", report.problems);
    assert!(store.verify(false).unwrap().ok, "the metadata itself is consistent");
}

#[test]
fn random_bit_flips_are_all_found_and_nothing_else_is_lost() {
    let rounds = knob("KEEPSAKE_CORRUPTION_ROUNDS", 8);
    let pristine = library(16);
    let at = records(pristine.dir.path());
    let mut flips = 0;
    for round in 0..rounds {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(pristine.dir.path(), copy.path());
        let mut rng = data(round, 4096).into_iter();
        let mut next = || u64::from(rng.next().unwrap()) << 8 | u64::from(rng.next().unwrap());
        let mut damaged = BTreeSet::new();
        for _ in 0..4 {
            let i = (next() % pristine.contents.len() as u64) as usize;
            let (path, off) = &at[&ContentHash::of(&pristine.contents[i])];
            let record_len = RECORD_HEADER_LEN + pristine.contents[i].len();
            let byte = off + (next() as usize * 131 + next() as usize) % record_len;
            let bit = 1u8 << (next() % 8);
            edit(&copy.path().join("segments").join(path.file_name().unwrap()), |b| {
                b[byte] ^= bit
            });
            damaged.insert(i);
            flips += 1;
        }
        let lib = Library {
            dir: copy,
            contents: pristine.contents.clone(),
            ann: pristine.ann.clone(),
            bob: pristine.bob.clone(),
            album: pristine.album,
        };
        let store = reopen(lib.dir.path());
        assert_exactly_damaged(&store, &lib, &damaged);
    }
    eprintln!("{rounds} rounds, {flips} bit flips, all found");
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else if entry.file_name() != "keepsake.lock" {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Damages content 0 (held by ann and bob) and opens the store.
fn damaged_library() -> (Library, Store) {
    let lib = library(6);
    let (path, off) = records(lib.dir.path())[&ContentHash::of(&lib.contents[0])].clone();
    edit(&path, |b| b[off + RECORD_HEADER_LEN + 1000] ^= 0x20);
    let store = reopen(lib.dir.path());
    (lib, store)
}

#[test]
fn reupload_into_the_same_album_heals_a_blob_a_read_found_damaged() {
    let (lib, store) = damaged_library();
    let content = &lib.contents[0];
    let hash = ContentHash::of(content);
    assert!(matches!(
        store.user("ann").unwrap().read(lib.ann[0]),
        Err(ReadError::Integrity { .. })
    ));
    // The store now asks for the bytes instead of deduplicating.
    assert_eq!(
        store
            .user("ann")
            .unwrap()
            .check(&HashedUpload {
                album: lib.album,
                name: "0.jpg".into(),
                hash,
                mode: DedupMode::Hash
            })
            .unwrap(),
        Preflight::Upload
    );
    assert!(matches!(
        store.user("ann").unwrap().link(&HashedUpload {
            album: lib.album,
            name: "0.jpg".into(),
            hash,
            mode: DedupMode::Hash
        }),
        Err(UploadError::ContentRequired)
    ));
    let before = store.user("ann").unwrap().usage().unwrap();

    let r = put(&store, "ann", lib.album, "0.jpg", content, DedupMode::Hash);
    assert_eq!((r.outcome, r.file_id), (Outcome::Skipped, lib.ann[0]));
    assert_eq!((r.bytes_written, r.charged_bytes), (content.len() as u64, 0));
    assert_eq!(
        store.user("ann").unwrap().usage().unwrap(),
        before,
        "healing charges nothing"
    );
    // Whole again for both users that refer to it, and no longer special.
    assert_eq!(store.user("ann").unwrap().read(lib.ann[0]).unwrap(), content[..]);
    assert_eq!(store.user("bob").unwrap().read(lib.bob[0]).unwrap(), content[..]);
    assert_eq!(
        store
            .user("ann")
            .unwrap()
            .check(&HashedUpload {
                album: lib.album,
                name: "0.jpg".into(),
                hash,
                mode: DedupMode::Hash
            })
            .unwrap(),
        Preflight::Skip(lib.ann[0])
    );
    assert!(store.verify(true).unwrap().ok);
    // A second re-upload writes nothing.
    let again = put(&store, "ann", lib.album, "0.jpg", content, DedupMode::Hash);
    assert_eq!(again.bytes_written, 0);
    drop(store);
    let store = reopen(lib.dir.path());
    assert_eq!(store.user("bob").unwrap().read(lib.bob[0]).unwrap(), content[..]);
    // Compaction reclaims the damaged copy's segment space eventually; until
    // then it keeps it, and the store stays consistent either way.
    store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn damage_found_by_a_scrub_is_healed_by_another_users_upload_from_a_file() {
    let (lib, store) = damaged_library();
    let content = &lib.contents[0];
    let report = store.verify(true).unwrap();
    assert!(!report.ok);
    drop(store);
    // The damage record is durable: it survives a reopen.
    let store = reopen(lib.dir.path());
    let carol = store.user("carol").unwrap().ensure_album("Inbox").unwrap();
    let src = lib.dir.path().join("from-disk.jpg");
    std::fs::write(&src, content).unwrap();
    let r = store
        .user("carol")
        .unwrap()
        .upload(carol, "x.jpg", Content::Path(src), DedupMode::Hash)
        .unwrap();
    assert_eq!(r.outcome, Outcome::Stored);
    assert_eq!(r.bytes_written, content.len() as u64, "the upload wrote the cure");
    assert_eq!(
        r.charged_bytes,
        content.len() as u64,
        "carol is charged as any new holder"
    );
    for (user, id) in [("ann", lib.ann[0]), ("bob", lib.bob[0]), ("carol", r.file_id)] {
        assert_eq!(store.user(user).unwrap().read(id).unwrap(), content[..], "{user}");
    }
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_damaged_blob_that_loses_its_last_reference_is_collected_with_its_damage_record() {
    let (lib, store) = damaged_library();
    assert!(!store.verify(true).unwrap().ok);
    store.user("ann").unwrap().delete(lib.ann[0]).unwrap();
    store.user("bob").unwrap().delete(lib.bob[0]).unwrap();
    store.user("ann").unwrap().empty_trash().unwrap();
    store.user("bob").unwrap().empty_trash().unwrap();
    let gc = store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(gc.blobs_removed >= 1);
    // No stray damage record is left behind, and a later upload of the same
    // content is simply new.
    assert!(store.verify(true).unwrap().ok);
    let r = put(&store, "ann", lib.album, "again.jpg", &lib.contents[0], DedupMode::Hash);
    assert_eq!(
        (r.outcome, r.bytes_written),
        (Outcome::Stored, lib.contents[0].len() as u64)
    );
    assert_eq!(store.user("ann").unwrap().read(r.file_id).unwrap(), lib.contents[0][..]);
}
