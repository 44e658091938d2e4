//! Resumable upload sessions: the offset protocol, declared and deferred
//! lengths, preflight at begin, finish equal to a one-shot upload, quota,
//! expiry, one writer per session, per-user isolation, open-time recovery of
//! staged files, and progress surviving `kill -9` of the uploading process.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_verified, begin, begin_mode, data, fresh_store, knob, open, options_with_clock, put, store_with_album,
    ManualClock, TestFs, BIG,
};
use keepsake::{
    AlbumId, Content, ContentHash, DedupMode, HashMismatch, Outcome, SessionError, SessionOptions, Store, StoreOptions,
    UploadError, UploadId, UploadReport, UploadStart,
};

const MODES: [DedupMode; 2] = [DedupMode::Hash, DedupMode::NameAndHash];

/// Appends `bytes` from the session's current offset in pieces of `piece`.
fn send(store: &Store, user: &str, id: UploadId, bytes: &[u8], piece: usize) {
    let mut at = store.user(user).unwrap().upload_status(id).unwrap().offset as usize;
    for chunk in bytes[at..].chunks(piece) {
        let next = store.user(user).unwrap().append(id, at as u64, chunk).unwrap();
        at += chunk.len();
        assert_eq!(next, at as u64);
    }
}

/// Uploads `bytes` through a session, as a client would, and finishes it.
fn upload_resumably(
    store: &Store,
    user: &str,
    album: AlbumId,
    name: &str,
    bytes: &[u8],
    mode: DedupMode,
) -> UploadReport {
    let id = begin_mode(store, user, album, name, mode, Some(bytes.len() as u64), None);
    send(store, user, id, bytes, 7_000);
    store.user(user).unwrap().finish(id).unwrap()
}

/// Finishes ann's session `id` and checks that the file holds `bytes`.
fn finish_exact(store: &Store, id: UploadId, bytes: &[u8]) -> UploadReport {
    let ann = store.user("ann").unwrap();
    let report = ann.finish(id).unwrap();
    assert_eq!(ann.read(report.file_id).unwrap(), bytes);
    report
}

/// The staged file of ann's session `id` (while the store has its record).
fn staged(store: &Store, id: UploadId) -> PathBuf {
    keepsake::testkit::staged::staged_path(store, "ann", id).expect("a session record")
}

#[test]
fn append_at_wrong_offset_is_refused_and_resumes_from_reported_offset() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let video = data(1, 3 * BIG);
    let id = begin(&store, "ann", album, "VID.MP4", Some(video.len() as u64), None);
    ann.append(id, 0, &video[..BIG]).unwrap();
    // A piece that got lost in transit: the next one arrives too far on.
    let gap = ann.append(id, 2 * BIG as u64, &video[2 * BIG..]);
    let Err(SessionError::OffsetMismatch { expected }) = gap else {
        panic!("a gap must be refused, got {gap:?}")
    };
    assert_eq!(expected, BIG as u64);
    // A duplicate of a piece already received is refused too.
    assert!(
        matches!(ann.append(id, 0, &video[..BIG]), Err(SessionError::OffsetMismatch { expected: e }) if e == BIG as u64)
    );
    assert_eq!(ann.upload_status(id).unwrap().offset, expected);
    ann.append(id, expected, &video[BIG..]).unwrap();
    finish_exact(&store, id, &video);
    assert_verified(&store);
}

#[test]
fn bytes_past_declared_length_are_refused_and_an_incomplete_session_cannot_finish() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let video = data(2, BIG);
    let id = begin(&store, "ann", album, "VID.MP4", Some(BIG as u64), None);
    ann.append(id, 0, &video[..100]).unwrap();
    let too_long = ann.append(id, 100, &data(3, BIG));
    assert!(
        matches!(too_long, Err(SessionError::LengthExceeded { declared }) if declared == BIG as u64),
        "{too_long:?}"
    );
    assert_eq!(
        ann.upload_status(id).unwrap().offset,
        100,
        "nothing of a refused piece is taken"
    );
    let early = ann.finish(id);
    assert!(matches!(early, Err(SessionError::UploadIncomplete { offset: 100, declared }) if declared == BIG as u64));
    send(&store, "ann", id, &video, 1000);
    assert!(ann.upload_status(id).unwrap().complete);
    assert_eq!(ann.finish(id).unwrap().size, BIG as u64);
    assert_verified(&store);
}

