//! Stateful NAT64 (RFC 6146) with the IP/ICMP translation of RFC 7915
//! and the address embedding of RFC 6052.
//!
//! An IPv6-only inside host reaches an IPv4 server at `PREFIX + a.b.c.d`
//! (64:ff9b::203.0.113.11); sluice sends the packet on as IPv4 from a pool
//! address, and translates the replies back. The sessions are the NAT44's
//! own table ([`NatTable`]): the same endpoint-independent mapping,
//! filtering modes, timeouts, per-host quotas and full-table behaviour.
//! The table's inside endpoints are IPv4; each inside IPv6 host is given
//! a stand-in address from 240.0.0.0/4 (never routed, never seen on a
//! wire) by [`crate::standin::Hosts`], whose slot index it is, so the
//! reply path finds the host in one read; the host holds it from its first
//! session to the end of its last (the table reports both), and one /64
//! holds at most `hosts-per-64`.
//!
//! What it translates: IPv6 from its inside prefixes that arrived on an
//! inside port (any port its pipelines run on but the outside one; from
//! the outside port it is `nat64_not_inside`), and IPv4 to its pool on the
//! outside port. Under the well-known prefix only global IPv4 addresses
//! are written or read (RFC 6052 §3.1; the rest is `nat64_non_global`).
//!
//! Where it runs: before the router, both ways (`pipeline lan nat64
//! router`, `pipeline wan nat64 router`, the defaults): the router then
//! routes the translated packet in its new family. The translator checks
//! the hop limit (or TTL) itself and copies it across undecremented, so the
//! router's decrement is the one hop sluice counts (RFC 7915 §5.1).
//!
//! Translated: TCP, UDP (a zero IPv4 UDP checksum is computed, as IPv6
//! requires one), ICMP echo ↔ ICMPv6 echo, ICMP errors about a session
//! both ways with their quoted packet (destination unreachable, time
//! exceeded, fragmentation needed ↔ packet too big with the 20-byte
//! difference), and TCP/UDP fragments both ways (a DF-clear IPv4 packet
//! too large for the IPv6 side leaves as two IPv6 fragments). Dropped as
//! `nat64_unsupported`: IPv6 extension headers other than a fragment
//! header, fragmented ICMP (its ICMPv6 checksum needs the whole message's
//! length), other protocols. IPv4 options are dropped in translation (RFC
//! 7915 §4.1 allows it).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use super::config::{Nat64Settings, NatConfig};
use super::table::{flow_hash, Dir, NatTable, Refusal};
use super::{map_filtering, refusal_reason};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::counters::DropReason;
use crate::csum;
use crate::flow::{Endpoint, Timeouts, ICMP, TCP, UDP};
use crate::icmp::IcmpError;
use crate::ipv6::{self, Icmp6Error, HLEN, ICMPV6};
use crate::packet::{Batch, Packet, PortId};
use crate::stage::{for_each_packet, Ipv6Handling, Stage, StageContext};
use crate::stats::StatsSink;
use crate::wire::ETH_HLEN;
use crate::Micros;

/// Sessions whose timers each loop turn checks.
const SWEEP_PER_POLL: usize = 16;
/// The IPv6 fragment header's next-header number.
const FRAGMENT: u8 = 44;
/// Datagrams whose fragments are followed at once, and for how long after
/// the first fragment (RFC 7915 §5.1.1, §4.1: later fragments carry no
/// ports; they follow their first fragment's translation).
const FRAG_CACHE: usize = 256;
const FRAG_LIFETIME: Micros = 5_000_000;
/// Live entries one source (an inside IPv6 host, an outside IPv4 one) may
/// hold in the fragment cache, as the NAT44's.
const FRAG_PER_SOURCE: usize = 16;

/// Where the later fragments of a datagram go: an inbound datagram (IPv4
/// source, pool address, identification, protocol) to its inside host; an
/// outbound one (host, destination, identification) from its pool address.
#[derive(Clone, Copy)]
struct FragEntry {
    outbound: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ident: u32,
    proto: u8,
    to: [u8; 16],
    expires: Micros,
}

/// A bounded cache of [`FragEntry`]: a source at its quota replaces its
/// own oldest entry, so one host's first fragments cannot flush everyone
/// else's; a full cache replaces an expired entry, else the oldest (a few
/// passes over at most 256).
#[derive(Default)]
struct FragCache(Vec<FragEntry>);

impl FragCache {
    fn remember(&mut self, e: FragEntry, now: Micros, counters: &mut Nat64Counters) {
        let live = |x: &FragEntry| x.expires > now;
        let own = |x: &FragEntry| x.outbound == e.outbound && x.src == e.src;
        let oldest = |f: &dyn Fn(&FragEntry) -> bool| {
            self.0.iter().enumerate().filter(|(_, x)| f(x)).min_by_key(|(_, x)| x.expires).map(|(i, _)| i)
        };
        let slot = if self.0.iter().filter(|x| own(x) && live(x)).count() >= FRAG_PER_SOURCE {
            counters.fragments_evicted_own += 1;
            oldest(&|x| own(x) && live(x))
        } else if self.0.len() < FRAG_CACHE {
            None
        } else {
            oldest(&|x| !live(x)).or_else(|| {
                counters.fragments_evicted += 1;
                oldest(&|_| true)
            })
        };
        match slot {
            Some(i) => self.0[i] = e,
            None => self.0.push(e),
        }
    }

    fn find(
        &self,
        outbound: bool,
        src: [u8; 16],
        dst: [u8; 16],
        ident: u32,
        proto: u8,
        now: Micros,
    ) -> Option<[u8; 16]> {
        self.0
            .iter()
            .find(|x| {
                x.outbound == outbound
                    && x.src == src
                    && x.dst == dst
                    && x.ident == ident
                    && x.proto == proto
                    && x.expires > now
            })
            .map(|x| x.to)
    }
}

fn v4_key(a: Ipv4Addr) -> [u8; 16] {
    Ipv4Addr::to_ipv6_mapped(&a).octets()
}

/// `a.b.c.d` inside `prefix` (RFC 6052 §2.2: the octets after the
/// prefix, skipping bits 64–71).
pub fn embed(prefix: &Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    let mut o = prefix.network().octets();
    let mut at = prefix.prefix_len() as usize / 8;
    for b in v4.octets() {
        if at == 8 {
            at += 1;
        }
        o[at] = b;
        at += 1;
    }
    Ipv6Addr::from(o)
}

