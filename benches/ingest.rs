//! Ingest and read throughput, each beside its physical limit measured in
//! the same run on the same files:
//!
//! - writing new content is limited by the disk: `cp -r` of the folder
//!   followed by `sync`;
//! - re-reading content (skips, links, reads) is limited by the hash:
//!   BLAKE3 over the files on all cores, memory-mapped, as `b3sum` does.
//!
//! Compare the ratios, not the absolute figures, which move from machine to
//! machine and run to run. `cargo bench --bench ingest` runs the full sizes
//! (1 GiB of photos, 20,000 thumbnails, a 2 GiB file) and ends with a table
//! of MiB/s, files/s and ratios; under `cargo test` every scenario runs once
//! on a small data set, as a smoke test.
//!
//! Scenarios (the names the issue gives them):
//! - `unique`: 342 files of 3 MiB into an empty store;
//! - `reupload`: the same folder into the same album: every file hashed
//!   (`full_hash`), or trusted from its source record (`incremental`);
//! - `cross_album`: the same folder into a new album (all linked);
//! - `thumbnails`: 20,000 files of 16 KiB into an empty store;
//! - `big_file`: one 2 GiB file into an empty store (peak memory printed);
//! - `read`: every stored photo read back, verified;
//! - `range_read`: 1 MiB from the middle of the big file, through a fresh
//!   reader (checked against the blob's outboard), beside `pread` of the
//!   same range from the plain file;
//! - `store_open`: opening that store to write, and read-only (what a
//!   backup re-run with nothing to do pays instead);
//! - `cross_user_8mib`, `cross_user_64mib`: bob's one-shot upload of new
//!   content into a fresh store where alice holds the same content (`held`)
//!   or other bytes of the same size (`absent`); `cross_user_session_256mib`:
//!   the `finish` of bob's resumable upload, its bytes already appended, in
//!   the same two worlds. The ratio held / absent should be 1.0 within
//!   noise: the work done for a user must not tell them what another user
//!   stores (`DESIGN.md` §1, "Privacy between users").
//!
//! Uploads go through `upload_batch` in batches of 256 files, as
//! `keepsake backup` sends them, from paths (`Content::Path`).

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

#[path = "common/peak.rs"]
mod peak;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use keepsake::{AlbumId, Content, DedupMode, FileId, ReadOnlyStore, SessionOptions, Store, Upload, UploadStart};
use tempfile::TempDir;

const BATCH: usize = 256;
const MIB: f64 = (1 << 20) as f64;

