//! The duplicate rules of uploads: Skipped, Linked and Stored in both modes,
//! preflight (`check`/`link`), cross-user isolation, and the content sources.

mod common;

use std::io::{self, Read};

use common::{
    album_ids, assert_verified, data, is_unknown_album, is_unknown_file, open, put, put_err, store_with_album, BIG,
};
use keepsake::{
    AlbumId, Content, ContentHash, DedupMode, Error, FileId, HashMismatch, HashedUpload, Outcome, Preflight,
    StorageError, Upload, UploadError,
};

const MODES: [DedupMode; 2] = [DedupMode::Hash, DedupMode::NameAndHash];

#[test]
fn reupload_into_same_album_is_skipped_in_both_modes() {
    for mode in MODES {
        let (_dir, store, album) = store_with_album("ann", "Camera");
        let ann = store.user("ann").unwrap();
        let photo = data(1, BIG);
        let first = put(&store, "ann", album, "IMG_1.JPG", &photo, mode);
        assert_eq!(
            (first.outcome, first.bytes_written, first.charged_bytes),
            (Outcome::Stored, BIG as u64, BIG as u64)
        );

        let again = put(&store, "ann", album, "IMG_1.JPG", &photo, mode);
        assert_eq!(again.outcome, Outcome::Skipped, "{mode:?}");
        assert_eq!(again.file_id, first.file_id);
        assert_eq!((again.bytes_written, again.charged_bytes), (0, 0));
        assert_eq!(again.hash, first.hash);
        assert_eq!(ann.files().unwrap().len(), 1);
        assert_eq!(album_ids(&store, "ann", album), vec![first.file_id.0]);
        assert_eq!(ann.usage().unwrap().unique_bytes, BIG as u64);
        assert_verified(&store);
    }
}

#[test]
fn hash_mode_skips_same_content_under_any_name_in_same_album() {
    let (_dir, store, album) = store_with_album("ann", "Camera");
    let ann = store.user("ann").unwrap();
    let photo = data(2, BIG);
    let first = put(&store, "ann", album, "IMG_1.JPG", &photo, DedupMode::Hash);
    let renamed = put(&store, "ann", album, "copy of IMG_1.JPG", &photo, DedupMode::Hash);
    assert_eq!((renamed.outcome, renamed.file_id), (Outcome::Skipped, first.file_id));
    assert_eq!(renamed.bytes_written, 0);
    // The file keeps its original name.
    assert_eq!(ann.file(first.file_id).unwrap().name, "IMG_1.JPG");
    assert_eq!(ann.usage().unwrap().files, 1);
    assert_verified(&store);
}

#[test]
fn hash_mode_links_same_content_from_other_album() {
    let (_dir, store, camera) = store_with_album("ann", "Camera");
    let ann = store.user("ann").unwrap();
    let trip = ann.ensure_album("Trip").unwrap();
    let photo = data(3, BIG);
    let first = put(&store, "ann", camera, "IMG_1.JPG", &photo, DedupMode::Hash);
    let blobs_before = store.stats().unwrap().blobs;

    let linked = put(&store, "ann", trip, "other-name.jpg", &photo, DedupMode::Hash);
    assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, first.file_id));
    assert_eq!((linked.bytes_written, linked.charged_bytes), (0, 0));
    assert_eq!(album_ids(&store, "ann", trip), vec![first.file_id.0]);
    assert_eq!(album_ids(&store, "ann", camera), vec![first.file_id.0]);
    let info = ann.file(first.file_id).unwrap();
    assert_eq!(info.albums, vec![camera, trip]);
    let usage = ann.usage().unwrap();
    assert_eq!(
        (usage.files, usage.unique_bytes, usage.logical_bytes),
        (1, BIG as u64, BIG as u64)
    );
    assert_eq!(store.stats().unwrap().blobs, blobs_before);
    assert_verified(&store);
}

