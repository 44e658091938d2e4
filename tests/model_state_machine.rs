//! The whole store against its reference model (`keepsake::testkit::model`):
//! random sequences of uploads (both modes, single and batched), preflight
//! and link, album edits, trash, purges, album deletion, quota changes, GC
//! and reopening, for three users. After every step the store's answer must
//! be the model's (outcome, file id, bytes written and charged, or the exact
//! error), and everything it shows must be the model's: each user's usage,
//! albums, library and trash, every file's exact bytes, and a clean
//! `verify --scrub`. Contents come from a small pool, some inlined and some
//! in segments small enough to roll over and be compacted, so duplicates,
//! shared blobs and GC happen in most sequences.
//!
//! Environment:
//! - `KEEPSAKE_MODEL_CASES`: sequences to run (default 128);
//! - `KEEPSAKE_MODEL_STEPS`: the most operations in one sequence (default 48).
//!
//! Failures are minimised by proptest and their seeds kept in
//! `proptest-regressions/model_state_machine.txt`, replayed first on every run.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use keepsake::testkit::model::{check_store, Answer, Harness, Item, Model, Op, Payload, Query, Refusal, Reply};
use keepsake::{AlbumDeletion, AlbumId, DedupMode, FileEdit, FileId, StoreOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

const USERS: [&str; 3] = ["ann", "bob", "cy"];
const ALBUM_NAMES: [&str; 4] = ["Camera", "Trip", "2024/Summer", "Fav"];
/// Names that differ only by case are distinct; names that differ only by
/// Unicode normalisation (NFC and NFD) are one name, kept as given; a name
/// need not be UTF-8 (`DESIGN.md` §1).
const NAMES: [&[u8]; 7] = [
    b"IMG_1.JPG",
    b"img_1.jpg",
    b"IMG_2.JPG",
    "caf\u{e9}.jpg".as_bytes(),
    "cafe\u{301}.jpg".as_bytes(),
    b"caf\xe9.jpg",
    b"two\nlines.jpg",
];
const INLINE_THRESHOLD: u64 = 64;
/// The smallest segment the store accepts: a few of the larger contents
/// fill one.
const SEGMENT_SIZE: u64 = 4096;
/// Around the inline threshold, and up to almost a segment.
const SIZES: [usize; 8] = [0, 17, 64, 65, 700, 1500, 2600, 3900];
/// From "nothing new may be charged" to "room for a few contents".
const LIMITS: [Option<u64>; 5] = [None, Some(0), Some(100), Some(2_000), Some(6_000)];
/// Steps of the clock, relative to the default 30-day trash retention and
/// 15-minute GC grace; two of the middle one, or the last one, expire the
/// trash.
const CLOCK_STEPS: [Duration; 4] = [
    Duration::from_millis(1),
    Duration::from_secs(3600),
    Duration::from_secs(15 * 24 * 3600),
    Duration::from_secs(30 * 24 * 3600),
];

fn options() -> StoreOptions {
    StoreOptions::default()
        .inline_threshold(INLINE_THRESHOLD)
        .segment_size(SEGMENT_SIZE)
}

/// The content pool: one content per size.
fn pool() -> &'static [Payload] {
    static POOL: OnceLock<Vec<Payload>> = OnceLock::new();
    POOL.get_or_init(|| {
        SIZES
            .iter()
            .enumerate()
            .map(|(i, &len)| Payload::from(common::data(i as u64, len)))
            .collect()
    })
}

/// Every user starts with two albums (ids 1 and 2).
fn setup() -> Vec<Op> {
    USERS
        .iter()
        .flat_map(|u| {
            ALBUM_NAMES[..2].iter().map(|a| Op::EnsureAlbum {
                user: u.to_string(),
                name: a.to_string(),
            })
        })
        .collect()
}

/// An album or file id: usually one the user has (or had), sometimes any
/// small number, which may name nothing.
#[derive(Debug, Clone)]
enum Target {
    Known(Index),
    Raw(u64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![6 => any::<Index>().prop_map(Target::Known), 1 => (1..=8u64).prop_map(Target::Raw)]
}

impl Target {
    fn resolve(&self, known: &[u64]) -> u64 {
        match self {
            Target::Known(i) if !known.is_empty() => *i.get(known),
            Target::Known(_) => 1,
            Target::Raw(id) => *id,
        }
    }
}

/// A user's ids as the model knows them when a step is generated.
#[derive(Debug)]
struct Known {
    albums: Vec<u64>,
    files: Vec<u64>,
    trashed: Vec<u64>,
}

impl Known {
    /// One per user, in `USERS` order.
    fn of(model: &Model) -> Vec<Known> {
        let raw = |ids: Vec<FileId>| ids.into_iter().map(|f| f.0).collect();
        USERS
            .iter()
            .map(|u| Known {
                albums: model.album_ids(u).into_iter().map(|a| a.0).collect(),
                files: raw(model.file_ids(u)),
                trashed: raw(model.trashed_ids(u)),
            })
            .collect()
    }