/// Full sizes under `cargo bench`, small ones under `cargo test`.
struct Scale {
    photos: usize,
    photo: usize,
    thumbs: usize,
    thumb: usize,
    big: u64,
    /// The cross-user scenarios: (group, content length, through a session).
    cross_user: [(&'static str, usize, bool); 3],
}

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn scale() -> Scale {
    if full() {
        Scale {
            photos: 342,
            photo: 3 << 20,
            thumbs: 20_000,
            thumb: 16 << 10,
            big: 2 << 30,
            cross_user: [
                ("cross_user_8mib", 8 << 20, false),
                ("cross_user_64mib", 64 << 20, false),
                ("cross_user_session_256mib", 256 << 20, true),
            ],
        }
    } else {
        Scale {
            photos: 8,
            photo: 3 << 20,
            thumbs: 100,
            thumb: 16 << 10,
            big: 64 << 20,
            cross_user: [
                ("cross_user_8mib", 1 << 20, false),
                ("cross_user_64mib", 2 << 20, false),
                ("cross_user_session_256mib", 4 << 20, true),
            ],
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per `seed`, so no
/// two files deduplicate by accident and nothing compresses.
fn fill(seed: u64, out: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// A folder of `n` files of `len` bytes, dated an hour ago so that the
/// incremental re-scan can trust them (a file modified within the last
/// seconds of a scan is always re-hashed).
fn folder(root: &Path, name: &str, n: usize, len: u64, seed: u64) -> Folder {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let mut buf = vec![0u8; 8 << 20];
    let files = (0..n)
        .map(|i| {
            let path = dir.join(format!("IMG_{i:05}.JPG"));
            let mut f = BufWriter::new(File::create(&path).unwrap());
            let mut left = len;
            let mut part = 0;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                fill((seed + i as u64) << 20 | part, &mut buf[..k]);
                f.write_all(&buf[..k]).unwrap();
                left -= k as u64;
                part += 1;
            }
            f.into_inner().unwrap().set_modified(hour_ago).unwrap();
            path
        })
        .collect();
    Folder {
        dir,
        files,
        bytes: n as u64 * len,
    }
}

struct Folder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    bytes: u64,
}

fn new_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir_in(bench_root()).unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Where generated data and stores go: beside the target directory (on
/// disk, not a tmpfs `/tmp`), unless `KEEPSAKE_BENCH_DIR` says otherwise.
fn bench_root() -> PathBuf {
    let root = std::env::var_os("KEEPSAKE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    fs::create_dir_all(&root).unwrap();
    root
}

/// Backs `folder` up into `album` as `keepsake backup` does: batches of
/// [`BATCH`] paths, each batch one durable commit. Returns the file ids.
fn backup(store: &Store, album: AlbumId, folder: &Folder) -> Vec<FileId> {
    let mut ids = Vec::with_capacity(folder.files.len());
    for chunk in folder.files.chunks(BATCH) {
        let uploads = chunk
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                Upload::new(album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
            })
            .collect();
        ids.extend(
            store
                .user("bench")
                .unwrap()
                .upload_batch(uploads)
                .into_iter()
                .map(|r| r.unwrap().file_id),
        );
    }
    ids
}

/// The disk's limit: `cp -r` of the folder, then `sync`.
fn cp_and_sync(folder: &Folder) -> TempDir {
    let dest = tempfile::tempdir_in(bench_root()).unwrap();
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&folder.dir)
        .arg(dest.path())
        .status()
        .unwrap()
        .success();
    assert!(ok && Command::new("sync").status().unwrap().success());
    dest
}

/// The hash's limit: every file hashed on all cores, memory-mapped (what
/// `b3sum` does).
fn hash_all(folder: &Folder) {
    for p in &folder.files {
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(p).unwrap();
        black_box(h.finalize());
    }
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    folder: &Folder,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(folder.bytes));
    g
}

/// A 1 MiB range from the middle of the big file: read through a fresh
/// [`keepsake::FileReader`] each time (so every range is checked again,
/// against the blob's outboard), beside `pread` of the same range from the
/// plain file into a buffer. Both from the page cache. The reader's range
/// is a `Bytes` of the segment's map, handed out without a copy (as the
/// HTTP face sends it); `pread` must copy.
fn range_read(c: &mut Criterion, big: &Folder) {
    const RANGE: u64 = 1 << 20;
    let (_dir, store) = new_store();
    let album = store.user("bench").unwrap().ensure_album("A").unwrap();
    let id = backup(&store, album, big)[0];
    let user = store.user("bench").unwrap();
    let file = File::open(&big.files[0]).unwrap();
    // Off the group boundaries, as a player's seek is.
    let at = big.bytes / 2 + 12_345;
    let mut buf = vec![0u8; RANGE as usize];
    let mut g = c.benchmark_group("range_read");
    g.sample_size(50).throughput(Throughput::Bytes(RANGE));
    g.bench_function("limit_pread", |b| {
        b.iter(|| {
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, at).unwrap();
            black_box(&buf);
        })
    });
    g.bench_function("keepsake", |b| {
        b.iter(|| {
            black_box(user.open_file(id).unwrap().range(at..at + RANGE).unwrap());
        })
    });
    g.finish();
}

fn unique(c: &mut Criterion, folder: &Folder, name: &str) {
    let mut g = group(c, name, folder);
    g.bench_function("limit_cp_r_and_sync", |b| {
        b.iter_batched(|| (), |()| cp_and_sync(folder), BatchSize::PerIteration)
    });
    g.bench_function("keepsake", |b| {
        b.iter_batched(
            new_store,
            |(dir, store)| {
                let album = store.user("bench").unwrap().ensure_album("A").unwrap();
                black_box(backup(&store, album, folder));
                // Dropped (and deleted) outside the timing.
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn rereads(c: &mut Criterion, photos: &Folder) {
    let (_dir, store) = new_store();
    let album = store.user("bench").unwrap().ensure_album("A").unwrap();
    let ids = backup(&store, album, photos);
    // What `keepsake backup` records once a batch is durable.
    let sources: Vec<_> = photos
        .files
        .iter()
        .zip(&ids)
        .map(|(p, id)| (p.clone(), fs::metadata(p).unwrap(), *id))
        .collect();
    store
        .user("bench")
        .unwrap()
        .record_sources(album, &sources, SystemTime::now())
        .unwrap();

    let mut g = group(c, "reupload", photos);
    g.bench_function("limit_b3sum", |b| b.iter(|| hash_all(photos)));
    g.bench_function("keepsake_full_hash", |b| {
        b.iter(|| black_box(backup(&store, album, photos)))
    });
    g.bench_function("keepsake_incremental", |b| {
        b.iter(|| {
            let metas: Vec<_> = photos.files.iter().map(|p| fs::metadata(p).unwrap()).collect();
            let files: Vec<_> = photos.files.iter().map(PathBuf::as_path).zip(&metas).collect();
            let known = store.user("bench").unwrap().unchanged_sources(album, &files).unwrap();
            assert!(known.iter().all(Option::is_some), "an unchanged file is trusted");
            black_box(known);
        })
    });
    g.finish();

    let mut g = group(c, "cross_album", photos);
    g.bench_function("limit_b3sum", |b| b.iter(|| hash_all(photos)));
    let mut n = 0;
    g.bench_function("keepsake", |b| {
        b.iter_batched(
            || {
                n += 1;
                store.user("bench").unwrap().ensure_album(&format!("B{n}")).unwrap()
            },
            |other| black_box(backup(&store, other, photos)),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = group(c, "read", photos);
    g.bench_function("limit_b3sum", |b| b.iter(|| hash_all(photos)));
    g.bench_function("keepsake", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(store.user("bench").unwrap().read(*id).unwrap());
            }
        })
    });
    g.finish();

    // What a command pays before any work: opening this store to write,
    // or, for a re-run with nothing to do, its metadata read-only.
    let root = store.path().to_path_buf();
    drop(store);
    let mut g = c.benchmark_group("store_open");
    g.sample_size(20);
    g.bench_function("write", |b| b.iter(|| drop(black_box(Store::open(&root).unwrap()))));
    g.bench_function("read_only", |b| {
        b.iter(|| drop(black_box(ReadOnlyStore::open(&root).unwrap())))
    });
    g.finish();
}

/// A fresh store where alice holds `theirs`, and bob's album.
fn alice_holds(theirs: &Bytes) -> (TempDir, Store, AlbumId) {
    let (dir, store) = new_store();
    let alice = store.user("alice").unwrap();
    let a = alice.ensure_album("A").unwrap();
    alice
        .upload(a, "x.mp4", Content::from(theirs.clone()), DedupMode::Hash)
        .unwrap();
    let album = store.user("bob").unwrap().ensure_album("B").unwrap();
    // Nothing of the previous iteration's writeback left to compete with
    // the timed upload, in either world.
    assert!(Command::new("sync").status().unwrap().success());
    (dir, store, album)
}

/// Bob's upload of `content`, timed alone: a one-shot upload, or the
/// `finish` of a session whose bytes are appended before the clock starts.
fn bobs_upload(store: &Store, album: AlbumId, content: &Bytes, session: bool) -> Duration {
    let bob = store.user("bob").unwrap();
    if !session {
        let start = Instant::now();
        black_box(
            bob.upload(album, "x.mp4", Content::from(content.clone()), DedupMode::Hash)
                .unwrap(),
        );
        return start.elapsed();
    }
    let options = SessionOptions {
        length: Some(content.len() as u64),
        ..SessionOptions::new(album, "x.mp4", DedupMode::Hash)
    };
    let UploadStart::Session(id) = bob.begin_upload(options).unwrap() else {
        panic!("content new to bob needs its bytes");
    };
    for (i, chunk) in content.chunks(8 << 20).enumerate() {
        bob.append(id, (i * (8 << 20)) as u64, chunk).unwrap();
    }
    let start = Instant::now();
    black_box(bob.finish(id).unwrap());
    start.elapsed()
}

fn cross_user(c: &mut Criterion, scale: &Scale) {
    for (name, len, session) in scale.cross_user {
        let content = |seed| {
            let mut b = vec![0u8; len];
            fill(seed, &mut b);
            Bytes::from(b)
        };
        let (bobs, other) = (content(1 << 50), content(1 << 51));
        let mut g = c.benchmark_group(name);
        g.sample_size(if session { 10 } else { 30 })
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .throughput(Throughput::Bytes(len as u64));
        let theirs = |world| if world == "held" { &bobs } else { &other };
        for timed in ["absent", "held"] {
            g.bench_function(timed, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|i| {
                            // Both worlds every iteration, in turns, so that
                            // neither runs on a disk the other left busier;
                            // only one is timed.
                            let mut order = ["absent", "held"];
                            if i % 2 == 1 {
                                order.reverse();
                            }
                            let mut took = Duration::ZERO;
                            for world in order {
                                let (_dir, store, album) = alice_holds(theirs(world));
                                let t = bobs_upload(&store, album, &bobs, session);
                                if world == timed {
                                    took = t;
                                }
                            }
                            took
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
}

/// Set in a child process of this benchmark: back up the folder it names
/// into a new store and print the process's peak resident memory.
const PEAK_OF: &str = "KEEPSAKE_BENCH_PEAK_OF";

/// The peak resident memory, in MiB, of a process that does nothing but
/// back `folder` up into a new store: this benchmark run again as a child,
/// so that nothing else it holds counts.
fn peak_memory(folder: &Folder) -> Option<f64> {
    peak::peak_of_child(PEAK_OF, &folder.dir)
}

/// The child's side of [`peak_memory`].
fn backup_and_report_peak(dir: PathBuf) {
    let mut files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let folder = Folder { dir, files, bytes: 0 };
    let (_dir, store) = new_store();
    let album = store.user("bench").unwrap().ensure_album("A").unwrap();
    backup(&store, album, &folder);
    peak::print_peak_rss();
}

/// Criterion's median time for `group/bench` in this run, in seconds:
/// `None` for a benchmark this run did not measure (filtered out), whose
/// estimates on disk are an earlier run's.
fn median(group: &str, bench: &str, run_start: SystemTime) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    if fs::metadata(&path).ok()?.modified().ok()? < run_start {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e9)
}

fn summary(rows: &[(&str, &Folder, &str, &str)], big_peak: Option<f64>, run_start: SystemTime) {
    let median = |group: &str, bench: &str| median(group, bench, run_start);
    println!("\n| scenario | keepsake | MiB/s | files/s | limit | limit's time | keepsake / limit |");
    println!("|---|---|---:|---:|---|---:|---:|");
    for (group, folder, bench, limit) in rows {
        let (Some(t), Some(l)) = (median(group, bench), median(group, limit)) else {
            continue;
        };
        println!(
            "| {group} | {bench} {t:.3} s | {:.0} | {:.0} | {limit} | {l:.3} s | {:.2} |",
            folder.bytes as f64 / MIB / t,
            folder.files.len() as f64 / t,
            t / l,
        );
    }
    if let (Some(w), Some(r)) = (median("store_open", "write"), median("store_open", "read_only")) {
        println!(
            "\nstore_open: write {:.1} ms, read-only {:.1} ms (open and close, this store)",
            w * 1e3,
            r * 1e3
        );
    }
    if let (Some(k), Some(p)) = (median("range_read", "keepsake"), median("range_read", "limit_pread")) {
        println!(
            "\nrange_read: 1 MiB from the middle of the big file, checked {:.0} us, pread {:.0} us: {:.2} x",
            k * 1e6,
            p * 1e6,
            k / p
        );
    }
    if let Some(peak) = big_peak {
        println!("\nbig_file: peak resident memory of a process backing it up: {peak:.0} MiB");
    }
    println!("\n| bob's upload | alice holds other bytes (absent) | alice holds the content (held) | held / absent |");
    println!("|---|---:|---:|---:|");
    for (group, ..) in scale().cross_user {
        if let (Some(a), Some(h)) = (median(group, "absent"), median(group, "held")) {
            println!("| {group} | {:.1} ms | {:.1} ms | {:.2} |", a * 1e3, h * 1e3, h / a);
        }
    }
}

fn main() {
    if let Some(dir) = std::env::var_os(PEAK_OF) {
        return backup_and_report_peak(PathBuf::from(dir));
    }
    let run_start = SystemTime::now();
    let full = full();
    let scale = scale();
    let data = tempfile::tempdir_in(bench_root()).unwrap();
    let photos = folder(data.path(), "photos", scale.photos, scale.photo as u64, 1);
    let thumbs = folder(data.path(), "thumbs", scale.thumbs, scale.thumb as u64, 1 << 30);
    let big = folder(data.path(), "big", 1, scale.big, 1 << 40);

    let mut c = Criterion::default().configure_from_args();
    unique(&mut c, &photos, "unique");
    rereads(&mut c, &photos);
    unique(&mut c, &thumbs, "thumbnails");
    unique(&mut c, &big, "big_file");
    range_read(&mut c, &big);
    cross_user(&mut c, &scale);
    c.final_summary();
    if !full {
        return;
    }
    let peak = peak_memory(&big);
    summary(
        &[
            ("unique", &photos, "keepsake", "limit_cp_r_and_sync"),
            ("reupload", &photos, "keepsake_full_hash", "limit_b3sum"),
            ("reupload", &photos, "keepsake_incremental", "limit_b3sum"),
            ("cross_album", &photos, "keepsake", "limit_b3sum"),
            ("thumbnails", &thumbs, "keepsake", "limit_cp_r_and_sync"),
            ("big_file", &big, "keepsake", "limit_cp_r_and_sync"),
            ("read", &photos, "keepsake", "limit_b3sum"),
        ],
        peak,
        run_start,
    );
}
