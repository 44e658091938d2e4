//! Hostile names, unknown ids, failing sources and a failing disk: refused
//! cleanly, and nothing half-stored.

mod common;

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{assert_verified, data, open, put, put_err, store_with_album, TestFs, BIG};
use keepsake::{
    AlbumDeletion, AlbumId, Content, ContentHash, DedupMode, Error, FileId, HashedUpload, LibraryError, NameError,
    NameKind, Outcome, ReadError, SessionError, StorageError, Store, StoreOptions, Upload, UploadError,
};

fn assert_invalid<E: Into<Error>>(result: Result<impl std::fmt::Debug, E>, kind: NameKind, what: &str) {
    match result.map_err(Into::into) {
        Err(
            Error::Name(NameError { kind: k, .. })
            | Error::Upload(UploadError::InvalidName(NameError { kind: k, .. }))
            | Error::Session(SessionError::Upload(UploadError::InvalidName(NameError { kind: k, .. })))
            | Error::Library(LibraryError::InvalidName(NameError { kind: k, .. })),
        ) => assert_eq!(k, kind, "{what}"),
        other => panic!("{what}: expected InvalidName({kind:?}), got {other:?}"),
    }
}

fn assert_nothing_stored(store: &Store) {
    let stats = store.stats().unwrap();
    assert_eq!((stats.files, stats.blobs), (0, 0), "{stats:?}");
}

#[test]
fn hostile_file_names_are_refused_and_nothing_is_stored() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let long_ascii = "x".repeat(256);
    let long_utf8 = "é".repeat(128); // 256 bytes
                                     // What cannot be one path component; everything else the disk allows is
                                     // a name (`every_name_the_disk_allows_is_backed_up_and_kept_exactly`).
    let hostile = ["", "a/b", "/etc/passwd", "..", ".", "x\0y", &long_ascii, &long_utf8];
    let h = ContentHash::of(b"x");
    for name in hostile {
        for mode in [DedupMode::Hash, DedupMode::NameAndHash] {
            let what = format!("{name:?}");
            assert_invalid(
                ann.upload(album, name, Content::from(data(1, BIG)), mode),
                NameKind::File,
                &what,
            );
            assert_invalid(
                ann.check(&HashedUpload {
                    album,
                    name: name.into(),
                    hash: h,
                    mode,
                }),
                NameKind::File,
                &what,
            );
            assert_invalid(
                ann.link(&HashedUpload {
                    album,
                    name: name.into(),
                    hash: h,
                    mode,
                }),
                NameKind::File,
                &what,
            );
        }
    }
    assert_nothing_stored(&store);
    assert!(ann.album_files(album).unwrap().is_empty());

    // At the limit and unusual but harmless names are fine.
    for name in [
        "x".repeat(255),
        "a..b".into(),
        "été 2024.heic".into(),
        ".hidden".into(),
        "名前.jpg".into(),
    ] {
        let r = put(&store, "ann", album, &name, name.as_bytes(), DedupMode::NameAndHash);
        assert_eq!(ann.file(r.file_id).unwrap().name, name);
    }
    assert_verified(&store);
}

#[test]
fn hostile_album_and_user_names_are_refused() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let long = "y".repeat(256);
    for name in [
        "",
        " ",
        "bell\u{7}",
        "tab\tname",
        "line\nbreak",
        "nul\0",
        "\u{1b}[31mred",
        "del\u{7f}",
        &long,
    ] {
        let what = format!("album {name:?}");
        assert_invalid(ann.create_album(name), NameKind::Album, &what);
        assert_invalid(ann.ensure_album(name), NameKind::Album, &what);
        assert_invalid(ann.rename_album(album, name), NameKind::Album, &what);
        assert_invalid(ann.find_album(name), NameKind::Album, &what);
    }
    // Names a person cannot tell apart from others: refused where an album is
    // named, though a lookup by such a name (an album named before the rule)
    // is allowed and simply finds nothing.
    for name in [
        "Summer\u{202e}gpj.exe",
        "Sum\u{200b}mer",
        "a\u{2028}b",
        "\u{feff}Summer",
        " Summer",
        "Summer ",
        "\u{2066}x\u{2069}",
    ] {
        let what = format!("album {name:?}");
        assert_invalid(ann.create_album(name), NameKind::Album, &what);
        assert_invalid(ann.ensure_album(name), NameKind::Album, &what);
        assert_invalid(ann.rename_album(album, name), NameKind::Album, &what);
        assert!(ann.find_album(name).unwrap().is_none());
    }
    let names: Vec<String> = ann.albums().unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, vec!["A"]);
    // Emoji sequences and scripts that need the zero-width joiners are fine.
    ann.create_album("👨\u{200d}👩\u{200d}👧 Family").unwrap();
    ann.create_album("\u{645}\u{200c}\u{6cc}").unwrap();
    // Slashes are fine in album names: they never become paths.
    ann.create_album("2024/Summer").unwrap();

    // A user handle is made only for a valid name: no operation can run on
    // behalf of an invalid one.
    for user in ["", "a\nb", "\0"] {
        let what = format!("user {user:?}");
        assert_invalid(store.user(user), NameKind::User, &what);
    }
    assert_eq!(store.stats().unwrap().users, 1);
    assert_nothing_stored(&store);
    assert_verified(&store);
}

