//! `keepsake duplicates` and `keepsake dedupe`: list the groups of files
//! with the same content, and merge each into one file. Both stream the
//! groups from the store, printing each as it comes, so a library with any
//! number of duplicates runs in the memory of its largest group.

use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::ControlFlow;

use keepsake::{AlbumId, DuplicateGroup, FileId, LibraryError, MergeReport, StorageError, User};
use serde::Serialize;

use super::output::{bytes, Output};
use super::Failure;
use keepsake::http::JsonName;

/// Which file of each group survives `dedupe`.
#[derive(Debug, Clone)]
pub(crate) enum Keep {
    Oldest,
    Newest,
    /// The first (oldest) file whose name matches this `*`/`?` pattern.
    Name(String),
}

fn output_error(e: io::Error) -> LibraryError {
    LibraryError::Storage(StorageError::Io {
        context: "writing output".into(),
        source: e,
    })
}

/// Album names by id: albums are few next to files, so one listing serves
/// every group.
struct AlbumNames(HashMap<AlbumId, String>);

impl AlbumNames {
    fn load(user: &User) -> Result<Self, LibraryError> {
        Ok(AlbumNames(user.albums()?.into_iter().map(|a| (a.id, a.name)).collect()))
    }

    fn of(&self, ids: &[AlbumId]) -> Vec<String> {
        ids.iter().filter_map(|id| self.0.get(id).cloned()).collect()
    }
}

#[derive(Serialize)]
struct ListedFile {
    file_id: FileId,
    #[serde(flatten)]
    name: JsonName,
    albums: Vec<String>,
}

#[derive(Serialize)]
struct ListedGroup {
    hash: String,
    size: u64,
    files: Vec<ListedFile>,
}

