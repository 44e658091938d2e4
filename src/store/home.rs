//! Which home a store's sealed segments have: chosen when the store is
//! created, recorded in its metadata (the `blobs` key: a URL, never a
//! credential), and opened again at every open.

use std::path::Path;
use std::sync::Arc;

use super::StoreOptions;
use crate::blob::{Disk, Home, Homes, Site};
use crate::error::OpenError;
use crate::meta::{keys, Cf, Meta};

/// Where a store keeps its blobs: the URL recorded in its metadata, if any.
pub(crate) fn recorded(meta: &Meta) -> Result<Option<String>, OpenError> {
    let raw = meta
        .get_raw(Cf::Meta, keys::BLOBS)
        .map_err(|e| OpenError::Corrupt(e.to_string()))?;
    raw.map(|v| String::from_utf8(v).map_err(|_| OpenError::Corrupt("the blob store URL is not UTF-8".into())))
        .transpose()
}

/// Whether the store sends new segments to the local disk although it has
/// a bucket (a migration to the disk under way).
#[cfg(feature = "s3")]
fn writes_to_disk(meta: &Meta) -> Result<bool, OpenError> {
    Ok(meta
        .get_raw(Cf::Meta, keys::BLOBS_WRITES)
        .map_err(|e| OpenError::Corrupt(e.to_string()))?
        .is_some())
}

/// Opens the homes of the store at `root`: the local disk's segment
/// directory, and the bucket the store records if it does (reached as
/// `options.bucket` says, else as the AWS environment variables say). A
/// new store given a bucket records it. `holds_packs`: whether the store
/// has committed segments to its bucket.
///
/// # Errors
///
/// - [`OpenError::Blobs`] if the options name a bucket the store does not
///   record (another one, or a store whose blobs are on local disk), or
///   the store records a bucket and this build has no `s3` feature.
/// - [`OpenError::Io`] if the bucket's client cannot be made (a bad URL),
///   or the bucket answers that it is not this store's (or refuses the
///   request). A bucket that gives no answer is not an error: it is
///   checked when it is first needed ([`Homes::defer_bucket`]).
pub(crate) fn open(root: &Path, meta: &Meta, options: &StoreOptions, holds_packs: bool) -> Result<Homes, OpenError> {
    let disk: Arc<dyn Home> = Arc::new(Disk::new(options.fs.clone(), root.join(crate::blob::SEGMENTS_DIR)));
    let recorded = recorded(meta)?;
    #[cfg(feature = "s3")]
    {
        use crate::blob::BucketOptions;
        let chosen = match (recorded, &options.bucket) {
            (None, None) => return Ok(Homes::new(disk, None, Site::Disk)),
            (None, Some(wanted)) => {
                let fresh = meta
                    .is_empty(Cf::Segments)
                    .map_err(|e| OpenError::Database(e.to_string()))?
                    && meta
                        .is_empty(Cf::Blobs)
                        .map_err(|e| OpenError::Database(e.to_string()))?;
                if !fresh {
                    return Err(OpenError::Blobs(format!(
                        "the store at {} keeps its blobs on local disk; `keepsake migrate --blobs {}` moves them",
                        root.display(),
                        wanted.url
                    )));
                }
                let bucket = take_bucket(meta, wanted)?;
                return Ok(Homes::new(disk, Some(bucket), Site::Bucket));
            }
            (Some(url), None) => BucketOptions::from_env(url),
            (Some(url), Some(wanted)) if wanted.url == url => wanted.clone(),
            (Some(url), Some(wanted)) => {
                return Err(OpenError::Blobs(format!(
                    "the store at {} keeps its blobs in {url}, not {}",
                    root.display(),
                    wanted.url
                )))
            }
        };
        let bucket = Arc::new(open_bucket(&chosen)?);
        let claim = meta
            .get_raw(Cf::Meta, keys::BLOBS_CLAIM)
            .map_err(|e| OpenError::Corrupt(e.to_string()))?
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| OpenError::Corrupt("the store records a bucket but not its claim on it".into()))?;
        let writes = if writes_to_disk(meta)? {
            Site::Disk
        } else {
            Site::Bucket
        };
        let checked = bucket.check_claim(&claim, holds_packs);
        let homes = Homes::new(disk, Some(bucket.clone()), writes);
        match checked {
            Ok(()) => {}
            // A bucket that does not answer (an outage, a network down)
            // does not keep the store shut: its metadata, and blobs on the
            // local disk, are served, and the bucket is checked when it is
            // first written to (DESIGN.md §15).
            Err(crate::blob::Unchecked::Unanswered(e)) => homes.defer_bucket(
                Box::new(move || {
                    bucket
                        .check_claim(&claim, holds_packs)
                        .map_err(crate::blob::Unchecked::into_io)
                }),
                e.to_string(),
            ),
            Err(crate::blob::Unchecked::Refused(source)) => {
                return Err(OpenError::Io {
                    context: format!("checking that {} is this store's", chosen.url),
                    source,
                })
            }
        }
        Ok(homes)
    }
    #[cfg(not(feature = "s3"))]
    let _ = holds_packs;
    #[cfg(not(feature = "s3"))]
    match recorded {
        None => Ok(Homes::new(disk, None, Site::Disk)),
        Some(url) => Err(OpenError::Blobs(format!(
            "the store at {} keeps its blobs in {url}: this build of keepsake has no `s3` feature",
            root.display()
        ))),
    }
}

#[cfg(feature = "s3")]
fn open_bucket(o: &crate::blob::BucketOptions) -> Result<crate::blob::Bucket, OpenError> {
    crate::blob::Bucket::open(o).map_err(|source| OpenError::Io {
        context: format!("opening the bucket {}", o.url),
        source,
    })
}

/// Makes the bucket `wanted` this store's: records it, then claims its
/// prefix. The prefix becomes this store's: a second store given it would
/// take the first one's pack names and count its packs as its own.
/// Recorded first, then claimed: a creation or migration cut off between
/// the two is finished by the next open (see `Bucket::check_claim`); one
/// refused is undone.
///
/// # Errors
///
/// [`OpenError::Io`] if the bucket cannot be reached or its prefix is
/// another store's; [`OpenError::Database`] if the record cannot be written.
#[cfg(feature = "s3")]
pub(crate) fn take_bucket(meta: &Meta, wanted: &crate::blob::BucketOptions) -> Result<Arc<dyn Home>, OpenError> {
    use rocksdb::WriteBatch;
    let bucket = open_bucket(wanted)?;
    let claim = random_id()?;
    let mut b = WriteBatch::default();
    meta.batch_put(&mut b, Cf::Meta, keys::BLOBS, wanted.url.as_bytes());
    meta.batch_put(&mut b, Cf::Meta, keys::BLOBS_CLAIM, claim.as_bytes());
    meta.write(b).map_err(|e| OpenError::Database(e.to_string()))?;
    if let Err(source) = bucket.claim(&claim) {
        let mut undo = WriteBatch::default();
        meta.batch_delete(&mut undo, Cf::Meta, keys::BLOBS);
        meta.batch_delete(&mut undo, Cf::Meta, keys::BLOBS_CLAIM);
        let _ = meta.write(undo);
        return Err(OpenError::Io {
            context: format!("claiming {} for this store", wanted.url),
            source,
        });
    }
    Ok(Arc::new(bucket))
}

/// 128 random bits in hex: a store's claim on its bucket prefix.
#[cfg(feature = "s3")]
fn random_id() -> Result<String, OpenError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| OpenError::Io {
        context: "drawing the store's claim on its bucket".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
