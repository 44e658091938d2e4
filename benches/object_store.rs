//! Blobs in a bucket, each scenario beside its baseline measured in the
//! same run against the same SeaweedFS on loopback (`weed mini`, started
//! here as the tests start it): a plain loop of `object_store` requests
//! with the same concurrency, the limit on this path.
//!
//! - `photos`: 1 GiB of 3 MiB photos through `upload_batch` (batches of
//!   256, as a backup sends them), against one PUT per photo, 4 in flight
//!   (keepsake's multipart uploads keep 4 parts in flight);
//! - `migrate`: the same 1 GiB stored in a local store, then moved into
//!   the bucket by `Store::migrate_blobs` (each 128 MiB segment uploaded
//!   as a pack, read back and compared before its local copy goes),
//!   against the same PUT loop;
//! - `thumbnails`: 20,000 thumbnails of 16 KiB, against one PUT each, 4 in
//!   flight: the point of packs; from one caller of `upload_batch` (a
//!   backup: one pack PUT at a time), and as `thumbnails_4` from 4 callers
//!   at once (4 phones, or 4 workers: as many pack PUTs in flight as the
//!   PUT loop has requests);
//! - `get`: a 3 MiB photo read back whole, verified, against a plain GET of
//!   the same bytes as one object;
//! - `video`: a 2 GiB file uploaded from its path into a bucket store by a
//!   child process that does nothing else, whose peak resident memory
//!   (`VmHWM`) is printed: the upload streams, from the file to the spool
//!   and from the spool in 8 MiB parts, never holding the video.
//!
//! Compare the ratios, not the absolute figures. `cargo bench --bench
//! object_store` runs the full sizes and prints a table (each figure the
//! best of three runs); under `cargo test` every scenario runs once on a
//! few files, as a smoke test. Without SeaweedFS (`scripts/setup` installs
//! it) the bench says so and measures nothing.

#[path = "common/peak.rs"]
mod peak;
#[path = "../tests/common/weed.rs"]
#[expect(dead_code, reason = "the bench uses part of the tests' server harness")]
mod weed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use keepsake::{Content, DedupMode, Store, StoreOptions, Upload};

const CONCURRENCY: usize = 4;
const BATCH: usize = 256;
const MIB: f64 = (1 << 20) as f64;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Deterministic, incompressible contents.
fn contents(n: usize, len: usize, seed: u64) -> Vec<Bytes> {
    (0..n as u64)
        .map(|i| {
            let mut x = (seed + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut v = vec![0u8; len];
            for chunk in v.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            Bytes::from(v)
        })
        .collect()
}

/// The plain client: the same endpoint, no keepsake.
struct Plain {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Plain {
    fn new(server: &weed::Weed) -> Plain {
        let store = AmazonS3Builder::new()
            .with_bucket_name(weed::BUCKET)
            .with_region("us-east-1")
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .with_skip_signature(true)
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Plain {
            store: Arc::new(store),
            runtime,
        }
    }

    /// PUTs each content as its own object, `CONCURRENCY` in flight.
    fn put_all(&self, prefix: &str, items: &[Bytes]) -> Duration {
        let started = Instant::now();
        let store = self.store.clone();
        let jobs: Vec<(ObjectPath, Bytes)> = items
            .iter()
            .enumerate()
            .map(|(i, b)| (ObjectPath::from(format!("{prefix}/{i}")), b.clone()))
            .collect();
        self.runtime.block_on(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut puts = tokio::task::JoinSet::new();
            for (path, body) in jobs {
                let slot = slots.clone().acquire_owned().await.unwrap();
                let store = store.clone();
                puts.spawn(async move {
                    store.put(&path, PutPayload::from(body)).await.unwrap();
                    drop(slot);
                });
            }
            while let Some(done) = puts.join_next().await {
                done.unwrap();
            }
        });
        started.elapsed()
    }

    fn get(&self, key: &str) -> (Duration, Bytes) {
        let started = Instant::now();
        let store = self.store.clone();
        let path = ObjectPath::from(key);
        let got = self
            .runtime
            .block_on(async move { store.get(&path).await.unwrap().bytes().await.unwrap() });
        (started.elapsed(), got)
    }
}

fn keepsake_store(server: &weed::Weed, prefix: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket(prefix))).unwrap();
    (dir, store)
}

/// Stores `items` through `upload_batch`, `BATCH` at a time, from
/// `callers` threads at once (each a contiguous share of the items).
fn keepsake_put_all(server: &weed::Weed, prefix: &str, items: &[Bytes], callers: usize) -> Duration {
    let (_dir, store) = keepsake_store(server, prefix);
    let share = items.len().div_ceil(callers);
    let started = Instant::now();
    std::thread::scope(|s| {
        for (c, part) in items.chunks(share).enumerate() {
            let store = &store;
            s.spawn(move || put_all(store, &format!("c{c}"), part));
        }
    });
    started.elapsed()
}

/// Stores `items` in a local store (not timed), then times the migration
/// of its blobs into the bucket under `prefix`.
fn keepsake_migrate(server: &weed::Weed, prefix: &str, items: &[Bytes]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    put_all(&store, "m", items);
    let to = keepsake::BlobHome::Bucket(Box::new(server.bucket(prefix)));
    let started = Instant::now();
    let report = store.migrate_blobs(&to, &mut |_| {}).unwrap();
    let took = started.elapsed();
    assert!(report.done, "{report:?}");
    took
}

