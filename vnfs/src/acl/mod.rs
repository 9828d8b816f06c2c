//! Access control: ordered rules by source and destination prefix,
//! protocol, port ranges and ICMP type, first match wins; permit, deny or
//! reject (a TCP reset, or ICMP communication administratively
//! prohibited, RFC 1812 §5.2.7.1, rate-limited per source). In stateful
//! mode the packets of connections a rule permitted pass both ways
//! without a lookup, from the shared connection table
//! ([`crate::conntrack`]). Lookups use tuple space search
//! ([`classifier`]).
//!
//! It fails closed: every IPv4 packet is judged from the headers in its
//! first buffer (a chained super-packet's are there too), and one it
//! cannot read is dropped (`acl_unparsable`), never passed unjudged.
//! Fragments are judged as a whole datagram: a first fragment too short
//! for the fields the rules read is dropped (`acl_tiny_fragment`), and the
//! later fragments take its verdict ([`fragments`]).
//!
//! IPv6 is read the same way (the extension headers by
//! [`crate::ipv6::upper_layer`], the one bounded walk) against the IPv6
//! rules, with its own connection table (`Endpoint<Ipv6Addr>`, only when
//! there are IPv6 rules) and the same fragment cache. Before the rules,
//! as RFC 4890 §4.3.1 recommends for a firewall, ICMPv6 errors
//! (unreachable, packet too big, time exceeded, parameter problem) pass,
//! and so does neighbour discovery (types 133–136 with hop limit 255, which
//! only a neighbour can send, RFC 4861 §6.1); echo is up to the rules. An
//! ACL without IPv6 rules drops all other IPv6 (`ipv6_unsupported`).

pub mod classifier;
pub mod config;
pub mod fragments;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use self::classifier::{Classifier, Fields};
pub use self::config::{AclAction, AclConfig, Rule};
use self::fragments::{FragKey, Fragments};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::conntrack::{default_quota, ConnTable};
use crate::counters::DropReason;
use crate::flow::{Endpoint, Timeouts, ICMP, TCP, UDP};
use crate::icmp::IcmpError;
use crate::packet::{Batch, Packet};
use crate::ratelimit::PerSource;
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;
use config::ICMP6;

crate::counters! {
    pub struct AclCounters {
        permitted: counter "packets a rule (or the default) permitted",
        denied: counter "packets a rule (or the default) denied",
        rejected: counter "packets rejected with a TCP reset or ICMP admin-prohibited",
        reject_rate_limited: counter "rejects not answered: the source's rate was used up",
        established: counter "packets of tracked connections passed without a lookup (stateful)",
        related: counter "ICMP errors about a tracked connection passed (stateful)",
        connections_refused: counter "permitted connections not tracked: the table (or the source's quota) was full of established ones",
        unparsable: counter "packets dropped: not classifiable from their first buffer (acl_unparsable)",
        tiny_fragments: counter "first fragments too short for their transport header, or TCP fragments at offset 8 (IPv6: any later fragment below 24), dropped (acl_tiny_fragment)",
        fragments_passed: counter "non-first fragments passed by their first fragment's permit",
        fragments_denied: counter "non-first fragments dropped by their first fragment's deny (drop_policy)",
        fragments_unknown: counter "non-first fragments dropped: no first fragment judged (acl_fragment_unknown)",
        icmp6_defaults: counter "ICMPv6 errors and neighbour discovery passed before the rules (RFC 4890)",
        ipv6_no_rules: counter "IPv6 packets dropped: the acl has no IPv6 rules (ipv6_unsupported)",
    }
}

/// Whether a datagram is fragmented, and which fragment this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    Whole,
    /// Offset 0, more to come: judged by the rules, its verdict remembered.
    First(FragKey),
    /// Judged by its first fragment's verdict.
    Later(FragKey),
}

/// What the ACL reads of a packet, all from its first buffer.
struct Parsed {
    f: Fields,
    /// TCP flags as [`crate::flow::tcp_flags`] counts them.
    flags: u8,
    /// The ICMP query identifier (echo, timestamp), else 0.
    query_id: u16,
    frag: Frag,
    /// The connection an ICMP error quotes (of an unfragmented error).
    quoted: Option<(u8, Endpoint, Endpoint)>,
    /// The same for an ICMPv6 error.
    quoted6: Option<(u8, Endpoint<Ipv6Addr>, Endpoint<Ipv6Addr>)>,
    /// An ICMPv6 message RFC 4890 says a firewall passes.
    rfc4890: bool,
}

