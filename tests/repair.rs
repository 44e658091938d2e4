//! `repair` rebuilds every derived record from the file records. Each test
//! breaks one kind of record on purpose (through `testkit::meta_damage`, or
//! in a segment file), and shows that `verify` reports it, `repair` reports
//! the change, and the store then verifies with a scrub, reads back every
//! file's exact bytes, and needs no further repair.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use common::{data, fresh_store, put, segment_files, BIG};
use keepsake::testkit::format::{scan_records, RECORD_HEADER_LEN};
use keepsake::testkit::meta_damage::{entries, set};
use keepsake::{
    AlbumId, ContentHash, DedupMode, FileId, HashedUpload, Outcome, Preflight, RepairReport, Store, StoreOptions,
    VerifyReport,
};

/// Offsets of u64 fields in version-1 values (`DESIGN.md` §4): a version
/// byte, then the fields in order.
const BLOB_REFS_AT: usize = 1 + 8;
const SEGMENT_LIVE_AT: usize = 1 + 8;
const USER_NEXT_FILE_AT: usize = 1 + 8;
/// After next_album, next_file and a `limit` of none (one tag byte).
const USER_UNIQUE_AT: usize = 1 + 8 + 8 + 1;

/// A store with shared, inline, trashed and unreferenced content, in small
/// segments so that the first is sealed.
struct Library {
    dir: tempfile::TempDir,
    store: Store,
    ann: u64,
    trip: AlbumId,
    /// Every live file: owner, id, bytes.
    live: Vec<(&'static str, FileId, Vec<u8>)>,
    /// Content of ann's that only ann holds, in two albums.
    own: Vec<u8>,
    /// Content of ann's that bob holds too.
    shared: Vec<u8>,
    /// Stored inline.
    tiny: Vec<u8>,
    /// Content no file refers to any more: a GC candidate, in the first
    /// (sealed) segment.
    unreferenced: Vec<u8>,
}

fn options() -> StoreOptions {
    StoreOptions::default().segment_size(64 << 10).compact_threshold(0.1)
}

fn library() -> Library {
    let (dir, store) = fresh_store(options());
    let camera = store.user("ann").unwrap().ensure_album("Camera").unwrap();
    let trip = store.user("ann").unwrap().ensure_album("Trip").unwrap();
    let unreferenced = data(100, BIG);
    let gone = put(&store, "ann", camera, "gone.jpg", &unreferenced, DedupMode::Hash).file_id;
    store.user("ann").unwrap().delete(gone).unwrap();
    store.user("ann").unwrap().empty_trash().unwrap();

    let (shared, own, tiny) = (data(1, BIG), data(2, BIG), data(3, 100));
    let mut live = Vec::new();
    for (name, bytes) in [("a.jpg", &shared), ("b.jpg", &own), ("tiny.txt", &tiny)] {
        live.push((
            "ann",
            put(&store, "ann", camera, name, bytes, DedupMode::Hash).file_id,
            bytes.clone(),
        ));
    }
    store.user("ann").unwrap().add_to_album(live[1].1, trip).unwrap();
    for seed in 4..10 {
        let bytes = data(seed, BIG);
        let id = put(&store, "ann", trip, &format!("{seed}.jpg"), &bytes, DedupMode::Hash).file_id;
        live.push(("ann", id, bytes));
    }
    let trashed = put(&store, "ann", camera, "x.jpg", &data(10, BIG), DedupMode::Hash).file_id;
    store.user("ann").unwrap().delete(trashed).unwrap();
    let bobs = store.user("bob").unwrap().ensure_album("Bob").unwrap();
    for (name, bytes) in [("mine.jpg", shared.clone()), ("own.jpg", data(11, BIG))] {
        live.push((
            "bob",
            put(&store, "bob", bobs, name, &bytes, DedupMode::Hash).file_id,
            bytes,
        ));
    }
    assert!(segment_files(dir.path()).len() >= 2, "the first segment is sealed");
    common::assert_verified(&store);
    let ann = user_id(&store, "ann");
    Library {
        dir,
        store,
        ann,
        trip,
        live,
        own,
        shared,
        tiny,
        unreferenced,
    }
}

fn user_id(store: &Store, name: &str) -> u64 {
    let (_, v) = entries(store, "user_names")
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name.as_bytes())
        .unwrap();
    u64::from_le_bytes(v[1..9].try_into().unwrap())
}

