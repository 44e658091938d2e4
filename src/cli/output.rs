//! How results are shown: one JSON object with `--json`, readable lines
//! otherwise.

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

/// Where and how a command prints.
pub(crate) struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as one JSON line, or `human` when not in JSON mode.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, value)?;
            writeln!(out)
        } else {
            let text = human();
            if text.is_empty() {
                return Ok(());
            }
            writeln!(out, "{}", text.trim_end())
        }
    }

    /// Whether progress bars may be drawn: never in JSON mode, never when
    /// stdout is not a terminal.
    pub fn progress_allowed(&self) -> bool {
        !self.json && io::stdout().is_terminal()
    }
}

/// `1536` -> `1.5 KiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_naturally() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::bytes(3 << 30), "3.0 GiB");
    }
}
