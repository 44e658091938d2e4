//! The trash: a file deleted from every album at once, listed, restored
//! into the albums it was in, or purged with the rest (Ente's rule: a
//! delete takes a file out of every album; gc reclaims the space once no
//! reference is left).

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::files::{file_id, page_bounds, ListPage};
use super::{blocking, AppState, Caller, Problem};
use crate::ids::AlbumId;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files/{file_id}", delete(trash_file))
        .route("/v1/files/{file_id}/restore", post(restore))
        .route("/v1/trash", get(list).delete(empty))
}

/// `DELETE /v1/files/{id}`: to the trash, out of every album: 204.
async fn trash_file(Caller(user): Caller, Path(raw): Path<String>) -> Result<Response, Problem> {
    let id = file_id(&raw)?;
    blocking(move || Ok(user.delete(id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
struct Restored {
    /// The albums the file is back in.
    albums: Vec<AlbumId>,
}

/// `POST /v1/files/{id}/restore`: out of the trash, into the albums it was
/// in (those that still exist).
async fn restore(Caller(user): Caller, Path(raw): Path<String>) -> Result<Response, Problem> {
    let id = file_id(&raw)?;
    let albums = blocking(move || Ok(user.restore(id)?)).await?;
    Ok(Json(Restored { albums }).into_response())
}

#[derive(Deserialize)]
struct TrashQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/trash?cursor=C&limit=N`: a page of trashed files, oldest
/// deletion first, as `GET /v1/files` pages.
async fn list(
    Caller(user): Caller,
    query: Result<Query<TrashQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let (after, limit) = page_bounds(q.cursor.as_deref(), q.limit)?;
    let page = blocking(move || {
        let albums = user.albums()?;
        Ok(ListPage::new(&user.trash_page(after.as_ref(), limit)?, &albums))
    })
    .await?;
    Ok(Json(page).into_response())
}

/// `DELETE /v1/trash`: every trashed file purged now; the report says how
/// many and how many bytes of quota came back.
async fn empty(Caller(user): Caller) -> Result<Response, Problem> {
    let report = blocking(move || Ok(user.empty_trash()?)).await?;
    Ok(Json(report).into_response())
}
