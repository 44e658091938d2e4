//! Peak resident memory of one piece of work, measured in a child process
//! that does nothing else: the benchmark runs itself again with an
//! environment variable that names the work, and the child prints its
//! `VmHWM` when done.

use std::process::Command;

/// In the child: prints this process's peak resident memory, in MiB.
pub fn print_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    println!("{}", kib / 1024.0);
}

/// In the parent: runs this benchmark again with `var=value` and returns
/// the peak the child printed, in MiB; `None` if it could not be run.
pub fn peak_of_child(var: &str, value: impl AsRef<std::ffi::OsStr>) -> Option<f64> {
    let out = Command::new(std::env::current_exe().ok()?)
        .env(var, value)
        .output()
        .ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
