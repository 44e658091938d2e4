//! The `keepsake` command-line interface.

mod args;
mod backup;
mod duplicates;
mod migrate;
mod output;
mod serve;
mod walk;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keepsake::{
    AlbumDeletion, AlbumInfo, Cursor, DedupMode, FileEdit, FileId, FileInfo, LibraryError, NameError, OpenError, Page,
    Problem, ReadError, ReadOnlyStore, SessionError, StorageError, Store, UploadError, Usage, User, MAX_PAGE,
};
use serde::Serialize;

use args::{AlbumAction, Cli, Command, FileIds, Mode, QuotaAction, TrashAction, UploadsAction};
use keepsake::http::FileJson;
use output::{bytes, Output};

/// Why a command failed, with the exit status it maps to.
enum Failure {
    Open(OpenError),
    /// An operation failed: its message, and the status its kind maps to.
    Store {
        message: String,
        status: u8,
    },
    Usage(String),
    /// The store does not exist.
    Missing(String),
    /// The command ran and reported its findings; only the status is left.
    Status(u8),
}

/// The exit status of each kind of failure (README, "Exit statuses"): 2 bad
/// input, 3 no such thing, 4 quota, 6 integrity, 1 anything else.
trait ExitStatus: std::fmt::Display {
    fn exit_status(&self) -> u8;
}

impl ExitStatus for NameError {
    fn exit_status(&self) -> u8 {
        2
    }
}

impl ExitStatus for UploadError {
    fn exit_status(&self) -> u8 {
        match self {
            UploadError::InvalidName(_) | UploadError::HashMismatch(_) => 2,
            UploadError::UnknownAlbum(_) => 3,
            UploadError::QuotaExceeded(_) => 4,
            _ => 1,
        }
    }
}

impl ExitStatus for SessionError {
    fn exit_status(&self) -> u8 {
        match self {
            SessionError::Upload(e) => e.exit_status(),
            SessionError::UnknownUpload(_) => 3,
            _ => 1,
        }
    }
}

impl ExitStatus for LibraryError {
    fn exit_status(&self) -> u8 {
        match self {
            LibraryError::InvalidName(_) | LibraryError::AlbumExists(_) => 2,
            LibraryError::UnknownFile(_)
            | LibraryError::UnknownAlbum(_)
            | LibraryError::NotTrashed(_)
            | LibraryError::NotInAlbum { .. }
            | LibraryError::FileTrashed(_)
            | LibraryError::NoSuchContent(_)
            | LibraryError::NotADuplicate { .. } => 3,
            _ => 1,
        }
    }
}

impl ExitStatus for ReadError {
    fn exit_status(&self) -> u8 {
        match self {
            ReadError::UnknownFile(_) => 3,
            ReadError::Integrity { .. } => 6,
            _ => 1,
        }
    }
}

impl ExitStatus for StorageError {
    fn exit_status(&self) -> u8 {
        1
    }
}

