//! The IPv4 router stage (RFC 1812 as the guide).
//!
//! For each packet: martian checks, TTL, longest-prefix match, egress MTU
//! (fragment, or ICMP fragmentation-needed when DF is set), TTL decrement
//! with an incremental checksum update (RFC 1624), then the next hop's MAC
//! from the neighbour cache — or a short wait for ARP. Errors are answered
//! with rate-limited ICMP built in the offending packet's own buffer.

pub mod icmp;
pub mod lpm;
pub mod neighbor;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Packet,
};

use crate::config::Config;
use crate::counters::DropReason;
use crate::packet::{Batch, Packet, PacketPool, PortId};
use crate::stage::{Stage, StageContext};
use icmp::{build_error, may_send_error, IcmpError, TokenBucket};
use lpm::{Lpm, NextHopId};
use neighbor::{Enqueued, Lookup, NeighborCache, TimerAction};

const ETH: usize = 14;
/// Neighbour-cache slots whose timers each loop turn advances.
const SWEEP_PER_POLL: usize = 8;

/// What the router knows of a port.
#[derive(Clone, Debug)]
pub struct RouterPort {
    pub mac: [u8; 6],
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub port: PortId,
    /// `None`: the destination is on the port's link.
    pub gateway: Option<Ipv4Addr>,
}

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    pub arp_timeout_us: u64,
    pub neighbors: usize,
}

#[derive(Clone, Debug, Default)]
pub struct RouterCounters {
    pub forwarded: u64,
    pub icmp_errors: u64,
    pub icmp_rate_limited: u64,
    pub fragments: u64,
    pub arp_requests: u64,
}

pub struct Router {
    lpm: Lpm,
    next_hops: Vec<NextHop>,
    ports: Vec<RouterPort>,
    /// Directed broadcast addresses of our subnets.
    broadcasts: Vec<Ipv4Addr>,
    neighbors: NeighborCache,
    icmp_bucket: TokenBucket,
    ident: u16,
    pub counters: RouterCounters,
}