#[test]
fn name_and_hash_mode_skips_same_name_and_content_in_same_album() {
    let (_dir, store, album) = store_with_album("dee", "Desktop");
    let photo = data(4, BIG);
    let first = put(&store, "dee", album, "a.jpg", &photo, DedupMode::NameAndHash);
    let again = put(&store, "dee", album, "a.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!(
        (again.outcome, again.file_id, again.bytes_written),
        (Outcome::Skipped, first.file_id, 0)
    );
    assert_eq!(store.user("dee").unwrap().files().unwrap().len(), 1);
    assert_verified(&store);
}

#[test]
fn name_and_hash_mode_links_same_name_and_content_from_other_album() {
    let (_dir, store, a) = store_with_album("dee", "A");
    let dee = store.user("dee").unwrap();
    let b = dee.ensure_album("B").unwrap();
    let photo = data(5, BIG);
    let first = put(&store, "dee", a, "a.jpg", &photo, DedupMode::NameAndHash);
    let linked = put(&store, "dee", b, "a.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, first.file_id));
    assert_eq!((linked.bytes_written, linked.charged_bytes), (0, 0));
    assert_eq!(album_ids(&store, "dee", b), vec![first.file_id.0]);
    assert_eq!(dee.usage().unwrap().files, 1);
    assert_verified(&store);
}

#[test]
fn name_and_hash_mode_stores_same_content_under_new_name_sharing_the_blob() {
    let (_dir, store, album) = store_with_album("dee", "Desktop");
    let dee = store.user("dee").unwrap();
    let photo = data(6, BIG);
    let first = put(&store, "dee", album, "a.jpg", &photo, DedupMode::NameAndHash);
    let before = dee.usage().unwrap();
    let stats_before = store.stats().unwrap();

    let second = put(&store, "dee", album, "b.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!(second.outcome, Outcome::Stored);
    assert_ne!(second.file_id, first.file_id);
    assert_eq!((second.bytes_written, second.charged_bytes), (0, 0));

    let after = dee.usage().unwrap();
    assert_eq!(after.unique_bytes, before.unique_bytes);
    assert_eq!(after.logical_bytes, before.logical_bytes + BIG as u64);
    assert_eq!((after.files, after.blobs), (2, 1));
    let stats = store.stats().unwrap();
    assert_eq!(stats.blobs, stats_before.blobs);
    assert_eq!(stats.disk_bytes, stats_before.disk_bytes);
    assert_eq!(album_ids(&store, "dee", album), vec![first.file_id.0, second.file_id.0]);
    assert_eq!(dee.read(second.file_id).unwrap(), photo);
    assert_verified(&store);
}

#[test]
fn name_and_hash_mode_stores_same_name_with_new_content() {
    let (_dir, store, album) = store_with_album("dee", "Desktop");
    let dee = store.user("dee").unwrap();
    let v1 = data(7, BIG);
    let v2 = data(8, BIG + 1);
    let first = put(&store, "dee", album, "edit.jpg", &v1, DedupMode::NameAndHash);
    let second = put(&store, "dee", album, "edit.jpg", &v2, DedupMode::NameAndHash);
    assert_eq!(second.outcome, Outcome::Stored);
    assert_ne!(second.file_id, first.file_id);
    assert_eq!(
        (second.bytes_written, second.charged_bytes),
        (v2.len() as u64, v2.len() as u64)
    );
    assert_eq!(dee.read(first.file_id).unwrap(), v1);
    assert_eq!(dee.read(second.file_id).unwrap(), v2);
    assert_eq!(dee.usage().unwrap().unique_bytes, (v1.len() + v2.len()) as u64);
    assert_verified(&store);
}

#[test]
fn oldest_of_several_duplicates_is_chosen() {
    let (_dir, store, a) = store_with_album("dee", "A");
    let dee = store.user("dee").unwrap();
    let b = dee.ensure_album("B").unwrap();
    let c = dee.ensure_album("C").unwrap();
    let photo = data(9, BIG);
    // Three files with the same content (and two with the same name).
    let f1 = put(&store, "dee", a, "x.jpg", &photo, DedupMode::NameAndHash);
    let f2 = put(&store, "dee", a, "y.jpg", &photo, DedupMode::NameAndHash);
    let f3 = put(&store, "dee", b, "x.jpg", &data(10, BIG), DedupMode::NameAndHash);
    let f4 = put(&store, "dee", b, "y.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!(f2.outcome, Outcome::Stored);
    assert_eq!(f4.outcome, Outcome::Linked);
    assert_eq!(f4.file_id, f2.file_id);
    assert!(f1.file_id < f2.file_id && f2.file_id < f3.file_id);

    // Hash mode: the lowest id among the content's files, every time.
    for _ in 0..3 {
        let r = put(&store, "dee", c, "whatever.jpg", &photo, DedupMode::Hash);
        assert_eq!(r.file_id, f1.file_id);
    }
    assert_eq!(album_ids(&store, "dee", c), vec![f1.file_id.0]);
    assert_eq!(
        dee.check(&HashedUpload {
            album: c,
            name: "y.jpg".into(),
            hash: ContentHash::of(&photo),
            mode: DedupMode::Hash
        })
        .unwrap(),
        Preflight::Skip(f1.file_id)
    );
    let found: Vec<FileId> = dee
        .find_by_hash(ContentHash::of(&photo))
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(found, vec![f1.file_id, f2.file_id]);
    assert_verified(&store);
}

/// The sequence: back up, delete, back up again, restore the first
/// from the trash. The second backup restores the trashed file (into the
/// album it is uploaded to), so there is no second file for the album to
/// show, and the restore has nothing left to do.
#[test]
fn backup_delete_backup_again_then_restore_never_shows_the_photo_twice() {
    for mode in MODES {
        let (_dir, store, a) = store_with_album("ann", "A");
        let ann = store.user("ann").unwrap();
        let b = ann.ensure_album("B").unwrap();
        let photo = data(11, BIG);
        let old = put(&store, "ann", a, "p.jpg", &photo, mode);
        ann.add_to_album(old.file_id, b).unwrap();
        ann.delete(old.file_id).unwrap();
        let again = put(&store, "ann", b, "p.jpg", &photo, mode);
        assert_eq!(
            (again.outcome, again.file_id, again.bytes_written, again.charged_bytes),
            (Outcome::Restored, old.file_id, 0, 0),
            "{mode:?}"
        );
        assert_eq!(album_ids(&store, "ann", b), vec![old.file_id.0], "{mode:?}");
        assert!(
            album_ids(&store, "ann", a).is_empty(),
            "{mode:?}: into the upload's album only"
        );
        assert!(matches!(
            ann.restore(old.file_id),
            Err(keepsake::LibraryError::NotTrashed(_))
        ));

        let hash = ContentHash::of(&photo);
        let query = HashedUpload {
            album: b,
            name: "p.jpg".into(),
            hash,
            mode,
        };
        assert_eq!(ann.check(&query).unwrap(), Preflight::Skip(old.file_id), "{mode:?}");
        assert_eq!(put(&store, "ann", b, "p.jpg", &photo, mode).outcome, Outcome::Skipped);
        assert_eq!(
            album_ids(&store, "ann", b),
            vec![old.file_id.0],
            "{mode:?}: B shows the photo twice"
        );
        assert_verified(&store);
    }
}

#[test]
fn duplicates_inside_one_batch_are_caught() {
    let (_dir, store, a) = store_with_album("bob", "A");
    let bob = store.user("bob").unwrap();
    let b = bob.ensure_album("B").unwrap();
    let x = data(12, BIG);
    let y = data(13, BIG);
    let up = |album, name: &str, bytes: &[u8], mode| Upload::new(album, name, Content::from(bytes), mode);
    let results = bob.upload_batch(vec![
        up(a, "x.jpg", &x, DedupMode::Hash),
        up(a, "x2.jpg", &x, DedupMode::Hash), // same album: Skipped
        up(b, "x3.jpg", &x, DedupMode::Hash), // other album: Linked
        up(a, "y.jpg", &y, DedupMode::NameAndHash),
        up(b, "y.jpg", &y, DedupMode::NameAndHash), // same name, other album: Linked
        up(a, "y-copy.jpg", &y, DedupMode::NameAndHash), // other name: Stored, no bytes
    ]);
    let r: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let outcomes: Vec<Outcome> = r.iter().map(|r| r.outcome).collect();
    use Outcome::*;
    assert_eq!(outcomes, vec![Stored, Skipped, Linked, Stored, Linked, Stored]);
    assert_eq!(r[1].file_id, r[0].file_id);
    assert_eq!(r[2].file_id, r[0].file_id);
    assert_eq!(r[4].file_id, r[3].file_id);
    assert_ne!(r[5].file_id, r[3].file_id);
    let written: Vec<u64> = r.iter().map(|r| r.bytes_written).collect();
    assert_eq!(written, vec![BIG as u64, 0, 0, BIG as u64, 0, 0]);
    let charged: Vec<u64> = r.iter().map(|r| r.charged_bytes).collect();
    assert_eq!(charged, vec![BIG as u64, 0, 0, BIG as u64, 0, 0]);

    let usage = bob.usage().unwrap();
    assert_eq!((usage.files, usage.blobs, usage.unique_bytes), (3, 2, 2 * BIG as u64));
    assert_eq!(usage.logical_bytes, 3 * BIG as u64);
    assert_eq!(store.stats().unwrap().blobs, 2);
    assert_eq!(bob.read(r[5].file_id).unwrap(), y);
    assert_verified(&store);
}

#[test]
fn reupload_of_content_only_in_the_trash_restores_that_file_in_both_modes() {
    for mode in MODES {
        let (_dir, store, album) = store_with_album("ann", "Camera");
        let ann = store.user("ann").unwrap();
        let photo = data(14, BIG);
        let first = put(&store, "ann", album, "IMG.JPG", &photo, mode);
        ann.delete(first.file_id).unwrap();
        let before = ann.usage().unwrap();
        let hash = ContentHash::of(&photo);
        let query = HashedUpload {
            album,
            name: "IMG.JPG".into(),
            hash,
            mode,
        };
        assert_eq!(
            ann.check(&query).unwrap(),
            Preflight::Restore(first.file_id),
            "{mode:?}"
        );

        let again = put(&store, "ann", album, "IMG.JPG", &photo, mode);
        assert_eq!(
            (again.outcome, again.file_id),
            (Outcome::Restored, first.file_id),
            "{mode:?}"
        );
        assert_eq!((again.bytes_written, again.charged_bytes), (0, 0), "{mode:?}");
        let usage = ann.usage().unwrap();
        assert_eq!((usage.files, usage.trashed_files), (1, 0));
        assert_eq!((usage.unique_bytes, usage.logical_bytes), (BIG as u64, BIG as u64));
        assert_eq!(before.unique_bytes, usage.unique_bytes, "{mode:?}: charged once");
        assert!(ann.trash().unwrap().is_empty());
        assert_eq!(album_ids(&store, "ann", album), vec![first.file_id.0]);
        assert_eq!(ann.read(first.file_id).unwrap(), photo);
        assert_verified(&store);
    }
}

/// Under the desktop rule a name is part of the duplicate: the same content
/// under another name is a new file, and the trashed one stays trashed.
#[test]
fn a_trashed_file_is_restored_only_by_a_duplicate_under_the_uploads_rule() {
    let (_dir, store, album) = store_with_album("ann", "Camera");
    let ann = store.user("ann").unwrap();
    let photo = data(15, BIG);
    let first = put(&store, "ann", album, "IMG.JPG", &photo, DedupMode::NameAndHash);
    ann.delete(first.file_id).unwrap();
    let other = put(&store, "ann", album, "copy.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!((other.outcome, other.bytes_written), (Outcome::Stored, 0));
    assert_eq!(ann.trash().unwrap()[0].id, first.file_id);
    // The mobile rule matches content alone: with a live duplicate, it links
    // that one rather than restoring.
    let b = ann.ensure_album("B").unwrap();
    let linked = put(&store, "ann", b, "IMG.JPG", &photo, DedupMode::Hash);
    assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, other.file_id));
    assert_eq!(ann.trash().unwrap()[0].id, first.file_id);
    assert_verified(&store);
}

#[test]
fn check_answers_skip_link_or_upload_in_both_modes() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let photo = data(15, BIG);
    let h = ContentHash::of(&photo);
    let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash).file_id;

    use DedupMode::*;
    assert_eq!(
        ann.check(&HashedUpload {
            album: a,
            name: "p.jpg".into(),
            hash: h,
            mode: Hash
        })
        .unwrap(),
        Preflight::Skip(f)
    );
    assert_eq!(
        ann.check(&HashedUpload {
            album: a,
            name: "q.jpg".into(),
            hash: h,
            mode: Hash
        })
        .unwrap(),
        Preflight::Skip(f)
    );
    assert_eq!(
        ann.check(&HashedUpload {
            album: b,
            name: "q.jpg".into(),
            hash: h,
            mode: Hash
        })
        .unwrap(),
        Preflight::Link(f)
    );
    assert_eq!(
        ann.check(&HashedUpload {
            album: a,
            name: "p.jpg".into(),
            hash: h,
            mode: NameAndHash
        })
        .unwrap(),
        Preflight::Skip(f)
    );
    assert_eq!(
        ann.check(&HashedUpload {
            album: b,
            name: "p.jpg".into(),
            hash: h,
            mode: NameAndHash
        })
        .unwrap(),
        Preflight::Link(f)
    );
    assert_eq!(
        ann.check(&HashedUpload {
            album: a,
            name: "q.jpg".into(),
            hash: h,
            mode: NameAndHash
        })
        .unwrap(),
        Preflight::Upload
    );
    let other = ContentHash::of(b"never uploaded");
    for mode in MODES {
        assert_eq!(
            ann.check(&HashedUpload {
                album: a,
                name: "p.jpg".into(),
                hash: other,
                mode
            })
            .unwrap(),
            Preflight::Upload
        );
    }
    assert!(matches!(
        ann.check(&HashedUpload {
            album: AlbumId(99),
            name: "p.jpg".into(),
            hash: h,
            mode: Hash
        }),
        Err(UploadError::UnknownAlbum(_))
    ));
    // check is read-only.
    assert_eq!(album_ids(&store, "ann", b), Vec::<u64>::new());
    assert_verified(&store);
}

