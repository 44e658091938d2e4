//! The JSON shapes both faces print: the HTTP API's bodies and the CLI's
//! `--json` lines are the same objects, so a script moves from one to the
//! other unchanged.

use serde::Serialize;

use crate::names::FileName;
use crate::store::{AlbumInfo, FileInfo};

/// A file name as JSON carries it: `name` is the name itself when it is
/// UTF-8 (JSON escapes what it must), else its escaped form
/// ([`FileName`]'s `Display`: `\xNN` for each byte that is not UTF-8), with
/// `name_hex`, the name's bytes in hex, beside it, so that nothing is lost
/// and an escaped name is never mistaken for a name that reads the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonName {
    /// The name, or its escaped form.
    pub name: String,
    /// The name's bytes in hex, only for a name that is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
}

impl JsonName {
    /// The JSON form of `name`.
    ///
    /// ```
    /// use keepsake::http::JsonName;
    /// use keepsake::FileName;
    /// let n = JsonName::of(&FileName::from(b"caf\xe9.jpg".to_vec()));
    /// assert_eq!((n.name.as_str(), n.name_hex.as_deref()), ("caf\\xe9.jpg", Some("636166e92e6a7067")));
    /// ```
    pub fn of(name: &FileName) -> JsonName {
        match name.to_str() {
            Some(s) => JsonName {
                name: s.to_string(),
                name_hex: None,
            },
            None => JsonName {
                name: name.to_string(),
                name_hex: Some(name.as_bytes().iter().map(|b| format!("{b:02x}")).collect()),
            },
        }
    }
}

/// A file as `keepsake ls --json` prints it and `GET /v1/files` lists it:
/// `{"file_id", "name", ["name_hex"], "hash", "size", "albums",
/// ["trashed_ms"], ["modified"]}`, with album names, not ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileJson {
    /// The file's id.
    pub file_id: u64,
    /// Its name.
    #[serde(flatten)]
    pub name: JsonName,
    /// Its content's BLAKE3 hash, hex.
    pub hash: String,
    /// Its size in bytes.
    pub size: u64,
    /// The names of the albums it is in (or was in, for a trashed file).
    pub albums: Vec<String>,
    /// When it went to the trash, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trashed_ms: Option<u64>,
    /// The source's modification time, RFC 3339 in UTC, to the nanosecond.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl FileJson {
    /// `file` as listed, its album ids named from `albums` (the user's).
    pub fn new(file: &FileInfo, albums: &[AlbumInfo]) -> FileJson {
        let name_of = |id| albums.iter().find(|a| a.id == id).map(|a| a.name.clone());
        FileJson {
            file_id: file.id.0,
            name: JsonName::of(&file.name),
            hash: file.hash.to_string(),
            size: file.size,
            albums: file.albums.iter().filter_map(|a| name_of(*a)).collect(),
            trashed_ms: file.trashed_ms,
            modified: file
                .modified
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.to_string()),
        }
    }
}
