//! Packet capture: what one port receives and sends, as a classic pcap
//! file (the format `tcpdump -r` and Wireshark read), with a small filter
//! evaluated in the appliance, bounded in packets, bytes and time. Nothing
//! runs while no capture is asked for: the dataplane holds an `Option`.
//!
//! `GET /capture?port=wan&count=100&seconds=10&filter=host+10.0.0.2+and+tcp`
//! answers when `count` frames matched or `seconds` passed, whichever is
//! first (at most 1000 frames, 60 s, 256 bytes of each frame). Its
//! buffer is reserved whole when it starts, out of the management budget.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::Micros;

/// Most frames one capture holds.
pub const MAX_COUNT: u32 = 1000;
/// Longest a capture runs.
pub const MAX_SECONDS: u64 = 60;
/// Bytes kept of each frame (the headers, and some payload).
pub const SNAPLEN: usize = 256;

/// `host A`, `port N`, `tcp` / `udp` / `icmp` / `arp`, joined by `and`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    host: Option<Ipv4Addr>,
    port: Option<u16>,
    proto: Option<Proto>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Ip(u8),
    Arp,
}

impl Filter {
    /// Parses the filter words (`+` or spaces between them); at most one of
    /// each kind.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        let mut words = text.split([' ', '+']).filter(|w| !w.is_empty());
        let mut first = true;
        while let Some(w) = words.next() {
            if !first {
                if w != "and" {
                    return Err(alloc::format!("expected `and` before `{w}`"));
                }
                let Some(next) = words.next() else { return Err("a filter cannot end in `and`".into()) };
                f.word(next, &mut words)?;
            } else {
                f.word(w, &mut words)?;
            }
            first = false;
        }
        Ok(f)
    }

    fn word<'a>(&mut self, w: &str, rest: &mut impl Iterator<Item = &'a str>) -> Result<(), String> {
        let set_proto = |f: &mut Filter, p| {
            if f.proto.replace(p).is_some() {
                return Err(String::from("one protocol per filter"));
            }
            Ok(())
        };
        match w {
            "host" => {
                let a = rest.next().ok_or("`host` needs an address")?;
                let a = a.parse().map_err(|_| alloc::format!("`{a}` is not an IPv4 address"))?;
                if self.host.replace(a).is_some() {
                    return Err("one `host` per filter".into());
                }
            }
            "port" => {
                let p = rest.next().ok_or("`port` needs a number")?;
                let p = p.parse().map_err(|_| alloc::format!("`{p}` is not a port number"))?;
                if self.port.replace(p).is_some() {
                    return Err("one `port` per filter".into());
                }
            }
            "tcp" => set_proto(self, Proto::Ip(6))?,
            "udp" => set_proto(self, Proto::Ip(17))?,
            "icmp" => set_proto(self, Proto::Ip(1))?,
            "arp" => set_proto(self, Proto::Arp)?,
            other => {
                return Err(alloc::format!("unknown filter word `{other}`: expected host, port, tcp, udp, icmp, arp"))
            }
        }
        Ok(())
    }

    /// Whether an Ethernet frame matches (every number read is bounded by
    /// the frame's length).
    pub fn matches(&self, frame: &[u8]) -> bool {
        let Some(et) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return false };
        if et == 0x0806 {
            // ARP: the sender and target addresses for `host`; no ports.
            let hit = |o: usize| frame.get(o..o + 4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            let host_ok = self.host.is_none_or(|h| hit(14 + 14) == Some(h) || hit(14 + 24) == Some(h));
            return matches!(self.proto, None | Some(Proto::Arp)) && self.port.is_none() && host_ok;
        }
        if et != 0x0800 {
            return self.host.is_none() && self.port.is_none() && self.proto.is_none();
        }
        let Some(ip) = frame.get(14..) else { return false };
        let Some(h) = ip.get(..20) else { return false };
        let ihl = (h[0] & 0x0f) as usize * 4;
        let proto = h[9];
        let (src, dst) = (Ipv4Addr::new(h[12], h[13], h[14], h[15]), Ipv4Addr::new(h[16], h[17], h[18], h[19]));
        if self.host.is_some_and(|a| a != src && a != dst) {
            return false;
        }
        if self.proto.is_some_and(|p| p != Proto::Ip(proto)) {
            return false;
        }
        if let Some(port) = self.port {
            // Ports only in a first fragment of TCP or UDP.
            let first = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
            let ports = (first && (proto == 6 || proto == 17) && ihl >= 20)
                .then(|| ip.get(ihl..ihl + 4))
                .flatten()
                .map(|p| (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])));
            return ports.is_some_and(|(s, d)| s == port || d == port);
        }
        true
    }
}

/// One capture in progress.
#[derive(Debug)]
pub struct Capture {
    pub port: u8,
    /// The management connection waiting for the file.
    pub conn: Option<usize>,
    filter: Filter,
    left: u32,
    deadline: Micros,
    /// The pcap file so far, in a buffer reserved whole at the start.
    pub file: Vec<u8>,
    /// Bytes charged to the management budget for `file`.
    pub charged: usize,
    pub frames: u32,
    /// Frames already recorded that still sit in the port's transmit queue
    /// (they are recorded once, when they enter it).
    pub tx_recorded: usize,
}