#[test]
fn link_completes_skip_and_link_without_data_and_changes_nothing_else() {
    for mode in MODES {
        let (_dir, store, a) = store_with_album("ann", "A");
        let ann = store.user("ann").unwrap();
        let b = ann.ensure_album("B").unwrap();
        let photo = data(16, BIG);
        let h = ContentHash::of(&photo);
        let f = put(&store, "ann", a, "p.jpg", &photo, mode).file_id;
        let usage = ann.usage().unwrap();
        let stats = store.stats().unwrap();

        let skipped = ann
            .link(&HashedUpload {
                album: a,
                name: "p.jpg".into(),
                hash: h,
                mode,
            })
            .unwrap();
        assert_eq!((skipped.outcome, skipped.file_id), (Outcome::Skipped, f));
        assert_eq!(
            (skipped.bytes_written, skipped.charged_bytes, skipped.size),
            (0, 0, BIG as u64)
        );
        assert_eq!(skipped.hash, h);

        let linked = ann
            .link(&HashedUpload {
                album: b,
                name: "p.jpg".into(),
                hash: h,
                mode,
            })
            .unwrap();
        assert_eq!((linked.outcome, linked.file_id), (Outcome::Linked, f));
        assert_eq!((linked.bytes_written, linked.charged_bytes), (0, 0));
        assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
        assert_eq!(album_ids(&store, "ann", a), vec![f.0]);

        assert_eq!(ann.usage().unwrap(), usage, "{mode:?}");
        let after = store.stats().unwrap();
        assert_eq!(
            (after.files, after.blobs, after.disk_bytes),
            (stats.files, stats.blobs, stats.disk_bytes)
        );
        assert_verified(&store);
    }
}