fn value(store: &Store, family: &str, key: &[u8]) -> Vec<u8> {
    entries(store, family)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{family} has no such key"))
        .1
}

/// Overwrites the u64 at `at` in the value of `key`.
fn patch(store: &Store, family: &str, key: &[u8], at: usize, new: u64) {
    let mut v = value(store, family, key);
    v[at..at + 8].copy_from_slice(&new.to_le_bytes());
    set(store, family, key, Some(&v)).unwrap();
}

fn hash_key(content: &[u8]) -> Vec<u8> {
    ContentHash::of(content).as_bytes().to_vec()
}

fn u64_value(n: u64) -> Vec<u8> {
    [&[1u8][..], &n.to_le_bytes()].concat()
}

fn problems(kinds: &[keepsake::Problem]) -> BTreeSet<(&'static str, String)> {
    kinds.iter().map(|p| (p.kind, p.detail.clone())).collect()
}

/// The store verifies with a scrub, every live file reads back its bytes,
/// and another repair finds nothing to do.
#[track_caller]
fn assert_whole(lib: &Library) {
    common::assert_verified(&lib.store);
    for (user, id, bytes) in &lib.live {
        assert_eq!(
            lib.store.user(user).unwrap().read(*id).unwrap(),
            bytes[..],
            "file {id} of {user}"
        );
    }
    let again = lib.store.repair(true).unwrap();
    assert!(
        again.ok && again.repaired.is_empty() && again.unrepaired.is_empty(),
        "a second repair changed something: {again:#?}"
    );
}

/// `verify` reports a problem of `kind`; `repair` repairs exactly what
/// `verify` reported, and leaves the store whole.
#[track_caller]
fn assert_repairs(lib: &Library, kind: &str) -> (VerifyReport, RepairReport) {
    let found = lib.store.verify(false).unwrap();
    assert!(
        found.problems.iter().any(|p| p.kind == kind),
        "verify should report {kind}: {:#?}",
        found.problems
    );
    let report = lib.store.repair(false).unwrap();
    assert!(report.ok, "{report:#?}");
    assert_eq!(problems(&report.repaired), problems(&found.problems));
    assert_whole(lib);
    (found, report)
}

#[test]
fn repair_of_a_healthy_store_changes_nothing() {
    let lib = library();
    let report = lib.store.repair(true).unwrap();
    assert_eq!(
        report,
        RepairReport {
            ok: true,
            repaired: vec![],
            orphans: vec![],
            unrepaired: vec![]
        }
    );
    assert_whole(&lib);
}

#[test]
fn wrong_blob_refcounts_are_recounted_from_the_files() {
    let lib = library();
    patch(&lib.store, "blobs", &hash_key(&lib.own), BLOB_REFS_AT, 7);
    // A count of zero on referenced content, queued for GC: the collection
    // that follows would delete a photo two users still have.
    patch(&lib.store, "blobs", &hash_key(&lib.shared), BLOB_REFS_AT, 0);
    set(&lib.store, "gc", &hash_key(&lib.shared), Some(&u64_value(0))).unwrap();
    let (_, report) = assert_repairs(&lib, "refcount-mismatch");
    assert_eq!(
        report.repaired.iter().filter(|p| p.kind == "refcount-mismatch").count(),
        2
    );
    assert_eq!(
        lib.store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed,
        1,
        "only the unreferenced blob"
    );
    assert_whole(&lib);
}

