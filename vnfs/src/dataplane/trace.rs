//! Packet trace, like VPP's `trace add`: `POST /trace?count=N` records the
//! next N packets' path — ingress verdict, each stage with the packet as
//! it left it (addresses, ports, TTL, where it is routed) or why it went,
//! and what the egress did. Traced packets go through the pipeline one at
//! a time; nothing changes for the others and nothing runs while no trace
//! is asked for. A trace ends at its deadline (`seconds=`, 60 by default,
//! at most 600) even if its filter never matched.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::counters::DropReason;
use crate::packet::Packet;
use crate::port::Port;

/// Most packets one trace records.
pub const MAX_TRACE: u32 = 100;

#[derive(Debug, Default)]
pub struct Trace {
    /// Only packets arriving on this port (`port=NAME`), else all.
    pub port: Option<u8>,
    /// Only packets this matches (`filter=`, as a capture's).
    pub filter: crate::capture::Filter,
    pub asked: u32,
    pub left: u32,
    /// When it stops waiting for packets (a filter that never matches
    /// must not keep every packet on the slow path for ever).
    pub deadline: Option<crate::Micros>,
    /// One entry per traced packet, its lines.
    pub records: Vec<String>,
    current: String,
    drops: Vec<u64>,
    /// It ended at its deadline with fewer packets than asked.
    pub expired: bool,
}

/// Every port's drop counters, added up per reason.
fn drops_of(ports: &[Port]) -> Vec<u64> {
    let mut v = alloc::vec![0u64; DropReason::COUNT];
    for p in ports {
        for (i, d) in p.counters.drops.0.iter().enumerate() {
            v[i] += d;
        }
    }
    v
}

/// A packet in one line: addresses, ports, protocol, TTL, length, and its
/// route if it has one. Every field is read within the frame.
pub fn summary(pkt: &Packet, ports: &[Port]) -> String {
    let mut s = String::new();
    let d = pkt.data();
    let et = d.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    // A packet a stage built in place (an ICMP error) has its Ethernet
    // header only at egress: its IP version says what it is.
    let v4 = pkt.l3().first().is_some_and(|b| b >> 4 == 4);
    match et {
        Some(0x0806) => s.push_str("arp"),
        _ if v4 => {
            let ip = pkt.l3();
            if let Some(h) = ip.get(..20) {
                let ihl = (h[0] & 0x0f) as usize * 4;
                let src = core::net::Ipv4Addr::new(h[12], h[13], h[14], h[15]);
                let dst = core::net::Ipv4Addr::new(h[16], h[17], h[18], h[19]);
                let ports_of = |b: &[u8]| (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]));
                let l4 = (ihl >= 20 && matches!(h[9], 6 | 17)).then(|| ip.get(ihl..ihl + 4)).flatten().map(ports_of);
                let proto = match h[9] {
                    1 => "icmp",
                    6 => "tcp",
                    17 => "udp",
                    _ => "ip",
                };
                let _ = match l4 {
                    Some((sp, dp)) => write!(s, "{src}:{sp} > {dst}:{dp} {proto}"),
                    None => write!(s, "{src} > {dst} {proto}"),
                };
                let _ = write!(s, " ttl {}", h[8]);
            } else {
                s.push_str("ipv4 (truncated)");
            }
        }
        Some(e) => {
            let _ = write!(s, "ethertype {e:#06x}");
        }
        None => s.push_str("runt"),
    }
    let _ = write!(s, " len {}", pkt.total_len());
    if let Some(out) = pkt.meta.out_port {
        let name = ports.get(out as usize).map_or("?", |p| p.name.as_str());
        let _ = write!(s, " → {name} via {}", pkt.meta.next_hop);
    }
    if pkt.meta.local {
        s.push_str(" (for the appliance)");
    }
    s
}

impl Trace {
    pub fn new(count: u32, port: Option<u8>, filter: crate::capture::Filter) -> Trace {
        let n = count.clamp(1, MAX_TRACE);
        Trace { port, filter, asked: n, left: n, ..Trace::default() }
    }

    /// The same, ending at `deadline`.
    pub fn until(mut self, deadline: crate::Micros) -> Trace {
        self.deadline = Some(deadline);
        self
    }

    /// Whether it still wants packets arriving on `port` at `now` (past
    /// its deadline it wants no more: it is over).
    pub fn wants(&mut self, port: u8, now: crate::Micros) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            self.left = 0;
            self.expired = true;
        }
        self.left > 0 && self.port.is_none_or(|p| p == port)
    }

    /// A packet starts: its arrival.
    pub fn begin(&mut self, port: &str, pkt: &Packet, ports: &[Port]) {
        self.current.clear();
        let _ = writeln!(self.current, "packet {}: in {port}: {}", self.records.len() + 1, summary(pkt, ports));
        self.drops = drops_of(ports);
    }

    /// After a step (`what`): the packet as it is now, or where it went,
    /// and the drop the step counted, if any (a router that drops a packet
    /// may answer with an ICMP error built in its place).
    pub fn step(&mut self, what: &str, pkt: Option<&Packet>, ports: &[Port]) {
        let now = drops_of(ports);
        let why = now.iter().zip(&self.drops).position(|(a, b)| a > b).map(|i| DropReason::ALL[i]);
        self.drops = now;
        let _ = match (pkt, why) {
            (Some(p), None) => writeln!(self.current, "  {what}: {}", summary(p, ports)),
            (Some(p), Some(r)) => {
                writeln!(self.current, "  {what}: dropped: {}; answers with {}", r.name(), summary(p, ports))
            }
            (None, Some(r)) => writeln!(self.current, "  {what}: dropped: {}", r.name()),
            (None, None) => writeln!(self.current, "  {what}: taken (transmitted, answered or held)"),
        };
    }

    /// A line of its own (the ingress verdict, the egress).
    pub fn note(&mut self, line: core::fmt::Arguments<'_>) {
        let _ = writeln!(self.current, "  {line}");
    }

    /// The packet is done.
    pub fn end(&mut self) {
        self.records.push(core::mem::take(&mut self.current));
        self.left = self.left.saturating_sub(1);
    }

    pub fn text(&self) -> String {
        let mut s = alloc::format!("trace: {} of {} packets\n", self.records.len(), self.asked);
        if self.expired {
            s.push_str("(the trace's deadline passed: it records no more)\n");
        }
        for r in &self.records {
            s.push_str(r);
        }
        s
    }
}
