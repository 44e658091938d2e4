//! Validation of user, album and file names.
//!
//! Names are stored and compared as exact UTF-8 bytes (no case folding, no
//! Unicode normalisation: two names a user can tell apart stay apart). What
//! is refused is what would be dangerous or meaningless for an embedding
//! server that turns names back into paths or lines of output.

use crate::error::{NameError, NameKind};

/// The longest name accepted, in bytes: the usual file-system limit.
pub const MAX_NAME_BYTES: usize = 255;

fn refuse(kind: NameKind, name: &str, reason: &'static str) -> NameError {
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    NameError {
        kind,
        name: shown,
        reason,
    }
}

fn check_common(kind: NameKind, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(refuse(kind, name, "is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(kind, name, "is longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(refuse(kind, name, "contains a control character"));
    }
    if name.trim().is_empty() {
        return Err(refuse(kind, name, "is only white space"));
    }
    Ok(())
}

/// A file name is one path component: no separators, not `.` or `..`.
pub(crate) fn check_file_name(name: &str) -> Result<(), NameError> {
    check_common(NameKind::File, name)?;
    if name.contains('/') || name.contains('\\') {
        return Err(refuse(NameKind::File, name, "contains a path separator"));
    }
    if name == "." || name == ".." {
        return Err(refuse(NameKind::File, name, "is a relative path"));
    }
    Ok(())
}

/// Album names may contain `/` ("2024/Summer"): they never become paths.
pub(crate) fn check_album_name(name: &str) -> Result<(), NameError> {
    check_common(NameKind::Album, name)
}

pub(crate) fn check_user_name(name: &str) -> Result<(), NameError> {
    check_common(NameKind::User, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_file_names_are_refused() {
        for bad in ["", "a/b", "..", ".", "a\0b", "x\ny", "\\evil", " ", &"x".repeat(256)] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["IMG_0001.JPG", "été 2024.heic", "a..b", &"x".repeat(255)] {
            check_file_name(good).unwrap();
        }
    }

    #[test]
    fn album_names_may_contain_slashes() {
        check_album_name("2024/Summer").unwrap();
        assert!(check_album_name("a\u{7}").is_err());
    }
}