#[test]
fn deferred_length_is_declared_once_and_never_below_the_bytes_received() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let video = data(4, 2 * BIG);
    let id = begin(&store, "ann", album, "VID.MP4", None, None);
    ann.append(id, 0, &video[..BIG]).unwrap();
    let status = ann.upload_status(id).unwrap();
    assert_eq!((status.declared_length, status.complete), (None, false));
    assert!(matches!(
        ann.set_upload_length(id, BIG as u64 - 1),
        Err(SessionError::InvalidLength { .. })
    ));
    ann.set_upload_length(id, video.len() as u64).unwrap();
    // Repeating the same declaration is harmless; changing it is not.
    ann.set_upload_length(id, video.len() as u64).unwrap();
    assert!(matches!(
        ann.set_upload_length(id, 3 * BIG as u64),
        Err(SessionError::InvalidLength { .. })
    ));
    assert!(matches!(
        ann.append(id, BIG as u64, &video),
        Err(SessionError::LengthExceeded { .. })
    ));
    send(&store, "ann", id, &video, 5000);
    finish_exact(&store, id, &video);

    // A length never declared is what arrived.
    let id = begin(&store, "ann", album, "clip.mp4", None, None);
    let clip = data(5, BIG);
    send(&store, "ann", id, &clip, 3000);
    assert_eq!(ann.finish(id).unwrap().size, BIG as u64);
    assert_verified(&store);
}

#[test]
fn session_resumes_after_reopen_and_finish_rehashes_the_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let video = data(6, 5 * BIG);
    let meta = BTreeMap::from([("filetype".to_string(), "video/mp4".to_string())]);
    let id = {
        let store = open(dir.path());
        let album = store.user("ann").unwrap().ensure_album("Videos").unwrap();
        let start = store
            .user("ann")
            .unwrap()
            .begin_upload(SessionOptions {
                length: Some(video.len() as u64),
                expected_hash: Some(ContentHash::of(&video)),
                metadata: meta.clone(),
                ..SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
            })
            .unwrap();
        let UploadStart::Session(id) = start else {
            panic!("new content needs bytes")
        };
        store.user("ann").unwrap().append(id, 0, &video[..2 * BIG]).unwrap();
        id
    };
    let store = open(dir.path());
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    let status = store.user("ann").unwrap().upload_status(id).unwrap();
    assert_eq!((status.offset, status.metadata), (2 * BIG as u64, meta));
    assert_eq!(store.user("ann").unwrap().uploads().unwrap().len(), 1);
    send(&store, "ann", id, &video, BIG);
    let path = staged(&store, id);
    let report = finish_exact(&store, id, &video);
    assert_eq!(
        (report.outcome, report.hash),
        (Outcome::Stored, ContentHash::of(&video))
    );
    assert!(store.user("ann").unwrap().uploads().unwrap().is_empty());
    assert!(!path.exists());
    assert_verified(&store);
}

#[test]
fn hash_mismatch_at_finish_stores_nothing_and_ends_the_session() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let meant = data(7, 2 * BIG);
    let mut arrived = meant.clone();
    arrived[BIG] ^= 1;
    let id = begin(
        &store,
        "ann",
        album,
        "VID.MP4",
        Some(meant.len() as u64),
        Some(ContentHash::of(&meant)),
    );
    send(&store, "ann", id, &arrived, 4000);
    let path = staged(&store, id);
    let finished = ann.finish(id);
    assert!(
        matches!(finished, Err(SessionError::Upload(UploadError::HashMismatch(HashMismatch { expected, actual })))
            if expected == ContentHash::of(&meant) && actual == ContentHash::of(&arrived)),
        "{finished:?}"
    );
    assert!(ann.files().unwrap().is_empty());
    assert_eq!(ann.usage().unwrap().unique_bytes, 0);
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert!(matches!(ann.upload_status(id), Err(SessionError::UnknownUpload(_))));
    assert!(!path.exists());
    assert_verified(&store);
}

/// Two stores with the same history on the same clock: one takes an upload
/// through a session, the other the same upload in one shot.
fn twins(history: impl Fn(&Store, AlbumId, AlbumId)) -> [(tempfile::TempDir, Store, AlbumId); 2] {
    let clock = ManualClock::new();
    [(); 2].map(|()| {
        let (dir, store) = fresh_store(options_with_clock(&clock));
        let camera = store.user("ann").unwrap().ensure_album("Camera").unwrap();
        let trip = store.user("ann").unwrap().ensure_album("Trip").unwrap();
        history(&store, camera, trip);
        (dir, store, trip)
    })
}

#[track_caller]
fn assert_same_state(a: &Store, b: &Store) {
    assert_eq!(
        a.user("ann").unwrap().files().unwrap(),
        b.user("ann").unwrap().files().unwrap()
    );
    assert_eq!(
        a.user("ann").unwrap().usage().unwrap(),
        b.user("ann").unwrap().usage().unwrap()
    );
    assert_eq!(a.stats().unwrap().blobs, b.stats().unwrap().blobs);
    assert_verified(a);
    assert_verified(b);
}

