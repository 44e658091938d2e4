//! `keepsake serve` and `keepsake token`: the HTTP face run as a server of
//! its own, behind the store's bearer tokens.

use std::net::SocketAddr;
use std::path::Path;

use keepsake::http::{router, with_bearer_tokens, TokenError, Tokens};
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

/// Serves `store` on `listen` until Ctrl-C or SIGTERM, then lets the
/// requests in flight finish.
pub(crate) fn serve(store: Store, dir: &Path, listen: SocketAddr, out: &Output) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Store {
            message: format!("starting the server's runtime: {e}"),
            status: 1,
        })?;
    let app = with_bearer_tokens(router(store), Tokens::at(dir));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure::Store {
                message: format!("listening on {listen}: {e}"),
                status: 1,
            })?;
        let bound = listener.local_addr().unwrap_or(listen);
        #[derive(Serialize)]
        struct Listening {
            listening: String,
        }
        out.show(
            &Listening {
                listening: format!("http://{bound}"),
            },
            || format!("keepsake: serving http://{bound} (Ctrl-C to stop)"),
        )?;
        out.flush()?;
        // Requests in flight finish after a stop, for at most
        // SHUTDOWN_GRACE: a stalled client does not hold the server up.
        let (stopping, mut stopped_at) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stopped().await;
            let _ = stopping.send(true);
        });
        tokio::select! {
            served = server => served.map_err(|e| Failure::Store {
                message: format!("serving: {e}"),
                status: 1,
            }),
            () = async {
                let _ = stopped_at.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                eprintln!("keepsake: requests still in flight {} s after the stop; stopping anyway", SHUTDOWN_GRACE.as_secs());
                Ok(())
            }
        }
    })
}

/// How long a stopping server lets requests in flight finish. Upload
/// sessions are durable at each append, so a request cut off here loses
/// nothing a client cannot resend.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

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
