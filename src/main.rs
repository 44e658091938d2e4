//! The `keepsake` command: drives a store from the shell and from scripts.

// Failures are reported with an exit status, not an `unwrap` panic (as in
// the library, src/lib.rs).
#![deny(clippy::unwrap_used)]

mod cli;

// See Cargo.toml: the command's many small allocations per file.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
