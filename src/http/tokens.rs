//! The bearer tokens of `keepsake serve`: created by `keepsake token
//! create`, kept only as hashes in a file beside the store's metadata.
//!
//! The file (`tokens` in the store directory) is separate from the
//! metadata database so that tokens can be created and revoked while a
//! server holds the store open: the server looks at the file's stamp on
//! each request with a token and reads it again when it changed. Writers
//! take `tokens.lock` and replace the file whole (a temporary file,
//! `fsync`, `rename`, `fsync` of the directory), so a reader sees the old
//! list or the new one, and a crash leaves one of the two.
//!
//! A token is `ks_` + a 16-hex-digit id + `_` + 64 hex digits of secret
//! (256 bits from the operating system). The file keeps the id, the user,
//! the creation time and the BLAKE3 hash of the secret; the secret itself
//! is printed once and never stored, logged or compared except as that
//! hash, in constant time (`blake3::Hash`'s equality).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::NameError;
use crate::names::check_user_name;

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's public id (16 hex digits), for `token revoke`.
    pub id: String,
    /// The keepsake user the token acts as.
    pub user: String,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A token just created: the only time its secret is seen.
#[derive(Debug, Clone, Serialize)]
pub struct NewToken {
    /// The keepsake user the token acts as.
    pub user: String,
    /// The whole bearer token, to give to the client.
    pub token: String,
    /// Its public id (also the part of the token after `ks_`); not in the
    /// JSON, which is `{"user", "token"}` (the CLI's `token create --json`).
    #[serde(skip)]
    pub id: String,
}

/// Why reading or changing the token file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The user name is not acceptable.
    #[error(transparent)]
    InvalidUser(#[from] NameError),
    /// Reading or writing the token file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A line of the token file could not be read back.
    #[error("token file {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: TokenInfo,
    /// BLAKE3 of the secret, hex.
    hash: String,
}

/// What a reader last read of the file: its bytes and the records, with
/// their hashes decoded.
struct Loaded {
    bytes: Vec<u8>,
    records: Vec<(Record, blake3::Hash)>,
}

/// The token file of one store.
///
/// ```
/// use keepsake::http::Tokens;
/// let dir = tempfile::tempdir().unwrap();
/// let tokens = Tokens::at(dir.path());
/// let new = tokens.create("ann").unwrap();
/// assert_eq!(tokens.user_of(&new.token).as_deref(), Some("ann"));
/// assert!(tokens.revoke(&new.id).unwrap());
/// assert_eq!(tokens.user_of(&new.token), None);
/// ```
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<Option<Loaded>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> io::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(io::Error::other)?;
    Ok(hex(&b))
}

impl Tokens {
    /// The token file of the store in `store_dir` (it need not exist yet).
    pub fn at(store_dir: &Path) -> Tokens {
        Tokens {
            path: store_dir.join("tokens"),
            loaded: Mutex::new(None),
        }
    }

