//! Any string: parse_entry never panics, and what it accepts prints back to text that parses
//! to the same prefix (the round trip `list` and `load` rely on).
#![no_main]

use filter_common::cidr::parse_entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(prefix) = parse_entry(text) {
        let printed = prefix.to_string();
        assert_eq!(parse_entry(&printed), Ok(prefix), "{text:?} -> {printed}");
    }
});
