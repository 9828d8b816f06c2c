//! Access control: ordered rules by source and destination prefix,
//! protocol, port ranges and ICMP type, first match wins; permit, deny or
//! reject (a TCP reset, or ICMP communication administratively
//! prohibited, RFC 1812 §5.2.7.1, rate-limited per source). In stateful
//! mode the packets of connections a rule permitted pass both ways
//! without a lookup, from the shared connection table
//! ([`crate::conntrack`]). Lookups use tuple space search
//! ([`classifier`]).

pub mod classifier;
pub mod config;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::{Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket};

use self::classifier::{Classifier, Fields};
pub use self::config::{AclAction, AclConfig, Rule};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::conntrack::ConnTable;
use crate::counters::DropReason;
use crate::flow::{Endpoint, Timeouts, ICMP, TCP, UDP};
use crate::icmp::IcmpError;
use crate::packet::{Batch, Packet};
use crate::ratelimit::PerSource;
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;

crate::counters! {
    pub struct AclCounters {
        permitted: counter "packets a rule (or the default) permitted",
        denied: counter "packets a rule (or the default) denied",
        rejected: counter "packets rejected with a TCP reset or ICMP admin-prohibited",
        reject_rate_limited: counter "rejects not answered: the source's rate was used up",
        established: counter "packets of tracked connections passed without a lookup (stateful)",
        related: counter "ICMP errors about a tracked connection passed (stateful)",
        connections_refused: counter "permitted connections not tracked: the table was full",
    }
}

/// What the ACL reads of a packet: the rule fields and the TCP flags.
fn fields(pkt: &Packet) -> Option<(Fields, u8)> {
    // Ingress checked the IPv4 header and recorded where it starts.
    let ip = Ipv4Packet::new_checked(pkt.l3()).ok()?;
    let proto = u8::from(ip.next_header());
    let mut f = Fields { proto, src: u32::from(ip.src_addr()), dst: u32::from(ip.dst_addr()), ports: None, icmp: None };
    let mut flags = 0;
    // Only a first fragment carries the transport header.
    if ip.frag_offset() == 0 {
        let l4 = ip.payload();
        match proto {
            TCP => {
                if let Ok(t) = TcpPacket::new_checked(l4) {
                    f.ports = Some((t.src_port(), t.dst_port()));
                    flags = l4[13];
                }
            }
            UDP => {
                if let Ok(u) = UdpPacket::new_checked(l4) {
                    f.ports = Some((u.src_port(), u.dst_port()));
                }
            }
            ICMP => {
                if let Ok(i) = Icmpv4Packet::new_checked(l4) {
                    f.icmp = Some((u8::from(i.msg_type()), i.msg_code()));
                }
            }
            _ => {}
        }
    }
    Some((f, flags))
}

/// The connection-table endpoints of a packet: ports for TCP/UDP, the
/// query identifier for ICMP echo (both ways), nothing else.
fn endpoints(f: &Fields, pkt: &Packet) -> (Endpoint, Endpoint) {
    let (sp, dp) = match (f.ports, f.icmp) {
        (Some(p), _) => p,
        (None, Some((0 | 8 | 13 | 14, _))) => {
            let id = Ipv4Packet::new_checked(pkt.l3())
                .ok()
                .and_then(|ip| Icmpv4Packet::new_checked(ip.payload()).ok().map(|i| i.echo_ident()))
                .unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    };
    (Endpoint::new(Ipv4Addr::from(f.src), sp), Endpoint::new(Ipv4Addr::from(f.dst), dp))
}

/// The connection an ICMP error quotes (RFC 792: the offending packet's IP
/// header and first 8 bytes follow the ICMP header): its protocol and
/// endpoints as that packet had them.
fn quoted(f: &Fields, pkt: &Packet) -> Option<(u8, Endpoint, Endpoint)> {
    if !matches!(f.icmp, Some((3 | 11 | 12, _))) {
        return None;
    }
    let ip = Ipv4Packet::new_checked(pkt.l3()).ok()?;
    let q = ip.payload().get(8..)?;
    let qip = Ipv4Packet::new_unchecked(q.get(..20)?);
    let ihl = qip.header_len() as usize;
    let l4 = q.get(ihl..ihl + 8)?;
    let proto = u8::from(qip.next_header());
    let (sp, dp) = match proto {
        TCP | UDP => (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])),
        ICMP => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    Some((proto, Endpoint::new(qip.src_addr(), sp), Endpoint::new(qip.dst_addr(), dp)))
}

pub struct Acl {
    name: String,
    classifier: Classifier,
    default: AclAction,
    conns: Option<ConnTable>,
    /// Per rule: packets it decided.
    hits: Vec<u64>,
    default_hits: u64,
    /// The address each port answers rejects from.
    port_addresses: Vec<Option<Ipv4Addr>>,
    rejects: PerSource,
    ident: u16,
    pub counters: AclCounters,
}

impl Acl {
    pub fn new(name: &str, c: &AclConfig, port_addresses: Vec<Option<Ipv4Addr>>, seed: u64) -> Acl {
        Acl {
            name: name.into(),
            classifier: Classifier::new(&c.rules),
            default: c.default,
            conns: c.stateful.then(|| ConnTable::new(c.connections, Timeouts::default(), seed)),
            hits: alloc::vec![0; c.rules.len()],
            default_hits: 0,
            port_addresses,
            rejects: PerSource::new(100, 20, crate::table::hash_words(seed, &[0x61636c])),
            ident: 0,
            counters: AclCounters::default(),
        }
    }