    fn album(&self, t: &Target) -> AlbumId {
        AlbumId(t.resolve(&self.albums))
    }

    fn file(&self, t: &Target) -> FileId {
        FileId(t.resolve(&self.files))
    }
}

/// An upload before its album is resolved: album, name, content, mode,
/// modification time (an index into [`TIMES`]).
type ItemSpec = (Target, usize, usize, DedupMode, Option<usize>);

/// Source modification times: one before 1970 (old cameras write those),
/// one to the nanosecond.
const TIMES: [(i64, u32); 2] = [(-86_400 * 400, 0), (1_700_000_000, 123_456_789)];

fn item_spec() -> impl Strategy<Value = ItemSpec> {
    let mode = prop_oneof![Just(DedupMode::Hash), Just(DedupMode::NameAndHash)];
    let time = proptest::option::of(0..TIMES.len());
    (target(), 0..NAMES.len(), 0..SIZES.len(), mode, time)
}

fn time(i: usize) -> std::time::SystemTime {
    let (secs, nanos) = TIMES[i];
    let epoch = std::time::UNIX_EPOCH;
    let d = std::time::Duration::new(secs.unsigned_abs(), nanos);
    if secs < 0 {
        epoch - d
    } else {
        epoch + d
    }
}

fn item(known: &Known, (album, name, content, mode, modified): &ItemSpec) -> Item {
    Item {
        album: known.album(album),
        name: NAMES[*name].to_vec().into(),
        data: pool()[*content].clone(),
        mode: *mode,
        modified: modified.map(time),
    }
}

/// A change to a file or an album, before its targets are resolved.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Add,
    Remove,
    Move,
    Delete,
    Restore,
    DeleteAlbum(AlbumDeletion),
}

/// An operation drawn before its ids are resolved against the model, so
/// that one strategy serves every state.
#[derive(Debug, Clone)]
enum Draw {
    Upload(usize, ItemSpec),
    Batch(usize, Vec<ItemSpec>),
    /// `Link` if true, else `Check`.
    Ask(usize, ItemSpec, bool),
    /// On a file, with an album and a second album for moves.
    Edit(usize, Edit, Target, Target, Target),
    /// Several edits of files in one commit.
    Edits(usize, Vec<(Edit, Target, Target, Target)>),
    Ready(Op),
}

impl Draw {
    fn resolve(self, known: &[Known]) -> Op {
        let name = |u: usize| USERS[u].to_string();
        match self {
            Draw::Upload(u, i) => Op::Upload {
                user: name(u),
                item: item(&known[u], &i),
            },
            Draw::Batch(u, items) => Op::UploadBatch {
                user: name(u),
                items: items.iter().map(|i| item(&known[u], i)).collect(),
            },
            Draw::Ask(u, i, link) => {
                let item = item(&known[u], &i);
                let query = Query {
                    user: name(u),
                    album: item.album,
                    hash: item.data.hash(),
                    name: item.name,
                    mode: item.mode,
                };
                match link {
                    true => Op::Link(query),
                    false => Op::Check(query),
                }
            }
            Draw::Edits(u, edits) => Op::EditFiles {
                user: name(u),
                edits: edits
                    .into_iter()
                    .map(|(e, f, a, to)| match Draw::Edit(u, e, f, a, to).resolve(known) {
                        Op::AddToAlbum { file, album, .. } => FileEdit::AddToAlbum { file, album },
                        Op::RemoveFromAlbum { file, album, .. } => FileEdit::RemoveFromAlbum { file, album },
                        Op::MoveFile { file, from, to, .. } => FileEdit::Move { file, from, to },
                        Op::Delete { file, .. } => FileEdit::Delete(file),
                        Op::Restore { file, .. } => FileEdit::Restore(file),
                        other => unreachable!("not a file edit: {other:?}"),
                    })
                    .collect(),
            },
            Draw::Edit(u, edit, f, a, to) => {
                let (user, known) = (name(u), &known[u]);
                let (file, album) = (known.file(&f), known.album(&a));
                match edit {
                    Edit::Add => Op::AddToAlbum { user, file, album },
                    Edit::Remove => Op::RemoveFromAlbum { user, file, album },
                    Edit::Move => Op::MoveFile {
                        user,
                        file,
                        from: album,
                        to: known.album(&to),
                    },
                    Edit::Delete => Op::Delete { user, file },
                    Edit::Restore => Op::Restore {
                        user,
                        file: FileId(f.resolve(&known.trashed)),
                    },
                    Edit::DeleteAlbum(deletion) => Op::DeleteAlbum { user, album, deletion },
                }
            }
            Draw::Ready(op) => op,
        }
    }
}

