//! The IPv4 router stage (RFC 1812 as the guide).
//!
//! For each packet not addressed to the appliance: martian checks, TTL,
//! longest-prefix match, the egress MTU against DF (ICMP fragmentation
//! needed, RFC 1191), TTL decrement with an incremental checksum update
//! (RFC 1624). The result is a routing decision in the packet's metadata
//! (`out_port`, `next_hop`); the packet stays in the burst for later stages
//! (NAT after routing) and the egress fragments it if needed and resolves
//! the next hop's MAC. Errors are answered with rate-limited ICMP built in
//! the offending packet's own buffer, itself routed back to the source.

pub mod config;
pub mod lpm;
pub mod lpm6;
mod v6;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::Ipv4Packet;

pub use self::config::RouterConfig;
use crate::config::{BuildContext, Config, StageConfig, StageDef};
use crate::counters::DropReason;
use crate::icmp::{self, build_error, may_send_error, IcmpError};
use crate::packet::{Batch, Packet, PortId};
use crate::ratelimit::PerSource;
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;
use lpm::{Lpm, NextHopId};

/// What the router knows of a port.
#[derive(Clone, Debug)]
pub struct RouterPort {
    pub mac: [u8; 6],
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
    /// IPv6: the link-local address and the config's (empty: no IPv6).
    pub address6: Vec<ipnet::Ipv6Net>,
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    pub port: PortId,
    /// `None`: the destination is on the port's link.
    pub gateway: Option<Ipv4Addr>,
}

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    /// ICMP errors per second and burst, for each source address.
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    /// Keys the per-source buckets' slots.
    pub key: u64,
}

#[derive(Clone, Debug, Default)]
pub struct RouterCounters {
    pub forwarded: u64,
    pub icmp_errors: u64,
    pub forwarded6: u64,
    pub icmp6_errors: u64,
    pub icmp_rate_limited: u64,
}

pub struct Router {
    lpm: Lpm,
    /// The tables of VRFs 1.. (`vrf NAME`); `lpm` is the default one.
    vrfs: Vec<Lpm>,
    next_hops: Vec<NextHop>,
    /// The IPv6 table: prefix → index into `next_hops6`.
    lpm6: lpm6::Lpm6,
    next_hops6: Vec<v6::NextHop6>,
    ports: Vec<RouterPort>,
    /// Directed broadcast addresses of our subnets.
    broadcasts: Vec<Ipv4Addr>,
    /// ICMP errors per source of the offending packet (RFC 1812 §4.3.2.8).
    icmp_limit: PerSource,
    ident: u16,
    pub counters: RouterCounters,
}

impl Router {
    /// Builds the router of a config: connected routes from port prefixes,
    /// then the static routes.
    pub fn from_config(settings: &RouterConfig, config: &Config, macs: &[[u8; 6]], seed: u64) -> Router {
        let ports: Vec<RouterPort> = config
            .ports
            .iter()
            .zip(macs)
            .map(|(p, mac)| RouterPort {
                mac: *mac,
                address: p.address,
                mtu: p.mtu,
                address6: crate::ipv6::port_nets(*mac, &p.address6),
            })
            .collect();
        let mut routes: Vec<(Ipv4Net, NextHop)> = Vec::new();
        let mut vrf_routes: Vec<Vec<(Ipv4Net, NextHop)>> = alloc::vec![Vec::new(); config.vrf_count() - 1];
        let mut table = |vrf: usize, prefix, nh| match vrf {
            0 => routes.push((prefix, nh)),
            v => vrf_routes[v - 1].push((prefix, nh)),
        };
        // The management port's prefix is not a route: nothing is forwarded
        // into the management network.
        let mgmt = config.management.as_ref().map(|m| m.port);
        for (i, p) in ports.iter().enumerate() {
            if let Some(a) = p.address.filter(|_| Some(i) != mgmt) {
                table(config.ports[i].vrf, a.trunc(), NextHop { port: i as PortId, gateway: None });
            }
        }
        for r in &config.routes {
            table(r.vrf, r.prefix, NextHop { port: r.port as PortId, gateway: r.via });
        }
        let settings = RouterSettings {
            icmp_rate: settings.icmp_rate,
            icmp_burst: settings.icmp_burst,
            key: crate::table::hash_words(seed, &[0x6963_6d70]),
        };
        let mut r = Router::new(ports, &routes, &settings);
        let mut seen = alloc::collections::BTreeMap::new();
        for (i, nh) in r.next_hops.iter().enumerate() {
            seen.insert(*nh, i);
        }
        for routes in &vrf_routes {
            let mut lpm = Lpm::new();
            for (prefix, nh) in routes {
                lpm.insert(*prefix, intern(&mut r.next_hops, &mut seen, *nh) as NextHopId);
            }
            r.vrfs.push(lpm);
        }
        r.install6(config);
        r
    }