#[test]
fn link_requires_content_for_unknown_matches_and_restores_trashed_ones() {
    let (_dir, store, a) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let b = ann.ensure_album("B").unwrap();
    let photo = data(17, BIG);
    let h = ContentHash::of(&photo);
    let f = put(&store, "ann", a, "p.jpg", &photo, DedupMode::Hash).file_id;

    // Same content, other name, NameAndHash: needs the bytes (a new file).
    assert!(matches!(
        ann.link(&HashedUpload {
            album: b,
            name: "other.jpg".into(),
            hash: h,
            mode: DedupMode::NameAndHash
        }),
        Err(UploadError::ContentRequired)
    ));
    // Content unknown to the user.
    assert!(matches!(
        ann.link(&HashedUpload {
            album: a,
            name: "p.jpg".into(),
            hash: ContentHash::of(b"unknown"),
            mode: DedupMode::Hash
        }),
        Err(UploadError::ContentRequired)
    ));
    // Only a trashed match: no bytes needed, the link restores it.
    ann.delete(f).unwrap();
    let restored = ann
        .link(&HashedUpload {
            album: b,
            name: "p.jpg".into(),
            hash: h,
            mode: DedupMode::NameAndHash,
        })
        .unwrap();
    assert_eq!((restored.outcome, restored.file_id), (Outcome::Restored, f));
    assert_eq!(album_ids(&store, "ann", b), vec![f.0]);
    assert!(album_ids(&store, "ann", a).is_empty());
    assert_verified(&store);
}