/// Stores `items` through `upload_batch`, `BATCH` at a time, under names
/// that start with `tag`.
fn put_all(store: &Store, tag: &str, items: &[Bytes]) {
    let u = store.user("bench").unwrap();
    let album = u.ensure_album("A").unwrap();
    for (b, chunk) in items.chunks(BATCH).enumerate() {
        let uploads = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = format!("{tag}-{b}-{i}.jpg");
                Upload::new(album, name.as_str(), Content::from(c.clone()), DedupMode::Hash)
            })
            .collect();
        for r in u.upload_batch(uploads) {
            r.unwrap();
        }
    }
}

fn best_of(runs: usize, mut f: impl FnMut(usize) -> Duration) -> Duration {
    (0..runs).map(&mut f).min().unwrap()
}

/// Set in a child process of this benchmark: `ENDPOINT PREFIX FILE`, the
/// upload whose peak memory it prints.
const PEAK_OF: &str = "KEEPSAKE_BENCH_BUCKET_PEAK_OF";

/// The child's side of the `video` scenario.
fn upload_and_report_peak(spec: &str) {
    let mut parts = spec.splitn(3, ' ');
    let (endpoint, prefix, file) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mut bucket = keepsake::BucketOptions::new(format!("s3://{}/{prefix}", weed::BUCKET));
    bucket.endpoint = Some(endpoint.to_string());
    bucket.allow_http = true;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(bucket)).unwrap();
    let u = store.user("bench").unwrap();
    let album = u.ensure_album("A").unwrap();
    let content = Content::from(std::path::Path::new(file));
    u.upload(album, "video.mp4", content, DedupMode::Hash).unwrap();
    peak::print_peak_rss();
}

/// Peak resident memory, in MiB, of a child uploading a `len`-byte file.
fn video_peak(server: &weed::Weed, len: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video.mp4");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let block = contents(1, 8 << 20, 1 << 50).pop().unwrap();
        let mut left = len;
        let mut i = 0u8;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            let mut b = block[..n].to_vec();
            b[0] = i;
            i = i.wrapping_add(1);
            f.write_all(&b).unwrap();
            left -= n as u64;
        }
    }
    let spec = format!("{} keepsake-video {}", server.endpoint(), path.display());
    peak::peak_of_child(PEAK_OF, spec).expect("the child's peak")
}

fn main() {
    if let Ok(spec) = std::env::var(PEAK_OF) {
        return upload_and_report_peak(&spec);
    }
    if !weed::available() {
        return;
    }
    let full = full();
    let runs = if full { 3 } else { 1 };
    let server = weed::Weed::start();
    let plain = Plain::new(&server);
    let (photos, photo) = if full { (342, 3 << 20) } else { (4, 3 << 20) };
    let (thumbs, thumb) = if full { (20_000, 16 << 10) } else { (50, 16 << 10) };
    let mut rows = Vec::new();

    let items = contents(photos, photo, 1);
    let bytes = (photos * photo) as f64;
    let base = best_of(runs, |r| plain.put_all(&format!("plain-photos-{r}"), &items));
    let ours = best_of(runs, |r| {
        keepsake_put_all(&server, &format!("keepsake-photos-{r}"), &items, 1)
    });
    rows.push((
        "photos",
        "MiB/s",
        bytes / MIB / ours.as_secs_f64(),
        bytes / MIB / base.as_secs_f64(),
    ));
    // The same bytes, stored locally first, then moved into the bucket.
    let moved = best_of(runs, |r| {
        keepsake_migrate(&server, &format!("keepsake-migrate-{r}"), &items)
    });
    rows.push((
        "migrate",
        "MiB/s",
        bytes / MIB / moved.as_secs_f64(),
        bytes / MIB / base.as_secs_f64(),
    ));

    let items = contents(thumbs, thumb, 1 << 30);
    let base = best_of(runs, |r| plain.put_all(&format!("plain-thumbs-{r}"), &items));
    for (name, callers) in [("thumbnails", 1), ("thumbnails_4", CONCURRENCY)] {
        let ours = best_of(runs, |r| {
            keepsake_put_all(&server, &format!("keepsake-{name}-{r}"), &items, callers)
        });
        rows.push((
            name,
            "files/s",
            thumbs as f64 / ours.as_secs_f64(),
            thumbs as f64 / base.as_secs_f64(),
        ));
    }

    // One photo, stored by each, read back 20 times (best of `runs`).
    let photo_bytes = contents(1, photo, 1 << 40).pop().unwrap();
    plain.put_all("plain-get", std::slice::from_ref(&photo_bytes));
    let (_dir, store) = keepsake_store(&server, "keepsake-get");
    let u = store.user("bench").unwrap();
    let album = u.ensure_album("A").unwrap();
    let file = u
        .upload(album, "get.jpg", Content::from(photo_bytes.clone()), DedupMode::Hash)
        .unwrap()
        .file_id;
    let reads = if full { 20 } else { 2 };
    let base = best_of(runs, |_| {
        (0..reads)
            .map(|_| {
                let (t, got) = plain.get("plain-get/0");
                assert_eq!(got.len(), photo);
                t
            })
            .sum()
    });
    let ours = best_of(runs, |_| {
        let started = Instant::now();
        for _ in 0..reads {
            assert!(u.read(file).unwrap() == photo_bytes);
        }
        started.elapsed()
    });
    rows.push((
        "get_3mib",
        "reads/s",
        reads as f64 / ours.as_secs_f64(),
        reads as f64 / base.as_secs_f64(),
    ));

    let video = if full { 2 << 30 } else { 32 << 20 };
    let peak = video_peak(&server, video);

    println!("scenario     unit      keepsake   plain object_store   ratio");
    for (name, unit, ours, base) in rows {
        println!("{name:<12} {unit:<8} {ours:>9.1}   {base:>18.1}   {:>5.2}", ours / base);
    }
    println!(
        "video        a {} MiB upload from its path: peak RSS {peak:.1} MiB",
        video >> 20
    );
}