#[test]
fn finish_reports_what_a_one_shot_upload_reports_in_both_modes() {
    let photo = data(8, 3 * BIG);
    // The user's file with the photo before the upload of "IMG_1.JPG" into
    // Trip (album, name), and the outcome expected per mode.
    let cases = [
        ("new content", None, [Outcome::Stored; 2]),
        (
            "in the target album",
            Some(("Trip", "IMG_1.JPG")),
            [Outcome::Skipped; 2],
        ),
        ("in another album", Some(("Camera", "IMG_1.JPG")), [Outcome::Linked; 2]),
        (
            "under another name elsewhere",
            Some(("Camera", "other.jpg")),
            [Outcome::Linked, Outcome::Stored],
        ),
    ];
    let name = "IMG_1.JPG";
    for (what, before, outcomes) in cases {
        for (mode, outcome) in MODES.into_iter().zip(outcomes) {
            let [(_d1, resumable, trip), (_d2, one_shot, _)] = twins(|s, camera, trip| {
                if let Some((album, earlier_name)) = before {
                    let album = if album == "Trip" { trip } else { camera };
                    put(s, "ann", album, earlier_name, &photo, DedupMode::Hash);
                }
            });
            let via_session = upload_resumably(&resumable, "ann", trip, name, &photo, mode);
            let direct = put(&one_shot, "ann", trip, name, &photo, mode);
            assert_eq!(via_session, direct, "{what}, {mode:?}");
            assert_eq!(via_session.outcome, outcome, "{what}, {mode:?}");
            assert_same_state(&resumable, &one_shot);
        }
    }
}

/// `photo` in pieces of `piece` bytes, as a connection delivers a body.
fn pieces(photo: &[u8], piece: usize) -> Vec<bytes::Bytes> {
    photo.chunks(piece).map(bytes::Bytes::copy_from_slice).collect()
}

#[test]
fn a_session_finished_whole_from_memory_ends_as_a_one_shot_upload_would_and_stages_nothing() {
    let photo = data(30, 3 * BIG);
    for mode in MODES {
        let [(_d1, whole, trip), (_d2, one_shot, _)] = twins(|_, _, _| {});
        let ann = whole.user("ann").unwrap();
        let id = begin_mode(&whole, "ann", trip, "IMG_1.JPG", mode, Some(photo.len() as u64), None);
        let path = staged(&whole, id);
        let report = ann.finish_whole(id, pieces(&photo, 65_537)).unwrap();
        assert_eq!(
            report,
            put(&one_shot, "ann", trip, "IMG_1.JPG", &photo, mode),
            "{mode:?}"
        );
        assert_eq!(ann.read(report.file_id).unwrap(), photo);
        assert!(ann.uploads().unwrap().is_empty());
        assert!(!path.exists() || std::fs::metadata(&path).unwrap().len() == 0);
        assert_same_state(&whole, &one_shot);
    }
}

#[test]
fn a_session_is_finished_whole_only_with_nothing_received_and_exactly_its_length() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let video = data(31, 2 * BIG);
    let len = video.len() as u64;

    // Bytes arrived already: the rest goes by append, from where they end.
    let id = begin(&store, "ann", album, "a.mp4", Some(len), None);
    ann.append(id, 0, &video[..1000]).unwrap();
    let refused = ann.finish_whole(id, pieces(&video, BIG));
    assert!(
        matches!(refused, Err(SessionError::OffsetMismatch { expected: 1000 })),
        "{refused:?}"
    );

    // Shorter or longer than declared: refused, nothing kept.
    let id = begin(&store, "ann", album, "b.mp4", Some(len), None);
    let short = ann.finish_whole(id, pieces(&video[1..], BIG));
    assert!(
        matches!(short, Err(SessionError::UploadIncomplete { offset: 0, declared }) if declared == len),
        "{short:?}"
    );
    let mut longer = video.clone();
    longer.push(0);
    let long = ann.finish_whole(id, pieces(&longer, BIG));
    assert!(
        matches!(long, Err(SessionError::LengthExceeded { declared }) if declared == len),
        "{long:?}"
    );
    assert_eq!(ann.upload_status(id).unwrap().offset, 0);
    assert!(ann.files().unwrap().is_empty());
    // And then it is finished whole after all.
    assert_eq!(
        ann.finish_whole(id, pieces(&video, BIG)).unwrap().outcome,
        Outcome::Stored
    );

    // A deferred length becomes the content's.
    let id = begin(&store, "ann", album, "c.mp4", None, None);
    let report = ann.finish_whole(id, pieces(&video[..BIG], 4096)).unwrap();
    assert_eq!(report.size, BIG as u64);

    // Content other than the declared hash: nothing stored, session gone.
    let meant = data(32, BIG);
    let id = begin(
        &store,
        "ann",
        album,
        "d.mp4",
        Some(BIG as u64),
        Some(ContentHash::of(&meant)),
    );
    let wrong = ann.finish_whole(id, pieces(&video[..BIG], BIG));
    assert!(
        matches!(wrong, Err(SessionError::Upload(UploadError::HashMismatch(_)))),
        "{wrong:?}"
    );
    assert!(matches!(ann.upload_status(id), Err(SessionError::UnknownUpload(_))));
    assert_eq!(ann.files().unwrap().len(), 2);
    assert_verified(&store);
}

