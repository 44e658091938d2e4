//! The upload page at `/`: drop a folder, and each file goes up over tus
//! with its outcome (stored, linked or skipped) shown beside it, then the
//! user's usage. Static files compiled into the binary; the browser sends
//! the user's bearer token (typed into the page, kept in the tab's
//! `sessionStorage`) with its API calls, so the page itself needs none.
//!
//! `tus.min.js` is tus-js-client 4.3.1's browser build from npm, vendored
//! unchanged (MIT, `page/tus-js-client.LICENSE`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");
const TUS: &str = include_str!("page/tus.min.js");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route(
            "/page.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route("/page.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route(
            "/tus.min.js",
            get(|| async { asset(TUS, "text/javascript; charset=utf-8") }),
        )
}

/// One of the page's files: only this origin's scripts run, nothing is
/// framed, nothing sniffed, no referrer leaves.
fn asset(body: &'static str, kind: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, body).into_response()
}
