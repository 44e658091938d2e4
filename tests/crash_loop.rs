//! A real crash loop: a child process runs a long random workload on a real
//! store (real RocksDB, real `fdatasync`, the real file system) and is killed
//! with SIGKILL at random moments, again and again, on the same directory.
//!
//! The child is this test binary run again in child mode (the environment
//! variable `KEEPSAKE_CRASH_CHILD_STORE` switches it), driving the library:
//! uploads (single and batched, both duplicate rules) into several albums of
//! two users, deletes, restores, album links and unlinks, emptying the trash,
//! and `gc_with_grace(ZERO)` with compaction over small segments. One cycle
//! in six runs the `keepsake backup --json` binary instead. The child prints
//! each operation before starting it and again once it has returned `Ok`
//! (the CLI prints one line per file once it is durable), so at the kill the
//! parent knows everything acknowledged and the single operation that may be
//! in flight.
//!
//! After each kill the parent checks a copy of the crashed directory (so that
//! the next child, not the parent, runs recovery on the original, and kills
//! also land in recovery): every acknowledged file is there with its exact
//! bytes, albums and trash state; the in-flight operation either happened or
//! did not; usage is what the listing implies; `verify(true)` is clean; and
//! recovery notes only describe repairs of unacknowledged writes.
//!
//! Environment:
//! - `KEEPSAKE_CRASH_CYCLES`: how many kills (default 100, under a minute on
//!   two cores); set it to thousands for a long run, with `--nocapture` to
//!   see the tally.
//! - `KEEPSAKE_CRASH_SEED`: the base seed of the workload and the kill plan.
//!   Kill moments still depend on timing, so a seed narrows a failure down
//!   rather than replaying it exactly.
#![cfg(unix)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::data;
use keepsake::{AlbumId, Content, ContentHash, DedupMode, Error, FileId, Store, StoreOptions, Upload};
use serde::{Deserialize, Serialize};

const TEST_NAME: &str = "acknowledged_state_survives_kill_9_at_random_moments";
const CHILD_STORE: &str = "KEEPSAKE_CRASH_CHILD_STORE";
const CHILD_SEED: &str = "KEEPSAKE_CRASH_CHILD_SEED";
/// `ENDPOINT URL` of the bucket the child's store keeps its blobs in, for
/// the cycles on the object store.
const CHILD_BUCKET: &str = "KEEPSAKE_CRASH_CHILD_BUCKET";
/// Marks the child's protocol lines among whatever else the test harness
/// prints on stdout.
const MARK: &str = "@crash-loop ";

const USERS: [&str; 2] = ["ann", "bob"];
const ALBUMS: [&str; 3] = ["Camera", "Trip", "Family"];
/// Small pools of names and contents, so that duplicates, links, skips and
/// re-uploads of trashed or collected content are frequent.
const NAMES: u64 = 24;
const CONTENTS: u64 = 160;
const HOT_CONTENTS: u64 = 24;
/// Small segments make the workload seal and compact segments often.
const CHILD_SEGMENT_SIZE: u64 = 512 << 10;
/// Past these, the child deletes or empties the trash, which keeps the store
/// (and the time each check takes) bounded however many cycles run.
const MAX_LIVE: usize = 40;
const MAX_TRASHED: usize = 16;
/// A child that prints nothing for this long is stuck, not slow.
const STALL: Duration = Duration::from_secs(300);

/// The bytes of content `seed`: a mix of inline sizes (up to 4 KiB, one of
/// them empty) and segment sizes up to 400 KB. Distinct seeds give distinct
/// contents.
fn content_len(seed: u64) -> usize {
    (match seed % 8 {
        0 => seed * 13 % 4000,
        1..=5 => 5_000 + seed * 7919 % 120_000,
        _ => 150_000 + seed * 3571 % 250_000,
    }) as usize
}

fn content(seed: u64) -> Vec<u8> {
    data(seed, content_len(seed))
}

fn file_name(n: u64) -> String {
    format!("IMG_{n:04}.JPG")
}

/// SplitMix64: the workload and the kill plan need a small, seedable source
/// of choices that the child and the parent can derive from one number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(range.start + self.below(range.end - range.start))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    Hash,
    NameAndHash,
}

impl Mode {
    fn random(rng: &mut Rng) -> Mode {
        *rng.pick(&[Mode::Hash, Mode::NameAndHash])
    }

    fn dedup(self) -> DedupMode {
        match self {
            Mode::Hash => DedupMode::Hash,
            Mode::NameAndHash => DedupMode::NameAndHash,
        }
    }

