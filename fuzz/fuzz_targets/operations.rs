//! Operation sequences against the reference model, over the simulated file
//! system, with I/O faults and power cuts between operations.
//!
//! Each input is decoded into a short sequence of steps: store operations on
//! small pools of users, albums, names and contents (so that duplicates,
//! links, trash and collection all happen), reopenings, an I/O fault armed a
//! few file-system operations ahead, and power cuts (the disk replaced by
//! what a crash leaves, optionally with the last unsynced write torn).
//!
//! Every operation's answer must equal the model's. An operation that a
//! fault hits may fail instead, and then, after a reopen, the store must
//! equal the model either without that operation (no trace) or with it
//! (completed whole); a batch may also keep just the uploads that succeeded.
//! After every step that changes the disk, and at the end, the whole store
//! is checked against the model (`check_store`: listings, exact bytes,
//! usage, `verify` with scrub).
#![no_main]

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use keepsake::testkit::model::{check_store, Answer, Harness, Item, Model, Op, Payload, Query, Refusal, Reply};
use keepsake::testkit::sim_fs::{Fault, SimFs, Tear};
use keepsake::{AlbumDeletion, AlbumId, DedupMode, FileId, StoreOptions};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 2] = ["ann", "bob"];
const ALBUMS: [&str; 3] = ["Camera", "Trip", "2024/Summer"];
const NAMES: [&str; 5] = ["a.jpg", "b.jpg", "IMG_0001.HEIC", "caf\u{e9}.jpg", "cafe\u{301}.jpg"];
/// Around the inline threshold and the segment size chosen below, so that
/// inline blobs, segment records and segment roll-over all occur.
const SIZES: [usize; 6] = [0, 10, 64, 65, 3000, 9000];

fn options(fs: &SimFs) -> StoreOptions {
    StoreOptions::default()
        .inline_threshold(64)
        .segment_size(16 << 10)
        .fs(std::sync::Arc::new(fs.clone()))
}

fn payload(i: usize) -> Payload {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..SIZES[i])
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

enum Step {
    Op(Op),
    Reopen,
    /// Arms a fault this many numbered file-system operations ahead.
    Fault {
        ahead: u64,
        fault: Fault,
    },
    PowerCut(Tear),
}

struct Pick<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    model: &'a Model,
}

impl Pick<'_, '_> {
    fn user(&mut self) -> Result<String> {
        Ok(self.u.choose(&USERS)?.to_string())
    }
    fn album(&mut self, user: &str) -> Result<AlbumId> {
        let known = self.model.album_ids(user);
        // Sometimes an id the user does not have.
        if known.is_empty() || self.u.ratio(1, 8)? {
            return Ok(AlbumId(self.u.int_in_range(0..=5)?));
        }
        Ok(*self.u.choose(&known)?)
    }
    fn file(&mut self, user: &str) -> Result<FileId> {
        let known = self.model.file_ids(user);
        if known.is_empty() || self.u.ratio(1, 8)? {
            return Ok(FileId(self.u.int_in_range(0..=9)?));
        }
        Ok(*self.u.choose(&known)?)
    }
    fn mode(&mut self) -> Result<DedupMode> {
        Ok(if self.u.arbitrary()? {
            DedupMode::Hash
        } else {
            DedupMode::NameAndHash
        })
    }
    fn item(&mut self, user: &str) -> Result<Item> {
        Ok(Item {
            album: self.album(user)?,
            name: self.u.choose(&NAMES)?.to_string().into(),
            data: payload(self.u.choose_index(SIZES.len())?),
            mode: self.mode()?,
            modified: if self.u.arbitrary()? {
                let ns: i64 = self.u.arbitrary()?;
                let d = std::time::Duration::from_nanos(ns.unsigned_abs());
                Some(if ns < 0 { std::time::UNIX_EPOCH - d } else { std::time::UNIX_EPOCH + d })
            } else {
                None
            },
        })
    }
    fn query(&mut self, user: String) -> Result<Query> {
        Ok(Query {
            album: self.album(&user)?,
            name: self.u.choose(&NAMES)?.to_string().into(),
            hash: payload(self.u.choose_index(SIZES.len())?).hash(),
            mode: self.mode()?,
            user,
        })
    }

    fn step(&mut self) -> Result<Step> {
        let user = self.user()?;
        Ok(Step::Op(match self.u.int_in_range(0..=19)? {
            0 | 1 => Op::EnsureAlbum {
                name: self.u.choose(&ALBUMS)?.to_string(),
                user,
            },
            2..=5 => Op::Upload {
                item: self.item(&user)?,
                user,
            },
            6 => {
                let n = self.u.int_in_range(1..=3)?;
                let items = (0..n).map(|_| self.item(&user)).collect::<Result<_>>()?;
                Op::UploadBatch { user, items }
            }
            7 => Op::Check(self.query(user)?),
            8 => Op::Link(self.query(user)?),
            9 => Op::AddToAlbum {
                file: self.file(&user)?,
                album: self.album(&user)?,
                user,
            },
            10 => Op::MoveFile {
                file: self.file(&user)?,
                from: self.album(&user)?,
                to: self.album(&user)?,
                user,
            },
            11 => Op::Delete {
                file: self.file(&user)?,
                user,
            },
            12 => Op::Restore {
                file: self.file(&user)?,
                user,
            },
            13 => Op::EmptyTrash { user },
            14 => Op::DeleteAlbum {
                album: self.album(&user)?,
                deletion: if self.u.arbitrary()? {
                    AlbumDeletion::KeepFiles
                } else {
                    AlbumDeletion::TrashFiles
                },
                user,
            },
            15 => Op::SetQuota {
                limit: if self.u.arbitrary()? {
                    Some(self.u.int_in_range(0..=20_000)?)
                } else {
                    None
                },
                user,
            },
            16 => Op::Gc { grace: Duration::ZERO },
            17 => match self.u.int_in_range(0..=2)? {
                0 => Op::AdvanceClock(Duration::from_secs(31 * 24 * 3600)),
                1 => Op::PurgeExpiredTrash,
                _ => return Ok(Step::Reopen),
            },
            18 => {
                return Ok(Step::Fault {
                    ahead: self.u.int_in_range(1..=6)?,
                    fault: if self.u.arbitrary()? {
                        Fault::Error
                    } else {
                        Fault::ShortWrite
                    },
                })
            }
            _ => {
                let seed = self.u.arbitrary()?;
                return Ok(Step::PowerCut(match self.u.int_in_range(0..=2)? {
                    0 => Tear::None,
                    1 => Tear::Prefix { seed },
                    _ => Tear::Garbage { seed },
                }));
            }
        }))
    }
}