impl Router {
    /// Builds the router of a config: connected routes from port prefixes,
    /// then the static routes.
    pub fn from_config(config: &Config, macs: &[[u8; 6]]) -> Router {
        let ports: Vec<RouterPort> = config
            .ports
            .iter()
            .zip(macs)
            .map(|(p, mac)| RouterPort { mac: *mac, address: p.address, mtu: p.mtu })
            .collect();
        let mut routes: Vec<(Ipv4Net, NextHop)> = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            if let Some(a) = p.address {
                routes.push((a.trunc(), NextHop { port: i as PortId, gateway: None }));
            }
        }
        for r in &config.routes {
            routes.push((r.prefix, NextHop { port: r.port as PortId, gateway: r.via }));
        }
        let settings = RouterSettings {
            icmp_rate: config.router.icmp_rate,
            icmp_burst: config.router.icmp_burst,
            arp_timeout_us: config.router.arp_timeout as u64 * 1_000_000,
            neighbors: config.router.neighbors,
        };
        Router::new(ports, &routes, &settings)
    }

    /// Builds a router from ports and routes (later routes win on equal prefixes).
    pub fn new(ports: Vec<RouterPort>, routes: &[(Ipv4Net, NextHop)], settings: &RouterSettings) -> Router {
        let mut lpm = Lpm::new();
        let mut next_hops: Vec<NextHop> = Vec::new();
        for (prefix, nh) in routes {
            let id = match next_hops.iter().position(|n| n == nh) {
                Some(i) => i,
                None => {
                    next_hops.push(*nh);
                    next_hops.len() - 1
                }
            };
            lpm.insert(*prefix, id as NextHopId);
        }
        let broadcasts =
            ports.iter().filter_map(|p| p.address).filter(|a| a.prefix_len() < 31).map(|a| a.broadcast()).collect();
        Router {
            lpm,
            next_hops,
            ports,
            broadcasts,
            neighbors: NeighborCache::new(settings.neighbors, settings.arp_timeout_us),
            icmp_bucket: TokenBucket::new(settings.icmp_rate, settings.icmp_burst),
            ident: 0,
            counters: RouterCounters::default(),
        }
    }

    /// The next hop for `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        self.lpm.lookup(dst).map(|id| self.next_hops[id as usize])
    }

    pub fn route_count(&self) -> usize {
        self.lpm.len()
    }

    /// Routes one packet (Ethernet + IPv4 whose header the ingress checked).
    pub fn route(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) {
        let (ttl, src, dst, total, df) = {
            let ip = Ipv4Packet::new_unchecked(&pkt.data()[ETH..]);
            (ip.hop_limit(), ip.src_addr(), ip.dst_addr(), ip.total_len() as usize, ip.dont_frag())
        };
        if !icmp::is_unique_host(src) {
            return cx.drop(pkt, DropReason::MartianSource);
        }
        if !icmp::is_unique_host(dst) || self.broadcasts.contains(&dst) {
            return cx.drop(pkt, DropReason::MartianDestination);
        }
        if ttl <= 1 {
            return self.icmp_error(pkt, IcmpError::TtlExceeded, DropReason::TtlExpired, cx);
        }
        let Some(nh) = self.lookup(dst) else {
            return self.icmp_error(pkt, IcmpError::NetUnreachable, DropReason::NoRoute, cx);
        };
        let mtu = self.ports[nh.port as usize].mtu as usize;
        // Ethernet padding is not part of the datagram.
        pkt.set_len(ETH + total);
        if total > mtu && df {
            return self.icmp_error(pkt, IcmpError::FragNeeded { mtu: mtu as u16 }, DropReason::FragNeeded, cx);
        }
        decrement_ttl(&mut pkt.data_mut()[ETH..]);
        let hop = nh.gateway.unwrap_or(dst);
        if total > mtu {
            self.fragment(pkt, nh.port, hop, mtu, cx);
        } else {
            self.counters.forwarded += 1;
            self.transmit(pkt, nh.port, hop, cx);
        }
    }

    /// Sends a routed IPv4 packet to `hop` on `port`, resolving its MAC.
    fn transmit(&mut self, mut pkt: Packet, port: PortId, hop: Ipv4Addr, cx: &mut StageContext<'_>) {
        match self.neighbors.lookup(port, hop, cx.now) {
            Lookup::Known { mac, refresh } => {
                self.write_eth(&mut pkt, port, mac);
                cx.forward(port, pkt);
                if refresh {
                    self.arp_request(port, hop, Some(mac), cx);
                }
            }
            Lookup::Unknown => match self.neighbors.enqueue(port, hop, pkt, cx.now) {
                Enqueued::Held { request } => {
                    if request {
                        self.arp_request(port, hop, None, cx);
                    }
                }
                Enqueued::QueueFull(p) => cx.drop(p, DropReason::NeighborQueueFull),
                Enqueued::TableFull(p) => cx.drop(p, DropReason::NeighborTableFull),
                Enqueued::Unreachable(p) => {
                    self.icmp_error(p, IcmpError::HostUnreachable, DropReason::NeighborUnreachable, cx)
                }
            },
        }
    }

    fn write_eth(&self, pkt: &mut Packet, port: PortId, dst: [u8; 6]) {
        let d = pkt.data_mut();
        d[0..6].copy_from_slice(&dst);
        d[6..12].copy_from_slice(&self.ports[port as usize].mac);
        d[12..14].copy_from_slice(&[0x08, 0x00]);
    }

    /// Answers `pkt` with an ICMP error where RFC 1812 allows it; the
    /// original counts as dropped for `reason` either way.
    fn icmp_error(&mut self, mut pkt: Packet, kind: IcmpError, reason: DropReason, cx: &mut StageContext<'_>) {
        let in_port = pkt.meta.in_port;
        cx.count_drop(in_port, reason);
        let src = self.ports.get(in_port as usize).and_then(|p| p.address).map(|a| a.addr());
        let allowed = src.is_some() && may_send_error(pkt.data(), &self.broadcasts);
        if !allowed {
            return cx.pool.free(pkt);
        }
        if !self.icmp_bucket.take(cx.now) {
            self.counters.icmp_rate_limited += 1;
            return cx.pool.free(pkt);
        }
        self.ident = self.ident.wrapping_add(1);
        let Some(dst) = build_error(&mut pkt, kind, src.unwrap(), self.ident) else {
            return cx.pool.free(pkt);
        };
        let Some(nh) = self.lookup(dst) else {
            return cx.pool.free(pkt);
        };
        if pkt.len() - ETH > self.ports[nh.port as usize].mtu as usize {
            return cx.pool.free(pkt);
        }
        self.counters.icmp_errors += 1;
        self.transmit(pkt, nh.port, nh.gateway.unwrap_or(dst), cx);
    }

    /// Splits an IPv4 datagram (DF clear, TTL already decremented) into
    /// fragments that fit `mtu` (RFC 791 §3.2): offsets in 8-byte units,
    /// all options in the first fragment, only "copied" options after.
    fn fragment(&mut self, pkt: Packet, port: PortId, hop: Ipv4Addr, mtu: usize, cx: &mut StageContext<'_>) {
        let in_port = pkt.meta.in_port;
        let frame = pkt.data();
        let ip = &frame[ETH..];
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let (base_offset, more) = {
            let p = Ipv4Packet::new_unchecked(ip);
            (p.frag_offset() as usize, p.more_frags())
        };
        let mut later_opts = [0u8; 40];
        let later_len = copied_options(&ip[20..ihl], &mut later_opts);
        let payload = &ip[ihl..];
        let mut off = 0;
        while off < payload.len() {
            let hl = if off == 0 { ihl } else { 20 + later_len };
            let room = (mtu - hl) / 8 * 8;
            let n = room.min(payload.len() - off);
            let last = off + n == payload.len();
            let Some(mut f) = cx.alloc() else {
                cx.count_drop(in_port, DropReason::FragNoBuffer);
                break;
            };
            f.meta = pkt.meta;
            f.set_len(ETH + hl + n);
            let d = f.data_mut();
            d[..ETH + 20].copy_from_slice(&frame[..ETH + 20]);
            if off == 0 {
                d[ETH + 20..ETH + hl].copy_from_slice(&ip[20..ihl]);
            } else {
                d[ETH + 20..ETH + hl].copy_from_slice(&later_opts[..later_len]);
            }
            d[ETH + hl..].copy_from_slice(&payload[off..off + n]);
            let mut fip = Ipv4Packet::new_unchecked(&mut d[ETH..]);
            fip.set_header_len(hl as u8);
            fip.set_total_len((hl + n) as u16);
            fip.set_frag_offset((base_offset + off) as u16);
            fip.set_more_frags(!last || more);
            fip.fill_checksum();
            self.counters.fragments += 1;
            self.transmit(f, port, hop, cx);
            off += n;
        }
        self.counters.forwarded += 1;
        cx.pool.free(pkt);
    }

    /// Sends an ARP request for `ip` out of `port` (unicast to `known` when
    /// refreshing an entry, else broadcast).
    fn arp_request(&mut self, port: PortId, ip: Ipv4Addr, known: Option<[u8; 6]>, cx: &mut StageContext<'_>) {
        let Some(mut pkt) = cx.alloc() else { return };
        let p = &self.ports[port as usize];
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(p.mac),
            source_protocol_addr: p.address.map_or(Ipv4Addr::UNSPECIFIED, |a| a.addr()),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(p.mac),
            dst_addr: known.map_or(EthernetAddress::BROADCAST, EthernetAddress),
            ethertype: EthernetProtocol::Arp,
        };
        pkt.set_len(eth.buffer_len() + arp.buffer_len());
        let mut frame = EthernetFrame::new_unchecked(pkt.data_mut());
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        pkt.meta.in_port = port;
        self.counters.arp_requests += 1;
        cx.forward(port, pkt);
    }
}

