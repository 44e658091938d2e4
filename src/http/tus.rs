//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) and the IETF
//! "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload,
//! interop versions 3 and 5 to 9) on the store's upload sessions, at the
//! same URLs, told apart by their headers. tus: the core protocol (`HEAD`,
//! `PATCH`, `OPTIONS`) and the extensions creation, creation-with-upload,
//! creation-defer-length, expiration, termination and checksum (`sha1`,
//! which the protocol requires, and `blake3`). The draft: upload creation
//! (answered with the final 201 and `Location`: hyper cannot send the 104
//! interim response, which the draft allows a server to leave out), offset
//! retrieval, append and cancellation, with `Upload-Complete` (and interop
//! version 3's `Upload-Incomplete`).
//!
//! A session is the store's (`User::begin_upload`): its bytes are durable
//! as each append returns, so a client cut off mid-`PATCH` resumes from the
//! `Upload-Offset` a `HEAD` reports, after a server restart too. The
//! whole-file duplicate rules apply when the last byte arrives; the final
//! response names the outcome (`Keepsake-Outcome`, `Keepsake-File-Id`).
//! A request that carries a whole photo-sized upload is held whole
//! ([`held`](super::held)) and stored with one write: a creation then
//! needs no session at all, unless its body breaks off.

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::files::{
    album_for, append_body, before_held, blake3_hex, checked_name, completed_headers, mode, store_held, Checksum,
};
use super::held::{self, Broken};
use super::{blocking, AppState, Caller, Problem};
use crate::ids::{FileId, UploadId};
use crate::names::FileName;
use crate::store::{Content, SessionOptions, Upload, UploadReport, UploadStart, UploadStatus, User};

pub(crate) const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName = HeaderName::from_static("upload-draft-interop-version");
const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
const UPLOAD_INCOMPLETE: HeaderName = HeaderName::from_static("upload-incomplete");

/// The one version spoken.
pub(crate) const VERSION: &str = "1.0.0";
/// The extensions, as `OPTIONS` lists them.
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,termination,checksum";
/// The prefix of the upload URL of an upload finished by its creation,
/// with no session: its content was skipped or linked by a declared hash,
/// or the creation carried it whole. It names the file, and answers
/// `HEAD` and `PATCH` as a finished upload.
const DONE: &str = "done-";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/uploads", post(create).options(options))
        .route(
            "/v1/uploads/{id}",
            axum::routing::head(status)
                .patch(patch)
                .delete(terminate)
                .options(options),
        )
        .route_layer(middleware::map_response(|mut r: Response| async move {
            r.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
            r
        }))
}

/// Which resumable-upload protocol a request speaks: both share the
/// creation URL and the upload URLs, and are told apart by their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// tus 1.0.0 (`Tus-Resumable: 1.0.0`).
    Tus,
    /// The IETF "Resumable Uploads for HTTP" draft, by the interop version
    /// the request sends (`Upload-Draft-Interop-Version`).
    Ietf(u8),
}

/// The draft's interop versions accepted: 3 (iOS 17's URLSession, with
/// `Upload-Incomplete`), 5 (iOS 18.0; tus-js-client's `ietf-draft-03`),
/// 6 (iOS 18.1; tus-js-client's `ietf-draft-05`) and the later ones up to
/// 9, which keep the headers keepsake uses (`Upload-Complete`,
/// `Upload-Offset`, `Upload-Length`) as they were in 6.
fn interop_accepted(v: u8) -> bool {
    v == 3 || (5..=9).contains(&v)
}

/// The request's protocol: 412 for a tus version other than 1.0.0 or an
/// interop version not accepted (every request but `OPTIONS`).
fn protocol(headers: &HeaderMap) -> Result<Protocol, Problem> {
    if let Some(v) = headers.get(UPLOAD_DRAFT_INTEROP_VERSION) {
        return match v.to_str().ok().and_then(|v| v.parse::<u8>().ok()) {
            Some(v) if interop_accepted(v) => Ok(Protocol::Ietf(v)),
            _ => Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "unsupported-version",
                "this server speaks the resumable-upload draft's interop versions 3 and 5 to 9",
            )),
        };
    }
    match headers.get(TUS_RESUMABLE).map(HeaderValue::as_bytes) {
        Some(b"1.0.0") => Ok(Protocol::Tus),
        _ => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported-version",
            "this server speaks tus 1.0.0: send Tus-Resumable: 1.0.0",
        )
        .with_header(TUS_VERSION, HeaderValue::from_static(VERSION))),
    }
}

