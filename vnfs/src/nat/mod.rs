//! The NAT gateway stage: source NAT of inside prefixes to outside
//! addresses (RFC 4787, RFC 5382, RFC 5508, RFC 7857), with static port
//! forwards and hairpinning.
//!
//! Where it runs: after the router on inside ports (`pipeline lan router
//! nat`: SNAT is post-routing, it translates packets routed out of the
//! outside port), before the router on the outside port (`pipeline wan nat
//! router`: DNAT is pre-routing, the router then routes to the inside host).
//! Those are the default pipelines when the config has a `nat` block.
//!
//! Checksums are updated incrementally (RFC 1624) for IPv4, TCP, UDP (a zero
//! UDP checksum stays zero) and ICMP; ICMP errors are translated both ways
//! with their quoted packet (RFC 5508); non-first fragments follow their
//! first fragment's translation through a small bounded cache.
//!
//! A burst first takes its fast path: packets of established TCP/UDP
//! sessions (plain 20-byte IPv4 header, whole datagram, one way across) are
//! found from a key read at fixed offsets and rewritten in place in one pass
//! (address, port, both checksums). The rest go the general way afterwards,
//! in their order. A super-packet's partial transport checksum is rewritten
//! like any other; the egress recomputes it from the final header.

pub mod config;
pub mod nat64;
pub mod table;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use self::config::{ForwardConfig, NatConfig, NatFiltering};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::counters::DropReason;
use crate::csum;
use crate::flow::{Endpoint, Timeouts, ICMP, TCP, UDP};
use crate::packet::{Batch, Packet, PortId, BURST};
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;
use crate::wire::rewrite::{is_icmp_error, l4_checksum, parse, ports, set_addr, set_endpoint, set_port, Parsed};
use crate::Micros;
use table::{flow_hash, Dir, Filtering, NatTable, Refusal};

/// Fragment translations remembered at once.
const FRAG_CACHE: usize = 256;
/// Live entries one source may hold in the fragment cache.
const FRAG_PER_SOURCE: usize = 16;
/// How long a fragment translation is kept after the first fragment.
const FRAG_LIFETIME: Micros = 5_000_000;
/// From this many sessions on, the table outgrows the caches and a burst
/// prefetches its index slots and records before translating.
const PREFETCH_FROM: usize = 256 * 1024;
/// Sessions whose timers each loop turn checks.
const SWEEP_PER_POLL: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct NatCounters {
    pub out: u64,
    pub r#in: u64,
    pub hairpinned: u64,
    pub icmp_errors: u64,
    pub fragments: u64,
    /// First-fragment entries that replaced the same source's oldest (its
    /// quota was full).
    pub fragments_evicted_own: u64,
    /// Entries of other sources replaced while the cache was full of live ones.
    pub fragments_evicted: u64,
}

/// What the burst's first pass keeps of a packet for the fast path.
#[derive(Clone, Copy)]
struct FastKey {
    dir: Dir,
    h: u64,
    proto: u8,
    local: Endpoint,
    remote: Endpoint,
    /// TCP flags (0 for UDP).
    flags: u8,
    /// The IPv4 datagram's length in the first buffer.
    total: u16,
}

#[derive(Clone, Copy)]
struct FragEntry {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
    /// Translated address: the new source (outbound) or destination (inbound).
    to: Ipv4Addr,
    outbound: bool,
    expires: Micros,
}

pub struct Nat {
    /// Inside prefixes as (network, mask).
    inside: Vec<(u32, u32)>,
    outside_port: PortId,
    /// The VRF of the inside.
    vrf: usize,
    pub table: NatTable,
    frags: Vec<FragEntry>,
    pub counters: NatCounters,
}

fn map_filtering(f: NatFiltering) -> Filtering {
    match f {
        NatFiltering::EndpointIndependent => Filtering::EndpointIndependent,
        NatFiltering::AddressDependent => Filtering::AddressDependent,
        NatFiltering::AddressAndPortDependent => Filtering::AddressAndPortDependent,
    }
}

fn refusal_reason(r: Refusal) -> DropReason {
    match r {
        Refusal::TableFull => DropReason::NatTableFull,
        Refusal::PortsExhausted => DropReason::NatPortsExhausted,
        Refusal::Filtered => DropReason::NatFiltered,
        Refusal::NoMapping => DropReason::NatNoMapping,
        Refusal::Quota => DropReason::NatQuota,
    }
}