/// TTL − 1 with the header checksum updated per RFC 1624 eqn. 3:
/// HC' = ~(~HC + ~m + m'), m being the 16-bit word holding TTL and protocol.
#[inline]
pub fn decrement_ttl(ip: &mut [u8]) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = u16::from_be_bytes([ip[10], ip[11]]);
    let mut sum = (!hc) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Copies the options with the "copied" flag into `out`, padded to a
/// multiple of 4 with end-of-options; returns the padded length.
fn copied_options(opts: &[u8], out: &mut [u8; 40]) -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < opts.len() {
        let kind = opts[i];
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind & 0x80 != 0 {
                    out[n..n + len].copy_from_slice(&opts[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let padded = n.next_multiple_of(4);
    out[n..padded].fill(0);
    padded
}

impl Stage for Router {
    fn name(&self) -> &'static str {
        "router"
    }

    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        for pkt in batch.drain(..) {
            self.route(pkt, cx);
        }
    }

    fn observe_arp(&mut self, in_port: PortId, arp: &ArpRepr, cx: &mut StageContext<'_>) {
        let ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } = *arp
        else {
            return;
        };
        if source_protocol_addr.is_unspecified() || !source_hardware_addr.is_unicast() {
            return;
        }
        let mine = self.ports.get(in_port as usize).and_then(|p| p.address).map(|a| a.addr());
        // RFC 826: add the sender if the packet is for us; otherwise only
        // update what we already know.
        let create = Some(target_protocol_addr) == mine;
        let waiting = self.neighbors.learn(in_port, source_protocol_addr, source_hardware_addr.0, cx.now, create);
        for mut p in waiting {
            self.write_eth(&mut p, in_port, source_hardware_addr.0);
            cx.forward(in_port, p);
        }
    }

    fn poll(&mut self, cx: &mut StageContext<'_>) {
        let mut actions: heapless::Vec<TimerAction, { SWEEP_PER_POLL * (neighbor::QUEUE + 1) }> = heapless::Vec::new();
        self.neighbors.tick(cx.now, SWEEP_PER_POLL, |a| {
            let _ = actions.push(a);
        });
        for a in actions {
            match a {
                TimerAction::Request { port, ip } => self.arp_request(port, ip, None, cx),
                TimerAction::GiveUp(p) => {
                    self.icmp_error(p, IcmpError::HostUnreachable, DropReason::NeighborUnreachable, cx)
                }
            }
        }
    }

    fn write_stats(&self, out: &mut String) {
        let c = &self.counters;
        let _ = write!(
            out,
            " forwarded={} icmp_errors={} icmp_rate_limited={} fragments={} arp_requests={} routes={} route_table_bytes={} neighbors={}",
            c.forwarded,
            c.icmp_errors,
            c.icmp_rate_limited,
            c.fragments,
            c.arp_requests,
            self.lpm.len(),
            self.lpm.memory(),
            self.neighbors.len()
        );
    }

    fn drain(&mut self, pool: &mut PacketPool) {
        self.neighbors.drain(|p| pool.free(p));
    }
}

#[cfg(test)]
mod tests;
