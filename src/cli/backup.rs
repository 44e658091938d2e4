//! `keepsake backup`: walk paths, upload in durable batches, report each file
//! once it is durable.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::path::{self, Path, PathBuf};
use std::time::SystemTime;

use indicatif::{ProgressBar, ProgressStyle};
use keepsake::{AlbumId, Content, DedupMode, ReadOnlyStore, Upload, UploadError, UploadReport, User};
use serde::Serialize;

use super::output::{bytes, Output};
use super::Failure;

/// A batch is committed (one segment sync, one metadata sync) once it holds
/// this many files or bytes; each file's line is printed after its batch.
const BATCH_FILES: usize = 256;
const BATCH_BYTES: u64 = 256 << 20;

#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    summary: bool,
    pub files: u64,
    pub stored: u64,
    pub linked: u64,
    pub skipped: u64,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
    pub errors: u64,
    /// Of the errors, the uploads the quota refused.
    pub quota_refused: u64,
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
    name: &'a str,
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

/// A regular file found by the walk.
struct Found {
    path: PathBuf,
    meta: Metadata,
}

/// Collects regular files under `root`. A root that is a symbolic link is
/// followed (the user named it); links inside folders are not. Entries are
/// sorted, so a backup's order (and which of two duplicates is "first") is
/// reproducible.
fn walk(root: &Path, found: &mut Vec<Found>, errors: &mut Vec<(PathBuf, String)>) {
    let meta = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) => return errors.push((root.to_path_buf(), e.to_string())),
    };
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        if meta.is_file() {
            found.push(Found { path, meta });
        } else if meta.is_dir() {
            let entries = match fs::read_dir(&path).and_then(|rd| rd.collect::<Result<Vec<_>, _>>()) {
                Ok(e) => e,
                Err(e) => {
                    errors.push((path, e.to_string()));
                    continue;
                }
            };
            let mut children: Vec<_> = entries.into_iter().map(|e| e.path()).collect();
            children.sort();
            for child in children.into_iter().rev() {
                match fs::symlink_metadata(&child) {
                    Ok(m) if m.file_type().is_symlink() => {}
                    Ok(m) => stack.push((child, m)),
                    Err(e) => errors.push((child, e.to_string())),
                }
            }
        }
    }
}

/// What the walk of a backup's paths found.
pub(crate) struct Scan {
    roots: Vec<PathBuf>,
    start: SystemTime,
    found: Vec<Found>,
    errors: Vec<(PathBuf, String)>,
}

/// Walks `paths`.
pub(crate) fn scan(paths: &[PathBuf]) -> Scan {
    let start = SystemTime::now();
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        walk(p, &mut found, &mut errors);
    }
    Scan {
        roots: paths.to_vec(),
        start,
        found,
        errors,
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
    if !scan.errors.is_empty() {
        return Ok(false);
    }
    let mut seen = HashSet::new();
    let mut reports = Vec::with_capacity(scan.found.len());
    for f in &scan.found {
        let Ok(source) = path::absolute(&f.path) else {
            return Ok(false);
        };
        let Some(r) = index.unchanged_source(album, &source, &f.meta)? else {
            return Ok(false);
        };
        seen.insert(source);
        reports.push((&f.path, r));
    }
    for root in &scan.roots {
        let Ok(root) = path::absolute(root) else {
            return Ok(false);
        };
        if index.has_forgotten_sources(album, &root, &seen)? {
            return Ok(false);
        }
    }
    let mut summary = Summary {
        summary: true,
        ..Default::default()
    };
    let bar = ProgressBar::hidden();
    for (path, r) in reports {
        print_file(&mut summary, path, &r, true, out, &bar);
    }
    show_summary(&summary, out)?;
    Ok(true)
}

