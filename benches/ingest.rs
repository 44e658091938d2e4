//! Ingest and read throughput, each beside its physical baseline measured in
//! the same run: writing the same bytes to plain files and syncing them.
//! Compare the ratios, not the absolute figures, which move from machine to
//! machine and run to run.
//!
//! `cargo bench --bench ingest`

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keepsake::{Content, DedupMode, Store, Upload};

const PHOTO: usize = 3 << 20;
const PHOTOS: usize = 8;
const THUMB: usize = 16 << 10;
const THUMBS: usize = 500;

/// Deterministic pseudo-random bytes (xorshift), distinct per `seed`, so no
/// two files deduplicate by accident and nothing compresses.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn files(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| content(seed + i as u64, len)).collect()
}

fn uploads(store: &Store, album: &str, data: &[Vec<u8>]) -> Vec<Upload> {
    let album = store.ensure_album("bench", album).unwrap();
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            Upload::new(
                album,
                format!("IMG_{i:05}.JPG"),
                Content::from(d.clone()),
                DedupMode::NameAndHash,
            )
        })
        .collect()
}

/// The physical limit: the same bytes as plain files, then every file and
/// the directory synced (what `cp -r` followed by `sync` does).
fn write_plain(dir: &Path, data: &[Vec<u8>]) {
    let mut handles = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let mut f = fs::File::create(dir.join(format!("{i}"))).unwrap();
        f.write_all(d).unwrap();
        handles.push(f);
    }
    for f in handles {
        f.sync_data().unwrap();
    }
    fs::File::open(dir).unwrap().sync_all().unwrap();
}

fn ingest(c: &mut Criterion, group: &str, data: &[Vec<u8>]) {
    let total: usize = data.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group(group);
    g.sample_size(10).throughput(Throughput::Bytes(total as u64));
    g.bench_function("baseline_plain_files_fsync", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| write_plain(dir.path(), data),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("keepsake_new_content", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).unwrap();
                let ups = uploads(&store, "A", data);
                (dir, store, ups)
            },
            |(_dir, store, ups)| {
                for r in store.upload_batch("bench", ups) {
                    black_box(r.unwrap());
                }
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for r in store.upload_batch("bench", uploads(&store, "A", data)) {
        r.unwrap();
    }
    g.bench_function("keepsake_reupload_skipped", |b| {
        b.iter_batched(
            || uploads(&store, "A", data),
            |ups| black_box(store.upload_batch("bench", ups)),
            BatchSize::PerIteration,
        )
    });
    let mut n = 0;
    g.bench_function("keepsake_other_album_linked", |b| {
        b.iter_batched(
            || {
                n += 1;
                uploads(&store, &format!("B{n}"), data)
            },
            |ups| black_box(store.upload_batch("bench", ups)),
            BatchSize::PerIteration,
        )
    });
    let ids: Vec<_> = store.files("bench").unwrap().into_iter().map(|f| f.id).collect();
    g.bench_function("keepsake_read_verified", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(store.read("bench", *id).unwrap());
            }
        })
    });
    g.finish();
}

fn photos(c: &mut Criterion) {
    ingest(c, "photos_3MiB", &files(PHOTOS, PHOTO, 1));
}

fn thumbnails(c: &mut Criterion) {
    ingest(c, "thumbnails_16KiB", &files(THUMBS, THUMB, 1_000_000));
}

criterion_group!(benches, photos, thumbnails);
criterion_main!(benches);
