//! `keepsake backup`: walk paths, upload in durable batches, report each file
//! once it is durable.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{self, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use keepsake::{
    AlbumId, Content, DedupMode, FileName, ReadOnlyStore, SeenPaths, Upload, UploadError, UploadReport, User,
};
use serde::Serialize;

use super::output::{bytes, shown, Output};
use super::walk::{Found, StoreDirs, Walk};
use super::Failure;
use keepsake::http::JsonName;

/// A batch is committed (one segment sync, one metadata sync) once it holds
/// this many files or bytes; each file's line is printed after its batch.
/// Over 100,000 files of 8 KiB, batches of 4,096 files took a first backup
/// from 17.0 s to 14.0 s against batches of 256 (the syncs and per-batch
/// work amortised); the byte bound keeps a batch of photos in memory small.
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 256 << 20;

/// A file modified less than this long before the backup looks at it may
/// still be being written (a camera import, a sync client): it is read only
/// once its stamp has held still this long. (A writer that restores the
/// modification time afterwards, "preserve file date", does so once it has
/// finished writing.)
const SETTLE: Duration = Duration::from_secs(2);

/// How long a backup waits, in all, for files still being written (or that
/// changed while read) to settle, before it reports them as errors.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    summary: bool,
    pub files: u64,
    pub stored: u64,
    pub linked: u64,
    pub skipped: u64,
    /// Files brought back from the trash because their content was backed
    /// up again (read and uploaded, or vouched for by another album's
    /// records).
    pub restored: u64,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
    pub errors: u64,
    /// Of the errors, the uploads the quota refused.
    pub quota_refused: u64,
    /// Entries not backed up: links, FIFOs, sockets, devices, the store.
    pub ignored: u64,
}

impl Summary {
    /// The exit status of a backup with errors: 4 when the quota refused
    /// every file that failed (the user's remedy is the quota), 1 when
    /// anything else failed too (that failure comes first).
    pub(crate) fn failure_status(&self) -> Option<u8> {
        match self.errors {
            0 => None,
            n if n == self.quota_refused => Some(4),
            _ => Some(1),
        }
    }
}

#[derive(Serialize)]
struct FileLine<'a> {
    path: &'a str,
    file_id: u64,
    #[serde(flatten)]
    name: JsonName,
    hash: String,
    size: u64,
    outcome: String,
    bytes_written: u64,
    /// Trusted from its source record, not read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unchanged: bool,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    path: &'a str,
    outcome: &'static str,
    error: String,
}

#[derive(Serialize)]
struct IgnoredLine<'a> {
    path: &'a str,
    outcome: &'static str,
    reason: &'static str,
}

/// What the walk of a backup's paths found.
pub(crate) struct Scan {
    roots: Vec<PathBuf>,
    walk: Walk,
}

/// Walks `paths`, never into the store at `store_dir`.
pub(crate) fn scan(paths: &[PathBuf], store_dir: &Path) -> Scan {
    let store = StoreDirs::of(store_dir);
    let mut walk = Walk::default();
    for p in paths {
        walk.add(p, &store);
    }
    Scan {
        roots: paths.to_vec(),
        walk,
    }
}

impl Scan {
    /// Whether nothing named could be backed up, so that nothing (no album,
    /// no store) is to be created.
    pub(crate) fn nothing_readable(&self) -> bool {
        !self.walk.readable
    }
}

/// Whether `meta` says the file was modified less than [`SETTLE`] before
/// `now` (or after it: a clock ahead is no proof of rest).
fn recent(meta: &Metadata, now: SystemTime) -> bool {
    meta.modified().map_or(true, |m| m + SETTLE > now)
}

/// The printing and counting of a backup's lines.
struct Report<'a> {
    out: &'a Output,
    summary: Summary,
    bar: ProgressBar,
}

impl<'a> Report<'a> {
    fn new(out: &'a Output, bar: ProgressBar) -> Self {
        Report {
            out,
            summary: Summary {
                summary: true,
                ..Default::default()
            },
            bar,
        }
    }

    fn error(&mut self, path: &Path, error: String) {
        self.summary.errors += 1;
        let line = ErrorLine {
            path: &json_path(path),
            outcome: "error",
            error: error.clone(),
        };
        let out = self.out;
        above(&self.bar, || {
            let _ = out.show(&line, String::new);
            if !out.json {
                let _ = out.flush();
                eprintln!("keepsake: {}: {error}", shown(path));
            }
        });
    }