#[test]
fn unknown_file_and_album_ids_are_reported_as_such() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let f = put(&store, "ann", album, "p.jpg", &data(2, BIG), DedupMode::Hash).file_id;
    let stats = store.stats().unwrap();
    let nf = FileId(f.0 + 1000);
    let na = AlbumId(album.0 + 1000);

    for user in ["ann", "nobody"] {
        assert!(matches!(store.user(user).unwrap().read(nf), Err(ReadError::UnknownFile(x)) if x == nf));
        assert!(matches!(
            store.user(user).unwrap().file(nf),
            Err(LibraryError::UnknownFile(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().delete(nf),
            Err(LibraryError::UnknownFile(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().restore(nf),
            Err(LibraryError::UnknownFile(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().add_to_album(nf, album),
            Err(LibraryError::UnknownFile(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().album_files(na),
            Err(LibraryError::UnknownAlbum(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().rename_album(na, "Z"),
            Err(LibraryError::UnknownAlbum(_))
        ));
        assert!(matches!(
            store.user(user).unwrap().delete_album(na, AlbumDeletion::KeepFiles),
            Err(LibraryError::UnknownAlbum(_))
        ));
    }
    assert!(matches!(ann.add_to_album(f, na), Err(LibraryError::UnknownAlbum(_))));
    assert!(matches!(
        ann.move_file(f, na, album),
        Err(LibraryError::UnknownAlbum(_))
    ));
    assert!(matches!(
        ann.check(&HashedUpload {
            album: na,
            name: "p.jpg".into(),
            hash: ContentHash::of(b"p"),
            mode: DedupMode::Hash
        }),
        Err(UploadError::UnknownAlbum(_))
    ));
    let err = put_err(&store, "ann", na, "new.jpg", &data(3, BIG), DedupMode::Hash);
    assert!(matches!(err, UploadError::UnknownAlbum(_)), "{err:?}");
    assert_eq!(store.stats().unwrap(), stats, "a refused upload changed the store");
    assert_eq!(ann.album_files(album).unwrap()[0].id, f);
    assert_verified(&store);
}

/// Ids are per user: another user's file and album ids name nothing of the
/// caller's, so they are unknown, and they neither read nor change the owner's
/// files.
#[test]
fn another_users_ids_are_unknown_to_the_caller_and_change_nothing() {
    let (_dir, store, ann_album) = store_with_album("ann", "A");
    let bob = store.user("bob").unwrap();
    let photo = data(4, BIG);
    let f = put(&store, "ann", ann_album, "p.jpg", &photo, DedupMode::Hash).file_id;
    let ann_extra = store.user("ann").unwrap().ensure_album("B").unwrap();
    // Bob exists, with an album whose id differs from both of ann's.
    bob.ensure_album("X").unwrap();
    let stats = store.stats().unwrap();

    assert!(matches!(bob.read(f), Err(ReadError::UnknownFile(x)) if x == f));
    assert!(matches!(bob.delete(f), Err(LibraryError::UnknownFile(_))));
    let err = put_err(&store, "bob", ann_extra, "q.jpg", &photo, DedupMode::Hash);
    assert!(matches!(err, UploadError::UnknownAlbum(_)), "{err:?}");
    assert!(matches!(
        bob.link(&HashedUpload {
            album: ann_extra,
            name: "p.jpg".into(),
            hash: ContentHash::of(&photo),
            mode: DedupMode::Hash
        }),
        Err(UploadError::UnknownAlbum(_))
    ));
    assert!(matches!(bob.album_files(ann_extra), Err(LibraryError::UnknownAlbum(_))));

    assert_eq!(store.stats().unwrap(), stats, "a refused call changed the store");
    assert_eq!(store.user("ann").unwrap().read(f).unwrap(), photo);
    assert_eq!(store.user("ann").unwrap().file(f).unwrap().albums, vec![ann_album]);
    assert_verified(&store);
}

/// "Every error leaves the store consistent: an operation that fails has
/// changed nothing" (`Error`'s documentation).
#[test]
fn failed_upload_by_unknown_user_creates_no_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = put_err(&store, "mallory", AlbumId(1), "p.jpg", &data(4, BIG), DedupMode::Hash);
    assert!(matches!(err, UploadError::UnknownAlbum(_)), "{err:?}");
    assert_eq!(store.stats().unwrap().users, 0, "a failed upload created a user");
    assert_verified(&store);
}

/// A source that fails after `fail_at` bytes.
struct BrokenReader {
    served: usize,
    fail_at: usize,
}

impl Read for BrokenReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served >= self.fail_at {
            return Err(io::Error::other("camera disconnected"));
        }
        let n = buf.len().min(self.fail_at - self.served);
        buf[..n].fill(0x5a);
        self.served += n;
        Ok(n)
    }
}

#[test]
fn reader_failing_midway_gives_io_error_and_stores_nothing() {
    let (dir, store, album) = store_with_album("ann", "A");
    // In memory, and past the 16 MiB limit (staged on disk).
    for fail_at in [1 << 20, (16 << 20) + 4096] {
        let reader = BrokenReader { served: 0, fail_at };
        let err = store
            .user("ann")
            .unwrap()
            .upload(album, "clip.mp4", Content::Reader(Box::new(reader)), DedupMode::Hash)
            .unwrap_err();
        match &err {
            UploadError::Storage(StorageError::Io { source, .. }) => {
                assert!(source.to_string().contains("camera disconnected"), "{err}")
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(
            err.to_string().contains("clip.mp4"),
            "the error does not name the upload: {err}"
        );
        assert_nothing_stored(&store);
        let staging = dir.path().join("staging");
        assert_eq!(
            std::fs::read_dir(&staging).unwrap().count(),
            0,
            "staged copy left behind"
        );
    }
    // The store is still writable.
    let ok = put(&store, "ann", album, "ok.jpg", &data(5, BIG), DedupMode::Hash);
    assert_eq!(ok.outcome, Outcome::Stored);
    assert_verified(&store);
}

/// `/proc/self/io` counts the bytes this process has read, so each read of
/// it differs from the last, and its size says 0 bytes: deterministically,
/// a source whose reads disagree with its metadata, as those of a file
/// being written do.
#[test]
fn source_changing_while_being_read_is_refused() {
    let src = Path::new("/proc/self/io");
    match (std::fs::read(src), std::fs::read(src)) {
        (Ok(a), Ok(b)) if a != b => {}
        _ => {
            eprintln!("skipped: /proc/self/io is not available or not changing");
            return;
        }
    }
    let (_dir, store, album) = store_with_album("ann", "A");
    let err = store
        .user("ann")
        .unwrap()
        .upload(album, "io.txt", Content::Path(src.to_path_buf()), DedupMode::Hash)
        .unwrap_err();
    assert!(matches!(err, UploadError::ContentChanged(_)), "{err:?}");
    assert_nothing_stored(&store);
    assert_verified(&store);
}

/// A read the system cannot serve now (here `EMFILE`: the process is out
/// of file descriptors) is an I/O error for the caller and nothing more:
/// only a header or hash mismatch, or a segment that is gone, is evidence
/// of damage. Recording it as damage would make every user's healthy copy
/// of that content ask to be uploaded again.
#[test]
fn a_read_that_fails_with_an_io_error_is_never_recorded_as_damage() {
    let fs = TestFs::default();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().fs(Arc::new(fs.clone()))).unwrap();
    let ann = store.user("ann").unwrap();
    let album = ann.ensure_album("A").unwrap();
    let photo = data(14, BIG);
    let f = put(&store, "ann", album, "p.jpg", &photo, DedupMode::Hash).file_id;
    drop(store.user("ann").unwrap().read(f).unwrap());
    // A fresh store, so that no map of the segment is cached.
    drop(ann);
    drop(store);
    let store = Store::open_with(dir.path(), StoreOptions::default().fs(Arc::new(fs.clone()))).unwrap();
    let ann = store.user("ann").unwrap();

    fs.fail_map.store(true, Ordering::SeqCst);
    match ann.read(f) {
        Err(ReadError::Storage(StorageError::Io { source, .. })) => assert_eq!(source.raw_os_error(), Some(24)),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    fs.fail_map.store(false, Ordering::SeqCst);

    assert_eq!(ann.read(f).unwrap(), photo);
    let known = HashedUpload {
        album,
        name: "p.jpg".into(),
        hash: keepsake::ContentHash::of(&photo),
        mode: DedupMode::Hash,
    };
    // Damage would answer `Upload`: the content asked for again.
    assert_eq!(ann.check(&known).unwrap(), keepsake::Preflight::Skip(f));
    assert_verified(&store);
}

#[test]
fn store_refuses_writes_after_fsync_failure_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestFs::default();
    let opts = || StoreOptions::default().fs(Arc::new(fs.clone()));
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let album = store.user("ann").unwrap().ensure_album("A").unwrap();
    let early: Vec<(FileId, Vec<u8>)> = [data(10, BIG), data(11, 2 * BIG), b"small".to_vec()]
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            (
                put(&store, "ann", album, &format!("{i}.jpg"), &bytes, DedupMode::Hash).file_id,
                bytes,
            )
        })
        .collect();
    let usage = store.user("ann").unwrap().usage().unwrap();

    fs.fail_sync.store(true, Ordering::SeqCst);
    let lost = data(12, BIG);
    let err = put_err(&store, "ann", album, "lost.jpg", &lost, DedupMode::Hash);
    assert!(
        matches!(
            err,
            UploadError::Storage(StorageError::Poisoned(_)) | UploadError::Storage(StorageError::Io { .. })
        ),
        "{err:?}"
    );
    fs.fail_sync.store(false, Ordering::SeqCst);

    // Every later write is refused, whatever it is, even though fsync works again.
    fn poisoned(e: impl Into<Error>, what: &str) {
        let e = e.into();
        assert!(
            matches!(e.storage(), Some(StorageError::Poisoned(_))),
            "{what}: expected Poisoned, got {e:?}"
        );
    }
    poisoned(
        put_err(&store, "ann", album, "lost.jpg", &lost, DedupMode::Hash),
        "retry",
    );
    poisoned(
        put_err(&store, "ann", album, "n.jpg", &data(13, BIG), DedupMode::Hash),
        "new",
    );
    poisoned(
        put_err(&store, "ann", album, "t.txt", b"tiny", DedupMode::Hash),
        "inline",
    );
    poisoned(
        put_err(&store, "ann", album, "0.jpg", &early[0].1, DedupMode::Hash),
        "duplicate",
    );
    poisoned(
        store.user("ann").unwrap().ensure_album("B").unwrap_err(),
        "ensure_album",
    );
    poisoned(store.user("ann").unwrap().delete(early[0].0).unwrap_err(), "delete");
    poisoned(store.user("ann").unwrap().set_quota(Some(1)).unwrap_err(), "set_quota");
    poisoned(store.gc().unwrap_err(), "gc");
    // Reads still work.
    for (id, bytes) in &early {
        assert_eq!(store.user("ann").unwrap().read(*id).unwrap(), *bytes);
    }
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    drop(store);

    let store = Store::open_with(dir.path(), opts()).unwrap();
    assert!(
        store.recovery_notes().iter().any(|n| n.contains("dropped")),
        "the unacknowledged record should be truncated: {:?}",
        store.recovery_notes()
    );
    assert_eq!(store.user("ann").unwrap().usage().unwrap(), usage);
    assert_eq!(store.user("ann").unwrap().files().unwrap().len(), early.len());
    assert!(
        store
            .user("ann")
            .unwrap()
            .find_by_hash(ContentHash::of(&lost))
            .unwrap()
            .is_empty(),
        "failed upload present"
    );
    for (id, bytes) in &early {
        assert_eq!(store.user("ann").unwrap().read(*id).unwrap(), *bytes);
    }
    let r = put(&store, "ann", album, "lost.jpg", &lost, DedupMode::Hash);
    assert_eq!((r.outcome, r.bytes_written), (Outcome::Stored, BIG as u64));
    assert_eq!(store.user("ann").unwrap().read(r.file_id).unwrap(), lost);
    assert_verified(&store);
}

#[test]
fn a_full_disk_fails_the_upload_cleanly_and_the_store_goes_on_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestFs::default();
    let options = || StoreOptions::default().fs(Arc::new(fs.clone()));
    let store = Store::open_with(dir.path(), options()).unwrap();
    let a = store.user("u").unwrap().ensure_album("A").unwrap();
    let kept = data(1, BIG);
    let kept_id = put(&store, "u", a, "kept.jpg", &kept, DedupMode::Hash).file_id;
    let big = data(2, 200_000);

    fs.disk_full.store(true, Ordering::SeqCst);
    let err = put_err(&store, "u", a, "big.mov", &big, DedupMode::Hash);
    assert!(matches!(err, UploadError::Storage(StorageError::Io { .. })), "{err:?}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert_eq!(
        store.user("u").unwrap().files().unwrap().len(),
        1,
        "nothing of the failed upload is listed"
    );
    assert_eq!(store.user("u").unwrap().usage().unwrap().unique_bytes, BIG as u64);
    assert_verified(&store);

    // A failed write is rolled back, not a lost fsync: once space is freed
    // the same store takes the upload, without reopening.
    fs.disk_full.store(false, Ordering::SeqCst);
    let r = put(&store, "u", a, "big.mov", &big, DedupMode::Hash);
    assert_eq!((r.outcome, r.bytes_written), (Outcome::Stored, big.len() as u64));
    assert_eq!(store.user("u").unwrap().read(r.file_id).unwrap(), big);
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.user("u").unwrap().read(kept_id).unwrap(), kept);
    assert_eq!(store.user("u").unwrap().read(r.file_id).unwrap(), big);
    assert_verified(&store);
}

/// A path that is not a regular file is refused, never followed, and never
/// waited on: a symbolic link (to a file the user could not otherwise
/// name), a FIFO (which would block a plain open until a writer came) and a
/// device.
#[test]
fn a_source_that_is_a_symlink_fifo_or_device_is_refused_without_following_or_blocking() {
    let (dir, store, album) = store_with_album("ann", "A");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"not for the backup").unwrap();
    let link = dir.path().join("photo.jpg");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let fifo = dir.path().join("pipe.jpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [link, fifo, std::path::PathBuf::from("/dev/null")] {
        let ann = store.user("ann").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let source = path.clone();
        std::thread::spawn(move || {
            let _ = tx.send(ann.upload(album, "x.jpg", Content::Path(source), DedupMode::Hash));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the upload of {} blocked", path.display()));
        assert!(
            matches!(&r, Err(UploadError::NotAFile(what)) if what.contains(path.to_str().unwrap())),
            "{}: {r:?}",
            path.display()
        );
    }
    assert!(store.user("ann").unwrap().files().unwrap().is_empty());
    assert_verified(&store);
}

/// A file replaced since the caller looked at it (another file renamed into
/// its place), or written since, is not read: what a backup decided to read
/// from its walk is that file in that version, or nothing.
#[test]
fn a_source_replaced_or_written_since_it_was_seen_is_not_read() {
    let (dir, store, album) = store_with_album("ann", "A");
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, b"the photo the walk saw").unwrap();
    let seen = std::fs::symlink_metadata(&photo).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, b"another file, renamed over it").unwrap();
    std::fs::rename(&other, &photo).unwrap();
    let ann = store.user("ann").unwrap();
    let up = |seen: &std::fs::Metadata| {
        let content = Content::Path(photo.clone());
        ann.upload_batch(vec![
            Upload::new(album, "photo.jpg", content, DedupMode::Hash).expect_source(seen)
        ])
        .pop()
        .unwrap()
    };
    assert!(matches!(up(&seen), Err(UploadError::ContentChanged(_))), "replaced");

    let seen = std::fs::symlink_metadata(&photo).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&photo)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b", and more"))
        .unwrap();
    assert!(
        matches!(up(&seen), Err(UploadError::ContentChanged(_))),
        "written since"
    );
    assert!(ann.files().unwrap().is_empty());

    let seen = std::fs::symlink_metadata(&photo).unwrap();
    let r = up(&seen).unwrap();
    assert_eq!(
        ann.read(r.file_id).unwrap(),
        b"another file, renamed over it, and more"[..]
    );
    assert_verified(&store);
}

