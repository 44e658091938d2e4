//! The `keepsake` command: drives a store from the shell and from scripts.

// Failures are reported with an exit status, not an `unwrap` panic (as in
// the library, src/lib.rs).
#![deny(clippy::unwrap_used)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