#[test]
fn small_content_is_inlined_like_a_one_shot_upload() {
    let note = data(9, 100);
    let [(_d1, resumable, trip), (_d2, one_shot, _)] = twins(|_, _, _| {});
    let via_session = upload_resumably(&resumable, "ann", trip, "note.txt", &note, DedupMode::Hash);
    assert_eq!(
        via_session,
        put(&one_shot, "ann", trip, "note.txt", &note, DedupMode::Hash)
    );
    assert_eq!(
        resumable.user("ann").unwrap().read(via_session.file_id).unwrap(),
        &note[..]
    );
    assert_same_state(&resumable, &one_shot);
}

#[test]
fn expected_hash_of_a_duplicate_completes_at_begin_without_bytes() {
    let photo = data(10, 2 * BIG);
    let hash = ContentHash::of(&photo);
    for (target_holds_it, outcome) in [(true, Outcome::Skipped), (false, Outcome::Linked)] {
        let history = |s: &Store, camera: AlbumId, trip: AlbumId| {
            let album = if target_holds_it { trip } else { camera };
            put(s, "ann", album, "IMG_1.JPG", &photo, DedupMode::Hash);
        };
        let [(_d1, resumable, trip), (_d2, one_shot, _)] = twins(history);
        let started = resumable
            .user("ann")
            .unwrap()
            .begin_upload(SessionOptions {
                length: Some(photo.len() as u64),
                expected_hash: Some(hash),
                ..SessionOptions::new(trip, "IMG_1.JPG", DedupMode::Hash)
            })
            .unwrap();
        let UploadStart::Done(report) = started else {
            panic!("a duplicate needs no bytes, got {started:?}")
        };
        assert_eq!(report.outcome, outcome);
        assert_eq!(
            report,
            put(&one_shot, "ann", trip, "IMG_1.JPG", &photo, DedupMode::Hash)
        );
        assert!(
            resumable.user("ann").unwrap().uploads().unwrap().is_empty(),
            "no session is left behind"
        );
        assert_same_state(&resumable, &one_shot);
    }
}

/// One account cannot open sessions without end: past the limit, begin is
/// refused and nothing is created; finishing, aborting or expiry makes room;
/// other users are not affected.
#[test]
fn a_user_cannot_open_more_sessions_than_the_limit_and_others_are_unaffected() {
    let clock = common::ManualClock::new();
    let options = common::options_with_clock(&clock)
        .max_sessions_per_user(3)
        .upload_expiry(std::time::Duration::from_secs(60));
    let (_dir, store) = common::fresh_store(options);
    let (ann, bob) = (store.user("ann").unwrap(), store.user("bob").unwrap());
    let (album, bobs) = (ann.ensure_album("Videos").unwrap(), bob.ensure_album("Videos").unwrap());
    let begin =
        |user: &keepsake::User, album, name: &str| user.begin_upload(SessionOptions::new(album, name, DedupMode::Hash));
    let ids: Vec<UploadId> = (0..3)
        .map(|i| match begin(&ann, album, &format!("{i}.mp4")).unwrap() {
            UploadStart::Session(id) => id,
            done => panic!("{done:?}"),
        })
        .collect();
    let refused = begin(&ann, album, "3.mp4");
    assert!(
        matches!(refused, Err(SessionError::TooManySessions { limit: 3 })),
        "{refused:?}"
    );
    assert_eq!(ann.uploads().unwrap().len(), 3, "the refused begin created nothing");
    assert!(
        begin(&bob, bobs, "mine.mp4").is_ok(),
        "another user's sessions do not count"
    );

    ann.abort(ids[0]).unwrap();
    assert!(begin(&ann, album, "3.mp4").is_ok(), "an aborted session makes room");
    clock.advance(std::time::Duration::from_secs(120));
    assert!(begin(&ann, album, "4.mp4").is_ok(), "expired sessions do not count");
    assert_verified(&store);
}

/// A declared length is a number from the client: near `u64::MAX`, added
/// to the user's usage, it must be past the limit, not wrap to a small sum
/// that fits (or panic inside the commit).
#[test]
fn a_declared_length_near_u64_max_is_past_the_quota_not_a_wrapped_sum() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    put(&store, "ann", album, "first.jpg", &data(13, BIG), DedupMode::Hash);
    ann.set_quota(Some(100 * BIG as u64)).unwrap();
    for length in [u64::MAX, u64::MAX - BIG as u64 + 1] {
        let refused = ann.begin_upload(SessionOptions {
            length: Some(length),
            ..SessionOptions::new(album, "huge.mp4", DedupMode::Hash)
        });
        assert!(
            matches!(refused, Err(SessionError::Upload(UploadError::QuotaExceeded(q))) if q.needed == length),
            "{refused:?}"
        );
    }
    let id = begin(&store, "ann", album, "later.mp4", None, None);
    assert!(matches!(
        ann.set_upload_length(id, u64::MAX),
        Err(SessionError::Upload(UploadError::QuotaExceeded(_)))
    ));
    assert_eq!(ann.uploads().unwrap().len(), 1, "only the deferred session");
    assert_verified(&store);
}