    /// The walk's findings that are not files to read.
    fn walk(&mut self, walk: &Walk) {
        for &(ref path, reason) in &walk.ignored {
            self.summary.ignored += 1;
            let line = IgnoredLine {
                path: &json_path(path),
                outcome: "ignored",
                reason,
            };
            let _ = self.out.show(&line, || {
                format!("{:<7} {:>8}  {}: {reason}", "ignored", "", shown(path))
            });
        }
        for (path, e) in &walk.errors {
            self.error(path, e.clone());
        }
    }

    fn file(&mut self, path: &Path, r: &UploadReport, unchanged: bool) {
        print_file(&mut self.summary, path, r, unchanged, self.out, &self.bar);
    }
}

/// A re-run that finds nothing to do, answered (and printed) from a
/// read-only view of the store in `dir` (see [`ReadOnlyStore`]). `false`
/// means nothing was printed and the backup must open the store to write:
/// a file that is new, changed or gone, a walk error, an album that does
/// not exist yet, a store in use or absent. [`run`] finds those again and
/// reports them.
pub(crate) fn run_unchanged(dir: &Path, user: &str, album: &str, scan: &Scan, out: &Output) -> Result<bool, Failure> {
    let Ok(Some(store)) = ReadOnlyStore::open(dir) else {
        return Ok(false);
    };
    let index = store.user(user)?;
    let Some(album) = index.find_album(album)?.map(|a| a.id) else {
        return Ok(false);
    };
    if !scan.walk.errors.is_empty() {
        return Ok(false);
    }
    let Ok(sources) = absolute_all(scan.walk.found.iter().map(|f| f.path.as_path()))
        .into_iter()
        .collect::<io::Result<Vec<_>>>()
    else {
        return Ok(false);
    };
    let mut reports = Vec::with_capacity(scan.walk.found.len());
    for (found, sources) in scan.walk.found.chunks(LOOKUP_BATCH).zip(sources.chunks(LOOKUP_BATCH)) {
        let files: Vec<_> = sources
            .iter()
            .map(PathBuf::as_path)
            .zip(found.iter().map(|f| &f.meta))
            .collect();
        for (f, r) in found.iter().zip(index.unchanged_sources(album, &files)?) {
            let Some(r) = r else {
                return Ok(false);
            };
            reports.push((&f.path, r));
        }
    }
    let seen: SeenPaths = sources.into_iter().collect();
    for root in &scan.roots {
        let Ok(root) = path::absolute(root) else {
            return Ok(false);
        };
        if index.has_forgotten_sources(album, &root, &seen)? {
            return Ok(false);
        }
    }
    let mut report = Report::new(out, ProgressBar::hidden());
    report.walk(&scan.walk);
    for (path, r) in reports {
        report.file(path, &r, true);
    }
    show_summary(&report.summary, out)?;
    Ok(true)
}

/// A backup in which nothing named could be read: its errors and notices,
/// and a summary; nothing is created.
pub(crate) fn run_nothing(scan: Scan, out: &Output) -> Result<Summary, Failure> {
    let mut report = Report::new(out, ProgressBar::hidden());
    report.walk(&scan.walk);
    show_summary(&report.summary, out)?;
    Ok(report.summary)
}

/// A backup's uploads: the files to read, in batches, and those waiting
/// for their writer to finish.
struct Uploads<'a> {
    user: &'a User,
    album: AlbumId,
    mode: DedupMode,
    report: Report<'a>,
}

