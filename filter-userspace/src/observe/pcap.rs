//! A minimal writer of classic pcap files (what tcpdump, tshark and Wireshark all open):
//! the 24-byte global header with nanosecond timestamps, then a 16-byte header per packet.
//! Always little-endian (readers tell the order from the magic), so a file is the same
//! whichever machine wrote it.

use std::io::{self, Write};

/// Magic of a nanosecond-resolution pcap file.
pub const MAGIC_NS: u32 = 0xa1b2_3c4d;
pub const LINKTYPE_ETHERNET: u32 = 1;

pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Write the global header; packets are cut to `snaplen` bytes.
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(Self { out, snaplen })
    }

    /// One packet: its time (ns since the epoch), the bytes captured and its length on the
    /// wire.
    pub fn packet(&mut self, time_ns: u64, data: &[u8], wire_len: u32) -> io::Result<()> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let caplen = data.len() as u32;
        let mut h = Vec::with_capacity(16 + data.len());
        h.extend_from_slice(&((time_ns / 1_000_000_000) as u32).to_le_bytes());
        h.extend_from_slice(&((time_ns % 1_000_000_000) as u32).to_le_bytes());
        h.extend_from_slice(&caplen.to_le_bytes());
        h.extend_from_slice(&wire_len.max(caplen).to_le_bytes());
        h.extend_from_slice(data);
        self.out.write_all(&h)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn global_header_is_nanosecond_ethernet() {
        let w = PcapWriter::new(Vec::new(), 128).unwrap();
        let b = w.into_inner();
        assert_eq!(b.len(), 24);
        assert_eq!(u32_at(&b, 0), MAGIC_NS);
        assert_eq!(&b[4..8], &[2, 0, 4, 0]);
        assert_eq!(u32_at(&b, 16), 128);
        assert_eq!(u32_at(&b, 20), LINKTYPE_ETHERNET);
    }

    #[test]
    fn packet_record_has_time_lengths_and_bytes() {
        let mut w = PcapWriter::new(Vec::new(), 128).unwrap();
        w.packet(1_700_000_000_123_456_789, &[1, 2, 3], 60).unwrap();
        let b = w.into_inner();
        let p = &b[24..];
        assert_eq!(u32_at(p, 0), 1_700_000_000);
        assert_eq!(u32_at(p, 4), 123_456_789);
        assert_eq!(u32_at(p, 8), 3);
        assert_eq!(u32_at(p, 12), 60);
        assert_eq!(&p[16..], &[1, 2, 3]);
    }

    #[test]
    fn packets_are_cut_to_the_snaplen() {
        let mut w = PcapWriter::new(Vec::new(), 4).unwrap();
        w.packet(0, &[9; 10], 10).unwrap();
        let b = w.into_inner();
        assert_eq!(u32_at(&b[24..], 8), 4);
        assert_eq!(u32_at(&b[24..], 12), 10);
        assert_eq!(b.len(), 24 + 16 + 4);
    }

    #[test]
    fn wire_length_is_never_below_captured() {
        let mut w = PcapWriter::new(Vec::new(), 128).unwrap();
        w.packet(0, &[0; 8], 2).unwrap();
        assert_eq!(u32_at(&w.into_inner()[24..], 12), 8);
    }
}