/// A structured-field boolean (RFC 8941): `?1` or `?0`.
fn flag(headers: &HeaderMap, name: &HeaderName) -> Result<Option<bool>, Problem> {
    match headers.get(name).map(HeaderValue::as_bytes) {
        None => Ok(None),
        Some(b"?1") => Ok(Some(true)),
        Some(b"?0") => Ok(Some(false)),
        Some(_) => Err(Problem::bad_request(format!("{name}: ?1 or ?0"))),
    }
}

/// When a request that appends finishes the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// tus: once the declared length has arrived.
    AtLength,
    /// The draft's `Upload-Complete: ?1`: with this request's bytes, its
    /// length becoming the upload's if none was declared.
    Now,
    /// The draft's `Upload-Complete: ?0`: more is coming.
    Later,
}

impl Protocol {
    /// When this request's bytes finish the upload.
    fn finish(self, headers: &HeaderMap) -> Result<Finish, Problem> {
        let complete = match self {
            Protocol::Tus => return Ok(Finish::AtLength),
            // Interop 3 marks only the incomplete: no header, complete.
            Protocol::Ietf(3) => !flag(headers, &UPLOAD_INCOMPLETE)?.unwrap_or(false),
            Protocol::Ietf(_) => flag(headers, &UPLOAD_COMPLETE)?
                .ok_or_else(|| Problem::bad_request("Upload-Complete: ?1 or ?0 is required"))?,
        };
        Ok(if complete { Finish::Now } else { Finish::Later })
    }

    /// The header that says an upload is complete (`?1`) or not (`?0`).
    fn completion(self, complete: bool) -> Option<(HeaderName, HeaderValue)> {
        let v = |b: bool| HeaderValue::from_static(if b { "?1" } else { "?0" });
        match self {
            Protocol::Tus => None,
            Protocol::Ietf(3) => Some((UPLOAD_INCOMPLETE, v(!complete))),
            Protocol::Ietf(_) => Some((UPLOAD_COMPLETE, v(complete))),
        }
    }
}

async fn options() -> Response {
    let mut h = HeaderMap::new();
    h.insert(TUS_VERSION, HeaderValue::from_static(VERSION));
    h.insert(TUS_EXTENSION, HeaderValue::from_static(EXTENSIONS));
    h.insert(TUS_CHECKSUM_ALGORITHM, HeaderValue::from_static("sha1,blake3"));
    (StatusCode::NO_CONTENT, h).into_response()
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, Problem> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Problem::bad_request(format!("{name}: a non-negative integer")))
        })
        .transpose()
}

/// `Upload-Metadata`: comma-separated `key` or `key base64(value)` pairs.
fn metadata(headers: &HeaderMap) -> Result<BTreeMap<String, Vec<u8>>, Problem> {
    let mut out = BTreeMap::new();
    let Some(raw) = headers.get(UPLOAD_METADATA) else {
        return Ok(out);
    };
    let raw = raw
        .to_str()
        .map_err(|_| Problem::bad_request("Upload-Metadata: not ASCII"))?;
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| Problem::bad_request(format!("Upload-Metadata {key}: not base64")))?;
        if out.insert(key.to_string(), value).is_some() {
            return Err(Problem::bad_request(format!("Upload-Metadata: {key} twice")));
        }
    }
    Ok(out)
}

