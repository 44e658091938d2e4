//! Albums as references to files, the trash, and trash retention.

mod common;

use std::time::Duration;

use common::{
    album_ids, assert_verified, data, fresh_store, open, options_with_clock, put, store_with_album, ManualClock, BIG,
};
use keepsake::{
    AlbumDeletion, AlbumId, Clock, DedupMode, FileEdit, FileId, LibraryError, QuotaExceeded, ReadError, Store,
    UploadError,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn names(store: &Store, user: &str) -> Vec<String> {
    store
        .user(user)
        .unwrap()
        .albums()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect()
}

#[test]
fn albums_are_created_renamed_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let camera = store.user("ann").unwrap().create_album("Camera").unwrap();
    let trip = store.user("ann").unwrap().create_album("2024/Trip").unwrap();
    assert!(
        matches!(store.user("ann").unwrap().create_album("Camera"), Err(LibraryError::AlbumExists(n)) if n == "Camera")
    );
    assert_eq!(store.user("ann").unwrap().ensure_album("Camera").unwrap(), camera);
    // Another user's album of the same name is independent.
    let bobs = store.user("bob").unwrap().create_album("Camera").unwrap();
    assert_eq!(names(&store, "bob"), vec!["Camera"]);

    store.user("ann").unwrap().rename_album(trip, "Summer").unwrap();
    assert_eq!(names(&store, "ann"), vec!["Camera", "Summer"]);
    assert_eq!(
        store.user("ann").unwrap().find_album("Summer").unwrap().unwrap().id,
        trip
    );
    assert!(store.user("ann").unwrap().find_album("2024/Trip").unwrap().is_none());
    assert!(matches!(
        store.user("ann").unwrap().rename_album(trip, "Camera"),
        Err(LibraryError::AlbumExists(_))
    ));
    assert_eq!(names(&store, "ann"), vec!["Camera", "Summer"]);
    // To its own name: a no-op.
    store.user("ann").unwrap().rename_album(trip, "Summer").unwrap();
    // The old name is free again.
    let again = store.user("ann").unwrap().create_album("2024/Trip").unwrap();
    assert!(again != trip && again != camera);

    let f = put(&store, "ann", trip, "p.jpg", &data(1, BIG), DedupMode::Hash).file_id;
    let info = store.user("ann").unwrap().find_album("Summer").unwrap().unwrap();
    assert_eq!((info.files, info.bytes), (1, BIG as u64));
    assert!(store
        .user("ann")
        .unwrap()
        .delete_album(trip, AlbumDeletion::KeepFiles)
        .unwrap()
        .is_empty());
    assert_eq!(names(&store, "ann"), vec!["Camera", "2024/Trip"]);
    assert!(matches!(
        store.user("ann").unwrap().album_files(trip),
        Err(LibraryError::UnknownAlbum(_))
    ));
    assert!(matches!(
        store.user("ann").unwrap().rename_album(trip, "X"),
        Err(LibraryError::UnknownAlbum(_))
    ));
    assert!(store.user("ann").unwrap().file(f).unwrap().albums.is_empty());
    assert_eq!(store.user("bob").unwrap().albums().unwrap()[0].id, bobs);
    assert_verified(&store);
}

#[test]
fn add_and_remove_keep_the_file_in_other_albums_and_the_library() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let f = put(&store, "ann", a, "p.jpg", &data(2, BIG), DedupMode::Hash).file_id;
    let usage = ann.usage().unwrap();

    assert!(ann.add_to_album(f, b).unwrap());
    assert!(!ann.add_to_album(f, b).unwrap(), "already there");
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
    assert_eq!(ann.file(f).unwrap().albums, vec![a, b]);
    assert_eq!(ann.usage().unwrap(), usage, "a reference costs nothing");

    ann.remove_from_album(f, a).unwrap();
    assert!(album_ids(&store, "ann", a).is_empty());
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
    assert!(
        matches!(ann.remove_from_album(f, a), Err(LibraryError::NotInAlbum { file, album }) if file == f && album == a)
    );

    ann.remove_from_album(f, b).unwrap();
    let library: Vec<FileId> = ann.files().unwrap().iter().map(|f| f.id).collect();
    assert_eq!(library, vec![f], "a file out of every album stays in the library");
    assert!(ann.file(f).unwrap().albums.is_empty());
    assert_eq!(ann.usage().unwrap(), usage);
    assert_eq!(ann.read(f).unwrap(), data(2, BIG));
    let infos = ann.albums().unwrap();
    assert!(infos.iter().all(|a| a.files == 0 && a.bytes == 0));
    assert_verified(&store);
}