impl Uploads<'_> {
    /// Uploads `files` in durable batches. `settled` says that each was
    /// seen [`SETTLE`] ago as it was (so a recent modification time is no
    /// reason to wait again). A file replaced since it was seen is an error;
    /// one written since, or too recently, or changed while read goes to
    /// `waiting`, with what was seen of it now.
    fn store(
        &mut self,
        files: Vec<(Found, PathBuf)>,
        settled: bool,
        waiting: &mut Vec<(Found, PathBuf)>,
    ) -> Result<(), Failure> {
        let mut files = files.into_iter().peekable();
        while files.peek().is_some() {
            let mut batch = Vec::new();
            let mut batch_bytes = 0;
            while let Some(f) = files.next_if(|_| batch.len() < BATCH_FILES && batch_bytes < BATCH_BYTES) {
                batch_bytes += f.0.meta.len();
                batch.push(f);
            }
            self.store_batch(batch, settled, waiting)?;
        }
        Ok(())
    }

    fn store_batch(
        &mut self,
        batch: Vec<(Found, PathBuf)>,
        settled: bool,
        waiting: &mut Vec<(Found, PathBuf)>,
    ) -> Result<(), Failure> {
        // Taken before the files are looked at again: a file modified
        // within 2 s of it is not recorded for the re-scan.
        let now = SystemTime::now();
        let mut uploads = Vec::new();
        let mut slots = Vec::new();
        for (f, source) in batch {
            // A version written since the walk looked, or a file replaced
            // since, is refused by the upload itself (`expect_source`
            // compares the whole stamp, device and inode included), and is
            // then looked at again below: no second look is needed here.
            if !settled && recent(&f.meta, now) {
                waiting.push((f, source));
                continue;
            }
            match f.path.file_name().map(FileName::from) {
                Some(name) => {
                    let content = Content::Path(f.path.clone());
                    let mut up = Upload::new(self.album, name, content, self.mode).expect_source(&f.meta);
                    if let Ok(t) = f.meta.modified() {
                        up = up.modified(t);
                    }
                    uploads.push(up);
                    slots.push((f, source));
                }
                None => self.report.error(&f.path, "has no file name".into()),
            }
        }
        let mut durable = Vec::new();
        for ((f, source), result) in slots.into_iter().zip(self.user.upload_batch(uploads)) {
            match result {
                Ok(r) => {
                    self.report.bar.inc(f.meta.len());
                    self.report.file(&f.path, &r, false);
                    durable.push((source, f.meta, r.file_id));
                }
                // Written while read: read again once it holds still.
                Err(UploadError::ContentChanged(_)) => match fs::symlink_metadata(&f.path) {
                    Ok(meta) if (meta.dev(), meta.ino()) == (f.meta.dev(), f.meta.ino()) => {
                        waiting.push((Found { path: f.path, meta }, source))
                    }
                    Ok(_) => self.report.error(
                        &f.path,
                        "was replaced since the walk found it; nothing was stored".into(),
                    ),
                    Err(e) => self.report.error(&f.path, e.to_string()),
                },
                Err(e) => {
                    self.report.bar.inc(f.meta.len());
                    self.report.summary.quota_refused += u64::from(matches!(e, UploadError::QuotaExceeded(_)));
                    self.report.error(&f.path, e.to_string());
                }
            }
        }
        self.user.record_sources(self.album, &durable, now)?;
        // This batch's lines are durable: a reader may see them now.
        let _ = self.report.out.flush();
        Ok(())
    }
}

pub(crate) fn run(
    user: &User,
    album: AlbumId,
    scan: Scan,
    mode: DedupMode,
    rehash: bool,
    out: &Output,
) -> Result<Summary, Failure> {
    let Scan { roots, walk } = scan;
    let total: u64 = walk.found.iter().map(|f| f.meta.len()).sum();
    let mut report = Report::new(out, out.bytes_bar(total));
    // Only a walk that saw every entry may conclude that a file is gone.
    let complete = walk.errors.is_empty();
    report.walk(&walk);
    let mut listed = Vec::with_capacity(walk.found.len());
    let sources = absolute_all(walk.found.iter().map(|f| f.path.as_path()));
    for (f, source) in walk.found.into_iter().zip(sources) {
        match source {
            Ok(source) => listed.push((f, source)),
            Err(e) => report.error(&f.path, e.to_string()),
        }
    }
    let seen: SeenPaths = listed.iter().map(|(_, source)| source.clone()).collect();
    let mut to_read = Vec::new();
    let mut listed = listed.into_iter().peekable();
    while listed.peek().is_some() {
        let chunk: Vec<_> = listed.by_ref().take(LOOKUP_BATCH).collect();
        let files: Vec<_> = chunk.iter().map(|(f, source)| (source.as_path(), &f.meta)).collect();
        // --rehash trusts a record only once the file's bytes agree
        // with it, and links nothing unread.
        let answers = if rehash {
            user.rehashed_sources(album, &files)?
        } else {
            user.unchanged_sources(album, &files)?
        };
        // What another album's records vouch for is linked unread.
        let unknown: Vec<_> = files
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none() && !rehash)
            .map(|(f, _)| *f)
            .collect();
        let mut linked = if unknown.is_empty() {
            Vec::new()
        } else {
            user.link_sources(album, mode, &unknown)?
        }
        .into_iter();
        for ((f, source), r) in chunk.into_iter().zip(answers) {
            // One answer of `linked` for each file the album did not
            // vouch for; a rehashed file is not "unchanged": it was read.
            let answer = match r {
                Some(r) => Some((Ok(r), !rehash)),
                None => linked.next().flatten().map(|r| (r, false)),
            };
            match answer {
                Some((Ok(r), unchanged)) => {
                    report.bar.inc(f.meta.len());
                    report.file(&f.path, &r, unchanged);
                }
                Some((Err(e), _)) => {
                    report.bar.inc(f.meta.len());
                    report.error(&f.path, e.to_string());
                }
                None => to_read.push((f, source)),
            }
        }
        // The links are durable: a reader may see their lines now.
        let _ = report.out.flush();
    }
    let mut uploads = Uploads {
        user,
        album,
        mode,
        report,
    };
    let mut waiting = Vec::new();
    uploads.store(to_read, false, &mut waiting)?;
    let deadline = Instant::now() + SETTLE_WAIT;
    while !waiting.is_empty() {
        if Instant::now() + SETTLE > deadline {
            for (f, _) in waiting.drain(..) {
                uploads.report.bar.inc(f.meta.len());
                uploads.report.error(
                    &f.path,
                    format!(
                        "is still being written (it changed within {} s, for {} s); nothing was stored, back it up again once it is complete",
                        SETTLE.as_secs(),
                        SETTLE_WAIT.as_secs()
                    ),
                );
            }
            break;
        }
        std::thread::sleep(SETTLE);
        let again = std::mem::take(&mut waiting);
        uploads.store(again, true, &mut waiting)?;
    }
    let report = uploads.report;
    report.bar.finish_and_clear();
    if complete {
        for root in roots.iter().filter_map(|p| path::absolute(p).ok()) {
            user.forget_sources(album, &root, &seen)?;
        }
    }
    show_summary(&report.summary, out)?;
    Ok(report.summary)
}

