//! Source records for incremental backups: what a backup saw of each file on
//! disk (its [`Stamp`]: device, inode, size, modification and change time)
//! and the file it became, so that a
//! re-run trusts an unchanged file without reading it, as restic does with its
//! parent snapshot.
//!
//! [`ReadOnlyStore`](crate::ReadOnlyStore) answers the same questions from a
//! read-only open of the store: a re-run over a folder where nothing changed
//! then costs no write open at all.

use std::fs::Metadata;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::damage::{lost, ShortSegments};
use super::library::albums;
use super::pipeline::ordered_map;
use super::rules::link_in;
use super::source_file::hashes_to;
use super::{DedupMode, FileInfo, HashedUpload, Outcome, UploadReport, User};
use crate::error::{Fault, LibraryError, Result, StorageError, UploadError};
use crate::hash::ContentHash;
use crate::ids::{AlbumId, FileId};
use crate::meta::records::{BlobRecord, DamageRecord, FileRecord, Place, Seen, SourceRecord};
use crate::meta::{keys, Cf, Meta};
use crate::names::{check_file_name, FileName};
use crate::stamp::Stamp;

/// A file modified less than this long before the scan started is not
/// recorded: a later edit within the same timestamp tick would leave its
/// stamp unchanged (the "racy" case git and restic guard against).
const RACY: Duration = Duration::from_secs(2);

/// How many files [`User::rehashed_sources`]' readers may run ahead of the
/// thread taking their answers: only answers wait, not bytes.
const REHASH_AHEAD: NonZeroUsize = NonZeroUsize::new(64).expect("not zero");

fn key(uid: u64, album: AlbumId, path: &Path) -> Vec<u8> {
    keys::source(uid, album.0, path.as_os_str().as_bytes())
}

/// [`User::unchanged_sources`] over committed metadata.
pub(crate) fn unchanged(
    meta: &Meta,
    short: &ShortSegments,
    uid: Option<u64>,
    album: AlbumId,
    files: &[(&Path, &Metadata)],
) -> Result<Vec<Option<UploadReport>>> {
    let mut out: Vec<Option<UploadReport>> = files.iter().map(|_| None).collect();
    let Some(uid) = uid else {
        return Ok(out);
    };
    let all: Vec<usize> = (0..files.len()).collect();
    for (i, file) in vouched(meta, short, uid, album, files, &all, true)? {
        out[i] = Some(UploadReport {
            file_id: file.id,
            outcome: Outcome::Skipped,
            hash: file.hash,
            size: file.size,
            bytes_written: 0,
            charged_bytes: 0,
        });
    }
    Ok(out)
}

/// The files that records of `album` vouch for, among `files[i]` for each
/// `i` in `open`: a record with the stamp the file shows now, of a file of
/// the user's that is still live (and in `album`, if `in_album`), whose
/// content the store holds whole, in the order of `open`. Each step reads
/// what all the files it still trusts need in one batched lookup (the
/// source records and their file records, close together, by one forward
/// iteration each), rather than point reads per file.
///
/// Their blobs are looked up only when the store knows of damage (a
/// damage record, or a segment in `short`): a live file's blob record
/// exists by the reference invariant `verify` checks, so without known
/// damage the lookup can only say "whole". Those are a million random
/// reads in a re-run of a million files, a fifth of its time.
fn vouched(
    meta: &Meta,
    short: &ShortSegments,
    uid: u64,
    album: AlbumId,
    files: &[(&Path, &Metadata)],
    open: &[usize],
    in_album: bool,
) -> Result<Vec<(usize, FileInfo)>> {
    let keys: Vec<_> = open.iter().map(|&i| key(uid, album, files[i].0)).collect();
    let seen: Vec<(usize, u64)> = meta
        .get_near::<SourceRecord>(Cf::Sources, &keys)?
        .into_iter()
        .zip(open)
        .filter_map(|(rec, &i)| {
            rec.filter(|r| r.seen == Seen::Stamp(Stamp::of(files[i].1)))
                .map(|r| (i, r.file))
        })
        .collect();
    let keys: Vec<_> = seen.iter().map(|&(_, fid)| keys::file(uid, fid)).collect();
    let live: Vec<(usize, FileInfo)> = meta
        .get_near::<FileRecord>(Cf::Files, &keys)?
        .into_iter()
        .zip(seen)
        .filter_map(|(rec, (i, fid))| {
            rec.map(|f| FileInfo::new(fid, f))
                .filter(|f| f.trashed_ms.is_none() && (!in_album || f.albums.contains(&album)))
                .map(|f| (i, f))
        })
        .collect();
    if live.is_empty() {
        return Ok(live);
    }
    let no_damage = meta.is_empty(Cf::Damaged)?;
    if no_damage && short.is_empty() {
        return Ok(live);
    }
    let keys: Vec<_> = live.iter().map(|(_, f)| f.hash.as_bytes().to_vec()).collect();
    let blobs = meta.multi_get::<BlobRecord>(Cf::Blobs, &keys)?;
    let damage = if no_damage {
        keys.iter().map(|_| None).collect()
    } else {
        meta.multi_get::<DamageRecord>(Cf::Damaged, &keys)?
    };
    Ok(live
        .into_iter()
        .zip(blobs)
        .zip(damage)
        .filter(|((_, blob), damage)| blob.as_ref().is_some_and(|b| intact(short, b, damage.as_ref())))
        .map(|((found, _), _)| found)
        .collect())
}

