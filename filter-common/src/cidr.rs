//! Parsing list entries: addresses and CIDRs, one per argument or per line of a list file.
//! Shared so that the controller, the tests and the fuzz targets parse exactly alike.

use core::fmt;
use core::net::{IpAddr, Ipv6Addr};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::trie::Family;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One list entry; the address has no bits set beyond the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4 { addr: u32, len: u8 },
    V6 { addr: u128, len: u8 },
}

impl Prefix {
    /// An IPv4 prefix with the bits beyond `len` cleared (`len` at most 32).
    pub fn v4(addr: u32, len: u8) -> Self {
        let addr = if len == 0 {
            0
        } else {
            addr & (u32::MAX << (32 - u32::from(len)))
        };
        Prefix::V4 { addr, len }
    }

    /// An IPv6 prefix with the bits beyond `len` cleared (`len` at most 128).
    pub fn v6(addr: u128, len: u8) -> Self {
        let addr = if len == 0 {
            0
        } else {
            addr & (u128::MAX << (128 - u32::from(len)))
        };
        Prefix::V6 { addr, len }
    }

    pub fn to_ipnet(self) -> IpNet {
        match self {
            Prefix::V4 { addr, len } => {
                IpNet::V4(Ipv4Net::new(addr.into(), len).expect("len validated at parse"))
            }
            Prefix::V6 { addr, len } => {
                IpNet::V6(Ipv6Net::new(addr.into(), len).expect("len validated at parse"))
            }
        }
    }

    pub fn from_ipnet(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Prefix::V4 {
                addr: n.addr().into(),
                len: n.prefix_len(),
            },
            IpNet::V6(n) => Prefix::V6 {
                addr: n.addr().into(),
                len: n.prefix_len(),
            },
        }
    }

    pub fn family(self) -> Family {
        match self {
            Prefix::V4 { .. } => Family::V4,
            Prefix::V6 { .. } => Family::V6,
        }
    }

    pub fn prefix_len(self) -> u8 {
        match self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => len,
        }
    }

    /// The address aligned to the top of 128 bits (IPv4 in the first 32), as the list trie
    /// reads it.
    pub fn top_aligned(self) -> u128 {
        match self {
            Prefix::V4 { addr, .. } => u128::from(addr) << 96,
            Prefix::V6 { addr, .. } => addr,
        }
    }

    /// Inverse of `top_aligned`.
    pub fn from_top_aligned(family: Family, addr: u128, len: u8) -> Self {
        match family {
            Family::V4 => Prefix::V4 {
                addr: (addr >> 96) as u32,
                len,
            },
            Family::V6 => Prefix::V6 { addr, len },
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ipnet().fmt(f)
    }
}

/// Operator input as it may be shown in a message: control characters and other invisible
/// characters escaped, at most 60 characters.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 60 {
            out.push_str("...");
            break;
        }
        if c.is_control() || c == '\u{feff}' || c == '\u{200b}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parse one entry: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`, `2001:db8::1`.
/// Host bits beyond the prefix are refused, with the corrected network as the hint: a typo in
/// a blocklist must not silently block (or allow) a different range than the operator meant.
pub fn parse_entry(text: &str) -> Result<Prefix, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty entry".into());
    }
    let shown = shown(text);
    let net = if let Some((_, len)) = text.split_once('/') {
        // Addresses refuse leading zeros (010.0.0.1 could be octal); so do lengths.
        if len.len() > 1 && len.starts_with('0') {
            return Err(format!(
                "'{shown}' has a prefix length with a leading zero; write /{}",
                match len.trim_start_matches('0') {
                    "" => "0",
                    rest => rest,
                }
            ));
        }
        let net: IpNet = text.parse().map_err(|_| {
            format!("'{shown}' is not a CIDR; expected e.g. 192.0.2.0/24 or 2001:db8::/32")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "'{shown}' has host bits set beyond /{}; write the network, {}",
                net.prefix_len(),
                net.trunc()
            ));
        }
        net
    } else {
        let ip: IpAddr = text.parse().map_err(|_| {
            format!(
                "'{shown}' is not an IP address or CIDR; expected e.g. 192.0.2.1 or 192.0.2.0/24"
            )
        })?;
        IpNet::from(ip)
    };
    // IPv4-mapped IPv6 (::ffff:a.b.c.d) never appears as a source on the wire: IPv4 packets
    // carry IPv4 addresses. Storing it as IPv6 would silently match nothing.
    if let IpNet::V6(n) = net {
        let mapped = Ipv6Net::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96).expect("valid");
        if n.prefix_len() >= 96 && mapped.contains(&n) {
            let v4 = n.addr().to_ipv4_mapped().expect("inside ::ffff:0:0/96");
            let hint = if n.prefix_len() == 128 {
                v4.to_string()
            } else {
                format!("{v4}/{}", n.prefix_len() - 96)
            };
            return Err(format!(
                "'{shown}' is an IPv4-mapped IPv6 address, which never matches IPv4 traffic; write {hint}"
            ));
        }
    }
    Ok(Prefix::from_ipnet(net))
}

