//! Operator input as messages show it, and bounded lists in messages. Everything the operator
//! typed or named (interface names, entries, file and pin-directory paths) goes through these
//! before it reaches a terminal: a name holding an escape sequence must not retitle the
//! window or hide the rest of the message.

use std::path::Path;

/// A name or entry the operator gave: control and invisible characters escaped, at most 60
/// characters (see [`filter_common::cidr::shown`]).
pub fn name(text: &str) -> String {
    filter_common::cidr::shown(text)
}

/// A path: control and invisible characters escaped, bytes that are not UTF-8 shown as U+FFFD,
/// never shortened (a path is only useful whole).
pub fn path(p: &Path) -> String {
    escape(&p.to_string_lossy(), false)
}

/// `text` with every control or invisible character escaped; with `keep_newlines`, line
/// breaks stay (multi-line messages are built with them).
pub fn escape(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() && !(keep_newlines && c == '\n')) || c == '\u{feff}' || c == '\u{200b}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Items shown in a message at most; the rest are counted.
pub const SHOWN_ITEMS: usize = 10;

/// The first [`SHOWN_ITEMS`] of `items` joined by `sep`, then "... and N more" if there are
/// more: a message stays readable whatever the operator passed.
pub fn capped<I: IntoIterator<Item = String>>(items: I, sep: &str) -> String {
    let mut out = String::new();
    let mut n = 0usize;
    for item in items {
        if n < SHOWN_ITEMS {
            if n > 0 {
                out.push_str(sep);
            }
            out.push_str(&item);
        }
        n += 1;
    }
    if n > SHOWN_ITEMS {
        out.push_str(&format!("{sep}... and {} more", n - SHOWN_ITEMS));
    }
    out
}

/// "1 entry", "2 entries".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_lose_their_control_characters() {
        let p = Path::new("/sys/fs/bpf/a\x1b]0;pwned\x07b");
        assert_eq!(path(p), "/sys/fs/bpf/a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(name("eth\x1b[31m"), "eth\\u{1b}[31m");
        assert_eq!(escape("a\nb\tc", true), "a\nb\\tc");
        assert_eq!(escape("a\nb", false), "a\\nb");
    }

    #[test]
    fn long_lists_are_cut_after_ten() {
        let items = (0..25).map(|i| i.to_string());
        assert_eq!(
            capped(items, ", "),
            "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... and 15 more"
        );
        assert_eq!(capped((0..3).map(|i| i.to_string()), ", "), "0, 1, 2");
        assert_eq!(
            capped((0..10).map(|i| i.to_string()), ", ")
                .matches(',')
                .count(),
            9
        );
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(0, "entry", "entries"), "0 entries");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
    }
}
