//! Presets an operator names in one line.
//!
//! - `reflection`: UDP from the source ports of services abused for reflection and
//!   amplification: chargen 19, QOTD 17, portmap 111, NetBIOS 137, SNMP 161, CLDAP 389, RIP
//!   520, MSSQL 1434, SSDP 1900, ARD 3283, WS-Discovery 3702, mDNS 5353, Ubiquiti 10001,
//!   memcached 11211; and DNS (53) and NTP (123) replies of amplification size: 512 bytes and
//!   more from port 53 (plain DNS answers to this host's own queries are smaller), 200 bytes
//!   and more from port 123 (a normal NTP reply is 76 bytes; monlist answers are 468). The
//!   trade-off: a host that resolves names itself and receives large DNS answers (DNSSEC,
//!   big TXT records over EDNS) loses them; allowlist its resolvers, or leave the preset out.
//! - `tcp-flags`: TCP flag combinations no real stack sends: no flags (NULL scan), FIN+PSH+URG
//!   (XMAS), SYN+FIN, SYN+RST, FIN+RST, FIN without ACK, PSH without ACK, URG without ACK.

use filter_common::packet::*;
use filter_common::parse::{IPPROTO_TCP, IPPROTO_UDP};
use filter_common::rules::*;

use super::{values_to_ranges, Match};

const REFLECTION_ALWAYS: [u32; 14] = [
    17, 19, 111, 137, 161, 389, 520, 1434, 1900, 3283, 3702, 5353, 10001, 11211,
];

fn proto(p: u8) -> Option<Vec<(u32, u32)>> {
    Some(vec![(u32::from(p), u32::from(p))])
}

/// The table matches of a preset, or `None` if there is no such preset.
pub fn expand(name: &str) -> Option<Vec<Match>> {
    match name {
        "reflection" => {
            let mut always = Match::default();
            always.ranges[DIM_PROTO as usize] = proto(IPPROTO_UDP);
            always.ranges[DIM_SPORT as usize] =
                Some(REFLECTION_ALWAYS.iter().map(|&p| (p, p)).collect());
            let sized = |port: u32, min_len: u32| {
                let mut m = Match::default();
                m.ranges[DIM_PROTO as usize] = proto(IPPROTO_UDP);
                m.ranges[DIM_SPORT as usize] = Some(vec![(port, port)]);
                m.ranges[DIM_LEN as usize] = Some(vec![(min_len, 65535)]);
                m
            };
            Some(vec![always, sized(53, 512), sized(123, 200)])
        }
        "tcp-flags" => {
            let bad = |v: u32| {
                v & 0x3f == 0
                    || v & (TCP_FIN | TCP_PSH | TCP_URG) == TCP_FIN | TCP_PSH | TCP_URG
                    || v & (TCP_SYN | TCP_FIN) == TCP_SYN | TCP_FIN
                    || v & (TCP_SYN | TCP_RST) == TCP_SYN | TCP_RST
                    || v & (TCP_FIN | TCP_RST) == TCP_FIN | TCP_RST
                    || (v & TCP_ACK == 0 && v & (TCP_FIN | TCP_PSH | TCP_URG) != 0)
            };
            let mut m = Match::default();
            m.ranges[DIM_PROTO as usize] = proto(IPPROTO_TCP);
            m.ranges[DIM_TCP_FLAGS as usize] = Some(values_to_ranges((0..256).filter(|&v| bad(v))));
            Some(vec![m])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::model::RuleSpec;

    fn spec(m: &Match) -> RuleSpec {
        RuleSpec {
            drop: true,
            monitor: false,
            ranges: m.ranges.clone(),
        }
    }

    fn tcp(flags: u32) -> Packet {
        Packet {
            proto: IPPROTO_TCP,
            tcp_flags: flags,
            sport: 40000,
            dport: 80,
            len: 60,
            ..Packet::v4(0x0a00_0001)
        }
    }

    #[test]
    fn tcp_flags_preset_spares_real_handshakes() {
        let m = expand("tcp-flags").unwrap();
        let hit = |f| m.iter().any(|m| spec(m).matches(&tcp(f)));
        for ok in [
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_ACK | TCP_PSH,
            TCP_FIN | TCP_ACK,
            TCP_RST,
            TCP_RST | TCP_ACK,
            TCP_SYN | TCP_ECE | TCP_CWR,
        ] {
            assert!(!hit(ok), "{ok:#x} is a real segment");
        }
        for bad in [
            0,
            TCP_FIN | TCP_PSH | TCP_URG,
            TCP_SYN | TCP_FIN,
            TCP_SYN | TCP_RST,
            TCP_FIN,
            TCP_PSH,
            TCP_FIN | TCP_RST | TCP_ACK,
        ] {
            assert!(hit(bad), "{bad:#x} is impossible");
        }
    }

    #[test]
    fn reflection_preset_spares_small_dns_and_ntp_replies() {
        let m = expand("reflection").unwrap();
        let udp = |sport, len| Packet {
            proto: IPPROTO_UDP,
            sport,
            dport: 45000,
            len,
            ..Packet::v4(0x0a00_0001)
        };
        let hit = |p: Packet| m.iter().any(|m| spec(m).matches(&p));
        assert!(hit(udp(11211, 1400)));
        assert!(hit(udp(19, 60)));
        assert!(hit(udp(53, 3000)));
        assert!(!hit(udp(53, 120)), "an ordinary DNS answer");
        assert!(hit(udp(123, 468)), "monlist");
        assert!(!hit(udp(123, 76)), "an ordinary NTP reply");
        assert!(!hit(udp(443, 1400)));
    }
}
