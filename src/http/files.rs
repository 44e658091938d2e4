//! Files over HTTP: listing a page at a time, one file's record, its bytes
//! (with conditional and range requests), and the one-shot upload.

use std::str::FromStr;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use super::{blocking, held, AppState, Caller, FileJson, Problem};
use crate::error::UploadError;
use crate::hash::ContentHash;
use crate::ids::FileId;
use crate::ids::UploadId;
use crate::names::FileName;
use crate::store::{
    AlbumInfo, Content, Cursor, DedupMode, FileInfo, FileReader, HashedUpload, Page, SessionOptions, Upload,
    UploadReport, UploadStart, User, MAX_PAGE,
};

/// The page a listing answers without `limit`.
const DEFAULT_LIMIT: usize = 100;
/// An upload's body goes to its session in appends of at most this many
/// bytes (each made durable): what a request holds in memory.
const APPEND_CHUNK: usize = 4 << 20;
/// The album an upload goes to when it names none (created on first use).
pub(crate) const DEFAULT_ALBUM: &str = "Uploads";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files", get(list).put(upload).post(upload))
        .route("/v1/files/{file_id}", get(info))
        .route("/v1/files/{file_id}/content", get(content))
}

#[derive(Deserialize)]
struct ListQuery {
    album: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A page of a listing: `{"files": [...], "next": C}`.
#[derive(Serialize)]
pub(crate) struct ListPage {
    files: Vec<FileJson>,
    /// The cursor of the next page, absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl ListPage {
    /// `page` as JSON, its album ids named from `albums` (the user's).
    pub(crate) fn new(page: &Page<FileInfo>, albums: &[AlbumInfo]) -> ListPage {
        ListPage {
            files: page.items.iter().map(|f| FileJson::new(f, albums)).collect(),
            next: page.next.as_ref().map(|c| c.to_string()),
        }
    }
}

/// Where a page starts and how long it is, from a listing's `cursor` and
/// `limit` parameters (default [`DEFAULT_LIMIT`], at most [`MAX_PAGE`]).
pub(crate) fn page_bounds(cursor: Option<&str>, limit: Option<usize>) -> Result<(Option<Cursor>, usize), Problem> {
    let after = cursor
        .map(Cursor::from_str)
        .transpose()
        .map_err(|e| Problem::bad_request(format!("cursor: {e}")))?;
    Ok((after, limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_PAGE)))
}

async fn list(
    Caller(user): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (after, limit) = page_bounds(q.cursor.as_deref(), q.limit)?;
    let page = blocking(move || {
        let albums = user.albums()?;
        let page = match q.album {
            Some(name) => {
                // Found as the CLI finds it: names compare in NFC.
                let album = user
                    .find_album(&name)?
                    .ok_or(crate::error::LibraryError::UnknownAlbum(name))?
                    .id;
                user.album_files_page(album, after.as_ref(), limit)?
            }
            None => user.files_page(after.as_ref(), limit)?,
        };
        Ok(ListPage::new(&page, &albums))
    })
    .await?;
    Ok(Json(page).into_response())
}

/// A file id from the path: any that does not parse is as unknown as
/// another user's.
pub(crate) fn file_id(raw: &str) -> Result<FileId, Problem> {
    raw.parse::<u64>().map(FileId).map_err(|_| Problem::unknown_file(raw))
}

async fn info(Caller(user): Caller, Path(raw): Path<String>) -> Result<Response, Problem> {
    let id = file_id(&raw)?;
    let file = blocking(move || {
        let f = user.file(id)?;
        Ok(FileJson::new(&f, &user.albums()?))
    })
    .await?;
    Ok(Json(file).into_response())
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, RFC 9110
/// §13.1.2) or is `*`.
fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The one range a `Range` header asks of `len` bytes: `Ok(None)` for no
/// header, or one the server ignores (several ranges, another unit: it
/// then sends the whole, as RFC 9110 §14.2 allows); `Err` for a range
/// that starts past the end (416).
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return Ok(None);
    };
    match parsed.validate(len) {
        Ok(ranges) if ranges.len() == 1 => Ok(Some((*ranges[0].start(), *ranges[0].end()))),
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => Err(()),
        // Several ranges, overlapping ones: the whole file.
        Ok(_) | Err(_) => Ok(None),
    }
}