/// `keepsake duplicates`: with `--json`, one array written element by
/// element as the groups arrive.
pub(crate) fn list(user: &User, out: &Output) -> Result<(), Failure> {
    let names = AlbumNames::load(user)?;
    let mut stdout = io::stdout().lock();
    if out.json {
        stdout.write_all(b"[")?;
    }
    let (mut groups, mut extra_files, mut logical) = (0u64, 0u64, 0u64);
    user.for_each_duplicate_group(|g| {
        let written = if out.json {
            let row = ListedGroup {
                hash: g.hash.to_string(),
                size: g.size,
                files: g
                    .files
                    .iter()
                    .map(|f| ListedFile {
                        file_id: f.id,
                        name: JsonName::of(&f.name),
                        albums: names.of(&f.albums),
                    })
                    .collect(),
            };
            let sep: &[u8] = if groups == 0 { b"\n" } else { b",\n" };
            stdout
                .write_all(sep)
                .and_then(|()| serde_json::to_writer(&mut stdout, &row).map_err(io::Error::from))
        } else {
            let mut s = format!(
                "{}  {} files of {} ({} logical in the extra copies)\n",
                g.hash,
                g.files.len(),
                bytes(g.size),
                bytes(g.logical_bytes())
            );
            for f in &g.files {
                s += &format!("  {:>8}  {}  [{}]\n", f.id, f.name, names.of(&f.albums).join(", "));
            }
            stdout.write_all(s.as_bytes())
        };
        written.map_err(output_error)?;
        groups += 1;
        extra_files += g.files.len() as u64 - 1;
        logical += g.logical_bytes();
        Ok(ControlFlow::Continue(()))
    })?;
    if out.json {
        stdout.write_all(b"\n]\n")?;
    } else {
        writeln!(
            stdout,
            "{groups} group(s), {extra_files} extra file(s), {} logical; \
             no quota to gain: each content is charged once",
            bytes(logical)
        )?;
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and
/// `?` any one character. Backtracks only to the last `*`, which is enough:
/// an earlier star could only match less.
/// `s` in Unicode NFC, the form names are compared in.
fn nfc(s: &str) -> String {
    unicode_normalization::UnicodeNormalization::nfc(s).collect()
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                last_star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match last_star {
                Some((sp, sn)) => {
                    last_star = Some((sp, sn + 1));
                    (pi, ni) = (sp + 1, sn + 1);
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The file to keep (`None`: the store's default, the oldest), and whether
/// a name pattern matched nothing and the oldest was kept instead.
fn choose(group: &DuplicateGroup, keep: &Keep) -> (Option<FileId>, bool) {
    match keep {
        Keep::Oldest => (None, false),
        Keep::Newest => (
            group.files.iter().max_by_key(|f| (f.created_ms, f.id)).map(|f| f.id),
            false,
        ),
        // Both in NFC, as names are compared: a pattern typed on Linux matches
        // a name written on macOS.
        Keep::Name(glob) => match group
            .files
            .iter()
            .find(|f| glob_match(&nfc(glob), &nfc(&f.name.to_string_lossy())))
        {
            Some(f) => (Some(f.id), false),
            None => (None, true),
        },
    }
}

#[derive(Serialize)]
struct NamedFile {
    file_id: FileId,
    #[serde(flatten)]
    name: JsonName,
    #[serde(skip)]
    shown: String,
}

#[derive(Serialize)]
struct GroupLine {
    hash: String,
    dry_run: bool,
    kept: NamedFile,
    /// The name pattern matched no file, so the oldest was kept.
    fallback_to_oldest: bool,
    trashed: Vec<NamedFile>,
    albums_added: Vec<String>,
    logical_bytes: u64,
}

#[derive(Serialize)]
struct ErrorLine {
    hash: String,
    error: String,
}

#[derive(Default, Serialize)]
struct Summary {
    summary: bool,
    dry_run: bool,
    groups: u64,
    files_trashed: u64,
    logical_bytes: u64,
    failed: u64,
}

fn group_line(g: &DuplicateGroup, r: &MergeReport, names: &AlbumNames, dry_run: bool, fallback: bool) -> GroupLine {
    let named = |id: FileId| {
        let name = g
            .files
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        NamedFile {
            file_id: id,
            name: JsonName::of(&name),
            shown: name.to_string(),
        }
    };
    GroupLine {
        hash: g.hash.to_string(),
        dry_run,
        kept: named(r.kept),
        fallback_to_oldest: fallback,
        trashed: r.trashed.iter().map(|&id| named(id)).collect(),
        albums_added: names.of(&r.albums_added),
        logical_bytes: r.logical_bytes,
    }
}

fn human(line: &GroupLine) -> String {
    let verb = if line.dry_run { "would keep" } else { "kept" };
    let mut s = format!("{}: {verb} {} \"{}\"", line.hash, line.kept.file_id, line.kept.shown);
    if line.fallback_to_oldest {
        s += " (the oldest: no name matched)";
    }
    let trashed: Vec<String> = line
        .trashed
        .iter()
        .map(|f| format!("{} \"{}\"", f.file_id, f.shown))
        .collect();
    s += &format!(
        "; {} {}",
        if line.dry_run { "would trash" } else { "trashed" },
        trashed.join(", ")
    );
    if !line.albums_added.is_empty() {
        s += &format!("; added to [{}]", line.albums_added.join(", "));
    }
    s
}

/// `keepsake dedupe`: merges (or with `dry_run` only plans) every group,
/// one commit per group, printing each as it is done. A group that fails is
/// reported and the others go on; the status is then 1.
pub(crate) fn dedupe(user: &User, keep: &Keep, dry_run: bool, out: &Output) -> Result<(), Failure> {
    let names = AlbumNames::load(user)?;
    let mut summary = Summary {
        summary: true,
        dry_run,
        ..Summary::default()
    };
    user.for_each_duplicate_group(|g| {
        let (choice, fallback) = choose(&g, keep);
        let result = if dry_run {
            g.preview_merge(choice)
        } else {
            user.merge(g.hash, choice)
        };
        match result {
            Ok(r) => {
                let line = group_line(&g, &r, &names, dry_run, fallback);
                out.show(&line, || human(&line)).map_err(output_error)?;
                summary.groups += 1;
                summary.files_trashed += r.trashed.len() as u64;
                summary.logical_bytes += r.logical_bytes;
            }
            Err(e) => {
                summary.failed += 1;
                let line = ErrorLine {
                    hash: g.hash.to_string(),
                    error: e.to_string(),
                };
                if out.json {
                    out.show(&line, String::new).map_err(output_error)?;
                } else {
                    let _ = out.flush();
                    let _ = writeln!(io::stderr(), "keepsake: group {}: {}", line.hash, line.error);
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    out.show(&summary, || {
        let mut s = format!(
            "{} group(s), {} file(s) {}, {} logical once the trash is emptied",
            summary.groups,
            summary.files_trashed,
            if dry_run {
                "would go to the trash"
            } else {
                "moved to the trash"
            },
            bytes(summary.logical_bytes)
        );
        if summary.failed > 0 {
            s += &format!("; {} group(s) failed", summary.failed);
        }
        s
    })?;
    if summary.failed > 0 {
        return Err(Failure::Status(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_stars_and_question_marks_match_like_a_shell() {
        assert!(glob_match("IMG_*.JPG", "IMG_1234.JPG"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyybzc"));
        assert!(glob_match("?.jpg", "1.jpg"));
        assert!(glob_match("*(1)*", "IMG_1 (1).JPG"));
        assert!(!glob_match("?.jpg", "12.jpg"));
        assert!(!glob_match("IMG_*.JPG", "IMG_1.jpg"));
        assert!(!glob_match("a*b", "a"));
        assert!(glob_match("é?*", "éte"));
    }
}