#[test]
fn quota_is_checked_at_begin_for_the_declared_length_and_again_at_finish() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    ann.set_quota(Some(3 * BIG as u64)).unwrap();
    let too_big = ann.begin_upload(SessionOptions {
        length: Some(4 * BIG as u64),
        ..SessionOptions::new(album, "big.mp4", DedupMode::Hash)
    });
    assert!(
        matches!(too_big, Err(SessionError::Upload(UploadError::QuotaExceeded(_)))),
        "{too_big:?}"
    );
    assert!(ann.uploads().unwrap().is_empty());

    // A deferred length is checked when declared.
    let id = begin(&store, "ann", album, "later.mp4", None, None);
    assert!(matches!(
        ann.set_upload_length(id, 4 * BIG as u64),
        Err(SessionError::Upload(UploadError::QuotaExceeded(_)))
    ));

    // The declared length is reserved: what it holds is not there for a
    // one-shot upload meanwhile.
    let video = data(11, 2 * BIG);
    ann.set_upload_length(id, video.len() as u64).unwrap();
    send(&store, "ann", id, &video, 6000);
    let meanwhile = ann.upload(
        album,
        "meanwhile.jpg",
        Content::from(data(12, 2 * BIG)),
        DedupMode::Hash,
    );
    assert!(
        matches!(&meanwhile, Err(UploadError::QuotaExceeded(q)) if q.used == 2 * BIG as u64),
        "{meanwhile:?}"
    );
    // A limit lowered below the reservation: finish is refused and the
    // session stays, to be finished once there is room again.
    ann.set_quota(Some(BIG as u64)).unwrap();
    assert!(matches!(
        ann.finish(id),
        Err(SessionError::Upload(UploadError::QuotaExceeded(_)))
    ));
    assert!(ann.upload_status(id).unwrap().complete);
    assert_eq!(ann.usage().unwrap().files, 0);
    ann.set_quota(Some(4 * BIG as u64)).unwrap();
    finish_exact(&store, id, &video);
    assert_verified(&store);
}

#[test]
fn expired_sessions_are_unknown_and_gc_removes_them_and_their_staged_files() {
    let clock = ManualClock::new();
    let (_dir, store) = fresh_store(options_with_clock(&clock).upload_expiry(Duration::from_secs(3600)));
    let ann = store.user("ann").unwrap();
    let album = ann.ensure_album("Videos").unwrap();
    let video = data(13, 2 * BIG);
    let idle = begin(&store, "ann", album, "idle.mp4", None, None);
    let busy = begin(&store, "ann", album, "busy.mp4", None, None);
    ann.append(idle, 0, &video[..BIG]).unwrap();
    clock.advance(Duration::from_secs(40 * 60));
    // An append renews the session's life.
    ann.append(busy, 0, &video[..BIG]).unwrap();
    clock.advance(Duration::from_secs(40 * 60));
    assert!(matches!(
        ann.append(idle, BIG as u64, &video[BIG..]),
        Err(SessionError::UnknownUpload(_))
    ));
    assert_eq!(
        ann.uploads().unwrap().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![busy]
    );
    let idle_path = staged(&store, idle);
    assert!(idle_path.exists(), "gc, not the lookup, removes it");

    assert_eq!(store.gc().unwrap().uploads_expired, 1);
    assert!(!idle_path.exists());
    assert!(staged(&store, busy).exists());
    send(&store, "ann", busy, &video, BIG);
    ann.finish(busy).unwrap();
    assert_verified(&store);
}

#[test]
fn abort_removes_the_session_and_its_staged_bytes() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let id = begin(&store, "ann", album, "VID.MP4", None, None);
    ann.append(id, 0, &data(14, BIG)).unwrap();
    let path = staged(&store, id);
    ann.abort(id).unwrap();
    assert!(!path.exists());
    assert!(matches!(ann.upload_status(id), Err(SessionError::UnknownUpload(_))));
    assert!(matches!(ann.abort(id), Err(SessionError::UnknownUpload(_))));
    assert!(ann.files().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn concurrent_requests_on_one_session_are_busy_never_interleaved() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestFs::default();
    let store = Store::open_with(dir.path(), StoreOptions::default().fs(Arc::new(fs.clone()))).unwrap();
    let album = store.user("ann").unwrap().ensure_album("Videos").unwrap();
    store.user("bob").unwrap().ensure_album("Videos").unwrap();
    let (first, second) = (data(15, BIG), data(16, BIG));
    let id = begin(&store, "ann", album, "VID.MP4", None, None);

    fs.pause_next_sync();
    let writer = {
        let (store, first) = (store.clone(), first.clone());
        std::thread::spawn(move || store.user("ann").unwrap().append(id, 0, &first))
    };
    fs.wait_until_sync_paused();
    assert!(matches!(store.user("ann").unwrap().append(id, 0, &second), Err(SessionError::UploadBusy(b)) if b == id));
    assert!(matches!(
        store.user("ann").unwrap().finish(id),
        Err(SessionError::UploadBusy(_))
    ));
    assert!(matches!(
        store.user("ann").unwrap().abort(id),
        Err(SessionError::UploadBusy(_))
    ));
    // Another user learns nothing, not even that the session is busy.
    assert!(matches!(
        store.user("bob").unwrap().append(id, 0, &second),
        Err(SessionError::UnknownUpload(_))
    ));
    fs.release_sync();
    assert_eq!(writer.join().unwrap().unwrap(), BIG as u64);

    assert_eq!(std::fs::read(staged(&store, id)).unwrap(), first);
    finish_exact(&store, id, &first);
    assert_verified(&store);
}

