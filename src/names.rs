//! Names: what a file, album or user may be called, how names are compared,
//! and [`FileName`], a file's name as the user's disk gave it.
//!
//! Names are kept exactly as given (the bytes the user chose, for display
//! and restore) and compared after Unicode normalisation to NFC: the same
//! photo named `Café Crème.jpg` on Linux (composed, NFC) and on macOS
//! (decomposed, NFD) is one name, and two albums that print identically are
//! one album. There is no case folding: `IMG.jpg` and `img.jpg` are two
//! files on Linux, and stay two.
//!
//! A file name is whatever one path component on the disk can be, UTF-8 or
//! not (Latin-1 names from old cameras and zip files), newlines, tabs and
//! backslashes included: only what cannot be one component is refused.
//! Album names are chosen by users and shown to other people, so they are
//! held to more: nothing a person cannot see or tell apart.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use crate::error::{NameError, NameKind};

/// The longest name accepted, in bytes: the usual file-system limit.
pub const MAX_NAME_BYTES: usize = 255;

/// A file's name: any bytes one path component may hold, kept exactly.
///
/// Most names are UTF-8, and a `FileName` is made from a `&str` or `String`
/// by `into()`; a name from the disk that is not UTF-8 comes from its
/// `OsStr` (or its bytes) and is stored losslessly. [`Display`](fmt::Display)
/// shows it escaped, so that no name can confuse a terminal or a line of
/// output: `\\` for a backslash, `\n`, `\t`, `\r`, `\xNN` for another
/// control character or a byte that is not UTF-8, `\u{NNNN}` for an
/// invisible or bidirectional formatting character. With `serde`, a name is
/// a string: itself when it is UTF-8, else its escaped form (the exact
/// bytes are [`as_bytes`](Self::as_bytes)).
///
/// Names compare equal only when their bytes are equal; the store's
/// duplicate rules compare them after normalisation to Unicode NFC, so that
/// the same name typed on Linux (composed) and on macOS (decomposed) is one
/// name (`DESIGN.md` §11).
///
/// ```
/// use keepsake::FileName;
/// use std::ffi::OsStr;
/// use std::os::unix::ffi::OsStrExt;
/// let latin1 = FileName::from(OsStr::from_bytes(b"Caf\xe9.jpg"));
/// assert_eq!(latin1.to_str(), None);
/// assert_eq!(latin1.to_string(), r"Caf\xe9.jpg");
/// assert_eq!(latin1.as_bytes(), b"Caf\xe9.jpg");
/// let two_lines = FileName::from("a\nb.jpg");
/// assert_eq!(two_lines.to_string(), r"a\nb.jpg");
/// assert_eq!(FileName::from("IMG_1.JPG"), "IMG_1.JPG");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileName(Vec<u8>);

impl FileName {
    /// The name's bytes, as the disk gave them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The name as a string, bytes that are not UTF-8 replaced by U+FFFD:
    /// for matching and sorting, never for restoring.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The name as an `OsStr`, exactly: what a restore names the file.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// The form the duplicate rules compare: NFC for a UTF-8 name, the
    /// bytes themselves for any other (which no normalisation applies to).
    pub(crate) fn comparable(&self) -> Cow<'_, [u8]> {
        match self.to_str() {
            Some(s) => match comparable(s) {
                Cow::Borrowed(_) => Cow::Borrowed(&self.0),
                Cow::Owned(n) => Cow::Owned(n.into_bytes()),
            },
            None => Cow::Borrowed(&self.0),
        }
    }

    /// Whether the duplicate rules count `self` and `other` as one name.
    pub(crate) fn same_as(&self, other: &FileName) -> bool {
        self.comparable() == other.comparable()
    }
}