    /// Builds a router from ports and routes (later routes win on equal prefixes).
    pub fn new(ports: Vec<RouterPort>, routes: &[(Ipv4Net, NextHop)], settings: &RouterSettings) -> Router {
        let mut lpm = Lpm::new();
        let mut next_hops: Vec<NextHop> = Vec::new();
        let mut seen = alloc::collections::BTreeMap::new();
        for (prefix, nh) in routes {
            lpm.insert(*prefix, intern(&mut next_hops, &mut seen, *nh) as NextHopId);
        }
        let broadcasts =
            ports.iter().filter_map(|p| p.address).filter(|a| a.prefix_len() < 31).map(|a| a.broadcast()).collect();
        Router {
            lpm,
            vrfs: Vec::new(),
            next_hops,
            lpm6: lpm6::Lpm6::new(),
            next_hops6: Vec::new(),
            ports,
            broadcasts,
            icmp_limit: PerSource::new(settings.icmp_rate, settings.icmp_burst, settings.key),
            ident: 0,
            counters: RouterCounters::default(),
        }
    }

    /// The next hop for `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        self.lpm.lookup(dst).map(|id| self.next_hops[id as usize])
    }

    /// The next hop for `dst` in VRF `vrf`'s table.
    #[inline]
    pub fn lookup_in(&self, vrf: usize, dst: Ipv4Addr) -> Option<NextHop> {
        let lpm = match vrf {
            0 => &self.lpm,
            v => self.vrfs.get(v - 1)?,
        };
        lpm.lookup(dst).map(|id| self.next_hops[id as usize])
    }

    pub fn route_count(&self) -> usize {
        self.lpm.len()
    }

    /// Routes one packet (Ethernet + IPv4 whose header the ingress
    /// checked). Returns it routed (or turned into a routed ICMP error), or
    /// `None` if it was dropped.
    pub fn route(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let (ttl, src, dst, total, df) = {
            let ip = Ipv4Packet::new_unchecked(pkt.l3());
            (ip.hop_limit(), ip.src_addr(), ip.dst_addr(), ip.total_len() as usize, ip.dont_frag())
        };
        if !icmp::is_unique_host(src) {
            cx.drop(pkt, DropReason::MartianSource);
            return None;
        }
        if !icmp::is_unique_host(dst) || self.broadcasts.contains(&dst) {
            cx.drop(pkt, DropReason::MartianDestination);
            return None;
        }
        if ttl <= 1 {
            return self.icmp_error(pkt, IcmpError::TtlExceeded, DropReason::TtlExpired, cx);
        }
        let Some(nh) = self.lookup_in(pkt.meta.vrf(), dst) else {
            return self.icmp_error(pkt, IcmpError::NetUnreachable, DropReason::NoRoute, cx);
        };
        let mtu = self.ports[nh.port as usize].mtu as usize;
        // Ethernet padding is not part of the datagram (a chained frame has
        // none: its window stays).
        pkt.set_len(pkt.meta.l3 as usize + total);
        // A segmentation super-packet leaves as segments: each must fit.
        let size = match pkt.meta.offload.gso_size {
            0 => total,
            mss => crate::offload::segment_len(&pkt, mss).unwrap_or(usize::MAX),
        };
        if size > mtu && df {
            return self.icmp_error(pkt, IcmpError::FragNeeded { mtu: mtu as u16 }, DropReason::FragNeeded, cx);
        }
        decrement_ttl(pkt.l3_mut());
        pkt.meta.route(nh.port, nh.gateway.unwrap_or(dst));
        self.counters.forwarded += 1;
        Some(pkt)
    }

    /// Answers `pkt` with an ICMP error where RFC 1812 allows it, routed
    /// back to the source; the original counts as dropped for `reason`
    /// either way.
    fn icmp_error(
        &mut self,
        pkt: Packet,
        kind: IcmpError,
        reason: DropReason,
        cx: &mut StageContext<'_>,
    ) -> Option<Packet> {
        cx.count_drop(pkt.meta.in_port, reason);
        self.answer(pkt, kind, cx)
    }

    /// Turns `pkt` into the ICMP error `kind` back to its source, routed,
    /// where RFC 1812 allows one (the drop is counted by the caller).
    fn answer(&mut self, mut pkt: Packet, kind: IcmpError, cx: &mut StageContext<'_>) -> Option<Packet> {
        let in_port = pkt.meta.in_port;
        let src = self.ports.get(in_port as usize).and_then(|p| p.address).map(|a| a.addr());
        let allowed = src.is_some() && may_send_error(pkt.data(), pkt.meta.l3 as usize, &self.broadcasts);
        if !allowed {
            cx.pool.free(pkt);
            return None;
        }
        let offender = Ipv4Packet::new_unchecked(pkt.l3()).src_addr();
        if !self.icmp_limit.take(offender, cx.now) {
            self.counters.icmp_rate_limited += 1;
            cx.pool.free(pkt);
            return None;
        }
        self.ident = self.ident.wrapping_add(1);
        // The error quotes the head of the packet; the rest goes back.
        cx.pool.release_tail(&mut pkt);
        let vrf = pkt.meta.vrf();
        let routed = build_error(&mut pkt, kind, src.unwrap(), self.ident)
            .and_then(|dst| Some((dst, self.lookup_in(vrf, dst)?)));
        let Some((dst, nh)) = routed else {
            cx.pool.free(pkt);
            return None;
        };
        self.counters.icmp_errors += 1;
        pkt.meta.route(nh.port, nh.gateway.unwrap_or(dst));
        pkt.meta.local = false;
        Some(pkt)
    }
}