#[test]
fn move_file_is_atomic_and_requires_membership_of_the_source() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let c = ann.ensure_album("C").unwrap();
    let f = put(&store, "ann", a, "p.jpg", &data(3, BIG), DedupMode::Hash).file_id;

    ann.move_file(f, a, b).unwrap();
    assert!(album_ids(&store, "ann", a).is_empty());
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
    assert_eq!(ann.file(f).unwrap().albums, vec![b]);

    // Not in the source: refused, and nothing moves (no half-done move into C).
    assert!(matches!(ann.move_file(f, a, c), Err(LibraryError::NotInAlbum { file, album }) if file == f && album == a));
    assert!(album_ids(&store, "ann", c).is_empty());
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
    // An unknown target: refused, the file stays in the source.
    assert!(matches!(
        ann.move_file(f, b, AlbumId(77)),
        Err(LibraryError::UnknownAlbum(_))
    ));
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);

    let b_info = ann.find_album("B").unwrap().unwrap();
    assert_eq!((b_info.files, b_info.bytes), (1, BIG as u64));
    assert_verified(&store);
}

#[test]
fn delete_takes_file_out_of_every_album_and_restore_puts_it_back() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let c = ann.ensure_album("C").unwrap();
    let photo = data(4, BIG);
    let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash).file_id;
    ann.add_to_album(f, b).unwrap();
    ann.add_to_album(f, c).unwrap();
    let other = put(&store, "ann", a, "q.jpg", &data(5, BIG), DedupMode::Hash).file_id;

    ann.delete(f).unwrap();
    for album in [a, b, c] {
        assert!(!album_ids(&store, "ann", album).contains(&f.0));
    }
    assert_eq!(album_ids(&store, "ann", a), vec![other.0]);
    let trash = ann.trash().unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].id, f);
    assert!(trash[0].trashed_ms.is_some());
    assert_eq!(trash[0].albums, vec![a, b, c], "the trash remembers where it was");
    assert!(!ann.files().unwrap().iter().any(|x| x.id == f));
    // Trashed files can still be read.
    assert_eq!(ann.read(f).unwrap(), photo);

    // Operations on a trashed file are refused.
    assert!(matches!(ann.delete(f), Err(LibraryError::FileTrashed(x)) if x == f));
    assert!(matches!(ann.add_to_album(f, a), Err(LibraryError::FileTrashed(_))));
    assert!(matches!(ann.remove_from_album(f, a), Err(LibraryError::FileTrashed(_))));
    assert!(matches!(ann.move_file(f, a, b), Err(LibraryError::FileTrashed(_))));
    assert!(matches!(ann.restore(other), Err(LibraryError::NotTrashed(x)) if x == other));

    // One of its albums is deleted meanwhile: it returns to the others.
    ann.delete_album(b, AlbumDeletion::KeepFiles).unwrap();
    let back = ann.restore(f).unwrap();
    assert_eq!(back, vec![a, c]);
    assert_eq!(album_ids(&store, "ann", a), vec![f.0, other.0]);
    assert_eq!(album_ids(&store, "ann", c), vec![f.0]);
    assert_eq!(ann.file(f).unwrap().albums, vec![a, c]);
    assert!(ann.trash().unwrap().is_empty());
    assert!(matches!(ann.restore(f), Err(LibraryError::NotTrashed(_))));
    let usage = ann.usage().unwrap();
    assert_eq!((usage.files, usage.trashed_files, usage.trash_bytes), (2, 0, 0));
    assert_verified(&store);
}

#[test]
fn restore_with_every_album_gone_returns_file_to_library() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let f = put(&store, "ann", a, "p.jpg", &data(6, BIG), DedupMode::Hash).file_id;
    ann.delete(f).unwrap();
    ann.delete_album(a, AlbumDeletion::TrashFiles).unwrap();
    assert!(ann.restore(f).unwrap().is_empty());
    assert_eq!(ann.files().unwrap()[0].id, f);
    assert_verified(&store);
}