/// Writes `bytes` escaped as [`FileName`]'s `Display` describes: valid,
/// visible UTF-8 as it is, everything else as an escape.
pub(crate) fn write_escaped(f: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    // Most names are printable ASCII with no backslash: one check of the
    // bytes, and one slice out, rather than a test of each character.
    if bytes.iter().all(|&b| matches!(b, b' '..=b'~') && b != b'\\') {
        if let Ok(plain) = std::str::from_utf8(bytes) {
            return f.write_str(plain);
        }
    }
    for chunk in bytes.utf8_chunks() {
        // Runs of characters shown as they are go out as one slice: a
        // listing of many names spends its time here.
        let valid = chunk.valid();
        let mut plain = 0;
        for (at, c) in valid.char_indices() {
            let escaped = matches!(c, '\\' | '\n' | '\t' | '\r') || c.is_control() || is_invisible(c);
            if !escaped {
                continue;
            }
            f.write_str(&valid[plain..at])?;
            plain = at + c.len_utf8();
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:04x}}}", c as u32)?,
            }
        }
        f.write_str(&valid[plain..])?;
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileName(\"{self}\")")
    }
}

impl From<&str> for FileName {
    fn from(s: &str) -> Self {
        FileName(s.as_bytes().to_vec())
    }
}

impl From<String> for FileName {
    fn from(s: String) -> Self {
        FileName(s.into_bytes())
    }
}

impl From<&String> for FileName {
    fn from(s: &String) -> Self {
        FileName(s.as_bytes().to_vec())
    }
}

impl From<&OsStr> for FileName {
    fn from(s: &OsStr) -> Self {
        FileName(s.as_bytes().to_vec())
    }
}

impl From<OsString> for FileName {
    fn from(s: OsString) -> Self {
        FileName(s.into_vec())
    }
}

impl From<Vec<u8>> for FileName {
    fn from(b: Vec<u8>) -> Self {
        FileName(b)
    }
}

impl From<&FileName> for FileName {
    fn from(n: &FileName) -> Self {
        n.clone()
    }
}

impl PartialEq<str> for FileName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for FileName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<String> for FileName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_bytes()
    }
}

impl serde::Serialize for FileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_str() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

/// `name` in the form names are compared in: NFC.
pub(crate) fn comparable(name: &str) -> Cow<'_, str> {
    match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => Cow::Borrowed(name),
        _ => Cow::Owned(name.nfc().collect()),
    }
}

/// Characters a person cannot see, or that reorder what they see: the
/// bidirectional formatting characters (U+202E, RIGHT-TO-LEFT OVERRIDE,
/// shows `gpj.exe` as `exe.jpg`), zero-width and other invisible characters,
/// and the line and paragraph separators. The zero-width joiner and
/// non-joiner are not among them: emoji sequences (👨‍👩‍👧) and Persian and
/// Indic scripts need them, and they are visible in their effect.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}' // soft hyphen
            | '\u{034f}' // combining grapheme joiner
            | '\u{061c}' // Arabic letter mark
            | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
            | '\u{17b4}' | '\u{17b5}' // Khmer inherent vowels
            | '\u{180e}' // Mongolian vowel separator
            | '\u{200b}' // zero-width space
            | '\u{200e}' | '\u{200f}' // left-to-right and right-to-left marks
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidirectional isolates
            | '\u{206a}'..='\u{206f}' // deprecated format characters
            | '\u{feff}' // zero-width no-break space
            | '\u{fff9}'..='\u{fffb}' // interlinear annotation
    )
}