#[test]
fn missing_and_stray_user_blob_counts_are_rebuilt() {
    let lib = library();
    let bob = user_id(&lib.store, "bob");
    let ann_shared = [&lib.ann.to_be_bytes()[..], ContentHash::of(&lib.shared).as_bytes()].concat();
    set(&lib.store, "user_blobs", &ann_shared, None).unwrap();
    // Bob counting ann's own photo, which no file of his holds.
    let bob_own = [&bob.to_be_bytes()[..], ContentHash::of(&lib.own).as_bytes()].concat();
    let count = [&[1u8][..], &1u64.to_le_bytes(), &1u64.to_le_bytes()].concat();
    set(&lib.store, "user_blobs", &bob_own, Some(&count)).unwrap();
    let (found, _) = assert_repairs(&lib, "refcount-mismatch");
    assert!(found.problems.iter().any(|p| p.kind == "stray-index-entry"));
}

#[test]
fn wrong_user_counters_are_recomputed() {
    let lib = library();
    let usage = lib.store.user("ann").unwrap().usage().unwrap();
    patch(&lib.store, "users", &lib.ann.to_be_bytes(), USER_UNIQUE_AT, 1);
    assert_ne!(lib.store.user("ann").unwrap().usage().unwrap(), usage);
    assert_repairs(&lib, "usage-mismatch");
    assert_eq!(lib.store.user("ann").unwrap().usage().unwrap(), usage);
}

#[test]
fn a_huge_file_counter_neither_crashes_nor_stalls_a_survey() {
    let lib = library();
    // live_files, after unique_bytes and logical_bytes. The survey sizes
    // its hash ranges by the files there are: a counter no record backs
    // must not make it count past u64 or split into 2^64 ranges.
    patch(
        &lib.store,
        "users",
        &lib.ann.to_be_bytes(),
        USER_UNIQUE_AT + 16,
        u64::MAX,
    );
    assert_repairs(&lib, "usage-mismatch");
}

#[test]
fn wrong_album_counters_are_recomputed() {
    let lib = library();
    let before = lib.store.user("ann").unwrap().albums().unwrap();
    let key = [lib.ann.to_be_bytes(), lib.trip.0.to_be_bytes()].concat();
    // Name length and name, created_ms, then the file count.
    let files_at = 1 + 8 + "Trip".len() + 8;
    patch(&lib.store, "albums", &key, files_at, 1000);
    assert_repairs(&lib, "album-mismatch");
    assert_eq!(lib.store.user("ann").unwrap().albums().unwrap(), before);
}

#[test]
fn missing_and_stray_index_entries_are_rebuilt_in_every_index() {
    let lib = library();
    for family in ["members", "by_name", "trash"] {
        let (key, _) = entries(&lib.store, family).unwrap().remove(0);
        set(&lib.store, family, &key, None).unwrap();
        assert_repairs(&lib, "missing-index-entry");
        // The same entry for a file that does not exist.
        let stray = [&key[..key.len() - 8], &999u64.to_be_bytes()].concat();
        set(&lib.store, family, &stray, Some(&[])).unwrap();
        assert_repairs(&lib, "stray-index-entry");
        // An entry too short to name a user: no digest holds it.
        set(&lib.store, family, &[7, 7, 7], Some(&[])).unwrap();
        assert_repairs(&lib, "stray-index-entry");
    }
    // The duplicate indexes work again: re-uploading is skipped.
    let camera = lib.store.user("ann").unwrap().find_album("Camera").unwrap().unwrap().id;
    for mode in [DedupMode::Hash, DedupMode::NameAndHash] {
        let r = put(&lib.store, "ann", camera, "a.jpg", &lib.shared, mode);
        assert_eq!(r.outcome, Outcome::Skipped);
    }
}

#[test]
fn unreferenced_blob_missing_from_gc_is_queued_again_and_collected() {
    let lib = library();
    set(&lib.store, "gc", &hash_key(&lib.unreferenced), None).unwrap();
    assert_eq!(
        lib.store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed,
        0,
        "leaked"
    );
    assert_repairs(&lib, "leaked-blob");
    assert_eq!(lib.store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed, 1);
    assert_whole(&lib);
}

