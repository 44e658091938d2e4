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

/// A file name as the JSON output carries it: `name` is the name itself
/// when it is UTF-8 (JSON escapes what it must), else its escaped form
/// (`FileName`'s `Display`: `\xNN` for each byte that is not UTF-8), with
/// `name_hex`, the name's bytes in hex, beside it, so that nothing is lost
/// and an escaped name is never mistaken for a name that reads the same.
#[derive(Serialize)]
pub(crate) struct JsonName {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
}

impl JsonName {
    pub(crate) fn of(name: &keepsake::FileName) -> JsonName {
        match name.to_str() {
            Some(s) => JsonName {
                name: s.to_string(),
                name_hex: None,
            },
            None => JsonName {
                name: name.to_string(),
                name_hex: Some(name.as_bytes().iter().map(|b| format!("{b:02x}")).collect()),
            },
        }
    }
}

/// A path as a line of output shows it: escaped as a file name is, so that
/// no name on the disk can forge a line or confuse a terminal.
pub(crate) fn shown(path: &std::path::Path) -> String {
    keepsake::FileName::from(path.as_os_str()).to_string()
}