impl Nat {
    /// The NAT of a `nat` block.
    pub fn from_config(c: &NatConfig, seed: u64) -> Nat {
        let timeouts = Timeouts {
            udp: c.udp_timeout as Micros * 1_000_000,
            tcp_established: c.tcp_established_timeout as Micros * 1_000_000,
            tcp_transitory: c.tcp_transitory_timeout as Micros * 1_000_000,
            icmp: c.icmp_timeout as Micros * 1_000_000,
        };
        let mut table = NatTable::new(c.sessions, c.pool.clone(), c.ports, map_filtering(c.filtering), timeouts, seed);
        table.set_quotas(c.quotas);
        for f in &c.forwards {
            table.add_forward(f.proto, Endpoint::new(f.outside.0, f.outside.1), Endpoint::new(f.inside.0, f.inside.1));
        }
        let mut nat = Nat::new(c.inside.clone(), c.outside as PortId, table);
        nat.vrf = c.vrf;
        nat
    }

    pub fn new(inside: Vec<Ipv4Net>, outside_port: PortId, table: NatTable) -> Nat {
        Nat {
            inside: inside.iter().map(|n| (u32::from(n.network()), u32::from(n.netmask()))).collect(),
            outside_port,
            vrf: 0,
            table,
            frags: Vec::with_capacity(FRAG_CACHE),
            counters: NatCounters::default(),
        }
    }

    #[inline]
    fn is_inside(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        self.inside.iter().any(|&(net, mask)| a & mask == net)
    }

    /// The session key of a packet the fast path can translate: a whole
    /// TCP or UDP datagram with a plain 20-byte IPv4 header and a complete
    /// transport header, crossing the NAT one way (not hairpinned).
    #[inline]
    fn fast_key(&self, pkt: &Packet) -> Option<FastKey> {
        let d = pkt.l3();
        let h: &[u8; 28] = d.get(..28)?.try_into().ok()?;
        let proto = h[9];
        // IHL 5, no MF, offset 0 (DF may be set).
        if h[0] != 0x45 || h[6] & 0x3f != 0 || h[7] != 0 {
            return None;
        }
        let total = u16::from_be_bytes([h[2], h[3]]).min(d.len().min(u16::MAX as usize) as u16);
        let flags = match proto {
            TCP if total >= 40 => d[33],
            UDP if total >= 28 => 0,
            _ => return None,
        };
        let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        let sport = u16::from_be_bytes([h[20], h[21]]);
        let dport = u16::from_be_bytes([h[22], h[23]]);
        let (dir, local, remote) = if pkt.meta.out_port.is_none() {
            if !self.table.is_pool_address(dst) || self.is_inside(src) {
                return None;
            }
            (Dir::In, Endpoint::new(dst, dport), Endpoint::new(src, sport))
        } else {
            // Routed: never to a pool address (those are the appliance's
            // own, so the router left them unrouted).
            if pkt.meta.out_port != Some(self.outside_port) || !self.is_inside(src) || pkt.meta.vrf() != self.vrf {
                return None;
            }
            (Dir::Out, Endpoint::new(src, sport), Endpoint::new(dst, dport))
        };
        Some(FastKey {
            dir,
            h: flow_hash(self.table.key(), dir, proto, local, remote),
            proto,
            local,
            remote,
            flags,
            total,
        })
    }

    /// Translates one packet the general way; `None` if it was dropped.
    pub fn handle(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let p = parse(pkt.l3());
        let to_pool = pkt.meta.out_port.is_none() && self.table.is_pool_address(p.dst);
        let from_inside = self.is_inside(p.src);
        let result = if to_pool {
            let r = self.inbound(&mut pkt, &p, from_inside, cx.now);
            if r == Ok(true) {
                // The inside host is routed in the NAT's VRF.
                pkt.meta.set_vrf(self.vrf);
            }
            r
        } else if from_inside && pkt.meta.out_port == Some(self.outside_port) && pkt.meta.vrf() == self.vrf {
            self.outbound(&mut pkt, &p, cx.now).map(|_| true)
        } else {
            Ok(false)
        };
        match result {
            Ok(_) => Some(pkt),
            Err(reason) => {
                cx.drop(pkt, reason);
                None
            }
        }
    }

