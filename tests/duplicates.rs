//! Finding and merging the duplicates a user already has: which files form a
//! group, what a merge keeps, where the kept file ends up, what it costs and
//! frees, that it is atomic and idempotent, that a dry run changes nothing,
//! and that many groups stream. The `duplicates` and `dedupe` commands are
//! checked from outside in `tests/cli.rs`.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    album_ids, assert_verified, data, fresh_store, knob, options_with_clock, put, store_with_album, ManualClock, BIG,
};
use keepsake::{AlbumId, Clock, Content, ContentHash, DedupMode, FileId, LibraryError, Store, Upload};

const DESKTOP: DedupMode = DedupMode::NameAndHash;

/// Everything a merge could change, to compare before and after.
fn state(store: &Store, user: &str) -> impl PartialEq + std::fmt::Debug {
    (
        store.stats().unwrap(),
        store.user(user).unwrap().usage().unwrap(),
        store.user(user).unwrap().files().unwrap(),
        store.user(user).unwrap().trash().unwrap(),
        store.user(user).unwrap().albums().unwrap(),
    )
}

fn ids(files: &[keepsake::FileInfo]) -> Vec<FileId> {
    files.iter().map(|f| f.id).collect()
}

#[test]
fn desktop_copies_under_other_names_across_albums_form_one_group() {
    let (_dir, store, camera) = store_with_album("ann", "Camera");
    let ann = store.user("ann").unwrap();
    let trip = ann.ensure_album("Trip").unwrap();
    let photo = data(1, BIG);
    let first = put(&store, "ann", camera, "IMG_1.JPG", &photo, DESKTOP).file_id;
    let copy = put(&store, "ann", trip, "IMG_1 (1).JPG", &photo, DESKTOP).file_id;
    put(&store, "ann", camera, "IMG_2.JPG", &data(2, BIG), DESKTOP);

    let groups = ann.duplicates().unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!((g.hash, g.size), (ContentHash::of(&photo), BIG as u64));
    assert_eq!(ids(&g.files), vec![first, copy]);
    let names: Vec<_> = g
        .files
        .iter()
        .map(|f| (f.name.to_str().unwrap(), f.albums.clone()))
        .collect();
    assert_eq!(names, vec![("IMG_1.JPG", vec![camera]), ("IMG_1 (1).JPG", vec![trip])]);
    assert_eq!(g.logical_bytes(), BIG as u64);
    assert_verified(&store);
}

