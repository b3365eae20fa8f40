//! What XDP program an interface runs, as the kernel reports it over rtnetlink (RTM_GETLINK,
//! IFLA_XDP): bpf_link info gives an interface but not the mode, and a failed attach does not
//! say who holds the interface.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const NLA_TYPE_MASK: u16 = 0x3fff;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

/// The XDP program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpProgram {
    pub prog_id: u32,
    /// "native", "skb", "offload" or "several modes".
    pub mode: &'static str,
}

fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

/// The XDP program attached to interface `ifindex` of this network namespace, if any.
pub fn xdp_program(ifindex: u32) -> io::Result<Option<XdpProgram>> {
    // SAFETY: plain socket call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: sending a buffer we own; the kernel is the default destination.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: receiving into a buffer we own, of the length given.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let msg = &buf[..n as usize];
    if msg.len() < 16 {
        return Err(io::Error::other("short netlink reply"));
    }
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        let code = msg
            .get(16..20)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-libc::EIO);
        return Err(io::Error::from_raw_os_error(-code));
    }
    if kind != libc::RTM_NEWLINK {
        return Err(io::Error::other("unexpected netlink reply"));
    }
    let len = (u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize).min(msg.len());
    let Some(body) = msg.get(32..len) else {
        return Ok(None);
    };
    let Some((_, xdp)) = attrs(body).find(|(k, _)| *k == libc::IFLA_XDP) else {
        return Ok(None);
    };
    let mut attached = 0u8;
    let mut prog_id = 0u32;
    for (k, v) in attrs(xdp) {
        match k {
            IFLA_XDP_ATTACHED if !v.is_empty() => attached = v[0],
            // Several modes at once report one id per mode and no IFLA_XDP_PROG_ID.
            IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID
                if v.len() >= 4 && prog_id == 0 =>
            {
                prog_id = u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
            }
            _ => {}
        }
    }
    let mode = match attached {
        XDP_ATTACHED_DRV => "native",
        XDP_ATTACHED_SKB => "skb",
        XDP_ATTACHED_HW => "offload",
        XDP_ATTACHED_MULTI => "several modes",
        _ => return Ok(None),
    };
    Ok(Some(XdpProgram { prog_id, mode }))
}

/// The name of loaded program `id`, if it still exists.
pub fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_walked_with_padding() {
        // Two attributes: type 2 (1 byte, padded to 8), type 4 (4 bytes).
        let buf = [5u8, 0, 2, 0, 1, 0, 0, 0, 8, 0, 4, 0, 42, 0, 0, 0];
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(got, vec![(2, vec![1]), (4, vec![42, 0, 0, 0])]);
        // A length past the end stops the walk instead of reading beyond it.
        let bad = [200u8, 0, 2, 0, 1];
        assert_eq!(attrs(&bad).count(), 0);
    }
}