#[test]
fn referenced_blob_queued_for_gc_is_dequeued_and_survives_gc() {
    let lib = library();
    set(&lib.store, "gc", &hash_key(&lib.own), Some(&u64_value(0))).unwrap();
    assert_repairs(&lib, "stray-index-entry");
    assert!(entries(&lib.store, "gc")
        .unwrap()
        .iter()
        .all(|(k, _)| *k != hash_key(&lib.own)));
    assert_eq!(lib.store.gc_with_grace(Duration::ZERO).unwrap().blobs_removed, 1);
    assert_whole(&lib);
}

#[test]
fn wrong_segment_live_bytes_are_recomputed_before_compaction_can_drop_live_data() {
    let lib = library();
    let (key, _) = entries(&lib.store, "segments").unwrap().remove(0);
    // Zero live bytes would make compaction delete the segment outright.
    patch(&lib.store, "segments", &key, SEGMENT_LIVE_AT, 0);
    assert_repairs(&lib, "segment-accounting");
    lib.store.gc_with_grace(Duration::ZERO).unwrap();
    assert_whole(&lib);
}

#[test]
fn deleted_blob_record_is_reindexed_from_its_copy_in_a_segment() {
    let lib = library();
    let usage = lib.store.user("ann").unwrap().usage().unwrap();
    set(&lib.store, "blobs", &hash_key(&lib.own), None).unwrap();
    let found = lib.store.verify(false).unwrap();
    let missing = found.problems.iter().find(|p| p.kind == "missing-blob").unwrap();
    assert_eq!(
        missing
            .files
            .iter()
            .map(|f| f.name.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["b.jpg"]
    );

    let report = lib.store.repair(false).unwrap();
    assert!(report.ok, "{report:#?}");
    // Only the record comes back: the counters it seemed to unbalance were
    // right all along.
    assert_eq!(report.repaired.len(), 1, "{report:#?}");
    assert_eq!(report.repaired[0].kind, "missing-blob");
    assert!(report.repaired[0].detail.contains("re-indexed"));
    assert_eq!(report.repaired[0].files, missing.files);
    assert_eq!(lib.store.user("ann").unwrap().usage().unwrap(), usage);
    assert_whole(&lib);
}

#[test]
fn blob_with_no_record_and_no_copy_is_reported_lost_and_nothing_is_invented() {
    let lib = library();
    // Inline content has no copy in any segment.
    set(&lib.store, "blobs", &hash_key(&lib.tiny), None).unwrap();
    let report = lib.store.repair(true).unwrap();
    assert!(!report.ok);
    let kinds: Vec<_> = report.unrepaired.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["lost-blob"], "{report:#?}");
    assert_eq!(report.unrepaired[0].files[0].name, "tiny.txt");
    let after = lib.store.verify(true).unwrap();
    assert_eq!(
        after.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        ["missing-blob"]
    );
    for (user, id, bytes) in lib.live.iter().filter(|(_, _, b)| *b != lib.tiny) {
        assert_eq!(lib.store.user(user).unwrap().read(*id).unwrap(), bytes[..]);
    }
    assert!(
        lib.store.user("ann").unwrap().read(lib.live[2].1).is_err(),
        "never wrong bytes"
    );
}

#[test]
fn orphan_record_is_reported_and_compaction_reclaims_it() {
    let lib = library();
    // As if the unreferenced photo's bytes had been written and its commit
    // never made: no record points at them.
    let key = hash_key(&lib.unreferenced);
    set(&lib.store, "blobs", &key, None).unwrap();
    set(&lib.store, "gc", &key, None).unwrap();
    let (_, report) = assert_repairs(&lib, "segment-accounting");
    assert_eq!(report.orphans.len(), 1, "{report:#?}");
    assert_eq!(report.orphans[0].kind, "orphan-record");
    assert!(report.orphans[0]
        .detail
        .contains(&ContentHash::of(&lib.unreferenced).to_string()));

    let gc = lib.store.gc_with_grace(Duration::ZERO).unwrap();
    assert!(gc.segments_compacted >= 1, "{gc:?}");
    assert!(lib.store.repair(false).unwrap().orphans.is_empty());
    assert_whole(&lib);
}