#[test]
fn delete_album_keep_files_leaves_them_in_the_library() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let only_a = put(&store, "ann", a, "1.jpg", &data(7, BIG), DedupMode::Hash).file_id;
    let both = put(&store, "ann", a, "2.jpg", &data(8, BIG), DedupMode::Hash).file_id;
    ann.add_to_album(both, b).unwrap();

    assert!(ann.delete_album(a, AlbumDeletion::KeepFiles).unwrap().is_empty());
    let library: Vec<FileId> = ann.files().unwrap().iter().map(|f| f.id).collect();
    assert_eq!(library, vec![only_a, both]);
    assert!(ann.trash().unwrap().is_empty());
    assert!(ann.file(only_a).unwrap().albums.is_empty());
    assert_eq!(ann.file(both).unwrap().albums, vec![b]);
    assert_eq!(album_ids(&store, "ann", b), vec![both.0]);
    assert_eq!(ann.usage().unwrap().files, 2);
    assert_verified(&store);
}

#[test]
fn delete_album_trash_files_trashes_only_files_in_no_other_album() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let only_a = put(&store, "ann", a, "1.jpg", &data(9, BIG), DedupMode::Hash).file_id;
    let both = put(&store, "ann", a, "2.jpg", &data(10, BIG), DedupMode::Hash).file_id;
    ann.add_to_album(both, b).unwrap();
    let usage = ann.usage().unwrap();

    let trashed = ann.delete_album(a, AlbumDeletion::TrashFiles).unwrap();
    assert_eq!(trashed, vec![only_a]);
    assert_eq!(ann.trash().unwrap()[0].id, only_a);
    let library: Vec<FileId> = ann.files().unwrap().iter().map(|f| f.id).collect();
    assert_eq!(library, vec![both]);
    assert_eq!(album_ids(&store, "ann", b), vec![both.0]);
    assert_eq!(ann.file(both).unwrap().albums, vec![b]);
    let after = ann.usage().unwrap();
    assert_eq!((after.files, after.trashed_files), (1, 1));
    assert_eq!(after.unique_bytes, usage.unique_bytes, "trashed files still count");
    assert_eq!(after.trash_bytes, BIG as u64);
    assert_eq!(names(&store, "ann"), vec!["B"]);
    assert_verified(&store);
}

#[test]
fn empty_trash_frees_quota_only_when_last_reference_goes() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let shared = data(11, BIG);
    let alone = data(12, 2 * BIG);
    // Two files (two names) with the same content, and one of its own.
    let s1 = put(&store, "ann", a, "s1.jpg", &shared, DedupMode::NameAndHash).file_id;
    let s2 = put(&store, "ann", a, "s2.jpg", &shared, DedupMode::NameAndHash).file_id;
    let al = put(&store, "ann", a, "alone.jpg", &alone, DedupMode::NameAndHash).file_id;
    let full = (shared.len() + alone.len()) as u64;
    assert_eq!(ann.usage().unwrap().unique_bytes, full);

    ann.delete(s1).unwrap();
    ann.delete(al).unwrap();
    let usage = ann.usage().unwrap();
    assert_eq!(usage.unique_bytes, full, "trash still counts");
    assert_eq!(usage.trash_bytes, alone.len() as u64, "s2 keeps the shared blob");
    assert_eq!((usage.files, usage.trashed_files), (1, 2));

    let report = ann.empty_trash().unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(report.bytes_freed, alone.len() as u64);
    let usage = ann.usage().unwrap();
    assert_eq!(usage.unique_bytes, shared.len() as u64);
    assert_eq!((usage.trash_bytes, usage.trashed_files, usage.files), (0, 0, 1));
    assert_eq!(usage.logical_bytes, shared.len() as u64);
    assert!(ann.trash().unwrap().is_empty());
    assert!(matches!(ann.read(s1), Err(ReadError::UnknownFile(_))));
    assert!(matches!(ann.restore(al), Err(LibraryError::UnknownFile(_))));
    assert_eq!(ann.read(s2).unwrap(), shared);

    // The last reference goes: now the quota drops.
    ann.delete(s2).unwrap();
    assert_eq!(ann.usage().unwrap().trash_bytes, shared.len() as u64);
    let report = ann.empty_trash().unwrap();
    assert_eq!((report.files, report.bytes_freed), (1, shared.len() as u64));
    let usage = ann.usage().unwrap();
    assert_eq!((usage.unique_bytes, usage.blobs, usage.logical_bytes), (0, 0, 0));
    assert_eq!(store.stats().unwrap().gc_candidates, 2);
    assert_eq!(ann.empty_trash().unwrap().files, 0);
    assert_verified(&store);
}

