//! `POST /v1/check`: the bulk preflight. A client sends up to
//! [`MAX_ITEMS`] (name, BLAKE3 hash, album) and learns, per item, whether
//! to skip it, link it or upload it, by keepsake's two duplicate rules
//! over the user's own files (Immich's bulk-upload-check does this with
//! SHA-1 and one rule). With `"link": true` the items that need no bytes
//! are completed at once: linked, or restored from the trash.

use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};

use super::files::{album_for, blake3_hex, checked_name, mode};
use super::{blocking, Caller, JsonBody, Problem};
use crate::store::{HashedUpload, Preflight, User};

/// The most items one request may ask about.
pub(crate) const MAX_ITEMS: usize = 1000;

#[derive(Deserialize)]
pub(crate) struct Request {
    items: Vec<Item>,
    /// Complete the items that need no bytes (link or restore them).
    #[serde(default)]
    link: bool,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    /// BLAKE3, 64 hex digits.
    hash: String,
    /// The album's name; the default upload album when absent.
    album: Option<String>,
    /// `hash` or `name-hash` (the default).
    mode: Option<String>,
}

/// One item's answer: `action` is `skip`, `link`, `restore` or `upload`
/// (without `link: true`), or the outcome `skipped`, `linked`, `restored`
/// or `upload` (with it); `file_id` names the duplicate; `error` is a
/// problem object for an item that could not be answered.
#[derive(Serialize)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ProblemJson>,
}

#[derive(Serialize)]
struct ProblemJson {
    kind: &'static str,
    status: u16,
    detail: String,
}

#[derive(Serialize)]
struct Answers {
    items: Vec<Answer>,
}

/// `POST /v1/check`. An album an item names is created if the user has
/// none of that name, as an upload into it would create it: the answer
/// for a new album is then "link" for content the user has elsewhere,
/// which is the point of asking.
pub(crate) async fn check(Caller(user): Caller, JsonBody(req): JsonBody<Request>) -> Result<Response, Problem> {
    if req.items.len() > MAX_ITEMS {
        return Err(Problem::bad_request(format!(
            "at most {MAX_ITEMS} items per request, not {}",
            req.items.len()
        )));
    }
    let answers = blocking(move || {
        Ok(Answers {
            items: req.items.iter().map(|i| answer(&user, i, req.link)).collect(),
        })
    })
    .await?;
    Ok(Json(answers).into_response())
}

fn answer(user: &User, item: &Item, link: bool) -> Answer {
    match decide(user, item, link) {
        Ok((action, file_id)) => Answer {
            action: Some(action),
            file_id,
            error: None,
        },
        Err(p) => Answer {
            action: None,
            file_id: None,
            error: Some(ProblemJson {
                kind: p.kind(),
                status: p.status().as_u16(),
                detail: p.detail().to_string(),
            }),
        },
    }
}

fn decide(user: &User, item: &Item, link: bool) -> Result<(&'static str, Option<u64>), Problem> {
    let up = HashedUpload {
        name: checked_name(item.name.as_str())?,
        hash: blake3_hex(item.hash.as_bytes())?,
        mode: mode(item.mode.as_deref().map(str::as_bytes))?,
        album: album_for(user, item.album.as_deref())?,
    };
    let plan = user.check(&up)?;
    if !link {
        return Ok(match plan {
            Preflight::Skip(f) => ("skip", Some(f.0)),
            Preflight::Link(f) => ("link", Some(f.0)),
            Preflight::Restore(f) => ("restore", Some(f.0)),
            Preflight::Upload => ("upload", None),
        });
    }
    if plan == Preflight::Upload {
        return Ok(("upload", None));
    }
    let report = user.link(&up)?;
    Ok((
        match report.outcome {
            crate::store::Outcome::Skipped => "skipped",
            crate::store::Outcome::Linked => "linked",
            crate::store::Outcome::Restored => "restored",
            crate::store::Outcome::Stored => "stored",
        },
        Some(report.file_id.0),
    ))
}