    fn cli(self) -> &'static str {
        match self {
            Mode::Hash => "hash",
            Mode::NameAndHash => "name-hash",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    name: String,
    seed: u64,
}

/// One operation of the workload. Albums are named, so that the parent and
/// the CLI need no album ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Upload {
        user: String,
        album: String,
        mode: Mode,
        items: Vec<Item>,
    },
    Delete {
        user: String,
        file: u64,
    },
    Restore {
        user: String,
        file: u64,
    },
    AddToAlbum {
        user: String,
        file: u64,
        album: String,
    },
    RemoveFromAlbum {
        user: String,
        file: u64,
        album: String,
    },
    EmptyTrash {
        user: String,
    },
    Gc,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Upload { items, .. } if items.len() > 1 => "upload batch",
            Op::Upload { .. } => "upload",
            Op::Delete { .. } => "delete",
            Op::Restore { .. } => "restore",
            Op::AddToAlbum { .. } => "add to album",
            Op::RemoveFromAlbum { .. } => "remove from album",
            Op::EmptyTrash { .. } => "empty trash",
            Op::Gc => "gc + compaction",
        }
    }
}

/// What the child says, one line each.
#[derive(Debug, Serialize, Deserialize)]
enum Said {
    /// The store is open (recovery done) and the albums exist.
    Ready,
    /// About to run this operation.
    Begin(Op),
    /// The upload returned `Ok`: per item, the file id and the outcome.
    Uploaded(Vec<(u64, String)>),
    /// Any other operation returned `Ok`.
    Done,
}

/// Where a store of the loop keeps its blobs: the store directory, or a
/// bucket of a SeaweedFS the parent started (`endpoint`, `url`).
#[derive(Clone)]
struct Blobs(Option<(String, String)>);

impl Blobs {
    /// The child's, from its environment.
    fn from_env() -> Blobs {
        Blobs(std::env::var(CHILD_BUCKET).ok().and_then(|v| {
            let (endpoint, url) = v.split_once(' ')?;
            Some((endpoint.to_string(), url.to_string()))
        }))
    }

    fn options(&self) -> StoreOptions {
        let options = StoreOptions::default().segment_size(CHILD_SEGMENT_SIZE);
        let Some((endpoint, url)) = &self.0 else { return options };
        let mut bucket = keepsake::BucketOptions::new(url.clone());
        bucket.endpoint = Some(endpoint.clone());
        bucket.allow_http = true;
        options.bucket(bucket)
    }

    /// Sets a child command's environment to reach the same blobs: the
    /// test child's variable, and the AWS variables `keepsake` reads.
    fn pass_to(&self, cmd: &mut Command) {
        if let Some((endpoint, url)) = &self.0 {
            cmd.env(CHILD_BUCKET, format!("{endpoint} {url}"))
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ALLOW_HTTP", "true");
        }
    }
}

#[test]
fn acknowledged_state_survives_kill_9_at_random_moments() {
    if let Some(store) = std::env::var_os(CHILD_STORE) {
        let seed = std::env::var(CHILD_SEED)
            .expect("child seed")
            .parse()
            .expect("numeric seed");
        child::run(Path::new(&store), seed, &Blobs::from_env());
    }
    let cycles = parent::env_number("KEEPSAKE_CRASH_CYCLES").unwrap_or(100);
    parent::run(cycles, &Blobs(None));
}

/// The same loop with every blob in a bucket of a real SeaweedFS: the
/// children, the `keepsake backup` runs and the checks all reach it, so a
/// kill lands mid-upload, mid-seal and mid-compaction of packs.
#[test]
fn acknowledged_state_survives_kill_9_with_blobs_in_a_bucket() {
    if std::env::var_os(CHILD_STORE).is_some() || !common::weed::available() {
        return;
    }
    let server = common::weed::Weed::start();
    let url = format!("s3://{}/crash-loop", common::weed::BUCKET);
    let cycles = parent::env_number("KEEPSAKE_CRASH_BUCKET_CYCLES").unwrap_or(60);
    parent::run(cycles, &Blobs(Some((server.endpoint(), url))));
}

/// The workload, run until the parent kills it.
mod child {
    use super::*;

    fn say(said: &Said) {
        println!("{MARK}{}", serde_json::to_string(said).expect("serializable"));
    }

    pub fn run(dir: &Path, seed: u64, blobs: &Blobs) -> ! {
        let store =
            Store::open_with(dir, blobs.options()).unwrap_or_else(|e| panic!("child cannot open the store: {e}"));
        let mut albums = HashMap::new();
        for user in USERS {
            for album in ALBUMS {
                let id = store.user(user).unwrap().ensure_album(album).expect("ensure album");
                albums.insert((user.to_string(), album.to_string()), id);
            }
        }
        say(&Said::Ready);
        let mut rng = Rng(seed);
        loop {
            let op = choose(&store, &mut rng);
            say(&Said::Begin(op.clone()));
            say(&perform(&store, &albums, &op));
        }
    }