    fn filter(&mut self, pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let Some((f, flags)) = fields(&pkt) else { return Some(pkt) };
        // The connection-table key, read once for the lookup and the insert.
        let ends = self.conns.is_some().then(|| endpoints(&f, &pkt));
        if let (Some(conns), Some((a, b))) = (&mut self.conns, ends) {
            if conns.seen(f.proto, a, b, flags, cx.now).is_some() {
                self.counters.established += 1;
                return Some(pkt);
            }
            // An ICMP error about a tracked connection (unreachable, time
            // exceeded, parameter problem: path MTU discovery needs them).
            if let Some((proto, qa, qb)) = quoted(&f, &pkt) {
                if conns.has(proto, qa, qb, cx.now) {
                    self.counters.related += 1;
                    return Some(pkt);
                }
            }
        }
        let action = match self.classifier.first_match(&f) {
            Some(i) => {
                self.hits[i] += 1;
                self.classifier.rules()[i].action
            }
            None => {
                self.default_hits += 1;
                self.default
            }
        };
        match action {
            AclAction::Permit => {
                self.counters.permitted += 1;
                if let (Some(conns), Some((a, b))) = (&mut self.conns, ends) {
                    if !conns.open(f.proto, a, b, flags, cx.now) {
                        self.counters.connections_refused += 1;
                    }
                }
                Some(pkt)
            }
            AclAction::Deny => {
                self.counters.denied += 1;
                cx.drop(pkt, DropReason::Policy);
                None
            }
            AclAction::Reject => self.reject(pkt, &f, cx),
        }
    }

    /// Drops `pkt` and answers it in its own buffer; the answer goes on
    /// through the pipeline (the router sends it back).
    fn reject(&mut self, pkt: Packet, f: &Fields, cx: &mut StageContext<'_>) -> Option<Packet> {
        self.counters.rejected += 1;
        cx.count_drop(pkt.meta.in_port, DropReason::Policy);
        if !self.rejects.take(Ipv4Addr::from(f.src), cx.now) {
            self.counters.reject_rate_limited += 1;
            cx.pool.free(pkt);
            return None;
        }
        let from = self.port_addresses.get(pkt.meta.in_port as usize).copied().flatten();
        self.ident = self.ident.wrapping_add(1);
        let tcp = f.proto == TCP && f.ports.is_some();
        crate::icmp::refuse(pkt, cx.pool, tcp, IcmpError::AdminProhibited, from, self.ident)
    }
}

impl Stage for Acl {
    /// The ACL reads IPv4 rules only: IPv6 must not slip past it.
    fn ipv6(&self) -> crate::stage::Ipv6Handling {
        crate::stage::Ipv6Handling::Drop
    }

    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        for_each_packet(batch, |pkt| self.filter(pkt, cx));
    }

    /// New rules take effect at once; the connection table stays (as
    /// conntrack does under a new nftables ruleset), so established
    /// connections keep flowing across a reload that edits the rules. The
    /// table is rebuilt only if `stateful` or `connections` changed.
    fn reconfigure(&mut self, settings: &dyn core::any::Any) -> bool {
        let Some(c) = settings.downcast_ref::<AclConfig>() else { return false };
        let same_table = match &self.conns {
            Some(t) => c.stateful && t.capacity() == c.connections,
            None => !c.stateful,
        };
        if !same_table {
            return false;
        }
        self.classifier = Classifier::new(&c.rules);
        self.default = c.default;
        self.hits = alloc::vec![0; c.rules.len()];
        self.default_hits = 0;
        true
    }

    fn poll(&mut self, cx: &mut StageContext<'_>) {
        if let Some(c) = &mut self.conns {
            c.sweep(cx.now);
        }
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        self.counters.report(sink);
        sink.gauge("rules", "rules of the acl", self.hits.len() as u64);
        sink.gauge("tuples", "prefix-length pairs a lookup probes at most", self.classifier.tuples() as u64);
        sink.counter("default_hits", "packets no rule matched (the default decided)", self.default_hits);
        if let Some(c) = &self.conns {
            sink.gauge("connections", "connections tracked", c.len() as u64);
            sink.gauge("connection_capacity", "connections the table holds", c.capacity() as u64);
            sink.counter("connections_expired", "tracked connections that idled out", c.counters.expired);
        }
    }

    /// Rules that decided at least one packet, by the line they are on.
    fn report_details(&self, sink: &mut dyn StatsSink) {
        for (rule, hits) in self.classifier.rules().iter().zip(&self.hits).filter(|(_, h)| **h > 0) {
            let line = alloc::format!("{}", rule.line);
            sink.object("acl_rule", &[("acl", &self.name), ("line", &line)]);
            sink.counter("hits", "packets the rule decided", *hits);
        }
    }
}

/// The ACL's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "acl", statements: &["acl"], parse: config::parse, build };

fn build(c: &dyn StageConfig, cx: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<AclConfig>().expect("an acl builds from its own settings");
    let addrs = cx.config.ports.iter().map(|p| p.ip()).collect();
    Box::new(Acl::new(cx.name, c, addrs, cx.seed))
}

#[cfg(test)]
mod tests;