    /// SNAT of a packet from inside routed out of the outside port.
    fn outbound(&mut self, pkt: &mut Packet, p: &Parsed, now: Micros) -> Result<(), DropReason> {
        // The datagram only: no Ethernet padding.
        let ip = &mut pkt.l3_mut()[..p.total];
        if !p.first {
            let to = self.frag_lookup(p, true, now).ok_or(DropReason::NatFragmentUnknown)?;
            set_addr(ip, 12, to, None, p.proto);
            self.counters.fragments += 1;
            return Ok(());
        }
        let l4 = p.ihl;
        if p.proto == ICMP && ip.len() > l4 && is_icmp_error(ip[l4]) {
            return self.translate_icmp_error(ip, p, false, now);
        }
        if p.proto == ICMP && ip.get(l4) != Some(&8) {
            // Only echo requests open ICMP query mappings (RFC 5508 §3.1).
            return Err(DropReason::NatUnsupportedProtocol);
        }
        if l4_checksum(p.proto).is_none() {
            return Err(DropReason::NatUnsupportedProtocol);
        }
        let (sport, dport, flags) = ports(ip, l4, p.proto).ok_or(DropReason::L4Truncated)?;
        let remote = Endpoint::new(p.dst, if p.proto == ICMP { 0 } else { dport });
        let inside = Endpoint::new(p.src, sport);
        let out = self.table.outbound(p.proto, inside, remote, flags, now).map_err(refusal_reason)?;
        set_addr(ip, 12, out.addr, Some(l4), p.proto);
        set_port(ip, l4 + if p.proto == ICMP { 4 } else { 0 }, out.port, l4, p.proto);
        if p.more {
            self.frag_remember(p, out.addr, true, now);
        }
        self.counters.out += 1;
        Ok(())
    }

    /// DNAT of a packet to a pool address, and hairpinning when it came
    /// from inside. Returns whether it was translated (if not, it goes on
    /// to the appliance's own host stack).
    fn inbound(&mut self, pkt: &mut Packet, p: &Parsed, from_inside: bool, now: Micros) -> Result<bool, DropReason> {
        let in_port = pkt.meta.in_port;
        let local = pkt.meta.local;
        let l4 = p.ihl;
        let ip = &mut pkt.l3_mut()[..p.total];
        if !p.first {
            let Some(to) = self.frag_lookup(p, false, now) else {
                return if local { Ok(false) } else { Err(DropReason::NatFragmentUnknown) };
            };
            set_addr(ip, 16, to, None, p.proto);
            pkt.meta.local = false;
            self.counters.fragments += 1;
            return Ok(true);
        }
        if p.proto == ICMP && ip.len() > l4 && is_icmp_error(ip[l4]) {
            return match self.translate_icmp_error(ip, p, true, now) {
                Ok(()) => {
                    pkt.meta.local = false;
                    Ok(true)
                }
                // Errors about the appliance's own traffic are its own.
                Err(_) if local => Ok(false),
                Err(e) => Err(e),
            };
        }
        let is_query_reply = p.proto == ICMP && ip.get(l4) == Some(&0);
        if l4_checksum(p.proto).is_none() || (p.proto == ICMP && !is_query_reply) {
            // Pings and other protocols to the appliance itself.
            return if local { Ok(false) } else { Err(DropReason::NatUnsupportedProtocol) };
        }
        let Some((sport, dport, flags)) = ports(ip, l4, p.proto) else {
            return Err(DropReason::L4Truncated);
        };
        let outside = Endpoint::new(p.dst, dport);
        let mut remote = Endpoint::new(p.src, if p.proto == ICMP { 0 } else { sport });
        if from_inside {
            // Hairpin (RFC 4787 REQ-9): the packet goes back inside with the
            // sender's outside mapping as its source, so the peer sees the
            // same endpoint as any outside host would.
            if !self.table_has_outside(p.proto, outside) {
                return Ok(false);
            }
            let src_out = self
                .table
                .outbound(p.proto, Endpoint::new(p.src, sport), outside, flags, now)
                .map_err(refusal_reason)?;
            set_addr(ip, 12, src_out.addr, Some(l4), p.proto);
            if p.proto != ICMP {
                set_port(ip, l4, src_out.port, l4, p.proto);
            }
            remote = src_out;
        }
        let inside = match self.table.inbound(p.proto, outside, remote, flags, now) {
            Ok(e) => e,
            Err(Refusal::NoMapping) if local => return Ok(false),
            Err(r) => return Err(refusal_reason(r)),
        };
        set_addr(ip, 16, inside.addr, Some(l4), p.proto);
        set_port(ip, l4 + if p.proto == ICMP { 4 } else { 2 }, inside.port, l4, p.proto);
        if p.more {
            self.frag_remember(p, inside.addr, false, now);
        }
        pkt.meta.local = false;
        if from_inside {
            // Back out of the port it came in on, straight to the peer: the
            // inside prefixes are on-link there.
            pkt.meta.route(in_port, inside.addr);
            self.counters.hairpinned += 1;
        } else {
            self.counters.r#in += 1;
        }
        Ok(true)
    }

