//! Building test frames by layer: Ethernet (with VLAN tags), IPv4 (with options, fragments),
//! IPv6 (with extension headers), TCP, UDP, ICMP. Lengths and header-length fields are filled in
//! consistently; tests that want lies patch the bytes afterwards.

use crate::parse::*;
use core::net::{Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// Ethernet header with `vlans` tags (each a TPID: 0x8100 or 0x88a8) in front of `payload`.
pub fn ethernet(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR_LEN + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    for (i, tpid) in vlans.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 header (+options, padded to 4 bytes) followed by `payload`.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0); // end-of-options padding
    }
    let ihl = (IPV4_MIN_HDR_LEN + opts.len()) / 4;
    let total = ihl * 4 + payload.len();
    let mut h = Vec::with_capacity(total);
    h.push(0x40 | ihl as u8);
    h.push(0);
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&(frag_offset & 0x1fff).to_be_bytes());
    h.push(64);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&opts);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// One IPv6 extension header: `kind` is its protocol number, `body_len` the bytes after the
/// two-byte (next header, length) prefix; fragment headers are always 8 bytes.
#[derive(Clone, Debug)]
pub struct Ext {
    pub kind: u8,
    pub body_len: usize,
    /// Fragment offset in 8-byte units (fragment headers only).
    pub frag_offset: u16,
}

impl Ext {
    pub fn new(kind: u8) -> Self {
        Ext {
            kind,
            body_len: 6,
            frag_offset: 0,
        }
    }
}

/// IPv6 header, extension chain, then `payload` whose protocol is `proto`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, exts: &[Ext], payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |n| n.kind);
        if e.kind == IPPROTO_FRAGMENT {
            chain.push(next);
            chain.push(0);
            chain.extend_from_slice(&(e.frag_offset << 3).to_be_bytes());
            chain.extend_from_slice(&[0, 0, 0, 1]);
        } else {
            // Total length must be a multiple of 8: (len field + 1) * 8.
            let total = (2 + e.body_len).div_ceil(8) * 8;
            chain.push(next);
            chain.push((total / 8 - 1) as u8);
            chain.resize(chain.len() + total - 2, 0);
        }
    }
    let first = exts.first().map_or(proto, |e| e.kind);
    let mut h = Vec::with_capacity(IPV6_HDR_LEN + chain.len() + payload.len());
    h.extend_from_slice(&[0x60, 0, 0, 0]);
    h.extend_from_slice(&((chain.len() + payload.len()) as u16).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&chain);
    h.extend_from_slice(payload);
    h
}

pub fn tcp_syn(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(TCP_MIN_HDR_LEN + data.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(5 << 4);
    t.push(0x02);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    t
}

pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(UDP_HDR_LEN + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((UDP_HDR_LEN + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

/// ICMP or ICMPv6 echo request (type 8 or 128).
pub fn icmp_echo(v6: bool, data: &[u8]) -> Vec<u8> {
    let mut i = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
    i.extend_from_slice(data);
    i
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