async fn content(
    Caller(user): Caller,
    method: Method,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, Problem> {
    let id = file_id(&raw)?;
    let head = method == Method::HEAD;
    // The record first: a conditional request or a HEAD needs no bytes.
    let (user, file) = blocking(move || {
        let f = user.file(id)?;
        Ok((user, f))
    })
    .await?;
    let etag = format!("\"{}\"", file.hash);
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, value(&etag));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Private: the bytes are the user's; immutable: the URL's bytes never
    // change (a file's content is fixed at upload).
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    let mime = file
        .name
        .to_str()
        .and_then(|n| mime_guess::from_path(n).first_raw())
        .unwrap_or("application/octet-stream");
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // A user's file is never a page of this origin: no sniffing, and
    // anything but a picture, a video or a sound is a download, sandboxed
    // (an .html or .svg in a backup must not run script here).
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !["image/", "video/", "audio/"].iter().any(|m| mime.starts_with(m)) || mime == "image/svg+xml" {
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
        out.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if none_match(inm, &etag) {
            return Ok((StatusCode::NOT_MODIFIED, out).into_response());
        }
    }
    // If-Range with an entity tag: the range only if it is still this
    // content (strong comparison); a date is never a match here.
    let if_range_holds = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v == etag));
    // Range is defined for GET only (RFC 9110 §14.2): a HEAD ignores it.
    let wanted = if if_range_holds && !head {
        range(&headers, file.size)
    } else {
        Ok(None)
    };
    let (status, start, end) = match wanted {
        Ok(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Ok(None) => (StatusCode::OK, 0, file.size),
        Err(()) => {
            return Err(Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the file has {} bytes", file.size),
            )
            .with_header(header::CONTENT_RANGE, value(&format!("bytes */{}", file.size))))
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        out.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{}", end - 1, file.size)),
        );
    }
    out.insert(header::CONTENT_LENGTH, value(&(end - start).to_string()));
    if head {
        return Ok((status, out).into_response());
    }
    let reader = blocking(move || Ok(user.open_file(id)?)).await?;
    if reader.len() != file.size {
        return Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity-error",
            format!("file {id}: its bytes are not the size its record says"),
        ));
    }
    // The first window is checked before the status goes out, so that a
    // damaged start is an error answer; a later window that fails its
    // check ends the body short of its Content-Length, which every client
    // takes for a failed transfer. No unchecked byte is sent either way.
    let (reader, first) = next_window(reader, start, end).await?;
    let body = futures_util::stream::unfold(
        (Some(reader), start + first.len() as u64, Some(first)),
        move |(reader, at, ready)| async move {
            if let Some(bytes) = ready {
                return Some((Ok(bytes), (reader, at, None)));
            }
            let reader = reader.filter(|_| at < end)?;
            match next_window(reader, at, end).await {
                Ok((reader, bytes)) => {
                    let next = at + bytes.len() as u64;
                    Some((Ok(bytes), (Some(reader), next, None)))
                }
                Err(problem) => {
                    let e = std::io::Error::other(problem.detail().to_string());
                    Some((Err(e), (None, at, None)))
                }
            }
        },
    );
    Ok((status, out, Body::from_stream(body)).into_response())
}

/// How much of a download is checked and sent at a time: a video player's
/// range is served as it is read, and no more than this is checked ahead
/// of what the client took.
const WINDOW: u64 = 1 << 20;

