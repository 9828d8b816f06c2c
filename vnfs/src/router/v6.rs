//! The router's IPv6 half (RFC 8200 §3, RFC 4443, RFC 8201): scope
//! checks, hop limit, longest-prefix match over /0–/128, packet too big
//! against the egress MTU (routers never fragment IPv6), and ICMPv6
//! errors built in the offending packet's buffer, rate-limited per
//! source, routed back like any packet.

use core::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::Router;
use crate::config::Config;
use crate::counters::DropReason;
use crate::ipv6::{self, Icmp6Error};
use crate::packet::{Packet, PortId};
use crate::stage::StageContext;

/// Where an IPv6 route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop6 {
    pub port: PortId,
    /// Index into the egress's IPv6 gateways, 1-based; 0: on-link.
    pub gateway: u32,
}

impl Router {
    /// The IPv6 routes of `config`: each IPv6 port's prefixes (not the
    /// management port's), then the static routes.
    pub(super) fn install6(&mut self, config: &Config) {
        let gateways: alloc::collections::BTreeMap<Ipv6Addr, u32> =
            config.gateways6().into_iter().enumerate().map(|(i, g)| (g, i as u32 + 1)).collect();
        let mgmt = config.management.as_ref().map(|m| m.port);
        let mut routes: alloc::vec::Vec<(Ipv6Net, NextHop6)> = alloc::vec::Vec::new();
        for (i, p) in config.ports.iter().enumerate().filter(|(i, _)| Some(*i) != mgmt) {
            for a in &p.address6 {
                routes.push((a.trunc(), NextHop6 { port: i as PortId, gateway: 0 }));
            }
        }
        for r in &config.routes6 {
            let gateway = r.via.and_then(|v| gateways.get(&v).copied()).unwrap_or(0);
            routes.push((r.prefix, NextHop6 { port: r.port as PortId, gateway }));
        }
        self.set_routes6(&routes);
    }

    /// Replaces the IPv6 table (later routes win on equal prefixes).
    pub fn set_routes6(&mut self, routes: &[(Ipv6Net, NextHop6)]) {
        self.lpm6 = super::lpm6::Lpm6::new();
        self.next_hops6.clear();
        let mut seen = alloc::collections::BTreeMap::new();
        for (prefix, nh) in routes {
            self.lpm6.insert(*prefix, super::intern(&mut self.next_hops6, &mut seen, *nh) as u32);
        }
    }

    #[inline]
    pub fn lookup6(&self, dst: Ipv6Addr) -> Option<NextHop6> {
        self.lpm6.lookup(dst).map(|id| self.next_hops6[id as usize])
    }

    /// Routes one IPv6 packet whose header the ingress checked.
    pub(super) fn route6(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        let ip = pkt.l3();
        let (src, dst, hops) = (ipv6::src(ip), ipv6::dst(ip), ip[7]);
        let total = ipv6::HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if !ipv6::is_unicast_source(&src) {
            cx.drop(pkt, DropReason::MartianSource);
            return None;
        }
        if dst.is_multicast() || dst.is_unspecified() || dst.is_loopback() || ipv6::is_link_local(&dst) {
            cx.drop(pkt, DropReason::MartianDestination);
            return None;
        }
        if let Err(r) = ipv6::upper_layer(ip) {
            cx.drop(pkt, r);
            return None;
        }
        if ipv6::is_link_local(&src) {
            // A link-local source cannot leave its link (RFC 4291 §2.5.6).
            return self.icmp6_error(pkt, Icmp6Error::BeyondScope, DropReason::MartianSource, cx);
        }
        if hops <= 1 {
            return self.icmp6_error(pkt, Icmp6Error::HopLimit, DropReason::HopLimitExpired, cx);
        }
        let Some(nh) = self.lookup6(dst) else {
            return self.icmp6_error(pkt, Icmp6Error::NoRoute, DropReason::NoRoute, cx);
        };
        let mtu = self.ports[nh.port as usize].mtu as usize;
        // Ethernet padding is not part of the packet.
        pkt.set_len(pkt.meta.l3 as usize + total);
        if total > mtu || pkt.meta.offload.is_gso() {
            let mtu = mtu as u32;
            return self.icmp6_error(pkt, Icmp6Error::PacketTooBig { mtu }, DropReason::PacketTooBig, cx);
        }
        pkt.l3_mut()[7] = hops - 1;
        pkt.meta.route6(nh.port, nh.gateway);
        self.counters.forwarded6 += 1;
        Some(pkt)
    }

    fn icmp6_error(
        &mut self,
        pkt: Packet,
        kind: Icmp6Error,
        reason: DropReason,
        cx: &mut StageContext<'_>,
    ) -> Option<Packet> {
        cx.count_drop(pkt.meta.in_port, reason);
        self.answer6(pkt, kind, cx)
    }

    /// Turns `pkt` into the ICMPv6 error `kind` back to its source, from
    /// the input port's address (link-local to a link-local source),
    /// routed; where RFC 4443 §2.4 allows one and the source's rate does.
    pub(super) fn answer6(&mut self, mut pkt: Packet, kind: Icmp6Error, cx: &mut StageContext<'_>) -> Option<Packet> {
        let in_port = pkt.meta.in_port as usize;
        if !pkt.untag() || !ipv6::may_send_error(pkt.data(), pkt.meta.l3 as usize, kind) {
            cx.pool.free(pkt);
            return None;
        }
        let offender = ipv6::src(pkt.l3());
        let Some(port) = self.ports.get(in_port) else {
            cx.pool.free(pkt);
            return None;
        };
        let Some(from) = ipv6::pick_source(port.address6.iter(), &offender) else {
            cx.pool.free(pkt);
            return None;
        };
        if !self.icmp_limit.take6(offender, cx.now) {
            self.counters.icmp_rate_limited += 1;
            cx.pool.free(pkt);
            return None;
        }
        cx.pool.release_tail(&mut pkt);
        let Some(to) = ipv6::build_error(&mut pkt, kind, from) else {
            cx.pool.free(pkt);
            return None;
        };
        let nh = if ipv6::is_link_local(&to) {
            Some(NextHop6 { port: in_port as PortId, gateway: 0 })
        } else {
            self.lookup6(to)
        };
        let Some(nh) = nh else {
            cx.pool.free(pkt);
            return None;
        };
        self.counters.icmp6_errors += 1;
        pkt.meta.route6(nh.port, nh.gateway);
        Some(pkt)
    }
}
