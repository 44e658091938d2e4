//! `keepsake serve` and `keepsake token`: the HTTP face run as a server of
//! its own, behind the store's bearer tokens.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower_http::timeout::RequestBodyTimeoutLayer;

use keepsake::http::{metrics_router, router, with_bearer_tokens, TokenError, Tokens};
use keepsake::Store;
use serde::Serialize;

use super::args::TokenAction;
use super::output::Output;
use super::Failure;

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        let status = if matches!(e, TokenError::InvalidUser(_)) { 2 } else { 1 };
        Failure::Store {
            message: e.to_string(),
            status,
        }
    }
}

/// How long a slow client may take, before the server lets it go.
pub(crate) struct Limits {
    /// To send a request's headers (the connection is closed after).
    pub header: Duration,
    /// Between two pieces of a request's body (the request fails).
    pub idle_body: Duration,
}

/// How long a stopping server lets requests in flight finish. Upload
/// sessions are durable at each append, so a request cut off here loses
/// nothing a client cannot resend.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Store {
        message: format!("{what}: {e}"),
        status: 1,
    }
}

/// Where `keepsake serve` listens.
pub(crate) struct Addresses {
    /// The API, for users (behind their bearer tokens).
    pub listen: SocketAddr,
    /// `/metrics`, for the operator, if asked for.
    pub metrics_listen: Option<SocketAddr>,
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| failure(&format!("listening on {addr}"), e))?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok((listener, bound))
}

/// The next connection of `listener`, or never without one.
async fn accept(listener: Option<&tokio::net::TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// Starts moving the store's blobs to `blobs` on a thread of its own
/// (`Store::migrate_blobs` is online: the server goes on serving), and
/// prints its outcome on stderr when it ends.
pub(crate) fn migrate_while_serving(store: &Store, blobs: &str) -> Result<(), Failure> {
    let to = super::migrate::destination(blobs)?;
    let store = store.clone();
    std::thread::Builder::new()
        .name("keepsake-migrate".into())
        .spawn(move || match store.migrate_blobs(&to, &mut |_| {}) {
            Ok(report) => eprintln!(
                "keepsake: migration: {}",
                super::migrate::summary(&report).replace('\n', "; ")
            ),
            Err(e) => eprintln!("keepsake: migration failed: {e} (restart with --migrate-blobs to go on)"),
        })
        .map_err(|e| failure("starting the migration", e))?;
    Ok(())
}

/// Serves `store` until Ctrl-C or SIGTERM, then lets the requests in
/// flight finish for at most [`SHUTDOWN_GRACE`].
///
/// Connections are served by hyper directly, not `axum::serve`, for the
/// header timeout: hyper enforces one only with a timer, which
/// `axum::serve` does not give it, so a client trickling its headers
/// would hold a connection for ever. A connection holds no lock and no
/// commit while it waits: store calls start once a request (or a piece
/// of its body) has arrived.
pub(crate) fn serve(store: Store, dir: &Path, at: Addresses, limits: Limits, out: &Output) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| failure("starting the server's runtime", e))?;
    let ops = metrics_router(store.clone());
    let app = with_bearer_tokens(router(store), Tokens::at(dir)).layer(RequestBodyTimeoutLayer::new(limits.idle_body));
    let served = runtime.block_on(async {
        let (listener, bound) = bind(at.listen).await?;
        let (metrics, metrics_bound) = match at.metrics_listen {
            Some(addr) => {
                let (l, b) = bind(addr).await?;
                (Some(l), Some(b))
            }
            None => (None, None),
        };
        #[derive(Serialize)]
        struct Listening {
            listening: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            metrics: Option<String>,
        }
        let shown = Listening {
            listening: format!("http://{bound}"),
            metrics: metrics_bound.map(|b| format!("http://{b}/metrics")),
        };
        out.show(&shown, || match &shown.metrics {
            Some(m) => format!("keepsake: serving {} and {m} (Ctrl-C to stop)", shown.listening),
            None => format!("keepsake: serving {} (Ctrl-C to stop)", shown.listening),
        })?;
        out.flush()?;
        // HTTP/1 only: over plain TCP no client needs HTTP/2 (browsers
        // speak it over TLS only), and telling the two apart reads the
        // first bytes of a connection with no timer at all, so a client
        // that sends nothing would hold its connection for ever.
        let mut builder = Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header);
        let graceful = GracefulShutdown::new();
        let mut stop = std::pin::pin!(stopped());
        loop {
            let (accepted, service) = tokio::select! {
                accepted = accept(Some(&listener)) => (accepted, app.clone()),
                accepted = accept(metrics.as_ref()) => (accepted, ops.clone()),
                () = &mut stop => break,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                // Out of descriptors, a connection reset before it was
                // taken: the next one may do.
                Err(e) => {
                    eprintln!("keepsake: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop((listener, metrics));
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                eprintln!(
                    "keepsake: requests still in flight {} s after the stop; stopping anyway",
                    SHUTDOWN_GRACE.as_secs()
                );
            }
        }
        Ok(())
    });
    // Store calls still running on the blocking pool (a commit, an fsync)
    // get the same grace; a commit cut off by the exit is atomic anyway.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    served
}

/// Resolves at Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// `keepsake token ...`: works on the token file alone, so while a server
/// holds the store.
pub(crate) fn token(dir: &Path, action: TokenAction, out: &Output) -> Result<(), Failure> {
    let tokens = Tokens::at(dir);
    match action {
        TokenAction::Create { user } => {
            let new = tokens.create(&user)?;
            out.show(&new, || new.token.clone())?;
        }
        TokenAction::List => {
            let list = tokens.list()?;
            out.show(&list, || {
                list.iter()
                    .map(|t| format!("{}  {:>13}  {}\n", t.id, t.created_ms, t.user))
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })?;
        }
        TokenAction::Revoke { id } => {
            if !tokens.revoke(&id)? {
                return Err(Failure::Missing(format!("no token {id}")));
            }
            #[derive(Serialize)]
            struct Revoked<'a> {
                revoked: &'a str,
            }
            out.show(&Revoked { revoked: &id }, || format!("revoked token {id}"))?;
        }
    }
    Ok(())
}