/// The IPv4 address embedded in `a` under `prefix`.
pub fn extract(prefix: &Ipv6Net, a: &Ipv6Addr) -> Ipv4Addr {
    let o = a.octets();
    let mut at = prefix.prefix_len() as usize / 8;
    let mut v4 = [0u8; 4];
    for b in &mut v4 {
        if at == 8 {
            at += 1;
        }
        *b = o[at];
        at += 1;
    }
    Ipv4Addr::from(v4)
}

crate::counters! {
    pub struct Nat64Counters {
        to_ipv4: counter "IPv6 packets from inside translated to IPv4",
        to_ipv6: counter "IPv4 packets to inside translated to IPv6",
        icmp_errors: counter "ICMPv4 errors translated to ICMPv6 with their quoted packet",
        hop_limit_errors: counter "ICMPv6 time exceeded / ICMPv4 time exceeded sent by the translator",
        too_big: counter "IPv4 packets with DF too large for IPv6 (fragmentation needed sent)",
        fragments: counter "fragments translated (either way)",
        fragments_evicted_own: counter "first-fragment entries that replaced the same source's oldest (its quota was full)",
        fragments_evicted: counter "fragment entries of other sources replaced while the cache was full of live ones",
    }
}

pub struct Nat64 {
    prefix: Ipv6Net,
    /// The prefix is the well-known one: it carries global IPv4 addresses
    /// only (RFC 6052 §3.1).
    well_known: bool,
    inside: Vec<Ipv6Net>,
    outside_port: PortId,
    pub table: NatTable,
    pub hosts: crate::standin::Hosts,
    /// Per port: its IPv6 addresses (link-local first) and IPv4 address,
    /// for the errors the translator sends.
    ports6: Vec<Vec<Ipv6Net>>,
    ports4: Vec<Option<Ipv4Addr>>,
    /// The smallest MTU of the IPv6 ports: a larger IPv4 packet cannot go
    /// in (IPv6 routers do not fragment).
    mtu6: usize,
    ident: u16,
    frags: FragCache,
    /// Second fragments made while translating a burst, added to it after.
    spill: heapless::Vec<Packet, { crate::packet::BURST }>,
    pub counters: Nat64Counters,
}

/// How a translated transport's checksum changes: the pseudo-header's
/// addresses (`old` bytes out, `new` in) and one port.
fn adjust(hc: u16, old: &[u8], new: &[u8], old_port: u16, new_port: u16) -> u16 {
    csum::update16(csum::replace(hc, old, new), old_port, new_port)
}

/// An ICMPv6 error's translation (RFC 7915 §5.2): ICMPv4 type, code and
/// the 32-bit field after the checksum (the next-hop MTU of a
/// fragmentation needed), or `None` to drop.
fn icmp_error_6to4(ty: u8, code: u8, field: u32) -> Option<(u8, u8, u32)> {
    match (ty, code) {
        (1, 1) => Some((3, 10, 0)),
        (1, 4) => Some((3, 3, 0)),
        (1, _) => Some((3, 1, 0)),
        // The IPv4 packet is 20 bytes smaller.
        (2, 0) => Some((3, 4, field.saturating_sub(20).min(0xffff))),
        (3, c @ (0 | 1)) => Some((11, c, 0)),
        // Unrecognised next header: protocol unreachable.
        (4, 1) => Some((3, 2, 0)),
        _ => None,
    }
}

/// An ICMPv4 error's translation (RFC 7915 §4.2): ICMPv6 type, code and
/// the 32-bit field (the MTU of a packet too big), or `None` to drop.
fn icmp_error_4to6(ty: u8, code: u8, mtu: u16, mtu6: usize) -> Option<(u8, u8, u32)> {
    match (ty, code) {
        (3, 0 | 1 | 5..=8 | 11 | 12) => Some((1, 0, 0)),
        (3, 3) => Some((1, 4, 0)),
        (3, 9 | 10 | 13 | 15) => Some((1, 1, 0)),
        (3, 4) => {
            // The IPv6 packet is 20 bytes larger; never below 1280, never
            // above what the IPv6 side carries.
            let m = (mtu as usize + 20).max(ipv6::MIN_MTU).min(mtu6.max(ipv6::MIN_MTU));
            Some((2, 0, m as u32))
        }
        (11, c @ (0 | 1)) => Some((3, c, 0)),
        _ => None,
    }
}

impl Nat64 {
    pub fn from_config(
        c: &NatConfig,
        n64: &Nat64Settings,
        config: &crate::config::Config,
        macs: &[[u8; 6]],
        seed: u64,
    ) -> Nat64 {
        let timeouts = Timeouts {
            udp: c.udp_timeout as Micros * 1_000_000,
            tcp_established: c.tcp_established_timeout as Micros * 1_000_000,
            tcp_transitory: c.tcp_transitory_timeout as Micros * 1_000_000,
            icmp: c.icmp_timeout as Micros * 1_000_000,
        };
        let mut table = NatTable::new(c.sessions, c.pool.clone(), c.ports, map_filtering(c.filtering), timeouts, seed);
        table.set_quotas(c.quotas);
        // A stand-in lives as long as its host has a session: the table
        // says when (a sweep ends at most SWEEP_PER_POLL, a packet a few).
        table.track_hosts(SWEEP_PER_POLL + 8);
        let ports6 = config.ports.iter().zip(macs).map(|(p, mac)| ipv6::port_nets(*mac, &p.address6)).collect();
        let mtu6 = config.ports.iter().filter(|p| !p.address6.is_empty()).map(|p| p.mtu as usize).min().unwrap_or(1280);
        Nat64 {
            prefix: n64.prefix,
            well_known: n64.prefix == super::config::well_known_prefix(),
            inside: n64.inside.clone(),
            outside_port: c.outside as PortId,
            table,
            hosts: crate::standin::Hosts::new(
                c.sessions,
                n64.hosts_per_64,
                crate::table::hash_words(seed, &[0x006e_3634]),
            ),
            ports6,
            ports4: config.ports.iter().map(|p| p.ip()).collect(),
            mtu6,
            ident: 0,
            frags: FragCache::default(),
            spill: heapless::Vec::new(),
            counters: Nat64Counters::default(),
        }
    }