macro_rules! failure_from {
    ($($family:ty),*) => {$(
        impl From<$family> for Failure {
            fn from(e: $family) -> Self {
                Failure::Store {
                    message: e.to_string(),
                    status: e.exit_status(),
                }
            }
        }
    )*};
}
failure_from!(
    NameError,
    UploadError,
    SessionError,
    LibraryError,
    ReadError,
    StorageError
);

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Store {
            message: format!("writing output: {e}"),
            status: 1,
        }
    }
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.global.json);
    let ran = run(cli, &out);
    let flushed = out.flush().map_err(Failure::from);
    match ran.and(flushed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (msg, code) = match f {
                Failure::Open(e) => {
                    let code = match &e {
                        OpenError::InUse { .. } => 5,
                        // Another blob store than the store's, a bad URL
                        // or option: bad input.
                        OpenError::Blobs(_) => 2,
                        OpenError::Io { source, .. } if source.kind() == io::ErrorKind::InvalidInput => 2,
                        _ => 1,
                    };
                    (Some(e.to_string()), code)
                }
                Failure::Store { message, status } => (Some(message), status),
                Failure::Usage(m) => (Some(m), 2),
                Failure::Missing(m) => (Some(m), 3),
                Failure::Status(code) => (None, code),
            };
            if let Some(msg) = msg {
                let _ = writeln!(io::stderr(), "keepsake: error: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn store_dir(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    given
        .or_else(|| dirs::data_dir().map(|d| d.join("keepsake")))
        .ok_or_else(|| Failure::Usage("no store directory: pass --store or set KEEPSAKE_STORE".into()))
}

fn album_by_name(user: &User, name: &str) -> Result<AlbumInfo, Failure> {
    user.find_album(name)?
        .ok_or_else(|| LibraryError::UnknownAlbum(name.to_string()).into())
}

/// Prints a listing page by page, so that a library of any size is listed
/// in the memory of one page: with `--json` one array, written element by
/// element as the pages come.
fn show_pages(
    out: &Output,
    albums: &[AlbumInfo],
    mut page: impl FnMut(Option<&Cursor>) -> Result<Page<FileInfo>, LibraryError>,
) -> Result<(), Failure> {
    let (mut after, mut first) = (None, true);
    if out.json {
        out.raw(b"[")?;
    }
    loop {
        let Page { items, next, .. } = page(after.as_ref())?;
        for file in &items {
            let f = FileJson::new(file, albums);
            if out.json {
                out.raw(if first { b"\n" } else { b",\n" })?;
                out.raw(&serde_json::to_vec(&f).map_err(io::Error::from)?)?;
            } else {
                // The date and time to the second, as a listing shows it.
                let modified = f.modified.as_deref().map_or("", |m| m.get(..19).unwrap_or(m));
                let line = format!(
                    "{:>8}  {:>10}  {:<19}  {}  [{}]\n",
                    f.file_id,
                    bytes(f.size),
                    modified.replace('T', " "),
                    file.name,
                    f.albums.join(", ")
                );
                out.raw(line.as_bytes())?;
            }
            first = false;
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if out.json {
        out.raw(b"\n]\n")?;
    }
    Ok(())
}

fn show_usage(u: &Usage, out: &Output) -> Result<(), Failure> {
    out.show(u, || {
        let limit = u.limit.map_or("none".to_string(), bytes);
        format!(
            "user {}: {} charged (limit {limit}), {} logical, {} files, {} in trash ({} freeable), {} blobs",
            u.user,
            bytes(u.unique_bytes),
            bytes(u.logical_bytes),
            u.files,
            u.trashed_files,
            bytes(u.trash_bytes),
            u.blobs
        )
    })?;
    Ok(())
}

/// How many edits go into one durable commit: one synced write each, and
/// a bounded batch in memory.
const EDIT_BATCH: usize = 4096;

/// Applies the edit `edit` makes of each id, in durable batches of
/// [`EDIT_BATCH`]. Every edit that can apply does (each succeeds or fails on
/// its own, as `User::edit_files` says); each failure is one line on
/// stderr, and the first decides the exit status.
fn each_file(
    out: &Output,
    user: &User,
    verb: &str,
    files: &FileIds,
    edit: impl Fn(FileId) -> FileEdit,
) -> Result<(), Failure> {
    let mut ids = files.ids.clone();
    if files.stdin {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(|e| Failure::Store {
            message: format!("reading file ids from stdin: {e}"),
            status: 1,
        })?;
        for word in text.split_whitespace() {
            let id = word
                .parse()
                .map_err(|_| Failure::Usage(format!("{word:?} on stdin is not a file id")))?;
            ids.push(id);
        }
    }
    let mut done = Vec::new();
    let mut first_failure = None;
    for chunk in ids.chunks(EDIT_BATCH) {
        let results = user.edit_files(chunk.iter().map(|&id| edit(FileId(id))).collect())?;
        for (&id, r) in chunk.iter().zip(results) {
            match r {
                Ok(()) => done.push(id),
                Err(e) => {
                    let _ = writeln!(io::stderr(), "keepsake: file {id}: {e}");
                    first_failure.get_or_insert(e);
                }
            }
        }
    }
    #[derive(Serialize)]
    struct Done<'a> {
        action: &'a str,
        files: &'a [u64],
    }
    out.show(
        &Done {
            action: verb,
            files: &done,
        },
        || format!("{verb} {} file(s)", done.len()),
    )?;
    match first_failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn run(cli: Cli, out: &Output) -> Result<(), Failure> {
    let dir = store_dir(cli.global.store)?;
    // Tokens live beside the metadata, not in it: they are changed while
    // a server holds the store.
    if let Command::Token { action } = cli.command {
        // A token beside no store is one no server would see: `create`
        // makes the store, as `backup` does; the others need one.
        if !Store::exists(&dir) {
            if !matches!(action, args::TokenAction::Create { .. }) {
                return Err(Failure::Missing(format!("no keepsake store at {}", dir.display())));
            }
            drop(Store::open(&dir).map_err(Failure::Open)?);
        }
        return serve::token(&dir, action, out);
    }
    if let Command::Init { blobs } = &cli.command {
        return init(&dir, blobs.as_deref(), out);
    }
    // Only commands that put something in a store may create one: a typo in
    // --store must not answer "no files" from a fresh, empty store.
    let creates = matches!(
        cli.command,
        Command::Backup { .. } | Command::Album { .. } | Command::Quota { .. } | Command::Serve { .. }
    );
    if !creates && !Store::exists(&dir) {
        return Err(Failure::Missing(format!(
            "no keepsake store at {} (back something up first, or check --store)",
            dir.display()
        )));
    }
    let user_name = cli.global.user.as_str();
    // A backup walks first: a re-run that finds nothing to do answers from
    // a read-only open, without the cost of opening the store to write.
    let mut scan = None;
    if let Command::Backup {
        paths, album, rehash, ..
    } = &cli.command
    {
        let walked = backup::scan(paths, &dir);
        // A mistake (a path that does not exist, `/dev/null`) creates no
        // album and no store.
        if walked.nothing_readable() {
            let summary = backup::run_nothing(walked, out)?;
            return summary.failure_status().map_or(Ok(()), |s| Err(Failure::Status(s)));
        }
        if !rehash && backup::run_unchanged(&dir, user_name, album, &walked, out)? {
            return Ok(());
        }
        scan = Some(walked);
    }
    // `usage` reads only the user's own records: a read-only open answers
    // it without the cost of opening the store to write (and without its
    // recovery, which never changes committed records, so there are no
    // recovery notes to print). Anything it cannot answer (a store in use,
    // an older format, a name that is not a valid user name) goes the usual
    // way below, which says what is wrong.
    if matches!(cli.command, Command::Usage) {
        if let Ok(Some(store)) = ReadOnlyStore::open(&dir) {
            if let Ok(u) = store
                .user(user_name)
                .map_err(LibraryError::from)
                .and_then(|u| u.usage())
            {
                return show_usage(&u, out);
            }
        }
    }
    let store = Store::open(&dir).map_err(Failure::Open)?;
    for note in store.recovery_notes() {
        let _ = writeln!(io::stderr(), "keepsake: recovery: {note}");
    }
    if let Command::Serve {
        listen,
        header_timeout,
        idle_timeout,
        metrics_listen,
        migrate_blobs,
    } = cli.command
    {
        let limits = serve::Limits {
            header: Duration::from_secs(header_timeout.max(1)),
            idle_body: Duration::from_secs(idle_timeout.max(1)),
        };
        if let Some(blobs) = migrate_blobs {
            serve::migrate_while_serving(&store, &blobs)?;
        }
        return serve::serve(store, &dir, serve::Addresses { listen, metrics_listen }, limits, out);
    }
    let Some(command) = store_command(&store, cli.command, out)? else {
        return Ok(());
    };
    // Only a command run for a user needs (and checks) the user's name.
    let user = store.user(user_name)?;
    match command {
        Command::Backup {
            paths: _,
            album,
            mode,
            rehash,
        } => {
            let mode = match mode {
                Mode::Hash => DedupMode::Hash,
                Mode::NameHash => DedupMode::NameAndHash,
            };
            let album = user.ensure_album(&album)?;
            let scan = scan.expect("walked above");
            let summary = backup::run(&user, album, scan, mode, rehash, out)?;
            if let Some(status) = summary.failure_status() {
                return Err(Failure::Status(status));
            }
        }
        Command::Albums => {
            #[derive(Serialize)]
            struct Row {
                name: String,
                files: u64,
                bytes: u64,
            }
            let rows: Vec<Row> = user
                .albums()?
                .into_iter()
                .map(|a| Row {
                    name: a.name,
                    files: a.files,
                    bytes: a.bytes,
                })
                .collect();
            out.show(&rows, || {
                rows.iter()
                    .map(|r| format!("{:<30} {:>8} files  {:>10}\n", r.name, r.files, bytes(r.bytes)))
                    .collect()
            })?;
        }
        Command::Album { action } => album_command(&user, action, out)?,
        Command::Ls { album } => {
            let albums = user.albums()?;
            match album {
                Some(name) => {
                    let album = album_by_name(&user, &name)?.id;
                    show_pages(out, &albums, |after| user.album_files_page(album, after, MAX_PAGE))?
                }
                None => show_pages(out, &albums, |after| user.files_page(after, MAX_PAGE))?,
            }
        }
        Command::Add { files, album } => {
            let album = album_by_name(&user, &album)?.id;
            each_file(out, &user, "added", &files, |file| FileEdit::AddToAlbum { file, album })?;
        }
        Command::Remove { files, album } => {
            let album = album_by_name(&user, &album)?.id;
            each_file(out, &user, "removed", &files, |file| FileEdit::RemoveFromAlbum {
                file,
                album,
            })?;
        }
        Command::Move { files, from, to } => {
            let from = album_by_name(&user, &from)?.id;
            let to = album_by_name(&user, &to)?.id;
            each_file(out, &user, "moved", &files, |file| FileEdit::Move { file, from, to })?;
        }
        Command::Delete { files } => each_file(out, &user, "deleted", &files, FileEdit::Delete)?,
        Command::Trash { action: None } => {
            let albums = user.albums()?;
            show_pages(out, &albums, |after| user.trash_page(after, MAX_PAGE))?;
        }
        Command::Trash {
            action: Some(TrashAction::Restore { files }),
        } => each_file(out, &user, "restored", &files, FileEdit::Restore)?,
        Command::Trash {
            action: Some(TrashAction::Empty),
        } => {
            let r = user.empty_trash()?;
            out.show(&r, || {
                format!(
                    "deleted {} file(s) for good, {} freed from the quota",
                    r.files,
                    bytes(r.bytes_freed)
                )
            })?;
        }
        Command::Get { file, output } => get(&user, FileId(file), output.as_deref())?,
        Command::Usage => show_usage(&user.usage()?, out)?,
        Command::Quota { action } => {
            let limit = match action {
                QuotaAction::Set { bytes } => Some(bytes),
                QuotaAction::Clear => None,
            };
            user.set_quota(limit)?;
            #[derive(Serialize)]
            struct Quota<'a> {
                user: &'a str,
                limit: Option<u64>,
            }
            out.show(&Quota { user: user_name, limit }, || match limit {
                Some(l) => format!("quota of {user_name} set to {}", bytes(l)),
                None => format!("quota of {user_name} cleared"),
            })?;
        }
        Command::Uploads { action: None } => {
            let sessions = user.uploads()?;
            out.show(&sessions, || {
                sessions
                    .iter()
                    .map(|u| {
                        let length = u.declared_length.map_or("?".to_string(), bytes);
                        format!("{:>6}  {:>10} of {:<10}  {}\n", u.id, bytes(u.offset), length, u.name)
                    })
                    .collect()
            })?;
        }
        Command::Uploads {
            action: Some(UploadsAction::Abort { id }),
        } => {
            user.abort(id)?;
            #[derive(Serialize)]
            struct Aborted {
                aborted: keepsake::UploadId,
            }
            out.show(&Aborted { aborted: id }, || format!("upload session {id} aborted"))?;
        }
        Command::Duplicates => duplicates::list(&user, out)?,
        Command::Dedupe {
            dry_run,
            keep_oldest: _,
            keep_newest,
            keep_name,
        } => {
            let keep = match (keep_newest, keep_name) {
                (true, _) => duplicates::Keep::Newest,
                (false, Some(glob)) => duplicates::Keep::Name(glob),
                (false, None) => duplicates::Keep::Oldest,
            };
            duplicates::dedupe(&user, &keep, dry_run, out)?;
        }
        Command::Gc { .. } | Command::Verify { .. } | Command::Stats | Command::Migrate { .. } => {
            unreachable!("store-wide commands are run by store_command")
        }
        Command::Serve { .. } | Command::Token { .. } | Command::Init { .. } => {
            unreachable!("run before a user is named")
        }
    }
    Ok(())
}

/// `init`: creates the store at `dir` (with its blobs in `blobs`, a
/// bucket's URL), or opens it and says where its blobs are.
fn init(dir: &Path, blobs: Option<&str>, out: &Output) -> Result<(), Failure> {
    let mut options = keepsake::StoreOptions::default();
    if let Some(url) = blobs {
        options = options.bucket(keepsake::BucketOptions::from_env(url));
    }
    let existed = Store::exists(dir);
    let dir_existed = dir.exists();
    let meta_existed = dir.join("meta").exists();
    let lock_existed = dir.join("keepsake.lock").exists();
    let store = match Store::open_with(dir, options) {
        Ok(store) => store,
        Err(e) => {
            // A creation that failed (a bad URL, a bucket not there) leaves
            // no store behind to be taken for one on local disk.
            // Only what this open made is removed.
            if !existed {
                if !meta_existed {
                    let _ = std::fs::remove_dir_all(dir.join("meta"));
                }
                if !lock_existed {
                    let _ = std::fs::remove_file(dir.join("keepsake.lock"));
                }
                if !dir_existed {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            return Err(Failure::Open(e));
        }
    };
    #[derive(Serialize)]
    struct Done<'a> {
        store: &'a Path,
        blobs: &'a str,
        created: bool,
    }
    let done = Done {
        store: dir,
        blobs: store.blob_store(),
        created: !existed,
    };
    out.show(&done, || {
        let verb = if existed { "is" } else { "created" };
        let place = if done.blobs == "local disk" { "on" } else { "in" };
        format!("store {} {verb}: blobs {place} {}", dir.display(), done.blobs)
    })?;
    Ok(())
}

/// Runs `command` if it is store-wide (`gc`, `verify`, `stats`: no user's
/// name is involved); gives any other command back.
fn store_command(store: &Store, command: Command, out: &Output) -> Result<Option<Command>, Failure> {
    match command {
        Command::Gc { grace } => {
            let r = match grace {
                Some(s) => store.gc_with_grace(Duration::from_secs(s))?,
                None => store.gc()?,
            };
            out.show(&r, || {
                format!(
                    "{} expired trash file(s) purged, {} blob(s) removed, {} segment(s) compacted, {} reclaimed, \
                     {} expired upload session(s) removed",
                    r.trash_purged,
                    r.blobs_removed,
                    r.segments_compacted,
                    bytes(r.bytes_reclaimed),
                    r.uploads_expired
                )
            })?;
        }
        Command::Migrate { blobs } => migrate::migrate(store, &blobs, out)?,
        Command::Verify { scrub, repair: true } => repair(store, scrub, out)?,
        Command::Verify { scrub, repair: false } => {
            let r = store.verify(scrub)?;
            out.show(&r, || {
                let mut s = format!(
                    "{}: {} users, {} files, {} blobs, {} segments, {} re-hashed\n",
                    if r.ok { "ok" } else { "PROBLEMS FOUND" },
                    r.users,
                    r.files,
                    r.blobs,
                    r.segments,
                    bytes(r.scrubbed_bytes)
                );
                for p in &r.problems {
                    s += &problem_lines("", p);
                }
                s
            })?;
            if !r.ok {
                return Err(Failure::Status(1));
            }
        }
        Command::Stats => {
            let s = store.stats()?;
            out.show(&s, || {
                let bucket = if s.bucket_bytes > 0 {
                    format!(", in the bucket {}", bytes(s.bucket_bytes))
                } else {
                    String::new()
                };
                format!(
                    "{} users, {} files, {} blobs\nlogical {}, physical {} (dedup ratio {:.2}), on disk {}{bucket}\n{} segments, {} garbage, {} blobs awaiting GC",
                    s.users,
                    s.files,
                    s.blobs,
                    bytes(s.logical_bytes),
                    bytes(s.physical_bytes),
                    s.dedup_ratio,
                    bytes(s.disk_bytes),
                    s.segments,
                    bytes(s.garbage_bytes),
                    s.gc_candidates
                )
            })?;
        }
        other => return Ok(Some(other)),
    }
    Ok(None)
}

fn album_command(user: &User, action: AlbumAction, out: &Output) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct Done {
        album: String,
        action: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        trashed: Vec<FileId>,
    }
    let done = match action {
        AlbumAction::Create { name } => {
            user.create_album(&name)?;
            Done {
                album: name,
                action: "created",
                trashed: vec![],
            }
        }
        AlbumAction::Rename { name, new_name } => {
            let id = album_by_name(user, &name)?.id;
            user.rename_album(id, &new_name)?;
            Done {
                album: new_name,
                action: "renamed",
                trashed: vec![],
            }
        }
        AlbumAction::Delete { name, trash_files } => {
            let id = album_by_name(user, &name)?.id;
            let how = if trash_files {
                AlbumDeletion::TrashFiles
            } else {
                AlbumDeletion::KeepFiles
            };
            let trashed = user.delete_album(id, how)?;
            Done {
                album: name,
                action: "deleted",
                trashed,
            }
        }
    };
    out.show(&done, || {
        let mut s = format!("album {:?} {}", done.album, done.action);
        if !done.trashed.is_empty() {
            s += &format!("; {} file(s) moved to the trash", done.trashed.len());
        }
        s
    })?;
    Ok(())
}

/// Writes a file's verified bytes. To a path, through a temporary file
/// renamed into place, so a failed `get` never leaves a partial file under
/// the requested name.
/// A problem as text: its kind and detail, then each file it affects.
fn problem_lines(prefix: &str, p: &Problem) -> String {
    let mut s = format!("{prefix}{}: {}\n", p.kind, p.detail);
    for f in &p.files {
        s += &format!("  affects file {} \"{}\" of user {}\n", f.file_id, f.name, f.user);
    }
    s
}

/// `verify --repair`: the status is 1 when anything could not be repaired.
fn repair(store: &Store, scrub: bool, out: &Output) -> Result<(), Failure> {
    let r = store.repair(scrub)?;
    out.show(&r, || {
        let mut s = format!(
            "{}: {} repaired, {} orphan record(s), {} not repaired\n",
            if r.ok { "ok" } else { "NOT ALL REPAIRED" },
            r.repaired.len(),
            r.orphans.len(),
            r.unrepaired.len()
        );
        for (prefix, problems) in [
            ("repaired ", &r.repaired),
            ("garbage ", &r.orphans),
            ("NOT REPAIRED ", &r.unrepaired),
        ] {
            for p in problems {
                s += &problem_lines(prefix, p);
            }
        }
        s
    })?;
    if r.ok {
        Ok(())
    } else {
        Err(Failure::Status(1))
    }
}

/// Writes `content` to `path` whole or not at all: into a new file of an
/// unpredictable name beside it, created exclusively (`O_EXCL`: it never
/// opens, follows or truncates anything already there, a symlink planted
/// under a guessed name included), synced, then renamed over `path` (which
/// replaces a symlink at `path` rather than writing through it), and the
/// directory synced. The file is dated `modified` first, if given: the
/// photo's own time, not the restore's.
fn write_new_file(path: &Path, content: &mut impl io::Read, modified: Option<std::time::SystemTime>) -> io::Result<()> {
    use std::hash::{BuildHasher, Hasher};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy());
    // Two draws of the standard library's per-process random hash keys:
    // 128 bits no other process can predict.
    let draw = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    let tmp = dir.join(format!(".{name}.{:016x}{:016x}.keepsake-partial", draw(), draw()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let written = io::copy(content, &mut file)
        .and_then(|_| modified.map_or(Ok(()), |t| file.set_modified(t)))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn get(user: &User, file: FileId, output: Option<&Path>) -> Result<(), Failure> {
    let mut reader = user.open_file(file)?;
    match output {
        None => {
            io::copy(&mut reader, &mut io::stdout().lock())?;
        }
        Some(path) => {
            // The photo keeps its date: photo apps sort by it.
            let modified = user.file(file)?.modified;
            if let Err(e) = write_new_file(path, &mut reader, modified) {
                return Err(Failure::Store {
                    message: format!("writing {}: {e}", path.display()),
                    status: 1,
                });
            }
        }
    }
    Ok(())
}
