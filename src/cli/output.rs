//! How results are shown: one JSON object with `--json`, readable lines
//! otherwise.

use std::cell::{Cell, RefCell};
use std::io::{self, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Where and how a command prints.
///
/// Lines are buffered and written in blocks when stdout is not a terminal,
/// as `find` and `grep` do: Rust's stdout writes each line with its own
/// system call, which over a backup of many files costs more than the
/// lookups behind the lines. A terminal gets each line as it comes.
/// [`flush`](Self::flush) writes what is buffered: a backup calls it after
/// each commit, so that a reader of the output sees each batch once it is
/// durable, and before each message on stderr, so that the two streams
/// keep their order.
pub(crate) struct Output {
    pub json: bool,
    terminal: bool,
    buffered: RefCell<Vec<u8>>,
    /// The reader went away (`keepsake ls | head`): it wanted no more, and
    /// the command goes on without printing.
    closed: Cell<bool>,
}

/// Written out once this much is buffered.
const BLOCK: usize = 64 << 10;

impl Output {
    pub fn new(json: bool) -> Self {
        Output {
            json,
            terminal: io::stdout().is_terminal(),
            buffered: RefCell::new(Vec::new()),
            closed: Cell::new(false),
        }
    }

    /// Prints `value` as one JSON line, or `human` when not in JSON mode.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> io::Result<()> {
        let mut line = if self.json {
            serde_json::to_vec(value)?
        } else {
            let text = human();
            if text.is_empty() {
                return Ok(());
            }
            text.trim_end().as_bytes().to_vec()
        };
        line.push(b'\n');
        self.raw(&line)
    }

    /// Prints `text` as it is, in both modes (a listing written piece by
    /// piece).
    pub fn raw(&self, text: &[u8]) -> io::Result<()> {
        let mut out = self.buffered.borrow_mut();
        out.extend_from_slice(text);
        let full = out.len() >= BLOCK || (self.terminal && text.ends_with(b"\n"));
        drop(out);
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out what [`show`](Self::show) buffered. A reader that went
    /// away is not an error: what follows is dropped.
    pub fn flush(&self) -> io::Result<()> {
        let mut out = self.buffered.borrow_mut();
        if out.is_empty() || self.closed.get() {
            out.clear();
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        let written = stdout.write_all(&out).and_then(|()| stdout.flush());
        out.clear();
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed.set(true);
                Ok(())
            }
            other => other,
        }
    }

    /// Whether progress bars may be drawn: never in JSON mode, never when
    /// stdout is not a terminal.
    pub fn progress_allowed(&self) -> bool {
        !self.json && self.terminal
    }

    /// A progress bar of `total` bytes, with the rate and the time left;
    /// hidden where [`progress_allowed`](Self::progress_allowed) says no.
    pub fn bytes_bar(&self, total: u64) -> ProgressBar {
        if !self.progress_allowed() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("static template"),
        );
        bar
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

/// A path as a line of output shows it: escaped as a file name is, so that
/// no name on the disk can forge a line or confuse a terminal.
pub(crate) fn shown(path: &std::path::Path) -> String {
    keepsake::FileName::from(path.as_os_str()).to_string()
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