#[test]
fn damaged_blob_found_by_scrub_is_marked_and_healed_by_reupload() {
    let lib = library();
    let hash = ContentHash::of(&lib.own);
    let (path, offset) = segment_files(lib.dir.path())
        .into_iter()
        .find_map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let id = path.file_stem()?.to_str()?.parse().ok()?;
            let h = scan_records(&bytes, id).0.into_iter().find(|h| h.hash == hash)?;
            Some((path, h.offset))
        })
        .unwrap();
    // In place, as bit rot would: the store keeps the file mapped.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = offset + RECORD_HEADER_LEN as u64 + 100;
    file.write_at(&[lib.own[100] ^ 0x20], at).unwrap();

    let report = lib.store.repair(true).unwrap();
    assert!(!report.ok);
    assert!(report.repaired.is_empty(), "{report:#?}");
    assert_eq!(report.unrepaired.len(), 1, "{report:#?}");
    assert_eq!(report.unrepaired[0].kind, "damaged-blob");
    assert_eq!(report.unrepaired[0].files[0].name, "b.jpg");
    // Marked: the store asks for the bytes instead of deduplicating.
    let camera = lib.store.user("ann").unwrap().find_album("Camera").unwrap().unwrap().id;
    assert_eq!(
        lib.store
            .user("ann")
            .unwrap()
            .check(&HashedUpload {
                album: camera,
                name: "b.jpg".into(),
                hash,
                mode: DedupMode::Hash
            })
            .unwrap(),
        Preflight::Upload
    );
    assert_eq!(
        put(&lib.store, "ann", camera, "b.jpg", &lib.own, DedupMode::Hash).outcome,
        Outcome::Skipped
    );
    assert_whole(&lib);
}

#[test]
fn file_in_a_deleted_album_loses_that_membership() {
    let lib = library();
    set(
        &lib.store,
        "albums",
        &[lib.ann.to_be_bytes(), lib.trip.0.to_be_bytes()].concat(),
        None,
    )
    .unwrap();
    set(
        &lib.store,
        "album_names",
        &[&lib.ann.to_be_bytes()[..], b"Trip"].concat(),
        None,
    )
    .unwrap();
    let (found, _) = assert_repairs(&lib, "dangling-reference");
    assert!(
        found.problems.iter().any(|p| p.kind == "stray-index-entry"),
        "the album's members"
    );
    let b = lib.store.user("ann").unwrap().file(lib.live[1].1).unwrap();
    assert_eq!(b.albums.len(), 1, "b.jpg stays in Camera only: {b:?}");
    assert!(lib
        .store
        .user("ann")
        .unwrap()
        .albums()
        .unwrap()
        .iter()
        .all(|a| a.name != "Trip"));
}

#[test]
fn next_file_id_below_existing_files_is_raised_so_no_id_is_reused() {
    let lib = library();
    patch(&lib.store, "users", &lib.ann.to_be_bytes(), USER_NEXT_FILE_AT, 1);
    assert_repairs(&lib, "bad-id");
    let camera = lib.store.user("ann").unwrap().find_album("Camera").unwrap().unwrap().id;
    let new = put(&lib.store, "ann", camera, "new.jpg", &data(50, BIG), DedupMode::Hash).file_id;
    assert!(
        lib.live.iter().all(|(_, id, _)| new.0 > id.0),
        "new id {new} reuses an old one"
    );
    assert_whole(&lib);
}

