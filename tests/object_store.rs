//! Blobs in an S3-compatible bucket, against a real SeaweedFS on loopback
//! (`tests/common/weed.rs`): packs per group commit, verified ranged
//! reads, delete after commit, a lost or corrupted pack found by the scrub
//! and healed by a re-upload, and an object store that fails (503, dropped
//! connections, SIGKILL) without anything acknowledged being lost.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::weed::{self, Weed, BUCKET};
use common::{data, BIG};
use keepsake::{BlobHome, BucketOptions, Content, DedupMode, OpenError, ReadError, Store, StoreOptions, Upload};

/// A store in a fresh directory with its blobs under `prefix` of `server`.
fn bucket_store(server: &Weed, prefix: &str) -> (tempfile::TempDir, Store) {
    store_in(server.bucket(prefix))
}

/// A store in a fresh directory with its blobs in `bucket`.
fn store_in(bucket: BucketOptions) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(bucket)).unwrap();
    (dir, store)
}

fn reopen(dir: &std::path::Path, bucket: BucketOptions) -> Store {
    Store::open_with(dir, StoreOptions::default().bucket(bucket)).unwrap()
}

fn packs(server: &Weed, prefix: &str) -> Vec<String> {
    server.keys(&format!("{prefix}/packs/"))
}

macro_rules! need_weed {
    () => {
        if !weed::available() {
            return;
        }
    };
}

#[test]
fn a_bucket_store_keeps_its_blobs_as_packs_and_reads_them_back_verified() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("roundtrip");
    let (dir, store) = bucket_store(server, &prefix);
    assert_eq!(store.blob_store(), format!("s3://{BUCKET}/{prefix}"));
    let u = store.user("alice").unwrap();
    let album = u.ensure_album("Camera").unwrap();
    let sizes = [100, BIG, 3 << 20, 20 << 20];
    let contents: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| data(i as u64, n)).collect();
    let ids = common::put_all(&store, "alice", album, &contents);
    // Three blobs past the inline threshold, each its own commit: three packs.
    assert_eq!(packs(server, &prefix).len(), 3, "{:?}", packs(server, &prefix));
    assert!(server.get(&format!("{prefix}/keepsake-store")).is_some());
    // Nothing is left in the local spool once the packs are up.
    assert!(common::segment_files(dir.path()).is_empty());
    for (id, c) in ids.iter().zip(&contents) {
        assert_eq!(&u.read(*id).unwrap()[..], &c[..]);
    }
    let video = &contents[3];
    let mut reader = u.open_file(ids[3]).unwrap();
    assert_eq!(
        &reader.range(9_000_001..9_100_000).unwrap()[..],
        &video[9_000_001..9_100_000]
    );
    let mut whole = Vec::new();
    reader.read_to_end(&mut whole).unwrap();
    assert!(whole == *video);
    drop((reader, u, store));

    let store = reopen(dir.path(), server.bucket(&prefix));
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    let u = store.user("alice").unwrap();
    assert_eq!(&u.read(ids[2]).unwrap()[..], &contents[2][..]);
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert!(report.scrubbed_bytes >= sizes.iter().skip(1).map(|&n| n as u64).sum::<u64>());
}