/// Names that are valid on Linux and macOS are stored exactly, whatever
/// bytes they hold: not UTF-8 (Latin-1 from an old camera), a newline, a
/// tab, a backslash, an escape sequence, only white space.
#[test]
fn every_name_the_disk_allows_is_stored_and_kept_exactly() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let names: [&[u8]; 7] = [
        b"Caf\xe9 cr\xe8me.jpg",
        b"line\nbreak.jpg",
        b"tab\there.jpg",
        b"a\\b.jpg",
        b"\x1b[2J.jpg",
        b" ",
        b"\t",
    ];
    for (i, name) in names.iter().enumerate() {
        let name = keepsake::FileName::from(name.to_vec());
        let r = ann
            .upload(album, &name, Content::from(data(i as u64, 100)), DedupMode::NameAndHash)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let f = ann.file(r.file_id).unwrap();
        assert_eq!(f.name.as_bytes(), name.as_bytes(), "kept exactly");
        let again = ann.upload(album, &name, Content::from(data(i as u64, 100)), DedupMode::NameAndHash);
        assert_eq!(again.unwrap().outcome, Outcome::Skipped, "{name}: the same name");
    }
    assert_eq!(
        ann.files().unwrap()[0].name.to_string(),
        r"Caf\xe9 cr\xe8me.jpg",
        "shown escaped"
    );
    assert_verified(&store);
}