#[test]
fn trashed_copies_and_other_users_never_join_a_group() {
    let (_dir, store, album) = store_with_album("ann", "Camera");
    let bob = store.user("bob").unwrap();
    let ann = store.user("ann").unwrap();
    let bobs = bob.ensure_album("Camera").unwrap();
    let photo = data(3, 500);
    let kept: Vec<FileId> = ["a.jpg", "b.jpg", "c.jpg"]
        .iter()
        .map(|n| put(&store, "ann", album, n, &photo, DESKTOP).file_id)
        .collect();
    ann.delete(kept[1]).unwrap();
    put(&store, "bob", bobs, "a.jpg", &photo, DESKTOP);

    let groups = ann.duplicates().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(ids(&groups[0].files), vec![kept[0], kept[2]]);
    // Bob's one copy is no duplicate, whatever Ann has.
    assert!(bob.duplicates().unwrap().is_empty());
    assert!(store.user("nobody").unwrap().duplicates().unwrap().is_empty());
    // With one live copy left, there is no group.
    ann.delete(kept[2]).unwrap();
    assert!(ann.duplicates().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn merge_keeps_the_oldest_in_every_album_any_copy_was_in() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let [b, c, d] = ["B", "C", "D"].map(|n| ann.ensure_album(n).unwrap());
    let photo = data(4, BIG);
    let oldest = put(&store, "ann", a, "x.jpg", &photo, DESKTOP).file_id;
    let second = put(&store, "ann", b, "y.jpg", &photo, DESKTOP).file_id;
    let third = put(&store, "ann", c, "z.jpg", &photo, DESKTOP).file_id;
    ann.add_to_album(third, d).unwrap();
    ann.add_to_album(second, a).unwrap();

    let r = ann.merge(ContentHash::of(&photo), None).unwrap();
    assert_eq!((r.kept, r.trashed.clone()), (oldest, vec![second, third]));
    assert_eq!(r.albums_added, vec![b, c, d]);
    assert!(!r.already_merged());
    assert_eq!(ann.file(oldest).unwrap().albums, vec![a, b, c, d]);
    for album in [a, b, c, d] {
        assert_eq!(album_ids(&store, "ann", album), vec![oldest.0], "album {album}");
        assert_eq!(
            ann.albums().unwrap().iter().find(|x| x.id == album).unwrap().bytes,
            BIG as u64
        );
    }
    assert_eq!(ids(&ann.trash().unwrap()), vec![second, third]);
    assert!(ann.duplicates().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn merge_keeps_the_file_the_caller_chose() {
    let clock = ManualClock::new();
    let (_dir, store) = fresh_store(options_with_clock(&clock));
    let ann = store.user("ann").unwrap();
    let (a, b) = (ann.ensure_album("A").unwrap(), ann.ensure_album("B").unwrap());
    let photo = data(5, 700);
    let old = put(&store, "ann", a, "old.jpg", &photo, DESKTOP).file_id;
    clock.advance(Duration::from_secs(60));
    let new = put(&store, "ann", b, "new.jpg", &photo, DESKTOP).file_id;

    let group = &ann.duplicates().unwrap()[0];
    assert_eq!(group.preview_merge(None).unwrap().kept, old);
    let r = ann.merge(group.hash, Some(new)).unwrap();
    assert_eq!((r.kept, r.trashed, r.albums_added), (new, vec![old], vec![a]));
    assert_eq!(ann.file(new).unwrap().albums, vec![b, a]);
    assert_eq!(ann.file(old).unwrap().trashed_ms, Some(clock.now_ms()));
    assert_verified(&store);
}

#[test]
fn the_kept_file_must_be_a_live_file_of_the_group_or_nothing_changes() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let photo = data(6, 300);
    let hash = ContentHash::of(&photo);
    let copies: Vec<FileId> = ["a.jpg", "b.jpg", "c.jpg"]
        .iter()
        .map(|n| put(&store, "ann", album, n, &photo, DESKTOP).file_id)
        .collect();
    ann.delete(copies[2]).unwrap();
    let other_content = put(&store, "ann", album, "d.jpg", &data(7, 300), DESKTOP).file_id;
    let before = state(&store, "ann");

    for keep in [copies[2], other_content, FileId(999)] {
        match ann.merge(hash, Some(keep)) {
            Err(LibraryError::NotADuplicate { file, hash: h }) => assert_eq!((file, h), (keep, hash)),
            other => panic!("keeping {keep}: expected NotADuplicate, got {other:?}"),
        }
    }
    let absent = ContentHash::of(b"never uploaded");
    assert!(matches!(ann.merge(absent, None), Err(LibraryError::NoSuchContent(h)) if h == absent));
    assert!(matches!(
        store.user("nobody").unwrap().merge(hash, None),
        Err(LibraryError::NoSuchContent(_))
    ));
    assert_eq!(state(&store, "ann"), before);
    assert_verified(&store);
}

#[test]
fn merging_an_already_merged_group_changes_nothing_and_says_so() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let photo = data(8, BIG);
    let hash = ContentHash::of(&photo);
    let first = put(&store, "ann", a, "a.jpg", &photo, DESKTOP).file_id;
    let copy = put(&store, "ann", b, "b.jpg", &photo, DESKTOP).file_id;
    let merged = ann.merge(hash, None).unwrap();
    let after_first = state(&store, "ann");

    for keep in [None, Some(first)] {
        let again = ann.merge(hash, keep).unwrap();
        assert!(again.already_merged());
        assert_eq!(
            (again.kept, again.albums_added.len(), again.logical_bytes),
            (first, 0, 0)
        );
    }
    // The trashed copy is no longer part of the group.
    assert!(matches!(
        ann.merge(hash, Some(copy)),
        Err(LibraryError::NotADuplicate { .. })
    ));
    assert_eq!(state(&store, "ann"), after_first);
    assert_eq!(merged.trashed, vec![copy]);

    // Restoring the copy makes the group whole again, and it merges again.
    ann.restore(copy).unwrap();
    assert_eq!(ids(&ann.duplicates().unwrap()[0].files), vec![first, copy]);
    assert_eq!(ann.merge(hash, None).unwrap().trashed, vec![copy]);
    assert_verified(&store);
}

#[test]
fn a_merge_frees_no_quota_and_the_logical_total_drops_when_the_trash_is_emptied() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let photo = data(9, BIG);
    for n in ["1.jpg", "2.jpg", "3.jpg"] {
        put(&store, "ann", album, n, &photo, DESKTOP);
    }
    let before = ann.usage().unwrap();
    assert_eq!(
        (before.unique_bytes, before.logical_bytes),
        (BIG as u64, 3 * BIG as u64)
    );
    let expected = ann.duplicates().unwrap()[0].logical_bytes();

    let r = ann.merge(ContentHash::of(&photo), None).unwrap();
    assert_eq!(r.logical_bytes, expected);
    let merged = ann.usage().unwrap();
    // Trashed files still count, and the content stays referenced by the kept file.
    assert_eq!(
        (merged.unique_bytes, merged.logical_bytes),
        (before.unique_bytes, before.logical_bytes)
    );
    assert_eq!((merged.files, merged.trashed_files, merged.trash_bytes), (1, 2, 0));

    assert_eq!(ann.empty_trash().unwrap().bytes_freed, 0);
    let emptied = ann.usage().unwrap();
    assert_eq!(emptied.unique_bytes, before.unique_bytes);
    assert_eq!(emptied.logical_bytes, before.logical_bytes - r.logical_bytes);
    assert_verified(&store);
}

