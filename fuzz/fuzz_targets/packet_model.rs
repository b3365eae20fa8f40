//! Any frame through the reference model's parser: no panic, no out-of-bounds read, and the
//! source it reports is really in the frame; a blocklist holding that source drops it.
#![no_main]

use filter_common::model::{parse_frame, Parsed, ReferenceFilter};
use filter_common::Reason;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let parsed = parse_frame(frame);
    assert_eq!(parsed, parse_frame(frame));
    if let Parsed::Ip(p) = parsed {
        let src = p.src();
        let needle: Vec<u8> = match src {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        assert!(frame.windows(needle.len()).any(|w| w == needle));
        let filter = ReferenceFilter { block: vec![src.into()], ..Default::default() };
        assert_eq!(filter.verdict(frame), Reason::DroppedBlocklist);
        let filter = ReferenceFilter { allow: vec![src.into()], block: vec![src.into()], ..Default::default() };
        assert_eq!(filter.verdict(frame), Reason::PassedAllowlisted);
    }
});
