//! A bucket of S3-compatible object storage as the home of sealed
//! segments: each is one immutable *pack* object, written create-only,
//! read by ranged GETs (feature `s3`).
//!
//! The S3 client is `object_store`'s, on a tokio runtime of the bucket's
//! own: the store's API is blocking, and its callers may be threads of any
//! kind, an async runtime's too. Every request is spawned onto that
//! runtime and its answer awaited through a channel, never by entering a
//! runtime from the calling thread (which panics inside another one).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::home::{Elsewhere, Home, Reconciled, Unreadable};
use crate::error::{Fault, Result};
use crate::fs::FsFile;
use crate::health::Health;

/// Where a store's blobs live in object storage, and how to reach it.
///
/// `url` is `s3://BUCKET/PREFIX` (the prefix may be empty); it is what the
/// store records. The endpoint, region and credentials are never recorded:
/// they come from here at every open, [`BucketOptions::from_env`] taking
/// them from the standard AWS environment variables. Without credentials,
/// requests go unsigned (a test server that allows anonymous access).
///
/// ```
/// let opts = keepsake::BucketOptions::new("s3://photos/keepsake");
/// assert_eq!(opts.url, "s3://photos/keepsake");
/// assert!(format!("{opts:?}").contains("photos"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct BucketOptions {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The S3 endpoint (`http://127.0.0.1:8333`); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// The access key id; with the secret, requests are signed.
    pub access_key_id: Option<String>,
    /// The secret access key. Never printed by `Debug`, never written.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Whether a plain-HTTP endpoint is allowed (a test server).
    pub allow_http: bool,
    /// How many times one request is retried after a timeout, a refused or
    /// dropped connection, a 5xx or throttling (503 SlowDown), with
    /// exponential backoff from 100 ms to 2 s (default 5).
    pub max_retries: usize,
    /// How long after its first attempt a request is no longer retried
    /// (default 60 s): an object store that is down fails the operation in
    /// about this long, with the last error.
    pub retry_timeout: Duration,
    /// How long one request may take, from connecting to the last byte
    /// (default 120 s: an 8 MiB part at 1 Mbit/s is 67 s).
    pub request_timeout: Duration,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
    /// How many parts of one multipart upload are in flight at once
    /// (default 4, each 8 MiB of memory).
    pub concurrency: usize,
}

/// The part size of multipart uploads, and the size above which a pack is
/// uploaded in parts rather than by one PUT: 8 MiB (S3 allows 5 MiB to
/// 5 GiB, at most 10,000 parts, so a pack can be 78 GiB).
pub(crate) const PART_SIZE: u64 = 8 << 20;

/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;

impl std::fmt::Debug for BucketOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketOptions")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl BucketOptions {
    /// The bucket at `url` (`s3://BUCKET/PREFIX`), reached with the
    /// defaults: AWS's endpoint, `us-east-1`, no credentials.
    pub fn new(url: impl Into<String>) -> BucketOptions {
        BucketOptions {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            concurrency: 4,
        }
    }

    /// The bucket at `url`, reached as the standard AWS environment
    /// variables say: `AWS_ENDPOINT_URL`, `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, and `AWS_ALLOW_HTTP=true` for a plain-HTTP
    /// endpoint.
    pub fn from_env(url: impl Into<String>) -> BucketOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        BucketOptions {
            endpoint: var("AWS_ENDPOINT_URL"),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            allow_http: var("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            ..BucketOptions::new(url)
        }
    }
}

/// The bucket name and key prefix of `s3://BUCKET/PREFIX`.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] naming what is wrong with the URL.
pub(crate) fn parse_url(url: &str) -> io::Result<(String, ObjectPath)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("expected s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's rule for bucket names: 3 to 63 of lowercase letters, digits,
    // dots and hyphens.
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid {
        return Err(bad(
            "the bucket name must be 3 to 63 lowercase letters, digits, dots or hyphens",
        ));
    }
    let prefix = ObjectPath::parse(prefix.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
    Ok((bucket.to_string(), prefix))
}

/// Sealed segments as pack objects `PREFIX/packs/<id, 20 digits>.pack`.
pub(crate) struct Bucket {
    url: String,
    store: Arc<AmazonS3>,
    prefix: ObjectPath,
    packs: ObjectPath,
    concurrency: usize,
    runtime: tokio::runtime::Runtime,
}

fn pack_name(id: u64) -> String {
    format!("{id:020}.pack")
}

fn parse_pack_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".pack")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// An object store error as an I/O error: its kind says what a caller
/// can tell from it (gone, refused, anything else), and its message is one
/// line with the causes the client's own message leaves out (a refused
/// connection says so), and a bucket that does not exist said plainly
/// rather than as the server's XML.
fn io_error(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            io::ErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            io::ErrorKind::PermissionDenied
        }
        _ => io::ErrorKind::Other,
    };
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    if message.contains("NoSuchBucket") {
        message = "the bucket does not exist (create it first)".into();
    }
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    io::Error::new(kind, one_line)
}