#[test]
fn other_users_content_needs_full_upload_and_is_charged_in_full() {
    let (_dir, store, a_album) = store_with_album("alice", "A");
    let alice = store.user("alice").unwrap();
    let b_album = store.user("bob").unwrap().ensure_album("B").unwrap();
    let photo = data(18, BIG);
    let h = ContentHash::of(&photo);
    let a_file = put(&store, "alice", a_album, "p.jpg", &photo, DedupMode::Hash);
    let alice_usage = alice.usage().unwrap();

    for mode in MODES {
        assert_eq!(
            store
                .user("bob")
                .unwrap()
                .check(&HashedUpload {
                    album: b_album,
                    name: "p.jpg".into(),
                    hash: h,
                    mode
                })
                .unwrap(),
            Preflight::Upload
        );
        assert!(matches!(
            store.user("bob").unwrap().link(&HashedUpload {
                album: b_album,
                name: "p.jpg".into(),
                hash: h,
                mode
            }),
            Err(UploadError::ContentRequired)
        ));
    }
    assert!(store.user("bob").unwrap().files().unwrap().is_empty());
    assert_eq!(store.user("bob").unwrap().usage().unwrap().unique_bytes, 0);

    let b_file = put(&store, "bob", b_album, "p.jpg", &photo, DedupMode::Hash);
    assert_eq!(b_file.outcome, Outcome::Stored);
    assert_eq!(
        b_file.bytes_written, BIG as u64,
        "new to bob, so written for him: the work must not tell him alice has it"
    );
    assert_eq!(b_file.charged_bytes, BIG as u64, "bob is charged for what he keeps");
    let bob = store.user("bob").unwrap().usage().unwrap();
    assert_eq!((bob.unique_bytes, bob.files, bob.blobs), (BIG as u64, 1, 1));
    assert_eq!(alice.usage().unwrap(), alice_usage);
    let stats = store.stats().unwrap();
    assert_eq!((stats.blobs, stats.files, stats.physical_bytes), (1, 2, BIG as u64));
    assert_eq!(stats.logical_bytes, 2 * BIG as u64);
    assert_eq!(store.user("bob").unwrap().read(b_file.file_id).unwrap(), photo);
    assert_eq!(alice.read(a_file.file_id).unwrap(), photo);
    assert_verified(&store);
}