/// An invalid line of a list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// One line of a list file: `None` for blank lines and comments (`#` starts one, also after
/// an entry), else the entry or what is wrong with it.
pub fn parse_line(raw: &str) -> Option<Result<Prefix, String>> {
    let content = raw.split('#').next().unwrap_or("").trim();
    if content.is_empty() {
        return None;
    }
    if content.split_whitespace().count() > 1 {
        return Some(Err(format!(
            "'{}' holds more than one entry; put one entry per line",
            shown(content)
        )));
    }
    Some(parse_entry(content))
}

/// Parse list-file text held in memory (the controller streams files through [`parse_line`]):
/// returns every bad line, so the operator fixes them all in one go.
pub fn parse_list(text: &str) -> Result<Vec<Prefix>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        match parse_line(raw) {
            None => {}
            Some(Ok(p)) => entries.push(p),
            Some(Err(message)) => errors.push(LineError {
                line: i + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn prefix_lengths_with_leading_zeros_are_refused() {
        let e = parse_entry("10.0.0.0/08").unwrap_err();
        assert!(e.contains("leading zero") && e.contains("/8"), "{e}");
        assert!(parse_entry("::/00").unwrap_err().contains("write /0"));
        assert!(parse_entry("0.0.0.0/0").is_ok());
    }

    #[test]
    fn parses_addresses_and_cidrs() {
        assert_eq!(
            parse_entry("192.0.2.1"),
            Ok(Prefix::V4 {
                addr: 0xc000_0201,
                len: 32
            })
        );
        assert_eq!(
            parse_entry(" 10.0.0.0/8 "),
            Ok(Prefix::V4 {
                addr: 0x0a00_0000,
                len: 8
            })
        );
        assert_eq!(parse_entry("0.0.0.0/0"), Ok(Prefix::V4 { addr: 0, len: 0 }));
        assert_eq!(
            parse_entry("2001:db8::/32"),
            Ok(Prefix::V6 {
                addr: 0x2001_0db8 << 96,
                len: 32
            })
        );
        assert_eq!(parse_entry("::1"), Ok(Prefix::V6 { addr: 1, len: 128 }));
    }

    #[test]
    fn refuses_host_bits_with_a_hint() {
        let err = parse_entry("10.1.2.3/8").unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
        let err = parse_entry("2001:db8::1/32").unwrap_err();
        assert!(err.contains("2001:db8::/32"), "{err}");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "10.0.0.256",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "1.2.3.4/",
            "/8",
            "1.2.3",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn refuses_ipv4_mapped_with_the_ipv4_form() {
        let err = parse_entry("::ffff:1.2.3.4").unwrap_err();
        assert!(err.contains("write 1.2.3.4"), "{err}");
        let err = parse_entry("::ffff:1.2.3.0/120").unwrap_err();
        assert!(err.contains("write 1.2.3.0/24"), "{err}");
        // Shorter prefixes that merely cover the mapped range are ordinary IPv6.
        assert!(parse_entry("::/64").is_ok());
    }

    #[test]
    fn messages_escape_control_characters() {
        let err = parse_entry("1.2.3.4\u{1b}[31m").unwrap_err();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("\\u{1b}"), "{err}");
        let long = "x".repeat(500);
        assert!(parse_entry(&long).unwrap_err().len() < 200);
    }

    #[test]
    fn list_files_report_every_bad_line() {
        let text = "# header\n10.0.0.0/8\n\n  192.0.2.1 # inline comment\nbogus\n2001:db8::/32\n1.2.3.4/33\n1.1.1.1 2.2.2.2\n";
        let errors = parse_list(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 7, 8]);
        let ok = parse_list("# only\n10.0.0.0/8\n192.0.2.1 # x\n\n2001:db8::/32").unwrap();
        assert_eq!(ok.len(), 3);
    }
}