/// The longest run of bytes every path of `files` begins with.
fn shared_prefix<'a>(files: &[(&'a Path, &Metadata)]) -> &'a [u8] {
    let Some(((first, _), rest)) = files.split_first() else {
        return &[];
    };
    let first = first.as_os_str().as_bytes();
    let len = rest.iter().fold(first.len(), |len, (p, _)| {
        first[..len]
            .iter()
            .zip(p.as_os_str().as_bytes())
            .take_while(|(a, b)| a == b)
            .count()
    });
    &first[..len]
}

/// Whether the store holds a blob whole as far as it knows without reading
/// it: no damage is known of the copy its record names (a read or a scrub
/// that failed its hash, a segment file found missing or short at open),
/// and its copy does not lie past the end of a `short` segment file.
/// Asked only where the store knows of damage (see [`vouched`]): a file
/// whose content is not whole (or has no blob record) is then read again,
/// so that the ordinary re-run of a backup heals it, as restic's backup
/// re-reads files whose stored data is missing.
fn intact(short: &ShortSegments, blob: &BlobRecord, damage: Option<&DamageRecord>) -> bool {
    if let Place::Segment(loc) = &blob.place {
        if lost(short, loc) {
            return false;
        }
    }
    !damage.is_some_and(|d| d.is_about(&blob.place))
}

/// The paths a complete walk saw, for [`User::forget_sources`]: kept sorted
/// by their bytes, the order source records are keyed in, so that finding
/// the records of files gone from a folder is one merge of these paths with
/// the records' ordered scan. (Hashing a `Path` walks its components: over
/// a large folder a hash set of them cost more than the scan.)
///
/// Paths are compared byte for byte, as records are keyed: collect them in
/// the form they were recorded in (the CLI uses `std::path::absolute`'s).
///
/// ```
/// use keepsake::SeenPaths;
/// use std::path::PathBuf;
/// let seen: SeenPaths = ["/p/b.jpg", "/p/a.jpg"].map(PathBuf::from).into_iter().collect();
/// assert!(seen.contains("/p/a.jpg".as_ref()) && !seen.contains("/p/c.jpg".as_ref()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SeenPaths(Vec<PathBuf>);

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

impl FromIterator<PathBuf> for SeenPaths {
    /// Sorts the paths unless they come sorted (a walk in name order of
    /// folders whose names sort alike mostly does), and drops repeats.
    fn from_iter<I: IntoIterator<Item = PathBuf>>(paths: I) -> Self {
        let mut paths: Vec<PathBuf> = paths.into_iter().collect();
        if !paths.is_sorted_by(|a, b| bytes(a) <= bytes(b)) {
            paths.sort_unstable_by(|a, b| bytes(a).cmp(bytes(b)));
        }
        paths.dedup_by(|a, b| bytes(a) == bytes(b));
        SeenPaths(paths)
    }
}

impl SeenPaths {
    /// Whether `path` is one of them, byte for byte.
    pub fn contains(&self, path: &Path) -> bool {
        self.0.binary_search_by(|p| bytes(p).cmp(bytes(path))).is_ok()
    }
}