/// The next checked window of `reader` from `at`, up to `end`.
async fn next_window(mut reader: FileReader, at: u64, end: u64) -> Result<(FileReader, Bytes), Problem> {
    blocking(move || {
        let bytes = reader.range(at..end.min(at + WINDOW))?;
        Ok((reader, bytes))
    })
    .await
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers a one-shot upload takes.
const ALBUM: HeaderName = HeaderName::from_static("keepsake-album");
const NAME: HeaderName = HeaderName::from_static("keepsake-name");
const MODE: HeaderName = HeaderName::from_static("keepsake-mode");
const BLAKE3: HeaderName = HeaderName::from_static("keepsake-blake3");
/// The headers a completed upload answers with.
pub(crate) const OUTCOME: HeaderName = HeaderName::from_static("keepsake-outcome");
pub(crate) const FILE_ID: HeaderName = HeaderName::from_static("keepsake-file-id");

/// A header's text, percent-decoded (RFC 3986 §2.1) to bytes: how a name
/// that is not ASCII, or not even UTF-8, travels in a header.
fn decoded(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    headers
        .get(name)
        .map(|v| percent_encoding::percent_decode(v.as_bytes()).collect())
}

/// The duplicate rule an upload names: `hash` (same content is a
/// duplicate, Ente's mobile rule) or `name-hash` (same name and content,
/// the desktop rule, and the default).
pub(crate) fn mode(raw: Option<&[u8]>) -> Result<DedupMode, Problem> {
    match raw {
        None | Some(b"name-hash") => Ok(DedupMode::NameAndHash),
        Some(b"hash") => Ok(DedupMode::Hash),
        Some(other) => Err(Problem::bad_request(format!(
            "mode {:?}: it is hash or name-hash",
            String::from_utf8_lossy(other)
        ))),
    }
}

pub(crate) fn blake3_hex(raw: &[u8]) -> Result<ContentHash, Problem> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Problem::bad_request("blake3: 64 hexadecimal digits"))
}

/// `name` as a file name, refused before anything (an album) is created
/// for an upload that cannot be.
pub(crate) fn checked_name(name: impl Into<FileName>) -> Result<FileName, Problem> {
    let name = name.into();
    crate::names::check_file_name(&name)?;
    Ok(name)
}

/// What an upload into `album` (by name, or the default) does before its
/// held body is read. With a declared hash, the duplicate rules may
/// complete it without the body: linked into the album, which is made for
/// that, and the report returned. Without one, the album is made only once
/// the body is whole and stored, so that a body that breaks off leaves
/// none behind; its name is refused now if it could not be made.
pub(crate) fn before_held(
    user: &User,
    album: Option<&str>,
    name: &FileName,
    expected: Option<ContentHash>,
    mode: DedupMode,
) -> Result<Option<UploadReport>, Problem> {
    if let Some(hash) = expected {
        return linked(user, album_for(user, album)?, name, hash, mode);
    }
    let album = album.unwrap_or(DEFAULT_ALBUM);
    if user.find_album(album)?.is_none() {
        crate::names::check_album_name(album)?;
    }
    Ok(None)
}

/// The album an upload names (by name), or the default one; created if
/// the user has none of that name.
pub(crate) fn album_for(user: &User, name: Option<&str>) -> Result<crate::ids::AlbumId, Problem> {
    Ok(user.ensure_album(name.unwrap_or(DEFAULT_ALBUM))?)
}

/// The headers that name a completed upload's outcome and file.
pub(crate) fn completed_headers(report: &UploadReport) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(OUTCOME, value(&report.outcome.to_string()));
    h.insert(FILE_ID, HeaderValue::from(report.file_id.0));
    h
}

/// The answer to a completed one-shot upload: its report as JSON, the
/// outcome and the file id as headers; 201 when the content was stored,
/// else 200.
fn completed(report: &UploadReport) -> Response {
    let status = if report.outcome == crate::store::Outcome::Stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut r = (status, completed_headers(report), Json(report)).into_response();
    r.headers_mut()
        .insert(header::LOCATION, value(&format!("/v1/files/{}", report.file_id)));
    r
}

