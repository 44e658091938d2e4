//! Reading a user's source files safely: how one is opened (never through a
//! symbolic link, never blocking, only a regular file, only the one that was
//! seen), how a read tells that the file was written meanwhile, and
//! whether a file still holds the content it was recorded with.

use std::cell::RefCell;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Fault, Result};
use crate::hash::{hash_reader, read_full, ContentHash, HASH_CHUNK};
use crate::stamp::Stamp;

/// Opens a source file to read it, and its metadata: never through a
/// symbolic link (`O_NOFOLLOW`, so not even one swapped in after a walk saw
/// a file), never blocking (`O_NONBLOCK`: a FIFO or a device swapped in
/// does not hang the upload), and only if the open descriptor is a regular
/// file (`fstat` on it, not on the path). With `seen`, the open file must
/// also be that file in that version: a file replaced, or written, since
/// the caller looked at it is not read.
///
/// # Errors
///
/// [`Fault::NotAFile`] for a symbolic link, FIFO, socket or device;
/// [`Fault::ContentChanged`] if the file is not the one `seen` describes;
/// [`Fault::Io`] if opening or `fstat` fails otherwise.
pub(crate) fn open(path: &Path, what: &str, seen: Option<Stamp>) -> Result<(File, Metadata)> {
    let not_a_file = || Fault::NotAFile(what.to_string());
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_a_file(),
            _ => Fault::io(format!("opening {what}"), e),
        })?;
    let meta = f.metadata().map_err(|e| Fault::io(format!("reading {what}"), e))?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    if seen.is_some_and(|s| s != Stamp::of(&meta)) {
        return Err(Fault::ContentChanged(what.to_string()));
    }
    Ok((f, meta))
}

/// Whether a file read whole was left alone while it was read: `read`
/// bytes came out, as many as its size said, and its stamp after the read
/// is the one before it.
pub(crate) fn undisturbed(before: &Metadata, after: &Metadata, read: usize) -> bool {
    read as u64 == before.len() && Stamp::of(before) == Stamp::of(after)
}

/// Whether the file at `path` is still the one seen as `seen` and its
/// bytes still hash to `hash`, read as [`open`] reads (no link followed)
/// and left alone while read. Any failure to open or read it answers
/// `false`: the caller then uploads it, and the upload reports the error.
///
/// A file smaller than a hashing chunk is read whole into a buffer the
/// thread keeps, and hashed on this thread, as the ingest pipeline's
/// workers do (callers run one file per core); a larger one is streamed.
pub(crate) fn hashes_to(path: &Path, seen: Stamp, hash: &ContentHash) -> bool {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let Ok((mut f, before)) = open(path, "", Some(seen)) else {
        return false;
    };
    let got = match usize::try_from(before.len()) {
        Ok(len) if len < HASH_CHUNK => BUFFER.with_borrow_mut(|buf| {
            // One byte of room past the size tells a file that grew.
            buf.resize(buf.len().max(len + 1), 0);
            read_full(&mut f, &mut buf[..=len]).map(|n| (n, ContentHash::of_on_this_thread(&buf[..n])))
        }),
        _ => hash_reader(&mut f).map(|(h, n)| (usize::try_from(n).unwrap_or(usize::MAX), h)),
    };
    let Ok((read, got)) = got else {
        return false;
    };
    f.metadata().is_ok_and(|after| undisturbed(&before, &after, read)) && got == *hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_read_whole_counts_as_disturbed_if_its_stamp_or_length_read_moved() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("IMG.JPG");
        std::fs::write(&file, vec![5u8; 100_000]).unwrap();
        let before = std::fs::metadata(&file).unwrap();
        let len = before.len() as usize;
        assert!(undisturbed(&before, &std::fs::metadata(&file).unwrap(), len));
        // Fewer or more bytes than the size said: written meanwhile.
        assert!(!undisturbed(&before, &before, len - 1));
        assert!(!undisturbed(&before, &before, len + 1));
        // A write that keeps the size moves the modification time.
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(before.modified().unwrap() + std::time::Duration::from_secs(1))
            .unwrap();
        assert!(!undisturbed(&before, &std::fs::metadata(&file).unwrap(), len));
        // An append moves the size, whatever the time says; and restoring
        // both still moves the change time.
        f.set_len(before.len() + 1).unwrap();
        f.set_len(before.len()).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (after.len(), after.modified().unwrap()),
            (before.len(), before.modified().unwrap())
        );
        assert!(!undisturbed(&before, &after, len));
    }
}