    fn translate(&mut self, pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        if pkt.meta.out_port.is_some() {
            return Some(pkt);
        }
        if ipv6::is_ipv6(pkt.l3()) {
            let ip = pkt.l3();
            let (src, dst) = (ipv6::src(ip), ipv6::dst(ip));
            if !self.prefix.contains(&dst) {
                return Some(pkt);
            }
            // Its inside ports are the others its pipelines run on: what
            // comes in from outside is never an inside host, whatever
            // source it claims.
            if pkt.meta.in_port == self.outside_port {
                cx.drop(pkt, DropReason::Nat64NotInside);
                return None;
            }
            if self.inside.iter().any(|n| n.contains(&src)) {
                return self.outbound(pkt, cx);
            }
            return Some(pkt);
        }
        let to_pool = pkt.meta.local
            && pkt.meta.in_port == self.outside_port
            && self.table.is_pool_address(crate::wire::rewrite::parse(pkt.l3()).dst);
        if to_pool {
            return self.inbound(pkt, cx);
        }
        Some(pkt)
    }

    /// IPv6 from an inside host to `prefix + v4`: out as IPv4.
    fn outbound(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        if pkt.is_chained() || pkt.meta.offload.is_gso() || pkt.meta.l3 as usize != ETH_HLEN {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let ip = pkt.l3();
        let (src, dst, hops, next) = (ipv6::src(ip), ipv6::dst(ip), ip[7], ip[6]);
        let tos = (ip[0] << 4) | (ip[1] >> 4);
        let total = HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if total > ip.len() || total < HLEN + 8 {
            cx.drop(pkt, DropReason::L4Truncated);
            return None;
        }
        if hops <= 1 {
            cx.count_drop(pkt.meta.in_port, DropReason::HopLimitExpired);
            return self.error6(pkt, Icmp6Error::HopLimit, cx);
        }
        if !crate::offload::complete_checksum(&mut pkt) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let remote = extract(&self.prefix, &dst);
        if !self.may_embed(remote) {
            cx.drop(pkt, DropReason::Nat64NonGlobal);
            return None;
        }
        if !crate::icmp::is_unique_host(remote) {
            cx.drop(pkt, DropReason::MartianDestination);
            return None;
        }
        let l4 = &pkt.l3()[HLEN..total];
        let (proto, sport, dport, flags) = match next {
            TCP if l4.len() >= 20 => (TCP, csum::get(l4, 0), csum::get(l4, 2), l4[13]),
            UDP if csum::get(l4, 6) != 0 => (UDP, csum::get(l4, 0), csum::get(l4, 2), 0),
            ICMPV6 if l4[0] == 128 => (ICMP, csum::get(l4, 4), 0, 0),
            ICMPV6 if l4[0] < 128 => return self.outbound_error(pkt, cx),
            FRAGMENT => return self.outbound_fragment(pkt, cx),
            _ => {
                // Extension headers, fragments, ICMPv6 errors and other
                // protocols (RFC 7915 §5.1.1 leaves most to the operator).
                cx.drop(pkt, DropReason::Nat64Unsupported);
                return None;
            }
        };
        let out = match self.outbound_session(src, proto, (sport, remote, dport), flags, cx.now) {
            Ok(o) => o,
            Err(reason) => {
                cx.drop(pkt, reason);
                return None;
            }
        };
        let ip = pkt.l3_mut();
        let (old_addrs, new_addrs) = {
            let mut n = [0u8; 8];
            n[..4].copy_from_slice(&out.addr.octets());
            n[4..].copy_from_slice(&remote.octets());
            let mut o = [0u8; 32];
            o.copy_from_slice(&ip[8..40]);
            (o, n)
        };
        let l4 = &mut ip[HLEN..total];
        match proto {
            ICMP => {
                l4[0] = 8;
                csum::set(l4, 4, out.port);
                csum::set(l4, 2, 0);
                let c = csum::checksum(l4);
                csum::set(l4, 2, c);
            }
            _ => {
                let at = if proto == TCP { 16 } else { 6 };
                let mut c = adjust(csum::get(l4, at), &old_addrs, &new_addrs, sport, out.port);
                if proto == UDP && c == 0 {
                    c = 0xffff;
                }
                csum::set(l4, at, c);
                csum::set(l4, 0, out.port);
            }
        }
        // The IPv4 header takes the last 20 bytes of the IPv6 one.
        let v4 = &mut ip[20..40];
        write_ipv4(v4, (total - HLEN) as u16, proto, hops, out.addr, remote);
        v4[1] = tos;
        let hc = csum::update16(csum::get(v4, 10), 0x4500, 0x4500 | u16::from(tos));
        csum::set(v4, 10, hc);
        self.counters.to_ipv4 += 1;
        self.shift(pkt, 20, total - 20, [0x08, 0x00], cx)
    }

    /// IPv4 to a pool address: back to the inside host as IPv6, if a
    /// session lets it in; else on to the appliance's host stack.
    fn inbound(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let p = crate::wire::rewrite::parse(pkt.l3());
        let ip = pkt.l3();
        let l4 = &ip[p.ihl.min(p.total)..p.total];
        if pkt.is_chained() || pkt.meta.l3 as usize != ETH_HLEN || p.ihl < 20 || p.total < p.ihl {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        if !p.first || p.more {
            return self.inbound_fragment(pkt, &p, cx);
        }
        if p.proto == ICMP && l4.first().is_some_and(|t| crate::wire::rewrite::is_icmp_error(*t)) {
            return self.inbound_error(pkt, cx);
        }
        let (sport, dport, flags) = match (p.proto, crate::wire::rewrite::ports(&ip[..p.total], p.ihl, p.proto)) {
            (ICMP, Some((id, _, _))) if l4[0] == 0 => (0, id, 0),
            (TCP | UDP, Some(ports)) => ports,
            // Pings and the rest to the pool address: the appliance's own.
            _ => return Some(pkt),
        };
        let ttl = ip[8];
        let df = ip[6] & 0x40 != 0;
        if !self.may_embed(p.src) {
            return self.refuse_non_global(pkt, p.proto, Endpoint::new(p.dst, dport), cx);
        }
        let inside = match self.table.inbound(
            p.proto,
            Endpoint::new(p.dst, dport),
            Endpoint::new(p.src, sport),
            flags,
            cx.now,
        ) {
            Ok(e) => e,
            Err(Refusal::NoMapping) => return Some(pkt),
            Err(r) => {
                cx.drop(pkt, refusal_reason(r));
                return None;
            }
        };
        let Some(host) = self.hosts.host(inside.addr) else {
            cx.drop(pkt, DropReason::NatNoMapping);
            return None;
        };
        let payload = p.total - p.ihl;
        if ttl <= 1 {
            cx.count_drop(pkt.meta.in_port, DropReason::TtlExpired);
            return self.error4(pkt, IcmpError::TtlExceeded, cx);
        }
        if HLEN + payload > self.mtu6 {
            if !df && p.proto != ICMP {
                // Sent on as IPv6 fragments (RFC 7915 §4.1).
                return self.inbound_fragment(pkt, &p, cx);
            }
            cx.count_drop(pkt.meta.in_port, DropReason::PacketTooBig);
            self.counters.too_big += 1;
            let mtu = (self.mtu6 - 20) as u16;
            return self.error4(pkt, IcmpError::FragNeeded { mtu }, cx);
        }
        if !crate::offload::complete_checksum(&mut pkt) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let from = embed(&self.prefix, p.src);
        let tos = pkt.l3()[1];
        // The IPv6 header ends where the IPv4 one did.
        let start = pkt.head() + ETH_HLEN + p.ihl;
        let eth: [u8; 12] = pkt.data()[..12].try_into().expect("an Ethernet header");
        let moved = start.checked_sub(HLEN + ETH_HLEN).is_some_and(|h| pkt.set_window(h, ETH_HLEN + HLEN + payload));
        if !moved {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let d = pkt.data_mut();
        d[..12].copy_from_slice(&eth);
        d[12..14].copy_from_slice(&ipv6::ETHERTYPE);
        let proto6 = if p.proto == ICMP { ICMPV6 } else { p.proto };
        let (ip6, l4) = d[ETH_HLEN..].split_at_mut(HLEN);
        ipv6::write_header(ip6, payload as u16, proto6, ttl, from, host);
        ip6[0] = 0x60 | tos >> 4;
        ip6[1] = tos << 4;
        match p.proto {
            ICMP => {
                l4[0] = 129;
                csum::set(l4, 4, inside.port);
                csum::set(l4, 2, 0);
                let c = ipv6::upper_checksum(&from, &host, ICMPV6, l4);
                csum::set(l4, 2, c);
            }
            UDP if csum::get(l4, 6) == 0 => {
                // IPv6 needs the checksum IPv4 may omit (RFC 7915 §4.5).
                csum::set(l4, 2, inside.port);
                let c = ipv6::upper_checksum(&from, &host, UDP, l4);
                csum::set(l4, 6, if c == 0 { 0xffff } else { c });
            }
            _ => {
                let at = if p.proto == TCP { 16 } else { 6 };
                let mut old = [0u8; 8];
                old[..4].copy_from_slice(&p.src.octets());
                old[4..].copy_from_slice(&p.dst.octets());
                let mut new = [0u8; 32];
                new[..16].copy_from_slice(&from.octets());
                new[16..].copy_from_slice(&host.octets());
                let mut c = adjust(csum::get(l4, at), &old, &new, dport, inside.port);
                if p.proto == UDP && c == 0 {
                    c = 0xffff;
                }
                csum::set(l4, at, c);
                csum::set(l4, 2, inside.port);
            }
        }
        pkt.meta.local = false;
        pkt.meta.offload = Default::default();
        self.counters.to_ipv6 += 1;
        Some(pkt)
    }

    /// An ICMPv4 error about a session's packet: to the inside host as
    /// ICMPv6, the quoted packet translated too (RFC 7915 §4.2, §4.3).
    fn inbound_error(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let ip = pkt.l3();
        let p = crate::wire::rewrite::parse(ip);
        let msg = &ip[p.ihl..p.total];
        // The quote: an IPv4 header (of a packet we sent) and 8 bytes at least.
        let q = msg.get(8..).unwrap_or(&[]);
        if q.len() < 28 || q[0] >> 4 != 4 || (q[0] & 0x0f) < 5 {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        }
        let qihl = (q[0] & 0x0f) as usize * 4;
        let qp = crate::wire::rewrite::parse(q);
        let Some(ql4) = q.get(qihl..).filter(|l| l.len() >= 8) else {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        };
        let (qs, qd) = match qp.proto {
            TCP | UDP => (csum::get(ql4, 0), csum::get(ql4, 2)),
            ICMP if ql4[0] == 8 => (csum::get(ql4, 4), 0),
            _ => {
                cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
                return None;
            }
        };
        let Some((ty, code, field)) = icmp_error_4to6(msg[0], msg[1], csum::get(msg, 6), self.mtu6) else {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        };
        let inside = self.table.peek_inbound(qp.proto, Endpoint::new(qp.src, qs), Endpoint::new(qp.dst, qd), cx.now);
        let Some(inside) = inside else {
            // About the appliance's own traffic (its pings from the pool
            // address): its host stack's.
            return Some(pkt);
        };
        if !self.may_embed(p.src) {
            // A router with a private address on the way, under the
            // well-known prefix.
            cx.drop(pkt, DropReason::Nat64NonGlobal);
            return None;
        }
        let Some(host) = self.hosts.host(inside.addr) else {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        };
        // Built in a scratch buffer: outer IPv6 + ICMPv6 header, then the
        // quote's IPv6 header and its transport bytes, within 1280.
        let mut out = [0u8; ipv6::MIN_MTU];
        let from = embed(&self.prefix, p.src);
        let qbody = &ql4[..ql4.len().min(ipv6::MIN_MTU - HLEN - 8 - HLEN)];
        let qlen = u16::from_be_bytes([q[2], q[3]]).saturating_sub(qihl as u16);
        let n = HLEN + 8 + HLEN + qbody.len();
        let (outer, rest) = out.split_at_mut(HLEN);
        ipv6::write_header(outer, (n - HLEN) as u16, ICMPV6, ip[8], from, host);
        rest[0] = ty;
        rest[1] = code;
        rest[4..8].copy_from_slice(&field.to_be_bytes());
        let qproto6 = if qp.proto == ICMP { ICMPV6 } else { qp.proto };
        ipv6::write_header(&mut rest[8..8 + HLEN], qlen, qproto6, q[8], host, embed(&self.prefix, qp.dst));
        let ql = &mut rest[8 + HLEN..8 + HLEN + qbody.len()];
        ql.copy_from_slice(qbody);
        match qp.proto {
            ICMP => {
                ql[0] = 128;
                csum::set(ql, 4, inside.port);
            }
            _ => csum::set(ql, 0, inside.port),
        }
        let c = ipv6::upper_checksum(&from, &host, ICMPV6, &rest[..n - HLEN]);
        csum::set(rest, 2, c);
        let eth: [u8; 12] = pkt.data()[..12].try_into().expect("an Ethernet header");
        let Some(head) = pkt.head().checked_sub(HLEN) else {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        };
        if !pkt.set_window(head, ETH_HLEN + n) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let d = pkt.data_mut();
        d[..12].copy_from_slice(&eth);
        d[12..14].copy_from_slice(&ipv6::ETHERTYPE);
        d[ETH_HLEN..].copy_from_slice(&out[..n]);
        pkt.meta.local = false;
        pkt.meta.offload = Default::default();
        self.counters.icmp_errors += 1;
        Some(pkt)
    }

    /// An IPv6 fragment from an inside host: out as an IPv4 fragment (the
    /// fragment header's offset, more-fragments flag and identification's
    /// low 16 bits). The first carries the ports and opens or uses the
    /// session; later ones follow it. Fragmented ICMP is dropped: its
    /// checksum covers a pseudo-header with the whole message's length,
    /// which no single fragment tells (RFC 7915 §5.1 lets a translator
    /// drop it rather than reassemble).
    fn outbound_fragment(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let ip = pkt.l3();
        let total = HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
        let (src, dst, hops) = (ipv6::src(ip), ipv6::dst(ip), ip[7]);
        let Some(fh) = ip.get(HLEN..HLEN + 8).filter(|_| total >= HLEN + 8) else {
            cx.drop(pkt, DropReason::Ipv6BadExtHeader);
            return None;
        };
        let (proto, off_flags, ident) =
            (fh[0], u16::from_be_bytes([fh[2], fh[3]]), u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]));
        let (offset, more) = (off_flags >> 3, off_flags & 1 != 0);
        if !(proto == TCP || proto == UDP) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let remote = extract(&self.prefix, &dst);
        let at = HLEN + 8;
        let from = if offset == 0 {
            let l4 = &ip[at..total];
            if l4.len() < if proto == TCP { 20 } else { 8 } {
                cx.drop(pkt, DropReason::L4Truncated);
                return None;
            }
            let (sport, dport, flags) = (csum::get(l4, 0), csum::get(l4, 2), if proto == TCP { l4[13] } else { 0 });
            let out = match self.outbound_session(src, proto, (sport, remote, dport), flags, cx.now) {
                Ok(o) => o,
                Err(reason) => {
                    cx.drop(pkt, reason);
                    return None;
                }
            };
            let mut old = [0u8; 32];
            old.copy_from_slice(&ip[8..40]);
            let mut new = [0u8; 8];
            new[..4].copy_from_slice(&out.addr.octets());
            new[4..].copy_from_slice(&remote.octets());
            let l4 = &mut pkt.l3_mut()[at..total];
            let field = if proto == TCP { 16 } else { 6 };
            let mut c = adjust(csum::get(l4, field), &old, &new, sport, out.port);
            if proto == UDP && c == 0 {
                c = 0xffff;
            }
            csum::set(l4, field, c);
            csum::set(l4, 0, out.port);
            self.frags.remember(
                FragEntry {
                    outbound: true,
                    src: src.octets(),
                    dst: dst.octets(),
                    ident,
                    proto,
                    to: v4_key(out.addr),
                    expires: cx.now + FRAG_LIFETIME,
                },
                cx.now,
                &mut self.counters,
            );
            out.addr
        } else {
            match self.frags.find(true, src.octets(), dst.octets(), ident, proto, cx.now) {
                Some(k) => Ipv4Addr::new(k[12], k[13], k[14], k[15]),
                None => {
                    cx.drop(pkt, DropReason::NatFragmentUnknown);
                    return None;
                }
            }
        };
        // The IPv4 header takes the 20 bytes before the payload.
        let v4 = &mut pkt.l3_mut()[at - 20..at];
        write_ipv4(v4, (total - at) as u16, proto, hops, from, remote);
        v4[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
        v4[6..8].copy_from_slice(&(offset | if more { 0x2000 } else { 0 }).to_be_bytes());
        v4[10..12].fill(0);
        let c = csum::checksum(v4);
        csum::set(v4, 10, c);
        self.counters.fragments += 1;
        self.counters.to_ipv4 += 1;
        self.shift(pkt, at - 20, total - (at - 20), [0x08, 0x00], cx)
    }

    /// An IPv4 fragment to a pool address: to the inside host as an IPv6
    /// fragment (a fragment header with the same offset, flag and
    /// identification). The first opens nothing (a session must exist) and
    /// is remembered for the later ones. A fragment too large for the IPv6
    /// side is dropped (counted `too_big`): fragments are not cut again.
    fn inbound_fragment(
        &mut self,
        mut pkt: Packet,
        p: &crate::wire::rewrite::Parsed,
        cx: &mut StageContext<'_>,
    ) -> Option<Packet> {
        if !(p.proto == TCP || p.proto == UDP) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let ip = pkt.l3();
        let (ttl, tos) = (ip[8], ip[1]);
        let offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        let payload = p.total - p.ihl;
        if ttl <= 1 {
            cx.count_drop(pkt.meta.in_port, DropReason::TtlExpired);
            return self.error4(pkt, IcmpError::TtlExceeded, cx);
        }
        if payload > 2 * self.frag_room() {
            // Larger than two IPv6 fragments (a buffer holds less).
            self.counters.too_big += 1;
            cx.drop(pkt, DropReason::PacketTooBig);
            return None;
        }
        let from = embed(&self.prefix, p.src);
        let host = if p.first {
            let l4 = &ip[p.ihl..p.total];
            if l4.len() < if p.proto == TCP { 20 } else { 8 } || p.proto == UDP && csum::get(l4, 6) == 0 {
                // A fragmented datagram without a UDP checksum cannot get one here.
                cx.drop(pkt, DropReason::Nat64Unsupported);
                return None;
            }
            let (sport, dport, flags) = (csum::get(l4, 0), csum::get(l4, 2), if p.proto == TCP { l4[13] } else { 0 });
            if !self.may_embed(p.src) {
                return self.refuse_non_global(pkt, p.proto, Endpoint::new(p.dst, dport), cx);
            }
            let inside = match self.table.inbound(
                p.proto,
                Endpoint::new(p.dst, dport),
                Endpoint::new(p.src, sport),
                flags,
                cx.now,
            ) {
                Ok(e) => e,
                Err(Refusal::NoMapping) => return Some(pkt),
                Err(r) => {
                    cx.drop(pkt, refusal_reason(r));
                    return None;
                }
            };
            let Some(host) = self.hosts.host(inside.addr) else {
                cx.drop(pkt, DropReason::NatNoMapping);
                return None;
            };
            let mut old = [0u8; 8];
            old[..4].copy_from_slice(&p.src.octets());
            old[4..].copy_from_slice(&p.dst.octets());
            let mut new = [0u8; 32];
            new[..16].copy_from_slice(&from.octets());
            new[16..].copy_from_slice(&host.octets());
            let ihl = p.ihl;
            let l4 = &mut pkt.l3_mut()[ihl..p.total];
            let field = if p.proto == TCP { 16 } else { 6 };
            let mut c = adjust(csum::get(l4, field), &old, &new, dport, inside.port);
            if p.proto == UDP && c == 0 {
                c = 0xffff;
            }
            csum::set(l4, field, c);
            csum::set(l4, 2, inside.port);
            self.frags.remember(
                FragEntry {
                    outbound: false,
                    src: v4_key(p.src),
                    dst: v4_key(p.dst),
                    ident: p.ident as u32,
                    proto: p.proto,
                    to: host.octets(),
                    expires: cx.now + FRAG_LIFETIME,
                },
                cx.now,
                &mut self.counters,
            );
            host
        } else {
            match self.frags.find(false, v4_key(p.src), v4_key(p.dst), p.ident as u32, p.proto, cx.now) {
                Some(h) => Ipv6Addr::from(h),
                None => {
                    cx.drop(pkt, DropReason::NatFragmentUnknown);
                    return None;
                }
            }
        };
        // IPv6 header and fragment header end where the IPv4 header did.
        let start = pkt.head() + ETH_HLEN + p.ihl;
        let Some(head) = start.checked_sub(ETH_HLEN + HLEN + 8) else {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        };
        let eth: [u8; 12] = pkt.data()[..12].try_into().expect("an Ethernet header");
        if !pkt.set_window(head, ETH_HLEN + HLEN + 8 + payload) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let d = pkt.data_mut();
        d[..12].copy_from_slice(&eth);
        d[12..14].copy_from_slice(&ipv6::ETHERTYPE);
        let ip6 = &mut d[ETH_HLEN..ETH_HLEN + HLEN + 8];
        ipv6::write_header(ip6, (8 + payload) as u16, FRAGMENT, ttl, from, host);
        ip6[0] = 0x60 | tos >> 4;
        ip6[1] = tos << 4;
        let more = p.more as u16;
        ip6[HLEN..HLEN + 8].copy_from_slice(&[p.proto, 0, 0, 0, 0, 0, 0, 0]);
        ip6[HLEN + 2..HLEN + 4].copy_from_slice(&(offset << 3 | more).to_be_bytes());
        ip6[HLEN + 4..HLEN + 8].copy_from_slice(&(p.ident as u32).to_be_bytes());
        pkt.meta.local = false;
        pkt.meta.offload = Default::default();
        self.counters.fragments += 1;
        self.counters.to_ipv6 += 1;
        let room = self.frag_room();
        if payload > room {
            // Too large for the IPv6 side: the rest becomes a second
            // fragment (offsets count 8-byte units; `room` is a multiple).
            let Some(mut tail) = cx.pool.alloc() else {
                cx.drop(pkt, DropReason::FragNoBuffer);
                return None;
            };
            const HDRS: usize = ETH_HLEN + HLEN + 8;
            let d = pkt.data();
            tail.set_len(HDRS + payload - room);
            tail.data_mut()[..HDRS].copy_from_slice(&d[..HDRS]);
            tail.data_mut()[HDRS..].copy_from_slice(&d[HDRS + room..HDRS + payload]);
            tail.meta = pkt.meta;
            let t = &mut tail.data_mut()[ETH_HLEN..];
            t[4..6].copy_from_slice(&((8 + payload - room) as u16).to_be_bytes());
            t[HLEN + 2..HLEN + 4].copy_from_slice(&((offset + (room / 8) as u16) << 3 | more).to_be_bytes());
            pkt.set_len(HDRS + room);
            let h = &mut pkt.data_mut()[ETH_HLEN..];
            h[4..6].copy_from_slice(&((8 + room) as u16).to_be_bytes());
            h[HLEN + 2..HLEN + 4].copy_from_slice(&(offset << 3 | 1).to_be_bytes());
            self.counters.fragments += 1;
            if let Err(t) = self.spill.push(tail) {
                cx.drop(t, DropReason::FragNoBuffer);
            }
        }
        Some(pkt)
    }

    /// The most payload an IPv6 fragment toward the inside may carry.
    fn frag_room(&self) -> usize {
        (self.mtu6 - HLEN - 8) & !7
    }

    /// Whether `a` may be written under the prefix: any address under a
    /// network-specific one, only a global one under the well-known one.
    fn may_embed(&self, a: Ipv4Addr) -> bool {
        !self.well_known || is_global(a)
    }

    /// An IPv4 packet from a non-global source to a pool address: dropped
    /// if a mapping waits there (its source cannot be written under the
    /// well-known prefix), else the appliance's own.
    fn refuse_non_global(
        &mut self,
        pkt: Packet,
        proto: u8,
        outside: Endpoint,
        cx: &mut StageContext<'_>,
    ) -> Option<Packet> {
        if !self.table.has_mapping_at(proto, outside) {
            return Some(pkt);
        }
        cx.drop(pkt, DropReason::Nat64NonGlobal);
        None
    }

    /// The outside endpoint of an inside host's packet: its stand-in
    /// claimed, the session found or made, the claim settled (a packet that
    /// makes no session keeps no stand-in).
    fn outbound_session(
        &mut self,
        src: Ipv6Addr,
        proto: u8,
        (sport, remote, dport): (u16, Ipv4Addr, u16),
        flags: u8,
        now: Micros,
    ) -> Result<Endpoint, DropReason> {
        let stand_in = self.hosts.claim(src).map_err(stand_in_refusal)?;
        let made = self.table.outbound(proto, Endpoint::new(stand_in, sport), Endpoint::new(remote, dport), flags, now);
        self.settle(Some(stand_in));
        made.map_err(refusal_reason)
    }

    /// Takes the table's news of hosts that got their first session or
    /// lost their last into the stand-ins, then undoes `claimed` (the
    /// claim a packet held while its session was being made: the session,
    /// if made, holds the stand-in now).
    fn settle(&mut self, claimed: Option<Ipv4Addr>) {
        for (a, up) in self.table.host_events() {
            if up {
                self.hosts.retain(a);
            } else {
                self.hosts.release(a);
            }
        }
        if let Some(a) = claimed {
            self.hosts.release(a);
        }
    }

    /// Moves the frame's start to `l3_from` bytes into the L3 header (now
    /// `len` bytes of new L3 packet), keeping the Ethernet addresses and
    /// setting `ethertype`.
    fn shift(
        &mut self,
        mut pkt: Packet,
        l3_from: usize,
        len: usize,
        ethertype: [u8; 2],
        cx: &mut StageContext<'_>,
    ) -> Option<Packet> {
        let eth: [u8; 12] = pkt.data()[..12].try_into().expect("an Ethernet header");
        let head = pkt.head() + l3_from;
        if !pkt.set_window(head, ETH_HLEN + len) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let d = pkt.data_mut();
        d[..12].copy_from_slice(&eth);
        d[12..14].copy_from_slice(&ethertype);
        pkt.meta.local = false;
        pkt.meta.offload = Default::default();
        Some(pkt)
    }

    /// An ICMPv6 error an inside host sends about a packet of a session
    /// (a closed port, a smaller MTU): out as ICMPv4 from the session's
    /// pool address, the quoted packet translated to what the outside
    /// host sent (RFC 7915 §5.2, §5.3).
    fn outbound_error(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let ip = pkt.l3();
        let total = HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
        let (host, to6) = (ipv6::src(ip), ipv6::dst(ip));
        let msg = &ip[HLEN..total.min(ip.len())];
        let q = msg.get(8..).unwrap_or(&[]);
        // The quote: the IPv6 packet the host got (remote → host), no
        // extension headers, 8 transport bytes at least.
        if q.len() < HLEN + 8 || q[0] >> 4 != 6 || ipv6::dst(q) != host || !self.prefix.contains(&ipv6::src(q)) {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        }
        let (qnext, ql4) = (q[6], &q[HLEN..]);
        let (proto, remote_port, host_port) = match qnext {
            TCP | UDP => (qnext, csum::get(ql4, 0), csum::get(ql4, 2)),
            ICMPV6 if ql4[0] == 129 => (ICMP, 0, csum::get(ql4, 4)),
            _ => {
                cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
                return None;
            }
        };
        let Some((ty, code, field)) =
            icmp_error_6to4(msg[0], msg[1], u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]))
        else {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        };
        let remote = extract(&self.prefix, &ipv6::src(q));
        // About a session: its host holds a stand-in already.
        let Some(stand_in) = self.hosts.find(&host) else {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        };
        let outside = self.table.peek_outbound(
            proto,
            Endpoint::new(stand_in, host_port),
            Endpoint::new(remote, remote_port),
            cx.now,
        );
        let Some(outside) = outside else {
            cx.drop(pkt, DropReason::NatIcmpErrorNoMatch);
            return None;
        };
        // Scratch: IPv4 + ICMP headers, the quote's IPv4 header and its
        // transport bytes, within 576 (RFC 1812 §4.3.2.3).
        let mut out = [0u8; crate::icmp::MAX_ERROR_LEN];
        let qbody = &ql4[..ql4.len().min(out.len() - 20 - 8 - 20)];
        let n = 20 + 8 + 20 + qbody.len();
        let qtotal = (20 + u16::from_be_bytes([q[4], q[5]]) as usize).min(0xffff) as u16;
        let to = extract(&self.prefix, &to6);
        write_ipv4(&mut out[..20], (n - 20) as u16, ICMP, ip[7], outside.addr, to);
        out[20] = ty;
        out[21] = code;
        out[24..28].copy_from_slice(&field.to_be_bytes());
        write_ipv4(&mut out[28..48], qtotal.saturating_sub(20), proto, q[7], remote, outside.addr);
        let ql = &mut out[48..n];
        ql.copy_from_slice(qbody);
        match proto {
            ICMP => {
                ql[0] = 0;
                csum::set(ql, 4, outside.port);
            }
            _ => csum::set(ql, 2, outside.port),
        }
        let c = csum::checksum(&out[20..n]);
        csum::set(&mut out, 22, c);
        let eth: [u8; 12] = pkt.data()[..12].try_into().expect("an Ethernet header");
        let head = pkt.head();
        if !pkt.set_window(head, ETH_HLEN + n) {
            cx.drop(pkt, DropReason::Nat64Unsupported);
            return None;
        }
        let d = pkt.data_mut();
        d[..12].copy_from_slice(&eth);
        d[12..14].copy_from_slice(&[0x08, 0x00]);
        d[ETH_HLEN..].copy_from_slice(&out[..n]);
        pkt.meta.local = false;
        pkt.meta.offload = Default::default();
        self.counters.icmp_errors += 1;
        Some(pkt)
    }