fn keepsake_verify_repair(lib: Library) -> (std::process::Output, tempfile::TempDir) {
    let Library { dir, store, .. } = lib;
    drop(store);
    let out = Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .arg("--store")
        .arg(dir.path())
        .args(["verify", "--repair", "--scrub", "--json"])
        .env_remove("KEEPSAKE_STORE")
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn cli_verify_repair_exits_0_when_repaired_and_1_when_a_blob_is_lost() {
    let lib = library();
    patch(&lib.store, "blobs", &hash_key(&lib.own), BLOB_REFS_AT, 7);
    let (out, dir) = keepsake_verify_repair(lib);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["repaired"][0]["kind"], "refcount-mismatch");
    common::assert_verified(&common::open(dir.path()));

    let lib = library();
    set(&lib.store, "blobs", &hash_key(&lib.tiny), None).unwrap();
    let (out, _dir) = keepsake_verify_repair(lib);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["unrepaired"][0]["kind"], "lost-blob");
    assert_eq!(report["unrepaired"][0]["files"][0]["name"], "tiny.txt");
}

#[test]
fn surveying_one_blob_at_a_time_finds_and_repairs_what_one_pass_does() {
    let lib = library();
    let bob = user_id(&lib.store, "bob");
    patch(&lib.store, "blobs", &hash_key(&lib.own), BLOB_REFS_AT, 7);
    set(&lib.store, "gc", &hash_key(&lib.shared), Some(&u64_value(0))).unwrap();
    set(&lib.store, "gc", &hash_key(&lib.unreferenced), None).unwrap();
    let ann_shared = [&lib.ann.to_be_bytes()[..], ContentHash::of(&lib.shared).as_bytes()].concat();
    set(&lib.store, "user_blobs", &ann_shared, None).unwrap();
    let bob_own = [&bob.to_be_bytes()[..], ContentHash::of(&lib.own).as_bytes()].concat();
    let count = [&[1u8][..], &1u64.to_le_bytes(), &1u64.to_le_bytes()].concat();
    set(&lib.store, "user_blobs", &bob_own, Some(&count)).unwrap();
    patch(&lib.store, "users", &lib.ann.to_be_bytes(), USER_UNIQUE_AT, 1);
    let (key, _) = entries(&lib.store, "segments").unwrap().remove(0);
    patch(&lib.store, "segments", &key, SEGMENT_LIVE_AT, 0);
    // Keys too short to name content, in every family keyed by content:
    // reported once, whichever range would hold them.
    for family in ["blobs", "gc", "damaged", "user_blobs"] {
        set(&lib.store, family, &[0, 7, 7], Some(&[])).unwrap();
        set(&lib.store, family, &[0xff, 7], Some(&[])).unwrap();
    }
    let ann_short = [&lib.ann.to_be_bytes()[..], &[0xff, 1]].concat();
    set(&lib.store, "user_blobs", &ann_short, Some(&[])).unwrap();
    let tiny = value(&lib.store, "blobs", &hash_key(&lib.tiny));
    set(&lib.store, "blobs", &hash_key(&lib.tiny), None).unwrap();

    let whole = lib.store.verify(false).unwrap();
    let Library {
        dir,
        store,
        tiny: tiny_content,
        ..
    } = lib;
    drop(store);
    // One file per hash range on average: about as many passes over the
    // files as there are files.
    let store = Store::open_with(dir.path(), options().verify_range(1)).unwrap();
    let ranged = store.verify(false).unwrap();
    assert!(whole.problems.len() >= 17, "{whole:#?}");
    assert_eq!(problems(&ranged.problems), problems(&whole.problems));
    assert_eq!((ranged.files, ranged.blobs), (whole.files, whole.blobs));

    // The missing blob is inline: nothing could re-index it but its record.
    set(&store, "blobs", &hash_key(&tiny_content), Some(&tiny)).unwrap();
    // (The usage the files give now counts its bytes.)
    let repaired = store.repair(true).unwrap();
    let kinds = |ps: &[keepsake::Problem]| {
        let mut k: Vec<_> = ps.iter().map(|p| p.kind).filter(|k| *k != "missing-blob").collect();
        k.sort_unstable();
        k
    };
    assert_eq!(kinds(&repaired.repaired), kinds(&whole.problems));
    let after = store.verify(true).unwrap();
    assert!(after.ok, "{after:#?}");
}
