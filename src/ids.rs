//! Identifiers of albums, files and upload sessions.
//!
//! Album and file ids are allocated per user, from 1, in creation order.
//! Every id is scoped to its user: the same value names different things for
//! different users, and another user's id behaves exactly like one that does
//! not exist.

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id_type!(
    /// A user's file. Lower ids are older files, which is how ties between
    /// several duplicates are broken deterministically.
    ///
    /// ```
    /// let id: keepsake::FileId = "42".parse().unwrap();
    /// assert_eq!(id.to_string(), "42");
    /// ```
    FileId
);

id_type!(
    /// A user's album. Albums are renamed without changing their id.
    ///
    /// ```
    /// let id = keepsake::AlbumId(7);
    /// assert_eq!(id.to_string(), "7");
    /// ```
    AlbumId
);

/// A resumable upload session, as [`User::begin_upload`](crate::User::begin_upload)
/// opens it and a client names it to resume: in a URL, in a file of its
/// own. Its text form ([`Display`](fmt::Display), [`FromStr`]) is the one to
/// hand out and take back; what it holds is not part of the API.
///
/// ```
/// let id: keepsake::UploadId = "12".parse().unwrap();
/// assert_eq!(id.to_string(), "12");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UploadId(u64);

impl UploadId {
    pub(crate) fn new(id: u64) -> Self {
        UploadId(id)
    }

    pub(crate) fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UploadId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(UploadId)
    }
}