/// The uploads of a batch that succeeded, as the batch the store in effect
/// ran when the others failed without a trace.
fn surviving(op: &Op, answer: &Answer) -> Option<Op> {
    let (Op::UploadBatch { user, items }, Ok(Reply::Uploads(results))) = (op, answer) else {
        return None;
    };
    let items = items
        .iter()
        .zip(results)
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i.clone())
        .collect();
    Some(Op::UploadBatch {
        user: user.clone(),
        items,
    })
}

fn is_io_failure(answer: &Answer) -> bool {
    match answer {
        Err(Refusal::Unexpected(_)) => true,
        Ok(Reply::Uploads(rs)) => rs.iter().any(|r| matches!(r, Err(Refusal::Unexpected(_)))),
        _ => false,
    }
}

/// The faults armed and not yet reached, and whether one was reached since
/// the store was last opened: a fault may poison the store, and then the
/// operations after the one it hit fail too.
#[derive(Default)]
struct Faults {
    armed: Vec<u64>,
    fired: bool,
}

impl Faults {
    fn observe(&mut self, fs: &SimFs) {
        let ops = fs.ops();
        self.fired |= self.armed.iter().any(|&n| n <= ops);
        self.armed.retain(|&n| n > ops);
    }

    /// After a successful open: whatever fired before is behind us.
    fn reopened(&mut self, fs: &SimFs) {
        self.observe(fs);
        self.fired = false;
    }
}

/// Reopens until it succeeds. Each armed fault fires once and can fail
/// one attempt (a reopen is what meets faults armed before operations that
/// never touched the blob files), so one attempt more than there are armed
/// faults must succeed.
fn reopen(h: &mut Harness, faults: &Faults, between: impl FnOnce()) {
    let mut between = Some(between);
    let mut errors = Vec::new();
    for _ in 0..=faults.armed.len() {
        match h.reopen_after(|| between.take().into_iter().for_each(|f| f())) {
            Ok(_) => return,
            Err(e) => errors.push(e),
        }
    }
    panic!("the store does not reopen: {errors:?}");
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    // RocksDB's files are real; on tmpfs their fsyncs cost nothing, which
    // multiplies the executions per second. The blob files are simulated.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temporary directory");
    let fs = SimFs::new(dir.path());
    let options = options(&fs);
    let mut model = Model::new(&options);
    let mut h = Harness::open(dir.path(), options).expect("open a new store");
    let mut faults = Faults::default();
    for _ in 0..24 {
        if u.is_empty() {
            break;
        }
        let step = Pick {
            u: &mut u,
            model: &model,
        }
        .step()?;
        match step {
            Step::Op(op) => {
                let mut next = model.clone();
                let expected = next.apply(&op);
                let actual = h.run(&op);
                faults.observe(&fs);
                if actual == expected {
                    model = next;
                    continue;
                }
                assert!(
                    faults.fired && is_io_failure(&actual),
                    "{op:#?}\nstore: {actual:#?}\nmodel: {expected:#?}"
                );
                reopen(&mut h, &faults, || {});
                faults.reopened(&fs);
                let mut candidates = vec![model.clone(), next];
                if let Some(partial) = surviving(&op, &actual) {
                    let mut m = model.clone();
                    let _ = m.apply(&partial);
                    candidates.push(m);
                }
                let errors: Vec<String> = candidates
                    .iter()
                    .filter_map(|m| check_store(h.store(), m).err())
                    .collect();
                assert!(
                    errors.len() < candidates.len(),
                    "after {op:#?} failed with {actual:?}, the store is neither untouched nor complete: {errors:#?}"
                );
                model = candidates
                    .into_iter()
                    .find(|m| check_store(h.store(), m).is_ok())
                    .expect("one candidate matched");
            }
            Step::Reopen => {
                reopen(&mut h, &faults, || {});
                faults.reopened(&fs);
                check_store(h.store(), &model).unwrap_or_else(|e| panic!("after reopen: {e}"));
            }
            Step::Fault { ahead, fault } => {
                let n = fs.ops() + ahead;
                fs.fail_at(n, fault);
                faults.armed.push(n);
            }
            Step::PowerCut(tear) => {
                // Between operations everything acknowledged is durable, so
                // the disk a crash leaves holds the whole model.
                let image = fs.crash_image(tear);
                reopen(&mut h, &faults, || fs.restore(&image));
                faults.reopened(&fs);
                check_store(h.store(), &model).unwrap_or_else(|e| panic!("after a power cut ({tear:?}): {e}"));
            }
        }
    }
    check_store(h.store(), &model).unwrap_or_else(|e| panic!("at the end: {e}"));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