    /// An ICMPv6 error back to the inside sender, left for the router.
    fn error6(&mut self, mut pkt: Packet, kind: Icmp6Error, cx: &mut StageContext<'_>) -> Option<Packet> {
        let offender = ipv6::src(pkt.l3());
        let from = self.ports6.get(pkt.meta.in_port as usize).and_then(|a| ipv6::pick_source(a.iter(), &offender));
        cx.pool.release_tail(&mut pkt);
        if !ipv6::may_send_error(pkt.data(), pkt.meta.l3 as usize, kind) {
            cx.pool.free(pkt);
            return None;
        }
        match from.and_then(|f| ipv6::build_error(&mut pkt, kind, f)) {
            Some(_) => {
                self.counters.hop_limit_errors += 1;
                Some(pkt)
            }
            None => {
                cx.pool.free(pkt);
                None
            }
        }
    }

    /// An ICMPv4 error back to the outside sender, left for the router.
    fn error4(&mut self, mut pkt: Packet, kind: IcmpError, cx: &mut StageContext<'_>) -> Option<Packet> {
        let from = self.ports4.get(pkt.meta.in_port as usize).copied().flatten();
        cx.pool.release_tail(&mut pkt);
        self.ident = self.ident.wrapping_add(1);
        let built = from.filter(|_| crate::icmp::may_send_error(pkt.data(), pkt.meta.l3 as usize, &[]));
        match built.and_then(|f| crate::icmp::build_error(&mut pkt, kind, f, self.ident)) {
            Some(_) => {
                if matches!(kind, IcmpError::TtlExceeded) {
                    self.counters.hop_limit_errors += 1;
                }
                pkt.meta.local = false;
                Some(pkt)
            }
            None => {
                cx.pool.free(pkt);
                None
            }
        }
    }
}

