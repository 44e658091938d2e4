//! Reading a user's source files safely: how one is opened (never through a
//! symbolic link, never blocking, only a regular file, only the one that was
//! seen) and how a read tells that the file was written meanwhile.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Fault, Result};
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