fn refuse(kind: NameKind, name: &str, reason: &'static str) -> NameError {
    let mut shown = String::new();
    let _ = write_escaped(&mut shown, name.as_bytes());
    if shown.chars().count() > 64 {
        shown = shown.chars().take(64).collect();
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

/// A file name is one path component, whatever else it holds: not empty,
/// at most 255 bytes, no `/` and no NUL, not `.` or `..`.
pub(crate) fn check_file_name(name: &FileName) -> Result<(), NameError> {
    let b = name.as_bytes();
    let shown = name.to_string_lossy();
    let refuse = |reason| Err(refuse(NameKind::File, &shown, reason));
    if b.is_empty() {
        return refuse("is empty");
    }
    if b.len() > MAX_NAME_BYTES {
        return refuse("is longer than 255 bytes");
    }
    if b.contains(&b'/') {
        return refuse("contains a path separator");
    }
    if b.contains(&0) {
        return refuse("contains a NUL byte");
    }
    if b == b"." || b == b".." {
        return refuse("is a relative path");
    }
    Ok(())
}

/// An album name someone creates (or renames to): one a person can read
/// and tell apart from others, since albums are shown to other people. No
/// control, invisible or bidirectional formatting character, no white space
/// at either end. Album names may contain `/` ("2024/Summer"): they never
/// become paths.
pub(crate) fn check_album_name(name: &str) -> Result<(), NameError> {
    check_common(NameKind::Album, name)?;
    if name.chars().any(is_invisible) {
        return Err(refuse(
            NameKind::Album,
            name,
            "contains an invisible or bidirectional formatting character",
        ));
    }
    if name.trim() != name {
        return Err(refuse(NameKind::Album, name, "begins or ends with white space"));
    }
    Ok(())
}

/// An album name looked up: the common rules only, so that an album named
/// before the stricter rules of [`check_album_name`] is still found.
pub(crate) fn check_album_lookup(name: &str) -> Result<(), NameError> {
    check_common(NameKind::Album, name)
}

pub(crate) fn check_user_name(name: &str) -> Result<(), NameError> {
    check_common(NameKind::User, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cannot_be_one_path_component_is_refused_as_a_file_name() {
        let long = "x".repeat(256);
        for bad in ["", "a/b", "..", ".", "a\0b", &long] {
            assert!(check_file_name(&FileName::from(bad)).is_err(), "{bad:?} accepted");
        }
        let latin1 = FileName::from(b"caf\xe9.jpg".to_vec());
        for good in [
            "IMG_0001.JPG",
            "été 2024.heic",
            "a..b",
            "x\ny",
            "tab\there",
            "\\evil",
            " ",
            &"x".repeat(255),
        ] {
            check_file_name(&FileName::from(good)).unwrap();
        }
        check_file_name(&latin1).unwrap();
    }

    #[test]
    fn names_are_compared_in_nfc_and_kept_as_given() {
        let nfc = FileName::from("Caf\u{e9} Cr\u{e8}me.jpg");
        let nfd = FileName::from("Cafe\u{301} Cre\u{300}me.jpg");
        assert_ne!(nfc, nfd, "the bytes differ, and are kept");
        assert!(nfc.same_as(&nfd));
        assert_eq!(comparable("Cafe\u{301}"), "Caf\u{e9}");
        let latin1 = FileName::from(b"caf\xe9".to_vec());
        assert!(
            !latin1.same_as(&FileName::from("caf\u{e9}")),
            "bytes that are not UTF-8 are not text"
        );
    }

    #[test]
    fn names_are_shown_escaped_and_losslessly() {
        let n = FileName::from(b"a\\b\nc\td\x1b[31m\xff\xe2\x80\xaegpj.exe".to_vec());
        assert_eq!(n.to_string(), r"a\\b\nc\td\x1b[31m\xff\u{202e}gpj.exe");
        assert_eq!(
            FileName::from("été 👨\u{200d}👩.jpg").to_string(),
            "été 👨\u{200d}👩.jpg"
        );
    }

    #[test]
    fn album_names_a_person_cannot_tell_apart_are_refused() {
        check_album_name("2024/Summer").unwrap();
        check_album_name("👨\u{200d}👩\u{200d}👧 Family").unwrap();
        for bad in [
            "a\u{7}",
            "Summer\u{202e}",
            "Sum\u{200b}mer",
            "a\u{2028}b",
            " Summer",
            "Summer ",
            "\u{feff}x",
        ] {
            assert!(check_album_name(bad).is_err(), "{bad:?} accepted");
        }
        check_album_lookup("Summer ").unwrap();
    }
}