#[test]
fn another_users_upload_id_is_unknown_to_them() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let bob = store.user("bob").unwrap();
    let ann = store.user("ann").unwrap();
    let bobs = bob.ensure_album("Videos").unwrap();
    let id = begin(&store, "ann", album, "VID.MP4", None, None);
    ann.append(id, 0, &data(17, BIG)).unwrap();
    let unknown = |r: Result<(), SessionError>| matches!(r, Err(SessionError::UnknownUpload(i)) if i == id);
    assert!(unknown(bob.upload_status(id).map(drop)));
    assert!(unknown(bob.append(id, BIG as u64, b"x").map(drop)));
    assert!(unknown(bob.set_upload_length(id, 1)));
    assert!(unknown(bob.finish(id).map(drop)));
    assert!(unknown(bob.abort(id)));
    assert!(unknown(store.user("nobody").unwrap().upload_status(id).map(drop)));
    assert!(bob.uploads().unwrap().is_empty());
    // Bob's own sessions get ids of their own.
    assert_ne!(begin(&store, "bob", bobs, "VID.MP4", None, None), id);
    assert_eq!(ann.upload_status(id).unwrap().offset, BIG as u64);
    assert_verified(&store);
}

#[test]
fn upload_ids_are_random_url_safe_strings_and_near_misses_are_unknown() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let ids: Vec<UploadId> = (0..50)
        .map(|i| begin(&store, "ann", album, &format!("{i}.mp4"), None, None))
        .collect();
    let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    for t in &texts {
        assert!(
            t.len() == 32 && t.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{t}"
        );
        assert_eq!(t.parse::<UploadId>().unwrap().to_string(), *t);
    }
    let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    // Consecutive sessions share no run of digits that would count them:
    // ids of a counter differ in their last digits only.
    let shared_prefix = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    assert!(texts.windows(2).all(|w| shared_prefix(&w[0], &w[1]) < 8), "{texts:?}");
    // One digit off is another id, unknown like any other.
    let mut near = texts[0].clone().into_bytes();
    near[31] = if near[31] == b'0' { b'1' } else { b'0' };
    let near: UploadId = String::from_utf8(near).unwrap().parse().unwrap();
    assert!(matches!(ann.upload_status(near), Err(SessionError::UnknownUpload(i)) if i == near));
    assert!(matches!(ann.append(near, 0, b"x"), Err(SessionError::UnknownUpload(_))));
    // Text that is not an id never becomes one: no spelling but the one.
    let upper = texts[0].to_uppercase();
    let long = format!("{}0", texts[0]);
    let slash = format!("{}/", &texts[0][..31]);
    for bad in [
        "",
        "12",
        "-1",
        upper.as_str(),
        long.as_str(),
        slash.as_str(),
        "../../etc/passwd",
    ] {
        if bad != texts[0] {
            assert!(bad.parse::<UploadId>().is_err(), "{bad:?}");
        }
    }
    assert_verified(&store);
}

#[test]
fn client_metadata_beyond_the_bound_is_refused() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    let huge = BTreeMap::from([("note".to_string(), "x".repeat(keepsake::MAX_UPLOAD_METADATA_BYTES))]);
    let refused = ann.begin_upload(SessionOptions {
        metadata: huge,
        ..SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
    });
    assert!(
        matches!(refused, Err(SessionError::MetadataTooLarge { .. })),
        "{refused:?}"
    );
    let many = (0..=keepsake::MAX_UPLOAD_METADATA_ENTRIES)
        .map(|i| (i.to_string(), String::new()))
        .collect();
    let refused = ann.begin_upload(SessionOptions {
        metadata: many,
        ..SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
    });
    assert!(
        matches!(refused, Err(SessionError::MetadataTooLarge { .. })),
        "{refused:?}"
    );
    assert!(ann.uploads().unwrap().is_empty());
}

