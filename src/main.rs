//! The `keepsake` command: drives a store from the shell and from scripts.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