/// From this many sessions on, a burst reads its table slots ahead.
const PREFETCH_FROM: usize = 256 * 1024;

impl Nat64 {
    /// The flow (direction, protocol, local, remote endpoint as the table
    /// keys them) of a packet the fast path would translate, if it can
    /// tell without changing anything; `None` for the rest.
    fn flow_of(&self, pkt: &Packet, hosts_ready: bool) -> Option<(Dir, u8, Endpoint, Endpoint)> {
        let ip = pkt.l3();
        if ipv6::is_ipv6(ip) {
            let (src, dst) = (ipv6::src(ip), ipv6::dst(ip));
            if !self.prefix.contains(&dst) {
                return None;
            }
            let l4 = ip.get(HLEN..HLEN + 8)?;
            let (proto, sport, dport) = match ip[6] {
                p @ (TCP | UDP) => (p, csum::get(l4, 0), csum::get(l4, 2)),
                ICMPV6 if l4[0] == 128 => (ICMP, csum::get(l4, 4), 0),
                _ => return None,
            };
            if !hosts_ready {
                self.hosts.prefetch(&src);
                return None;
            }
            let stand_in = self.hosts.find(&src)?;
            return Some((
                Dir::Out,
                proto,
                Endpoint::new(stand_in, sport),
                Endpoint::new(extract(&self.prefix, &dst), dport),
            ));
        }
        if !pkt.meta.local || pkt.meta.in_port != self.outside_port {
            return None;
        }
        let p = crate::wire::rewrite::parse(ip);
        let l4 = ip.get(p.ihl..p.total)?;
        let (sport, dport) = match p.proto {
            TCP | UDP if l4.len() >= 8 => (csum::get(l4, 0), csum::get(l4, 2)),
            ICMP if l4.len() >= 8 && l4[0] == 0 => (0, csum::get(l4, 4)),
            _ => return None,
        };
        Some((Dir::In, p.proto, Endpoint::new(p.dst, dport), Endpoint::new(p.src, sport)))
    }

