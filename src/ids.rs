//! Identifiers of albums and files.
//!
//! Ids are allocated per user, from 1, in creation order. They are scoped to
//! their user: the same number names different things for different users,
//! and another user's id behaves exactly like one that does not exist.

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