#[test]
fn other_users_ids_behave_like_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Alice has more albums and files than Bob, so her highest ids are
    // unused numbers for him.
    let mut alice_albums = Vec::new();
    for name in ["A1", "A2", "A3"] {
        alice_albums.push(store.user("alice").unwrap().ensure_album(name).unwrap());
    }
    let a3 = *alice_albums.last().unwrap();
    let mut alice_files = Vec::new();
    for i in 0..3 {
        alice_files.push(
            put(
                &store,
                "alice",
                a3,
                &format!("{i}.jpg"),
                &data(100 + i, BIG),
                DedupMode::Hash,
            )
            .file_id,
        );
    }
    let af = *alice_files.last().unwrap();
    let b_album = store.user("bob").unwrap().ensure_album("B").unwrap();
    let b_file = put(&store, "bob", b_album, "b.jpg", &data(200, BIG), DedupMode::Hash).file_id;
    assert!(af > b_file && a3 > b_album);
    let alice_before = (
        store.user("alice").unwrap().usage().unwrap(),
        store.user("alice").unwrap().albums().unwrap(),
        store.user("alice").unwrap().files().unwrap(),
    );

    let unknown_file = |r: Result<(), Error>| is_unknown_file(r, af);
    assert!(unknown_file(
        store.user("bob").unwrap().read(af).map(drop).map_err(Error::from)
    ));
    assert!(unknown_file(
        store.user("bob").unwrap().file(af).map(drop).map_err(Error::from)
    ));
    assert!(unknown_file(store.user("bob").unwrap().delete(af).map_err(Error::from)));
    assert!(unknown_file(
        store.user("bob").unwrap().restore(af).map(drop).map_err(Error::from)
    ));
    assert!(unknown_file(
        store
            .user("bob")
            .unwrap()
            .add_to_album(af, b_album)
            .map(drop)
            .map_err(Error::from)
    ));
    assert!(unknown_file(
        store
            .user("bob")
            .unwrap()
            .remove_from_album(af, b_album)
            .map_err(Error::from)
    ));
    assert!(unknown_file(
        store
            .user("bob")
            .unwrap()
            .move_file(af, b_album, b_album)
            .map_err(Error::from)
    ));

    let unknown_album = |r: Result<(), Error>| is_unknown_album(r);
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .album_files(a3)
            .map(drop)
            .map_err(Error::from)
    ));
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .rename_album(a3, "mine now")
            .map_err(Error::from)
    ));
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .delete_album(a3, keepsake::AlbumDeletion::TrashFiles)
            .map(drop)
            .map_err(Error::from)
    ));
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .add_to_album(b_file, a3)
            .map(drop)
            .map_err(Error::from)
    ));
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .move_file(b_file, b_album, a3)
            .map_err(Error::from)
    ));
    assert!(unknown_album(
        store
            .user("bob")
            .unwrap()
            .check(&HashedUpload {
                album: a3,
                name: "x.jpg".into(),
                hash: ContentHash::of(b"x"),
                mode: DedupMode::Hash
            })
            .map(drop)
            .map_err(Error::from)
    ));
    let e = put_err(&store, "bob", a3, "x.jpg", &data(201, BIG), DedupMode::Hash);
    assert!(matches!(e, UploadError::UnknownAlbum(_)), "{e:?}");

    assert_eq!(
        (
            store.user("alice").unwrap().usage().unwrap(),
            store.user("alice").unwrap().albums().unwrap(),
            store.user("alice").unwrap().files().unwrap()
        ),
        alice_before
    );
    assert_eq!(store.user("bob").unwrap().files().unwrap().len(), 1);
    assert_eq!(store.user("bob").unwrap().usage().unwrap().unique_bytes, BIG as u64);
    assert_verified(&store);
}

