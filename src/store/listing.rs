//! Listings a page at a time: a user's live files, an album's files and the
//! trash, each in its index's order and resumed from a [`Cursor`], so that a
//! client (a phone syncing its library, `keepsake ls`) walks a library of
//! any size in the memory of one page.
//!
//! A page is read from the index in one forward pass, and the file records
//! it names in one batched read (see `Meta::get_near`). Pages of one walk
//! are separate reads: a file added or removed between two of them may be
//! listed or not, but no file that stays is listed twice or skipped, since
//! every listing's key order is fixed for the files in it.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

use super::library::FileInfo;
use super::User;
use crate::error::{Fault, LibraryError, Result};
use crate::ids::AlbumId;
use crate::meta::records::FileRecord;
use crate::meta::{decode, keys, Cf, Meta};

/// The largest page a listing returns, whatever was asked: enough that a
/// walk of a million files takes a hundred reads, little enough that a page
/// stays a few megabytes.
pub const MAX_PAGE: usize = 10_000;

/// Where a listing resumes: just after the last entry of the page before.
///
/// A cursor is a position in the listing's index, below the user's own key
/// prefix, which the store puts in front of it: a cursor that is made up,
/// or was handed to another user, positions nothing outside the listing of
/// the user who reads with it. Its text form (`Display` and `FromStr`,
/// lower-case hex) is what an HTTP client carries from one request to the
/// next.
///
/// ```
/// use keepsake::Cursor;
/// let c: Cursor = "00000000000000ff".parse().unwrap();
/// assert_eq!(c.to_string(), "00000000000000ff");
/// assert!("not hex".parse::<Cursor>().is_err());
/// assert!("00000000000000FF".parse::<Cursor>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(Vec<u8>);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A cursor's text that is not one: not an even number of lower-case hex
/// digits, or longer than any position a listing gives out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCursor;

impl fmt::Display for InvalidCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a listing cursor")
    }
}

impl std::error::Error for InvalidCursor {}

/// The longest position a listing gives out (an album id or a trash time,
/// and a file id, 8 bytes each), with room to spare.
const MAX_CURSOR: usize = 64;

impl FromStr for Cursor {
    type Err = InvalidCursor;