/// Metadata comes back to clients in headers (tus's `Upload-Metadata`): no
/// value may carry a line break that would forge one, no key a space or a
/// comma that would split it.
#[test]
fn client_metadata_that_could_forge_a_header_is_refused() {
    let (_dir, store, album) = store_with_album("ann", "Videos");
    let ann = store.user("ann").unwrap();
    for (k, v) in [
        ("filename", "a.mp4\r\nX-Evil: 1"),
        ("filename", "a\nb"),
        ("filename", "a\0b"),
        ("file name", "a.mp4"),
        ("a,b", "x"),
        ("", "x"),
        ("k\u{7}", "x"),
    ] {
        let refused = ann.begin_upload(SessionOptions {
            metadata: BTreeMap::from([(k.to_string(), v.to_string())]),
            ..SessionOptions::new(album, "VID.MP4", DedupMode::Hash)
        });
        assert!(
            matches!(refused, Err(SessionError::InvalidMetadata { .. })),
            "{k:?}={v:?}: {refused:?}"
        );
    }
    assert!(ann.uploads().unwrap().is_empty());
}

/// A store in `dir`, closed with one session that has the first `BIG`
/// bytes of `video`: the session's id and staged file.
fn closed_after_first_piece(dir: &Path, video: &[u8]) -> (UploadId, PathBuf) {
    let store = open(dir);
    let album = store.user("ann").unwrap().ensure_album("Videos").unwrap();
    let id = begin(&store, "ann", album, "VID.MP4", Some(video.len() as u64), None);
    store.user("ann").unwrap().append(id, 0, &video[..BIG]).unwrap();
    (id, staged(&store, id))
}

#[test]
fn open_truncates_unacknowledged_tails_and_removes_staged_files_without_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let video = data(18, 2 * BIG);
    let (id, path) = closed_after_first_piece(dir.path(), &video);
    // What a crash after the write, before the commit, leaves.
    let mut tail = std::fs::read(&path).unwrap();
    tail.extend_from_slice(&video[BIG..BIG + 100]);
    std::fs::write(&path, &tail).unwrap();
    let orphan = dir.path().join("uploads").join("999.part");
    std::fs::write(&orphan, b"never acknowledged").unwrap();

    let store = open(dir.path());
    assert_eq!(std::fs::read(&path).unwrap(), &video[..BIG]);
    assert!(!orphan.exists());
    send(&store, "ann", id, &video, BIG);
    finish_exact(&store, id, &video);
    assert_verified(&store);
}

#[test]
fn staged_file_shorter_than_its_offset_restarts_the_session_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let video = data(19, 2 * BIG);
    let (id, path) = closed_after_first_piece(dir.path(), &video);
    // A disk that lost acknowledged bytes.
    std::fs::write(&path, &video[..BIG / 2]).unwrap();
    let store = open(dir.path());
    assert!(
        store
            .recovery_notes()
            .iter()
            .any(|n| n.contains(&format!("upload session {id}"))),
        "{:?}",
        store.recovery_notes()
    );
    assert_eq!(store.user("ann").unwrap().upload_status(id).unwrap().offset, 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    send(&store, "ann", id, &video, BIG);
    finish_exact(&store, id, &video);
    assert_verified(&store);
}