#[test]
fn wrong_expected_hash_is_refused_and_stores_nothing() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    put(&store, "ann", album, "keep.jpg", &data(19, BIG), DedupMode::Hash);
    let usage = ann.usage().unwrap();
    let stats = store.stats().unwrap();

    let bytes = data(20, BIG);
    let wrong = ContentHash::of(b"something else");
    let results = ann.upload_batch(vec![Upload::new(
        album,
        "x.jpg",
        Content::from(bytes.clone()),
        DedupMode::Hash,
    )
    .expect_hash(wrong)]);
    match &results[0] {
        Err(UploadError::HashMismatch(HashMismatch { expected, actual })) => {
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, ContentHash::of(&bytes));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert_eq!(ann.usage().unwrap(), usage);
    assert_eq!(ann.files().unwrap().len(), 1);
    assert!(ann.find_by_hash(ContentHash::of(&bytes)).unwrap().is_empty());
    assert_eq!(store.stats().unwrap().blobs, stats.blobs);

    // The right hash is accepted.
    let ok = ann.upload_batch(vec![Upload::new(
        album,
        "x.jpg",
        Content::from(bytes.clone()),
        DedupMode::Hash,
    )
    .expect_hash(ContentHash::of(&bytes))]);
    assert_eq!(ok[0].as_ref().unwrap().outcome, Outcome::Stored);
    assert_verified(&store);
}