    fn prefetch(&self, batch: &Batch) {
        let key = self.table.key();
        let mut hashes = [None; crate::packet::BURST];
        // 1: host slots (outbound), index slots (inbound).
        for (h, pkt) in hashes.iter_mut().zip(batch.iter()) {
            if let Some((dir, proto, local, remote)) = self.flow_of(pkt, false) {
                let x = flow_hash(key, dir, proto, local, remote);
                self.table.prefetch(dir, x);
                *h = Some((dir, x));
            }
        }
        // 2: index slots (outbound, their stand-ins now cached).
        for (h, pkt) in hashes.iter_mut().zip(batch.iter()) {
            if h.is_none() {
                if let Some((dir, proto, local, remote)) = self.flow_of(pkt, true) {
                    let x = flow_hash(key, dir, proto, local, remote);
                    self.table.prefetch(dir, x);
                    *h = Some((dir, x));
                }
            }
        }
        // 3: session records.
        for &(dir, x) in hashes.iter().flatten() {
            let _ = self.table.hint(dir, x);
        }
    }
}

/// Why a new inside host got no stand-in, as a drop reason.
fn stand_in_refusal(r: crate::standin::Refused) -> DropReason {
    match r {
        crate::standin::Refused::Full => DropReason::NatTableFull,
        crate::standin::Refused::Per64 => DropReason::Nat64HostsPer64,
    }
}

