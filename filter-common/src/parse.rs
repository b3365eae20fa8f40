//! Wire constants and parser limits shared by the XDP parser and the reference model, so the
//! two agree on what "supported" means.

pub const ETH_HDR_LEN: usize = 14;
pub const VLAN_HDR_LEN: usize = 4;
/// 802.1Q and 802.1ad tags: a frame with more stacked tags than this is treated as malformed
/// (the kernel would not deliver it to IP, and it must not be a way around the lists).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up on the chain (malformed).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const IPV4_MIN_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
pub const TCP_MIN_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;
/// Type, code, checksum and the 4-byte rest-of-header of ICMP and ICMPv6.
pub const ICMP_HDR_LEN: usize = 8;
pub const IPV6_FRAG_HDR_LEN: usize = 8;
