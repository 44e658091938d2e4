//! The HTTP face over a real socket: `keepsake serve` started as a process
//! on a loopback port, spoken to with plain HTTP/1.1 over `TcpStream`, so
//! that every status line and header the tests assert is the one on the
//! wire.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

mod common;
use common::data;

/// A `keepsake serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .args(["--json", "--store"])
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let listening: Value = serde_json::from_str(&line).unwrap();
        let addr = listening["listening"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_string();
        Server { child, addr, dir }
    }

    /// A new token for `user`, as `keepsake token create --json` prints it.
    fn token(&self, user: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .args(["--json", "--store"])
            .arg(self.dir.path())
            .args(["token", "create", "--user", user])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 2, "exactly {{user, token}}: {v}");
        assert_eq!(v["user"], user);
        v["token"].as_str().unwrap().to_string()
    }

    /// Stops the server (SIGKILL: the store recovers at its next open).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn keepsake(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .args(["--json", "--store"])
            .arg(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// Sends one request and reads its whole response.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "PUT" || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        Reply::parse(&raw, method == "HEAD")
    }

    fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, &[("Authorization", &format!("Bearer {token}"))], b"")
    }

    fn put(&self, token: &str, album: &str, name: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {token}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Keepsake-Album", album),
            ("Keepsake-Name", name),
        ];
        self.send("PUT", "/v1/files", &headers, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8], head: bool) -> Reply {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let text = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: BTreeMap<String, String> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
            body = dechunk(&body);
        }
        if head {
            assert!(body.is_empty(), "a HEAD answer has no body");
        }
        Reply { status, headers, body }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Asserts a problem+json answer of `status` and `kind`.
    fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        let p = self.json();
        assert_eq!(p["type"], format!("tag:keepsake,2026:problem/{kind}"), "{p}");
        assert_eq!(p["status"], status);
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        p
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + n]);
        body = &body[eol + 2 + n + 2..];
    }
}

#[test]
fn healthz_needs_no_token_and_everything_else_answers_401_without_a_valid_one() {
    let server = Server::start();
    let ok = server.send("GET", "/healthz", &[], b"");
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"ok\n"[..]));

    let none = server.send("GET", "/v1/albums", &[], b"");
    none.problem(401, "unauthenticated");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));

    for bad in [
        "nonsense",
        "ks_0000000000000000_",
        &format!("ks_{}_{}", "0".repeat(16), "0".repeat(64)),
    ] {
        let r = server.get("/v1/albums", bad);
        r.problem(401, "unauthenticated");
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    }
    let token = server.token("ann");
    assert_eq!(server.get("/v1/albums", &token).status, 200);

    // A revoked token stops working at the next request, server running.
    let listed = server.keepsake(&["token", "list"]);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&token[20..]),
        "no secret listed"
    );
    assert!(server.keepsake(&["token", "revoke", id]).status.success());
    server.get("/v1/albums", &token).problem(401, "unauthenticated");
    assert_eq!(server.keepsake(&["token", "revoke", id]).status.code(), Some(3));
}

#[test]
fn one_shot_uploads_store_skip_and_link_by_the_duplicate_rules_and_usage_counts_each_blob_once() {
    let mut server = Server::start();
    let token = server.token("ann");
    let photo = data(1, 300_000);

    let first = server.put(&token, "Camera", "IMG_1.JPG", &photo);
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.header("keepsake-outcome"), Some("stored"));
    let id = first.header("keepsake-file-id").unwrap().to_string();
    assert_eq!(first.json()["file_id"].to_string(), id);

    let again = server.put(&token, "Camera", "IMG_1.JPG", &photo);
    assert_eq!((again.status, again.header("keepsake-outcome")), (200, Some("skipped")));
    assert_eq!(again.header("keepsake-file-id"), Some(id.as_str()));

    let other = server.put(&token, "Trip", "IMG_1.JPG", &photo);
    assert_eq!((other.status, other.header("keepsake-outcome")), (200, Some("linked")));
    assert_eq!(other.header("keepsake-file-id"), Some(id.as_str()));

    // With the whole-file hash declared, a duplicate needs no body at all.
    let hash = first.json()["hash"].as_str().unwrap().to_string();
    let auth = format!("Bearer {token}");
    let announced = server.send(
        "PUT",
        "/v1/files",
        &[
            ("Authorization", &auth),
            ("Keepsake-Album", "Trip"),
            ("Keepsake-Name", "IMG_1.JPG"),
            ("Keepsake-Blake3", &hash),
        ],
        b"",
    );
    assert_eq!(announced.header("keepsake-outcome"), Some("skipped"));

    // A name that is not ASCII travels percent-encoded.
    let named = server.put(&token, "Camera", "caf%C3%A9.jpg", &data(2, 5_000));
    assert_eq!(named.status, 201);
    let listed = server.get("/v1/files?album=Camera", &token).json();
    let names: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["IMG_1.JPG", "café.jpg"]);
    assert_eq!(listed["files"][0]["albums"], serde_json::json!(["Camera", "Trip"]));

    let usage = server.get("/v1/usage", &token).json();
    assert_eq!(usage["unique_bytes"], 305_000, "{usage}");

    server
        .put(&token, "Camera", "bad%2Fname", b"x")
        .problem(400, "invalid-name");
    server.put(&token, "Camera", "", b"x").problem(400, "invalid-name");
    let auth = format!("Bearer {token}");
    server
        .send("PUT", "/v1/files", &[("Authorization", &auth)], b"x")
        .problem(400, "bad-request");

    // The listing is the CLI's `ls --json`, object for object (the CLI
    // opens the store once the server has let it go).
    server.stop();
    let ls = server.keepsake(&["--user", "ann", "ls", "--album", "Camera"]);
    let ls: Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(ls, listed["files"]);
}

