//! List entries from the command line and from list files. Parsing itself lives in
//! filter-common (shared with tests and fuzzers); reading files with operator-facing errors
//! lives here: streamed, with a bounded line length and bounded memory, and at most a few bad
//! lines shown, their control characters escaped.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Result;

pub use filter_common::cidr::{parse_entry, parse_line, parse_list, shown, LineError, Prefix};
use filter_common::LIST_CAPACITY;

use crate::error::usage;

/// Longest line accepted: the longest entry with a comment fits many times over.
pub const MAX_LINE_BYTES: usize = 1024;
/// Bad lines quoted in a message; the rest are counted.
const SHOWN_LINES: usize = 10;
/// Reading stops after this many bad lines: the input is not a list file.
const MAX_BAD_LINES: usize = 10_000;
/// Input read at most: a full list with comments is far smaller.
const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Entries read at most (both families of a full list); one more is refused.
const MAX_ENTRIES: usize = 2 * LIST_CAPACITY as usize;

/// Parse entries given as arguments; every bad one is reported and nothing is returned.
pub fn parse_args(texts: &[String]) -> Result<Vec<Prefix>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for t in texts {
        match parse_entry(t) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(usage(format!("{}; nothing was changed", errors.join("; "))))
    }
}

/// Read a list file (`-` is standard input): one entry per line, `#` comments, blank lines.
pub fn read_list_file(path: &Path) -> Result<Vec<Prefix>> {
    if path == Path::new("-") {
        return read_list(std::io::stdin().lock(), "<stdin>");
    }
    let file = std::fs::File::open(path).map_err(|e| {
        usage(format!(
            "cannot read list file {}: {e}; give a readable file, or - for standard input",
            path.display()
        ))
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(usage(format!(
            "{} is a directory; give a list file (one entry per line)",
            path.display()
        )));
    }
    read_list(file, &path.display().to_string())
}

/// Read list-file text from `input`; `name` is how messages call it.
pub fn read_list(input: impl Read, name: &str) -> Result<Vec<Prefix>> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut entries = Vec::new();
    let mut errors: Vec<LineError> = Vec::new();
    let mut bad = 0usize;
    let mut line = Vec::with_capacity(MAX_LINE_BYTES + 1);
    let mut number = 0usize;
    let mut total = 0u64;
    let fail = |msg: String| -> anyhow::Error { usage(format!("{msg}; nothing was changed")) };
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        total += n as u64;
        if total > MAX_INPUT_BYTES {
            return Err(fail(format!(
                "{name}: stopped reading at line {number}: more than {MAX_INPUT_BYTES} bytes is not a list file"
            )));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES {
            return Err(fail(format!(
                "{name}:{number}: line longer than {MAX_LINE_BYTES} bytes; a list file holds one address or CIDR per line"
            )));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut bytes = &line[..];
        if number == 1 {
            bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        }
        let result = match std::str::from_utf8(bytes) {
            Ok(text) => parse_line(text),
            Err(_) => Some(Err(format!(
                "'{}' is not UTF-8 text",
                shown(&String::from_utf8_lossy(bytes))
            ))),
        };
        match result {
            None => {}
            Some(Ok(p)) => {
                if entries.len() == MAX_ENTRIES {
                    return Err(fail(format!(
                        "{name} holds more than {MAX_ENTRIES} entries; a list holds at most {LIST_CAPACITY} per address family"
                    )));
                }
                entries.push(p);
            }
            Some(Err(message)) => {
                bad += 1;
                if errors.len() < SHOWN_LINES {
                    errors.push(LineError {
                        line: number,
                        message,
                    });
                }
                if bad == MAX_BAD_LINES {
                    return Err(fail(format!(
                        "{name}: stopped reading at line {number} after {bad} invalid lines; is it a list file (one address or CIDR per line)?"
                    )));
                }
            }
        }
    }
    if bad == 0 {
        return Ok(entries);
    }
    let mut msg = format!(
        "{name}: {bad} invalid line{}; nothing was changed",
        if bad == 1 { "" } else { "s" }
    );
    for e in &errors {
        msg.push_str(&format!("\n  {name}:{}: {}", e.line, e.message));
    }
    if bad > errors.len() {
        msg.push_str(&format!("\n  ... and {} more", bad - errors.len()));
    }
    Err(usage(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<Vec<Prefix>> {
        read_list(text, "test.txt")
    }

    #[test]
    fn reads_entries_comments_and_blank_lines() {
        let got = read(b"# header\n10.0.0.0/8\n\n  192.0.2.1 # x\r\n2001:db8::/32").unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_byte_order_mark_is_not_an_error() {
        assert_eq!(read(b"\xef\xbb\xbf10.0.0.0/8\n").unwrap().len(), 1);
    }

    #[test]
    fn bad_lines_are_numbered_capped_and_escaped() {
        let mut text = String::new();
        for i in 0..25 {
            text.push_str(&format!("bogus{i}\x1b[31m\n"));
        }
        let err = format!("{:#}", read(text.as_bytes()).unwrap_err());
        assert!(err.contains("25 invalid lines"), "{err}");
        assert!(err.contains("test.txt:1:"), "{err}");
        assert!(err.contains("... and 15 more"), "{err}");
        assert!(!err.contains('\x1b'), "raw escape in {err}");
        assert_eq!(err.matches("\n  test.txt:").count(), 10, "{err}");
    }

    #[test]
    fn an_endless_line_stops_reading_at_once() {
        let err = read_list(std::io::repeat(0).take(1 << 30), "/dev/zero").unwrap_err();
        assert!(format!("{err}").contains("longer than 1024 bytes"), "{err}");
    }

    #[test]
    fn endless_garbage_stops_after_a_bound() {
        let err = read_list(
            std::io::repeat(b'\n')
                .take(1 << 16)
                .chain(std::io::repeat(b'x')),
            "pipe",
        );
        // Blank lines are fine; the endless 'x' line is what stops it.
        assert!(format!("{}", err.unwrap_err()).contains("pipe:65537: line longer"));
        let bad = b"nope\n".repeat(20_000);
        let err = read(&bad).unwrap_err();
        assert!(
            format!("{err}").contains("after 10000 invalid lines"),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_not_fatal() {
        let err = format!("{}", read(b"10.0.0.0/8\n\xff\xfe\n").unwrap_err());
        assert!(err.contains("test.txt:2: "), "{err}");
        assert!(err.contains("not UTF-8"), "{err}");
    }
}