    fn table_has_outside(&mut self, proto: u8, outside: Endpoint) -> bool {
        // A probe that changes nothing: EIF-style peek with a dummy remote
        // would create state, so ask the table directly.
        self.table.has_mapping_at(proto, outside)
    }

    /// Translates an ICMP error and the packet it quotes (RFC 5508 §4.2).
    /// Inbound: the quote is our translated packet (source = outside
    /// endpoint); outbound: the quote is a packet we translated inbound
    /// (destination = inside endpoint).
    fn translate_icmp_error(
        &mut self,
        ip: &mut [u8],
        p: &Parsed,
        inbound: bool,
        now: Micros,
    ) -> Result<(), DropReason> {
        let l4 = p.ihl;
        let q = l4 + 8;
        let end = p.total.min(ip.len());
        if end < q + 20 {
            return Err(DropReason::L4Truncated);
        }
        let qp = parse(&ip[q..end]);
        let ql4 = q + qp.ihl;
        if !qp.first || end < ql4 + 4 {
            return Err(DropReason::NatIcmpErrorNoMatch);
        }
        let (qs, qd) = match qp.proto {
            ICMP if end >= ql4 + 8 => (csum::get(ip, ql4 + 4), 0),
            TCP | UDP => (csum::get(ip, ql4), csum::get(ip, ql4 + 2)),
            _ => return Err(DropReason::NatIcmpErrorNoMatch),
        };
        let inner_l4 = Some(ql4);
        let port_at = if qp.proto == ICMP { ql4 + 4 } else { ql4 };
        if inbound {
            // Quoted: outside endpoint → remote. Restore the inside endpoint.
            let remote = Endpoint::new(qp.dst, qd);
            let inside = self
                .table
                .peek_inbound(qp.proto, Endpoint::new(qp.src, qs), remote, now)
                .ok_or(DropReason::NatIcmpErrorNoMatch)?;
            set_addr(&mut ip[q..end], 12, inside.addr, inner_l4.map(|x| x - q), qp.proto);
            set_port_quoted(ip, port_at, inside.port, ql4, qp.proto, end);
            set_addr(ip, 16, inside.addr, None, ICMP);
        } else {
            // Quoted: remote → inside endpoint. Show the outside endpoint.
            let remote = Endpoint::new(qp.src, if qp.proto == ICMP { 0 } else { qs });
            let inside_port = if qp.proto == ICMP { qs } else { qd };
            let outside = self
                .table
                .peek_outbound(qp.proto, Endpoint::new(qp.dst, inside_port), remote, now)
                .ok_or(DropReason::NatIcmpErrorNoMatch)?;
            set_addr(&mut ip[q..end], 16, outside.addr, inner_l4.map(|x| x - q), qp.proto);
            let at = if qp.proto == ICMP { ql4 + 4 } else { ql4 + 2 };
            set_port_quoted(ip, at, outside.port, ql4, qp.proto, end);
            set_addr(ip, 12, outside.addr, None, ICMP);
        }
        // The ICMP checksum covers the quote: recompute it (slow path).
        csum::set(ip, l4 + 2, 0);
        let c = csum::checksum(&ip[l4..end]);
        csum::set(ip, l4 + 2, c);
        self.counters.icmp_errors += 1;
        Ok(())
    }