#[test]
fn path_and_reader_contents_store_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path().join("store").as_path());
    let album = store.user("ann").unwrap().ensure_album("A").unwrap();

    let src = dir.path().join("photo.jpg");
    let on_disk = data(21, 3 * BIG);
    std::fs::write(&src, &on_disk).unwrap();
    let from_path = store
        .user("ann")
        .unwrap()
        .upload(album, "photo.jpg", Content::Path(src.clone()), DedupMode::Hash)
        .unwrap();
    assert_eq!(
        (from_path.outcome, from_path.size),
        (Outcome::Stored, on_disk.len() as u64)
    );
    assert_eq!(from_path.hash, ContentHash::of(&on_disk));
    assert_eq!(store.user("ann").unwrap().read(from_path.file_id).unwrap(), on_disk);

    let small = data(22, 5 * BIG);
    let from_reader = store
        .user("ann")
        .unwrap()
        .upload(
            album,
            "s.jpg",
            Content::Reader(Box::new(io::Cursor::new(small.clone()))),
            DedupMode::Hash,
        )
        .unwrap();
    assert_eq!(from_reader.bytes_written, small.len() as u64);
    assert_eq!(store.user("ann").unwrap().read(from_reader.file_id).unwrap(), small);

    // Larger than the 16 MiB in-memory limit: staged on disk first.
    let large = data(23, (16 << 20) + 123_457);
    let staged = store
        .user("ann")
        .unwrap()
        .upload(
            album,
            "v.mp4",
            Content::Reader(Box::new(io::Cursor::new(large.clone()))),
            DedupMode::Hash,
        )
        .unwrap();
    assert_eq!((staged.outcome, staged.size), (Outcome::Stored, large.len() as u64));
    assert_eq!(staged.hash, ContentHash::of(&large));
    let mut streamed = Vec::new();
    store
        .user("ann")
        .unwrap()
        .open_file(staged.file_id)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert!(streamed == large, "staged reader content differs");
    let staging = dir.path().join("store").join("staging");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staged copy left behind"
    );

    // The same large content again, from a path: a Skipped duplicate.
    std::fs::write(&src, &large).unwrap();
    let again = store
        .user("ann")
        .unwrap()
        .upload(album, "v2.mp4", Content::Path(src), DedupMode::Hash)
        .unwrap();
    assert_eq!((again.outcome, again.file_id), (Outcome::Skipped, staged.file_id));
    assert_verified(&store);
}

#[test]
fn missing_path_gives_io_error_naming_it() {
    let (dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let missing = dir.path().join("no-such-photo.jpg");
    let err = ann
        .upload(album, "p.jpg", Content::Path(missing.clone()), DedupMode::Hash)
        .unwrap_err();
    match &err {
        UploadError::Storage(StorageError::Io { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::NotFound),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(
        err.to_string().contains("no-such-photo.jpg"),
        "message does not name the path: {err}"
    );
    assert!(ann.files().unwrap().is_empty());
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert_verified(&store);
}

#[test]
fn empty_file_is_stored_and_reads_back_empty() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let r = put(&store, "ann", album, "empty.txt", b"", DedupMode::NameAndHash);
    assert_eq!(
        (r.outcome, r.size, r.bytes_written, r.charged_bytes),
        (Outcome::Stored, 0, 0, 0)
    );
    assert!(ann.read(r.file_id).unwrap().is_empty());
    assert!(ann.open_file(r.file_id).unwrap().is_empty());
    let again = put(&store, "ann", album, "empty.txt", b"", DedupMode::NameAndHash);
    assert_eq!((again.outcome, again.file_id), (Outcome::Skipped, r.file_id));
    let usage = ann.usage().unwrap();
    assert_eq!((usage.files, usage.blobs, usage.unique_bytes), (1, 1, 0));
    assert_verified(&store);
}
