//! `keepsake migrate --blobs URL|local`: moves a store's blobs into a
//! bucket, or back to the local disk, with a progress bar on a terminal.

use keepsake::{BlobHome, MigrateError, MigrateReport, Store};

use super::output::{bytes, Output};
use super::Failure;

/// What `--blobs` names: the local disk (`local`), or a bucket's URL.
pub(crate) fn destination(blobs: &str) -> Result<BlobHome, Failure> {
    if blobs == "local" {
        return Ok(BlobHome::LocalDisk);
    }
    if blobs.starts_with("s3://") {
        return Ok(BlobHome::Bucket(Box::new(keepsake::BucketOptions::from_env(blobs))));
    }
    Err(Failure::Usage(format!(
        "a migration goes to s3://BUCKET/PREFIX or to local, not {blobs:?}"
    )))
}

/// Runs the migration and reports it: exit status 1 if a segment was left
/// where it is (each named), 2 for a destination that cannot be this
/// store's, 5 while another migration runs.
pub(crate) fn migrate(store: &Store, blobs: &str, out: &Output) -> Result<(), Failure> {
    let to = destination(blobs)?;
    let bar = out.bytes_bar(0);
    let outcome = store.migrate_blobs(&to, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    });
    bar.finish_and_clear();
    let report = outcome.map_err(|e| Failure::Store {
        status: match e {
            MigrateError::Blobs(_) => 2,
            MigrateError::Busy => 5,
            _ => 1,
        },
        message: e.to_string(),
    })?;
    out.show(&report, || summary(&report))?;
    if report.done {
        Ok(())
    } else {
        Err(Failure::Status(1))
    }
}

/// A migration's outcome in lines.
pub(crate) fn summary(report: &MigrateReport) -> String {
    let mut s = format!(
        "{} segment(s) moved ({}), {} found copied already, {} damaged blob(s) moved as they were; new blobs go to {}",
        report.segments_moved,
        bytes(report.bytes_moved),
        report.segments_found_copied,
        report.damaged_blobs,
        report.blobs
    );
    for why in &report.left {
        s += &format!("\nleft {why}");
    }
    for note in &report.notes {
        s += &format!("\nnote: {note}");
    }
    if report.damaged_blobs > 0 {
        s += "\nthe damaged blobs are recorded: `keepsake verify --scrub` names their files, and backing those up again heals them";
    }
    s += match (report.done, report.left.is_empty()) {
        (true, _) => "\ndone: every blob is there",
        (false, true) => "\nnot done: run it again",
        (false, false) => {
            "\nnot done: a segment left for a reason above stays where it is until that is mended \
             (`keepsake verify --scrub` names what is damaged); the store serves it from there"
        }
    };
    s
}