/// The keys of the records of `album` for files under `root` (or `root`
/// itself) that are not in `seen`: the records come in key order, so the
/// seen paths are stepped through once, alongside.
pub(crate) fn stale(meta: &Meta, uid: u64, album: AlbumId, root: &Path, seen: &SeenPaths) -> Result<Vec<Vec<u8>>> {
    let prefix = key(uid, album, root);
    let path_at = key(uid, album, Path::new("")).len();
    let seen = &seen.0;
    let mut next = seen.partition_point(|p| bytes(p) < bytes(root));
    let mut gone = Vec::new();
    meta.scan(Cf::Sources, &prefix, |k, _| {
        // `/a/bc` shares the prefix of root `/a/b` without being under it.
        let rest = &k[prefix.len()..];
        let under = rest.is_empty() || rest[0] == b'/' || prefix.ends_with(b"/");
        if under {
            let path = &k[path_at..];
            while seen.get(next).is_some_and(|p| bytes(p) < path) {
                next += 1;
            }
            if seen.get(next).is_none_or(|p| bytes(p) != path) {
                gone.push(k.to_vec());
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(gone)
}

impl User {
    /// For each `(path, meta)` of `files`, the file a previous backup stored
    /// from `path` into `album`, reported as [`Outcome::Skipped`], if
    /// [`record_sources`](Self::record_sources) recorded it with the device,
    /// inode, size, modification time and change time `meta` shows and that
    /// file is still live in the album. `None` means "read and upload it";
    /// so does content the store does not hold whole (its blob damaged, or
    /// in a segment found missing or short), so that the ordinary re-run
    /// heals it. Paths should be absolute: records are keyed by them. The
    /// change time is what catches an edit that kept the modification time
    /// (restic and git compare it too); a record written before change
    /// times were kept is never trusted.
    ///
    /// The answers come in the order of `files`, from one batched lookup
    /// per kind of record: asking for a few thousand files at a time is
    /// what makes a re-run over a large library cheap.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store};
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("store")).unwrap();
    /// let u = store.user("u").unwrap();
    /// let album = u.ensure_album("A").unwrap();
    /// let path = dir.path().join("IMG_1.JPG");
    /// std::fs::write(&path, b"pixels").unwrap();
    /// let meta = std::fs::metadata(&path).unwrap();
    /// assert!(u.unchanged_sources(album, &[(&path, &meta)]).unwrap()[0].is_none());
    /// let r = u.upload(album, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
    /// // As if the scan had started a minute later: the file is not racy.
    /// let scan_start = SystemTime::now() + Duration::from_secs(60);
    /// u.record_sources(album, &[(path.clone(), meta.clone(), r.file_id)], scan_start).unwrap();
    /// let again = u.unchanged_sources(album, &[(&path, &meta)]).unwrap().remove(0).unwrap();
    /// assert_eq!((again.file_id, again.outcome), (r.file_id, Outcome::Skipped));
    /// ```
    pub fn unchanged_sources(
        &self,
        album: AlbumId,
        files: &[(&Path, &Metadata)],
    ) -> Result<Vec<Option<UploadReport>>, LibraryError> {
        let inner = self.inner();
        Ok(unchanged(
            &inner.meta,
            &inner.short_segments(),
            self.id()?,
            album,
            files,
        )?)
    }

    /// [`unchanged_sources`](Self::unchanged_sources) with proof: each file
    /// the records vouch for is also read (on every core, never through a
    /// link, as an upload reads it) and trusted only if its bytes still hash
    /// to the recorded content and it was left alone while read. This is
    /// `keepsake backup --rehash`: content that changed under an unchanged
    /// stamp (a tool that restores the times, a disk that rots) answers
    /// `None` and is uploaded again, while content that did not costs a
    /// read and a hash, and no commit, as `b3sum` would.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record. A file that cannot be opened or read answers `None`: its
    ///   upload reports why.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("store")).unwrap();
    /// let u = store.user("u").unwrap();
    /// let album = u.ensure_album("A").unwrap();
    /// let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
    /// std::fs::write(&a, b"pixels").unwrap();
    /// std::fs::write(&b, b"other pixels").unwrap();
    /// let (ma, mb) = (std::fs::metadata(&a).unwrap(), std::fs::metadata(&b).unwrap());
    /// let ra = u.upload(album, "a.jpg", Content::Path(a.clone()), DedupMode::NameAndHash).unwrap();
    /// let later = SystemTime::now() + Duration::from_secs(60);
    /// // b.jpg recorded as the file stored from a.jpg: its bytes say otherwise.
    /// let records = [(a.clone(), ma.clone(), ra.file_id), (b.clone(), mb.clone(), ra.file_id)];
    /// u.record_sources(album, &records, later).unwrap();
    /// let answers = u.rehashed_sources(album, &[(&a, &ma), (&b, &mb)]).unwrap();
    /// assert_eq!(answers[0].as_ref().unwrap().file_id, ra.file_id);
    /// assert!(answers[1].is_none());
    /// ```
    pub fn rehashed_sources(
        &self,
        album: AlbumId,
        files: &[(&Path, &Metadata)],
    ) -> Result<Vec<Option<UploadReport>>, LibraryError> {
        let mut answers = self.unchanged_sources(album, files)?;
        let vouched: Vec<(usize, &Path, Stamp, ContentHash)> = answers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|r| (i, files[i].0, Stamp::of(files[i].1), r.hash)))
            .collect();
        let workers = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        ordered_map(
            vouched,
            workers,
            REHASH_AHEAD,
            |(i, path, seen, hash)| (i, hashes_to(path, seen, &hash)),
            |checked| {
                for (_, (i, holds)) in checked {
                    if !holds {
                        answers[i] = None;
                    }
                }
            },
        );
        Ok(answers)
    }

    /// For files that [`unchanged_sources`](Self::unchanged_sources) leaves
    /// to be read, what a record of another of the user's albums vouches
    /// for (the same stamp, its file live, its content whole), added to
    /// `album` under the path's file name by the duplicate rule `mode`, as
    /// [`User::link`] adds content by its hash, and recorded as a source of
    /// `album`, all in one durable commit, without reading any file. This
    /// is backing up a folder into a second album: each file is linked
    /// (or skipped, or restored from the trash) at the cost of its records,
    /// where reading it again would cost its bytes. The stamp is trusted as
    /// a re-run trusts it in the album that recorded it.
    ///
    /// The answers come in the order of `files`: `None` for a file that no
    /// other album vouches for, or whose content must be sent again (a
    /// duplicate rule asks for its bytes): read and upload it. Paths
    /// should be absolute, as for `unchanged_sources`.
    ///
    /// # Errors
    ///
    /// The outer [`StorageError`] if the records cannot be read, the store
    /// fails (the disk, the metadata database, a corrupt record) or the
    /// commit does: then nothing was linked. Otherwise each linked file
    /// has the result [`User::link`] would give it:
    /// [`UploadError::UnknownAlbum`] (another user's album id is unknown
    /// too), [`UploadError::InvalidName`] for a file name that is not
    /// acceptable.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Outcome, Store};
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path().join("store")).unwrap();
    /// let u = store.user("u").unwrap();
    /// let (camera, trip) = (u.ensure_album("Camera").unwrap(), u.ensure_album("Trip").unwrap());
    /// let path = dir.path().join("IMG_1.JPG");
    /// std::fs::write(&path, b"pixels").unwrap();
    /// let meta = std::fs::metadata(&path).unwrap();
    /// let r = u.upload(camera, "IMG_1.JPG", Content::Path(path.clone()), DedupMode::NameAndHash).unwrap();
    /// let later = SystemTime::now() + Duration::from_secs(60);
    /// u.record_sources(camera, &[(path.clone(), meta.clone(), r.file_id)], later).unwrap();
    /// let linked = u.link_sources(trip, DedupMode::NameAndHash, &[(&path, &meta)]).unwrap();
    /// let linked = linked[0].as_ref().unwrap().as_ref().unwrap();
    /// assert_eq!((linked.file_id, linked.outcome), (r.file_id, Outcome::Linked));
    /// // Trip now vouches for the file itself.
    /// assert!(u.unchanged_sources(trip, &[(&path, &meta)]).unwrap()[0].is_some());
    /// ```
    pub fn link_sources(
        &self,
        album: AlbumId,
        mode: DedupMode,
        files: &[(&Path, &Metadata)],
    ) -> Result<Vec<Option<Result<UploadReport, UploadError>>>, StorageError> {
        let mut out: Vec<Option<Result<UploadReport, UploadError>>> = files.iter().map(|_| None).collect();
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(out);
        };
        let short = inner.short_segments();
        // The other albums, each asked about the files none before vouched
        // for; one seek first tells whether the album has any record under
        // the folder the batch shares, so that a user with many albums pays
        // a lookup per file only in those that backed up this folder.
        let mut open: Vec<usize> = (0..files.len()).collect();
        let mut found = Vec::new();
        let shared = shared_prefix(files);
        for other in albums(&inner.meta, uid)?
            .into_iter()
            .map(|a| a.id)
            .filter(|a| *a != album)
        {
            if open.is_empty() {
                break;
            }
            let mut any = false;
            inner
                .meta
                .scan(Cf::Sources, &keys::source(uid, other.0, shared), |_, _| {
                    any = true;
                    Ok(ControlFlow::Break(()))
                })?;
            if !any {
                continue;
            }
            let vouched = vouched(&inner.meta, &short, uid, other, files, &open, false)?;
            // Both in the order of `files`: one merge.
            let mut done = vouched.iter().map(|(i, _)| *i).peekable();
            open.retain(|i| done.next_if_eq(i).is_none());
            found.extend(vouched);
        }
        let links: Vec<(usize, PathBuf, Stamp, HashedUpload, FileId)> = found
            .into_iter()
            .filter_map(|(i, file)| {
                let (path, meta) = files[i];
                let name = FileName::from(path.file_name()?);
                let up = HashedUpload {
                    album,
                    name,
                    hash: file.hash,
                    mode,
                };
                Some((i, path.to_path_buf(), Stamp::of(meta), up, file.id))
            })
            .collect();
        if links.is_empty() {
            return Ok(out);
        }
        let linked = self.commit_existing(Fault::UnknownAlbum(album.to_string()), move |txn, uid| {
            let counts = links
                .iter()
                .map(|(_, _, _, up, _)| keys::user_hash(uid, &up.hash))
                .collect();
            txn.prefetch(Cf::UserBlobs, counts, false)?;
            // The files found, in this album: what the duplicate rules will
            // ask of the most common case (the file itself is the duplicate).
            let known = || links.iter().map(|(.., file)| file.0);
            txn.prefetch(Cf::Files, known().map(|f| keys::file(uid, f)).collect(), true)?;
            txn.prefetch(
                Cf::Members,
                known().map(|f| keys::member(uid, album.0, f)).collect(),
                true,
            )?;
            let mut results = Vec::with_capacity(links.len());
            for (i, path, stamp, up, file) in links {
                let sp = txn.savepoint();
                let r = check_file_name(&up.name)
                    .map_err(Fault::from)
                    .and_then(|()| link_in(txn, uid, &up, Some(file.0)));
                match r {
                    Ok(report) => {
                        let rec = SourceRecord {
                            seen: Seen::Stamp(stamp),
                            file: report.file_id.0,
                        };
                        txn.put(Cf::Sources, key(uid, album, &path), &rec);
                        results.push((i, Ok(report)));
                    }
                    // The store failing is the commit's error, not one file's.
                    Err(e) if e.is_storage() => return Err(e),
                    Err(e) => {
                        txn.rollback_to(sp);
                        results.push((i, Err(e)));
                    }
                }
            }
            Ok(results)
        });
        match linked {
            Ok(results) => {
                for (i, r) in results {
                    out[i] = match r {
                        Err(Fault::ContentRequired) => None,
                        r => Some(r.map_err(UploadError::from)),
                    };
                }
                Ok(out)
            }
            // The user went away meanwhile: nothing vouches for anything.
            Err(Fault::UnknownAlbum(_)) => Ok(out),
            Err(e) => Err(e.into()),
        }
    }

    /// Records, in one durable commit, that each `(path, meta, file)` was
    /// backed up into `album` as `file`. Call it only once those uploads are
    /// durable. A file modified less than 2 s before `scan_start` is not
    /// recorded (its old record is dropped): an edit within the same
    /// timestamp tick would not show, so it is read again next time.
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    pub fn record_sources(
        &self,
        album: AlbumId,
        sources: &[(PathBuf, Metadata, FileId)],
        scan_start: SystemTime,
    ) -> Result<(), LibraryError> {
        if sources.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = sources
            .iter()
            .map(|(path, meta, file)| {
                let settled = meta.modified().is_ok_and(|m| m + RACY <= scan_start);
                (
                    path.clone(),
                    settled.then(|| SourceRecord {
                        seen: Seen::Stamp(Stamp::of(meta)),
                        file: file.0,
                    }),
                )
            })
            .collect();
        Ok(self.commit_creating(move |txn, uid| {
            for (path, rec) in entries {
                match rec {
                    Some(rec) => txn.put(Cf::Sources, key(uid, album, &path), &rec),
                    None => txn.delete(Cf::Sources, key(uid, album, &path)),
                }
            }
            Ok(())
        })?)
    }

    /// Drops the records of `album` for files under `root` (or `root`
    /// itself) that are not in `seen`: after a complete walk of `root`, those
    /// files are gone from disk. The files stored from them are untouched.
    /// Paths are compared byte for byte, as records are keyed (see
    /// [`SeenPaths`]).
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the disk or the metadata database fails, or the
    ///   store refuses writes after a failed sync
    ///   ([`StorageError::Poisoned`](crate::StorageError::Poisoned)).
    pub fn forget_sources(&self, album: AlbumId, root: &Path, seen: &SeenPaths) -> Result<(), LibraryError> {
        let inner = self.inner();
        let Some(uid) = self.id()? else {
            return Ok(());
        };
        let gone = stale(&inner.meta, uid, album, root, seen)?;
        if gone.is_empty() {
            return Ok(());
        }
        Ok(inner.commit(move |txn| {
            for k in gone {
                txn.delete(Cf::Sources, k);
            }
            Ok(())
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Content, DedupMode};
    use crate::Store;

    #[test]
    fn forgetting_a_root_drops_only_unseen_records_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        // `r/sub.jpg` sorts before `r/sub/…` by bytes (as records are
        // keyed) but after them by path components.
        let paths = ["r/kept", "r/sub/gone", "rx/sibling", "r/sub.jpg", "r/sub/kept"].map(|p| dir.path().join(p));
        let mut sources = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, [i as u8]).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let r = store
                .user("u")
                .unwrap()
                .upload(album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                .unwrap();
            sources.push((p.clone(), std::fs::metadata(p).unwrap(), r.file_id));
        }
        let later = SystemTime::now() + Duration::from_secs(60);
        store.user("u").unwrap().record_sources(album, &sources, later).unwrap();

        // Unsorted, with a path outside the root: the merge steps over it.
        let seen = SeenPaths::from_iter([4, 2, 3, 0].map(|i| paths[i].clone()));
        store
            .user("u")
            .unwrap()
            .forget_sources(album, &dir.path().join("r"), &seen)
            .unwrap();
        let trusted: Vec<bool> = sources
            .iter()
            .map(|(p, m, _)| store.user("u").unwrap().unchanged_sources(album, &[(p, m)]).unwrap()[0].is_some())
            .collect();
        assert_eq!(
            trusted,
            [true, false, true, true, true],
            "`rx` is a sibling of `r`, not under it"
        );
    }

    /// Writes `paths[i]` with ten bytes `i`, backs each up into `album`
    /// and records its source, as a backup does.
    fn backed_up(u: &User, album: AlbumId, paths: &[PathBuf]) -> Vec<(PathBuf, Metadata, FileId)> {
        let mut sources = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            std::fs::write(p, [i as u8; 10]).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let r = u
                .upload(album, name, Content::Path(p.clone()), DedupMode::NameAndHash)
                .unwrap();
            sources.push((p.clone(), std::fs::metadata(p).unwrap(), r.file_id));
        }
        u.record_sources(album, &sources, SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        sources
    }

    /// What another album's records vouch for is linked unread; a file
    /// changed since, one in the trash, and every file of another user (who
    /// has no records of their own for the paths) are left to be read.
    #[test]
    fn another_album_vouches_only_for_the_users_own_unchanged_live_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let u = store.user("u").unwrap();
        // Asked first, with no record under the folder: passed over.
        u.ensure_album("Elsewhere").unwrap();
        let (camera, trip) = (u.ensure_album("Camera").unwrap(), u.ensure_album("Trip").unwrap());
        let paths = ["kept.jpg", "edited.jpg", "trashed.jpg"].map(|p| dir.path().join(p));
        let sources = backed_up(&u, camera, &paths);
        std::fs::write(&paths[1], b"edited").unwrap();
        u.delete(sources[2].2).unwrap();

        let metas: Vec<Metadata> = paths.iter().map(|p| std::fs::metadata(p).unwrap()).collect();
        let files: Vec<(&Path, &Metadata)> = paths.iter().map(PathBuf::as_path).zip(&metas).collect();
        let stranger = store.user("v").unwrap();
        stranger.ensure_album("Trip").unwrap();
        let theirs = stranger.find_album("Trip").unwrap().unwrap().id;
        assert!(stranger
            .link_sources(theirs, DedupMode::Hash, &files)
            .unwrap()
            .iter()
            .all(Option::is_none));

        let linked = u.link_sources(trip, DedupMode::NameAndHash, &files).unwrap();
        let kept = linked[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!((kept.file_id, kept.outcome), (sources[0].2, Outcome::Linked));
        assert!(linked[1].is_none() && linked[2].is_none(), "{linked:?}");
        assert_eq!(u.file(sources[0].2).unwrap().albums, vec![camera, trip]);
        let again = u.unchanged_sources(trip, &files).unwrap();
        assert!(again[0].is_some() && again[1].is_none() && again[2].is_none());
        assert!(store.verify(false).unwrap().ok);
    }

    /// The duplicate rules hold for a folder linked into a second album:
    /// under the mobile rule a file whose content the album already holds
    /// (as another file, under another name) is skipped, and a file whose
    /// content the user holds once is linked; under the desktop rule the
    /// other name is no duplicate, and the file is linked.
    #[test]
    fn a_second_album_already_holding_a_files_content_skips_it_under_the_mobile_rule_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let u = store.user("u").unwrap();
        let [camera, trip, desk] = ["Camera", "Trip", "Desk"].map(|a| u.ensure_album(a).unwrap());
        let paths = ["a.jpg", "b.jpg"].map(|p| dir.path().join(p));
        let sources = backed_up(&u, camera, &paths);
        // A second file of a.jpg's content, in Trip and Desk.
        let other = u
            .upload(trip, "other.jpg", Content::from(&[0u8; 10][..]), DedupMode::NameAndHash)
            .unwrap();
        assert_eq!(other.outcome, Outcome::Stored);
        u.add_to_album(other.file_id, desk).unwrap();

        let metas: Vec<Metadata> = paths.iter().map(|p| std::fs::metadata(p).unwrap()).collect();
        let files: Vec<(&Path, &Metadata)> = paths.iter().map(PathBuf::as_path).zip(&metas).collect();
        let outcomes = |album, mode| -> Vec<(FileId, Outcome)> {
            u.link_sources(album, mode, &files)
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap().map(|r| (r.file_id, r.outcome)).unwrap())
                .collect()
        };
        assert_eq!(
            outcomes(trip, DedupMode::Hash),
            [(other.file_id, Outcome::Skipped), (sources[1].2, Outcome::Linked)]
        );
        assert_eq!(
            outcomes(desk, DedupMode::NameAndHash),
            [(sources[0].2, Outcome::Linked), (sources[1].2, Outcome::Linked)]
        );
        assert!(store.verify(false).unwrap().ok);
    }

    #[test]
    fn a_file_modified_just_before_the_scan_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let album = store.user("u").unwrap().ensure_album("A").unwrap();
        let path = dir.path().join("fresh");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let r = store
            .user("u")
            .unwrap()
            .upload(album, "fresh", Content::Path(path.clone()), DedupMode::NameAndHash)
            .unwrap();
        let scan_start = meta.modified().unwrap() + Duration::from_secs(1);
        store
            .user("u")
            .unwrap()
            .record_sources(album, &[(path.clone(), meta.clone(), r.file_id)], scan_start)
            .unwrap();
        assert!(store
            .user("u")
            .unwrap()
            .unchanged_sources(album, &[(&path, &meta)])
            .unwrap()[0]
            .is_none());
    }
}