fn keepsake(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .arg("--store")
        .arg(dir)
        .args(["--user", "ann"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_lists_sessions_with_offsets_and_aborts_one() {
    let dir = tempfile::tempdir().unwrap();
    let video = data(21, 2 * BIG);
    let (id, path) = closed_after_first_piece(dir.path(), &video);

    let listed = keepsake(dir.path(), &["uploads", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let sessions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(sessions[0]["id"], serde_json::json!(id));
    assert_eq!(sessions[0]["offset"], BIG as u64);
    assert_eq!(sessions[0]["declared_length"], video.len() as u64);
    assert_eq!(sessions[0]["name"], "VID.MP4");
    let human = keepsake(dir.path(), &["uploads"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("VID.MP4"));

    assert!(keepsake(dir.path(), &["uploads", "abort", &id.to_string()])
        .status
        .success());
    assert!(!path.exists());
    let again = keepsake(dir.path(), &["uploads", "abort", &id.to_string()]);
    assert_eq!(again.status.code(), Some(3), "an unknown session is a missing thing");
    let listed = keepsake(dir.path(), &["uploads", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap(),
        serde_json::json!([])
    );
}

const CRASH_TEST: &str = "upload_progress_survives_kill_9_at_random_moments";
const CHILD_STORE: &str = "KEEPSAKE_UPLOAD_CHILD_STORE";
const CHILD_UPLOAD: &str = "KEEPSAKE_UPLOAD_CHILD_ID";
const CHILD_CONTENT: &str = "KEEPSAKE_UPLOAD_CHILD_CONTENT";
const ACK: &str = "acknowledged ";
const CRASH_CONTENT: usize = 6 << 20;
const MAX_PIECE: u64 = 96 << 10;

/// The child: resumes session `id` (of content `seed`) from its durable
/// offset and appends pieces of varying size, printing each acknowledged
/// offset, until killed.
fn crash_child(dir: &Path, id: UploadId, seed: u64) -> ! {
    let store = open(dir);
    let content = data(seed, CRASH_CONTENT);
    let mut at = store.user("ann").unwrap().upload_status(id).unwrap().offset;
    while at < content.len() as u64 {
        let piece = (8 << 10) + (at.wrapping_mul(0x9E37_79B9) % (MAX_PIECE - (8 << 10)));
        let end = (at + piece).min(content.len() as u64);
        at = store
            .user("ann")
            .unwrap()
            .append(id, at, &content[at as usize..end as usize])
            .unwrap();
        println!("{ACK}{at}");
    }
    std::thread::sleep(Duration::from_secs(3600));
    unreachable!("the parent kills the child");
}

fn env_u64(name: &str) -> Option<u64> {
    Some(std::env::var(name).ok()?.parse().expect("numeric"))
}

/// One upload under repeated `kill -9`: its session and content.
struct Victim {
    id: UploadId,
    /// Its staged file.
    path: PathBuf,
    seed: u64,
    content: Vec<u8>,
}

impl Victim {
    fn begin(dir: &Path, seed: u64) -> Victim {
        let store = open(dir);
        let album = store.user("ann").unwrap().ensure_album("Videos").unwrap();
        let content = data(seed, CRASH_CONTENT);
        let (len, hash) = (content.len() as u64, ContentHash::of(&content));
        let name = format!("VID_{seed}.MP4");
        let id = begin(&store, "ann", album, &name, Some(len), Some(hash));
        let path = staged(&store, id);
        Victim {
            id,
            path,
            seed,
            content,
        }
    }

    /// Sends what is left, finishes, and checks the stored bytes.
    fn finish(&self, store: &Store) {
        send(store, "ann", self.id, &self.content, 1 << 20);
        assert_eq!(finish_exact(store, self.id, &self.content).outcome, Outcome::Stored);
        assert_verified(store);
    }
}

#[test]
fn upload_progress_survives_kill_9_at_random_moments() {
    if let (Some(dir), Some(id), Some(seed)) = (
        std::env::var_os(CHILD_STORE),
        std::env::var(CHILD_UPLOAD)
            .ok()
            .and_then(|id| id.parse::<UploadId>().ok()),
        env_u64(CHILD_CONTENT),
    ) {
        crash_child(Path::new(&dir), id, seed);
    }
    let cycles = knob("KEEPSAKE_UPLOAD_CRASH_CYCLES", 20);
    let mut rng = knob("KEEPSAKE_UPLOAD_CRASH_SEED", 0x7570_6c6f_6164) | 1;
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below.max(1)
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("store");
    let mut victim = Victim::begin(&dir, 20);
    let (mut acknowledged, mut tails_truncated, mut killed_idle, mut finished) = (0u64, 0u64, 0u64, 0u64);
    for cycle in 1..=cycles {
        let at_start = acknowledged;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CRASH_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_STORE, &dir)
            .env(CHILD_UPLOAD, victim.id.to_string())
            .env(CHILD_CONTENT, victim.seed.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (acks, heard) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if let Some(offset) = line.unwrap().strip_prefix(ACK) {
                    let _ = acks.send(offset.parse::<u64>().unwrap());
                }
            }
        });
        // Most kills wait for a random amount of progress and then land
        // anywhere in the next append (write, sync, commit) or between two;
        // some land while the child opens the store.
        if random(5) == 0 {
            std::thread::sleep(Duration::from_millis(random(40)));
        } else {
            let len = victim.content.len() as u64;
            let target = (acknowledged + 1 + random(len / 4)).min(len);
            while let Ok(offset) = heard.recv_timeout(Duration::from_secs(60)) {
                acknowledged = offset;
                if offset >= target {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(random(500)));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acknowledged = heard.try_iter().last().unwrap_or(acknowledged);
        killed_idle += u64::from(acknowledged == at_start);

        let staged_len = std::fs::metadata(&victim.path).unwrap().len();
        let store = open(&dir);
        let offset = store.user("ann").unwrap().upload_status(victim.id).unwrap().offset;
        tails_truncated += u64::from(staged_len > offset);
        let context = format!("cycle {cycle}: acknowledged {acknowledged}, durable {offset}");
        // The durable offset may be one piece ahead: committed, then killed
        // before the acknowledgement was printed.
        assert!(
            offset >= acknowledged && offset <= acknowledged + MAX_PIECE,
            "{context}"
        );
        assert!(
            store.recovery_notes().is_empty(),
            "{context}: {:?}",
            store.recovery_notes()
        );
        assert!(
            std::fs::read(&victim.path).unwrap() == victim.content[..offset as usize],
            "{context}: staged bytes differ"
        );
        acknowledged = offset;
        if offset == victim.content.len() as u64 {
            victim.finish(&store);
            finished += 1;
            drop(store);
            victim = Victim::begin(&dir, victim.seed + 1);
            acknowledged = 0;
        }
    }
    victim.finish(&open(&dir));
    println!(
        "upload crash loop: {cycles} kills ({killed_idle} before the child acknowledged anything), \
         {tails_truncated} unacknowledged tails truncated at open, {} uploads finished",
        finished + 1
    );
}