    fn choose(store: &Store, rng: &mut Rng) -> Op {
        let user = rng.pick(&USERS).to_string();
        let live = store.user(&user).unwrap().files().expect("files");
        let trashed = store.user(&user).unwrap().trash().expect("trash");
        let roll = rng.below(100);
        if live.len() > MAX_LIVE || (roll < 15 && !live.is_empty()) {
            let file = rng.pick(&live).id.0;
            return Op::Delete { user, file };
        }
        if trashed.len() > MAX_TRASHED || (90..95).contains(&roll) {
            return Op::EmptyTrash { user };
        }
        if roll < 22 && !trashed.is_empty() {
            let file = rng.pick(&trashed).id.0;
            return Op::Restore { user, file };
        }
        if roll < 36 && !live.is_empty() {
            let f = rng.pick(&live);
            let names = album_names(store, &user, &f.albums);
            let file = f.id.0;
            match names.first() {
                Some(album) if roll < 29 => {
                    let album = album.clone();
                    return Op::RemoveFromAlbum { user, file, album };
                }
                _ => {
                    if let Some(album) = ALBUMS.iter().find(|a| !names.iter().any(|n| n == *a)) {
                        let album = album.to_string();
                        return Op::AddToAlbum { user, file, album };
                    }
                }
            }
        }
        if roll >= 95 {
            return Op::Gc;
        }
        let count = if rng.below(4) == 0 { 2 + rng.below(5) } else { 1 };
        let items = (0..count)
            .map(|_| {
                let pool = if rng.below(2) == 0 { HOT_CONTENTS } else { CONTENTS };
                Item {
                    name: file_name(rng.below(NAMES)),
                    seed: rng.below(pool),
                }
            })
            .collect();
        let mode = Mode::random(rng);
        let album = rng.pick(&ALBUMS).to_string();
        Op::Upload {
            user,
            album,
            mode,
            items,
        }
    }

    fn album_names(store: &Store, user: &str, ids: &[AlbumId]) -> Vec<String> {
        let all = store.user(user).unwrap().albums().expect("albums");
        ids.iter()
            .filter_map(|id| all.iter().find(|a| a.id == *id).map(|a| a.name.clone()))
            .collect()
    }

    fn perform(store: &Store, albums: &HashMap<(String, String), AlbumId>, op: &Op) -> Said {
        let album = |user: &str, name: &str| albums[&(user.to_string(), name.to_string())];
        let fail = |e: Error| -> ! { panic!("{op:?} failed: {e}") };
        match op {
            Op::Upload {
                user,
                album: name,
                mode,
                items,
            } => {
                let uploads = items
                    .iter()
                    .map(|i| Upload::new(album(user, name), &i.name, Content::from(content(i.seed)), mode.dedup()))
                    .collect();
                let done = store
                    .user(user)
                    .unwrap()
                    .upload_batch(uploads)
                    .into_iter()
                    .map(|r| {
                        r.map(|r| (r.file_id.0, r.outcome.to_string()))
                            .unwrap_or_else(|e| fail(e.into()))
                    })
                    .collect();
                return Said::Uploaded(done);
            }
            Op::Delete { user, file } => store.user(user).unwrap().delete(FileId(*file)).map_err(Error::from),
            Op::Restore { user, file } => store
                .user(user)
                .unwrap()
                .restore(FileId(*file))
                .map(drop)
                .map_err(Error::from),
            Op::AddToAlbum { user, file, album: a } => store
                .user(user)
                .unwrap()
                .add_to_album(FileId(*file), album(user, a))
                .map(drop)
                .map_err(Error::from),
            Op::RemoveFromAlbum { user, file, album: a } => store
                .user(user)
                .unwrap()
                .remove_from_album(FileId(*file), album(user, a))
                .map_err(Error::from),
            Op::EmptyTrash { user } => store.user(user).unwrap().empty_trash().map(drop).map_err(Error::from),
            Op::Gc => store.gc_with_grace(Duration::ZERO).map(drop).map_err(Error::from),
        }
        .unwrap_or_else(|e| fail(e));
        Said::Done
    }
}

/// The kill loop and the checks.
mod parent {
    use super::*;