/// Whether `a` is globally reachable, as the IANA IPv4 Special-Purpose
/// Address Registry says: what the well-known prefix may carry (RFC 6052
/// §3.1). Not: this network (0/8), private (RFC 1918), shared (RFC 6598),
/// loopback, link-local, IETF protocol assignments (192.0.0/24 but the
/// anycast .9 and .10), documentation (RFC 5737), benchmarking
/// (198.18/15), multicast, reserved (240/4) and broadcast.
pub fn is_global(a: Ipv4Addr) -> bool {
    let n = u32::from(a);
    let within = |net: u32, len: u32| n >> (32 - len) == net >> (32 - len);
    !(within(0, 8)
        || a.is_private()
        || within(0x6440_0000, 10)
        || a.is_loopback()
        || a.is_link_local()
        || within(0xc000_0000, 24) && !matches!(a.octets()[3], 9 | 10)
        || a.is_documentation()
        || within(0xc612_0000, 15)
        || n >= 0xe000_0000)
}

/// Writes a 20-byte IPv4 header (no options, DF, its checksum filled).
fn write_ipv4(h: &mut [u8], payload: u16, proto: u8, ttl: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    h.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, ttl, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    csum::set(h, 2, payload.saturating_add(20));
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = csum::checksum(h);
    csum::set(h, 10, c);
}