/// How many files one lookup of source records asks about: enough that the
/// batched reads share their blocks, few enough that the answers stay small.
const LOOKUP_BATCH: usize = 4096;

/// The absolute form of each path, as [`path::absolute`] gives it, with the
/// working directory read once rather than once per file.
fn absolute_all<'a>(paths: impl Iterator<Item = &'a Path>) -> Vec<io::Result<PathBuf>> {
    let cwd = std::env::current_dir();
    paths
        .map(|p| match &cwd {
            _ if p.is_absolute() => path::absolute(p),
            Ok(cwd) => path::absolute(cwd.join(p)),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        })
        .collect()
}

fn show_summary(summary: &Summary, out: &Output) -> Result<(), Failure> {
    out.show(summary, || {
        format!(
            "{} files: {} stored, {} linked, {} skipped, {} restored, {} errors, {} ignored; {} written, {} deduplicated",
            summary.files,
            summary.stored,
            summary.linked,
            summary.skipped,
            summary.restored,
            summary.errors,
            summary.ignored,
            bytes(summary.bytes_written),
            bytes(summary.bytes_deduplicated)
        )
    })?;
    Ok(())
}

/// A path as a JSON line carries it: exact when it is UTF-8, else escaped
/// (the file's own name is exact in `name_hex`).
/// Runs `print` with the progress bar, if one is drawn, cleared above it.
/// A hidden bar is not asked: its lock and redraw check, once per file,
/// cost a re-run of many files more than its lookups.
fn above(bar: &ProgressBar, print: impl FnOnce()) {
    if bar.is_hidden() {
        print()
    } else {
        bar.suspend(print)
    }
}

fn json_path(path: &Path) -> String {
    match path.to_str() {
        Some(p) => p.to_string(),
        None => shown(path),
    }
}

fn print_file(summary: &mut Summary, path: &Path, r: &UploadReport, unchanged: bool, out: &Output, bar: &ProgressBar) {
    summary.files += 1;
    match r.outcome {
        keepsake::Outcome::Stored => summary.stored += 1,
        keepsake::Outcome::Linked => summary.linked += 1,
        keepsake::Outcome::Skipped => summary.skipped += 1,
        keepsake::Outcome::Restored => summary.restored += 1,
    }
    summary.bytes_written += r.bytes_written;
    summary.bytes_deduplicated += r.size - r.bytes_written;
    // The JSON line is made only for JSON: the hash's hex costs, over a
    // re-run of many files, more than the lookups that trust them.
    above(bar, || {
        let _ = if out.json {
            let name = FileName::from(path.file_name().unwrap_or_default());
            let line = FileLine {
                path: &json_path(path),
                file_id: r.file_id.0,
                name: JsonName::of(&name),
                hash: r.hash.to_string(),
                size: r.size,
                outcome: r.outcome.to_string(),
                bytes_written: r.bytes_written,
                unchanged,
            };
            out.show(&line, String::new)
        } else {
            out.show(&(), || format!("{:<7} {:>8}  {}", r.outcome, r.file_id, shown(path)))
        };
    });
}