#[test]
fn pages_of_a_listing_follow_the_cursor_to_the_end() {
    let server = Server::start();
    let token = server.token("ann");
    for i in 0..5 {
        assert_eq!(
            server.put(&token, "A", &format!("{i}.jpg"), &data(10 + i, 100)).status,
            201
        );
    }
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/files?limit=2&cursor={c}"),
            None => "/v1/files?limit=2".to_string(),
        };
        let page = server.get(&path, &token).json();
        let files = page["files"].as_array().unwrap();
        assert!(files.len() <= 2);
        seen.extend(files.iter().map(|f| f["name"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]);
    server.get("/v1/files?cursor=zz", &token).problem(400, "bad-request");
    server.get("/v1/files?album=Nope", &token).problem(404, "unknown-album");
}

#[test]
fn downloads_answer_etag_ranges_and_conditional_requests() {
    let server = Server::start();
    let token = server.token("ann");
    let video = data(3, 1_000_000);
    let up = server.put(&token, "V", "clip.mp4", &video);
    let id = up.header("keepsake-file-id").unwrap().to_string();
    let etag = format!("\"{}\"", up.json()["hash"].as_str().unwrap());
    let path = format!("/v1/files/{id}/content");
    let auth = format!("Bearer {token}");

    let whole = server.get(&path, &token);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, video);
    assert_eq!(whole.header("etag"), Some(etag.as_str()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert!(whole.header("cache-control").unwrap().contains("immutable"));

    let part = server.send(
        "GET",
        &path,
        &[("Authorization", &auth), ("Range", "bytes=500000-500999")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 500000-500999/1000000"));
    assert_eq!(part.body, &video[500_000..501_000]);
    let tail = server.send("GET", &path, &[("Authorization", &auth), ("Range", "bytes=-10")], b"");
    assert_eq!((tail.status, tail.body.as_slice()), (206, &video[999_990..]));

    let past = server.send(
        "GET",
        &path,
        &[("Authorization", &auth), ("Range", "bytes=2000000-")],
        b"",
    );
    past.problem(416, "range-not-satisfiable");
    assert_eq!(past.header("content-range"), Some("bytes */1000000"));

    let same = server.send("GET", &path, &[("Authorization", &auth), ("If-None-Match", &etag)], b"");
    assert_eq!((same.status, same.body.len()), (304, 0));
    // If-Range with another tag: the whole file, not the range.
    let moved = server.send(
        "GET",
        &path,
        &[
            ("Authorization", &auth),
            ("Range", "bytes=0-9"),
            ("If-Range", "\"other\""),
        ],
        b"",
    );
    assert_eq!((moved.status, moved.body.len()), (200, video.len()));

    let head = server.send("HEAD", &path, &[("Authorization", &auth)], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000000"));
}

#[test]
fn another_users_file_a_malformed_id_and_a_missing_one_get_the_same_404() {
    let server = Server::start();
    let (ann, bob) = (server.token("ann"), server.token("bob"));
    let id = server
        .put(&ann, "A", "a.jpg", &data(4, 10_000))
        .header("keepsake-file-id")
        .unwrap()
        .to_string();
    let answers: Vec<Value> = [id.as_str(), "99999", "x'; DROP", "-1", "18446744073709551616"]
        .iter()
        .flat_map(|i| {
            let i = i.replace(' ', "%20").replace('\'', "%27").replace(';', "%3B");
            [
                server.get(&format!("/v1/files/{i}"), &bob),
                server.get(&format!("/v1/files/{i}/content"), &bob),
            ]
        })
        .map(|r| {
            let mut p = r.problem(404, "unknown-file");
            p.as_object_mut().unwrap().remove("detail");
            p
        })
        .collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(server.get(&format!("/v1/files/{id}"), &ann).status, 200);
    // Bob's lists show nothing of Ann's.
    assert_eq!(server.get("/v1/files", &bob).json()["files"], serde_json::json!([]));
}

#[test]
fn albums_are_created_once_and_unknown_endpoints_are_problems() {
    let server = Server::start();
    let token = server.token("ann");
    let auth = format!("Bearer {token}");
    let json = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let made = server.send("POST", "/v1/albums", &json, br#"{"name":"Summer"}"#);
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    assert_eq!(made.json()["name"], "Summer");
    server
        .send("POST", "/v1/albums", &json, br#"{"name":"Summer"}"#)
        .problem(409, "album-exists");
    server
        .send("POST", "/v1/albums", &json, b"{")
        .problem(400, "bad-request");
    let albums = server.get("/v1/albums", &token).json();
    assert_eq!(albums[0]["name"], "Summer");
    server.get("/v1/nothing-here", &token).problem(404, "not-found");
}
