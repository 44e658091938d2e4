//! A request body small enough to be read whole before its upload starts.
//!
//! A photo-sized upload that arrives in one request (a one-shot `PUT`, a
//! tus creation-with-upload or a `PATCH` of every byte) is held in memory
//! as the pieces the connection delivered (never copied into one buffer)
//! and then written once, straight into a segment, where streaming it
//! would have staged it first and written it twice.
//! No blocking thread waits on the client meanwhile, and the store's
//! commit sees the bytes only once all have arrived. Sixteen such bodies
//! are held at once at most (the router's `one_shots` slots), each until its
//! upload returns, so they take at most 256 MiB whatever the number of
//! clients.

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{blocking, AppState, Problem};

/// A body of at most this many bytes, by its `Content-Length`, is read
/// whole (the library holds streams this small in memory anyway).
pub(crate) const HELD: u64 = 16 << 20;

/// Whether a body of this `Content-Length` is held whole.
pub(crate) fn fits(content_length: Option<u64>) -> Option<u64> {
    content_length.filter(|&n| n <= HELD)
}

/// A body read whole, as the pieces it arrived in, and the slot it takes
/// until its upload returns.
pub(crate) struct Held {
    slot: OwnedSemaphorePermit,
    parts: Vec<Bytes>,
}

/// A body that did not arrive whole: what did arrive, and why the rest
/// did not.
pub(crate) struct Broken {
    /// The bytes that arrived, in order from the body's start (none if
    /// the body ran past its declared length: nothing of it is trusted).
    pub(crate) arrived: Vec<u8>,
    /// What went wrong, for the client.
    pub(crate) why: String,
}

/// Reads a body of `len` bytes (at most [`HELD`]) whole, once a slot is
/// free.
///
/// # Errors
///
/// [`Broken`] if the body breaks off (the client went away, a timeout
/// fired) or is not `len` bytes long.
pub(crate) async fn read(state: &AppState, len: u64, body: Body) -> Result<Held, Broken> {
    // The semaphore is never closed, so this waits for a slot and gets one.
    let slot = state.one_shots.clone().acquire_owned().await.map_err(|_| Broken {
        arrived: Vec::new(),
        why: "internal error".into(),
    })?;
    let short = |arrived| Broken {
        arrived,
        why: format!("the body is not the {len} bytes its Content-Length says"),
    };
    let mut parts = Vec::new();
    let mut got = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Err(Broken {
                    arrived: parts.concat(),
                    why: format!("reading the body: {e}"),
                })
            }
        };
        got += chunk.len() as u64;
        if got > len {
            return Err(short(Vec::new()));
        }
        parts.push(chunk);
    }
    if got != len {
        return Err(short(parts.concat()));
    }
    Ok(Held { slot, parts })
}

impl Held {
    /// The pieces, to look at before they are stored.
    pub(crate) fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Runs `store` on the pieces off the runtime, the slot taken until it
    /// returns (a dropped request's upload runs on, and keeps its slot).
    pub(crate) async fn store<R: Send + 'static>(
        self,
        store: impl FnOnce(Vec<Bytes>) -> Result<R, Problem> + Send + 'static,
    ) -> Result<R, Problem> {
        let Held { slot, parts } = self;
        blocking(move || {
            let _slot = slot;
            store(parts)
        })
        .await
    }
}

impl Broken {
    /// The answer to a body that broke off, when nothing of it was kept.
    pub(crate) fn nothing_stored(&self) -> Problem {
        Problem::bad_request(format!("{}; nothing of it was stored", self.why))
    }
}