/// The transport bytes a first fragment must hold for the rules and the
/// connection table to see what they look at (RFC 1858, RFC 3128): TCP's
/// fixed header (ports through flags and more), UDP's header, ICMP's
/// header (type, code and a query's identifier). Other protocols: none.
fn transport_min(proto: u8) -> usize {
    match proto {
        TCP => 20,
        UDP | ICMP | ICMP6 => 8,
        _ => 0,
    }
}

/// Reads a packet for the ACL, from the head buffer (where a chained
/// super-packet has its headers too; its total length counts the tail).
/// A packet that cannot be read is an error naming why: the ACL drops it.
fn parse(pkt: &Packet) -> Result<Parsed, DropReason> {
    use DropReason::{AclTinyFragment as Tiny, AclUnparsable as Bad};
    // Ingress checked the header; a filter does not take that on trust.
    let ip = pkt.ipv4_header().ok_or(Bad)?;
    let l3 = pkt.l3();
    let (hl, total) = (ip.header_len() as usize, ip.total_len() as usize);
    let proto = u8::from(ip.next_header());
    let (src, dst) = (u32::from(ip.src_addr()), u32::from(ip.dst_addr()));
    let key = FragKey { v6: false, src: src as u128, dst: dst as u128, proto, ident: ip.ident() as u32 };
    let mut p = Parsed {
        f: Fields { proto, src, dst, ports: None, icmp: None, v6: None },
        flags: 0,
        query_id: 0,
        frag: Frag::Whole,
        quoted: None,
        quoted6: None,
        rfc4890: false,
    };
    if ip.frag_offset() != 0 {
        // RFC 1858 §4: a TCP fragment at offset 8 rewrites the first's
        // flags and header length after the filter judged them.
        if proto == TCP && ip.frag_offset() == 8 {
            return Err(Tiny);
        }
        p.frag = Frag::Later(key);
        return Ok(p);
    }
    if ip.more_frags() {
        p.frag = Frag::First(key);
    }
    let need = transport_min(proto);
    if total - hl < need {
        return Err(if ip.more_frags() { Tiny } else { Bad });
    }
    // The transport header must be in the head buffer.
    let l4 = &l3[hl..total.min(l3.len())];
    if l4.len() < need {
        return Err(Bad);
    }
    match proto {
        TCP | UDP => ports(&mut p, l4),
        ICMP => {
            let i = Icmpv4Packet::new_unchecked(l4);
            let ty = u8::from(i.msg_type());
            p.f.icmp = Some((ty, i.msg_code()));
            match ty {
                0 | 8 | 13 | 14 => p.query_id = i.echo_ident(),
                3 | 11 | 12 if p.frag == Frag::Whole => p.quoted = quoted(&l4[8..]),
                _ => {}
            }
        }
        _ => {}
    }
    Ok(p)
}

/// Reads the ports (and TCP's flags) of a transport header holding at
/// least [`transport_min`] bytes.
fn ports(p: &mut Parsed, l4: &[u8]) {
    if p.f.proto == TCP {
        let t = TcpPacket::new_unchecked(l4);
        p.f.ports = Some((t.src_port(), t.dst_port()));
        use crate::flow::tcp_flags::{ACK, FIN, RST, SYN};
        p.flags = [(t.fin(), FIN), (t.syn(), SYN), (t.rst(), RST), (t.ack(), ACK)]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |a, (_, f)| a | f);
    } else {
        let u = UdpPacket::new_unchecked(l4);
        p.f.ports = Some((u.src_port(), u.dst_port()));
    }
}