fn upload_checksum(headers: &HeaderMap) -> Result<Option<Checksum>, Problem> {
    let Some(raw) = headers.get(UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let bad = || Problem::bad_request("Upload-Checksum: ALGORITHM BASE64DIGEST, with sha1 or blake3");
    let (algorithm, digest) = raw.to_str().ok().and_then(|r| r.split_once(' ')).ok_or_else(bad)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .map_err(|_| bad())?;
    match algorithm {
        "sha1" => Ok(Some(Checksum::Sha1(digest))),
        "blake3" => Ok(Some(Checksum::Blake3(digest))),
        _ => Err(bad()),
    }
}

fn expires(status: &UploadStatus) -> HeaderValue {
    // An HTTP date ends at year 9999 (and `httpdate` panics past it): a
    // store whose sessions never expire says so as that date.
    const LAST_HTTP_DATE_MS: u64 = 253_402_300_799_000;
    let at = UNIX_EPOCH + Duration::from_millis(status.expires_ms.min(LAST_HTTP_DATE_MS));
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn num(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// The upload URL of `id` beside the creation URL the client used, so
/// that it is right wherever the router is mounted.
fn location(uri: &OriginalUri, id: &str) -> HeaderValue {
    let base = uri.path().trim_end_matches('/');
    HeaderValue::from_str(&format!("{base}/{id}")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The length of a body that carries a whole upload of `length` bytes
/// (`None`: not declared yet), finishing it by `when`, if it is small
/// enough to hold whole ([`held`]).
fn whole(headers: &HeaderMap, length: Option<u64>, when: Finish) -> Option<u64> {
    let n = held::fits(held::content_length(headers))?;
    let finishes = match when {
        Finish::AtLength => length == Some(n),
        Finish::Now => length.is_none_or(|l| l == n),
        Finish::Later => false,
    };
    finishes.then_some(n)
}

/// How a creation goes on once its headers are read.
enum Begun {
    /// No bytes needed: the duplicate rules skipped or linked the declared
    /// hash.
    Done(UploadReport),
    /// The body is the whole upload (this many bytes), held whole in this
    /// slot: no session unless it breaks off.
    Whole(Creation, u64, held::Slot),
    /// Through this session.
    Session(UploadId),
}

/// What a creation asks for, before it is known whether the upload needs
/// a session: its album by name, made only once something is stored in
/// it (a body that breaks off before the end makes it for its session).
struct Creation {
    album: Option<String>,
    name: FileName,
    mode: crate::store::DedupMode,
    length: Option<u64>,
    expected_hash: Option<crate::hash::ContentHash>,
    metadata: BTreeMap<String, String>,
}

impl Creation {
    /// The session these ask for, in `album`.
    fn options(self, album: crate::ids::AlbumId) -> SessionOptions {
        SessionOptions {
            length: self.length,
            expected_hash: self.expected_hash,
            metadata: self.metadata,
            ..SessionOptions::new(album, self.name, self.mode)
        }
    }

    /// These, refused as `User::begin_upload` would refuse them (the name,
    /// the metadata) before anything is made: the answer does not depend on
    /// whether a slot was free to hold the body, and a refused creation
    /// leaves no album behind.
    fn checked(self) -> Result<Creation, Problem> {
        let options = SessionOptions {
            metadata: self.metadata,
            ..SessionOptions::new(crate::ids::AlbumId(0), self.name, self.mode)
        };
        options.check()?;
        Ok(Creation {
            name: options.name,
            metadata: options.metadata,
            ..self
        })
    }
}

/// The answer to a creation whose upload is finished: 201 with the
/// outcome, and an upload URL that names the file and answers as a
/// finished upload.
fn created_done(uri: &OriginalUri, proto: Protocol, report: &UploadReport) -> Response {
    let mut r = (StatusCode::CREATED, completed_headers(report)).into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, location(uri, &format!("{DONE}{}", report.file_id)));
    h.insert(UPLOAD_OFFSET, num(report.size));
    h.extend(proto.completion(true));
    r
}

/// What a body that broke off leaves: the bytes that arrived appended to
/// session `id` from offset 0 (unless a checksum covered the whole body,
/// which they cannot be checked against), so that the client resumes from
/// there; and the answer that says why.
async fn keep_arrived(user: &User, id: UploadId, broken: Broken, checksum: Option<&Checksum>) -> Problem {
    let why = broken.why.clone();
    if checksum.is_none() && !broken.arrived.is_empty() {
        let u = user.clone();
        if let Err(p) = blocking(move || Ok(u.append(id, 0, &broken.arrived)?)).await {
            return p;
        }
    }
    Problem::bad_request(why)
}

/// `POST /v1/uploads`: creation, with the body as the first bytes
/// (creation-with-upload) or without. A body that is the whole upload and
/// at most 16 MiB is read whole and stored as a one-shot upload is, with
/// no session, so its bytes are written once; only if it breaks off is a
/// session made, with what arrived, for the client to resume.
async fn create(
    Caller(user): Caller,
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let proto = protocol(&headers)?;
    let length = number(&headers, &UPLOAD_LENGTH)?;
    let deferred = headers.get(UPLOAD_DEFER_LENGTH).map(HeaderValue::as_bytes) == Some(b"1");
    if length.is_some() && deferred {
        return Err(Problem::bad_request(
            "Upload-Length and Upload-Defer-Length: 1 together: send one",
        ));
    }
    // The draft's creation may leave the length to the last request.
    if proto == Protocol::Tus && length.is_none() && !deferred {
        return Err(Problem::bad_request(
            "Upload-Length or Upload-Defer-Length: 1 is required",
        ));
    }
    let mut meta = metadata(&headers)?;
    let album = meta
        .remove("album")
        .map(|a| String::from_utf8(a).map_err(|_| Problem::bad_request("album: not UTF-8")))
        .transpose()?;
    let mode = mode(meta.remove("mode").as_deref())?;
    let expected_hash = meta.remove("blake3").map(|h| blake3_hex(&h)).transpose()?;
    let name = match meta.remove("filename") {
        Some(n) => checked_name(n)?,
        None => FileName::from(format!("upload-{}", random_hex()?)),
    };
    // What the client sent besides is kept for it, where it is text.
    let kept: BTreeMap<String, String> = meta
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v).ok().map(|v| (k, v)))
        .collect();
    // A draft creation always carries the upload's first bytes (perhaps
    // none); a tus one only with creation-with-upload's content type.
    let with_body = proto != Protocol::Tus
        || headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) == Some(b"application/offset+octet-stream");
    let finish_when = proto.finish(&headers)?;
    let checksum = upload_checksum(&headers)?;
    let whole = held::Slots::take_for(
        &state.held,
        user.name(),
        whole(&headers, length, finish_when).filter(|_| with_body),
    );
    let (user, begun) = blocking(move || {
        let creation = Creation {
            album,
            name,
            mode,
            length,
            expected_hash,
            metadata: kept,
        }
        .checked()?;
        let begun = match whole {
            Some((n, slot)) => {
                match before_held(&user, creation.album.as_deref(), &creation.name, expected_hash, mode)? {
                    Some(report) => Begun::Done(report),
                    None => Begun::Whole(creation, n, slot),
                }
            }
            None => {
                let album = album_for(&user, creation.album.as_deref())?;
                match user.begin_upload(creation.options(album))? {
                    UploadStart::Done(report) => Begun::Done(report),
                    UploadStart::Session(id) => Begun::Session(id),
                }
            }
        };
        Ok((user, begun))
    })
    .await?;
    let id = match begun {
        Begun::Done(report) => return Ok(created_done(&uri, proto, &report)),
        Begun::Whole(creation, n, slot) => {
            let broken = match held::read(slot, n, body).await {
                Ok(held) => {
                    if let Some(c) = &checksum {
                        c.check(held.parts())?;
                    }
                    let report = held
                        .store(move |parts| {
                            let album = album_for(&user, creation.album.as_deref())?;
                            let upload = Upload::new(album, creation.name, Content::Parts(parts), mode);
                            store_held(&user, upload, creation.expected_hash)
                        })
                        .await?;
                    return Ok(created_done(&uri, proto, &report));
                }
                Err(broken) => broken,
            };
            // Only now is a session made: for the client to resume what
            // arrived instead of sending it all again.
            let u = user.clone();
            let begun = blocking(move || {
                let album = album_for(&u, creation.album.as_deref())?;
                Ok(u.begin_upload(creation.options(album))?)
            })
            .await?;
            let id = match begun {
                UploadStart::Session(id) => id,
                // The same content arrived meanwhile by another way.
                UploadStart::Done(report) => return Ok(created_done(&uri, proto, &report)),
            };
            let problem = keep_arrived(&user, id, broken, checksum.as_ref()).await;
            return Err(problem.with_header(header::LOCATION, location(&uri, &id.to_string())));
        }
        Begun::Session(id) => id,
    };
    let at = location(&uri, &id.to_string());
    // From here on the session exists: an error answer names it too, so
    // that a client whose body broke off resumes (HEAD) instead of
    // beginning again and leaving the session to expire.
    let resumable = |p: Problem| p.with_header(header::LOCATION, at.clone());
    let mut out = HeaderMap::new();
    out.insert(header::LOCATION, at.clone());
    if with_body {
        let (offset, finished) = append_and_finish(&state, &user, id, 0, body, checksum, finish_when)
            .await
            .map_err(resumable)?;
        // Finished by its creation: the session is gone, so the URL given
        // is the one that answers as a finished upload, as a held
        // creation's is.
        if let Some(report) = finished {
            return Ok(created_done(&uri, proto, &report));
        }
        out.insert(UPLOAD_OFFSET, num(offset));
        out.extend(proto.completion(false));
    } else if length == Some(0) {
        let report = finish(&user, id).await.map_err(resumable)?;
        return Ok(created_done(&uri, proto, &report));
    }
    if let Ok(s) = status_of(&user, id).await {
        out.insert(UPLOAD_EXPIRES, expires(&s));
    }
    Ok((StatusCode::CREATED, out).into_response())
}

fn random_hex() -> Result<String, Problem> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| {
        eprintln!("keepsake: drawing an upload name: {e}");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "internal error")
    })?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where session `id` stands (`User::upload_status`), off the runtime.
