//! Which home a store's sealed segments have: chosen when the store is
//! created, recorded in its metadata (the `blobs` key: a URL, never a
//! credential), and opened again at every open.

use std::path::Path;
use std::sync::Arc;

use super::StoreOptions;
use crate::blob::{Disk, Home};
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

/// Opens the home of the store at `root`: the local disk's segment
/// directory, or the bucket the store records (reached as
/// `options.bucket` says, else as the AWS environment variables say). A
/// new store given a bucket records it.
///
/// # Errors
///
/// - [`OpenError::Blobs`] if the options name a bucket the store does not
///   record (another one, or a store whose blobs are on local disk), or
///   the store records a bucket and this build has no `s3` feature.
/// - [`OpenError::Io`] if the bucket's client cannot be made (a bad URL).
pub(crate) fn open(root: &Path, meta: &Meta, options: &StoreOptions) -> Result<Arc<dyn Home>, OpenError> {
    let disk = || -> Arc<dyn Home> { Arc::new(Disk::new(options.fs.clone(), root.join(crate::blob::SEGMENTS_DIR))) };
    let recorded = recorded(meta)?;
    #[cfg(feature = "s3")]
    {
        use crate::blob::{Bucket, BucketOptions};
        use rocksdb::WriteBatch;
        let open_bucket = |o: &BucketOptions| {
            Bucket::open(o).map_err(|source| OpenError::Io {
                context: format!("opening the bucket {}", o.url),
                source,
            })
        };
        let chosen = match (recorded, &options.bucket) {
            (None, None) => return Ok(disk()),
            (None, Some(wanted)) => {
                let fresh = meta
                    .is_empty(Cf::Segments)
                    .map_err(|e| OpenError::Database(e.to_string()))?
                    && meta
                        .is_empty(Cf::Blobs)
                        .map_err(|e| OpenError::Database(e.to_string()))?;
                if !fresh {
                    return Err(OpenError::Blobs(format!(
                        "the store at {} keeps its blobs on local disk; a bucket is chosen when a store is created",
                        root.display()
                    )));
                }
                let bucket = open_bucket(wanted)?;
                // The prefix becomes this store's: a second store given it
                // would take the first one's pack names and count its packs
                // as its own. Recorded first, then claimed: a creation cut
                // off between the two is finished by the next open (see
                // `Bucket::check_claim`); one refused is undone.
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
                return Ok(Arc::new(bucket));
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
        let bucket = open_bucket(&chosen)?;
        let claim = meta
            .get_raw(Cf::Meta, keys::BLOBS_CLAIM)
            .map_err(|e| OpenError::Corrupt(e.to_string()))?
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| OpenError::Corrupt("the store records a bucket but not its claim on it".into()))?;
        bucket.check_claim(&claim).map_err(|source| OpenError::Io {
            context: format!("checking that {} is this store's", chosen.url),
            source,
        })?;
        Ok(Arc::new(bucket))
    }
    #[cfg(not(feature = "s3"))]
    match recorded {
        None => Ok(disk()),
        Some(url) => Err(OpenError::Blobs(format!(
            "the store at {} keeps its blobs in {url}: this build of keepsake has no `s3` feature",
            root.display()
        ))),
    }
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