/// Reads an IPv6 packet for the ACL, as [`parse`] an IPv4 one: the header
/// checked against the frame, the extension headers walked by
/// [`crate::ipv6::upper_layer`] (bounded; a chain it refuses is
/// unparsable), the transport header in the head buffer.
fn parse6(pkt: &Packet) -> Result<Parsed, DropReason> {
    use DropReason::{AclTinyFragment as Tiny, AclUnparsable as Bad};
    let l3 = pkt.l3();
    if l3.len() < crate::ipv6::HLEN {
        return Err(Bad);
    }
    let ip = Ipv6Packet::new_unchecked(l3);
    let total = crate::ipv6::HLEN + ip.payload_len() as usize;
    let in_frame = pkt.total_len().saturating_sub(pkt.meta.l3 as usize);
    if ip.version() != 6 || total > in_frame {
        return Err(Bad);
    }
    let up = crate::ipv6::upper_layer(&l3[..total.min(l3.len())]).map_err(|_| Bad)?;
    let (src, dst): (Ipv6Addr, Ipv6Addr) = (ip.src_addr(), ip.dst_addr());
    let (ident, offset, more) = up.frag.unwrap_or((0, 0, false));
    // Protocol 0: a later fragment names the header after the fragment
    // header, not necessarily the first's upper layer.
    let key = FragKey { v6: true, src: u128::from(src), dst: u128::from(dst), proto: 0, ident };
    let proto = up.proto;
    let mut p = Parsed {
        f: Fields { proto, src: 0, dst: 0, ports: None, icmp: None, v6: Some((src, dst)) },
        flags: 0,
        query_id: 0,
        frag: Frag::Whole,
        quoted: None,
        quoted6: None,
        rfc4890: false,
    };
    if !up.first {
        // RFC 1858 §4 as for IPv4: a later fragment that starts within the
        // 24 bytes where a first fragment's transport header sits (its
        // protocol is not known here) could overwrite what was judged.
        if offset < 3 {
            return Err(Tiny);
        }
        p.frag = Frag::Later(key);
        return Ok(p);
    }
    if more {
        p.frag = Frag::First(key);
    }
    let need = transport_min(proto);
    // `upper_layer` keeps the offset inside the packet.
    if total.saturating_sub(up.offset) < need {
        return Err(if more { Tiny } else { Bad });
    }
    let l4 = l3.get(up.offset..total.min(l3.len())).ok_or(Bad)?;
    if l4.len() < need {
        return Err(Bad);
    }
    match proto {
        TCP | UDP => ports(&mut p, l4),
        ICMP6 => {
            let i = Icmpv6Packet::new_unchecked(l4);
            let ty = u8::from(i.msg_type());
            p.f.icmp = Some((ty, i.msg_code()));
            match ty {
                128 | 129 => p.query_id = i.echo_ident(),
                // RFC 4890 §4.3.1: errors path MTU discovery and
                // diagnosis need (never fragmented: RFC 4443 keeps them
                // within the minimum MTU).
                1..=4 => {
                    p.rfc4890 = p.frag == Frag::Whole;
                    if p.rfc4890 {
                        p.quoted6 = quoted6(l4.get(8..).unwrap_or(&[]));
                    }
                }
                // RS, RA, NS, NA: only from a neighbour (hop limit 255)
                // and to a link's own addresses (multicast or link-local),
                // which nothing forwards; ND to a global address is judged.
                133..=136 => {
                    let on_link = dst.is_multicast() || dst.is_unicast_link_local();
                    p.rfc4890 = p.frag == Frag::Whole && ip.hop_limit() == 255 && on_link;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(p)
}

/// The connection an ICMP error quotes (RFC 792: the offending packet's IP
/// header and first 8 bytes follow the ICMP header): its protocol and
/// endpoints as that packet had them. `None` if the quote is cut short or
/// is not of a first fragment.
fn quoted(q: &[u8]) -> Option<(u8, Endpoint, Endpoint)> {
    let qip = Ipv4Packet::new_unchecked(q.get(..20)?);
    let ihl = qip.header_len() as usize;
    if qip.version() != 4 || ihl < 20 || qip.frag_offset() != 0 {
        return None;
    }
    let l4 = q.get(ihl..ihl + 8)?;
    let proto = u8::from(qip.next_header());
    let (sp, dp) = quoted_ports(proto, l4);
    Some((proto, Endpoint::new(qip.src_addr(), sp), Endpoint::new(qip.dst_addr(), dp)))
}

/// The connection an ICMPv6 error's invoking packet belongs to: its
/// addresses, protocol and ports (the echo identifier for ICMPv6 echo),
/// read from however much of it the error carries (RFC 4443 §2.4 (c)).
fn quoted6(q: &[u8]) -> Option<(u8, Endpoint<Ipv6Addr>, Endpoint<Ipv6Addr>)> {
    // Unchecked: the quote may be cut short of its payload length.
    let qip = Ipv6Packet::new_unchecked(q.get(..crate::ipv6::HLEN)?);
    if qip.version() != 6 {
        return None;
    }
    // `upper_layer` reads no further than the bytes quoted.
    let up = crate::ipv6::upper_layer(q).ok()?;
    if !up.first {
        return None;
    }
    let l4 = q.get(up.offset..up.offset + 8)?;
    let (sp, dp) = quoted_ports(up.proto, l4);
    Some((up.proto, Endpoint::new(qip.src_addr(), sp), Endpoint::new(qip.dst_addr(), dp)))
}

/// The ports in the first 8 bytes of a quoted transport header (TCP and
/// UDP keep them in the same place), or an ICMP or ICMPv6 query's
/// identifier both ways, as [`endpoints`] keys a connection.
fn quoted_ports(proto: u8, l4: &[u8]) -> (u16, u16) {
    match proto {
        TCP | UDP => {
            let u = UdpPacket::new_unchecked(l4);
            (u.src_port(), u.dst_port())
        }
        ICMP => {
            let id = Icmpv4Packet::new_unchecked(l4).echo_ident();
            (id, id)
        }
        ICMP6 => {
            let id = Icmpv6Packet::new_unchecked(l4).echo_ident();
            (id, id)
        }
        _ => (0, 0),
    }
}

/// The connection-table endpoints of a packet: ports for TCP/UDP, the
/// query identifier for ICMP queries (both ways), nothing else.
fn endpoints(p: &Parsed) -> (Endpoint, Endpoint) {
    let (sp, dp) = p.f.ports.unwrap_or((p.query_id, p.query_id));
    (Endpoint::new(Ipv4Addr::from(p.f.src), sp), Endpoint::new(Ipv4Addr::from(p.f.dst), dp))
}

/// [`endpoints`] of an IPv6 packet.
fn endpoints6(p: &Parsed, (src, dst): (Ipv6Addr, Ipv6Addr)) -> (Endpoint<Ipv6Addr>, Endpoint<Ipv6Addr>) {
    let (sp, dp) = p.f.ports.unwrap_or((p.query_id, p.query_id));
    (Endpoint::new(src, sp), Endpoint::new(dst, dp))
}

pub struct Acl {
    name: String,
    classifier: Classifier,
    default: AclAction,
    conns: Option<ConnTable>,
    /// IPv6 connections (stateful, with IPv6 rules): a table of its own so
    /// the IPv4 one keeps its narrow entries.
    conns6: Option<ConnTable<Ipv6Addr>>,
    /// Whether any rule is for IPv6 (else IPv6 is dropped).
    has_v6: bool,
    /// First fragments' verdicts, for the later fragments.
    frags: Fragments,
    /// Per rule: packets it decided.
    hits: Vec<u64>,
    default_hits: u64,
    /// The address each port answers rejects from.
    port_addresses: Vec<Option<Ipv4Addr>>,
    /// Each port's IPv6 addresses (an ICMPv6 reject's source is picked
    /// among them).
    port_addresses6: Vec<Vec<ipnet::Ipv6Net>>,
    rejects: PerSource,
    ident: u16,
    pub counters: AclCounters,
}

impl Acl {
    pub fn new(
        name: &str,
        c: &AclConfig,
        port_addresses: Vec<Option<Ipv4Addr>>,
        port_addresses6: Vec<Vec<ipnet::Ipv6Net>>,
        seed: u64,
    ) -> Acl {
        Acl {
            name: name.into(),
            classifier: Classifier::new(&c.rules),
            default: c.default,
            conns: c.stateful.then(|| {
                let mut t = ConnTable::new(c.connections, Timeouts::default(), seed);
                t.set_quota(c.source_connections.unwrap_or(default_quota(c.connections)));
                t
            }),
            conns6: (c.stateful && c.has_v6()).then(|| {
                let mut t = ConnTable::new(c.connections, Timeouts::default(), seed ^ 6);
                t.set_quota(c.source_connections.unwrap_or(default_quota(c.connections)));
                t
            }),
            has_v6: c.has_v6(),
            frags: Fragments::new(),
            hits: alloc::vec![0; c.rules.len()],
            default_hits: 0,
            port_addresses,
            port_addresses6,
            rejects: PerSource::new(100, 20, crate::table::hash_words(seed, &[0x61636c])),
            ident: 0,
            counters: AclCounters::default(),
        }
    }

    fn filter(&mut self, pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let v6 = crate::ipv6::is_ipv6(pkt.l3());
        let p = match if v6 { parse6(&pkt) } else { parse(&pkt) } {
            Ok(p) => p,
            Err(reason) => {
                if reason == DropReason::AclTinyFragment {
                    self.counters.tiny_fragments += 1;
                } else {
                    self.counters.unparsable += 1;
                }
                cx.drop(pkt, reason);
                return None;
            }
        };
        // No IPv6 rules: no IPv6 passes, the RFC 4890 defaults included
        // (fail closed; `sluice check` warns).
        if v6 && !self.has_v6 {
            self.counters.ipv6_no_rules += 1;
            cx.drop(pkt, DropReason::Ipv6Unsupported);
            return None;
        }
        if p.rfc4890 {
            // A stateful ACL takes an ICMPv6 error only about a tracked
            // connection and to the endpoint whose packet it quotes, as it
            // does an ICMP error (else anyone could send errors inward
            // through `default deny`), and leaves any other to the rules.
            // Otherwise (a stateless ACL's errors, neighbour discovery)
            // the RFC 4890 §4.3.1 defaults stand in for the default
            // action: a rule that names the packet still decides.
            let error = p.f.icmp.is_some_and(|(ty, _)| ty < 128);
            match (&mut self.conns6, error) {
                (Some(conns), true) => {
                    let to = p.f.v6.map(|(_, dst)| dst);
                    if let Some((proto, qa, qb)) = p.quoted6 {
                        if Some(qa.addr) == to && conns.has(proto, qa, qb, cx.now) {
                            self.counters.related += 1;
                            return Some(pkt);
                        }
                    }
                }
                _ if self.classifier.first_match(&p.f).is_none() => {
                    self.counters.icmp6_defaults += 1;
                    return Some(pkt);
                }
                _ => {}
            }
        }
        if let Frag::Later(key) = p.frag {
            return match self.frags.verdict(key, cx.now) {
                Some(true) => {
                    self.counters.fragments_passed += 1;
                    Some(pkt)
                }
                Some(false) => {
                    self.counters.fragments_denied += 1;
                    cx.drop(pkt, DropReason::Policy);
                    None
                }
                None => {
                    self.counters.fragments_unknown += 1;
                    cx.drop(pkt, DropReason::AclFragmentUnknown);
                    None
                }
            };
        }
        let (out, passed) = self.judge(pkt, &p, cx);
        if let Frag::First(key) = p.frag {
            self.frags.remember(key, passed, cx.now);
        }
        out
    }

    /// Judges an unfragmented packet or a first fragment: by the connection
    /// table (stateful), else by the rules. Returns what goes on (the packet,
    /// or a reject's answer) and whether the packet itself passed.
    fn judge(&mut self, pkt: Packet, p: &Parsed, cx: &mut StageContext<'_>) -> (Option<Packet>, bool) {
        let f = &p.f;
        if let Some(addrs) = f.v6 {
            return self.judge6(pkt, p, addrs, cx);
        }
        // The connection-table key, read once for the lookup and the insert.
        let ends = self.conns.is_some().then(|| endpoints(p));
        if let (Some(conns), Some((a, b))) = (&mut self.conns, ends) {
            if conns.seen(f.proto, a, b, pkt.meta.in_port, p.flags, cx.now).is_some() {
                self.counters.established += 1;
                return (Some(pkt), true);
            }
            // An ICMP error about a tracked connection (unreachable, time
            // exceeded, parameter problem: path MTU discovery needs them),
            // sent to the endpoint whose packet it quotes, as Linux
            // conntrack requires: an error quoting a packet from A goes to
            // A, never to a neighbour of A's, nor to A's peer.
            if let Some((proto, qa, qb)) = p.quoted {
                if u32::from(qa.addr) == f.dst && conns.has(proto, qa, qb, cx.now) {
                    self.counters.related += 1;
                    return (Some(pkt), true);
                }
            }
        }
        let action = match self.classifier.first_match(f) {
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
                    if !conns.open(f.proto, a, b, pkt.meta.in_port, p.flags, cx.now) {
                        self.counters.connections_refused += 1;
                    }
                }
                (Some(pkt), true)
            }
            AclAction::Deny => {
                self.counters.denied += 1;
                cx.drop(pkt, DropReason::Policy);
                (None, false)
            }
            AclAction::Reject => (self.reject(pkt, f, cx), false),
        }
    }

    /// [`Self::judge`] for IPv6: its own connection table.
    fn judge6(
        &mut self,
        pkt: Packet,
        p: &Parsed,
        addrs: (Ipv6Addr, Ipv6Addr),
        cx: &mut StageContext<'_>,
    ) -> (Option<Packet>, bool) {
        let (a, b) = endpoints6(p, addrs);
        if let Some(conns) = &mut self.conns6 {
            if conns.seen(p.f.proto, a, b, pkt.meta.in_port, p.flags, cx.now).is_some() {
                self.counters.established += 1;
                return (Some(pkt), true);
            }
        }
        let action = match self.classifier.first_match(&p.f) {
            Some(i) => {
                self.hits[i] += 1;
                self.classifier.rules()[i].action
            }
            None => {
                self.default_hits += 1;
                self.default
            }
        };
        if action == AclAction::Permit {
            self.counters.permitted += 1;
            if let Some(conns) = &mut self.conns6 {
                if !conns.open(p.f.proto, a, b, pkt.meta.in_port, p.flags, cx.now) {
                    self.counters.connections_refused += 1;
                }
            }
            return (Some(pkt), true);
        }
        if action == AclAction::Reject {
            return (self.reject6(pkt, p, addrs.0, cx), false);
        }
        self.counters.denied += 1;
        cx.drop(pkt, DropReason::Policy);
        (None, false)
    }

    /// [`Self::reject`] for IPv6: a TCP reset (of a segment without
    /// extension headers), else ICMPv6 destination unreachable code 1
    /// (administratively prohibited) from the input port's address, where
    /// RFC 4443 §2.4 (e) allows an error; rate-limited per source.
    fn reject6(&mut self, pkt: Packet, p: &Parsed, src: Ipv6Addr, cx: &mut StageContext<'_>) -> Option<Packet> {
        self.counters.rejected += 1;
        cx.count_drop(pkt.meta.in_port, DropReason::Policy);
        if !self.rejects.take6(src, cx.now) {
            self.counters.reject_rate_limited += 1;
            cx.pool.free(pkt);
            return None;
        }
        let from =
            self.port_addresses6.get(pkt.meta.in_port as usize).and_then(|a| crate::ipv6::pick_source(a.iter(), &src));
        let plain_tcp = p.f.proto == TCP && p.f.ports.is_some() && pkt.l3().get(6) == Some(&TCP);
        crate::ipv6::refusal(pkt, plain_tcp, crate::ipv6::Icmp6Error::AdminProhibited, from, cx.pool)
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
    /// The ACL judges IPv6 itself (and drops it without IPv6 rules).
    fn ipv6(&self) -> crate::stage::Ipv6Handling {
        crate::stage::Ipv6Handling::Process
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
        } && self.conns6.is_some() == (c.stateful && c.has_v6());
        if !same_table {
            return false;
        }
        if let Some(t) = &mut self.conns {
            t.set_quota(c.source_connections.unwrap_or(default_quota(c.connections)));
        }
        if let Some(t) = &mut self.conns6 {
            t.set_quota(c.source_connections.unwrap_or(default_quota(c.connections)));
        }
        self.has_v6 = c.has_v6();
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
        if let Some(c) = &mut self.conns6 {
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
            if let Some(c6) = &self.conns6 {
                sink.gauge("connections6", "IPv6 connections tracked", c6.len() as u64);
            }
            sink.gauge("connection_capacity", "connections the table holds", c.capacity() as u64);
            sink.counter("connections_expired", "tracked connections that idled out", c.counters.expired);
            sink.counter(
                "connections_evicted",
                "transitory connections (handshake or close, or no reply yet) removed for new ones",
                c.counters.evicted,
            );
            sink.counter(
                "connections_refused_quota",
                "new connections refused: their source held its source-connections",
                c.counters.refused_quota,
            );
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
    let addrs6 = cx.config.ports.iter().map(|p| p.address6.clone()).collect();
    Box::new(Acl::new(cx.name, c, addrs, addrs6, cx.seed))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests6;