    /// What the parent knows of one file: acknowledged, or adopted from an
    /// in-flight operation that a check found applied.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Known {
        name: String,
        seed: u64,
        albums: BTreeSet<String>,
        trashed: bool,
    }

    /// A file as the reopened store lists it.
    #[derive(Debug, PartialEq, Eq)]
    struct Listed {
        name: String,
        hash: ContentHash,
        size: u64,
        albums: BTreeSet<String>,
        trashed: bool,
    }

    type Key = (String, u64);

    /// Contents by seed, with their hashes, computed once.
    #[derive(Default)]
    struct Contents(HashMap<u64, (Vec<u8>, ContentHash)>);

    impl Contents {
        fn get(&mut self, seed: u64) -> &(Vec<u8>, ContentHash) {
            self.0.entry(seed).or_insert_with(|| {
                let bytes = content(seed);
                let hash = ContentHash::of(&bytes);
                (bytes, hash)
            })
        }

        fn matches(&mut self, known: &Known, listed: &Listed) -> bool {
            let (bytes, hash) = self.get(known.seed);
            (known.name == listed.name && known.albums == listed.albums && known.trashed == listed.trashed)
                && (*hash == listed.hash && bytes.len() as u64 == listed.size)
        }
    }

    /// Where the kills landed, and how much was checked: the figures a long
    /// run reports.
    #[derive(Debug, Default)]
    struct Tally {
        cycles: u64,
        cli_cycles: u64,
        cli_finished_before_kill: u64,
        killed_while_opening: u64,
        killed_between_operations: u64,
        killed_mid_operation: BTreeMap<&'static str, u64>,
        /// Cycles whose in-flight operation turned out to have committed.
        in_flight_found_applied: u64,
        acknowledged: u64,
        recovery_notes: u64,
        files_checked: u64,
        bytes_checked: u64,
        bytes_scrubbed: u64,
    }

    /// When to kill a child.
    enum Kill {
        /// After this long.
        After(Duration),
        /// This long after the child announces its `nth` operation (counting
        /// only `gc` when `gc_only`): aims the kill into a given operation.
        IntoOp { nth: usize, gc_only: bool, then: Duration },
    }

    /// The state of one cycle's child as its lines arrive.
    #[derive(Default)]
    struct Cycle {
        ready: bool,
        began: usize,
        gc_began: usize,
        in_flight: Option<Op>,
        /// A `keepsake backup` run rather than the library workload.
        cli: bool,
        /// For the CLI: which item each source path not yet reported is.
        paths: HashMap<String, usize>,
        finished: bool,
    }

    impl Cycle {
        /// The operation that may or may not have happened: for a backup,
        /// only the files it did not report.
        fn unacknowledged(&self) -> Option<Op> {
            match self.in_flight.clone()? {
                Op::Upload {
                    user,
                    album,
                    mode,
                    items,
                } if self.cli => {
                    let left: BTreeSet<usize> = self.paths.values().copied().collect();
                    let items: Vec<Item> = items
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| left.contains(i))
                        .map(|(_, item)| item)
                        .collect();
                    (!items.is_empty()).then_some(Op::Upload {
                        user,
                        album,
                        mode,
                        items,
                    })
                }
                op => Some(op),
            }
        }
    }

    pub fn run(cycles: u64, blobs: &Blobs) {
        let base_seed = env_number("KEEPSAKE_CRASH_SEED").unwrap_or(0x6b65_6570_7361_6b65);
        let work = tempfile::tempdir().expect("temporary directory");
        let store_dir = work.path().join("store");
        let copy_dir = work.path().join("check");
        let mut known: BTreeMap<Key, Known> = BTreeMap::new();
        let mut contents = Contents::default();
        let mut tally = Tally::default();
        let started = Instant::now();
        for cycle in 0..cycles {
            let mut rng = Rng(base_seed ^ cycle.wrapping_mul(0xA24B_AED4_963E_E407));
            let context = format!("cycle {cycle} (KEEPSAKE_CRASH_SEED={base_seed})");
            let mut state = Cycle::default();
            let (child, kill) = if cycle > 0 && rng.below(6) == 0 {
                tally.cli_cycles += 1;
                let source = work.path().join("source");
                let (mut cmd, op) = cli_backup(&store_dir, &source, &mut rng, &mut state);
                blobs.pass_to(&mut cmd);
                state.in_flight = Some(op);
                state.ready = true;
                state.cli = true;
                (Running::spawn(cmd, &context), Kill::After(rng.millis(0..160)))
            } else {
                let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
                cmd.args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
                    .env(CHILD_STORE, &store_dir)
                    .env(CHILD_SEED, rng.next().to_string());
                blobs.pass_to(&mut cmd);
                let kill = match rng.below(20) {
                    // The first child always gets nine operations done, so
                    // that a run of any length checks acknowledged state.
                    _ if cycle == 0 => Kill::IntoOp {
                        nth: 10,
                        gc_only: false,
                        then: Duration::ZERO,
                    },
                    0..=2 => Kill::After(rng.millis(0..60)),
                    3..=9 => Kill::After(rng.millis(60..600)),
                    10..=15 => Kill::IntoOp {
                        nth: 1 + rng.below(30) as usize,
                        gc_only: false,
                        then: Duration::from_micros(rng.below(5000)),
                    },
                    _ => Kill::IntoOp {
                        nth: 1 + rng.below(3) as usize,
                        gc_only: true,
                        then: Duration::from_micros(rng.below(20_000)),
                    },
                };
                (Running::spawn(cmd, &context), kill)
            };
            let mut handle = |line: String, state: &mut Cycle| {
                tally.acknowledged += hear(&line, state, &mut known, &mut contents, &context);
            };
            child.kill_when(kill, &mut state, &mut handle, &context);
            tally.cycles += 1;
            match (&state.in_flight, state.ready, state.finished) {
                (_, _, true) => tally.cli_finished_before_kill += 1,
                (_, false, _) => tally.killed_while_opening += 1,
                (None, true, _) => tally.killed_between_operations += 1,
                (Some(_), true, _) if state.cli => {
                    *tally.killed_mid_operation.entry("keepsake backup").or_default() += 1
                }
                (Some(op), true, _) => *tally.killed_mid_operation.entry(op.kind()).or_default() += 1,
            }
            let in_flight = state.unacknowledged();
            copy_tree(&store_dir, &copy_dir);
            check(
                &copy_dir,
                blobs,
                &mut known,
                in_flight.as_ref(),
                &mut contents,
                &mut tally,
                &context,
            );
        }
        println!(
            "crash loop: {} cycles in {:.1?} (seed {base_seed}); {:#?}",
            tally.cycles,
            started.elapsed(),
            tally
        );
        assert!(
            tally.acknowledged >= 9,
            "the child's acknowledgements were not understood: {tally:#?}"
        );
    }

    pub(super) fn env_number(name: &str) -> Option<u64> {
        let v = std::env::var(name).ok()?;
        Some(v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
    }

    /// Writes a folder of files from the content pools and returns the
    /// `keepsake backup` command for it, and the upload it amounts to.
    fn cli_backup(store_dir: &Path, source: &Path, rng: &mut Rng, state: &mut Cycle) -> (Command, Op) {
        let _ = std::fs::remove_dir_all(source);
        std::fs::create_dir_all(source).expect("source folder");
        let mut names: Vec<u64> = (0..NAMES).collect();
        let mut items = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let name = file_name(names.swap_remove(rng.below(names.len() as u64) as usize));
            let seed = rng.below(CONTENTS);
            let path = source.join(&name);
            std::fs::write(&path, content(seed)).expect("source file");
            // Dated back, so the backup reads it at once instead of waiting
            // for a file so recently modified to settle.
            let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(long_ago))
                .expect("dating the source file");
            state.paths.insert(path.display().to_string(), items.len());
            items.push(Item { name, seed });
        }
        let user = rng.pick(&USERS).to_string();
        let album = rng.pick(&ALBUMS).to_string();
        let mode = Mode::random(rng);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keepsake"));
        cmd.arg("--store")
            .arg(store_dir)
            .args(["--user", &user, "--json", "backup"])
            .arg(source)
            .args(["--album", &album, "--mode", mode.cli()])
            .env_remove("KEEPSAKE_STORE");
        let op = Op::Upload {
            user,
            album,
            mode,
            items,
        };
        (cmd, op)
    }

    /// A child process whose stdout lines arrive on a channel as they are
    /// printed, so that a kill can be aimed after a given line.
    struct Running {
        child: Child,
        lines: Receiver<String>,
        stderr: JoinHandle<String>,
    }

    impl Running {
        fn spawn(mut cmd: Command, context: &str) -> Running {
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{context}: cannot start the child: {e}"));
            let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            let mut stderr = child.stderr.take().expect("piped stderr");
            let (send, lines) = mpsc::channel();
            thread::spawn(move || {
                let mut line = Vec::new();
                // A line cut short by the kill (no newline) was never said.
                while stdout.read_until(b'\n', &mut line).unwrap_or(0) > 0 && line.ends_with(b"\n") {
                    if send
                        .send(String::from_utf8_lossy(&line).trim_end().to_string())
                        .is_err()
                    {
                        return;
                    }
                    line.clear();
                }
            });
            let stderr = thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            Running { child, lines, stderr }
        }

        /// Feeds every line to `handle` until the kill is due, kills with
        /// SIGKILL, then feeds the lines printed before death.
        fn kill_when(
            mut self,
            kill: Kill,
            state: &mut Cycle,
            handle: &mut dyn FnMut(String, &mut Cycle),
            context: &str,
        ) {
            let deadline = match kill {
                Kill::After(d) => Some(Instant::now() + d),
                Kill::IntoOp { .. } => None,
            };
            loop {
                let wait = deadline.map_or(STALL, |d| d.saturating_duration_since(Instant::now()));
                match self.lines.recv_timeout(wait) {
                    Ok(line) => {
                        handle(line, state);
                        if let Kill::IntoOp { nth, gc_only, then } = kill {
                            let count = if gc_only { state.gc_began } else { state.began };
                            if count >= nth && state.in_flight.is_some() {
                                thread::sleep(then);
                                break;
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if deadline.is_some() => break,
                    Err(RecvTimeoutError::Timeout) => panic!("{context}: the child printed nothing for {STALL:?}"),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // `Child::kill` sends SIGKILL on Unix.
            let _ = self.child.kill();
            let status = self.child.wait().expect("wait for the child");
            for line in self.lines.iter() {
                handle(line, state);
            }
            let stderr = self.stderr.join().expect("stderr reader");
            let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
            assert!(
                killed || (state.finished && status.success()),
                "{context}: the child ended on its own ({status}): {stderr}"
            );
        }
    }

    /// Takes in one line of the child, updating the known state with what it
    /// acknowledges. Returns how many operations it acknowledged.
    fn hear(
        line: &str,
        state: &mut Cycle,
        known: &mut BTreeMap<Key, Known>,
        contents: &mut Contents,
        context: &str,
    ) -> u64 {
        // The harness's "test ... " has no newline, so the first mark comes
        // after it on the same line.
        if let Some((_, json)) = line.split_once(MARK) {
            let said: Said = serde_json::from_str(json).unwrap_or_else(|e| panic!("{context}: bad line {line:?}: {e}"));
            return hear_child(said, state, known, contents, context);
        }
        if !state.cli {
            return 0; // the test harness talking
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{context}: bad backup line {line:?}: {e}"));
        if v["summary"] == true {
            state.finished = true;
            assert_eq!(v["errors"], 0, "{context}: backup reported errors: {line}");
            return 0;
        }
        let Some(Op::Upload {
            user,
            album,
            mode,
            items,
        }) = &state.in_flight
        else {
            panic!("{context}: backup line {line:?} without a backup");
        };
        let path = v["path"].as_str().unwrap_or_default();
        let index = state
            .paths
            .remove(path)
            .unwrap_or_else(|| panic!("{context}: backup reported a file not given or reported before: {line}"));
        let item = &items[index];
        let hash = &contents.get(item.seed).1;
        assert_eq!(v["hash"], hash.to_string(), "{context}: {line}");
        let (fid, outcome) = (v["file_id"].as_u64(), v["outcome"].as_str());
        let (Some(fid), Some(outcome)) = (fid, outcome) else {
            panic!("{context}: backup line without file id or outcome: {line}");
        };
        acknowledge_upload(known, contents, (user, album, *mode), item, fid, outcome, context);
        1
    }

    fn hear_child(
        said: Said,
        state: &mut Cycle,
        known: &mut BTreeMap<Key, Known>,
        contents: &mut Contents,
        context: &str,
    ) -> u64 {
        match said {
            Said::Ready => state.ready = true,
            Said::Begin(op) => {
                state.began += 1;
                state.gc_began += usize::from(matches!(op, Op::Gc));
                state.in_flight = Some(op);
            }
            Said::Uploaded(results) => {
                let Some(Op::Upload {
                    user,
                    album,
                    mode,
                    items,
                }) = state.in_flight.take()
                else {
                    panic!("{context}: upload results without an upload");
                };
                assert_eq!(results.len(), items.len(), "{context}: one result per upload");
                for (item, (fid, outcome)) in items.iter().zip(results) {
                    acknowledge_upload(known, contents, (&user, &album, mode), item, fid, &outcome, context);
                }
                return 1;
            }
            Said::Done => {
                let op = state.in_flight.take().expect("an operation in flight");
                acknowledge(known, &op, context);
                return 1;
            }
        }
        0
    }

    /// An upload returned `Ok` with `outcome` for `fid`: the outcome must fit
    /// the duplicate rules against what is known, and becomes known.
    fn acknowledge_upload(
        known: &mut BTreeMap<Key, Known>,
        contents: &mut Contents,
        (user, album, mode): (&str, &str, Mode),
        item: &Item,
        fid: u64,
        outcome: &str,
        context: &str,
    ) {
        let key = (user.to_string(), fid);
        let hash = contents.get(item.seed).1;
        let matches = |k: &Known| k.seed == item.seed && (mode == Mode::Hash || k.name == item.name);
        let duplicate = |k: &Known| !k.trashed && matches(k);
        match (outcome, known.get_mut(&key)) {
            ("stored", None) => {
                // Not beside a live duplicate, nor one in the trash (which
                // the upload restores instead).
                let dup = known.iter().find(|((u, _), k)| u == user && matches(k));
                assert!(
                    dup.is_none(),
                    "{context}: {item:?} stored as {fid} beside duplicate {dup:?}"
                );
                let albums = BTreeSet::from([album.to_string()]);
                let (name, seed) = (item.name.clone(), item.seed);
                known.insert(
                    key,
                    Known {
                        name,
                        seed,
                        albums,
                        trashed: false,
                    },
                );
            }
            ("linked", Some(k)) if duplicate(k) && !k.albums.contains(album) => {
                k.albums.insert(album.to_string());
            }
            ("skipped", Some(k)) if duplicate(k) && k.albums.contains(album) => {}
            ("restored", Some(k)) if k.trashed && matches(k) => {
                k.trashed = false;
                k.albums = BTreeSet::from([album.to_string()]);
            }
            (_, k) => panic!("{context}: {item:?} ({hash}) into {album} {outcome} as file {fid}, known as {k:?}"),
        }
    }

    /// Any other operation returned `Ok`: its effect becomes known.
    fn acknowledge(known: &mut BTreeMap<Key, Known>, op: &Op, context: &str) {
        let file = |user: &str, fid: u64| (user.to_string(), fid);
        let mut change = |key: Key, f: &dyn Fn(&mut Known)| match known.get_mut(&key) {
            Some(k) => f(k),
            None => panic!("{context}: {op:?} acknowledged on a file never acknowledged"),
        };
        match op {
            Op::Upload { .. } => unreachable!("uploads are acknowledged with their results"),
            Op::Delete { user, file: f } => change(file(user, *f), &|k| k.trashed = true),
            Op::Restore { user, file: f } => change(file(user, *f), &|k| k.trashed = false),
            Op::AddToAlbum { user, file: f, album } => change(file(user, *f), &|k| {
                k.albums.insert(album.clone());
            }),
            Op::RemoveFromAlbum { user, file: f, album } => change(file(user, *f), &|k| {
                k.albums.remove(album);
            }),
            Op::EmptyTrash { user } => known.retain(|(u, _), k| u != user || !k.trashed),
            Op::Gc => {}
        }
    }

    /// What file `fid` of `user`, known as `before` (`None`: absent), may
    /// have become if the in-flight `op` committed.
    fn possible_after(op: &Op, user: &str, fid: u64, before: Option<&Known>) -> Vec<Option<Known>> {
        let with = |f: &dyn Fn(&mut Known)| {
            let mut k = before.cloned().expect("a known file");
            f(&mut k);
            vec![Some(k)]
        };
        let live = before.is_some_and(|k| !k.trashed);
        match op {
            Op::Upload {
                user: u,
                album,
                mode,
                items,
            } if u == user => match before {
                None => items
                    .iter()
                    .map(|i| {
                        let albums = BTreeSet::from([album.clone()]);
                        Some(Known {
                            name: i.name.clone(),
                            seed: i.seed,
                            albums,
                            trashed: false,
                        })
                    })
                    .collect(),
                Some(k) if live && !k.albums.contains(album) => items
                    .iter()
                    .filter(|i| i.seed == k.seed && (*mode == Mode::Hash || i.name == k.name))
                    .map(|_| {
                        let mut linked = k.clone();
                        linked.albums.insert(album.clone());
                        Some(linked)
                    })
                    .collect(),
                // Restored into the upload's album, and only that one.
                Some(k) if k.trashed => items
                    .iter()
                    .filter(|i| i.seed == k.seed && (*mode == Mode::Hash || i.name == k.name))
                    .map(|_| {
                        let mut restored = k.clone();
                        (restored.trashed, restored.albums) = (false, BTreeSet::from([album.clone()]));
                        Some(restored)
                    })
                    .collect(),
                Some(_) => Vec::new(),
            },
            Op::Delete { user: u, file } if u == user && *file == fid && live => with(&|k| k.trashed = true),
            Op::Restore { user: u, file } if u == user && *file == fid && before.is_some_and(|k| k.trashed) => {
                with(&|k| k.trashed = false)
            }
            Op::AddToAlbum { user: u, file, album } if u == user && *file == fid && live => with(&|k| {
                k.albums.insert(album.clone());
            }),
            Op::RemoveFromAlbum { user: u, file, album } if u == user && *file == fid && live => with(&|k| {
                k.albums.remove(album);
            }),
            Op::EmptyTrash { user: u } if u == user && before.is_some_and(|k| k.trashed) => vec![None],
            _ => Vec::new(),
        }
    }

    /// Copies a directory tree as it is on disk: the crashed store, for the
    /// parent to recover and check while the original waits, unrecovered, for
    /// the next child. RocksDB's info logs (`LOG`, `LOG.old.*`: one per open,
    /// kept by the thousand) hold no state and are left out, or long runs
    /// would spend their time copying them.
    fn copy_tree(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), to.to_path_buf())];
        while let Some((src, dst)) = stack.pop() {
            std::fs::create_dir_all(&dst).expect("create copy folder");
            let Ok(entries) = std::fs::read_dir(&src) else {
                continue; // the very first child may die before creating it
            };
            for entry in entries {
                let entry = entry.expect("directory entry");
                let target = dst.join(entry.file_name());
                if entry.file_name().to_string_lossy().starts_with("LOG") {
                    continue;
                }
                if entry.file_type().expect("file type").is_dir() {
                    stack.push((entry.path(), target));
                } else {
                    std::fs::copy(entry.path(), &target).expect("copy file");
                }
            }
        }
    }

    /// Reopens the copy of the crashed store and checks it against what is
    /// known, allowing the in-flight operation to have happened or not; what
    /// it did becomes known.
    fn check(
        dir: &Path,
        blobs: &Blobs,
        known: &mut BTreeMap<Key, Known>,
        in_flight: Option<&Op>,
        contents: &mut Contents,
        tally: &mut Tally,
        context: &str,
    ) {
        let store =
            Store::open_with(dir, blobs.options()).unwrap_or_else(|e| panic!("{context}: reopen after the kill: {e}"));
        for note in store.recovery_notes() {
            assert!(
                note.contains("uncommitted bytes") || note.contains("no committed record refers to it"),
                "{context}: recovery found more than unacknowledged writes to drop: {note}"
            );
        }
        tally.recovery_notes += store.recovery_notes().len() as u64;

        let mut listed: BTreeMap<Key, Listed> = BTreeMap::new();
        for user in USERS {
            let albums: HashMap<AlbumId, String> = store
                .user(user)
                .unwrap()
                .albums()
                .expect("albums")
                .into_iter()
                .map(|a| (a.id, a.name))
                .collect();
            let files = store
                .user(user)
                .unwrap()
                .files()
                .expect("files")
                .into_iter()
                .chain(store.user(user).unwrap().trash().expect("trash"));
            for f in files {
                let entry = Listed {
                    name: f.name.to_string(),
                    hash: f.hash,
                    size: f.size,
                    albums: f.albums.iter().map(|a| albums[a].clone()).collect(),
                    trashed: f.trashed_ms.is_some(),
                };
                assert!(
                    listed.insert((user.to_string(), f.id.0), entry).is_none(),
                    "{context}: listed twice"
                );
            }
        }

        let keys: BTreeSet<Key> = known.keys().chain(listed.keys()).cloned().collect();
        let (mut purged, mut kept_trashed, mut applied) = (0, 0, false);
        for key in keys {
            let (before, now) = (known.get(&key), listed.get(&key));
            let unchanged = match (before, now) {
                (None, None) => true,
                (Some(k), Some(l)) => contents.matches(k, l),
                _ => false,
            };
            if before.is_some_and(|k| k.trashed) && matches!(in_flight, Some(Op::EmptyTrash { user }) if *user == key.0)
            {
                if now.is_some() {
                    kept_trashed += 1;
                } else {
                    purged += 1;
                }
            }
            if unchanged {
                continue;
            }
            let candidates = in_flight.map_or(Vec::new(), |op| possible_after(op, &key.0, key.1, before));
            let became = candidates.into_iter().find(|c| match (c, now) {
                (None, None) => true,
                (Some(c), Some(l)) => contents.matches(c, l),
                _ => false,
            });
            let Some(became) = became else {
                panic!(
                    "{context}: file {key:?} is {now:#?} after the kill, but was acknowledged as {before:#?} \
                     (in flight: {in_flight:?})"
                );
            };
            applied = true;
            match became {
                Some(k) => known.insert(key, k),
                None => known.remove(&key),
            };
        }
        assert!(
            purged == 0 || kept_trashed == 0,
            "{context}: emptying the trash was cut in half: {purged} purged, {kept_trashed} kept"
        );
        tally.in_flight_found_applied += u64::from(applied);

        for ((user, fid), k) in known.iter() {
            let (bytes, _) = contents.get(k.seed);
            let read = store
                .user(user)
                .unwrap()
                .read(FileId(*fid))
                .unwrap_or_else(|e| panic!("{context}: reading {user}'s file {fid}: {e}"));
            assert!(
                read == bytes[..],
                "{context}: {user}'s file {fid} ({k:?}) has other bytes"
            );
            tally.files_checked += 1;
            tally.bytes_checked += bytes.len() as u64;
        }
        for user in USERS {
            check_usage(&store, user, known, contents, context);
        }
        let report = store.verify(true).expect("verify runs");
        assert!(report.ok, "{context}: verify found problems: {:#?}", report.problems);
        tally.bytes_scrubbed += report.scrubbed_bytes;
    }

    /// The user's usage is exactly what the listing implies: each distinct
    /// content of their live and trashed files counted once.
    fn check_usage(store: &Store, user: &str, known: &BTreeMap<Key, Known>, contents: &mut Contents, context: &str) {
        let mine: Vec<&Known> = known.iter().filter(|((u, _), _)| u == user).map(|(_, k)| k).collect();
        let mut size = |seed: u64| contents.get(seed).0.len() as u64;
        let seeds: BTreeSet<u64> = mine.iter().map(|k| k.seed).collect();
        let live_seeds: BTreeSet<u64> = mine.iter().filter(|k| !k.trashed).map(|k| k.seed).collect();
        let usage = store.user(user).unwrap().usage().expect("usage");
        let got = (
            usage.unique_bytes,
            usage.logical_bytes,
            usage.files,
            usage.trashed_files,
            usage.blobs,
            usage.trash_bytes,
        );
        let want = (
            seeds.iter().map(|&s| size(s)).sum::<u64>(),
            mine.iter().map(|k| size(k.seed)).sum::<u64>(),
            mine.iter().filter(|k| !k.trashed).count() as u64,
            mine.iter().filter(|k| k.trashed).count() as u64,
            seeds.len() as u64,
            seeds.difference(&live_seeds).map(|&s| size(s)).sum::<u64>(),
        );
        assert_eq!(
            got, want,
            "{context}: {user}'s usage (unique, logical, files, trashed, blobs, trash) differs from the listing"
        );
    }
}