/// Why [`Bucket::check_claim`] could not say the prefix is the store's.
#[derive(Debug)]
pub(crate) enum Unchecked {
    /// No answer came: the prefix may well be the store's.
    Unanswered(io::Error),
    /// An answer came, and it says the prefix is not the store's or
    /// cannot be used as given.
    Refused(io::Error),
}

impl Unchecked {
    /// The error, whichever it is.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Unchecked::Unanswered(e) | Unchecked::Refused(e) => e,
        }
    }
}

impl Bucket {
    /// Connects to the bucket `options` names. No request is made.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a URL or option the client
    /// refuses; the runtime's error if its threads cannot start.
    pub(crate) fn open(options: &BucketOptions) -> io::Result<Bucket> {
        let (bucket, prefix) = parse_url(&options.url)?;
        if let Some(endpoint) = options.endpoint.as_deref().filter(|e| e.starts_with("http://")) {
            if !options.allow_http {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{endpoint} is plain HTTP: allow it with AWS_ALLOW_HTTP=true (BucketOptions::allow_http)"),
                ));
            }
        }
        let client = ClientOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout)
            .with_allow_http(options.allow_http);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(options.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_allow_http(options.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(token) = &options.session_token {
                    builder = builder.with_token(token);
                }
            }
            // Without both, no credentials are looked for elsewhere (an
            // instance metadata service a laptop does not have): requests
            // go unsigned.
            _ => builder = builder.with_skip_signature(true),
        }
        let store = builder
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keepsake-s3")
            .enable_all()
            .build()?;
        Ok(Bucket {
            url: options.url.clone(),
            store: Arc::new(store),
            packs: prefix.clone().join("packs"),
            prefix,
            concurrency: options.concurrency.max(1),
            runtime,
        })
    }

    fn pack(&self, id: u64) -> ObjectPath {
        self.packs.clone().join(pack_name(id).as_str())
    }

    /// Runs `request` on the bucket's runtime and waits for its answer; a
    /// request task that ended without one (it panicked) is an error.
    fn run<T: Send + 'static>(
        &self,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "S3",
                source: "the request's task ended without an answer".into(),
            })
        })
    }

    fn fault(&self, what: String, e: object_store::Error) -> Fault {
        Fault::io(format!("{what} in {}", self.url), io_error(e))
    }

    /// Uploads bytes `0..len` of `spool` as pack `id`: one create-only PUT
    /// (`If-None-Match: *`) up to [`PART_SIZE`], a multipart upload of
    /// [`PART_SIZE`] parts, read from the spool as they go, past it.
    fn upload(&self, id: u64, spool: &dyn FsFile, len: u64) -> Result<()> {
        let path = self.pack(id);
        let read = |at: u64, n: u64| -> Result<Bytes> {
            let mut buf = vec![0u8; n as usize];
            spool
                .read_exact_at(at, &mut buf)
                .map_err(|e| Fault::io(format!("reading the spool of segment {id}"), e))?;
            Ok(Bytes::from(buf))
        };
        if len <= PART_SIZE {
            let body = read(0, len)?;
            let store = self.store.clone();
            let (p, payload) = (path.clone(), PutPayload::from(body.clone()));
            let opts = PutOptions::from(PutMode::Create);
            return match self.run(async move { store.put_opts(&p, payload, opts).await }) {
                Ok(_) => Ok(()),
                // A retried PUT whose first attempt landed finds its own
                // object: only that is success.
                Err(object_store::Error::AlreadyExists { .. }) if self.holds(&path, &body) => Ok(()),
                Err(e) => Err(self.fault(format!("uploading pack {id}"), e)),
            };
        }
        if len > MAX_PARTS * PART_SIZE {
            return Err(Fault::io(
                format!("uploading pack {id} to {}", self.url),
                io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("{len} bytes is more than S3's {MAX_PARTS} parts of {PART_SIZE} bytes"),
                ),
            ));
        }
        // object_store completes a multipart upload without a condition:
        // the name is checked free first, and only this process (holding
        // the store's lock) takes names of ids it allocated, never reused.
        let store = self.store.clone();
        let p = path.clone();
        match self.run(async move { store.head(&p).await }) {
            Ok(_) => {
                return Err(Fault::io(
                    format!("uploading pack {id} to {}", self.url),
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "an object of that name exists: not overwritten",
                    ),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fault(format!("checking pack {id}"), e)),
        }
        let store = self.store.clone();
        let p = path.clone();
        let mut upload = self
            .run(async move { store.put_multipart(&p).await })
            .map_err(|e| self.fault(format!("starting the upload of pack {id}"), e))?;
        let mut in_flight = VecDeque::new();
        let mut sent = || -> Result<()> {
            let mut at = 0;
            while at < len {
                let n = PART_SIZE.min(len - at);
                let part = upload.put_part(PutPayload::from(read(at, n)?));
                in_flight.push_back(self.runtime.spawn(part));
                at += n;
                if in_flight.len() >= self.concurrency {
                    self.part_done(id, in_flight.pop_front())?;
                }
            }
            while let Some(part) = in_flight.pop_front() {
                self.part_done(id, Some(part))?;
            }
            Ok(())
        };
        let outcome = sent();
        let finished = match outcome {
            Ok(()) => self.run(async move {
                let done = upload.complete().await;
                if done.is_err() {
                    let _ = upload.abort().await;
                }
                done
            }),
            Err(e) => {
                self.run(async move { upload.abort().await }).ok();
                return Err(e);
            }
        };
        finished
            .map(drop)
            .map_err(|e| self.fault(format!("completing the upload of pack {id}"), e))
    }

    fn part_done(&self, id: u64, part: Option<tokio::task::JoinHandle<object_store::Result<()>>>) -> Result<()> {
        let Some(part) = part else { return Ok(()) };
        let joined = self.run(async move {
            part.await.unwrap_or_else(|e| {
                Err(object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })
            })
        });
        joined.map_err(|e| self.fault(format!("uploading a part of pack {id}"), e))
    }

    /// Makes the prefix this store's: writes `claim` as the object
    /// `PREFIX/keepsake-store`, create-only. A prefix that holds packs, or
    /// another store's claim, is refused.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AlreadyExists`] for a prefix in use; the request's
    /// error otherwise.
    pub(crate) fn claim(&self, claim: &str) -> io::Result<()> {
        let taken = |why: String| io::Error::new(io::ErrorKind::AlreadyExists, why);
        if !self.lengths().map_err(io::Error::other)?.is_empty() {
            return Err(taken(format!("{} holds packs of another store", self.url)));
        }
        let store = self.store.clone();
        let path = self.claim_path();
        let body = Bytes::from(claim.to_string());
        let payload = PutPayload::from(body.clone());
        match self.run(async move { store.put_opts(&path, payload, PutOptions::from(PutMode::Create)).await }) {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if self.holds(&self.claim_path(), &body) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(taken(format!("{} belongs to another store", self.url)))
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// Checks that the prefix holds this store's `claim`. A prefix with no
    /// claim and no pack is claimed now, unless the store has committed
    /// packs to it (`holds_packs`): the store's creation (or migration)
    /// recorded the claim and was cut off before it wrote it. A store whose
    /// packs should be there and are not is pointed at the wrong place (an
    /// endpoint or bucket of the same name elsewhere): claiming it would
    /// turn every pack into damage.
    ///
    /// # Errors
    ///
    /// [`Unchecked::Unanswered`] if the object store gave no answer (no
    /// connection, a timeout, a 5xx after the retries: object_store's
    /// `Generic` error), so that nothing is known of the prefix;
    /// [`Unchecked::Refused`] with [`io::ErrorKind::PermissionDenied`] if
    /// it holds another store's claim, or packs and no claim, and with the
    /// request's error for any other answer (no such bucket, credentials
    /// refused).
    pub(crate) fn check_claim(&self, claim: &str, holds_packs: bool) -> std::result::Result<(), Unchecked> {
        let store = self.store.clone();
        let path = self.claim_path();
        let refused = |why: String| Unchecked::Refused(io::Error::new(io::ErrorKind::PermissionDenied, why));
        match self.run(async move { store.get(&path).await?.bytes().await }) {
            Ok(found) if found == claim.as_bytes() => Ok(()),
            Ok(_) => Err(refused(format!("{} belongs to another store", self.url))),
            Err(object_store::Error::NotFound { .. }) => {
                // The listing and the claim's PUT are told apart as the GET
                // is: `io_error` gives object_store's `Generic` (and only
                // the rarer errors it has no kind for) as `Other`.
                let unanswered_or_refused = |e: io::Error| match e.kind() {
                    io::ErrorKind::Other => Unchecked::Unanswered(e),
                    _ => Unchecked::Refused(e),
                };
                let empty = self
                    .lengths()
                    .map_err(|e| match e {
                        Fault::Io { source, .. } => unanswered_or_refused(source),
                        other => Unchecked::Refused(io::Error::other(other.to_string())),
                    })?
                    .is_empty();
                if !empty {
                    return Err(refused(format!(
                        "{} does not hold this store's keepsake-store object: is it the right bucket?",
                        self.url
                    )));
                }
                if holds_packs {
                    return Err(refused(format!(
                        "{} holds neither this store's keepsake-store object nor any of its packs: \
                         is it the right endpoint and bucket?",
                        self.url
                    )));
                }
                self.claim(claim).map_err(unanswered_or_refused)
            }
            Err(e @ object_store::Error::Generic { .. }) => Err(Unchecked::Unanswered(io_error(e))),
            Err(e) => Err(Unchecked::Refused(io_error(e))),
        }
    }

    fn claim_path(&self) -> ObjectPath {
        self.prefix.clone().join("keepsake-store")
    }

    /// Whether the object at `path` holds exactly `body`.
    fn holds(&self, path: &ObjectPath, body: &Bytes) -> bool {
        let store = self.store.clone();
        let p = path.clone();
        let got = self.run(async move { store.get(&p).await?.bytes().await });
        got.is_ok_and(|got| got == *body)
    }
}

impl Home for Bucket {
    fn name(&self) -> &str {
        &self.url
    }

    fn keeps_spool(&self) -> bool {
        false
    }

    fn persist(&self, id: u64, spool: &dyn FsFile, len: u64, _health: &Health) -> Result<()> {
        self.upload(id, spool, len)
    }

    fn read(&self, id: u64, range: Range<u64>) -> std::result::Result<Bytes, Unreadable> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let store = self.store.clone();
        let path = self.pack(id);
        let want = range.end - range.start;
        let r = range.clone();
        match self.run(async move { store.get_range(&path, r).await }) {
            Ok(bytes) if bytes.len() as u64 == want => Ok(bytes),
            Ok(bytes) => Err(Unreadable::Lost(format!(
                "pack {id} ends at {} of the bytes {}..{} read",
                range.start + bytes.len() as u64,
                range.start,
                range.end
            ))),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Unreadable::Lost(format!("pack {id} is missing from {}", self.url)))
            }
            // Anything else, a range past the end of a short pack too, is
            // an error to retry, never damage on its own say: a short pack
            // is found by the listing at open and by the scrub's.
            Err(e) => Err(Unreadable::Io(
                format!("reading pack {id} in {}", self.url),
                io_error(e),
            )),
        }
    }

    fn scan_window(&self) -> u64 {
        // A request costs more than a megabyte of transfer on loopback; a
        // window of 8 MiB holds the headers of 500 thumbnails.
        PART_SIZE
    }

    fn lengths(&self) -> Result<BTreeMap<u64, u64>> {
        let store = self.store.clone();
        let prefix = self.packs.clone();
        let listed = self.run(async move {
            let mut out = BTreeMap::new();
            let mut objects = store.list(Some(&prefix));
            while let Some(meta) = objects.next().await {
                let meta = meta?;
                // Only packs directly under `packs/`: a prefix below it
                // would be another store's.
                let direct = meta
                    .location
                    .prefix_match(&prefix)
                    .is_some_and(|mut rest| rest.nth(1).is_none());
                if let Some(id) = meta.location.filename().and_then(parse_pack_name).filter(|_| direct) {
                    out.insert(id, meta.size);
                }
            }
            Ok(out)
        });
        listed.map_err(|e| self.fault("listing packs".into(), e))
    }

    /// Gives the prefix up: deletes the claim object if it holds `claim`
    /// (one already gone, or another store's, is left as it is).
    ///
    /// # Errors
    ///
    /// The request's.
    fn release(&self, claim: &str) -> io::Result<()> {
        let store = self.store.clone();
        let path = self.claim_path();
        match self.run(async move { store.get(&path).await?.bytes().await }) {
            Ok(found) if found == claim.as_bytes() => {
                let store = self.store.clone();
                let path = self.claim_path();
                match self.run(async move { store.delete(&path).await }) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(io_error(e)),
                }
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn remove(&self, id: u64) -> Result<()> {
        let store = self.store.clone();
        let path = self.pack(id);
        match self.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fault(format!("deleting pack {id}"), e)),
        }
    }

    /// A pack no commit names was uploaded by a batch that never
    /// committed, or compacted away and not yet deleted; or the metadata is
    /// older than the bucket (restored from a backup, a copy of the store
    /// directory), and the pack holds photos no other copy has. The two
    /// cannot be told apart here, so such packs are kept and named in the
    /// notes: leaking a pack is a bug, deleting the only copy of a photo a
    /// disaster. A pack of a segment committed to the local disk and whole
    /// there at the pack's length is a copy a migration left behind, after
    /// the commit that moved the segment: it is deleted (a deletion that
    /// fails is a note, not a failed open); one the disk lacks is kept. A pack missing or shorter than its
    /// committed length is damage.
    fn reconcile(&self, committed: &BTreeMap<u64, u64>, elsewhere: &Elsewhere) -> Result<Reconciled> {
        let held = self.lengths()?;
        let mut out = Reconciled::default();
        for (&id, &len) in held.iter().filter(|(id, _)| !committed.contains_key(id)) {
            // The same bytes as the disk's whole copy: the pack's length is
            // the committed one.
            if elsewhere.get(&id) == Some(&Some(len)) {
                if let Err(e) = self.remove(id) {
                    out.notes.push(format!(
                        "kept pack {id}, a copy of local segment {id}, for now: deleting it failed ({e})"
                    ));
                }
                continue;
            }
            if elsewhere.contains_key(&id) {
                out.notes.push(format!(
                    "kept pack {id} ({len} bytes): segment {id} is committed to the local disk, \
                     and its file there is missing, short, or not this pack's length"
                ));
                continue;
            }
            out.notes.push(format!(
                "kept pack {id} ({len} bytes): no committed record refers to it \
                 (an upload cut off before its commit, or metadata older than the bucket)"
            ));
        }
        for (&id, &len) in committed {
            match held.get(&id) {
                None => {
                    out.damaged.push(id);
                    out.notes.push(format!("pack {id} is missing from {}", self.url));
                }
                Some(&actual) if actual < len => {
                    out.damaged.push(id);
                    out.notes
                        .push(format!("pack {id} is {actual} bytes, shorter than its committed {len}"));
                }
                Some(_) => {}
            }
        }
        out.highest = held.keys().chain(committed.keys()).max().copied().unwrap_or(0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let (bucket, prefix) = parse_url("s3://photos/family/keepsake/").unwrap();
        assert_eq!(bucket, "photos");
        assert_eq!(prefix.as_ref(), "family/keepsake");
        assert_eq!(parse_url("s3://photos").unwrap().1.as_ref(), "");
        for bad in [
            "photos",
            "s3://",
            "s3://Photos/x",
            "s3://a/x",
            "s3://photos/a//b",
            "file:///tmp",
        ] {
            assert_eq!(parse_url(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn pack_names_sort_as_their_ids() {
        assert_eq!(parse_pack_name(&pack_name(42)), Some(42));
        assert!(pack_name(9) < pack_name(10));
        assert_eq!(parse_pack_name("42.pack"), None);
        assert_eq!(parse_pack_name(&pack_name(7).replace(".pack", ".seg")), None);
    }

    #[test]
    fn the_secret_is_never_printed() {
        let mut opts = BucketOptions::new("s3://photos/p");
        opts.secret_access_key = Some("hunter2-very-secret".into());
        assert!(!format!("{opts:?}").contains("hunter2"));
    }
}
