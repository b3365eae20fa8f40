//! Any bytes as a list file: no panic; errors name lines that exist, in order, and never the
//! comment or blank ones; accepted files round-trip through their printed form.
#![no_main]

use filter_common::cidr::parse_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    match parse_list(text) {
        Ok(entries) => {
            let printed: String = entries.iter().map(|p| format!("{p}\n")).collect();
            assert_eq!(parse_list(&printed).as_deref(), Ok(&entries[..]));
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let mut last = 0;
            for e in &errors {
                assert!(e.line > last && e.line <= lines.len(), "bad line number {}", e.line);
                let content = lines[e.line - 1].split('#').next().unwrap_or("").trim();
                assert!(!content.is_empty(), "blank or comment line {} reported", e.line);
                last = e.line;
            }
        }
    }
});
