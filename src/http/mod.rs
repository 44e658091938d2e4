//! keepsake's HTTP face (feature `http`): a router over a [`Store`] that a
//! server runs as it is (`keepsake serve`) or mounts inside its own axum
//! application.
//!
//! # Who is asking
//!
//! The router never sees credentials. Every request it serves for a user
//! must carry an [`AuthenticatedUser`] in its extensions, put there by the
//! embedder's own authentication layer (its sessions, its accounts); a
//! request without one is answered 401. `keepsake serve` puts its bearer
//! tokens ([`Tokens`], [`with_bearer_tokens`]) in front.
//!
//! ```
//! use axum::{extract::Request, middleware::{self, Next}, Router};
//! use keepsake::http::{router, AuthenticatedUser};
//!
//! // The embedder's own check, here a fixed user for every request.
//! async fn my_auth(mut req: Request, next: Next) -> axum::response::Response {
//!     req.extensions_mut().insert(AuthenticatedUser("ann".into()));
//!     next.run(req).await
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = keepsake::Store::open(dir.path()).unwrap();
//! let app: Router = Router::new()
//!     .nest("/photos", router(store))
//!     .layer(middleware::from_fn(my_auth));
//! # drop(app);
//! ```
//!
//! # The API (`DESIGN.md` §14)
//!
//! - `GET /healthz`: 200 `ok`, without authentication.
//! - `GET /`: the upload page (drop a folder; each file's outcome shown),
//!   without authentication (the page asks for the user's token).
//! - `GET /v1/albums`, `POST /v1/albums` (`{"name"}`): list, create;
//!   `PATCH /v1/albums/{album_id}` (`{"name"}`): rename;
//!   `DELETE /v1/albums/{album_id}?files=keep|trash`: delete, keeping the
//!   files or trashing those in no other album.
//! - `PUT`/`DELETE /v1/albums/{album_id}/files/{file_id}`: a file joins or
//!   leaves an album; `POST /v1/files/{file_id}/move` (`{"from", "to"}`).
//! - `DELETE /v1/files/{file_id}`: to the trash, out of every album;
//!   `POST /v1/files/{file_id}/restore`; `GET /v1/trash` (pages, as
//!   `/v1/files`); `DELETE /v1/trash`: empty it.
//! - `GET /v1/duplicates`: the user's files grouped by shared content;
//!   `POST /v1/duplicates/{hash}/merge?keep=FILE_ID`: one file stays,
//!   in every album of the group, the others go to the trash.
//! - `GET /v1/files?album=NAME&cursor=C&limit=N`: a page of
//!   [`FileJson`] objects, `{"files": [...], "next": C}`.
//! - `GET /v1/files/{file_id}`: one [`FileJson`].
//! - `GET`/`HEAD /v1/files/{file_id}/content`: the bytes, with `ETag` (the
//!   BLAKE3 hash), `If-None-Match`, `Range`, `If-Range`.
//! - `PUT`/`POST /v1/files`: a one-shot upload of the body, its album,
//!   name, mode and expected hash in `Keepsake-*` headers.
//! - `GET /v1/usage`.
//! - `POST /v1/check`: the bulk preflight, `{"items": [{"name", "hash",
//!   "album", "mode"}], "link": bool}`, up to 1,000 items, answered per
//!   item `skip`, `link`, `restore` or `upload` (or, with `"link": true`,
//!   completed: `skipped`, `linked`, `restored`).
//! - `POST /v1/uploads` and the upload URLs it gives: tus 1.0 and the
//!   IETF resumable-upload draft.
//!
//! Errors are [`Problem`]s (`application/problem+json`). Every store call
//! runs on tokio's blocking pool: RocksDB and `fsync` block.

mod check;
mod duplicates;
mod files;
mod held;
mod library;
mod metrics;
mod page;
mod problem;
mod tokens;
mod trash;
mod tus;
mod wire;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Json, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use metrics::metrics_router;
pub use problem::{Problem, PROBLEM_TYPE_PREFIX};
pub use tokens::{NewToken, TokenError, TokenInfo, Tokens};
pub use wire::{FileJson, JsonName};

use crate::store::{Store, User};