impl Stage for Nat64 {
    /// A large table is walked in passes over the burst first, as the
    /// NAT44's: each packet's host slot, then its session index slot, then
    /// its session record are read ahead, so the cache misses of a million
    /// sessions overlap; the packets are then translated in order.
    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        if self.table.capacity() >= PREFETCH_FROM {
            self.prefetch(batch);
        }
        for_each_packet(batch, |pkt| {
            let out = self.translate(pkt, cx);
            // A lookup may have ended other hosts' last sessions.
            self.settle(None);
            out
        });
        while let Some(p) = self.spill.pop() {
            if let Err(p) = batch.push(p) {
                cx.drop(p, DropReason::FragNoBuffer);
            }
        }
    }

    fn drain(&mut self, pool: &mut crate::packet::PacketPool) {
        while let Some(p) = self.spill.pop() {
            pool.free(p);
        }
    }

    fn ipv6(&self) -> Ipv6Handling {
        Ipv6Handling::Process
    }

    fn poll(&mut self, cx: &mut StageContext<'_>) {
        self.table.sweep(cx.now, SWEEP_PER_POLL);
        self.settle(None);
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        self.counters.report(sink);
        sink.gauge(
            "stand_ins",
            "inside IPv6 hosts holding a stand-in address (each has a session)",
            self.hosts.held() as u64,
        );
        sink.gauge("sessions", "NAT64 sessions in the table", self.table.sessions() as u64);
        sink.gauge(
            "mappings",
            "NAT64 mappings (inside endpoint to pool address and port)",
            self.table.mappings() as u64,
        );
        sink.gauge("session_capacity", "NAT64 sessions the table holds", self.table.capacity() as u64);
        let t = &self.table.counters;
        sink.counter("filtered", "inbound packets the filtering refused", t.filtered);
    }
}

/// The NAT64's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "nat64", statements: &["nat64"], parse: super::config::parse, build };

fn build(c: &dyn StageConfig, cx: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<NatConfig>().expect("the NAT64 builds from a nat64 block");
    let n64 = c.nat64.as_ref().expect("a nat64 block");
    Box::new(Nat64::from_config(c, n64, cx.config, cx.macs, cx.seed))
}

#[cfg(test)]
#[path = "nat64_tests.rs"]
mod tests;