#[test]
fn trash_is_purged_by_gc_only_after_retention() {
    let clock = ManualClock::new();
    let (_dir, store) = fresh_store(options_with_clock(&clock).trash_retention(7 * DAY));
    let ann = store.user("ann").unwrap();
    let a = ann.ensure_album("A").unwrap();
    let old = put(&store, "ann", a, "old.jpg", &data(13, BIG), DedupMode::Hash).file_id;
    let young = put(&store, "ann", a, "young.jpg", &data(14, BIG), DedupMode::Hash).file_id;
    ann.delete(old).unwrap();
    clock.advance(3 * DAY);
    ann.delete(young).unwrap();

    clock.advance(3 * DAY); // old: 6 days in the trash
    assert_eq!(store.gc().unwrap().trash_purged, 0);
    assert_eq!(store.purge_expired_trash().unwrap().files, 0);
    let trash = ann.trash().unwrap();
    let order: Vec<FileId> = trash.iter().map(|f| f.id).collect();
    assert_eq!(order, vec![old, young], "oldest deletion first");
    assert_eq!(trash[1].trashed_ms, Some(clock.now_ms() - 3 * DAY.as_millis() as u64));
    assert_eq!(ann.usage().unwrap().unique_bytes, 2 * BIG as u64);

    clock.advance(DAY + Duration::from_millis(1)); // old: past 7 days, young: 4
    let report = store.gc().unwrap();
    assert_eq!(report.trash_purged, 1);
    let trash: Vec<FileId> = ann.trash().unwrap().iter().map(|f| f.id).collect();
    assert_eq!(trash, vec![young]);
    assert!(matches!(ann.file(old), Err(LibraryError::UnknownFile(_))));
    assert_eq!(ann.usage().unwrap().unique_bytes, BIG as u64);

    clock.advance(3 * DAY);
    let purged = store.purge_expired_trash().unwrap();
    assert_eq!((purged.files, purged.bytes_freed), (1, BIG as u64));
    assert!(ann.trash().unwrap().is_empty());
    let usage = ann.usage().unwrap();
    assert_eq!((usage.unique_bytes, usage.trashed_files), (0, 0));
    assert_verified(&store);
}

#[test]
fn trashed_files_count_toward_quota_until_purged() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    ann.set_quota(Some(BIG as u64)).unwrap();
    let f = put(&store, "ann", a, "p.jpg", &data(15, BIG), DedupMode::Hash).file_id;
    ann.delete(f).unwrap();
    let usage = ann.usage().unwrap();
    assert_eq!(
        (usage.unique_bytes, usage.trash_bytes, usage.limit),
        (BIG as u64, BIG as u64, Some(BIG as u64))
    );

    let next = data(16, BIG);
    let err = common::put_err(&store, "ann", a, "q.jpg", &next, DedupMode::Hash);
    assert!(
        matches!(err, UploadError::QuotaExceeded(QuotaExceeded { limit, used, needed })
        if (limit, used, needed) == (BIG as u64, BIG as u64, BIG as u64)),
        "{err:?}"
    );

    ann.empty_trash().unwrap();
    assert_eq!(ann.usage().unwrap().unique_bytes, 0);
    let r = put(&store, "ann", a, "q.jpg", &next, DedupMode::Hash);
    assert_eq!(r.charged_bytes, BIG as u64);
    assert_eq!(ann.usage().unwrap().unique_bytes, BIG as u64);
    assert_verified(&store);
}