impl Capture {
    /// The bytes a capture of `count` frames may need: the pcap header and
    /// `count` records of at most [`SNAPLEN`] bytes.
    pub fn bytes_for(count: u32) -> usize {
        24 + count.clamp(1, MAX_COUNT) as usize * (16 + SNAPLEN)
    }

    /// A capture writing into `file`, a buffer with room for
    /// [`Capture::bytes_for`]`(count)` bytes (reserved, and charged to
    /// the management budget, by the caller): it never grows.
    pub fn new(port: u8, filter: Filter, count: u32, seconds: u64, now: Micros, mut file: Vec<u8>) -> Capture {
        let count = count.clamp(1, MAX_COUNT);
        file.clear();
        let charged = file.capacity();
        // Classic pcap, microsecond timestamps, little endian, Ethernet.
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&2u16.to_le_bytes());
        file.extend_from_slice(&4u16.to_le_bytes());
        file.extend_from_slice(&0i32.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(&(SNAPLEN as u32).to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        Capture {
            port,
            conn: None,
            filter,
            left: count,
            deadline: now.saturating_add(seconds.clamp(1, MAX_SECONDS) * 1_000_000),
            file,
            charged,
            frames: 0,
            tx_recorded: 0,
        }
    }

    /// Records `frame` (its first bytes; `len` is the whole frame's length)
    /// if it matches and room is left.
    pub fn record(&mut self, frame: &[u8], len: usize, now: Micros) {
        if self.left == 0 || !self.filter.matches(frame) {
            return;
        }
        let kept = &frame[..frame.len().min(SNAPLEN)];
        if self.file.capacity() - self.file.len() < 16 + kept.len() {
            // A buffer smaller than asked for: the capture ends, never grows.
            self.left = 0;
            return;
        }
        self.file.extend_from_slice(&((now / 1_000_000) as u32).to_le_bytes());
        self.file.extend_from_slice(&((now % 1_000_000) as u32).to_le_bytes());
        self.file.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        self.file.extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_le_bytes());
        self.file.extend_from_slice(kept);
        self.left -= 1;
        self.frames += 1;
    }

    pub fn done(&self, now: Micros) -> bool {
        self.left == 0 || now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn filters_parse_and_match_what_they_say() {
        let f = Filter::parse("host+10.0.0.7+and+icmp").unwrap();
        let ping = echo_request([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 1, 0, 2), 1, b"x");
        assert!(f.matches(&ping));
        assert!(!Filter::parse("host 10.0.0.8").unwrap().matches(&ping));
        assert!(!Filter::parse("tcp").unwrap().matches(&ping));
        assert!(!Filter::parse("port 80").unwrap().matches(&ping), "no ports in ICMP");
        assert!(Filter::parse("").unwrap().matches(&ping));
        for bad in [
            "host",
            "host x",
            "port 99999",
            "tcp and udp",
            "tcp udp",
            "tcp and",
            "bogus",
            "host 1.2.3.4 and host 1.2.3.5",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        // Truncated and hostile frames never match by accident, never panic.
        for n in 0..ping.len() {
            let _ = f.matches(&ping[..n]);
        }
        assert!(!f.matches(&ping[..20]));
        let mut short_ihl = ping.clone();
        short_ihl[14] = 0x4f;
        assert!(!Filter::parse("port 1").unwrap().matches(&short_ihl));
    }

    #[test]
    fn a_capture_is_a_pcap_file_bounded_in_frames() {
        let mut c = Capture::new(0, Filter::default(), 2, 5, 1_000_000, Vec::with_capacity(Capture::bytes_for(2)));
        let cap = c.file.capacity();
        let big = [0xabu8; 1500];
        c.record(&big, 1500, 1_500_000);
        c.record(&big[..60], 60, 2_000_001);
        c.record(&big[..60], 60, 2_000_002);
        assert_eq!(c.frames, 2);
        assert!(c.done(2_000_003));
        assert_eq!(&c.file[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        // Header, then a record of SNAPLEN bytes of the 1500, then 60.
        assert_eq!(c.file.len(), 24 + 16 + SNAPLEN + 16 + 60);
        assert_eq!(c.file.capacity(), cap, "the buffer reserved at the start was never grown");
        let rec = &c.file[24..40];
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), SNAPLEN as u32);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().unwrap()), 1500);
        assert!(!Capture::new(0, Filter::default(), 10, 5, 0, Vec::new()).done(4_999_999));
        assert!(Capture::new(0, Filter::default(), 10, 5, 0, Vec::new()).done(5_000_000));
        // A buffer too small for the frames asked: the capture stops, it
        // does not grow the buffer.
        let mut c = Capture::new(0, Filter::default(), 1000, 5, 0, Vec::with_capacity(Capture::bytes_for(3)));
        for i in 0..1000 {
            c.record(&big, 1500, i);
        }
        assert_eq!(c.frames, 3);
        assert!(c.done(0));
        assert_eq!(c.file.capacity(), Capture::bytes_for(3));
    }
}