    fn from_str(s: &str) -> Result<Cursor, InvalidCursor> {
        if !s.len().is_multiple_of(2) || s.len() > 2 * MAX_CURSOR {
            return Err(InvalidCursor);
        }
        // Lower-case only, as `Display` writes it: one spelling per cursor.
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(InvalidCursor),
        };
        s.as_bytes()
            .chunks(2)
            .map(|pair| Ok((digit(pair[0])? << 4) | digit(pair[1])?))
            .collect::<Result<Vec<u8>, InvalidCursor>>()
            .map(Cursor)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Page<T> {
    /// The entries, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts: `Some` whenever this page is full (the
    /// next may then be empty), `None` when this page ends the listing.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// The whole listing of a user the store does not know yet.
    fn empty() -> Self {
        Page {
            items: Vec::new(),
            next: None,
        }
    }
}

/// Up to `limit` items made by `take` from the entries of `cf` under
/// `prefix` strictly after `after` (a position below `prefix`); `take` may
/// leave an entry out. The cursor is set when the page is full.
fn page_of<T>(
    meta: &Meta,
    cf: Cf,
    prefix: &[u8],
    after: Option<&Cursor>,
    limit: usize,
    mut take: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>,
) -> Result<(Vec<T>, Option<Cursor>)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let start = [prefix, after.map_or(&[][..], |c| &c.0)].concat();
    let mut items = Vec::new();
    let mut next = None;
    meta.scan_from(cf, prefix, &start, |k, v| {
        if after.is_some() && k == start.as_slice() {
            return Ok(ControlFlow::Continue(()));
        }
        items.extend(take(k, v)?);
        if items.len() == limit {
            next = Some(Cursor(k[prefix.len()..].to_vec()));
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok((items, next))
}

/// The files `ids` of user `uid`, in that order, read in one pass; an id
/// without a record (removed since its index entry was read) is left out.
fn files_of(meta: &Meta, uid: u64, ids: Vec<u64>) -> Result<Vec<FileInfo>> {
    let keys: Vec<_> = ids.iter().map(|&f| keys::file(uid, f)).collect();
    let records = meta.get_near::<FileRecord>(Cf::Files, &keys)?;
    Ok(ids
        .into_iter()
        .zip(records)
        .filter_map(|(id, f)| f.map(|f| FileInfo::new(id, f)))
        .collect())
}

impl User {
    /// A page of the user's live files (in albums or not), oldest first:
    /// up to `limit` of them (at least 1, at most [`MAX_PAGE`]) after
    /// `after`, the cursor of the page before (`None` for the first page).
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    ///
    /// ```
    /// use keepsake::{Content, DedupMode, Store};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path()).unwrap();
    /// let u = store.user("u").unwrap();
    /// let a = u.ensure_album("A").unwrap();
    /// for i in 0..5u8 {
    ///     u.upload(a, &format!("{i}.jpg"), Content::from(vec![i]), DedupMode::Hash).unwrap();
    /// }
    /// let (mut seen, mut after) = (Vec::new(), None);
    /// loop {
    ///     let page = u.files_page(after.as_ref(), 2).unwrap();
    ///     seen.extend(page.items.into_iter().map(|f| f.name.to_string()));
    ///     match page.next {
    ///         Some(next) => after = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen, ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]);
    /// ```
    pub fn files_page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page<FileInfo>, LibraryError> {
        let meta = &self.inner().meta;
        let Some(uid) = self.id()? else {
            return Ok(Page::empty());
        };
        let (items, next) = page_of(meta, Cf::Files, &keys::u64_key(uid), after, limit, |k, v| {
            let f: FileRecord = decode(v)?;
            Ok(f.trashed_ms.is_none().then(|| FileInfo::new(keys::last_u64(k), f)))
        })?;
        Ok(Page { items, next })
    }

    /// A page of the live files in `album`, oldest first (see
    /// [`files_page`](Self::files_page) for `after` and `limit`).
    ///
    /// # Errors
    ///
    /// - [`LibraryError::UnknownAlbum`] if the user has no such album (another user's
    ///   album id is unknown too).
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn album_files_page(
        &self,
        album: AlbumId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page<FileInfo>, LibraryError> {
        let meta = &self.inner().meta;
        let missing = || Fault::UnknownAlbum(album.to_string());
        let uid = self.id()?.ok_or_else(missing)?;
        let prefix = keys::album(uid, album.0);
        if meta.get_raw(Cf::Albums, &prefix)?.is_none() {
            return Err(missing().into());
        }
        let (ids, next) = page_of(meta, Cf::Members, &prefix, after, limit, |k, _| {
            Ok(Some(keys::last_u64(k)))
        })?;
        Ok(Page {
            items: files_of(meta, uid, ids)?,
            next,
        })
    }

    /// A page of the user's trash, oldest deletion first (see
    /// [`files_page`](Self::files_page) for `after` and `limit`).
    ///
    /// # Errors
    ///
    /// - [`LibraryError::Storage`] if the metadata database fails or holds a corrupt
    ///   record.
    pub fn trash_page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page<FileInfo>, LibraryError> {
        let meta = &self.inner().meta;
        let Some(uid) = self.id()? else {
            return Ok(Page::empty());
        };
        let (ids, next) = page_of(meta, Cf::Trash, &keys::u64_key(uid), after, limit, |k, _| {
            Ok(Some(keys::last_u64(k)))
        })?;
        Ok(Page {
            items: files_of(meta, uid, ids)?,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Content, DedupMode};
    use crate::Store;

    /// Walks every page of `page` with pages of `limit`.
    fn walk(limit: usize, page: impl Fn(Option<&Cursor>, usize) -> Page<FileInfo>) -> Vec<u64> {
        let (mut ids, mut after) = (Vec::new(), None);
        loop {
            let p = page(after.as_ref(), limit);
            assert!(p.items.len() <= limit.clamp(1, MAX_PAGE));
            ids.extend(p.items.iter().map(|f| f.id.0));
            match p.next {
                Some(next) => after = Some(next),
                None => return ids,
            }
        }
    }

    #[test]
    fn every_page_size_lists_what_the_whole_listing_lists_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let u = store.user("u").unwrap();
        let (a, b) = (u.ensure_album("A").unwrap(), u.ensure_album("B").unwrap());
        let mut ids = Vec::new();
        for i in 0..23u8 {
            let album = if i % 3 == 0 { b } else { a };
            ids.push(
                u.upload(album, "x.jpg", Content::from(vec![i]), DedupMode::Hash)
                    .unwrap()
                    .file_id,
            );
        }
        for &f in ids.iter().step_by(4) {
            u.delete(f).unwrap();
        }
        let whole = |v: Vec<FileInfo>| v.into_iter().map(|f| f.id.0).collect::<Vec<_>>();
        for limit in [0, 1, 2, 7, 22, 23, 100] {
            assert_eq!(
                walk(limit, |c, l| u.files_page(c, l).unwrap()),
                whole(u.files().unwrap())
            );
            assert_eq!(
                walk(limit, |c, l| u.album_files_page(a, c, l).unwrap()),
                whole(u.album_files(a).unwrap())
            );
            assert_eq!(
                walk(limit, |c, l| u.trash_page(c, l).unwrap()),
                whole(u.trash().unwrap())
            );
        }
    }

    #[test]
    fn another_users_cursor_lists_only_the_readers_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (u, v) = (store.user("u").unwrap(), store.user("v").unwrap());
        let (ua, va) = (u.ensure_album("A").unwrap(), v.ensure_album("A").unwrap());
        for i in 0..4u8 {
            u.upload(ua, "x", Content::from(vec![i]), DedupMode::Hash).unwrap();
            v.upload(va, "x", Content::from(vec![i + 10]), DedupMode::Hash).unwrap();
        }
        let theirs = v.files_page(None, 1).unwrap().next.unwrap();
        let mine: Vec<_> = u.files().unwrap().into_iter().map(|f| f.id).collect();
        let page = u.files_page(Some(&theirs), MAX_PAGE).unwrap();
        assert!(page.items.iter().all(|f| mine.contains(&f.id)));
        let made_up: Cursor = "ffffffffffffffffffffffffffffffff".parse().unwrap();
        assert!(u.files_page(Some(&made_up), 10).unwrap().items.is_empty());
        // Album ids are the user's own: v's second album is none of u's.
        let vb = v.ensure_album("B").unwrap();
        assert!(matches!(
            u.album_files_page(vb, None, 10),
            Err(LibraryError::UnknownAlbum(_))
        ));
    }
}