    fn frag_remember(&mut self, p: &Parsed, to: Ipv4Addr, outbound: bool, now: Micros) {
        let e = FragEntry {
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            ident: p.ident,
            to,
            outbound,
            expires: now + FRAG_LIFETIME,
        };
        // Each source may hold FRAG_PER_SOURCE entries: beyond that its own
        // oldest makes room, so one host's first fragments cannot flush
        // everyone else's (bounded: one pass over the cache).
        let live = |x: &FragEntry| x.expires > now;
        let own = self.frags.iter().filter(|x| x.src == p.src && live(x)).count();
        let oldest_where = |frags: &[FragEntry], f: &dyn Fn(&FragEntry) -> bool| {
            frags.iter().enumerate().filter(|(_, x)| f(x)).min_by_key(|(_, x)| x.expires).map(|(i, _)| i)
        };
        let slot = if own >= FRAG_PER_SOURCE {
            self.counters.fragments_evicted_own += 1;
            oldest_where(&self.frags, &|x| x.src == p.src && live(x))
        } else if self.frags.len() < FRAG_CACHE {
            None
        } else {
            oldest_where(&self.frags, &|x| !live(x)).or_else(|| {
                self.counters.fragments_evicted += 1;
                oldest_where(&self.frags, &|_| true)
            })
        };
        match slot {
            Some(i) => self.frags[i] = e,
            None => self.frags.push(e),
        }
    }

    fn frag_lookup(&self, p: &Parsed, outbound: bool, now: Micros) -> Option<Ipv4Addr> {
        self.frags
            .iter()
            .find(|e| {
                e.outbound == outbound
                    && e.src == p.src
                    && e.dst == p.dst
                    && e.proto == p.proto
                    && e.ident == p.ident
                    && e.expires > now
            })
            .map(|e| e.to)
    }
}

/// `set_port` inside an ICMP error's quote, where the quoted transport
/// checksum may be cut off.
fn set_port_quoted(ip: &mut [u8], at: usize, new: u16, ql4: usize, proto: u8, end: usize) {
    set_port(&mut ip[..end], at, new, ql4, proto);
}

impl Stage for Nat {
    /// Three passes over the burst: read each packet's flow key, hash it
    /// and prefetch its index slot; read the slots and prefetch the session
    /// records; translate the packets of established sessions in place. The
    /// cache misses of a large table then overlap across the burst instead
    /// of coming one after another. The rest (new flows, ICMP, fragments,
    /// hairpins…) take the general way afterwards, in their burst order.
    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        let mut keys = [None; BURST];
        let mut hints = [None; BURST];
        if self.table.capacity() >= PREFETCH_FROM {
            for (key, pkt) in keys.iter_mut().zip(batch.iter()) {
                *key = self.fast_key(pkt);
                if let Some(k) = key {
                    self.table.prefetch(k.dir, k.h);
                }
            }
            for (hint, key) in hints.iter_mut().zip(&keys) {
                *hint = key.map(|k| self.table.hint(k.dir, k.h));
            }
        } else {
            // A table this small stays in the caches: one pass is cheaper.
            for ((key, hint), pkt) in keys.iter_mut().zip(hints.iter_mut()).zip(batch.iter()) {
                *key = self.fast_key(pkt);
                *hint = key.map(|k| self.table.hint(k.dir, k.h));
            }
        }
        let mut done = [false; BURST];
        let mut rest = false;
        for (i, pkt) in batch.iter_mut().enumerate() {
            if let (Some(k), Some(hint)) = (keys[i], hints[i]) {
                if let Some(to) = self.table.established(hint, k.proto, k.local, k.remote, k.flags, cx.now) {
                    let out = k.dir == Dir::Out;
                    let total = k.total as usize;
                    set_endpoint(&mut pkt.l3_mut()[..total], out, to.addr, to.port, 20, k.proto);
                    if out {
                        self.counters.out += 1;
                    } else {
                        pkt.meta.local = false;
                        pkt.meta.set_vrf(self.vrf);
                        self.counters.r#in += 1;
                    }
                    done[i] = true;
                    continue;
                }
            }
            rest = true;
        }
        if rest {
            let mut done = done.into_iter();
            for_each_packet(batch, |pkt| if done.next().unwrap_or(false) { Some(pkt) } else { self.handle(pkt, cx) });
        }
    }

    fn poll(&mut self, cx: &mut StageContext<'_>) {
        self.table.sweep(cx.now, SWEEP_PER_POLL);
    }

    fn show(&self, what: &str, query: &[(&str, &str)], now: Micros, out: &mut alloc::string::String) -> bool {
        if what != "sessions" {
            return false;
        }
        show_sessions(self, query, now, out);
        true
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        let c = &self.counters;
        let t = &self.table.counters;
        sink.counter("translated_out", "packets translated inside to outside", c.out);
        sink.counter("translated_in", "packets translated outside to inside", c.r#in);
        sink.counter("hairpinned", "packets from inside to a pool address, sent back inside", c.hairpinned);
        sink.counter("icmp_errors_translated", "ICMP errors whose embedded packet was translated", c.icmp_errors);
        sink.counter("fragments_translated", "non-first fragments translated by their first's session", c.fragments);
        sink.counter(
            "fragments_evicted_own",
            "fragment entries that replaced the same source's oldest",
            c.fragments_evicted_own,
        );
        sink.counter(
            "fragments_evicted",
            "fragment entries of other sources replaced in a full cache",
            c.fragments_evicted,
        );
        sink.gauge("sessions", "sessions in the table", self.table.sessions() as u64);
        sink.gauge("session_capacity", "sessions the table holds", self.table.capacity() as u64);
        sink.gauge("mappings", "endpoint-independent mappings in the table", self.table.mappings() as u64);
        sink.counter("sessions_created", "sessions created", t.sessions_created);
        sink.counter("sessions_expired", "sessions removed after their idle timeout", t.sessions_expired);
        sink.counter("refused_table_full", "new sessions refused: the table was full", t.refused_table_full);
        sink.counter("evicted_transitory", "transitory sessions evicted for a new one", t.evicted_transitory);
        sink.counter("sessions_restarted", "TCP sessions a SYN on their closed tuple began anew", t.sessions_restarted);
        sink.counter("refused_quota", "new sessions refused by a host or forward quota", t.refused_quota);
        sink.counter("refused_ports", "new sessions refused: no outside port free", t.refused_ports);
        sink.counter("filtered", "inbound packets refused by the filtering", t.filtered);
        sink.gauge("table_bytes", "bytes of the session table", self.table.memory() as u64);
    }
}