/// Many edits, one commit: each succeeds or fails on its own, a failed one
/// changes nothing, and each sees the ones before it.
#[test]
fn a_batch_of_edits_applies_each_on_its_own_in_order() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let (b, c) = (ann.ensure_album("B").unwrap(), ann.ensure_album("C").unwrap());
    let f: Vec<FileId> = (0..4)
        .map(|i| put(&store, "ann", a, &format!("{i}.jpg"), &data(i, BIG), DedupMode::Hash).file_id)
        .collect();
    // File ids are per user: bob's only file is number 1, which to ann is
    // her own first file; his file 5 is nothing of hers.
    let bob_album = store.user("bob").unwrap().ensure_album("A").unwrap();
    for i in 0..5 {
        put(
            &store,
            "bob",
            bob_album,
            &format!("{i}.jpg"),
            &data(20 + i, BIG),
            DedupMode::Hash,
        );
    }
    let bob_file = FileId(5);
    let before = ann.usage().unwrap();
    let results = ann
        .edit_files(vec![
            FileEdit::AddToAlbum { file: f[0], album: b },
            FileEdit::Move {
                file: f[1],
                from: b,
                to: c,
            }, // not in B
            FileEdit::Move {
                file: f[1],
                from: a,
                to: c,
            },
            FileEdit::Delete(f[2]),
            FileEdit::Restore(f[2]), // sees the delete before it
            FileEdit::Delete(f[3]),
            FileEdit::RemoveFromAlbum { file: f[3], album: a }, // trashed by then
            FileEdit::Delete(FileId(1_000)),
            FileEdit::Delete(bob_file), // another user's id is unknown
            FileEdit::AddToAlbum {
                file: f[0],
                album: AlbumId(77),
            },
        ])
        .unwrap();
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, true, true, true, true, false, false, false, false]);
    assert!(matches!(results[1], Err(LibraryError::NotInAlbum { .. })));
    assert!(matches!(results[6], Err(LibraryError::FileTrashed(_))));
    assert!(matches!(results[7], Err(LibraryError::UnknownFile(_))));
    assert!(matches!(results[8], Err(LibraryError::UnknownFile(_))));
    assert!(matches!(results[9], Err(LibraryError::UnknownAlbum(_))));
    assert_eq!(ann.file(f[0]).unwrap().albums, vec![a, b]);
    assert_eq!(
        ann.file(f[1]).unwrap().albums,
        vec![c],
        "the failed move changed nothing"
    );
    assert_eq!(ann.file(f[2]).unwrap().albums, vec![a]);
    assert_eq!(
        ann.trash().unwrap().iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![f[3]]
    );
    let after = ann.usage().unwrap();
    assert_eq!((after.files, after.trashed_files), (before.files - 1, 1));
    assert_eq!(store.user("bob").unwrap().files().unwrap().len(), 5);
    // A user who never wrote anything has no files to edit.
    let nobody = store
        .user("nobody")
        .unwrap()
        .edit_files(vec![FileEdit::Delete(f[0])])
        .unwrap();
    assert!(matches!(nobody[0], Err(LibraryError::UnknownFile(_))));
    assert_verified(&store);
}

fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the name is there");
    [&bytes[..at], to, &bytes[at + from.len()..]].concat()
}

/// Restoring never puts a file into an album that shows, meanwhile, a live
/// file with the same name and content. The store's own uploads can no
/// longer make that situation (an upload restores the trashed file
/// instead), so it is made here as a store written before that rule left it:
/// two live files of one name and content in one album, by renaming the
/// second file's record (and its name index) in place.
#[test]
fn restore_skips_an_album_that_shows_a_live_duplicate_meanwhile() {
    use keepsake::testkit::meta_damage::{entries, set};
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let photo = data(3, BIG);
    let first = put(&store, "ann", a, "a.jpg", &photo, DedupMode::NameAndHash).file_id;
    ann.add_to_album(first, b).unwrap();
    let second = put(&store, "ann", a, "z.jpg", &photo, DedupMode::NameAndHash).file_id;
    // "z.jpg" becomes "a.jpg": the same length, so the bytes swap in place.
    for (k, v) in entries(&store, "files").unwrap() {
        if k.ends_with(&second.0.to_be_bytes()) {
            set(&store, "files", &k, Some(&replaced(&v, b"z.jpg", b"a.jpg"))).unwrap();
        }
    }
    for (k, _) in entries(&store, "by_name").unwrap() {
        if k.ends_with(&second.0.to_be_bytes()) {
            set(&store, "by_name", &k, None).unwrap();
            set(&store, "by_name", &replaced(&k, b"z.jpg", b"a.jpg"), Some(&[])).unwrap();
        }
    }
    assert_verified(&store);

    ann.delete(first).unwrap();
    assert_eq!(ann.restore(first).unwrap(), vec![b], "A shows the live duplicate");
    assert_eq!(album_ids(&store, "ann", a), vec![second.0]);
    assert_eq!(album_ids(&store, "ann", b), vec![first.0]);
    assert_verified(&store);
}