    /// Creates a token for `user`, durable when this returns.
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidUser`] for a name [`Store::user`](crate::Store::user)
    /// would refuse; [`TokenError::Io`] or [`TokenError::Corrupt`] if the
    /// token file cannot be read or written. The file is then the old one,
    /// or, if only the final `fsync` of the directory failed, the new one,
    /// not yet durable.
    pub fn create(&self, user: &str) -> Result<NewToken, TokenError> {
        check_user_name(user)?;
        let io = |context: &str| {
            let context = format!("{context} {}", self.path.display());
            move |source| TokenError::Io { context, source }
        };
        let id = random_hex(ID_HEX / 2).map_err(io("drawing a token for"))?;
        let secret = random_hex(SECRET_HEX / 2).map_err(io("drawing a token for"))?;
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let record = Record {
            info: TokenInfo {
                id: id.clone(),
                user: user.to_string(),
                created_ms,
            },
            hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
        };
        self.change(|records| records.push(record))?;
        Ok(NewToken {
            user: user.to_string(),
            token: format!("ks_{id}_{secret}"),
            id,
        })
    }

    /// Every token, oldest first.
    ///
    /// # Errors
    ///
    /// [`TokenError::Io`] or [`TokenError::Corrupt`] if the file cannot be read.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        Ok(self.read()?.into_iter().map(|r| r.info).collect())
    }

    /// Revokes the token with public id `id`; `false` if there was none.
    /// A server stops accepting it at its next request.
    ///
    /// # Errors
    ///
    /// [`TokenError::Io`] or [`TokenError::Corrupt`] if the file cannot be
    /// read or written, as for [`create`](Self::create).
    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let mut found = false;
        self.change(|records| {
            let before = records.len();
            records.retain(|r| r.info.id != id);
            found = records.len() != before;
        })?;
        Ok(found)
    }

    /// The user a bearer token acts as, or `None` for a token that is
    /// malformed, unknown or revoked, or if the file cannot be read (which
    /// the server's log then says). The secret is compared as its BLAKE3
    /// hash, in constant time, against every record (whatever the id), so
    /// the time taken does not depend on which id, if any, matched. The
    /// file is read at each call (a few hundred bytes a token), so a token
    /// revoked by another process fails at its next use.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let (id, secret) = token.strip_prefix("ks_")?.split_once('_')?;
        let well_formed = id.len() == ID_HEX
            && secret.len() == SECRET_HEX
            && id.bytes().chain(secret.bytes()).all(|b| b.is_ascii_hexdigit());
        let presented = blake3::hash(secret.as_bytes());
        let mut loaded = self.loaded.lock();
        if let Err(e) = self.refresh(&mut loaded) {
            eprintln!("keepsake: reading tokens: {e}");
            return None;
        }
        let records = loaded.as_ref().map_or(&[][..], |l| &l.records[..]);
        let mut user = None;
        for (r, stored) in records {
            // Both comparisons run for every record.
            let hash_matches = *stored == presented;
            if (r.info.id == id) & hash_matches & well_formed {
                user = Some(r.info.user.clone());
            }
        }
        user
    }

    /// Reads the file, and decodes it again if its bytes changed since the
    /// last read. (A stamp of inode, size and time can repeat across a
    /// rewrite; the bytes cannot.)
    fn refresh(&self, loaded: &mut Option<Loaded>) -> Result<(), TokenError> {
        let bytes = self.bytes()?;
        if loaded.as_ref().is_some_and(|l| l.bytes == bytes) {
            return Ok(());
        }
        let records = Self::parse(&bytes)
            .map_err(|d| self.corrupt(d))?
            .into_iter()
            .map(|r| {
                let h = blake3::Hash::from_hex(&r.hash).map_err(|e| self.corrupt(e.to_string()))?;
                Ok((r, h))
            })
            .collect::<Result<_, TokenError>>()?;
        *loaded = Some(Loaded { bytes, records });
        Ok(())
    }

    fn corrupt(&self, detail: String) -> TokenError {
        TokenError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// The file's bytes; none if it does not exist yet.
    fn bytes(&self) -> Result<Vec<u8>, TokenError> {
        match fs::read(&self.path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TokenError::Io {
                context: format!("reading {}", self.path.display()),
                source,
            }),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Vec<Record>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
            .collect()
    }

    fn read(&self) -> Result<Vec<Record>, TokenError> {
        Self::parse(&self.bytes()?).map_err(|d| self.corrupt(d))
    }

    /// Applies `edit` to the records under the writers' lock and replaces
    /// the file with the result, durably.
    fn change(&self, edit: impl FnOnce(&mut Vec<Record>)) -> Result<(), TokenError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |context: String| move |source| TokenError::Io { context, source };
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock_path = dir.join("tokens.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(format!("opening {}", lock_path.display())))?;
        lock.lock().map_err(io(format!("locking {}", lock_path.display())))?;
        let mut records = self.read()?;
        edit(&mut records);
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).map_err(|e| self.corrupt(e.to_string()))?);
            text.push('\n');
        }
        let tmp = dir.join("tokens.tmp");
        let written = (|| {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        })();
        written.map_err(io(format!("writing {}", self.path.display())))
    }
}
