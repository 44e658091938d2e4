//! Files removed only after the commit that stops the metadata naming them.
//!
//! A segment, a session's staged bytes or a spooled stream may be removed
//! only once no committed metadata (and no upload still to commit) can point
//! into it. Every removal of such a file goes through a [`DeleteSet`],
//! filled inside the transaction that drops the last reference and carried
//! out after that transaction is durable, by [`Inner::commit_then_delete`].
//! A crash in between leaves a file that nothing names; recovery at the next
//! open removes it (orphan segments in the blob log, orphan staged files in
//! [`staging`](super::staging)).

use std::io::ErrorKind;
use std::path::PathBuf;

use super::{staging, Inner};
use crate::error::{Fault, Result};
use crate::meta::txn::Txn;

/// Files to remove once a commit is durable.
#[derive(Debug, Default)]
#[must_use = "a delete set does nothing until it is carried out after its commit"]
pub(crate) struct DeleteSet {
    segments: Vec<u64>,
    sessions: Vec<u64>,
    streams: Vec<PathBuf>,
}

impl DeleteSet {
    /// Segment `id`, which the commit empties.
    pub(crate) fn segment(&mut self, id: u64) {
        self.segments.push(id);
    }

    /// The staged bytes of upload session `id`, whose record the commit
    /// deletes.
    pub(crate) fn session(&mut self, id: u64) {
        self.sessions.push(id);
    }

    /// A stream spooled to `staging/` for an upload, once its upload is done
    /// with it (committed or failed).
    pub(crate) fn stream(&mut self, path: PathBuf) {
        self.streams.push(path);
    }
}

impl Inner {
    /// Runs `work` as a durable transaction, then removes the files it put
    /// in the set.
    ///
    /// # Errors
    ///
    /// What `work` or the commit returns (nothing is removed then), or the
    /// first failed removal ([`Fault::Io`]; the commit stands, and the file
    /// is removed at the next open).
    pub(crate) fn commit_then_delete<R, F>(&self, work: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'m> FnOnce(&mut Txn<'m>, &mut DeleteSet) -> Result<R> + Send + 'static,
    {
        let (r, doomed) = self.commit(move |txn| {
            let mut doomed = DeleteSet::default();
            let r = work(txn, &mut doomed)?;
            Ok((r, doomed))
        })?;
        self.delete(doomed)?;
        Ok(r)
    }

    /// Removes every file of `set`, which no committed metadata names: all
    /// are tried, the first failure is returned. A file already gone is not
    /// an error.
    ///
    /// # Errors
    ///
    /// [`Fault::Io`] for the first removal that failed.
    pub(crate) fn delete(&self, set: DeleteSet) -> Result<()> {
        let mut first = Ok(());
        let mut keep = |r: Result<()>| {
            if first.is_ok() {
                first = r;
            }
        };
        for id in set.segments {
            keep(self.blobs.remove_segment(id));
        }
        let fs = &*self.options.fs;
        let sessions = set.sessions.into_iter().map(|id| {
            self.sessions.forget(id);
            staging::session_path(&self.root, id)
        });
        for path in sessions.chain(set.streams) {
            match fs.remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    keep(Err(Fault::io(format!("removing {}", path.display()), e)))
                }
                _ => {}
            }
        }
        first
    }
}
