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
/// Different entries read at most (both families of a full list); one more is refused.
const MAX_ENTRIES: usize = 2 * LIST_CAPACITY as usize;

/// Parse entries given as arguments; the bad ones are reported (the first ten, then how many
/// more) and nothing is returned.
pub fn parse_args(texts: &[String]) -> Result<Vec<Prefix>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for t in texts {
        match parse_entry(t) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(out),
        1 => Err(usage(format!("{}; nothing was changed", errors[0]))),
        n => Err(usage(format!(
            "{n} invalid entries: {}; nothing was changed",
            crate::text::capped(errors, "; ")
        ))),
    }
}

/// Read a list file (`-` is standard input): one entry per line, `#` comments, blank lines.
pub fn read_list_file(path: &Path) -> Result<Vec<Prefix>> {
    if path == Path::new("-") {
        return read_list(std::io::stdin().lock(), "<stdin>");
    }
    let shown = crate::text::path(path);
    let file = std::fs::File::open(path).map_err(|e| {
        usage(format!(
            "cannot read list file {shown}: {e}; give a readable file, or - for standard input"
        ))
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(usage(format!(
            "{shown} is a directory; give a list file (one entry per line)"
        )));
    }
    read_list(file, &shown)
}

/// Read list-file text from `input`; `name` is how messages call it.
pub fn read_list(input: impl Read, name: &str) -> Result<Vec<Prefix>> {
    read_list_capped(input, name, MAX_ENTRIES)
}

/// Sort and deduplicate `entries`; refuse more than `cap` different ones.
fn dedup_within(entries: &mut Vec<Prefix>, cap: usize, name: &str, line: usize) -> Result<()> {
    entries.sort_unstable();
    entries.dedup();
    if entries.len() > cap {
        return Err(usage(format!(
            "{name} holds more than {cap} different entries (counted up to line {line}); a list holds at most {LIST_CAPACITY} per address family; nothing was changed"
        )));
    }
    Ok(())
}

/// [`read_list`] keeping at most `cap` different entries. Lines are buffered up to a quarter
/// more than `cap`; a full buffer is deduplicated (overlapping feeds concatenated repeat most
/// entries) and only more than `cap` different entries are refused, so memory stays bounded
/// whatever the number of lines.
fn read_list_capped(input: impl Read, name: &str, cap: usize) -> Result<Vec<Prefix>> {
    let buffered = cap + cap / 4;
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut entries = Vec::new();
    let mut errors: Vec<LineError> = Vec::new();
    let mut bad = 0usize;
    let mut line = Vec::with_capacity(MAX_LINE_BYTES + 1);
    let mut number = 0usize;
    let mut total = 0u64;
    let mut stopped = None;
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
                if entries.len() == buffered {
                    dedup_within(&mut entries, cap, name, number)?;
                }
                if entries.len() == entries.capacity() {
                    // Grow by doubling, but never past the buffer.
                    let want = (entries.len() * 2).max(1024).min(buffered);
                    entries.reserve_exact(want - entries.len());
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
                    // Stopped only if there is more to read.
                    let more = reader
                        .fill_buf()
                        .map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"))?;
                    if !more.is_empty() {
                        stopped = Some(number);
                        break;
                    }
                }
            }
        }
    }
    if bad == 0 {
        if entries.len() > cap {
            dedup_within(&mut entries, cap, name, number)?;
        }
        return Ok(entries);
    }
    let mut msg = match stopped {
        Some(at) => format!(
            "{name}: stopped reading at line {at} after {bad} invalid lines: is it a list file (one address or CIDR per line)? Nothing was changed"
        ),
        None => format!(
            "{name}: {}; nothing was changed",
            crate::text::count(bad, "invalid line", "invalid lines")
        ),
    };
    for e in &errors {
        msg.push_str(&format!("\n  {name}:{}: {}", e.line, e.message));
    }
    if bad > errors.len() {
        msg.push_str(&format!(
            "\n  ... and {} more{}",
            bad - errors.len(),
            if stopped.is_some() {
                " (the rest of the input was not read)"
            } else {
                ""
            }
        ));
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
        let err = format!("{:#}", read(&bad).unwrap_err());
        assert!(
            err.contains("stopped reading at line 10000 after 10000 invalid lines"),
            "{err}"
        );
    }

    #[test]
    fn stopping_after_many_bad_lines_still_shows_the_first_ten() {
        let mut text = b"192.0.2.1\n".to_vec();
        for i in 0..20_000 {
            text.extend_from_slice(format!("bad{i}\n").as_bytes());
        }
        let err = format!("{:#}", read(&text).unwrap_err());
        assert!(err.contains("stopped reading at line 10001"), "{err}");
        assert_eq!(err.matches("\n  test.txt:").count(), 10, "{err}");
        assert!(
            err.contains("test.txt:2: ") && err.contains("bad0"),
            "{err}"
        );
        assert!(err.contains("... and 9990 more"), "{err}");
    }

    #[test]
    fn input_ending_at_the_bad_line_bound_is_not_said_to_be_cut() {
        let text = b"nope\n".repeat(10_000);
        let err = format!("{:#}", read(&text).unwrap_err());
        assert!(!err.contains("stopped"), "{err}");
        assert!(err.contains("10000 invalid lines"), "{err}");
        assert_eq!(err.matches("\n  test.txt:").count(), 10, "{err}");
    }

    #[test]
    fn repeated_entries_count_once_against_the_cap() {
        // 100 different entries, each on 7 lines: 700 lines, more than the buffer of 125.
        let mut text = String::new();
        for _ in 0..7 {
            for i in 0..100 {
                text.push_str(&format!("192.0.2.{i}\n"));
            }
        }
        let mut got = read_list_capped(text.as_bytes(), "feeds", 100).unwrap();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 100);
    }

    #[test]
    fn more_different_entries_than_the_cap_are_refused() {
        let text: String = (0..101).map(|i| format!("192.0.2.{i}\n")).collect();
        let err = read_list_capped(text.as_bytes(), "feeds", 100).unwrap_err();
        assert!(
            format!("{err:#}").contains("more than 100 different entries"),
            "{err:#}"
        );
        // Also when the buffer fills and is deduplicated on the way.
        let text: String = (0..200).map(|i| format!("10.0.{i}.0/24\n")).collect();
        let err = read_list_capped(text.as_bytes(), "feeds", 100).unwrap_err();
        assert!(
            format!("{err:#}").contains("counted up to line 126"),
            "{err:#}"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_not_fatal() {
        let err = format!("{}", read(b"10.0.0.0/8\n\xff\xfe\n").unwrap_err());
        assert!(err.contains("test.txt:2: "), "{err}");
        assert!(err.contains("not UTF-8"), "{err}");
    }
}