async fn status_of(user: &User, id: UploadId) -> Result<UploadStatus, Problem> {
    let u = user.clone();
    blocking(move || Ok(u.upload_status(id)?)).await
}

async fn finish(user: &User, id: UploadId) -> Result<UploadReport, Problem> {
    let u = user.clone();
    blocking(move || Ok(u.finish(id)?)).await
}

/// Appends `body` at `offset` and finishes the upload when `when` says.
/// The offset answered is the session's durable one. A body with a
/// `checksum` is held whole to be checked, so it takes a held body's slot.
async fn append_and_finish(
    state: &AppState,
    user: &User,
    id: UploadId,
    offset: u64,
    body: Body,
    checksum: Option<Checksum>,
    when: Finish,
) -> Result<(u64, Option<UploadReport>), Problem> {
    let _slot = match checksum {
        Some(_) => Some(held::Slots::needed(&state.held, user.name())?),
        None => None,
    };
    let offset = append_body(user, id, offset, body, checksum).await?;
    let finishes = match when {
        Finish::Later => false,
        Finish::AtLength => status_of(user, id).await?.declared_length == Some(offset),
        Finish::Now => {
            let u = user.clone();
            blocking(move || {
                if u.upload_status(id)?.declared_length.is_none() {
                    u.set_upload_length(id, offset)?;
                }
                Ok(())
            })
            .await?;
            true
        }
    };
    if finishes {
        return Ok((offset, Some(finish(user, id).await?)));
    }
    Ok((offset, None))
}

