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
/// hand out and take back: 32 lowercase hexadecimal digits, safe in a URL
/// path as they are.
///
/// An id is 128 random bits from the operating system, so it tells nothing
/// about other uploads (how many there were, when), and one cannot be
/// guessed: resumable-upload URLs are commonly treated as capabilities
/// (the IETF resumable-upload draft, §"Security Considerations"). It is
/// found only through its owner all the same; another user's id is unknown
/// to them.
///
/// ```
/// let id: keepsake::UploadId = "0123456789abcdef0123456789abcdef".parse().unwrap();
/// assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
/// assert!("12".parse::<keepsake::UploadId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId([u8; 16]);

impl UploadId {
    /// A fresh id from the operating system's random source.
    pub(crate) fn random() -> std::io::Result<Self> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        Ok(UploadId(b))
    }

    pub(crate) fn from_bytes(b: [u8; 16]) -> Self {
        UploadId(b)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl serde::Serialize for UploadId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The error of parsing an [`UploadId`] from text that is not one.
///
/// ```
/// let err = "not-an-id".parse::<keepsake::UploadId>().unwrap_err();
/// assert!(err.to_string().contains("32"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an upload id is 32 lowercase hexadecimal digits")]
pub struct InvalidUploadId;

impl FromStr for UploadId {
    type Err = InvalidUploadId;
    /// Takes exactly the text [`Display`](fmt::Display) gives: one spelling
    /// per id, so that ids compare as text too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidUploadId),
        };
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(InvalidUploadId);
        }
        let mut b = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            b[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(UploadId(b))
    }
}
