//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  failure, or a check that found problems (verify), or a backup with files that failed
     for any reason but the quota
  2  bad usage or invalid input (names, ids, sizes)
  3  no such store, file, album or trashed file
  4  quota exceeded (for a backup: every file that failed, failed on the quota)
  5  the store is in use by another process
  6  stored data failed its integrity check

Environment:
  KEEPSAKE_STORE  store directory when --store is not given";

/// keepsake: a deduplicating store for photos and videos.
///
/// Every distinct content is stored once. Backing up what an album already
/// has is skipped; what the user has in another album is linked, not copied.
#[derive(Debug, Parser)]
#[command(name = "keepsake", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Store directory [default: $KEEPSAKE_STORE, else the platform's data directory]
    #[arg(long, global = true, env = "KEEPSAKE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The user to act for
    #[arg(long, global = true, default_value = "default", value_name = "NAME")]
    pub user: String,
    /// Machine-readable output: one JSON object (backup, dedupe: one per line; duplicates: one array)
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    /// Mobile rule: same content is a duplicate, whatever its name
    Hash,
    /// Desktop/web rule: same name and same content
    NameHash,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a store, choosing where its blobs live
    ///
    /// Without --blobs, blobs live in the store directory (segments/). With
    /// --blobs s3://BUCKET/PREFIX they live in an S3-compatible bucket, as
    /// one immutable object per group commit; the store records the URL
    /// only. The endpoint, region and credentials come from AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_ALLOW_HTTP (true for a plain-HTTP endpoint) at every command; with
    /// no keys, requests go unsigned. Run on an existing store, it says
    /// where its blobs live (and fails if --blobs names another place).
    Init {
        /// Where blobs live: s3://BUCKET/PREFIX
        #[arg(long, value_name = "URL")]
        blobs: Option<String>,
    },
    /// Back up files and folders (recursively) into an album
    ///
    /// Only regular files are backed up. Symbolic links inside folders
    /// (at any depth, even one swapped in while the backup runs), FIFOs,
    /// sockets, devices and the store's own directory are not: each is
    /// an "ignored" line with its reason, and counted. A file modified in
    /// the last 2 s is read once it has held still for 2 s (10 s at most,
    /// then it is an error line); a file written while read is read again
    /// the same way (a writer pausing longer than 2 s looks finished). A named path that is missing or is
    /// not a file or folder is an error; if no named path can be read,
    /// nothing is created, not the album, not the store.
    Backup {
        /// Files or folders (a named symbolic link is followed)
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The album (created if missing)
        #[arg(long)]
        album: String,
        /// Duplicate rule
        #[arg(long, value_enum, default_value = "name-hash")]
        mode: Mode,
        /// Read and hash every file, even those unchanged (same device, inode, size, mtime, ctime) since the last backup
        #[arg(long)]
        rehash: bool,
    },
    /// List albums
    Albums,
    /// Create, rename or delete an album
    Album {
        #[command(subcommand)]
        action: AlbumAction,
    },
    /// List live files, of one album or all, with the photo's modification time (UTC)
    Ls {
        /// Only this album
        #[arg(long)]
        album: Option<String>,
    },
    /// Add files to an album (no data is copied)
    Add {
        #[command(flatten)]
        files: FileIds,
        #[arg(long)]
        album: String,
    },
    /// Remove files from an album (they stay in their other albums)
    Remove {
        #[command(flatten)]
        files: FileIds,
        #[arg(long)]
        album: String,
    },
    /// Move files from one album to another
    Move {
        #[command(flatten)]
        files: FileIds,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Move files to the trash, out of every album
    ///
    /// Like add, remove, move and trash restore, it edits every file it can,
    /// in durable commits of 4096; each file that cannot be edited is an
    /// error line, and the first decides the exit status.
    Delete {
        #[command(flatten)]
        files: FileIds,
    },
    /// List the trash, restore from it, or empty it
    Trash {
        #[command(subcommand)]
        action: Option<TrashAction>,
    },
    /// Write a file's bytes to stdout or a path (a path gets the photo's recorded modification time)
    Get {
        #[arg(value_name = "FILE_ID")]
        file: u64,
        /// Write here instead of stdout
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Show the user's storage usage
    Usage,
    /// Set or clear the user's quota
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
    /// Move the store's blobs into a bucket, or back to the local disk
    ///
    /// New blobs go to the destination at once; sealed segments follow one
    /// at a time, each copied, checked (its live records hashed; an
    /// uploaded pack read back and compared), switched in one commit, and
    /// only then removed from where it was. Killed or failed, it is run
    /// again to go on, and the store is whole in between (every blob read
    /// from where it is). The bucket must exist; it is reached as for init
    /// (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true for plain HTTP). From one
    /// bucket to another goes through `--blobs local`.
    ///
    /// This command holds the store while it runs (other commands wait
    /// their turn, exit 5); to migrate while serving phones and browsers,
    /// use `keepsake serve --migrate-blobs`. Exit status 1 if a segment had
    /// to be left where it is (each is named, with why) or a request
    /// failed, 2 for a destination that cannot be this store's.
    Migrate {
        /// Where blobs go: s3://BUCKET/PREFIX, or local
        #[arg(long, value_name = "URL|local")]
        blobs: String,
    },
    /// Purge expired trash, remove unreferenced blobs, compact segments
    Gc {
        /// Keep blobs unreferenced for less than this many seconds [default: 900]
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
    },
    /// Check every count and index against the file records
    Verify {
        /// Also re-hash every blob
        #[arg(long)]
        scrub: bool,
        /// Rebuild every count and index that disagrees with the file records, and re-index lost blob records from the segments; exit 1 if anything could not be repaired
        #[arg(long)]
        repair: bool,
    },
    /// Serve the HTTP API on an address, behind the store's bearer tokens
    ///
    /// Requests carry `Authorization: Bearer TOKEN` (see `keepsake token`);
    /// each acts as its token's user. Ctrl-C or SIGTERM stops the server
    /// once the requests in flight have finished.
    Serve {
        /// The address to listen on
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seconds a client has to send a request's headers before its
        /// connection is closed
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        header_timeout: u64,
        /// Seconds a request's body may go without a byte before the
        /// request fails (a resumable upload keeps what had arrived)
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        idle_timeout: u64,
        /// Also serve `/metrics` (Prometheus) on this address, without
        /// authentication: the figures are every user's together, so they
        /// are not on the users' address (keep this one for the operator)
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Move the store's blobs (as `migrate --blobs`) while serving:
        /// uploads and downloads go on, the outcome is printed on stderr
        #[arg(long, value_name = "URL|local")]
        migrate_blobs: Option<String>,
    },
    /// Bearer tokens for `keepsake serve`: create, list, revoke
    ///
    /// Tokens are kept as hashes in the store's directory and can be
    /// changed while a server runs: it sees the change at its next request.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// List the user's resumable upload sessions, or abort one
    Uploads {
        #[command(subcommand)]
        action: Option<UploadsAction>,
    },
    /// Store-wide statistics
    Stats,
    /// List groups of live files with the same content (e.g. one photo under several names)
    Duplicates,
    /// Merge each group of duplicates into one file, in every album any copy was in; the others go to the trash
    #[command(group(clap::ArgGroup::new("keep").args(["keep_oldest", "keep_newest", "keep_name"])))]
    Dedupe {
        /// Show what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Keep the oldest file of each group (the default)
        #[arg(long)]
        keep_oldest: bool,
        /// Keep the newest file of each group
        #[arg(long)]
        keep_newest: bool,
        /// Keep the oldest file whose name matches GLOB (`*`, `?`); the oldest file if none does
        #[arg(long, value_name = "GLOB")]
        keep_name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlbumAction {
    /// Create an album
    Create { name: String },
    /// Rename an album
    Rename { name: String, new_name: String },
    /// Delete an album
    Delete {
        name: String,
        /// Move the files that are in no other album to the trash (default: keep them in the library)
        #[arg(long)]
        trash_files: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TrashAction {
    /// Put files back into the albums they were in
    Restore {
        #[command(flatten)]
        files: FileIds,
    },
    /// Delete everything in the trash for good
    Empty,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Create a token acting as a user; it is printed once, only its hash is kept
    Create {
        /// The user the token acts as
        #[arg(long, value_name = "NAME")]
        user: String,
    },
    /// List the tokens: ids, users, creation times (never the tokens)
    List,
    /// Revoke a token by its id (as `token list` shows it)
    Revoke {
        #[arg(value_name = "TOKEN_ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum UploadsAction {
    /// End a session and remove its received bytes
    Abort {
        #[arg(value_name = "UPLOAD_ID")]
        id: keepsake::UploadId,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QuotaAction {
    /// Limit the user's unique bytes (e.g. 5000000000, 500MiB, 10GiB)
    Set {
        #[arg(value_parser = parse_size)]
        bytes: u64,
    },
    /// Remove the limit
    Clear,
}

/// A byte count with an optional binary unit: `123`, `4KiB`, `10GiB`, `1T`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a byte count"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(format!("unknown unit in {s:?}: use B, KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

/// The files a command edits: ids on the command line, more on stdin.
#[derive(Debug, Args)]
pub(crate) struct FileIds {
    #[arg(value_name = "FILE_ID", required_unless_present = "stdin")]
    pub ids: Vec<u64>,
    /// Also read file ids from standard input, separated by white space (for more ids than a command line holds)
    #[arg(long)]
    pub stdin: bool,
}