/// An upload URL's id: a session, or an upload finished by its creation.
/// Anything else is as unknown as another user's session.
enum Target {
    Session(UploadId),
    Done(FileId),
}

fn target(raw: &str) -> Result<Target, Problem> {
    let unknown = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-upload",
            format!("no upload session {raw}"),
        )
    };
    if let Some(file) = raw.strip_prefix(DONE) {
        // One spelling per file: no sign, no leading zeros.
        return match file.parse::<u64>() {
            Ok(f) if f.to_string() == file => Ok(Target::Done(FileId(f))),
            _ => Err(unknown()),
        };
    }
    raw.parse().map(Target::Session).map_err(|_| unknown())
}

/// The answers for an upload finished by its creation: its length as
/// offset and length, if the file is the caller's.
async fn done(user: User, file: FileId, raw: String) -> Result<HeaderMap, Problem> {
    let f = blocking(move || {
        user.file(file).map_err(|_| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-upload",
                format!("no upload session {raw}"),
            )
        })
    })
    .await?;
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, num(f.size));
    h.insert(UPLOAD_LENGTH, num(f.size));
    Ok(h)
}

/// `HEAD`: where to resume.
async fn status(Caller(user): Caller, headers: HeaderMap, Path(raw): Path<String>) -> Result<Response, Problem> {
    let proto = protocol(&headers)?;
    let mut h = match target(&raw)? {
        Target::Done(file) => {
            let mut h = done(user, file, raw).await?;
            h.extend(proto.completion(true));
            h
        }
        Target::Session(id) => {
            let s = status_of(&user, id).await?;
            let mut h = HeaderMap::new();
            if proto == Protocol::Tus && s.complete {
                // Every byte arrived, but the upload was never finished
                // (its last response was lost with the connection, or
                // finishing failed): a tus client takes offset == length
                // for success, so finish it now, or say why it cannot be.
                let report = finish(&user, id).await?;
                h.insert(UPLOAD_OFFSET, num(report.size));
                h.insert(UPLOAD_LENGTH, num(report.size));
                h.extend(completed_headers(&report));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Ok((StatusCode::OK, h).into_response());
            }
            h.insert(UPLOAD_OFFSET, num(s.offset));
            match s.declared_length {
                Some(len) => h.insert(UPLOAD_LENGTH, num(len)),
                None => h.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1")),
            };
            h.insert(UPLOAD_EXPIRES, expires(&s));
            h.extend(proto.completion(false));
            h
        }
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::OK, h).into_response())
}