/// The keepsake user a request acts for, as the embedder's authentication
/// established it: insert it into the request's extensions before the
/// router sees the request. The name is a [`Store::user`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser(pub String);

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    store: Store,
    /// Bodies held whole in flight ([`held`]: one-shot uploads, tus
    /// requests that carry a whole upload).
    held: Arc<held::Slots>,
}

impl FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Store {
        state.store.clone()
    }
}

/// The user a request acts for: 401 without an [`AuthenticatedUser`].
struct Caller(User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Response> {
        let Some(AuthenticatedUser(name)) = parts.extensions.get::<AuthenticatedUser>() else {
            return Err(unauthenticated(
                "this request needs a user: send Authorization: Bearer TOKEN",
                "Bearer",
            ));
        };
        state
            .store
            .user(name)
            .map(Caller)
            .map_err(|e| Problem::from(e).into_response())
    }
}

/// The most a JSON request body may hold, in bytes: a preflight of 1,000
/// items with long names fits several times over. Upload bodies are
/// streamed, never held, and bounded by their session's length instead.
const JSON_LIMIT: usize = 1 << 20;

/// A JSON request body: one that is not the JSON asked for (or not
/// `application/json`) is a 400 problem saying why; one over
/// [`JSON_LIMIT`] a 413 `body-too-large`.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, Problem> {
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("a JSON body is at most {JSON_LIMIT} bytes"),
            )
        };
        // Refused from its declared length, before a byte is read; a body
        // without one is cut off at the limit as it arrives.
        let declared = held::content_length(req.headers());
        if declared.is_some_and(|n| n > JSON_LIMIT as u64) {
            return Err(too_large());
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}

/// 401, with the `WWW-Authenticate` challenge `challenge`.
fn unauthenticated(detail: &'static str, challenge: &'static str) -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
        .into_response()
}

/// Runs `f` on tokio's blocking pool: store calls block on RocksDB and
/// `fsync`, which must not hold up the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Problem> + Send + 'static) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        eprintln!("keepsake: a request's store call panicked: {e}");
        Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "internal error; nothing of this request was written",
        ))
    })
}

/// The router over `store`: the API above, under `/v1`, and `/healthz`.
/// Requests for a user need an [`AuthenticatedUser`] extension.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/usage", get(usage))
        .route("/v1/check", axum::routing::post(check::check))
        .merge(files::routes())
        .merge(library::routes())
        .merge(trash::routes())
        .merge(duplicates::routes())
        .merge(tus::routes())
        .merge(page::routes())
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(AppState {
            store,
            held: Arc::default(),
        })
}

/// `router` behind bearer tokens: a request with `Authorization: Bearer
/// TOKEN` naming a token of `tokens` acts as its user; one with a token
/// that is malformed, unknown or revoked is answered 401; one without the
/// header reaches only what needs no user (`/healthz`).
pub fn with_bearer_tokens(router: Router, tokens: Tokens) -> Router {
    router.layer(middleware::from_fn_with_state(Arc::new(tokens), bearer))
}

async fn bearer(State(tokens): State<Arc<Tokens>>, mut req: Request, next: Next) -> Response {
    // Whatever an outer layer claimed, only a token names the user here.
    req.extensions_mut().remove::<AuthenticatedUser>();
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return next.run(req).await;
    };
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let user = match token {
        Some(t) => match tokio::task::spawn_blocking(move || tokens.user_of(&t)).await {
            Ok(user) => user,
            Err(e) => {
                eprintln!("keepsake: checking a token panicked: {e}");
                return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal-error", "internal error")
                    .into_response();
            }
        },
        None => None,
    };
    match user {
        Some(user) => {
            req.extensions_mut().insert(AuthenticatedUser(user));
            next.run(req).await
        }
        None => {
            let mut refused = unauthenticated("the bearer token is not valid", "Bearer error=\"invalid_token\"");
            // tus wants its version on every response but `OPTIONS`'s,
            // this one too, answered before the upload routes see the
            // request: a tus client is known by the header it sends.
            if req.headers().contains_key(tus::TUS_RESUMABLE) {
                refused
                    .headers_mut()
                    .insert(tus::TUS_RESUMABLE, HeaderValue::from_static(tus::VERSION));
            }
            refused
        }
    }
}

async fn usage(Caller(user): Caller) -> Result<Response, Problem> {
    let usage = blocking(move || Ok(user.usage()?)).await?;
    Ok(Json(usage).into_response())
}
