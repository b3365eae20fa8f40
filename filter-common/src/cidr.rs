//! Parsing list entries: addresses and CIDRs, one per argument or per line of a list file.
//! Shared so that the controller, the tests and the fuzz targets parse exactly alike.

use core::fmt;
use core::net::IpAddr;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::{V4PrefixKey, V6PrefixKey};
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

    pub fn v4_key(addr: u32, len: u8) -> V4PrefixKey {
        V4PrefixKey {
            addr: addr.to_be_bytes(),
            len: u32::from(len),
        }
    }

    pub fn v6_key(addr: u128, len: u8) -> V6PrefixKey {
        V6PrefixKey {
            addr: addr.to_be_bytes(),
            len: u32::from(len),
        }
    }

    pub fn from_v4_key(k: &V4PrefixKey) -> Self {
        Prefix::V4 {
            addr: u32::from_be_bytes(k.addr),
            len: k.len as u8,
        }
    }

    pub fn from_v6_key(k: &V6PrefixKey) -> Self {
        Prefix::V6 {
            addr: u128::from_be_bytes(k.addr),
            len: k.len as u8,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_ipnet().fmt(f)
    }
}

/// Parse one entry: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`, `2001:db8::1`.
/// Host bits beyond the prefix are refused, with the corrected network as the hint: a typo in
/// a blocklist must not silently block (or allow) a different range than the operator meant.
pub fn parse_entry(text: &str) -> Result<Prefix, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty entry".into());
    }
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| {
            format!("'{text}' is not a CIDR; expected e.g. 192.0.2.0/24 or 2001:db8::/32")
        })?;
        if net.trunc() != net {
            return Err(format!(
                "'{text}' has host bits set beyond /{}; write the network, {}",
                net.prefix_len(),
                net.trunc()
            ));
        }
        Ok(Prefix::from_ipnet(net))
    } else {
        let ip: IpAddr = text.parse().map_err(|_| {
            format!(
                "'{text}' is not an IP address or CIDR; expected e.g. 192.0.2.1 or 192.0.2.0/24"
            )
        })?;
        Ok(Prefix::from_ipnet(IpNet::from(ip)))
    }
}

/// An invalid line of a list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parse list-file text: one entry per line, `#` starts a comment (also after an entry), blank
/// lines are ignored. Returns every bad line, so the operator fixes them all in one go.
pub fn parse_list(text: &str) -> Result<Vec<Prefix>, Vec<LineError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content.split_whitespace().count() > 1 {
            errors.push(LineError {
                line: i + 1,
                message: format!("'{content}' holds more than one entry; put one entry per line"),
            });
            continue;
        }
        match parse_entry(content) {
            Ok(p) => entries.push(p),
            Err(message) => errors.push(LineError {
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
    fn list_files_report_every_bad_line() {
        let text = "# header\n10.0.0.0/8\n\n  192.0.2.1 # inline comment\nbogus\n2001:db8::/32\n1.2.3.4/33\n1.1.1.1 2.2.2.2\n";
        let errors = parse_list(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![5, 7, 8]);
        let ok = parse_list("# only\n10.0.0.0/8\n192.0.2.1 # x\n\n2001:db8::/32").unwrap();
        assert_eq!(ok.len(), 3);
    }
}