/// A `PATCH` whose body (`n` bytes) is the whole upload of session `id`,
/// which has received nothing yet: held whole, then stored straight from
/// memory (`User::finish_whole`); if it breaks off, what arrived is
/// appended instead.
async fn patch_whole(
    slot: held::Slot,
    user: User,
    proto: Protocol,
    id: UploadId,
    n: u64,
    body: Body,
    checksum: Option<Checksum>,
) -> Result<Response, Problem> {
    let held = match held::read(slot, n, body).await {
        Ok(held) => held,
        Err(broken) => return Err(keep_arrived(&user, id, broken, checksum.as_ref()).await),
    };
    if let Some(c) = &checksum {
        c.check(held.parts())?;
    }
    let report = held.store(move |parts| Ok(user.finish_whole(id, parts)?)).await?;
    let mut h = completed_headers(&report);
    h.insert(UPLOAD_OFFSET, num(n));
    h.extend(proto.completion(true));
    Ok((StatusCode::NO_CONTENT, h).into_response())
}

/// `PATCH`: the next bytes, at the offset the client says. A body that is
/// the whole upload and at most 16 MiB is held whole and stored with one
/// write ([`patch_whole`]).
async fn patch(
    Caller(user): Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Body,
) -> Result<Response, Problem> {
    let proto = protocol(&headers)?;
    // The draft's PATCH may carry `application/partial-upload` (interop
    // 6 on) or no type; tus insists on its own.
    let tus_type =
        headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) == Some(b"application/offset+octet-stream");
    if proto == Protocol::Tus && !tus_type {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "a PATCH carries Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = number(&headers, &UPLOAD_OFFSET)?.ok_or_else(|| Problem::bad_request("Upload-Offset is required"))?;
    let id = match target(&raw)? {
        // Finished already: whatever the bytes, the answer is the upload
        // complete at its length. tus-js-client PATCHes from offset 0
        // after every creation that carried no body, without reading the
        // creation's `Upload-Offset`: a 409 here would fail an upload the
        // duplicate rules had completed. Its bytes are not needed.
        Target::Done(file) => {
            let mut h = done(user, file, raw).await?;
            h.extend(proto.completion(true));
            return Ok((StatusCode::NO_CONTENT, h).into_response());
        }
        Target::Session(id) => id,
    };
    if let Some(length) = number(&headers, &UPLOAD_LENGTH)? {
        // Refused before the length is set: a request refused for its
        // bytes must not leave its length declared.
        if held::content_length(&headers).is_some_and(|n| offset.saturating_add(n) > length) {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "length-exceeded",
                format!("the body runs past the Upload-Length of {length}"),
            ));
        }
        let u = user.clone();
        blocking(move || Ok(u.set_upload_length(id, length)?)).await?;
    }
    let checksum = upload_checksum(&headers)?;
    let finish_when = proto.finish(&headers)?;
    if offset == 0 && held::fits(held::content_length(&headers)).is_some() {
        let s = status_of(&user, id).await?;
        let whole = whole(&headers, s.declared_length, finish_when).filter(|_| s.offset == 0);
        if let Some((n, slot)) = held::Slots::take_for(&state.held, user.name(), whole) {
            return patch_whole(slot, user, proto, id, n, body, checksum).await;
        }
    }
    let (offset, finished) = append_and_finish(&state, &user, id, offset, body, checksum, finish_when).await?;
    let mut h = HeaderMap::new();
    h.insert(UPLOAD_OFFSET, num(offset));
    h.extend(proto.completion(finished.is_some()));
    match finished {
        Some(report) => h.extend(completed_headers(&report)),
        None => {
            if let Ok(s) = status_of(&user, id).await {
                h.insert(UPLOAD_EXPIRES, expires(&s));
            }
        }
    }
    Ok((StatusCode::NO_CONTENT, h).into_response())
}

/// `DELETE` (termination): the session and its bytes go.
async fn terminate(Caller(user): Caller, headers: HeaderMap, Path(raw): Path<String>) -> Result<Response, Problem> {
    protocol(&headers)?;
    match target(&raw)? {
        Target::Done(file) => {
            done(user, file, raw).await?;
        }
        Target::Session(id) => blocking(move || Ok(user.abort(id)?)).await?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