/// A digest the client sent for a request's body (tus's `Upload-Checksum`).
pub(crate) enum Checksum {
    /// SHA-1, which tus's checksum extension requires servers to support.
    Sha1(Vec<u8>),
    /// BLAKE3 (32 bytes).
    Blake3(Vec<u8>),
}

impl Checksum {
    /// Whether the bytes of `parts`, one after another, have this digest;
    /// if not, the 460 that tus's checksum extension answers.
    pub(crate) fn check<B: AsRef<[u8]>>(&self, parts: &[B]) -> Result<(), Problem> {
        let matches = match self {
            Checksum::Sha1(d) => {
                let mut h = sha1::Sha1::new();
                for p in parts {
                    h.update(p.as_ref());
                }
                h.finalize().as_slice() == d.as_slice()
            }
            Checksum::Blake3(d) => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p.as_ref());
                }
                h.finalize().as_bytes().as_slice() == d.as_slice()
            }
        };
        if matches {
            return Ok(());
        }
        Err(Problem::new(
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum-mismatch",
            "the body does not match its Upload-Checksum; nothing of it was kept",
        ))
    }
}

/// A body with a checksum is checked before any of it is appended, so it
/// is held whole (in a held body's slot, which the caller takes): at most
/// this many bytes (clients that checksum send chunks).
const CHECKSUMMED_MAX: usize = held::HELD as usize;

/// Appends `body` to session `id` from `offset`, in durable appends of
/// [`APPEND_CHUNK`] bytes as it arrives, and returns the session's new
/// offset. If the body breaks off (the client went away), what had arrived
/// is appended first, so a resumed upload sends only the rest. With a
/// `checksum`, the body is held (at most [`CHECKSUMMED_MAX`] bytes) and
/// appended only if it matches: 460 otherwise, nothing appended.
pub(crate) async fn append_body(
    user: &User,
    id: UploadId,
    mut offset: u64,
    body: Body,
    checksum: Option<Checksum>,
) -> Result<u64, Problem> {
    let limit = if checksum.is_some() {
        CHECKSUMMED_MAX
    } else {
        APPEND_CHUNK
    };
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let next = stream.next().await;
        let (end, broken) = match next {
            None => (true, None),
            Some(Err(e)) => (true, Some(Problem::bad_request(format!("reading the body: {e}")))),
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                (false, None)
            }
        };
        if buf.len() > limit && checksum.is_some() {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "checksummed-body-too-large",
                format!("a body with Upload-Checksum may carry at most {CHECKSUMMED_MAX} bytes; send smaller chunks"),
            ));
        }
        let full = checksum.is_none() && buf.len() >= APPEND_CHUNK;
        if full || (end && !buf.is_empty()) {
            if let (Some(c), None) = (&checksum, &broken) {
                c.check(&[&buf])?;
            }
            // A broken body with a checksum cannot be checked: dropped.
            if checksum.is_none() || broken.is_none() {
                let (u, data) = (user.clone(), std::mem::take(&mut buf));
                offset = blocking(move || Ok(u.append(id, offset, &data)?)).await?;
            }
        }
        if let Some(p) = broken {
            return Err(p);
        }
        if end {
            return Ok(offset);
        }
    }
}

