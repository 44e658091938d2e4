//! Duplicates already stored: the user's files that share a content, and
//! merging a group into one file that joins every album of the group (the
//! others go to the trash). Only the user's own files are ever grouped.

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::{blocking, AppState, Caller, FileJson, Problem};
use crate::hash::ContentHash;
use crate::ids::FileId;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/duplicates", get(list))
        .route("/v1/duplicates/{hash}/merge", post(merge))
}

#[derive(Serialize)]
struct Group {
    hash: String,
    size: u64,
    files: Vec<FileJson>,
}

#[derive(Serialize)]
struct Groups {
    groups: Vec<Group>,
}

/// `GET /v1/duplicates`: `{"groups": [{"hash", "size", "files"}]}`, each
/// group's files oldest first.
async fn list(Caller(user): Caller) -> Result<Response, Problem> {
    let groups = blocking(move || {
        let albums = user.albums()?;
        let groups = user.duplicates()?;
        Ok(Groups {
            groups: groups
                .iter()
                .map(|g| Group {
                    hash: g.hash.to_string(),
                    size: g.size,
                    files: g.files.iter().map(|f| FileJson::new(f, &albums)).collect(),
                })
                .collect(),
        })
    })
    .await?;
    Ok(Json(groups).into_response())
}

#[derive(Deserialize)]
struct Keep {
    /// The file to keep; the oldest without one.
    keep: Option<u64>,
}

/// `POST /v1/duplicates/{hash}/merge?keep=FILE_ID` (`keep` optional: the
/// oldest file stays): the merge's report, `{"hash", "kept", "trashed",
/// "albums_added", "logical_bytes"}`.
async fn merge(
    Caller(user): Caller,
    Path(raw): Path<String>,
    query: Result<Query<Keep>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let hash: ContentHash = raw
        .parse()
        .map_err(|_| Problem::bad_request("the hash in the path: 64 hexadecimal digits"))?;
    let keep = q.keep.map(FileId);
    let report = blocking(move || Ok(user.merge(hash, keep)?)).await?;
    Ok(Json(report).into_response())
}