/// The index of `nh` in `next_hops`, added if new (routes share next
/// hops); `seen` maps next hops to indices, so a million routes through
/// as many gateways cost n log n, not n².
fn intern<T: Ord + Copy>(next_hops: &mut Vec<T>, seen: &mut alloc::collections::BTreeMap<T, usize>, nh: T) -> usize {
    *seen.entry(nh).or_insert_with(|| {
        next_hops.push(nh);
        next_hops.len() - 1
    })
}

/// TTL − 1 with the header checksum updated per RFC 1624 (the 16-bit word
/// holding TTL and protocol changes).
#[inline]
pub fn decrement_ttl(ip: &mut [u8]) {
    set_ttl(ip, ip[8] - 1);
}

/// Sets the TTL with the header checksum updated per RFC 1624.
#[inline]
fn set_ttl(ip: &mut [u8], ttl: u8) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = ttl;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = crate::csum::update16(crate::csum::get(ip, 10), old, new);
    crate::csum::set(ip, 10, hc);
}

impl Stage for Router {
    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        // Packets for the appliance itself, and packets an earlier stage
        // already routed, are not the router's business.
        for_each_packet(batch, |pkt| {
            if pkt.meta.local || pkt.meta.out_port.is_some() {
                Some(pkt)
            } else if crate::ipv6::is_ipv6(pkt.l3()) {
                self.route6(pkt, cx)
            } else {
                self.route(pkt, cx)
            }
        });
    }

    fn answers_unreachable(&self) -> bool {
        true
    }

    fn ipv6(&self) -> crate::stage::Ipv6Handling {
        crate::stage::Ipv6Handling::Process
    }

    /// ICMP host unreachable (RFC 1812 §4.3.3.1 / §5.2.7.1) for a packet
    /// whose next hop never answered ARP.
    fn unreachable(&mut self, pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        // The packet was routed already: undo the TTL decrement so the
        // quote shows what the source sent.
        let mut pkt = pkt;
        if crate::ipv6::is_ipv6(pkt.l3()) {
            let ip = pkt.l3_mut();
            ip[7] = ip[7].wrapping_add(1);
            return self.answer6(pkt, crate::ipv6::Icmp6Error::AddressUnreachable, cx);
        }
        let ip = pkt.l3_mut();
        set_ttl(ip, ip[8].wrapping_add(1));
        self.answer(pkt, IcmpError::HostUnreachable, cx)
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        let c = &self.counters;
        sink.counter("forwarded", "packets routed", c.forwarded);
        sink.counter("icmp_errors", "ICMP errors sent", c.icmp_errors);
        sink.counter("icmp_rate_limited", "ICMP errors not sent: the source's rate was used up", c.icmp_rate_limited);
        sink.counter("forwarded6", "IPv6 packets routed", c.forwarded6);
        sink.counter("icmp6_errors", "ICMPv6 errors sent", c.icmp6_errors);
        sink.gauge(
            "routes",
            "prefixes in the route tables (every VRF)",
            (self.lpm.len() + self.vrfs.iter().map(|l| l.len()).sum::<usize>()) as u64,
        );
        sink.gauge("routes6", "prefixes in the IPv6 route table", self.lpm6.len() as u64);
        sink.gauge(
            "route_table_bytes",
            "bytes of the route tables",
            (self.lpm.memory() + self.vrfs.iter().map(|l| l.memory()).sum::<usize>()) as u64,
        );
    }
}

/// The router's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "router", statements: &["router"], parse: config::parse, build };

fn build(c: &dyn StageConfig, cx: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<RouterConfig>().expect("the router builds from its own settings");
    Box::new(Router::from_config(c, cx.config, cx.macs, cx.seed))
}

#[cfg(test)]
mod tests;