/// `PUT` or `POST /v1/files`: the body is the file. A body of at most
/// [`HELD`](held::HELD) bytes by its `Content-Length` is held whole
/// ([`held`]) if a slot is free, and uploaded through the same ingest as
/// `keepsake backup`: written once, synced and committed beside other
/// requests' uploads. Any other body goes to an upload session as it arrives (4 MiB
/// per durable append, so a request holds at most that): the session
/// reserves the user's quota and the store's staging room for its declared
/// length before a byte is staged, or for each piece of an unsized body as
/// it comes, and is aborted if the upload fails or the request is dropped.
/// With `Keepsake-Blake3`, a content the duplicate rules skip or link is
/// completed before a byte of the body is read.
async fn upload(
    Caller(user): Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let name = decoded(&headers, &NAME).ok_or_else(|| Problem::bad_request("Keepsake-Name is required"))?;
    let name = checked_name(name)?;
    let album = decoded(&headers, &ALBUM)
        .map(|a| String::from_utf8(a).map_err(|_| Problem::bad_request("Keepsake-Album: not UTF-8")))
        .transpose()?;
    let mode = mode(decoded(&headers, &MODE).as_deref())?;
    let expected = decoded(&headers, &BLAKE3).map(|h| blake3_hex(&h)).transpose()?;
    let length = held::content_length(&headers);
    let held = held::Slots::take_for(&state.held, user.name(), held::fits(length));
    let (user, start) = blocking(move || {
        let start = match held {
            Some((len, slot)) => match before_held(&user, album.as_deref(), &name, expected, mode)? {
                Some(report) => Start::Done(report),
                None => Start::Held { album, name, len, slot },
            },
            None => match user.begin_upload(SessionOptions {
                length,
                expected_hash: expected,
                ..SessionOptions::new(album_for(&user, album.as_deref())?, name, mode)
            })? {
                UploadStart::Done(report) => Start::Done(report),
                UploadStart::Session(id) => Start::Session(id),
            },
        };
        Ok((user, start))
    })
    .await?;
    let id = match start {
        Start::Done(report) => return Ok(completed(&report)),
        Start::Held { album, name, len, slot } => {
            let held = held::read(slot, len, body).await.map_err(|b| b.nothing_stored())?;
            let report = held
                .store(move |parts| {
                    let upload = Upload::new(album_for(&user, album.as_deref())?, name, Content::Parts(parts), mode);
                    store_held(&user, upload, expected)
                })
                .await?;
            return Ok(completed(&report));
        }
        Start::Session(id) => id,
    };
    // A one-shot upload is not resumed: unless it finishes, its session
    // goes, whether it failed or the request was dropped mid-body (the
    // client went away, an embedder's timeout fired).
    let guard = AbortOnDrop(Some((user.clone(), id)));
    append_body(&user, id, 0, body, None).await?;
    let report = blocking(move || Ok(user.finish(id)?)).await;
    if report.is_ok() {
        guard.disarm();
    }
    Ok(completed(&report?))
}

/// How a one-shot upload goes on once its headers are read.
enum Start {
    /// Its declared hash was skipped or linked: no body needed.
    Done(UploadReport),
    /// Read whole (`len` bytes, at most [`HELD`](held::HELD)) in `slot`,
    /// then uploaded as bytes into `album` (by name: the default if none).
    Held {
        album: Option<String>,
        name: FileName,
        len: u64,
        slot: held::Slot,
    },
    /// Through this upload session.
    Session(UploadId),
}

/// The report of `hash` completed without bytes by the duplicate rules
/// (skipped, linked, restored), or `None` if the user must send them.
fn linked(
    user: &User,
    album: crate::ids::AlbumId,
    name: &FileName,
    hash: ContentHash,
    mode: DedupMode,
) -> Result<Option<UploadReport>, Problem> {
    let upload = HashedUpload {
        album,
        name: name.clone(),
        hash,
        mode,
    };
    match user.link(&upload) {
        Ok(report) => Ok(Some(report)),
        Err(UploadError::ContentRequired) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Uploads `upload` (a held body's), expecting its content to hash to
/// `expected` if the client declared a hash, through the same ingest as
/// `keepsake backup`.
pub(crate) fn store_held(user: &User, upload: Upload, expected: Option<ContentHash>) -> Result<UploadReport, Problem> {
    let upload = match expected {
        Some(h) => upload.expect_hash(h),
        None => upload,
    };
    let report = user.upload_batch(vec![upload]).pop();
    Ok(report.ok_or_else(|| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "internal error"))??)
}

/// Aborts an upload session when dropped, unless disarmed.
struct AbortOnDrop(Option<(User, UploadId)>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some((user, id)) = self.0.take() {
            // A session already gone (finished, expired) is fine.
            tokio::task::spawn_blocking(move || {
                let _ = user.abort(id);
            });
        }
    }
}
