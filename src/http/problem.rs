//! Errors as HTTP answers: `application/problem+json` (RFC 9457), one
//! stable `type` per kind of error, the library's (and so the CLI's)
//! wording as the `detail`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{LibraryError, NameError, ReadError, SessionError, StorageError, UploadError};

/// The prefix of every problem `type` keepsake answers with: a `tag:` URI
/// (RFC 4151), which RFC 9457 §3.1.1 suggests for types that need not
/// resolve. The kinds after it are stable; clients match on them.
pub const PROBLEM_TYPE_PREFIX: &str = "tag:keepsake,2026:problem/";

/// An error answer: its status, a stable kind and a sentence for people.
///
/// Its body is the RFC 9457 object `{"type", "title", "status",
/// "detail"}` with `Content-Type: application/problem+json`. A failure of
/// the store itself (a disk, the metadata database) is answered 500 or 503
/// without its detail, which names server paths; the server's log has it.
///
/// ```
/// use axum::http::StatusCode;
/// use keepsake::http::Problem;
/// let p = Problem::new(StatusCode::NOT_FOUND, "unknown-file", "no file 7");
/// assert_eq!(p.status(), StatusCode::NOT_FOUND);
/// assert_eq!(p.kind(), "unknown-file");
/// ```
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    /// Headers the answer carries besides (tus's `Upload-Offset` on a 409).
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem of `kind` (the part of the `type` after
    /// [`PROBLEM_TYPE_PREFIX`]) answered with `status`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// The same problem, its answer carrying `name: value` too.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable kind: `unknown-file`, `quota-exceeded`, ...
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The sentence for people.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// 400, for a request that is malformed (a header, a query, a body).
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 404 for a file id: the same answer whether the id is malformed,
    /// missing, or another user's.
    pub(crate) fn unknown_file(id: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "unknown-file", format!("no file {id}"))
    }

    /// 500 or 503 for a failure of the store. The cause goes to the
    /// server's standard error, not to the client: it names paths.
    fn storage(e: &StorageError) -> Problem {
        eprintln!("keepsake: storage failure: {e}");
        match e {
            StorageError::Poisoned(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-poisoned",
                "the store refuses writes after an earlier failure; the server must reopen it",
            ),
            StorageError::Contended(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contended",
                "the operation lost a race with others; nothing was written, try again",
            ),
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage-failure",
                "the store failed; nothing of this request was written; the server's log has the cause",
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Body {
            kind: format!("{PROBLEM_TYPE_PREFIX}{}", self.kind),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut r = (self.status, json).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        r
    }
}

impl From<StorageError> for Problem {
    fn from(e: StorageError) -> Problem {
        Problem::storage(&e)
    }
}

impl From<NameError> for Problem {
    fn from(e: NameError) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-name", e.to_string())
    }
}

impl From<LibraryError> for Problem {
    fn from(e: LibraryError) -> Problem {
        use LibraryError as E;
        let (status, kind) = match &e {
            E::InvalidName(n) => return n.clone().into(),
            E::Storage(s) => return Problem::storage(s),
            E::UnknownFile(_) => (StatusCode::NOT_FOUND, "unknown-file"),
            E::UnknownAlbum(_) => (StatusCode::NOT_FOUND, "unknown-album"),
            E::NoSuchContent(_) => (StatusCode::NOT_FOUND, "no-such-content"),
            E::AlbumExists(_) => (StatusCode::CONFLICT, "album-exists"),
            E::FileTrashed(_) => (StatusCode::CONFLICT, "file-trashed"),
            E::NotTrashed(_) => (StatusCode::CONFLICT, "not-trashed"),
            E::NotInAlbum { .. } => (StatusCode::CONFLICT, "not-in-album"),
            E::NotADuplicate { .. } => (StatusCode::CONFLICT, "not-a-duplicate"),
        };
        Problem::new(status, kind, e.to_string())
    }
}

impl From<UploadError> for Problem {
    fn from(e: UploadError) -> Problem {
        use UploadError as E;
        let (status, kind) = match &e {
            E::InvalidName(n) => return n.clone().into(),
            E::Storage(s) => return Problem::storage(s),
            E::UnknownAlbum(_) => (StatusCode::NOT_FOUND, "unknown-album"),
            E::QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota-exceeded"),
            E::HashMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "hash-mismatch"),
            E::ContentRequired => (StatusCode::CONFLICT, "content-required"),
            // A body that ended early or changed under the upload.
            E::ContentChanged(_) | E::NotAFile(_) => (StatusCode::BAD_REQUEST, "content-changed"),
        };
        Problem::new(status, kind, e.to_string())
    }
}

impl From<SessionError> for Problem {
    fn from(e: SessionError) -> Problem {
        use SessionError as E;
        let detail = e.to_string();
        let (status, kind) = match e {
            E::Upload(u) => return u.into(),
            E::Storage(s) => return Problem::storage(&s),
            E::UnknownUpload(_) => (StatusCode::NOT_FOUND, "unknown-upload"),
            E::OffsetMismatch { expected } => {
                return Problem::new(StatusCode::CONFLICT, "offset-mismatch", detail)
                    .with_header(HeaderName::from_static("upload-offset"), HeaderValue::from(expected))
            }
            E::UploadBusy(_) => (StatusCode::LOCKED, "upload-busy"),
            E::LengthExceeded { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "length-exceeded"),
            E::InvalidLength { .. } => (StatusCode::BAD_REQUEST, "invalid-length"),
            E::UploadIncomplete { .. } => (StatusCode::CONFLICT, "upload-incomplete"),
            E::TooManySessions { .. } => (StatusCode::TOO_MANY_REQUESTS, "too-many-uploads"),
            E::StagingFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "staging-full"),
            E::MetadataTooLarge { .. } | E::InvalidMetadata { .. } => (StatusCode::BAD_REQUEST, "invalid-metadata"),
        };
        Problem::new(status, kind, detail)
    }
}

impl From<ReadError> for Problem {
    fn from(e: ReadError) -> Problem {
        match e {
            ReadError::UnknownFile(id) => Problem::unknown_file(&id.to_string()),
            ReadError::Integrity { .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "integrity-error", e.to_string())
            }
            ReadError::Storage(s) => Problem::storage(&s),
        }
    }
}
