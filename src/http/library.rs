//! Albums and the files in them: list, create, rename, delete (keeping or
//! trashing the files), and a file added to, removed from or moved between
//! albums. Albums are named by id in paths; an id that does not parse is as
//! unknown as another user's (404 `unknown-album`).

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, patch, post, put};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::files::file_id;
use super::{blocking, AppState, Caller, JsonBody, Problem};
use crate::error::LibraryError;
use crate::ids::{AlbumId, FileId};
use crate::store::AlbumDeletion;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/albums", get(albums).post(create))
        .route("/v1/albums/{album_id}", patch(rename).delete(delete))
        .route("/v1/albums/{album_id}/files/{file_id}", put(add).delete(remove))
        .route("/v1/files/{file_id}/move", post(move_file))
}

/// An album id from the path.
fn album_id(raw: &str) -> Result<AlbumId, Problem> {
    raw.parse::<u64>()
        .map(AlbumId)
        .map_err(|_| LibraryError::UnknownAlbum(raw.to_string()).into())
}

async fn albums(Caller(user): Caller) -> Result<Response, Problem> {
    let albums = blocking(move || Ok(user.albums()?)).await?;
    Ok(Json(albums).into_response())
}

#[derive(Deserialize)]
struct AlbumName {
    name: String,
}

async fn create(Caller(user): Caller, name: JsonBody<AlbumName>) -> Result<Response, Problem> {
    let JsonBody(AlbumName { name }) = name;
    let album = blocking(move || {
        let id = user.create_album(&name)?;
        Ok(user.albums()?.into_iter().find(|a| a.id == id))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(album)).into_response())
}

/// `PATCH /v1/albums/{id}` with `{"name"}`: 200 and the album.
async fn rename(Caller(user): Caller, Path(raw): Path<String>, name: JsonBody<AlbumName>) -> Result<Response, Problem> {
    let id = album_id(&raw)?;
    let JsonBody(AlbumName { name }) = name;
    let album = blocking(move || {
        user.rename_album(id, &name)?;
        Ok(user.albums()?.into_iter().find(|a| a.id == id))
    })
    .await?;
    Ok(Json(album).into_response())
}

#[derive(Deserialize)]
struct DeleteQuery {
    /// `keep` (the default) or `trash`.
    files: Option<String>,
}

#[derive(Serialize)]
struct Deleted {
    /// The files the deletion moved to the trash.
    trashed: Vec<FileId>,
}

/// `DELETE /v1/albums/{id}?files=keep|trash`: the files stay in the
/// library (`keep`), or those in no other album go to the trash (`trash`;
/// a photo shown elsewhere is never deleted by deleting one album).
async fn delete(
    Caller(user): Caller,
    Path(raw): Path<String>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let deletion = match q.files.as_deref() {
        None | Some("keep") => AlbumDeletion::KeepFiles,
        Some("trash") => AlbumDeletion::TrashFiles,
        Some(other) => return Err(Problem::bad_request(format!("files={other:?}: it is keep or trash"))),
    };
    let id = album_id(&raw)?;
    let trashed = blocking(move || Ok(user.delete_album(id, deletion)?)).await?;
    Ok(Json(Deleted { trashed }).into_response())
}

#[derive(Serialize)]
struct Added {
    /// Whether the file joined the album (false: it was in it already).
    added: bool,
}

/// `PUT /v1/albums/{id}/files/{file_id}`: the file joins the album (a
/// reference, no bytes); idempotent.
async fn add(Caller(user): Caller, Path((album, file)): Path<(String, String)>) -> Result<Response, Problem> {
    let (album, file) = (album_id(&album)?, file_id(&file)?);
    let added = blocking(move || Ok(user.add_to_album(file, album)?)).await?;
    Ok(Json(Added { added }).into_response())
}

/// `DELETE /v1/albums/{id}/files/{file_id}`: the file leaves the album
/// (it stays in the library): 204.
async fn remove(Caller(user): Caller, Path((album, file)): Path<(String, String)>) -> Result<Response, Problem> {
    let (album, file) = (album_id(&album)?, file_id(&file)?);
    blocking(move || Ok(user.remove_from_album(file, album)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Move {
    from: u64,
    to: u64,
}

/// `POST /v1/files/{id}/move` with `{"from", "to"}` (album ids): 204.
async fn move_file(Caller(user): Caller, Path(raw): Path<String>, to: JsonBody<Move>) -> Result<Response, Problem> {
    let file = file_id(&raw)?;
    let JsonBody(Move { from, to }) = to;
    blocking(move || Ok(user.move_file(file, AlbumId(from), AlbumId(to))?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
