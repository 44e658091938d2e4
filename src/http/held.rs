//! A request body small enough to be read whole before its upload starts.
//!
//! A photo-sized upload that arrives in one request (a one-shot `PUT`, a
//! tus creation-with-upload or a `PATCH` of every byte) is held in memory
//! as the pieces the connection delivered (never copied into one buffer)
//! and then written once, straight into a segment, where streaming it
//! would have staged it first and written it twice.
//! No blocking thread waits on the client meanwhile, and the store's
//! commit sees the bytes only once all have arrived.
//!
//! Holding is a shortcut, never a queue: sixteen bodies are held at once
//! at most ([`Slots`]), eight of them one user's, each until its upload
//! returns, so they take at most 256 MiB whatever the number of clients.
//! A request that finds no slot free goes the way a larger body goes,
//! through an upload session, instead of waiting: a client that trickles
//! its body (or sixteen of them, or one user's many) makes the others
//! slower at worst, never stuck behind it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;

use super::{blocking, Problem};

/// A body of at most this many bytes, by its `Content-Length`, is read
/// whole (the library holds streams this small in memory anyway).
pub(crate) const HELD: u64 = 16 << 20;

/// Bodies held at once at most: 16 x 16 MiB at worst.
const SLOTS: usize = 16;
/// Bodies one user holds at once at most.
const PER_USER: usize = 8;

/// The `Content-Length` of a body held whole: `None` for a larger or
/// unsized body.
pub(crate) fn fits(content_length: Option<u64>) -> Option<u64> {
    content_length.filter(|&n| n <= HELD)
}

/// A request's `Content-Length`.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// The bodies held in flight: how many in all, and how many per user.
#[derive(Default)]
pub(crate) struct Slots(Mutex<Taken>);

#[derive(Default)]
struct Taken {
    all: usize,
    /// Only users holding at least one body have an entry.
    by_user: HashMap<String, usize>,
}

/// One held body's room, given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    user: String,
}

impl Slots {
    /// A slot for a body that must be held whole whatever its way (a
    /// checksummed one, checked before a byte is appended): with none
    /// free, 503 with `Retry-After`, which tus clients retry.
    pub(crate) fn needed(slots: &Arc<Slots>, user: &str) -> Result<Slot, Problem> {
        Slots::take(slots, user).ok_or_else(|| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many bodies are being received; try again in a moment",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        })
    }

    /// Room to hold a body of `len` bytes of `user`'s (`None`: not one to
    /// hold), with its length, if there is any: holding never waits.
    pub(crate) fn take_for(slots: &Arc<Slots>, user: &str, len: Option<u64>) -> Option<(u64, Slot)> {
        Some((len?, Slots::take(slots, user)?))
    }

    /// Room for one more body of `user`'s, if there is any: `None` when
    /// [`SLOTS`] bodies are held, or [`PER_USER`] of the user's.
    fn take(slots: &Arc<Slots>, user: &str) -> Option<Slot> {
        let mut t = slots.0.lock();
        let mine = t.by_user.get(user).copied().unwrap_or(0);
        if t.all >= SLOTS || mine >= PER_USER {
            return None;
        }
        t.all += 1;
        t.by_user.insert(user.to_string(), mine + 1);
        Some(Slot {
            slots: slots.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.0.lock();
        t.all -= 1;
        if let Some(n) = t.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                t.by_user.remove(&self.user);
            }
        }
    }
}

/// A body read whole, as the pieces it arrived in, and the slot it takes
/// until its upload returns.
pub(crate) struct Held {
    slot: Slot,
    parts: Vec<Bytes>,
}

/// A body that did not arrive whole: what did arrive, and why the rest
/// did not. It keeps its slot until it is dropped, since what arrived is
/// still in memory.
pub(crate) struct Broken {
    /// The bytes that arrived, in order from the body's start (none if
    /// the body ran past its declared length: nothing of it is trusted).
    pub(crate) arrived: Vec<u8>,
    /// What went wrong, for the client.
    pub(crate) why: String,
    _slot: Slot,
}

/// Reads a body of `len` bytes (at most [`HELD`]) whole, in `slot`.
///
/// # Errors
///
/// [`Broken`] if the body breaks off (the client went away, a timeout
/// fired) or is not `len` bytes long.
pub(crate) async fn read(slot: Slot, len: u64, body: Body) -> Result<Held, Broken> {
    let short = |arrived, slot| Broken {
        arrived,
        why: format!("the body is not the {len} bytes its Content-Length says"),
        _slot: slot,
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
                    _slot: slot,
                })
            }
        };
        got += chunk.len() as u64;
        if got > len {
            return Err(short(Vec::new(), slot));
        }
        parts.push(chunk);
    }
    if got != len {
        return Err(short(parts.concat(), slot));
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