/// The edits [`keepsake::User::edit_files`] takes: those of one file.
fn file_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Add),
        Just(Edit::Remove),
        Just(Edit::Move),
        Just(Edit::Delete),
        Just(Edit::Restore),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => Just(Edit::Add),
        2 => Just(Edit::Remove),
        2 => Just(Edit::Move),
        4 => Just(Edit::Delete),
        3 => Just(Edit::Restore),
        1 => Just(Edit::DeleteAlbum(AlbumDeletion::KeepFiles)),
        1 => Just(Edit::DeleteAlbum(AlbumDeletion::TrashFiles)),
    ]
}

struct StoreRules;

impl ReferenceStateMachine for StoreRules {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        let mut model = Model::new(&options());
        for op in setup() {
            model.apply(&op).expect("setup succeeds");
        }
        Just(model).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let known = Known::of(state);
        let user = || 0..USERS.len();
        let name = |u: usize| USERS[u].to_string();
        let ready = |op: Op| Draw::Ready(op);
        prop_oneof![
            8 => (user(), item_spec()).prop_map(|(u, i)| Draw::Upload(u, i)),
            3 => (user(), prop::collection::vec(item_spec(), 1..5)).prop_map(|(u, items)| Draw::Batch(u, items)),
            3 => (user(), item_spec(), any::<bool>()).prop_map(|(u, i, link)| Draw::Ask(u, i, link)),
            15 => (user(), edit(), target(), target(), target()).prop_map(|(u, e, f, a, to)| Draw::Edit(u, e, f, a, to)),
            3 => (user(), prop::collection::vec((file_edit(), target(), target(), target()), 1..6))
                .prop_map(|(u, edits)| Draw::Edits(u, edits)),
            2 => user().prop_map(move |u| ready(Op::EmptyTrash { user: name(u) })),
            1 => Just(ready(Op::PurgeExpiredTrash)),
            2 => (user(), prop::sample::select(&ALBUM_NAMES[..]), any::<bool>()).prop_map(move |(u, a, create)| {
                let (user, name) = (name(u), a.to_string());
                ready(match create {
                    true => Op::CreateAlbum { user, name },
                    false => Op::EnsureAlbum { user, name },
                })
            }),
            1 => (user(), prop::sample::select(&LIMITS[..]))
                .prop_map(move |(u, limit)| ready(Op::SetQuota { user: name(u), limit })),
            2 => prop::sample::select(&CLOCK_STEPS[..]).prop_map(move |by| ready(Op::AdvanceClock(by))),
            3 => prop_oneof![3 => Just(Duration::ZERO), 1 => Just(Duration::from_secs(15 * 60))]
                .prop_map(move |grace| ready(Op::Gc { grace })),
            1 => Just(ready(Op::Reopen)),
        ]
        .prop_map(move |draw| draw.resolve(&known))
        .boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        // The answer is the store's to match, in `StoreFollowsModel`.
        let _answer = state.apply(op);
        state
    }
}

/// A real store, and the model that predicts its answers.
struct Run {
    harness: Harness,
    model: Model,
    _dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut run = Run {
            harness: Harness::open(dir.path(), options()).expect("open store"),
            model: Model::new(&options()),
            _dir: dir,
        };
        run.steps(&setup());
        run
    }

    /// Runs each op on both; see [`Run::answer`].
    fn steps(&mut self, ops: &[Op]) {
        for op in ops {
            // Already compared with the model's.
            let _answer = self.answer(op);
        }
    }

    /// Runs `op` on both, and requires the same answer and the same state.
    fn answer(&mut self, op: &Op) -> Answer {
        let want = self.model.apply(op);
        let got = self.harness.run(op);
        assert_eq!(got, want, "the store's answer to {op:#?} is not the model's");
        if let Err(divergence) = check_store(self.harness.store(), &self.model) {
            panic!("after {op:#?}:\n{divergence}");
        }
        got
    }
}