/// Two album names that print the same (NFC and NFD) are one album, which
/// keeps the name it was given first.
#[test]
fn album_names_that_print_alike_are_one_album() {
    let (_dir, store, _) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let nfc = ann.create_album("Caf\u{e9} Cr\u{e8}me").unwrap();
    let nfd = "Cafe\u{301} Cre\u{300}me";
    assert!(matches!(ann.create_album(nfd), Err(LibraryError::AlbumExists(_))));
    assert_eq!(ann.ensure_album(nfd).unwrap(), nfc);
    assert_eq!(ann.find_album(nfd).unwrap().unwrap().name, "Caf\u{e9} Cr\u{e8}me");
    let other = ann.create_album("B").unwrap();
    assert!(matches!(
        ann.rename_album(other, nfd),
        Err(LibraryError::AlbumExists(_))
    ));
    // Another spelling of its own name is a rename, not a clash.
    ann.rename_album(nfc, nfd).unwrap();
    assert_eq!(ann.find_album("Caf\u{e9} Cr\u{e8}me").unwrap().unwrap().name, nfd);
    assert_verified(&store);
}

/// The desktop rule compares names as people see them: the same photo named
/// on Linux (NFC) and on macOS (NFD) is one file, which keeps the bytes of
/// its first name.
#[test]
fn the_same_name_in_nfc_and_nfd_is_one_name_under_the_desktop_rule() {
    let (_dir, store, album) = store_with_album("ann", "A");
    let ann = store.user("ann").unwrap();
    let photo = data(3, 1000);
    let first = put(&store, "ann", album, "Caf\u{e9}.jpg", &photo, DedupMode::NameAndHash);
    let again = put(&store, "ann", album, "Cafe\u{301}.jpg", &photo, DedupMode::NameAndHash);
    assert_eq!((again.outcome, again.file_id), (Outcome::Skipped, first.file_id));
    assert_eq!(ann.files().unwrap().len(), 1);
    assert_eq!(ann.file(first.file_id).unwrap().name, "Caf\u{e9}.jpg");
    assert_verified(&store);
}