/// The value of `key` in a `show` query.
fn q<'a>(query: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `show sessions`: `addr=A` (inside, outside or remote), `port=P`,
/// `proto=tcp|udp|icmp`, `offset=N` (where the last page ended), `limit=N`
/// (at most 1000).
fn show_sessions(nat: &Nat, query: &[(&str, &str)], now: Micros, out: &mut alloc::string::String) {
    use core::fmt::Write as _;
    let addr: Option<Ipv4Addr> = q(query, "addr").and_then(|a| a.parse().ok());
    let port: Option<u16> = q(query, "port").and_then(|p| p.parse().ok());
    let proto = match q(query, "proto") {
        Some("tcp") => Some(TCP),
        Some("udp") => Some(UDP),
        Some("icmp") => Some(ICMP),
        _ => None,
    };
    let offset = q(query, "offset").and_then(|v| v.parse().ok()).unwrap_or(0usize);
    let limit = q(query, "limit").and_then(|v| v.parse().ok()).unwrap_or(100usize).clamp(1, 1000);
    let (rows, next) = nat.table.list(offset, limit, now, |p, i, o, r| {
        proto.is_none_or(|x| x == p)
            && addr.is_none_or(|a| a == i.addr || a == o.addr || a == r.addr)
            && port.is_none_or(|x| x == i.port || x == o.port || x == r.port)
    });
    let _ = writeln!(
        out,
        "{:<5} {:<21} {:<21} {:<21} {:<12} {:>8}",
        "proto", "inside", "outside", "remote", "state", "left_s"
    );
    for (p, i, o, r, tcp, left) in rows {
        let name = match p {
            TCP => "tcp",
            UDP => "udp",
            _ => "icmp",
        };
        let state = if p == TCP { crate::flow::tcp_state_name(tcp) } else { "-" };
        let ep = |e: Endpoint| alloc::format!("{}:{}", e.addr, e.port);
        let _ = writeln!(
            out,
            "{:<5} {:<21} {:<21} {:<21} {:<12} {:>8}",
            name,
            ep(i),
            ep(o),
            ep(r),
            state,
            left / 1_000_000
        );
    }
    if let Some(n) = next {
        let _ = writeln!(out, "more: offset={n}");
    }
}

/// The NAT's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "nat", statements: &["nat"], parse: config::parse, build };

fn build(c: &dyn StageConfig, cx: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<NatConfig>().expect("the nat builds from its own settings");
    Box::new(Nat::from_config(c, cx.seed))
}

#[cfg(test)]
mod tests;