#[test]
fn a_preview_changes_nothing_and_predicts_the_merge_exactly() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let photo = data(10, BIG);
    put(&store, "ann", a, "a.jpg", &photo, DESKTOP);
    let second = put(&store, "ann", b, "b.jpg", &photo, DESKTOP).file_id;
    put(&store, "ann", a, "c.jpg", &photo, DESKTOP);
    let before = state(&store, "ann");

    let group = ann.duplicates().unwrap().remove(0);
    let plan = group.preview_merge(Some(second)).unwrap();
    assert_eq!(state(&store, "ann"), before);
    assert_eq!(ann.merge(group.hash, Some(second)).unwrap(), plan);
    assert_verified(&store);
}

/// A reader scanning while groups are merged sees each group either whole
/// or merged, never a copy trashed before the kept file joined its albums.
#[test]
fn a_reader_sees_each_group_before_or_after_its_merge_never_half_merged() {
    const GROUPS: u64 = 100;
    let (_dir, store, a) = store_with_album("ann", "A");
    let b = store.user("ann").unwrap().ensure_album("B").unwrap();
    let uploads = (0..GROUPS)
        .flat_map(|g| {
            let photo = data(1000 + g, 64);
            [(a, "a"), (b, "b")].map(|(album, name)| {
                Upload::new(album, format!("{name}{g}.jpg"), Content::from(photo.clone()), DESKTOP)
            })
        })
        .collect();
    assert!(store
        .user("ann")
        .unwrap()
        .upload_batch(uploads)
        .iter()
        .all(|r| r.is_ok()));
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for g in store.user("ann").unwrap().duplicates().unwrap() {
                store.user("ann").unwrap().merge(g.hash, None).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut scans = 0;
        while !done.load(Ordering::SeqCst) || scans == 0 {
            scans += 1;
            let files = store.user("ann").unwrap().files().unwrap();
            let mut by_hash = std::collections::BTreeMap::<ContentHash, Vec<Vec<AlbumId>>>::new();
            for f in files {
                by_hash.entry(f.hash).or_default().push(f.albums);
            }
            for (hash, albums) in by_hash {
                let whole = albums == [vec![a], vec![b]];
                let merged = albums == [vec![a, b]];
                assert!(whole || merged, "group {hash} seen half-merged: {albums:?}");
            }
        }
    });
    assert!(store.user("ann").unwrap().duplicates().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn ten_thousand_groups_stream_in_hash_order_and_merge_as_they_come() {
    let groups = knob("KEEPSAKE_DUPLICATE_GROUPS", 10_000);
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    for chunk in (0..groups).collect::<Vec<_>>().chunks(1000) {
        let uploads = chunk
            .iter()
            .flat_map(|&g| {
                let photo = g.to_le_bytes().to_vec();
                ["a", "b"].map(|n| Upload::new(album, format!("{n}{g}.jpg"), Content::from(photo.clone()), DESKTOP))
            })
            .collect();
        assert!(ann.upload_batch(uploads).iter().all(|r| r.is_ok()));
    }

    let mut seen = 0u64;
    let mut last: Option<ContentHash> = None;
    ann.for_each_duplicate_group(|g| {
        assert!(last < Some(g.hash), "groups out of hash order");
        assert_eq!(g.files.len(), 2);
        last = Some(g.hash);
        seen += 1;
        // Merging inside the pass, as `keepsake dedupe` does, leaves the
        // groups still to come intact.
        assert_eq!(ann.merge(g.hash, None)?.trashed.len(), 1);
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(seen, groups);
    assert_eq!(ann.usage().unwrap().files, groups);
    assert!(ann.duplicates().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn a_pass_over_the_groups_stops_when_the_caller_breaks() {
    let (_dir, store, album) = store_with_album("ann", "A");
    for g in 0..5u64 {
        for n in ["a", "b"] {
            put(&store, "ann", album, &format!("{n}{g}.jpg"), &g.to_le_bytes(), DESKTOP);
        }
    }
    let mut calls = 0;
    store
        .user("ann")
        .unwrap()
        .for_each_duplicate_group(|_| {
            calls += 1;
            Ok(if calls == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
    assert_eq!(calls, 2);
}
