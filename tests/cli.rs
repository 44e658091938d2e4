//! The `keepsake` command's contract, checked from outside: JSON shapes,
//! outcomes, exit statuses.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

struct Cli {
    store: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Cli {
            store: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        keepsake_at(self.store.path(), args)
    }

    /// Runs with `--json`, expects success, parses the single object.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--json"]].concat());
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `backup --json`, returning its lines.
    fn backup(&self, args: &[&str]) -> (Vec<Value>, Output) {
        backup_at(self.store.path(), args)
    }

    /// Writes a file dated an hour back: a backup reads it at once, rather
    /// than waiting for a file so recently modified to settle.
    fn file(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.data.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        set_mtime(&p, std::time::SystemTime::now() - std::time::Duration::from_secs(3600));
        p
    }

    fn dir(&self) -> &str {
        self.data.path().to_str().unwrap()
    }

    /// Starts the command with its three streams piped, for a test that
    /// writes its input or closes its output while it runs.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        use std::process::Stdio;
        Command::new(env!("CARGO_BIN_EXE_keepsake"))
            .arg("--store")
            .arg(self.store.path())
            .args(args)
            .env_remove("KEEPSAKE_STORE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// The `keepsake` command with `--store store`, whatever the environment
/// says.
fn keepsake_at(store: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("KEEPSAKE_STORE")
        .output()
        .unwrap()
}

/// `backup --json` into `store`: its lines, and the process's output.
fn backup_at(store: &std::path::Path, args: &[&str]) -> (Vec<Value>, Output) {
    let out = keepsake_at(store, &[&["backup", "--json"], args].concat());
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, out)
}

fn photo(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().unwrap();
    assert_eq!(last["summary"], true);
    last
}

fn outcomes(lines: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<_> = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or("").to_string(),
                l["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn backup_reports_each_file_and_a_summary_then_skips_on_rerun() {
    let cli = Cli::new();
    cli.file("a.jpg", &photo(1, 100_000));
    cli.file("sub/b.jpg", &photo(2, 50_000));
    cli.file("sub/a_copy.jpg", &photo(1, 100_000));
    let (lines, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(lines.len(), 4);
    // The lines' shapes, exactly: a field added or renamed is a contract
    // changed.
    let keys = |l: &Value| l.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    for l in &lines[..3] {
        assert_eq!(
            keys(l),
            ["bytes_written", "file_id", "hash", "name", "outcome", "path", "size"],
            "{l}"
        );
        assert_eq!(l["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(
        keys(&lines[3]),
        [
            "bytes_deduplicated",
            "bytes_written",
            "errors",
            "files",
            "ignored",
            "linked",
            "quota_refused",
            "restored",
            "skipped",
            "stored",
            "summary"
        ]
    );
    let s = summary(&lines);
    assert_eq!(
        (s["files"].as_u64(), s["stored"].as_u64(), s["errors"].as_u64()),
        (Some(3), Some(3), Some(0))
    );
    // The copy under another name shares the blob: 150,000 bytes written, not 250,000.
    assert_eq!(s["bytes_written"], 150_000);
    assert_eq!(s["bytes_deduplicated"], 100_000);

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    let s = summary(&again);
    assert_eq!((s["skipped"].as_u64(), s["bytes_written"].as_u64()), (Some(3), Some(0)));
}

#[test]
fn backup_into_another_album_links_and_hash_mode_ignores_names() {
    let cli = Cli::new();
    cli.file("x/IMG_1.jpg", &photo(3, 20_000));
    let first = cli.data.path().join("x");
    cli.backup(&[first.to_str().unwrap(), "--album", "Camera"]);
    cli.file("y/renamed.jpg", &photo(3, 20_000));
    let second = cli.data.path().join("y");
    // Desktop rule: another name is a new file (sharing the blob).
    let (lines, _) = cli.backup(&[second.to_str().unwrap(), "--album", "Trip"]);
    assert_eq!(outcomes(&lines), vec![("renamed.jpg".into(), "stored".into())]);
    assert_eq!(lines[0]["bytes_written"], 0);
    // Mobile rule: the same content is a duplicate; it is linked into the new album.
    let (lines, _) = cli.backup(&[second.to_str().unwrap(), "--album", "Phone", "--mode", "hash"]);
    assert_eq!(outcomes(&lines), vec![("renamed.jpg".into(), "linked".into())]);
    let albums = cli.json(&["albums"]);
    let names: Vec<_> = albums
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Camera", "Trip", "Phone"]);
    for a in albums.as_array().unwrap() {
        assert_eq!(
            (a["files"].as_u64(), a["bytes"].as_u64()),
            (Some(1), Some(20_000)),
            "{a}"
        );
    }
    let usage = cli.json(&["usage"]);
    assert_eq!(usage["unique_bytes"], 20_000);
    assert_eq!(usage["logical_bytes"], 40_000);
    let keys: Vec<_> = usage.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "blobs",
            "files",
            "limit",
            "logical_bytes",
            "staged_bytes",
            "trash_bytes",
            "trashed_files",
            "unique_bytes",
            "user"
        ],
        "{usage}"
    );
}

#[test]
fn names_that_are_not_utf8_or_hold_a_newline_are_backed_up_and_shown_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let cli = Cli::new();
    cli.file("good.jpg", &photo(4, 5_000));
    let latin1 = cli.data.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg"));
    fs::write(&latin1, photo(5, 5_000)).unwrap();
    set_mtime(
        &latin1,
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    cli.file("two\nlines.jpg", &photo(6, 5_000));
    let (lines, out) = cli.backup(&[cli.dir(), "--album", "A"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary(&lines)["stored"], 3);
    let line = lines.iter().find(|l| l["name_hex"].is_string()).unwrap();
    assert_eq!(
        (&line["name"], &line["name_hex"]),
        (&Value::from(r"caf\xe9.jpg"), &Value::from("636166e92e6a7067"))
    );
    assert!(
        lines.iter().any(|l| l["name"] == "two\nlines.jpg"),
        "JSON carries the name itself"
    );
    // The human output escapes, so no name can forge a line.
    let human = cli.run(&["ls"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(r"two\nlines.jpg") && text.contains(r"caf\xe9.jpg"),
        "{text}"
    );
    // Restored under its exact bytes.
    let id = line["file_id"].to_string();
    let restored = cli.data.path().join("restored");
    assert!(cli
        .run(&["get", &id, "-o", restored.to_str().unwrap()])
        .status
        .success());
    assert_eq!(fs::read(&restored).unwrap(), photo(5, 5_000));
}

/// The `ignored` lines of a backup: (file name, reason).
fn ignored(lines: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "ignored")
        .map(|l| {
            let path = PathBuf::from(l["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            (name, l["reason"].as_str().unwrap().to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn links_fifos_sockets_devices_and_the_store_itself_are_not_backed_up_and_are_said() {
    let cli = Cli::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.jpg");
    fs::write(&secret, photo(5, 6_000)).unwrap();
    fs::create_dir_all(outside.path().join("Photos")).unwrap();
    let data = cli.data.path();
    std::os::unix::fs::symlink(&secret, data.join("link.jpg")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("Photos"), data.join("linked-folder")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(data.join("pipe"))
        .status()
        .unwrap()
        .success());
    let _socket = std::os::unix::net::UnixListener::bind(data.join("socket")).unwrap();
    cli.file("real.jpg", &photo(6, 6_000));
    // The store inside the folder backed up (as the default store is inside
    // a backup of `~`), reached through another path too.
    let store = data.join("library").join("store");
    std::os::unix::fs::symlink(&store, data.join("store-link")).unwrap();
    let run = |extra: &[&str]| backup_at(&store, &[&["--album", "A"], extra].concat());
    let (first, out) = run(&[cli.dir()]);
    assert!(out.status.success());
    for (lines, store_seen) in [(first, false), (run(&[cli.dir()]).0, true)] {
        assert_eq!(outcomes_of_files(&lines), ["real.jpg"]);
        let mut expected = vec![
            ("link.jpg".to_string(), "symbolic link (not followed)".to_string()),
            ("linked-folder".into(), "symbolic link (not followed)".into()),
            ("pipe".into(), "FIFO".into()),
            ("socket".into(), "socket".into()),
            ("store-link".into(), "symbolic link (not followed)".into()),
        ];
        if store_seen {
            expected.push(("store".into(), "the store's own directory (never backed up)".into()));
            expected.sort();
        }
        assert_eq!(ignored(&lines), expected);
        assert_eq!(summary(&lines)["ignored"], expected.len());
        let line = lines.iter().find(|l| l["outcome"] == "ignored").unwrap();
        let keys: Vec<_> = line.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["outcome", "path", "reason"], "{line}");
    }
    // Named, the store is still not backed up, whatever path leads to it.
    let named = data.join("store-link").join("segments");
    let (lines, out) = run(&[named.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(summary(&lines)["files"], 0);
    assert_eq!(
        ignored(&lines),
        [("segments".into(), "the store's own directory (never backed up)".into())]
    );
    let human = keepsake_at(&store, &["backup", "--album", "A", cli.dir()]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("pipe: FIFO"), "{text}");
    assert!(text.contains(", 6 ignored;"), "{text}");
}

/// The names of the files a backup reported (not the ignored entries).
fn outcomes_of_files(lines: &[Value]) -> Vec<String> {
    let mut v: Vec<_> = lines
        .iter()
        .filter_map(|l| l["name"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

#[test]
fn a_named_path_that_cannot_be_backed_up_is_an_error_and_alone_creates_nothing() {
    let cli = Cli::new();
    let fresh = cli.store.path().join("new-store");
    let missing = cli.data.path().join("no-such-folder");
    for named in ["/dev/null", missing.to_str().unwrap()] {
        let (lines, out) = backup_at(&fresh, &["--album", "A", named]);
        assert_eq!(out.status.code(), Some(1), "{named}");
        assert_eq!(
            (lines[0]["path"].as_str(), &lines[0]["outcome"]),
            (Some(named), &Value::from("error"))
        );
        assert_eq!(summary(&lines)["errors"], 1);
        let keys: Vec<_> = lines[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["error", "outcome", "path"]);
        assert!(!fresh.exists(), "no store is created for {named}");
    }
    // Next to a readable path, the mistake is an error line, and the rest is
    // backed up.
    cli.file("a.jpg", &photo(1, 1_000));
    let (lines, out) = cli.backup(&["/dev/null", cli.dir(), "--album", "A"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        outcomes(&lines),
        [("".into(), "error".into()), ("a.jpg".into(), "stored".into())]
    );
    assert!(lines[0]["error"].as_str().unwrap().contains("a device"), "{}", lines[0]);
}

#[test]
fn a_photo_still_being_written_is_stored_whole_or_reported_never_torn() {
    use std::io::Write;
    let cli = Cli::new();
    cli.file("done.jpg", &photo(1, 10_000));
    let whole: Vec<u8> = (0..64).flat_map(|i| photo(i, 64 << 10)).collect();
    // A camera import writing a 4 MiB photo in pieces, and one that never
    // stops writing within the backup's patience.
    let growing = cli.data.path().join("importing.jpg");
    let endless = cli.data.path().join("endless.jpg");
    let (a, b) = (fs::File::create(&growing).unwrap(), fs::File::create(&endless).unwrap());
    let chunks = whole.clone();
    let writer = std::thread::spawn(move || {
        let (mut a, mut b) = (a, b);
        for (i, chunk) in chunks.chunks(64 << 10).enumerate() {
            a.write_all(chunk).unwrap();
            b.write_all(&chunk[..16]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(if i < 8 { 60 } else { 15 }));
        }
        for _ in 0..140 {
            b.write_all(b"more").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (lines, out) = cli.backup(&[cli.dir(), "--album", "A"]);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "the endless one is an error");
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().ends_with(name))
            .unwrap()
    };
    assert_eq!(line("done.jpg")["outcome"], "stored");
    let imported = line("importing.jpg");
    assert_eq!(imported["outcome"], "stored", "{imported}");
    assert_eq!(
        get_bytes(&cli, &imported["file_id"].to_string()),
        whole,
        "stored whole, not torn"
    );
    let endless_line = line("endless.jpg");
    assert_eq!(endless_line["outcome"], "error");
    assert!(
        endless_line["error"].as_str().unwrap().contains("still being written"),
        "{endless_line}"
    );
    assert_eq!(summary(&lines)["stored"], 2);
}

#[test]
fn an_edit_that_keeps_the_modification_time_is_seen_by_the_change_time() {
    let cli = Cli::new();
    let a = settled_file(&cli, "a.jpg", &photo(1, 100_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    // `dd conv=notrunc` then `touch -d`: size, inode and mtime unchanged.
    tamper_keeping_stamp(&a, &photo(9, 100_000));
    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(outcomes(&again), [("a.jpg".into(), "stored".into())]);
    assert_ne!(id_of(&again, "a.jpg"), id_of(&first, "a.jpg"));
    assert_eq!(get_bytes(&cli, &id_of(&again, "a.jpg")), photo(9, 100_000));
}

fn id_of(lines: &[Value], name: &str) -> String {
    lines.iter().find(|l| l["name"] == name).unwrap()["file_id"].to_string()
}

#[test]
fn album_membership_trash_and_get_round_trip() {
    let cli = Cli::new();
    let a = cli.file("a.jpg", &photo(6, 30_000));
    cli.file("b.jpg", &photo(7, 40_000));
    let (lines, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    let (ida, idb) = (id_of(&lines, "a.jpg"), id_of(&lines, "b.jpg"));
    cli.json(&["album", "create", "Fav"]);
    cli.json(&["add", &ida, "--album", "Fav"]);
    let ls = cli.json(&["ls", "--album", "Fav"]);
    assert_eq!(ls[0]["albums"], serde_json::json!(["Camera", "Fav"]));
    cli.json(&["move", &idb, "--from", "Camera", "--to", "Fav"]);
    cli.json(&["remove", &ida, "--album", "Fav"]);
    let fav: Vec<_> = cli
        .json(&["ls", "--album", "Fav"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(fav, ["b.jpg"]);

    let out_path = cli.data.path().join("out.jpg");
    let got = cli.run(&["get", &ida, "-o", out_path.to_str().unwrap()]);
    assert!(got.status.success());
    assert_eq!(fs::read(&out_path).unwrap(), fs::read(&a).unwrap());
    let stdout = cli.run(&["get", &ida]);
    assert_eq!(stdout.stdout, fs::read(&a).unwrap());

    cli.json(&["delete", &ida]);
    assert_eq!(cli.json(&["ls"]).as_array().unwrap().len(), 1);
    let trash = cli.json(&["trash"]);
    assert_eq!(trash[0]["name"], "a.jpg");
    assert_eq!(cli.json(&["usage"])["trash_bytes"], 30_000);
    cli.json(&["trash", "restore", &ida]);
    assert_eq!(cli.json(&["ls", "--album", "Camera"]).as_array().unwrap().len(), 1);
    cli.json(&["delete", &ida]);
    let purged = cli.json(&["trash", "empty"]);
    assert_eq!(
        (purged["files"].as_u64(), purged["bytes_freed"].as_u64()),
        (Some(1), Some(30_000))
    );
    let gc = cli.json(&["gc", "--grace", "0"]);
    for key in ["blobs_removed", "bytes_reclaimed", "segments_compacted"] {
        assert!(gc.get(key).is_some(), "{key} missing");
    }
    assert_eq!(gc["blobs_removed"], 1);
    let verify = cli.json(&["verify", "--scrub"]);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["problems"], serde_json::json!([]));
    let stats = cli.json(&["stats"]);
    for key in [
        "physical_bytes",
        "logical_bytes",
        "dedup_ratio",
        "segments",
        "garbage_bytes",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing");
    }
}

/// `get -o` writes the output whole or not at all, and never through a
/// name it did not create: a file where the old fixed temporary name was,
/// and a symlink at the output path, are left as they are (the symlink is
/// replaced, its target untouched), and no temporary file is left behind.
#[test]
fn get_to_a_path_replaces_it_whole_and_writes_through_no_existing_name() {
    let cli = Cli::new();
    let a = cli.file("a.jpg", &photo(8, 20_000));
    let (lines, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    let id = id_of(&lines, "a.jpg");
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.jpg");
    let bystander = out_dir.path().join("out.keepsake-partial");
    fs::write(&bystander, b"not keepsake's").unwrap();
    let target = out_dir.path().join("secret.txt");
    fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, &out).unwrap();

    let got = cli.run(&["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(
        !fs::symlink_metadata(&out).unwrap().file_type().is_symlink(),
        "written through the symlink"
    );
    assert_eq!(fs::read(&out).unwrap(), fs::read(&a).unwrap());
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert_eq!(fs::read(&bystander).unwrap(), b"not keepsake's");
    let mut names: Vec<_> = fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["out.jpg", "out.keepsake-partial", "secret.txt"],
        "a temporary file was left"
    );
}

#[test]
fn exit_statuses_are_meaningful() {
    let cli = Cli::new();
    cli.file("a.jpg", &photo(8, 10_000));
    let (lines, _) = cli.backup(&[cli.dir(), "--album", "A"]);
    let id = id_of(&lines, "a.jpg");
    assert_eq!(cli.run(&["get", "999"]).status.code(), Some(3), "unknown file");
    assert_eq!(
        cli.run(&["ls", "--album", "Nope"]).status.code(),
        Some(3),
        "unknown album"
    );
    // Another user's file id is unknown to this user.
    assert_eq!(cli.run(&["--user", "mallory", "get", &id]).status.code(), Some(3));
    assert_eq!(
        cli.run(&["album", "create", "bad\u{7}name"]).status.code(),
        Some(2),
        "invalid name"
    );
    assert_eq!(cli.run(&["frobnicate"]).status.code(), Some(2), "usage error");
    assert_eq!(
        cli.run(&["trash", "restore", &id]).status.code(),
        Some(3),
        "not in the trash"
    );
    let help = cli.run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("backup"));
    let err = cli.run(&["get", "999"]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn quota_refuses_new_bytes_but_not_duplicates() {
    let cli = Cli::new();
    cli.file("a/one.jpg", &photo(9, 10_000));
    let a = cli.data.path().join("a");
    cli.backup(&[a.to_str().unwrap(), "--album", "A"]);
    let q = cli.json(&["quota", "set", "12KiB"]);
    assert_eq!(q["limit"], 12_288);
    cli.file("b/two.jpg", &photo(10, 10_000));
    let b = cli.data.path().join("b");
    let (lines, out) = cli.backup(&[b.to_str().unwrap(), "--album", "A"]);
    assert_eq!(out.status.code(), Some(4), "only quota refusals: the quota status");
    assert!(lines[0]["error"].as_str().unwrap().contains("quota exceeded"));
    assert_eq!(lines.last().unwrap()["quota_refused"], 1);
    // Another failure beside it comes first: status 1.
    cli.file("c/three.jpg", &photo(11, 10_000));
    let c = cli.data.path().join("c");
    let missing = cli.data.path().join("no-such-folder");
    let (_, out) = cli.backup(&[c.to_str().unwrap(), missing.to_str().unwrap(), "--album", "A"]);
    assert_eq!(out.status.code(), Some(1));
    // The same content into another album still works at the limit.
    let (lines, out) = cli.backup(&[a.to_str().unwrap(), "--album", "B"]);
    assert!(out.status.success());
    assert_eq!(lines[0]["outcome"], "linked");
    cli.json(&["quota", "clear"]);
    assert_eq!(cli.json(&["usage"])["limit"], Value::Null);
}

#[test]
fn read_commands_never_create_a_store_at_a_mistyped_path() {
    let cli = Cli::new();
    let typo = cli.store.path().join("typo");
    let out = Command::new(env!("CARGO_BIN_EXE_keepsake"))
        .args(["--store", typo.to_str().unwrap(), "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keepsake store"));
    assert!(!typo.exists());
}

#[test]
fn a_second_process_gets_store_in_use() {
    let cli = Cli::new();
    let _held = keepsake::Store::open(cli.store.path()).unwrap();
    let out = cli.run(&["albums"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

#[test]
fn verify_exits_1_and_names_the_file_when_a_blob_is_damaged() {
    let cli = Cli::new();
    let content = photo(11, 200_000);
    cli.file("precious.jpg", &content);
    cli.backup(&[cli.dir(), "--album", "A"]);
    let seg_dir = cli.store.path().join("segments");
    let seg: PathBuf = fs::read_dir(&seg_dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&seg).unwrap();
    let at = find(&bytes, &content[1000..1064]).unwrap();
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let out = cli.run(&["verify", "--scrub", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"][0]["kind"], "damaged-blob");
    assert_eq!(report["problems"][0]["files"][0]["name"], "precious.jpg");
    let got = cli.run(&["get", "1"]);
    assert_eq!(got.status.code(), Some(6), "integrity error, never wrong bytes");
    assert!(got.stdout.is_empty());
}

/// How a store loses a photo's bytes: its segment file gone, or a bit of
/// it flipped.
#[derive(Debug, Clone, Copy)]
enum Loss {
    SegmentFile,
    FlippedBit,
}

/// Loses the bytes of the store's only segment, runs `verify --scrub` and
/// `verify --repair --scrub` (both exit 1: the bytes are gone), then the
/// ordinary re-run of the backup, which must heal every file; then the lost
/// segment is retired by `retire` and `verify` is clean.
fn heal_on_the_ordinary_rerun(loss: Loss, retire: &[&str]) {
    let cli = Cli::new();
    // Not periodic, so that a window of one photo is found in no other.
    let photos: Vec<Vec<u8>> = (1..4u64)
        .map(|seed| {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (0..200_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    for (i, p) in photos.iter().enumerate() {
        cli.file(&format!("p{i}.jpg"), p);
    }
    let (first, _) = cli.backup(&[cli.dir(), "--album", "A"]);
    let seg_dir = cli.store.path().join("segments");
    let seg: PathBuf = fs::read_dir(&seg_dir).unwrap().next().unwrap().unwrap().path();
    match loss {
        Loss::SegmentFile => fs::remove_file(&seg).unwrap(),
        Loss::FlippedBit => {
            let mut bytes = fs::read(&seg).unwrap();
            for p in &photos {
                let at = find(&bytes, &p[1000..1064]).unwrap();
                bytes[at] ^= 0x40;
            }
            fs::write(&seg, &bytes).unwrap();
        }
    }
    assert_eq!(cli.run(&["verify", "--scrub"]).status.code(), Some(1), "{loss:?}");
    assert_eq!(
        cli.run(&["verify", "--repair", "--scrub"]).status.code(),
        Some(1),
        "{loss:?}"
    );

    let (again, out) = cli.backup(&[cli.dir(), "--album", "A"]);
    assert!(
        out.status.success(),
        "{loss:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        again.iter().all(|l| l.get("unchanged").is_none()),
        "{loss:?}: nothing is trusted unread"
    );
    assert_eq!(
        summary(&again)["bytes_written"],
        600_000,
        "{loss:?}: every photo written again"
    );
    for (i, p) in photos.iter().enumerate() {
        let name = format!("p{i}.jpg");
        assert_eq!(id_of(&again, &name), id_of(&first, &name), "{loss:?}: the same files");
        assert_eq!(&get_bytes(&cli, &id_of(&first, &name)), p, "{loss:?}: healed");
    }
    for args in [retire, &["verify"]] {
        let out = cli.run(args);
        assert!(
            out.status.success(),
            "{loss:?}: {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_verify_ok(&cli);
    let (third, out) = cli.backup(&[cli.dir(), "--album", "A"]);
    assert!(out.status.success());
    assert!(
        third[..3].iter().all(|l| l["unchanged"] == true),
        "{loss:?}: trusted again once whole"
    );
}

#[test]
fn a_lost_segment_file_is_healed_by_the_ordinary_rerun_and_retired_by_repair() {
    heal_on_the_ordinary_rerun(Loss::SegmentFile, &["verify", "--repair"]);
}

#[test]
fn a_lost_segment_file_is_healed_by_the_ordinary_rerun_and_retired_by_gc() {
    heal_on_the_ordinary_rerun(Loss::SegmentFile, &["gc"]);
}

#[test]
fn damaged_blobs_found_by_scrub_are_healed_by_the_ordinary_rerun() {
    heal_on_the_ordinary_rerun(Loss::FlippedBit, &["gc"]);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A store where one photo is `photo.jpg` in `Camera`, and `IMG_9.JPG` and
/// `photo copy.jpg` in `Trip` (three files under the desktop rule), next to
/// an unrelated `alone.jpg`. Returns the copies' ids, oldest first.
fn with_copies() -> (Cli, Vec<u64>) {
    let cli = Cli::new();
    let same = photo(11, 20_000);
    cli.file("cam/photo.jpg", &same);
    cli.file("cam/alone.jpg", &photo(12, 20_000));
    cli.file("trip/IMG_9.JPG", &same);
    cli.file("trip/photo copy.jpg", &same);
    let mut ids = Vec::new();
    for (dir, album) in [("cam", "Camera"), ("trip", "Trip")] {
        let (lines, out) = cli.backup(&[cli.data.path().join(dir).to_str().unwrap(), "--album", album]);
        assert!(out.status.success());
        ids.extend(
            lines
                .iter()
                .filter(|l| l["name"] != "alone.jpg")
                .filter_map(|l| l["file_id"].as_u64()),
        );
    }
    (cli, ids)
}

/// The lines of a `--json` run that must succeed.
fn json_lines(cli: &Cli, args: &[&str]) -> Vec<Value> {
    let out = cli.run(&[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Everything `dedupe` may change, as the commands show it.
fn listing(cli: &Cli) -> (Value, Value, Value) {
    (cli.json(&["stats"]), cli.json(&["ls"]), cli.json(&["trash"]))
}

#[test]
fn duplicates_json_is_one_array_of_groups_with_album_names() {
    let (cli, copies) = with_copies();
    let groups = cli.json(&["duplicates"]);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["size"], 20_000);
    assert_eq!(groups[0]["hash"].as_str().unwrap().len(), 64);
    let files: Vec<(u64, &str, &Value)> = groups[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file_id"].as_u64().unwrap(),
                f["name"].as_str().unwrap(),
                &f["albums"],
            )
        })
        .collect();
    let (camera, trip) = (serde_json::json!(["Camera"]), serde_json::json!(["Trip"]));
    assert_eq!(
        files,
        vec![
            (copies[0], "photo.jpg", &camera),
            (copies[1], "IMG_9.JPG", &trip),
            (copies[2], "photo copy.jpg", &trip),
        ]
    );
    // Another user has none: an empty array, still valid JSON.
    assert_eq!(cli.json(&["duplicates", "--user", "bob"]), serde_json::json!([]));
}

#[test]
fn dedupe_dry_run_changes_nothing_and_reports_what_dedupe_then_does() {
    let (cli, copies) = with_copies();
    let before = listing(&cli);
    let planned = json_lines(&cli, &["dedupe", "--dry-run", "--keep-name", "*copy*"]);
    assert_eq!(listing(&cli), before);
    assert_eq!(planned[0]["dry_run"], true);

    let done = json_lines(&cli, &["dedupe", "--keep-name", "*copy*"]);
    assert_eq!(done.len(), 2, "one group line and the summary");
    for key in ["kept", "trashed", "albums_added", "logical_bytes", "fallback_to_oldest"] {
        assert_eq!(planned[0][key], done[0][key], "{key}");
    }
    assert_eq!(done[0]["kept"]["file_id"], copies[2]);
    assert_eq!(done[0]["albums_added"], serde_json::json!(["Camera"]));
    assert_eq!(done[0]["logical_bytes"], 40_000);
    assert_eq!(
        (done[1]["groups"].as_u64(), done[1]["files_trashed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_ne!(listing(&cli), before);
    assert_eq!(cli.json(&["duplicates"]), serde_json::json!([]));

    // Nothing is left to merge: a second run succeeds and does nothing.
    let again = json_lines(&cli, &["dedupe"]);
    assert_eq!((again.len(), again[0]["groups"].as_u64()), (1, Some(0)));
    assert!(cli.run(&["verify", "--scrub"]).status.success());
}

#[test]
fn dedupe_keep_name_without_a_match_keeps_the_oldest_and_says_so() {
    let (cli, copies) = with_copies();
    let out = cli.run(&["dedupe", "--keep-name", "*.png"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let kept = format!("kept {} \"photo.jpg\" (the oldest: no name matched)", copies[0]);
    assert!(text.contains(&kept), "{text}");
    assert!(text.contains("added to [Trip]"), "{text}");
    let trip = cli.json(&["ls", "--album", "Trip"]);
    assert_eq!(trip[0]["file_id"], copies[0]);
}

#[test]
fn dedupe_keep_newest_keeps_the_last_upload() {
    let (cli, copies) = with_copies();
    let done = json_lines(&cli, &["dedupe", "--keep-newest"]);
    assert_eq!(done[0]["kept"]["file_id"], copies[2]);
    assert_eq!(done[0]["fallback_to_oldest"], false);
}

#[test]
fn dedupe_refuses_two_keep_rules_and_changes_nothing() {
    let (cli, _) = with_copies();
    let before = listing(&cli);
    let out = cli.run(&["dedupe", "--keep-newest", "--keep-oldest"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(listing(&cli), before);
}

/// Writes `bytes` over `rel` in place (same inode), dated an hour back: old
/// enough that a backup records it rather than treating it as racy.
fn settled_file(cli: &Cli, rel: &str, bytes: &[u8]) -> PathBuf {
    cli.file(rel, bytes)
}

fn set_mtime(path: &PathBuf, t: std::time::SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Replaces a file's bytes by others of the same size in place, keeping its
/// inode and modification time: only reading it, or its change time, can
/// tell.
fn tamper_keeping_stamp(path: &PathBuf, bytes: &[u8]) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    fs::write(path, bytes).unwrap();
    set_mtime(path, mtime);
}

fn get_bytes(cli: &Cli, file_id: &str) -> Vec<u8> {
    let out = cli.run(&["get", file_id]);
    assert!(out.status.success());
    out.stdout
}

fn assert_verify_ok(cli: &Cli) {
    assert_eq!(cli.json(&["verify"])["ok"], true);
}

#[test]
fn rerun_of_an_unchanged_folder_trusts_every_file_unread() {
    let cli = Cli::new();
    settled_file(&cli, "a.jpg", &photo(1, 100_000));
    settled_file(&cli, "sub/b.jpg", &photo(2, 50_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    let stats = cli.json(&["stats"]);

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    for l in &again[..again.len() - 1] {
        assert_eq!(
            (&l["unchanged"], &l["outcome"]),
            (&Value::Bool(true), &Value::from("skipped")),
            "{l}"
        );
    }
    assert_eq!(outcomes(&again).len(), 2);
    assert_eq!(id_of(&again, "a.jpg"), id_of(&first, "a.jpg"));
    let s = summary(&again);
    assert_eq!((s["skipped"].as_u64(), s["bytes_written"].as_u64()), (Some(2), Some(0)));
    assert_eq!(cli.json(&["stats"]), stats);
    assert_eq!(get_bytes(&cli, &id_of(&first, "a.jpg")), photo(1, 100_000));
    assert_verify_ok(&cli);
}

#[test]
fn edited_file_with_same_name_and_size_is_rehashed_and_stored_as_new_content() {
    let cli = Cli::new();
    let a = settled_file(&cli, "a.jpg", &photo(1, 100_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    // A fresh write gives a new mtime; the desktop rule (same name, new
    // content) must store the edit, not skip it by name.
    fs::write(&a, photo(3, 100_000)).unwrap();

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    let line = &again[0];
    assert_eq!(line["outcome"], "stored");
    assert!(line.get("unchanged").is_none());
    assert_ne!(id_of(&again, "a.jpg"), id_of(&first, "a.jpg"));
    assert_eq!(get_bytes(&cli, &id_of(&again, "a.jpg")), photo(3, 100_000));
    assert_eq!(get_bytes(&cli, &id_of(&first, "a.jpg")), photo(1, 100_000));
    assert_verify_ok(&cli);
}

#[test]
fn rehash_reads_every_file_and_finds_content_swapped_under_an_unchanged_stamp() {
    let cli = Cli::new();
    let a = settled_file(&cli, "a.jpg", &photo(1, 100_000));
    settled_file(&cli, "b.jpg", &photo(2, 50_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    tamper_keeping_stamp(&a, &photo(9, 100_000));

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera", "--rehash"]);
    assert!(out.status.success());
    assert!(again.iter().all(|l| l.get("unchanged").is_none()), "{again:?}");
    assert_eq!(
        outcomes(&again),
        [("a.jpg".into(), "stored".into()), ("b.jpg".into(), "skipped".into())]
    );
    assert_eq!(id_of(&again, "b.jpg"), id_of(&first, "b.jpg"));
    assert_eq!(get_bytes(&cli, &id_of(&again, "a.jpg")), photo(9, 100_000));
    assert_verify_ok(&cli);
}

#[test]
fn a_folder_backed_up_into_a_second_album_is_linked_from_the_first_albums_records_and_a_changed_file_is_read() {
    let cli = Cli::new();
    let a = settled_file(&cli, "a.jpg", &photo(1, 100_000));
    settled_file(&cli, "b.jpg", &photo(2, 50_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    // Same size, inode and mtime: only its change time tells, and the
    // first album's record then vouches for nothing.
    tamper_keeping_stamp(&a, &photo(9, 100_000));

    let (second, out) = cli.backup(&[cli.dir(), "--album", "Trip"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        outcomes(&second),
        [("a.jpg".into(), "stored".into()), ("b.jpg".into(), "linked".into())]
    );
    assert_eq!(id_of(&second, "b.jpg"), id_of(&first, "b.jpg"));
    assert_eq!(get_bytes(&cli, &id_of(&second, "a.jpg")), photo(9, 100_000));
    assert!(second[..2].iter().all(|l| l.get("unchanged").is_none()), "{second:?}");
    // Trip has records of its own now: its re-run trusts both files.
    let (third, _) = cli.backup(&[cli.dir(), "--album", "Trip"]);
    assert!(third[..2].iter().all(|l| l["unchanged"] == true), "{third:?}");
    assert_verify_ok(&cli);
}

#[test]
fn file_deleted_from_the_folder_stays_in_the_store() {
    let cli = Cli::new();
    settled_file(&cli, "a.jpg", &photo(1, 100_000));
    let b = settled_file(&cli, "sub/b.jpg", &photo(2, 50_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    fs::remove_file(&b).unwrap();

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(summary(&again)["files"], 1);
    let listed = cli.json(&["ls", "--album", "Camera"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(get_bytes(&cli, &id_of(&first, "b.jpg")), photo(2, 50_000));
    assert_verify_ok(&cli);
}

/// Every file under the store directory with its length and modification
/// time: what a command that writes nothing leaves as it found it.
fn store_state(cli: &Cli) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut state = Vec::new();
    let mut dirs = vec![cli.store.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                state.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    state.sort();
    state
}

#[test]
fn rerun_of_an_unchanged_folder_writes_nothing_to_the_store() {
    let cli = Cli::new();
    settled_file(&cli, "a.jpg", &photo(1, 100_000));
    settled_file(&cli, "sub/b.jpg", &photo(2, 50_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    // A write open leaves the store as it found it only in what it means:
    // RocksDB rewrites its options file and manifest at every open.
    let before = store_state(&cli);

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(
        store_state(&cli),
        before,
        "a re-run with nothing to do opened the store to write"
    );
    assert_eq!(
        outcomes(&again),
        outcomes(&first)
            .into_iter()
            .map(|(n, _)| (n, "skipped".into()))
            .collect::<Vec<_>>()
    );
    assert!(again[..2].iter().all(|l| l["unchanged"] == true), "{again:?}");
    assert_eq!(summary(&again)["skipped"], 2);
}

#[test]
fn a_file_gone_from_an_otherwise_unchanged_folder_has_its_record_dropped() {
    let cli = Cli::new();
    settled_file(&cli, "a.jpg", &photo(1, 100_000));
    let b = settled_file(&cli, "sub/b.jpg", &photo(2, 50_000));
    cli.backup(&[cli.dir(), "--album", "Camera"]);
    fs::remove_file(&b).unwrap();
    let before = store_state(&cli);

    // Every file left is unchanged, but the record of the one gone must go:
    // this re-run writes.
    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(summary(&again)["files"], 1);
    assert_ne!(store_state(&cli), before, "the gone file's record was kept");

    // And with the record gone, the next re-run has nothing to do.
    let after = store_state(&cli);
    let (third, _) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert_eq!(store_state(&cli), after);
    assert_eq!(third[0]["unchanged"], true);
}

#[test]
fn a_new_file_in_an_unchanged_folder_is_stored() {
    let cli = Cli::new();
    settled_file(&cli, "a.jpg", &photo(1, 100_000));
    cli.backup(&[cli.dir(), "--album", "Camera"]);
    settled_file(&cli, "b.jpg", &photo(2, 50_000));

    let (again, out) = cli.backup(&[cli.dir(), "--album", "Camera"]);
    assert!(out.status.success());
    assert_eq!(
        outcomes(&again),
        [("a.jpg".into(), "skipped".into()), ("b.jpg".into(), "stored".into())]
    );
    assert_verify_ok(&cli);
}

#[test]
fn the_photos_date_is_recorded_listed_and_restored() {
    let cli = Cli::new();
    let p = cli.file("IMG_1.JPG", &photo(3, 20_000));
    let taken = std::time::UNIX_EPOCH + std::time::Duration::new(1_556_714_096, 789_000_001);
    set_mtime(&p, taken);
    let (lines, _) = cli.backup(&[cli.dir(), "--album", "A"]);
    let id = id_of(&lines, "IMG_1.JPG");
    let listed = cli.json(&["ls"]);
    assert_eq!(listed[0]["modified"], "2019-05-01T12:34:56.789000001Z", "{listed}");
    let human = cli.run(&["ls"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("2019-05-01 12:34:56"));
    let restored = cli.data.path().join("restored.jpg");
    let out = cli.run(&["get", &id, "-o", restored.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(fs::metadata(&restored).unwrap().modified().unwrap(), taken);
    assert_eq!(fs::read(&restored).unwrap(), photo(3, 20_000));
}

#[test]
fn backing_up_a_deleted_photo_again_restores_it_and_the_summary_says_so() {
    let cli = Cli::new();
    cli.file("a.jpg", &photo(4, 9_000));
    let (first, _) = cli.backup(&[cli.dir(), "--album", "A", "--rehash"]);
    let id = id_of(&first, "a.jpg");
    assert!(cli.run(&["delete", &id]).status.success());
    let (again, out) = cli.backup(&[cli.dir(), "--album", "A"]);
    assert!(out.status.success());
    assert_eq!(outcomes(&again), [("a.jpg".into(), "restored".into())]);
    assert_eq!(id_of(&again, "a.jpg"), id);
    assert_eq!(summary(&again)["restored"], 1);
    assert_eq!(cli.json(&["ls", "--album", "A"]).as_array().unwrap().len(), 1);
    assert_eq!(
        cli.run(&["trash", "restore", &id]).status.code(),
        Some(3),
        "nothing left to restore"
    );
}

/// The store's own path may be a link (to a bigger disk): a backup of the
/// folder that holds its target still never ingests it.
#[test]
fn a_store_reached_through_a_link_is_still_never_backed_up() {
    let cli = Cli::new();
    cli.file("a.jpg", &photo(1, 1_000));
    let real = cli.data.path().join("disk").join("store");
    fs::create_dir_all(&real).unwrap();
    let link = cli.store.path().join("linked-store");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let backup = || {
        let (lines, out) = backup_at(&link, &["--album", "A", cli.dir()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        lines
    };
    backup();
    let again = backup();
    assert_eq!(outcomes_of_files(&again), ["a.jpg"], "{again:?}");
    assert_eq!(
        ignored(&again),
        [("store".into(), "the store's own directory (never backed up)".into())]
    );
}

#[test]
fn delete_of_many_ids_edits_every_one_it_can_and_names_the_others() {
    let cli = Cli::new();
    for i in 0..3u8 {
        cli.file(&format!("{i}.jpg"), &photo(i, 2_000));
    }
    cli.backup(&[cli.dir(), "--album", "A"]);
    let out = cli.run(&["delete", "1", "999", "3", "--json"]);
    assert_eq!(out.status.code(), Some(3), "the unknown id sets the status");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["files"], serde_json::json!([1, 3]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("file 999"));
    let trash = cli.json(&["trash"]);
    assert_eq!(trash.as_array().unwrap().len(), 2);
}

#[test]
fn ids_on_stdin_join_those_on_the_command_line_and_a_word_that_is_no_id_edits_nothing() {
    use std::io::Write;
    let cli = Cli::new();
    for i in 0..4u8 {
        cli.file(&format!("{i}.jpg"), &photo(i, 2_000));
    }
    cli.backup(&[cli.dir(), "--album", "A"]);
    let with_stdin = |args: &[&str], input: &str| {
        let mut child = cli.spawn(args);
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = with_stdin(&["delete", "--stdin", "--json"], "1\n2 x\n");
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"x\" on stdin is not a file id"));
    assert!(
        cli.json(&["trash"]).as_array().unwrap().is_empty(),
        "nothing was deleted"
    );

    let out = with_stdin(&["delete", "4", "--stdin", "--json"], "1\n 3\t\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["files"], serde_json::json!([4, 1, 3]));
    assert_eq!(cli.json(&["trash"]).as_array().unwrap().len(), 3);
    assert_eq!(cli.run(&["delete"]).status.code(), Some(2), "no id at all is bad usage");
}

#[test]
fn a_reader_that_stops_reading_ends_the_listing_quietly() {
    let cli = Cli::new();
    for i in 0..3u8 {
        cli.file(&format!("{i}.jpg"), &photo(i, 2_000));
    }
    cli.backup(&[cli.dir(), "--album", "A"]);
    for args in [&["ls"][..], &["ls", "--json"], &["trash"]] {
        let mut child = cli.spawn(args);
        // The read end closes before the store is even open: every write
        // meets a closed pipe (`keepsake ls | head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