struct StoreFollowsModel;

impl StateMachineTest for StoreFollowsModel {
    type SystemUnderTest = Run;
    type Reference = StoreRules;

    fn init_test(_: &Model) -> Run {
        Run::new()
    }

    fn apply(mut run: Run, _: &Model, op: Op) -> Run {
        run.steps(&[op]);
        run
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: common::knob("KEEPSAKE_MODEL_CASES", 128) as u32,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/model_state_machine.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_operation_sequence_matches_the_reference_model(
        sequential 1..=common::knob("KEEPSAKE_MODEL_STEPS", 48) as usize => StoreFollowsModel
    );
}

fn upload(user: &str, album: u64, content: usize) -> Op {
    Op::Upload {
        user: user.to_string(),
        item: Item {
            album: AlbumId(album),
            name: NAMES[0].to_vec().into(),
            data: pool()[content].clone(),
            mode: DedupMode::Hash,
            modified: None,
        },
    }
}

fn quota(user: &str, limit: u64) -> Op {
    Op::SetQuota {
        user: user.to_string(),
        limit: Some(limit),
    }
}

/// The state machine's settings do exercise what they are meant to: small
/// segments fill up and roll over, and GC compacts them once their blobs go.
#[test]
fn the_model_store_rolls_segments_over_and_compacts_them() {
    let mut run = Run::new();
    let big = 4..SIZES.len();
    run.steps(&big.clone().map(|content| upload("ann", 1, content)).collect::<Vec<_>>());
    let segments = run.harness.store().stats().unwrap().segments;
    assert!(segments > 1, "{segments} segment(s) for four contents of up to 3.9 KB");
    let files = run.model.file_ids("ann");
    assert_eq!(files.len(), big.len());
    let deletes = files.into_iter().map(|file| Op::Delete {
        user: "ann".into(),
        file,
    });
    run.steps(
        &deletes
            .chain([Op::EmptyTrash { user: "ann".into() }])
            .collect::<Vec<_>>(),
    );
    let gc = run.harness.store().gc_with_grace(Duration::ZERO).unwrap();
    assert!(gc.segments_compacted > 0, "{gc:?}");
    assert_eq!(gc.blobs_removed, big.len() as u64);
}

/// Found by the state machine: a user past their quota uploading content
/// new to the store into an album that does not exist was told
/// `QuotaExceeded` (by the early quota check, made before any album
/// lookup), but `UnknownAlbum` once another user held the content. Which
/// error a user gets must not depend on other users' content.
#[test]
fn an_upload_into_a_missing_album_is_refused_as_such_whoever_holds_the_content() {
    let mut run = Run::new();
    run.steps(&[quota("bob", 0)]);
    let missing = Err(Refusal::UnknownAlbum("3".into()));
    assert_eq!(run.answer(&upload("bob", 3, 1)), missing);
    run.steps(&[upload("ann", 1, 1)]);
    assert_eq!(run.answer(&upload("bob", 3, 1)), missing);
}

/// Found with the model: in a batch, a refusal for content new to the
/// store reported the user's usage from before the batch (the early check's
/// figure), while the same content held by another user reported the usage
/// including the batch's earlier uploads. Both now report the latter.
#[test]
fn a_quota_refusal_in_a_batch_counts_the_batch_so_far_whoever_holds_the_content() {
    let batch = |user: &str| Op::UploadBatch {
        user: user.to_string(),
        items: [1, 4]
            .map(|content| Item {
                album: AlbumId(1),
                name: NAMES[2].to_vec().into(),
                data: pool()[content].clone(),
                mode: DedupMode::Hash,
                modified: None,
            })
            .to_vec(),
    };
    let used = (SIZES[5] + SIZES[1]) as u64;
    let refused = Err(Refusal::QuotaExceeded {
        limit: 2_000,
        used,
        needed: SIZES[4] as u64,
    });
    let mut run = Run::new();
    run.steps(&[
        quota("bob", 2_000),
        quota("cy", 2_000),
        upload("bob", 1, 5),
        upload("cy", 1, 5),
    ]);
    let Ok(Reply::Uploads(alone)) = run.answer(&batch("bob")) else {
        panic!("a batch answers per upload")
    };
    assert_eq!(alone[1], refused);
    run.steps(&[upload("ann", 1, 4)]);
    let Ok(Reply::Uploads(shared)) = run.answer(&batch("cy")) else {
        panic!("a batch answers per upload")
    };
    assert_eq!(shared[1], refused);
}
