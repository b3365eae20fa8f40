//! List entries: parsing lives in filter-common (shared with tests and fuzzers); reading list
//! files with operator-facing errors lives here.

use std::path::Path;

pub use filter_common::cidr::{parse_entry, parse_list, LineError, Prefix};

/// Read and parse a list file; the error text names the file and every bad line.
pub fn read_list_file(path: &Path) -> anyhow::Result<Vec<Prefix>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read list file {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        crate::error::usage(format!(
            "{}: not UTF-8 text (first bad byte at offset {}); list files hold one address or CIDR per line",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse_list(&text).map_err(|errors| {
        const SHOWN: usize = 20;
        let mut msg = format!(
            "{}: {} invalid line{}; nothing was changed",
            path.display(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for e in errors.iter().take(SHOWN) {
            msg.push_str(&format!("\n  {}:{}: {}", path.display(), e.line, e.message));
        }
        if errors.len() > SHOWN {
            msg.push_str(&format!("\n  ... and {} more", errors.len() - SHOWN));
        }
        crate::error::usage(msg)
    })
}