#[test]
fn a_group_commit_of_many_thumbnails_is_one_pack() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("thumbs");
    let (_dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("Thumbs").unwrap();
    let uploads = (0..200)
        .map(|i| {
            Upload::new(
                album,
                format!("t{i}.jpg").as_str(),
                Content::from(data(1000 + i, 16 << 10)),
                DedupMode::Hash,
            )
        })
        .collect();
    for r in u.upload_batch(uploads) {
        r.unwrap();
    }
    assert_eq!(packs(server, &prefix).len(), 1);
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_pack_is_deleted_only_after_the_commit_that_drops_its_last_blob_and_the_grace() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("gc");
    let (_dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let kept = u
        .upload(album, "kept.jpg", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    let gone = u
        .upload(album, "gone.jpg", Content::from(data(2, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(packs(server, &prefix).len(), 2);
    u.delete(gone.file_id).unwrap();
    u.empty_trash().unwrap();
    // Within the grace, the blob and its pack stay.
    store.gc().unwrap();
    assert_eq!(packs(server, &prefix).len(), 2);
    let r = store.gc_with_grace(Duration::ZERO).unwrap();
    assert_eq!((r.blobs_removed, r.segments_compacted), (1, 1), "{r:?}");
    assert_eq!(packs(server, &prefix).len(), 1);
    assert_eq!(&u.read(kept.file_id).unwrap()[..], &data(1, BIG)[..]);
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_lost_pack_is_reported_by_the_scrub_and_healed_by_a_re_upload() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("lost");
    let (dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let photo = data(7, 300_000);
    let f = u
        .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
        .unwrap();
    let pack = packs(server, &prefix).pop().unwrap();
    server.delete(&pack);
    assert!(matches!(u.read(f.file_id), Err(ReadError::Integrity { .. })));
    drop((u, store));

    let store = reopen(dir.path(), server.bucket(&prefix));
    assert!(
        store.recovery_notes().iter().any(|n| n.contains("missing")),
        "{:?}",
        store.recovery_notes()
    );
    let report = store.verify(true).unwrap();
    assert!(!report.ok);
    assert_eq!(common::damaged_files(&report), vec![f.file_id]);
    let missing = format!("is missing from s3://{BUCKET}/{prefix}");
    assert!(
        report.problems.iter().any(|p| p.detail.contains(&missing)),
        "{:?}",
        report.problems
    );
    let u = store.user("u").unwrap();
    let again = u
        .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::NameAndHash)
        .unwrap();
    assert_eq!(again.file_id, f.file_id, "the existing file is healed, not duplicated");
    assert_eq!(&u.read(f.file_id).unwrap()[..], &photo[..]);
    store.gc_with_grace(Duration::ZERO).unwrap();
    let repaired = store.repair(true).unwrap();
    assert!(repaired.ok, "{repaired:?}");
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_short_pack_that_repair_retires_is_deleted_from_the_bucket() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("short");
    let (dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let photo = data(17, 300_000);
    u.upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
        .unwrap();
    let pack = packs(server, &prefix).pop().unwrap();
    let bytes = server.get(&pack).unwrap();
    server.put(&pack, &bytes[..bytes.len() / 2]);
    drop((u, store));

    let store = reopen(dir.path(), server.bucket(&prefix));
    let u = store.user("u").unwrap();
    // Healed into a new pack: no blob is left in the short one.
    u.upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::NameAndHash)
        .unwrap();
    let repaired = store.repair(true).unwrap();
    assert!(
        repaired.repaired.iter().any(|p| p.kind == "lost-segment"),
        "{repaired:?}"
    );
    assert!(!packs(server, &prefix).contains(&pack), "the retired pack stayed");
    drop((u, store));
    let store = reopen(dir.path(), server.bucket(&prefix));
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_corrupted_pack_is_never_served_and_the_scrub_names_its_file() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("corrupt");
    let (_dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let photo = data(8, 200_000);
    let video = data(9, 20 << 20);
    let p = u
        .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
        .unwrap();
    let v = u
        .upload(album, "v.mp4", Content::from(video.clone()), DedupMode::Hash)
        .unwrap();
    for key in packs(server, &prefix) {
        let mut bytes = server.get(&key).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 0x40;
        server.put(&key, &bytes);
    }
    assert!(matches!(u.read(p.file_id), Err(ReadError::Integrity { .. })));
    let mut reader = u.open_file(v.file_id).unwrap();
    // The damaged group is refused; a range far from it is served, checked.
    assert_eq!(&reader.range(0..1000).unwrap()[..], &video[..1000]);
    let end = video.len() as u64;
    assert!(matches!(
        reader.range(end - 2000..end),
        Err(ReadError::Integrity { .. })
    ));
    let report = store.verify(true).unwrap();
    let mut damaged = common::damaged_files(&report);
    damaged.sort();
    assert_eq!(damaged, vec![p.file_id, v.file_id]);
    u.upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
        .unwrap();
    assert_eq!(&u.read(p.file_id).unwrap()[..], &photo[..]);
}

#[test]
fn two_stores_never_share_a_prefix() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("shared");
    let (_a, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    u.upload(album, "x", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    let err = Store::open_with(other.path(), StoreOptions::default().bucket(server.bucket(&prefix))).unwrap_err();
    assert!(matches!(err, OpenError::Io { .. }), "{err}");
    assert!(err.to_string().contains("another store"), "{err}");
    // The first store's pack is untouched.
    assert_eq!(packs(server, &prefix).len(), 1);
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_store_opened_with_another_bucket_than_its_own_is_refused() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("mine");
    let (dir, store) = bucket_store(server, &prefix);
    drop(store);
    let err = Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket("elsewhere"))).unwrap_err();
    assert!(matches!(err, OpenError::Blobs(_)), "{err}");
    let local = tempfile::tempdir().unwrap();
    let s = Store::open(local.path()).unwrap();
    let u = s.user("u").unwrap();
    let a = u.ensure_album("A").unwrap();
    u.upload(a, "x", Content::from(data(1, BIG)), DedupMode::Hash).unwrap();
    drop((u, s));
    let err = Store::open_with(local.path(), StoreOptions::default().bucket(server.bucket("late"))).unwrap_err();
    assert!(matches!(err, OpenError::Blobs(_)), "{err}");
}

/// A TCP proxy in front of the S3 port that answers chosen requests with
/// `503 SlowDown`, or drops their connection, instead of forwarding them.
struct FaultProxy {
    port: u16,
    /// Requests seen.
    seen: Arc<AtomicUsize>,
    /// Set when the proxy is dropped: its accept loop ends.
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Forward,
    SlowDown,
    Drop,
}

impl FaultProxy {
    fn start(upstream: u16, decide: impl Fn(usize, &str) -> Fault + Send + Sync + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let decide = Arc::new(decide);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, decide) = (s.clone(), decide.clone());
                std::thread::spawn(move || serve(conn, upstream, &s, &*decide));
            }
        });
        FaultProxy { port, seen, stop }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Proxies one client connection request by request (HTTP/1.1 with
/// `Content-Length` bodies, as the S3 client sends), so that each request
/// can be faulted on its own.
fn serve(mut client: TcpStream, upstream: u16, seen: &AtomicUsize, decide: &dyn Fn(usize, &str) -> Fault) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut client, &mut buf) else {
            return;
        };
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let line = head.lines().next().unwrap_or("").to_string();
        match decide(n, &line) {
            Fault::Drop => return,
            Fault::SlowDown => {
                let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                let resp = format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Fault::Forward => {}
        }
        if server.write_all(head.as_bytes()).is_err() || server.write_all(&body).is_err() {
            return;
        }
        let head_only = line.starts_with("HEAD ");
        let Some(resp) = read_response(&mut server, head_only) else {
            return;
        };
        if client.write_all(&resp).is_err() {
            return;
        }
    }
}

fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf.drain(..len).collect())
}

fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head = read_head(s, buf)?;
    let body = read_body(s, buf, content_length(&head))?;
    Some((head, body))
}

fn read_response(s: &mut TcpStream, head_only: bool) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let head = read_head(s, &mut buf)?;
    let mut out = head.clone().into_bytes();
    if head_only {
        return Some(out);
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // Forwarded whole once the last chunk has come.
        while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        out.extend_from_slice(&buf);
        return Some(out);
    }
    out.extend(read_body(s, &mut buf, content_length(&head))?);
    Some(out)
}

fn through(server: &Weed, proxy: &FaultProxy, prefix: &str) -> BucketOptions {
    let mut b = server.bucket(prefix);
    b.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    b
}

#[test]
fn throttling_and_dropped_connections_are_retried_and_nothing_is_lost() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("retry");
    // Every third request is refused with 503 SlowDown, every seventh has
    // its connection dropped: the retries carry every upload through.
    let proxy = FaultProxy::start(server.s3_port(), |n, _| match n {
        n if n % 7 == 0 => Fault::Drop,
        n if n % 3 == 0 => Fault::SlowDown,
        _ => Fault::Forward,
    });
    let (_dir, store) = store_in(through(server, &proxy, &prefix));
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let contents: Vec<Vec<u8>> = (0..6)
        .map(|i| data(50 + i, 100_000 + (i as usize) * (4 << 20)))
        .collect();
    let ids = common::put_all(&store, "u", album, &contents);
    for (id, c) in ids.iter().zip(&contents) {
        assert!(u.read(*id).unwrap() == c[..]);
    }
    assert!(proxy.seen.load(Ordering::SeqCst) > 20);
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn an_upload_the_object_store_refuses_fails_cleanly_and_reads_go_on() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("refused");
    let refuse_puts = Arc::new(AtomicBool::new(false));
    let refuse = refuse_puts.clone();
    let proxy = FaultProxy::start(server.s3_port(), move |_, line| {
        if refuse.load(Ordering::SeqCst) && (line.starts_with("PUT ") || line.starts_with("POST ")) {
            Fault::SlowDown
        } else {
            Fault::Forward
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut bucket = through(server, &proxy, &prefix);
    bucket.retry_timeout = Duration::from_secs(3);
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(bucket)).unwrap();
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let first = u
        .upload(album, "first", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    let usage = u.usage().unwrap();
    refuse_puts.store(true, Ordering::SeqCst);
    for (name, len) in [("small", BIG), ("large", 12 << 20)] {
        let err = u
            .upload(album, name, Content::from(data(2, len)), DedupMode::Hash)
            .unwrap_err();
        assert!(
            err.to_string().contains("SlowDown") || err.to_string().contains("503"),
            "{err}"
        );
    }
    // Nothing half-committed: no file, no usage, and what was stored reads.
    assert_eq!(u.usage().unwrap(), usage);
    assert_eq!(u.files().unwrap().len(), 1);
    assert_eq!(&u.read(first.file_id).unwrap()[..], &data(1, BIG)[..]);
    refuse_puts.store(false, Ordering::SeqCst);
    let later = u
        .upload(album, "small", Content::from(data(2, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(&u.read(later.file_id).unwrap()[..], &data(2, BIG)[..]);
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn sigkill_of_the_object_store_mid_upload_loses_nothing_acknowledged() {
    need_weed!();
    let mut server = Weed::start();
    let prefix = "killed";
    let dir = tempfile::tempdir().unwrap();
    let mut bucket = server.bucket(prefix);
    bucket.retry_timeout = Duration::from_secs(5);
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(bucket.clone())).unwrap();
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let before = data(1, 3 << 20);
    let kept = u
        .upload(album, "before", Content::from(before.clone()), DedupMode::Hash)
        .unwrap();
    let video = data(2, 64 << 20);
    let uploading = {
        let u = u.clone();
        let video = video.clone();
        std::thread::spawn(move || u.upload(album, "video", Content::from(video), DedupMode::Hash))
    };
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    let outcome = uploading.join().unwrap();
    server.restart();
    drop((u, store));
    let store = reopen(dir.path(), bucket);
    let u = store.user("u").unwrap();
    assert_eq!(&u.read(kept.file_id).unwrap()[..], &before[..]);
    match outcome {
        Ok(r) => assert!(u.read(r.file_id).unwrap() == video[..], "acknowledged, so whole"),
        Err(e) => {
            assert_eq!(u.files().unwrap().len(), 1, "failed ({e}), so absent");
        }
    }
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn cli_init_blobs_keeps_a_store_in_a_bucket_configured_from_the_aws_environment_and_writes_no_secret() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("cli");
    let store = tempfile::tempdir().unwrap();
    let photos = tempfile::tempdir().unwrap();
    for i in 0..5u64 {
        std::fs::write(photos.path().join(format!("IMG_{i}.JPG")), data(300 + i, 200_000)).unwrap();
    }
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .arg("--store")
            .arg(store.path())
            .args(args)
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "AKIAKEEPSAKETEST")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let url = format!("s3://{BUCKET}/{prefix}");
    let (code, text) = run(&["--json", "init", "--blobs", &url]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&url) && text.contains("\"created\":true"), "{text}");
    let (code, text) = run(&["backup", photos.path().to_str().unwrap(), "--album", "Camera"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(packs(server, &prefix).len(), 1, "one batch, one pack");
    let (code, text) = run(&["ls", "--album", "Camera"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches("IMG_").count(), 5, "{text}");
    let (code, text) = run(&["verify", "--scrub"]);
    assert_eq!(code, Some(0), "{text}");
    // Re-running init says where the blobs are; naming another bucket fails.
    let (code, text) = run(&["init"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&url), "{text}");
    let (code, text) = run(&["init", "--blobs", &format!("s3://{BUCKET}/elsewhere")]);
    assert_eq!(code, Some(2), "{text}");
    // A creation that fails is bad input, and leaves no store behind.
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .arg("--store")
        .arg(fresh.path().join("s"))
        .args(["init", "--blobs", "s3://A/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!fresh.path().join("s").exists());
    for f in files_under(store.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret key",
            f.display()
        );
    }
}

#[test]
fn compaction_copies_a_packs_live_blobs_into_a_new_pack_then_deletes_the_old_one() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("compact");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket(&prefix))).unwrap();
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let contents: Vec<Vec<u8>> = (0..30).map(|i| data(500 + i, BIG)).collect();
    let uploads = contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Upload::new(
                album,
                format!("{i}.jpg").as_str(),
                Content::from(c.clone()),
                DedupMode::Hash,
            )
        })
        .collect();
    let ids: Vec<_> = u
        .upload_batch(uploads)
        .into_iter()
        .map(|r| r.unwrap().file_id)
        .collect();
    let old = packs(server, &prefix);
    assert_eq!(old.len(), 1);
    for id in ids.iter().skip(10) {
        u.delete(*id).unwrap();
    }
    u.empty_trash().unwrap();
    let r = store.gc_with_grace(Duration::ZERO).unwrap();
    assert_eq!((r.blobs_removed, r.segments_compacted), (20, 1), "{r:?}");
    let now = packs(server, &prefix);
    assert_eq!(now.len(), 1);
    assert_ne!(now, old, "the live blobs moved to a new pack, the old one is gone");
    for (id, c) in ids.iter().zip(&contents).take(10) {
        assert_eq!(&u.read(*id).unwrap()[..], &c[..]);
    }
    drop((u, store));
    let store = reopen(dir.path(), server.bucket(&prefix));
    assert!(store.recovery_notes().is_empty(), "{:?}", store.recovery_notes());
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn metadata_older_than_the_bucket_keeps_every_newer_pack() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("restored");
    let (dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let old = u
        .upload(album, "old.jpg", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    // The metadata as a backup of it holds it: before the next upload.
    let backup = dir.path().join("meta-backup");
    store.checkpoint_metadata(&backup).unwrap();
    u.upload(album, "new.jpg", Content::from(data(2, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(packs(server, &prefix).len(), 2);
    drop((u, store));
    restore_metadata(dir.path(), &backup);

    let store = reopen(dir.path(), server.bucket(&prefix));
    // The pack no commit of this metadata names may be the only copy of a
    // photo: it is kept and named, never deleted.
    assert_eq!(packs(server, &prefix).len(), 2);
    assert!(
        store.recovery_notes().iter().any(|n| n.starts_with("kept pack")),
        "{:?}",
        store.recovery_notes()
    );
    let u = store.user("u").unwrap();
    assert_eq!(&u.read(old.file_id).unwrap()[..], &data(1, BIG)[..]);
    // New uploads take new pack names, never the kept one's.
    u.upload(album, "next.jpg", Content::from(data(3, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(packs(server, &prefix).len(), 3);
    assert!(store.verify(true).unwrap().ok);
}

/// A prefix of the shared server reached through a proxy that drops every
/// connection while it is down: an object store that gives no answer (an
/// outage, a network down).
struct Switch {
    prefix: String,
    proxy: FaultProxy,
    down: Arc<AtomicBool>,
}

impl Switch {
    fn new(hint: &str) -> Switch {
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let proxy = FaultProxy::start(weed::shared().s3_port(), move |_, _| {
            if d.load(Ordering::SeqCst) {
                Fault::Drop
            } else {
                Fault::Forward
            }
        });
        Switch {
            prefix: weed::unique_prefix(hint),
            proxy,
            down,
        }
    }

    fn bucket(&self) -> BucketOptions {
        through(weed::shared(), &self.proxy, &self.prefix)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// A store in a fresh directory with its blobs behind `switch`, holding
/// `old.jpg` (`data(1, BIG)`): the directory, its album and the file.
fn with_old_photo(switch: &Switch) -> (tempfile::TempDir, keepsake::AlbumId, keepsake::FileId) {
    let (dir, store) = store_in(switch.bucket());
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let old = u
        .upload(album, "old.jpg", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    (dir, album, old.file_id)
}

/// Puts back the metadata `backup` (a checkpoint) of the closed store in
/// `dir`: the metadata is then older than its bucket.
fn restore_metadata(dir: &std::path::Path, backup: &std::path::Path) {
    std::fs::remove_dir_all(dir.join("meta")).unwrap();
    std::fs::rename(backup, dir.join("meta")).unwrap();
}

#[test]
fn a_bucket_that_does_not_answer_at_open_leaves_the_store_open_and_is_checked_before_the_first_write() {
    need_weed!();
    let switch = Switch::new("unanswered");
    let (dir, album, old) = with_old_photo(&switch);
    switch.set_down(true);
    let store = reopen(dir.path(), switch.bucket());
    assert!(
        store
            .recovery_notes()
            .iter()
            .any(|n| n.contains("could not be reached")),
        "{:?}",
        store.recovery_notes()
    );
    let u = store.user("u").unwrap();
    // The metadata is served while the bucket is away.
    assert_eq!(u.files().unwrap().len(), 1);
    assert_eq!(u.usage().unwrap().unique_bytes, BIG as u64);
    // A read of its bytes is an error to retry, never damage.
    match u.read(old) {
        Err(ReadError::Storage(e)) => assert!(e.io_kind().is_some(), "{e}"),
        other => panic!("{other:?}"),
    }
    // A write is refused before any byte goes anywhere, and leaves nothing.
    let refused = u
        .upload(album, "new.jpg", Content::from(data(2, BIG)), DedupMode::Hash)
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("could not be reached when the store opened"),
        "{refused}"
    );
    assert_eq!(u.files().unwrap().len(), 1);
    // Nor is an unanswered bucket taken for an empty one: a check of the
    // store, or a GC, fails rather than report or remove anything.
    assert!(store.verify(true).is_err());
    assert!(store.gc_with_grace(Duration::ZERO).is_err());

    // Once it answers, the same open store reads and writes, and nothing
    // was marked damaged meanwhile.
    switch.set_down(false);
    assert_eq!(&u.read(old).unwrap()[..], &data(1, BIG)[..]);
    let new = u
        .upload(album, "new.jpg", Content::from(data(2, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(&u.read(new.file_id).unwrap()[..], &data(2, BIG)[..]);
    let report = store.verify(true).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn a_bucket_that_answers_late_gives_new_packs_names_past_the_ones_no_commit_names() {
    need_weed!();
    let switch = Switch::new("late");
    let (dir, album, old) = with_old_photo(&switch);
    {
        // A backup of the metadata, then a pack it does not name.
        let store = reopen(dir.path(), switch.bucket());
        store.checkpoint_metadata(&dir.path().join("meta-backup")).unwrap();
        let u = store.user("u").unwrap();
        u.upload(album, "new.jpg", Content::from(data(2, BIG)), DedupMode::Hash)
            .unwrap();
    }
    restore_metadata(dir.path(), &dir.path().join("meta-backup"));
    // Opened while the bucket is away, the store cannot list the pack its
    // metadata does not name; it learns of it before its first write.
    switch.set_down(true);
    let store = reopen(dir.path(), switch.bucket());
    switch.set_down(false);
    let u = store.user("u").unwrap();
    // The first request after it answers is a read: the check it makes
    // serves the write after it too.
    assert_eq!(&u.read(old).unwrap()[..], &data(1, BIG)[..]);
    u.upload(album, "next.jpg", Content::from(data(3, BIG)), DedupMode::Hash)
        .unwrap();
    assert_eq!(
        packs(weed::shared(), &switch.prefix).len(),
        3,
        "the uncommitted pack is kept, not taken"
    );
    assert!(store.verify(true).unwrap().ok);
}

#[test]
fn a_local_copy_kept_by_an_open_without_the_bucket_is_not_deleted_for_a_pack_that_is_gone() {
    need_weed!();
    let switch = Switch::new("kept-copy");
    let dir = tempfile::tempdir().unwrap();
    let photo = data(1, BIG);
    // A local store whose photo moves into the bucket; its segment file,
    // as it was, kept aside.
    let (file, aside) = {
        let store = Store::open(dir.path()).unwrap();
        let u = store.user("u").unwrap();
        let album = u.ensure_album("A").unwrap();
        let file = u
            .upload(album, "p.jpg", Content::from(photo.clone()), DedupMode::Hash)
            .unwrap()
            .file_id;
        let aside: Vec<_> = common::segment_files(dir.path())
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        let report = store
            .migrate_blobs(&BlobHome::Bucket(Box::new(switch.bucket())), &mut |_| {})
            .unwrap();
        assert!(report.done, "{report:?}");
        (file, aside)
    };
    // What a crash between the move's commit and the local file's removal
    // leaves, and then the pack lost: the local file is the only copy.
    for (path, bytes) in &aside {
        std::fs::write(path, bytes).unwrap();
    }
    let server = weed::shared();
    for key in packs(server, &switch.prefix) {
        server.delete(&key);
    }
    // Opened without an answer from the bucket, the store cannot know the
    // pack is gone; the migration back that follows must not trade the
    // local copy for it.
    switch.set_down(true);
    let store = reopen(dir.path(), switch.bucket());
    switch.set_down(false);
    let report = store.migrate_blobs(&BlobHome::LocalDisk, &mut |_| {}).unwrap();
    assert!(report.done, "{report:?}");
    assert_eq!(&store.user("u").unwrap().read(file).unwrap()[..], &photo[..]);
    let verified = store.verify(true).unwrap();
    assert!(verified.ok, "{:?}", verified.problems);
}

#[test]
fn an_empty_prefix_where_the_stores_packs_should_be_is_refused_not_claimed() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("emptied");
    let (dir, store) = bucket_store(server, &prefix);
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    u.upload(album, "x.jpg", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    drop((u, store));
    // The endpoint now names a server whose bucket of that name is empty
    // there, as a wrong AWS_ENDPOINT_URL would.
    for key in server.keys(&format!("{prefix}/")) {
        server.delete(&key);
    }
    match Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket(&prefix))) {
        Err(OpenError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{source}");
            assert!(source.to_string().contains("right endpoint"), "{source}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an empty prefix was claimed: every pack would be damage"),
    }
    assert!(
        server.keys(&format!("{prefix}/")).is_empty(),
        "nothing was written there"
    );
}

#[test]
fn a_bucket_that_answers_it_is_another_stores_still_refuses_the_open() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("answered");
    let (dir, store) = bucket_store(server, &prefix);
    drop(store);
    server.put(&format!("{prefix}/keepsake-store"), b"another store's claim");
    match Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket(&prefix))) {
        Err(OpenError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{source}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened on another store's prefix"),
    }
}

#[test]
fn a_large_file_read_in_small_pieces_costs_a_get_per_mebibyte_not_per_piece() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("ahead");
    let proxy = FaultProxy::start(server.s3_port(), |_, _| Fault::Forward);
    let (_dir, store) = store_in(through(server, &proxy, &prefix));
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    let video = data(77, 20 << 20);
    let f = u
        .upload(album, "v.mp4", Content::from(video.clone()), DedupMode::Hash)
        .unwrap();
    let mut reader = u.open_file(f.file_id).unwrap();
    let before = proxy.seen.load(Ordering::SeqCst);
    let mut out = Vec::new();
    let mut piece = [0u8; 8192];
    loop {
        let n = reader.read(&mut piece).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&piece[..n]);
    }
    assert!(out == video);
    let gets = proxy.seen.load(Ordering::SeqCst) - before;
    assert!(gets <= 25, "{gets} requests for 20 MiB read 8 KiB at a time");
}

#[test]
fn a_creation_cut_off_before_its_claim_was_written_is_finished_by_the_next_open() {
    need_weed!();
    let server = weed::shared();
    let prefix = weed::unique_prefix("claim");
    let (dir, store) = bucket_store(server, &prefix);
    drop(store);
    // As if the process died between recording the claim and writing it.
    let claim = format!("{prefix}/keepsake-store");
    let written = server.get(&claim).unwrap();
    server.delete(&claim);
    let store = reopen(dir.path(), server.bucket(&prefix));
    assert_eq!(server.get(&claim), Some(written));
    let u = store.user("u").unwrap();
    let album = u.ensure_album("A").unwrap();
    u.upload(album, "x", Content::from(data(1, BIG)), DedupMode::Hash)
        .unwrap();
    drop((u, store));
    // With a pack there, a missing claim is not taken back silently.
    server.delete(&claim);
    let err = Store::open_with(dir.path(), StoreOptions::default().bucket(server.bucket(&prefix))).unwrap_err();
    assert!(err.to_string().contains("keepsake-store"), "{err}");
}

#[test]
fn a_plain_http_endpoint_without_allow_http_is_refused_saying_how_to_allow_it() {
    need_weed!();
    let mut bucket = weed::shared().bucket(&weed::unique_prefix("http"));
    bucket.allow_http = false;
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open_with(dir.path(), StoreOptions::default().bucket(bucket)).unwrap_err();
    assert!(
        matches!(&err, OpenError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
        "{err}"
    );
    assert!(err.to_string().contains("AWS_ALLOW_HTTP=true"), "{err}");
}