pub(crate) fn run(
    user: &User,
    album: AlbumId,
    scan: Scan,
    mode: DedupMode,
    rehash: bool,
    out: &Output,
) -> Result<Summary, Failure> {
    let Scan {
        roots: paths,
        start: scan_start,
        found,
        errors: walk_errors,
    } = scan;
    let mut summary = Summary {
        summary: true,
        ..Default::default()
    };
    let report_error = |summary: &mut Summary, path: &Path, error: String| {
        summary.errors += 1;
        let path = path.display().to_string();
        let line = ErrorLine {
            path: &path,
            outcome: "error",
            error: error.clone(),
        };
        let _ = out.show(&line, String::new);
        if !out.json {
            eprintln!("keepsake: {path}: {error}");
        }
    };
    // Only a walk that saw every entry may conclude that a file is gone.
    let complete = walk_errors.is_empty();
    let mut seen = HashSet::new();
    for (path, e) in walk_errors {
        report_error(&mut summary, &path, e);
    }
    let total: u64 = found.iter().map(|f| f.meta.len()).sum();
    let bar = if out.progress_allowed() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut start = 0;
    while start < found.len() {
        let mut end = start;
        let mut batch_bytes = 0;
        while end < found.len() && end - start < BATCH_FILES && (end == start || batch_bytes < BATCH_BYTES) {
            batch_bytes += found[end].meta.len();
            end += 1;
        }
        let batch = &found[start..end];
        let mut uploads = Vec::new();
        let mut slots = Vec::new();
        for f in batch {
            let source = match path::absolute(&f.path) {
                Ok(p) => p,
                Err(e) => {
                    report_error(&mut summary, &f.path, e.to_string());
                    continue;
                }
            };
            seen.insert(source.clone());
            if !rehash {
                if let Some(r) = user.unchanged_source(album, &source, &f.meta)? {
                    bar.inc(f.meta.len());
                    print_file(&mut summary, &f.path, &r, true, out, &bar);
                    continue;
                }
            }
            match f.path.file_name().and_then(|n| n.to_str()) {
                Some(name) => {
                    uploads.push(Upload::new(album, name, Content::Path(f.path.clone()), mode));
                    slots.push((f, source));
                }
                None => report_error(&mut summary, &f.path, "file name is not valid UTF-8".into()),
            }
        }
        let mut durable = Vec::new();
        for ((f, source), result) in slots.into_iter().zip(user.upload_batch(uploads)) {
            bar.inc(f.meta.len());
            match result {
                Ok(r) => {
                    print_file(&mut summary, &f.path, &r, false, out, &bar);
                    durable.push((source, f.meta.clone(), r.file_id));
                }
                Err(e) => {
                    summary.quota_refused += u64::from(matches!(e, UploadError::QuotaExceeded(_)));
                    bar.suspend(|| report_error(&mut summary, &f.path, e.to_string()));
                }
            }
        }
        user.record_sources(album, &durable, scan_start)?;
        start = end;
    }
    bar.finish_and_clear();
    if complete {
        for root in paths.iter().filter_map(|p| path::absolute(p).ok()) {
            user.forget_sources(album, &root, &seen)?;
        }
    }
    show_summary(&summary, out)?;
    Ok(summary)
}

fn show_summary(summary: &Summary, out: &Output) -> Result<(), Failure> {
    out.show(summary, || {
        format!(
            "{} files: {} stored, {} linked, {} skipped, {} errors; {} written, {} deduplicated",
            summary.files,
            summary.stored,
            summary.linked,
            summary.skipped,
            summary.errors,
            bytes(summary.bytes_written),
            bytes(summary.bytes_deduplicated)
        )
    })?;
    Ok(())
}

fn print_file(summary: &mut Summary, path: &Path, r: &UploadReport, unchanged: bool, out: &Output, bar: &ProgressBar) {
    summary.files += 1;
    match r.outcome {
        keepsake::Outcome::Stored => summary.stored += 1,
        keepsake::Outcome::Linked => summary.linked += 1,
        keepsake::Outcome::Skipped => summary.skipped += 1,
    }
    summary.bytes_written += r.bytes_written;
    summary.bytes_deduplicated += r.size - r.bytes_written;
    let path_s = path.display().to_string();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let line = FileLine {
        path: &path_s,
        file_id: r.file_id.0,
        name,
        hash: r.hash.to_string(),
        size: r.size,
        outcome: r.outcome.to_string(),
        bytes_written: r.bytes_written,
        unchanged,
    };
    bar.suspend(|| {
        let _ = out.show(&line, || {
            format!("{:<7} {:>8}  {path_s}", r.outcome.to_string(), r.file_id)
        });
    });
}
