//! No upload tells one user what another user stores: the same sequence of
//! operations by one user gets the same answers and makes the engine do
//! the same work (blob bytes written, syncs, files created) whether another
//! user holds the content, held it and purged it, or never had it.

mod common;

use std::sync::Arc;

use common::{assert_verified, data, TestFs, BIG};
use keepsake::{
    AlbumId, Content, ContentHash, DedupMode, HashedUpload, SessionOptions, Store, StoreOptions, Upload, UploadReport,
    UploadStart,
};

/// What the other user did before Bob's turn.
#[derive(Debug, Clone, Copy)]
enum World {
    /// Alice never had Bob's content (she uploaded other bytes of the same
    /// size, so that the store is otherwise alike).
    Absent,
    /// Alice holds the content.
    Held,
    /// Alice held it and purged it; no gc has run, so its blob is still
    /// in the store.
    Purged,
}

const PHOTO: usize = 3 * BIG;
const VIDEO: usize = 40 * BIG;

/// What Bob saw and what the engine did for him: each answer, with the
/// (bytes written, syncs, files created) of that one operation.
type Trace = Vec<(String, (u64, u64, u64))>;

fn bobs_turn(world: World) -> Trace {
    let fs = TestFs::default();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().fs(Arc::new(fs.clone()))).unwrap();
    let photo = data(1, PHOTO);
    let video = data(2, VIDEO);
    let alice = store.user("alice").unwrap();
    let album = alice.ensure_album("A").unwrap();
    let shot = data(7, PHOTO);
    let probe = data(10, PHOTO);
    for (name, content, other) in [
        ("probe.jpg", &probe, data(11, PHOTO)),
        ("p.jpg", &photo, data(3, PHOTO)),
        ("v.mp4", &video, data(4, VIDEO)),
        ("s.jpg", &shot, data(8, PHOTO)),
    ] {
        let bytes = match world {
            World::Absent => other,
            World::Held | World::Purged => content.clone(),
        };
        let r = alice
            .upload(album, name, Content::from(bytes), DedupMode::Hash)
            .unwrap();
        if matches!(world, World::Purged) {
            alice.delete(r.file_id).unwrap();
        }
    }
    alice.empty_trash().unwrap();

    let bob = store.user("bob").unwrap();
    let album = bob.ensure_album("B").unwrap();
    let mut trace = Trace::new();
    let mut step = |what: &str, answer: String| {
        let io = fs.io.snapshot();
        trace.push((format!("{what}: {answer}"), io));
    };
    step("start", String::new());
    let shown = |r: &UploadReport| format!("{:?} {} {} {}", r.outcome, r.size, r.bytes_written, r.charged_bytes);

    // A one-shot upload, a re-upload (skipped) and the same content under
    // another name (the desktop rule: stored, no bytes).
    let r = bob
        .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::NameAndHash)
        .unwrap();
    step("upload", shown(&r));
    let r = bob
        .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::NameAndHash)
        .unwrap();
    step("re-upload", shown(&r));
    let r = bob
        .upload(album, "copy.jpg", Content::from(photo.clone()), DedupMode::NameAndHash)
        .unwrap();
    step("another name", shown(&r));

    // The hash alone: a preflight and a link answer from Bob's own files.
    let hashed = |name: &str, content: &[u8]| HashedUpload {
        album,
        name: name.into(),
        hash: ContentHash::of(content),
        mode: DedupMode::Hash,
    };
    step(
        "preflight",
        format!("{:?}", bob.check(&hashed("x.jpg", &shot)).unwrap()),
    );
    step(
        "link",
        format!("{:?}", bob.link(&hashed("x.jpg", &shot)).map(|r| shown(&r))),
    );

    // A batch: Alice's other photo among new content, and a repeat.
    let batch = bob.upload_batch(vec![
        Upload::new(album, "s.jpg", Content::from(shot.clone()), DedupMode::Hash),
        Upload::new(album, "n.jpg", Content::from(data(6, PHOTO)), DedupMode::Hash),
        Upload::new(album, "s2.jpg", Content::from(shot.clone()), DedupMode::NameAndHash),
    ]);
    let batch: Vec<_> = batch.iter().map(|r| r.as_ref().map(shown).unwrap()).collect();
    step("batch", format!("{batch:?}"));

    // A decoy that holds quota in the write step and then fails at the
    // commit (no such album): the probe beside it, which did not fit
    // beside the decoy's hold, is stored from its own copy in every world.
    let used = bob.usage().unwrap();
    let room = used.unique_bytes + used.staged_bytes + PHOTO as u64 + PHOTO as u64 / 2;
    bob.set_quota(Some(room)).unwrap();
    let batch = bob.upload_batch(vec![
        Upload::new(
            AlbumId(999_999),
            "decoy.jpg",
            Content::from(data(12, PHOTO)),
            DedupMode::Hash,
        ),
        Upload::new(album, "probe.jpg", Content::from(probe.clone()), DedupMode::Hash),
    ]);
    let batch: Vec<_> = batch
        .iter()
        .map(|r| r.as_ref().map(shown).map_err(ToString::to_string))
        .collect();
    step("decoy batch", format!("{batch:?}"));
    bob.set_quota(None).unwrap();

    // A resumable session: finish is where present content used to cost
    // nothing and new content a copy and a sync of everything.
    let options = SessionOptions {
        length: Some(VIDEO as u64),
        ..SessionOptions::new(album, "v.mp4", DedupMode::Hash)
    };
    let UploadStart::Session(id) = bob.begin_upload(options).unwrap() else {
        panic!("new content needs its bytes")
    };
    bob.append(id, 0, &video).unwrap();
    step("appended", String::new());
    let r = bob.finish(id).unwrap();
    step("finish", shown(&r));

    // The quota refusal comes from Bob's own usage.
    bob.set_quota(Some(bob.usage().unwrap().unique_bytes)).unwrap();
    let refused = bob.upload(album, "more.jpg", Content::from(data(5, PHOTO)), DedupMode::Hash);
    step("over quota", format!("{refused:?}"));
    step("usage", format!("{:?}", bob.usage().unwrap()));
    assert_verified(&store);
    trace
}

#[test]
fn a_users_answers_and_the_work_done_for_them_do_not_depend_on_other_users_content() {
    let absent = bobs_turn(World::Absent);
    // The I/O before Bob's turn differs between worlds (Alice wrote, or
    // not); what matters is each step's own work, so compare differences.
    let steps = |t: &Trace| -> Vec<(String, (u64, u64, u64))> {
        t.windows(2)
            .map(|w| {
                let ((_, a), (what, b)) = (&w[0], &w[1]);
                (what.clone(), (b.0 - a.0, b.1 - a.1, b.2 - a.2))
            })
            .collect()
    };
    let held = bobs_turn(World::Held);
    let purged = bobs_turn(World::Purged);
    assert_eq!(steps(&held), steps(&absent), "Alice holding the content shows");
    assert_eq!(steps(&purged), steps(&absent), "Alice having held the content shows");
    // And the new content was really written for Bob, in every world.
    let upload = &steps(&absent)[0];
    assert!(
        upload.0.contains(&format!("Stored {PHOTO} {PHOTO} {PHOTO}")),
        "{upload:?}"
    );
    assert!(upload.1 .0 >= PHOTO as u64, "{upload:?}");
}
