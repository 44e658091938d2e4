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

/// Starts `keepsake serve` on the store in `dir`, with `extra` arguments;
/// its child and address.
fn spawn(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let (child, listening) = spawn_told(dir, extra);
    let addr = listening["listening"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    (child, addr)
}

/// [`spawn`], with the whole line the server printed.
fn spawn_told(dir: &std::path::Path, extra: &[&str]) -> (Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .args(["--json", "--store"])
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, serde_json::from_str(&line).unwrap())
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = spawn(dir.path(), extra);
        Server { child, addr, dir }
    }

    /// Kills the server (SIGKILL, nothing finished) and starts another on
    /// the same store.
    fn restart(&mut self) {
        self.stop();
        (self.child, self.addr) = spawn(self.dir.path(), &[]);
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

    /// Sends only `head` (a request's line and headers, promising a body)
    /// and reads the problem the server answers from them alone.
    fn answer_to_head(&self, head: &str) -> Reply {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") || !raw.ends_with(b"}") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
        }
        Reply::parse(&raw, false)
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
    head: bool,
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
        Reply {
            head,
            status,
            headers,
            body,
        }
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
        if self.head {
            // A HEAD answer has the headers of the problem, not its body.
            return Value::Null;
        }
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
fn a_range_of_a_large_video_is_served_around_damage_elsewhere_and_never_the_damaged_bytes() {
    const GROUP: usize = 64 << 10;
    let mut server = Server::start();
    let token = server.token("ann");
    let video = data(4, 40 << 20);
    let id = server
        .put(&token, "V", "long.mp4", &video)
        .header("keepsake-file-id")
        .unwrap()
        .to_string();
    server.stop();
    let bad = 30 * GROUP + 5;
    common::damage_content(server.dir.path(), &video, bad);
    (server.child, server.addr) = spawn(server.dir.path(), &[]);

    let path = format!("/v1/files/{id}/content");
    let auth = format!("Bearer {token}");
    let range = |r: &str| server.send("GET", &path, &[("Authorization", &auth), ("Range", r)], b"");
    let middle = range("bytes=10485760-11534335");
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, &video[10 << 20..11 << 20]);
    let after = range(&format!("bytes={}-", 31 * GROUP));
    assert_eq!((after.status, after.body.len()), (206, video.len() - 31 * GROUP));
    assert!(after.body == video[31 * GROUP..]);
    range(&format!("bytes={}-{}", bad - 10, bad + 10)).problem(500, "integrity-error");
    // The whole file: the status went out before the damage was reached, so
    // the body stops short of its length, at or before the damaged group.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    let body = &raw[split..];
    assert!(
        body.len() <= bad && body == &video[..body.len()],
        "{} bytes",
        body.len()
    );
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
fn albums_memberships_the_trash_and_duplicates_are_edited_over_http_and_another_users_ids_are_unknown() {
    let server = Server::start();
    let (ann, bob) = (server.token("ann"), server.token("bob"));
    let call = |method: &str, path: &str, token: &str, json: Option<Value>| {
        let auth = format!("Bearer {token}");
        let body = json.map(|j| j.to_string()).unwrap_or_default();
        let mut headers = vec![("Authorization", auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        server.send(method, path, &headers, body.as_bytes())
    };
    let file = |r: Reply| r.header("keepsake-file-id").unwrap().parse::<u64>().unwrap();
    let photo = data(11, 5_000);
    let a = file(server.put(&ann, "Trip", "a.jpg", &photo));
    let copy = file(server.put(&ann, "Other", "copy.jpg", &photo));
    let b = file(server.put(&ann, "Trip", "b.jpg", &data(12, 5_000)));
    let albums = server.get("/v1/albums", &ann).json();
    let id_of = |name: &str| {
        albums.as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let (trip, other) = (id_of("Trip"), id_of("Other"));
    let names = |album: &str| -> Vec<String> {
        let page = server.get(&format!("/v1/files?album={album}"), &ann).json();
        page["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };

    // Rename; a taken name is a conflict.
    let renamed = call(
        "PATCH",
        &format!("/v1/albums/{trip}"),
        &ann,
        Some(serde_json::json!({"name": "Italy"})),
    );
    assert_eq!((renamed.status, renamed.json()["name"].as_str()), (200, Some("Italy")));
    call(
        "PATCH",
        &format!("/v1/albums/{trip}"),
        &ann,
        Some(serde_json::json!({"name": "Other"})),
    )
    .problem(409, "album-exists");
    // Add, remove, move.
    let added = call("PUT", &format!("/v1/albums/{other}/files/{b}"), &ann, None);
    assert_eq!(added.json()["added"], true);
    assert_eq!(
        call("PUT", &format!("/v1/albums/{other}/files/{b}"), &ann, None).json()["added"],
        false
    );
    assert_eq!(
        call("DELETE", &format!("/v1/albums/{other}/files/{b}"), &ann, None).status,
        204
    );
    call("DELETE", &format!("/v1/albums/{other}/files/{b}"), &ann, None).problem(409, "not-in-album");
    let moved = call(
        "POST",
        &format!("/v1/files/{b}/move"),
        &ann,
        Some(serde_json::json!({"from": trip, "to": other})),
    );
    assert_eq!(moved.status, 204);
    assert_eq!(names("Italy"), ["a.jpg"]);
    assert_eq!(names("Other"), ["copy.jpg", "b.jpg"]);

    // Duplicates: a and copy share a content; the merge keeps a, in both albums.
    let groups = server.get("/v1/duplicates", &ann).json();
    let group = &groups["groups"][0];
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(group["files"].as_array().unwrap().len(), 2);
    let hash = group["hash"].as_str().unwrap().to_string();
    server.get("/v1/duplicates", &bob).json()["groups"]
        .as_array()
        .unwrap()
        .is_empty()
        .then_some(())
        .unwrap();
    let merged = call("POST", &format!("/v1/duplicates/{hash}/merge?keep={a}"), &ann, None).json();
    assert_eq!(
        (merged["kept"].as_u64(), merged["trashed"].clone()),
        (Some(a), serde_json::json!([copy]))
    );
    assert_eq!(names("Other"), ["a.jpg", "b.jpg"]);

    // The trash: delete, list, restore, empty.
    assert_eq!(call("DELETE", &format!("/v1/files/{b}"), &ann, None).status, 204);
    let trash = server.get("/v1/trash", &ann).json();
    let trashed: Vec<u64> = trash["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_id"].as_u64().unwrap())
        .collect();
    assert_eq!(trashed, [copy, b]);
    let restored = call("POST", &format!("/v1/files/{b}/restore"), &ann, None).json();
    assert_eq!(restored["albums"], serde_json::json!([other]));
    call("POST", &format!("/v1/files/{b}/restore"), &ann, None).problem(409, "not-trashed");
    let emptied = call("DELETE", "/v1/trash", &ann, None).json();
    assert_eq!(emptied["files"], 1, "{emptied}");

    // Deleting an album: keep its files, or trash those in no other album.
    let kept = call("DELETE", &format!("/v1/albums/{trip}?files=keep"), &ann, None).json();
    assert_eq!(kept["trashed"], serde_json::json!([]));
    call("DELETE", &format!("/v1/albums/{other}?files=burn"), &ann, None).problem(400, "bad-request");
    let gone = call("DELETE", &format!("/v1/albums/{other}?files=trash"), &ann, None).json();
    assert_eq!(gone["trashed"], serde_json::json!([a, b]));
    assert_eq!(
        server.get("/v1/files", &ann).json()["files"].as_array().unwrap().len(),
        0
    );

    // Bob: Ann's ids, malformed ones and missing ones are all unknown.
    let a_new = file(server.put(&ann, "New", "n.jpg", &data(13, 100)));
    let new = server.get("/v1/albums", &ann).json()[0]["id"].as_u64().unwrap();
    let bob_album = file(server.put(&bob, "Bobs", "x.jpg", &data(14, 100)));
    let bobs = server.get("/v1/albums", &bob).json()[0]["id"].as_u64().unwrap();
    let strip = |r: Reply, kind: &str| {
        let mut p = r.problem(404, kind);
        p.as_object_mut().unwrap().remove("detail");
        p
    };
    let unknown_album: Vec<Value> = [new.to_string(), "99999".into(), "x".into(), "-1".into()]
        .iter()
        .flat_map(|id| {
            [
                strip(
                    call(
                        "PATCH",
                        &format!("/v1/albums/{id}"),
                        &bob,
                        Some(serde_json::json!({"name": "Z"})),
                    ),
                    "unknown-album",
                ),
                strip(call("DELETE", &format!("/v1/albums/{id}"), &bob, None), "unknown-album"),
                strip(
                    call("PUT", &format!("/v1/albums/{id}/files/{bob_album}"), &bob, None),
                    "unknown-album",
                ),
            ]
        })
        .collect();
    assert!(unknown_album.windows(2).all(|w| w[0] == w[1]), "{unknown_album:?}");
    for id in [a_new.to_string(), "99999".into(), "x".into()] {
        strip(call("DELETE", &format!("/v1/files/{id}"), &bob, None), "unknown-file");
        strip(
            call("PUT", &format!("/v1/albums/{bobs}/files/{id}"), &bob, None),
            "unknown-file",
        );
        strip(
            call("POST", &format!("/v1/files/{id}/restore"), &bob, None),
            "unknown-file",
        );
    }
    assert_eq!(server.get(&format!("/v1/files/{a_new}"), &ann).status, 200);
}

#[test]
fn metrics_count_uploads_by_outcome_and_sessions_on_the_operators_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let (child, told) = spawn_told(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let addr = told["listening"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let server = Server { child, addr, dir };
    let metrics_url = told["metrics"].as_str().unwrap().trim_start_matches("http://");
    let (ops, path) = metrics_url.split_once('/').unwrap();
    let scrape = || {
        let mut s = TcpStream::connect(ops).unwrap();
        write!(s, "GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let r = Reply::parse(&raw, false);
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"));
        String::from_utf8(r.body).unwrap()
    };
    let has = |text: &str, line: &str| assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    let token = server.token("ann");
    let photo = data(21, 70_000);
    server.put(&token, "A", "a.jpg", &photo);
    server.put(&token, "A", "a.jpg", &photo);
    // The desktop rule: same name and content in another album links.
    server.put(&token, "B", "a.jpg", &photo);
    server.create(&token, "v.mp4", "A", 1234);
    let text = scrape();
    has(&text, "keepsake_uploads_total{outcome=\"stored\"} 1");
    has(&text, "keepsake_uploads_total{outcome=\"skipped\"} 1");
    has(&text, "keepsake_uploads_total{outcome=\"linked\"} 1");
    has(&text, "keepsake_written_bytes_total 70000");
    has(&text, "keepsake_deduplicated_bytes_total 140000");
    has(&text, "keepsake_upload_sessions 1");
    has(&text, "keepsake_staged_bytes 1234");
    assert!(text
        .lines()
        .any(|l| l.starts_with("keepsake_commit_duration_seconds_count ")));
    // Not on the users' address, token or not.
    server.get("/metrics", &token).problem(404, "not-found");
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
    // A JSON body past 1 MiB is refused from its length, before a byte of it
    // is read (none is sent here).
    let head = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    server.answer_to_head(&head).problem(413, "body-too-large");
    let albums = server.get("/v1/albums", &token).json();
    assert_eq!(albums[0]["name"], "Summer");
    server.get("/v1/nothing-here", &token).problem(404, "not-found");
}

/// tus: the base64 of `bytes`, as `Upload-Metadata` and `Upload-Checksum`
/// carry values.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Server {
    /// A tus request: `Tus-Resumable` and the token added to `headers`.
    fn tus(&self, method: &str, path: &str, token: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let auth = format!("Bearer {token}");
        let mut all = vec![("Authorization", auth.as_str()), ("Tus-Resumable", "1.0.0")];
        all.extend_from_slice(headers);
        self.send(method, path, &all, body)
    }

    /// Creates a tus upload of `len` bytes named `name` into `album`;
    /// returns its upload URL's path.
    fn create(&self, token: &str, name: &str, album: &str, len: usize) -> String {
        let meta = format!("filename {},album {}", b64(name.as_bytes()), b64(album.as_bytes()));
        let r = self.tus(
            "POST",
            "/v1/uploads",
            token,
            &[("Upload-Length", &len.to_string()), ("Upload-Metadata", &meta)],
            b"",
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
        assert!(r.header("upload-expires").unwrap().ends_with(" GMT"));
        r.header("location").unwrap().to_string()
    }

    fn patch(&self, token: &str, url: &str, offset: usize, bytes: &[u8]) -> Reply {
        let offset = offset.to_string();
        self.tus(
            "PATCH",
            url,
            token,
            &[
                ("Upload-Offset", &offset),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            bytes,
        )
    }
}

#[test]
fn tus_discovery_and_version_negotiation() {
    let server = Server::start();
    let options = server.send("OPTIONS", "/v1/uploads", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-version"), Some("1.0.0"));
    assert_eq!(options.header("tus-resumable"), Some("1.0.0"));
    let ext = options.header("tus-extension").unwrap();
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "termination",
        "checksum",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{ext}");
    }
    assert!(options.header("tus-checksum-algorithm").unwrap().contains("sha1"));

    let token = server.token("ann");
    let auth = format!("Bearer {token}");
    let old = server.send(
        "POST",
        "/v1/uploads",
        &[
            ("Authorization", &auth),
            ("Tus-Resumable", "0.2.2"),
            ("Upload-Length", "3"),
        ],
        b"",
    );
    old.problem(412, "unsupported-version");
    assert_eq!(old.header("tus-version"), Some("1.0.0"));
    server
        .tus("POST", "/v1/uploads", &token, &[], b"")
        .problem(400, "bad-request");
    // Refused before the upload routes see it, and still told the version.
    let refused = server.tus("POST", "/v1/uploads", "not-a-token", &[("Upload-Length", "3")], b"");
    refused.problem(401, "unauthenticated");
    assert_eq!(refused.header("tus-resumable"), Some("1.0.0"));
}

#[test]
fn a_tus_upload_resumes_across_a_killed_server_and_ends_with_the_duplicate_rules_outcome() {
    let mut server = Server::start();
    let token = server.token("ann");
    let video = data(20, 3_000_000);
    let url = server.create(&token, "clip.mp4", "Videos", video.len());

    let head = server.tus("HEAD", &url, &token, &[], b"");
    assert_eq!((head.status, head.header("upload-offset")), (200, Some("0")));
    assert_eq!(head.header("upload-length"), Some("3000000"));
    assert_eq!(head.header("cache-control"), Some("no-store"));

    let first = server.patch(&token, &url, 0, &video[..1_000_000]);
    assert_eq!((first.status, first.header("upload-offset")), (204, Some("1000000")));
    assert_eq!(first.header("keepsake-outcome"), None);

    // A stale offset: 409 with the offset to resume from.
    let stale = server.patch(&token, &url, 0, &video[..10]);
    stale.problem(409, "offset-mismatch");
    assert_eq!(stale.header("upload-offset"), Some("1000000"));
    let auth = format!("Bearer {token}");
    server
        .send(
            "PATCH",
            &url,
            &[
                ("Authorization", &auth),
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Offset", "1000000"),
            ],
            b"x",
        )
        .problem(415, "unsupported-media-type");

    // The server dies (SIGKILL); the durable offset survives it.
    server.restart();
    let head = server.tus("HEAD", &url, &token, &[], b"");
    assert_eq!(head.header("upload-offset"), Some("1000000"));
    let last = server.patch(&token, &url, 1_000_000, &video[1_000_000..]);
    assert_eq!(last.status, 204, "{}", String::from_utf8_lossy(&last.body));
    assert_eq!(last.header("upload-offset"), Some("3000000"));
    assert_eq!(last.header("keepsake-outcome"), Some("stored"));
    let id = last.header("keepsake-file-id").unwrap().to_string();
    assert_eq!(server.get(&format!("/v1/files/{id}/content"), &token).body, video);
    // Finished: the session is gone.
    server
        .tus("HEAD", &url, &token, &[], b"")
        .problem(404, "unknown-upload");

    // The same file again, in one creation-with-upload request: skipped.
    let meta = format!("filename {},album {}", b64(b"clip.mp4"), b64(b"Videos"));
    let again = server.tus(
        "POST",
        "/v1/uploads",
        &token,
        &[
            ("Upload-Length", "3000000"),
            ("Upload-Metadata", &meta),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        &video,
    );
    assert_eq!(again.status, 201);
    assert_eq!(again.header("keepsake-outcome"), Some("skipped"));
    assert_eq!(again.header("keepsake-file-id"), Some(id.as_str()));

    // With its BLAKE3 in the metadata, into another album: linked at
    // creation, no bytes sent, and the upload URL reports it finished.
    let hash = blake3::hash(&video).to_hex().to_string();
    let meta = format!(
        "filename {},album {},blake3 {}",
        b64(b"clip.mp4"),
        b64(b"Trip"),
        b64(hash.as_bytes())
    );
    let linked = server.tus(
        "POST",
        "/v1/uploads",
        &token,
        &[("Upload-Length", "3000000"), ("Upload-Metadata", &meta)],
        b"",
    );
    assert_eq!(linked.status, 201);
    assert_eq!(linked.header("keepsake-outcome"), Some("linked"));
    assert_eq!(linked.header("upload-offset"), Some("3000000"));
    let done = linked.header("location").unwrap().to_string();
    let head = server.tus("HEAD", &done, &token, &[], b"");
    assert_eq!(
        (head.header("upload-offset"), head.header("upload-length")),
        (Some("3000000"), Some("3000000"))
    );
    let patched = server.patch(&token, &done, 0, &video[..100]);
    assert_eq!(
        (patched.status, patched.header("upload-offset")),
        (204, Some("3000000"))
    );
    assert_eq!(server.get("/v1/usage", &token).json()["unique_bytes"], 3_000_000);
}

#[test]
fn tus_defer_length_checksums_and_termination() {
    let server = Server::start();
    let token = server.token("ann");
    let photo = data(21, 200_000);
    let meta = format!("filename {}", b64(b"IMG.JPG"));
    let made = server.tus(
        "POST",
        "/v1/uploads",
        &token,
        &[("Upload-Defer-Length", "1"), ("Upload-Metadata", &meta)],
        b"",
    );
    assert_eq!(made.status, 201);
    let url = made.header("location").unwrap().to_string();
    assert_eq!(
        server.tus("HEAD", &url, &token, &[], b"").header("upload-defer-length"),
        Some("1")
    );
    // A length with a body that cannot fit it is refused, and not kept.
    let ct0 = ("Content-Type", "application/offset+octet-stream");
    server
        .tus(
            "PATCH",
            &url,
            &token,
            &[("Upload-Offset", "0"), ct0, ("Upload-Length", "5")],
            b"seven!!",
        )
        .problem(413, "length-exceeded");
    assert_eq!(
        server.tus("HEAD", &url, &token, &[], b"").header("upload-defer-length"),
        Some("1")
    );
    server
        .tus(
            "POST",
            "/v1/uploads",
            &token,
            &[("Upload-Length", "3"), ("Upload-Defer-Length", "1")],
            b"",
        )
        .problem(400, "bad-request");

    // A checksum that does not match: 460, nothing kept.
    let wrong = format!("sha1 {}", b64(&[0u8; 20]));
    let ct = ("Content-Type", "application/offset+octet-stream");
    let r = server.tus(
        "PATCH",
        &url,
        &token,
        &[("Upload-Offset", "0"), ct, ("Upload-Checksum", &wrong)],
        &photo[..100_000],
    );
    r.problem(460, "checksum-mismatch");
    assert_eq!(
        server.tus("HEAD", &url, &token, &[], b"").header("upload-offset"),
        Some("0")
    );
    let odd = format!("md5 {}", b64(&[0u8; 16]));
    server
        .tus(
            "PATCH",
            &url,
            &token,
            &[("Upload-Offset", "0"), ct, ("Upload-Checksum", &odd)],
            &photo[..10],
        )
        .problem(400, "bad-request");

    let sha = {
        use sha1::Digest;
        sha1::Sha1::digest(&photo[..100_000]).to_vec()
    };
    let right = format!("sha1 {}", b64(&sha));
    let r = server.tus(
        "PATCH",
        &url,
        &token,
        &[("Upload-Offset", "0"), ct, ("Upload-Checksum", &right)],
        &photo[..100_000],
    );
    assert_eq!((r.status, r.header("upload-offset")), (204, Some("100000")));
    // The length arrives with the last piece, and completes the upload.
    let b3 = format!("blake3 {}", b64(blake3::hash(&photo[100_000..]).as_bytes()));
    let r = server.tus(
        "PATCH",
        &url,
        &token,
        &[
            ("Upload-Offset", "100000"),
            ct,
            ("Upload-Length", "200000"),
            ("Upload-Checksum", &b3),
        ],
        &photo[100_000..],
    );
    assert_eq!(
        r.header("keepsake-outcome"),
        Some("stored"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let listed = server.get("/v1/files?album=Uploads", &token).json();
    assert_eq!(listed["files"][0]["name"], "IMG.JPG");

    // Termination: the session and its bytes go.
    let url = server.create(&token, "b.jpg", "A", 10);
    assert_eq!(server.patch(&token, &url, 0, b"01234").status, 204);
    assert_eq!(server.tus("DELETE", &url, &token, &[], b"").status, 204);
    server
        .tus("HEAD", &url, &token, &[], b"")
        .problem(404, "unknown-upload");
}

#[test]
fn a_tus_upload_sent_whole_in_one_request_is_stored_at_once_and_answers_as_finished_after() {
    let mut server = Server::start();
    let token = server.token("ann");
    let ct = ("Content-Type", "application/offset+octet-stream");

    // Creation with every byte: stored without a session, at an upload URL
    // that answers as finished.
    let first = data(40, 3_000_000);
    let meta = format!("filename {},album {}", b64(b"IMG_1.JPG"), b64(b"Trip"));
    let len = first.len().to_string();
    let made = server.tus(
        "POST",
        "/v1/uploads",
        &token,
        &[("Upload-Length", &len), ("Upload-Metadata", &meta), ct],
        &first,
    );
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    assert_eq!(made.header("keepsake-outcome"), Some("stored"));
    assert_eq!(made.header("upload-offset"), Some(len.as_str()));
    let url = made.header("location").unwrap().to_string();
    let after = server.tus("HEAD", &url, &token, &[], b"");
    assert_eq!(
        (after.header("upload-offset"), after.header("upload-length")),
        (Some(len.as_str()), Some(len.as_str()))
    );
    // A PATCH there (tus-js-client sends one after a creation without a
    // body) is answered complete; and the URL has one spelling.
    let again = server.patch(&token, &url, 0, b"abc");
    assert_eq!((again.status, again.header("upload-offset")), (204, Some(len.as_str())));
    let (base, file) = url.rsplit_once("done-").unwrap();
    server
        .tus("HEAD", &format!("{base}done-0{file}"), &token, &[], b"")
        .problem(404, "unknown-upload");
    // An empty upload is finished by its creation too, at such a URL.
    let empty = server.tus("POST", "/v1/uploads", &token, &[("Upload-Length", "0")], b"");
    assert_eq!(empty.status, 201);
    let at = empty.header("location").unwrap().to_string();
    assert!(at.contains("/done-"), "{at}");
    assert_eq!(
        server.tus("HEAD", &at, &token, &[], b"").header("upload-offset"),
        Some("0")
    );

    // A PATCH with every byte of a session that has none: finished with it.
    let second = data(41, 2_000_000);
    let url = server.create(&token, "IMG_2.JPG", "Trip", second.len());
    // A checksum that does not match: 460, and the session is still empty.
    let wrong = format!("sha1 {}", b64(&[0u8; 20]));
    server
        .tus(
            "PATCH",
            &url,
            &token,
            &[("Upload-Offset", "0"), ct, ("Upload-Checksum", &wrong)],
            &second,
        )
        .problem(460, "checksum-mismatch");
    assert_eq!(
        server.tus("HEAD", &url, &token, &[], b"").header("upload-offset"),
        Some("0")
    );
    let done = server.patch(&token, &url, 0, &second);
    assert_eq!(done.status, 204, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(done.header("keepsake-outcome"), Some("stored"));
    assert_eq!(done.header("upload-offset"), Some("2000000"));

    // Metadata a session would refuse is refused the same with the body
    // held (so the answer never depends on whether a slot was free), and
    // its album is not made.
    let many: Vec<String> = (0..40).map(|i| format!("k{i} {}", b64(b"v"))).collect();
    let meta = format!("filename {},album {},{}", b64(b"x.jpg"), b64(b"Never"), many.join(","));
    let refused = |headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Upload-Length", "1000"), ("Upload-Metadata", meta.as_str())];
        all.extend_from_slice(headers);
        server
            .tus("POST", "/v1/uploads", &token, &all, body)
            .problem(400, "invalid-metadata");
    };
    refused(&[], b"");
    refused(&[ct], &first[..1000]);
    assert!(!server.get("/v1/albums", &token).json().to_string().contains("Never"));

    // The same content again, whole, in another album: linked, no bytes kept twice.
    let meta = format!("filename {},album {}", b64(b"IMG_1.JPG"), b64(b"Elsewhere"));
    let again = server.tus(
        "POST",
        "/v1/uploads",
        &token,
        &[("Upload-Length", &len), ("Upload-Metadata", &meta), ct],
        &first,
    );
    assert_eq!(again.header("keepsake-outcome"), Some("linked"));
    let usage = server.get("/v1/usage", &token).json();
    assert_eq!(usage["unique_bytes"], serde_json::json!(5_000_000));
    for (file, bytes) in [(&made, &first), (&done, &second)] {
        let id = file.header("keepsake-file-id").unwrap();
        let got = server.get(&format!("/v1/files/{id}/content"), &token);
        assert!(got.body == **bytes, "file {id} reads back changed");
    }
    server.stop();
    let out = server.keepsake(&["--user", "ann", "uploads"]);
    let sessions: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sessions, serde_json::json!([]), "a session was left");
}

#[test]
fn another_users_upload_url_is_as_unknown_as_a_malformed_one() {
    let server = Server::start();
    let (ann, bob) = (server.token("ann"), server.token("bob"));
    let url = server.create(&ann, "a.jpg", "A", 10);
    let id = url.rsplit('/').next().unwrap().to_string();
    for path in [
        url.clone(),
        "/v1/uploads/nonsense".into(),
        format!("/v1/uploads/{}", "0".repeat(32)),
    ] {
        server.tus("HEAD", &path, &bob, &[], b"").problem(404, "unknown-upload");
        server.patch(&bob, &path, 0, b"x").problem(404, "unknown-upload");
        server
            .tus("DELETE", &path, &bob, &[], b"")
            .problem(404, "unknown-upload");
    }
    // Ann's upload is untouched by Bob's attempts.
    let head = server.tus("HEAD", &format!("/v1/uploads/{id}"), &ann, &[], b"");
    assert_eq!(head.header("upload-offset"), Some("0"));
}

#[test]
fn a_users_html_is_a_sandboxed_download_and_odd_ranges_get_the_whole_file() {
    let server = Server::start();
    let token = server.token("ann");
    let page = b"<script>alert(document.cookie)</script>";
    let id = server
        .put(&token, "A", "index.html", page)
        .header("keepsake-file-id")
        .unwrap()
        .to_string();
    let path = format!("/v1/files/{id}/content");
    // The scheme is case-insensitive.
    let auth = format!("bearer {token}");
    let r = server.send("GET", &path, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-disposition"), Some("attachment"));
    assert_eq!(r.header("content-security-policy"), Some("sandbox"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    let overlapping = server.send(
        "GET",
        &path,
        &[("Authorization", &auth), ("Range", "bytes=0-10,5-15")],
        b"",
    );
    assert_eq!((overlapping.status, overlapping.body.as_slice()), (200, &page[..]));
    let head = server.send("HEAD", &path, &[("Authorization", &auth), ("Range", "bytes=0-3")], b"");
    assert_eq!((head.status, head.header("content-range")), (200, None));
    server
        .send("DELETE", "/v1/files", &[("Authorization", &auth)], b"")
        .problem(405, "method-not-allowed");
}

#[test]
fn a_large_one_shot_upload_past_the_quota_is_refused_before_a_byte_of_it_is_read() {
    let mut server = Server::start();
    let token = server.token("ann");
    server.put(&token, "A", "first.jpg", &data(70, 1000));
    server.stop();
    let out = server.keepsake(&["--user", "ann", "quota", "set", "1MiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.restart();
    // Headers only: the answer comes from the declared length.
    let head = format!(
        "PUT /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nKeepsake-Name: v.mp4\r\nContent-Length: 40000000\r\n\r\n"
    );
    server.answer_to_head(&head).problem(413, "quota-exceeded");
}

#[test]
fn a_one_shot_upload_cut_off_mid_body_stores_nothing_and_leaves_nothing_behind() {
    let mut server = Server::start();
    let token = server.token("ann");
    // Held whole before its upload (10 MB), and streamed into it (40 MB).
    for (len, sent, album) in [(10_000_000, 5_000_000, "Held"), (40_000_000, 20_000_000, "Streamed")] {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let req = format!(
            "PUT /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nKeepsake-Name: big.mp4\r\nKeepsake-Album: {album}\r\nContent-Length: {len}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(&data(30, sent)).unwrap();
        drop(s);
    }
    // The server notices the resets (given a moment).
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(server.get("/v1/files", &token).json()["files"], serde_json::json!([]));
    // A held body's album is made only once the body is whole. (A
    // streamed one's session needed its album from the start.)
    let albums = server.get("/v1/albums", &token).json();
    assert!(!albums.to_string().contains("Held"), "{albums}");
    server.stop();
    let out = server.keepsake(&["--user", "ann", "uploads"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sessions: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sessions, serde_json::json!([]));
    let staged = std::fs::read_dir(server.dir.path().join("staging")).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "a spooled body was left in staging/");
}

#[test]
fn the_ietf_draft_creates_resumes_and_completes_on_the_same_sessions_for_each_interop_version() {
    let server = Server::start();
    let token = server.token("ann");
    let auth = format!("Bearer {token}");
    let send = |method: &str, path: &str, version: &str, extra: &[(&str, &str)], body: &[u8]| {
        let mut h = vec![
            ("Authorization", auth.as_str()),
            ("Upload-Draft-Interop-Version", version),
        ];
        h.extend_from_slice(extra);
        server.send(method, path, &h, body)
    };

    // Interop 6 and later: Upload-Complete. One request, the whole file,
    // no length declared and no metadata (as URLSession sends it).
    let whole = data(40, 250_000);
    let r = send("POST", "/v1/uploads", "6", &[("Upload-Complete", "?1")], &whole);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("upload-complete"), Some("?1"));
    assert_eq!(r.header("keepsake-outcome"), Some("stored"));
    let id = r.header("keepsake-file-id").unwrap().to_string();
    assert_eq!(server.get(&format!("/v1/files/{id}/content"), &token).body, whole);
    let listed = server.get("/v1/files?album=Uploads", &token).json();
    assert!(listed["files"][0]["name"].as_str().unwrap().starts_with("upload-"));

    for (version, complete, incomplete) in [
        ("5", "Upload-Complete", None),
        ("9", "Upload-Complete", None),
        ("3", "Upload-Incomplete", Some(())),
    ] {
        let (more, last) = if incomplete.is_some() {
            ("?1", "?0")
        } else {
            ("?0", "?1")
        };
        let video = data(41 + u64::from(version.as_bytes()[0]), 2_000_000);
        let r = send(
            "POST",
            "/v1/uploads",
            version,
            &[(complete, more), ("Upload-Length", "2000000")],
            &video[..700_000],
        );
        assert_eq!(r.status, 201, "{version}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            (r.header("upload-offset"), r.header(&complete.to_ascii_lowercase())),
            (Some("700000"), Some(more))
        );
        let url = r.header("location").unwrap().to_string();
        // Offset retrieval, then a stale append, then the rest.
        let head = send("HEAD", &url, version, &[], b"");
        assert_eq!(
            (head.status, head.header("upload-offset")),
            (200, Some("700000")),
            "{version}"
        );
        assert_eq!(head.header(&complete.to_ascii_lowercase()), Some(more));
        assert_eq!(head.header("cache-control"), Some("no-store"));
        let stale = send(
            "PATCH",
            &url,
            version,
            &[("Upload-Offset", "0"), (complete, last)],
            &video,
        );
        stale.problem(409, "offset-mismatch");
        assert_eq!(stale.header("upload-offset"), Some("700000"));
        let r = send(
            "PATCH",
            &url,
            version,
            &[
                ("Upload-Offset", "700000"),
                (complete, last),
                ("Content-Type", "application/partial-upload"),
            ],
            &video[700_000..],
        );
        assert_eq!(r.status, 204, "{version}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("keepsake-outcome"), Some("stored"), "{version}");
        assert_eq!(r.header(&complete.to_ascii_lowercase()), Some(last));
    }

    // Cancellation.
    let r = send("POST", "/v1/uploads", "6", &[("Upload-Complete", "?0")], b"abc");
    let url = r.header("location").unwrap().to_string();
    assert_eq!(send("DELETE", &url, "6", &[], b"").status, 204);
    send("HEAD", &url, "6", &[], b"").problem(404, "unknown-upload");

    for unknown in ["4", "99", "x"] {
        send("POST", "/v1/uploads", unknown, &[("Upload-Complete", "?1")], b"x").problem(412, "unsupported-version");
    }
}

#[test]
fn the_bulk_preflight_answers_each_item_by_the_users_own_files_and_can_complete_the_links() {
    let server = Server::start();
    let (ann, bob) = (server.token("ann"), server.token("bob"));
    let photo = data(50, 40_000);
    let hash = blake3::hash(&photo).to_hex().to_string();
    assert_eq!(server.put(&ann, "Camera", "a.jpg", &photo).status, 201);
    let other = blake3::hash(b"never uploaded").to_hex().to_string();
    let auth = |t: &str| format!("Bearer {t}");
    let ask = |token: &str, body: Value| {
        let a = auth(token);
        server.send(
            "POST",
            "/v1/check",
            &[("Authorization", &a), ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let items = serde_json::json!([
        {"name": "a.jpg", "hash": hash, "album": "Camera"},
        {"name": "a.jpg", "hash": hash, "album": "Trip"},
        {"name": "b.jpg", "hash": hash, "album": "Trip"},
        {"name": "b.jpg", "hash": hash, "album": "Trip", "mode": "hash"},
        {"name": "c.jpg", "hash": other, "album": "Camera"},
        {"name": "bad/name", "hash": hash},
        {"name": "d.jpg", "hash": "not hex"},
    ]);
    let r = ask(&ann, serde_json::json!({"items": items}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got: Vec<Value> = r.json()["items"].as_array().unwrap().clone();
    let actions: Vec<&str> = got.iter().map(|a| a["action"].as_str().unwrap_or("error")).collect();
    assert_eq!(actions, ["skip", "link", "upload", "link", "upload", "error", "error"]);
    assert_eq!(got[5]["error"]["kind"], "invalid-name");
    assert_eq!(got[6]["error"]["kind"], "bad-request");

    // Bob asks about Ann's content: he has none of it, so he uploads.
    let r = ask(
        &bob,
        serde_json::json!({"items": [{"name": "a.jpg", "hash": hash, "album": "Camera"}]}),
    );
    assert_eq!(r.json()["items"][0]["action"], "upload");

    // Completing the links: no bytes, the file lands in Trip.
    let r = ask(&ann, serde_json::json!({"items": items, "link": true}));
    let done: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap_or("error").to_string())
        .collect();
    assert_eq!(
        done,
        ["skipped", "linked", "upload", "skipped", "upload", "error", "error"]
    );
    let trip = server.get("/v1/files?album=Trip", &ann).json();
    assert_eq!(trip["files"].as_array().unwrap().len(), 1);
    assert_eq!(server.get("/v1/usage", &ann).json()["unique_bytes"], 40_000);

    let many: Vec<Value> = (0..1001)
        .map(|i| serde_json::json!({"name": format!("{i}.jpg"), "hash": other}))
        .collect();
    ask(&ann, serde_json::json!({"items": many})).problem(400, "bad-request");
}

/// Photo-sized bodies are held whole, sixteen at most and eight of one
/// user's; one that finds no room is streamed instead of waiting. So
/// stalled bodies (the server is left waiting for their bytes) make no
/// one else's upload wait: not the same user's ninth, nor another user's
/// once all sixteen are taken.
#[test]
fn bodies_stalled_mid_way_hold_no_one_elses_upload_hostage() {
    let server = Server::start();
    let stall = |token: &str, name: &str| {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let head = format!(
            "PUT /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nKeepsake-Name: {name}\r\nContent-Length: 1000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&data(50, 1000)).unwrap();
        s
    };
    let upload = |token: &str, name: &str, seed: u64| {
        let auth = format!("Bearer {token}");
        let r = server.send(
            "PUT",
            "/v1/files",
            &[("Authorization", &auth), ("Keepsake-Name", name)],
            &data(seed, 500_000),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    };
    // A checksummed piece must be held to be checked: with no room, 503
    // with `Retry-After`, which tus clients retry, and nothing appended.
    let piece = data(54, 1000);
    let sum = format!(
        "sha1 {}",
        b64(&{
            use sha1::Digest;
            sha1::Sha1::digest(&piece).to_vec()
        })
    );
    let checked = |token: &str, url: &str, offset: &str| {
        let ct = ("Content-Type", "application/offset+octet-stream");
        server.tus(
            "PATCH",
            url,
            token,
            &[("Upload-Offset", offset), ct, ("Upload-Checksum", &sum)],
            &piece,
        )
    };
    let (ann, bob, carol) = (server.token("ann"), server.token("bob"), server.token("carol"));
    let mut stalled: Vec<TcpStream> = (0..8).map(|i| stall(&ann, &format!("a{i}.jpg"))).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Eight bodies are all one user holds: none more for ann, room for
    // others.
    let ann_url = server.create(&ann, "x.mp4", "A", 2_000_000);
    let busy = checked(&ann, &ann_url, "0");
    busy.problem(503, "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    upload(&ann, "ninth.jpg", 51);
    let url = server.create(&carol, "v.mp4", "A", 2_000_000);
    let r = checked(&carol, &url, "0");
    assert_eq!((r.status, r.header("upload-offset")), (204, Some("1000")));
    // Sixteen held in all: none for anyone, and still nobody waits.
    stalled.extend((0..8).map(|i| stall(&bob, &format!("b{i}.jpg"))));
    std::thread::sleep(std::time::Duration::from_millis(500));
    upload(&carol, "photo.jpg", 52);
    upload(&bob, "ninth.jpg", 53);
    checked(&carol, &url, "1000").problem(503, "busy");
    drop(stalled);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = checked(&carol, &url, "1000");
    assert_eq!((r.status, r.header("upload-offset")), (204, Some("2000")));
}

#[test]
fn a_client_trickling_its_headers_or_stalling_its_body_is_let_go_and_a_resumable_upload_keeps_what_arrived() {
    let server = Server::start_with(&["--header-timeout", "1", "--idle-timeout", "1"]);
    let token = server.token("ann");

    // Headers never finished: the connection is closed.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the connection was held"
    );

    // A body that stops mid-way: the request fails, and the bytes that
    // arrived are durable in the session, where a HEAD says to resume.
    let url = server.create(&token, "v.mp4", "A", 3_000_000);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "PATCH {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 3000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data(60, 1_000_000)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let offset = server.tus("HEAD", &url, &token, &[], b"");
    assert_eq!(offset.header("upload-offset"), Some("1000000"));

    // The same for a creation with its first bytes: the error answer names
    // the session, so the client resumes there.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 2000000\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 2000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data(61, 500_000)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let reply = Reply::parse(&answer, false);
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&answer));
    let url = reply
        .header("location")
        .expect("the error names the session")
        .to_string();
    let offset = server.tus("HEAD", &url, &token, &[], b"");
    assert_eq!(offset.header("upload-offset"), Some("500000"));
}
