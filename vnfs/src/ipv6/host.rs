//! The appliance's own IPv6 on one port: its addresses and their
//! duplicate address detection (RFC 4862 §5.4), neighbour discovery for
//! them (RFC 4861: answers solicitations, hears advertisements), echo
//! (RFC 4443 §4) and router advertisements (RFC 4861 §6.2) when the
//! config asks for them.
//!
//! Everything here is built in the received packet's buffer or in one
//! fresh buffer, and queued on the port. A reply goes back to the MAC the
//! request came from on the port it came in on (the appliance answers its
//! neighbours; it does not route its own replies).

use alloc::vec::Vec;
use core::net::Ipv6Addr;

use ipnet::Ipv6Net;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration;
use smoltcp::wire::{
    Icmpv6Packet, Icmpv6Repr, NdiscNeighborFlags, NdiscOption, NdiscOptionRepr, NdiscPrefixInfoFlags,
    NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
};

use super::{is_solicited_node, link_local, multicast_mac, solicited_node, write_header, ALL_NODES, HLEN, ICMPV6};
use crate::config::RaConfig;
use crate::counters::{DropReason, PortCounters};
use crate::hoststack::TxQueue;
use crate::neighbor::Heard;
use crate::packet::{Packet, PacketPool};
use crate::wire::ETH_HLEN;
use crate::Micros;

/// RFC 4862 RetransTimer × DupAddrDetectTransmits (1).
pub const DAD_TIME: Micros = 1_000_000;
/// RFC 4861 §10: the first advertisements come faster.
const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
const MAX_INITIAL_RTR_ADVERT_INTERVAL: Micros = 16_000_000;
const MIN_DELAY_BETWEEN_RAS: Micros = 3_000_000;
/// Prefix lifetimes advertised (RFC 4861 §6.2.1 defaults).
const VALID_LIFETIME: u64 = 2_592_000;
const PREFERRED_LIFETIME: u64 = 604_800;

crate::counters! {
    /// Neighbour discovery on one port.
    pub struct Nd6Counters {
        ns_received: counter "neighbour solicitations received",
        na_sent: counter "neighbour advertisements sent",
        na_received: counter "neighbour advertisements received",
        ns_sent: counter "neighbour solicitations sent (address resolution, probes, DAD)",
        rs_received: counter "router solicitations received",
        ra_sent: counter "router advertisements sent",
        echo_replies: counter "ICMPv6 echo replies sent",
        dad_duplicates: counter "own addresses found in use by another node (not used)",
    }
}

/// The life of one of the port's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrState {
    /// Being checked: not used until `until`.
    Tentative {
        until: Micros,
    },
    Preferred,
    /// Another node has it: never used.
    Duplicate,
}

#[derive(Clone, Debug)]
pub struct Addr6 {
    pub net: Ipv6Net,
    pub state: AddrState,
}

struct Ra {
    config: RaConfig,
    mtu: u16,
    next: Micros,
    last: Option<Micros>,
    sent: u32,
    rng: u64,
}

/// What the dataplane learns from a packet for the egress's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learned {
    pub ip: Ipv6Addr,
    pub mac: [u8; 6],
    pub how: Heard,
    /// Whether a new entry may be made (not for an advertisement).
    pub create: bool,
}

/// Who takes a local IPv6 packet (see [`Host6::local_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    /// The port's smoltcp stack (TCP, UDP).
    HostStack,
    /// This module, and a copy to the smoltcp stack (an advertisement).
    Advert,
    /// This module only.
    Ours,
}

/// Things worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Duplicate(Ipv6Addr),
    Preferred(Ipv6Addr),
}

pub struct Host6 {
    pub mac: [u8; 6],
    /// Link-local first, then the config's.
    pub addrs: Vec<Addr6>,
    /// The stages' addresses (IPv6 VIPs), answered for on every port:
    /// neighbour solicitations only (their traffic is the pipeline's).
    pub also: Vec<Ipv6Addr>,
    ra: Option<Ra>,
    announced: bool,
    pub counters: Nd6Counters,
    pub notes: heapless::Deque<Note, 8>,
}

impl Host6 {
    /// The port's IPv6: its link-local address and `nets`, all tentative
    /// until `now` + [`DAD_TIME`].
    pub fn new(mac: [u8; 6], nets: &[Ipv6Net], ra: Option<&RaConfig>, mtu: u16, now: Micros, seed: u64) -> Self {
        let tentative = AddrState::Tentative { until: now + DAD_TIME };
        // Link-local first, always (`addrs[0]`), then the config's.
        let ll = Ipv6Net::new(link_local(mac), 64).expect("/64 is valid");
        let addrs =
            core::iter::once(ll).chain(nets.iter().copied()).map(|net| Addr6 { net, state: tentative }).collect();
        let ra = ra.map(|c| Ra { config: c.clone(), mtu, next: now + DAD_TIME, last: None, sent: 0, rng: seed | 1 });
        Host6 {
            mac,
            addrs,
            also: Vec::new(),
            ra,
            announced: false,
            counters: Nd6Counters::default(),
            notes: heapless::Deque::new(),
        }
    }

    /// Takes a reloaded config's `ra` (timers kept when it did not change).
    pub fn set_ra(&mut self, ra: Option<&RaConfig>, mtu: u16, now: Micros) {
        match (&mut self.ra, ra) {
            (Some(old), Some(new)) if old.config == *new && old.mtu == mtu => {}
            (_, Some(new)) => {
                let rng = self.ra.as_ref().map_or(now | 1, |r| r.rng);
                self.ra = Some(Ra { config: new.clone(), mtu, next: now, last: None, sent: 0, rng })
            }
            (_, None) => self.ra = None,
        }
    }

    pub fn link_local(&self) -> Ipv6Addr {
        self.addrs[0].net.addr()
    }

    /// Whether `a` is one of the port's addresses, and in which state.
    pub fn state_of(&self, a: &Ipv6Addr) -> Option<AddrState> {
        self.addrs.iter().find(|x| x.net.addr() == *a).map(|x| x.state)
    }

    /// The port's addresses in use.
    pub fn preferred(&self) -> impl Iterator<Item = &Ipv6Net> + Clone + '_ {
        self.addrs.iter().filter(|a| a.state == AddrState::Preferred).map(|a| &a.net)
    }

    /// The source for a message to `to`: the link-local address for
    /// link-local peers (or when there is no other), else the global
    /// address on `to`'s prefix, else the first global one.
    pub fn source_for(&self, to: &Ipv6Addr) -> Option<Ipv6Addr> {
        super::pick_source(self.preferred(), to)
    }

    /// What the dataplane does with a local IPv6 packet besides giving it
    /// to [`receive`](Self::receive): TCP and UDP to a unicast address in
    /// use go to the port's smoltcp stack instead (management, health
    /// checks; it answers closed ports), and that stack hears a copy of
    /// every neighbour advertisement (its own solicitations' answers).
    pub fn local_kind(&self, ip: &[u8]) -> LocalKind {
        let to = super::dst(ip);
        match super::upper_layer(ip) {
            Ok(u) if u.first && (u.proto == super::TCP || u.proto == super::UDP) => {
                let usable = !to.is_multicast()
                    && !matches!(self.state_of(&to), Some(AddrState::Tentative { .. } | AddrState::Duplicate));
                if usable {
                    LocalKind::HostStack
                } else {
                    LocalKind::Ours
                }
            }
            Ok(u) if u.first && u.proto == ICMPV6 && ip.get(u.offset) == Some(&136) => LocalKind::Advert,
            _ => LocalKind::Ours,
        }
    }

    /// Sends duplicate address detection for every tentative address.
    pub fn start(&mut self, pool: &mut PacketPool, tx: &mut TxQueue) {
        for i in 0..self.addrs.len() {
            if matches!(self.addrs[i].state, AddrState::Tentative { .. }) {
                let target = self.addrs[i].net.addr();
                let group = solicited_node(target);
                if let Some(p) = ndisc(
                    pool,
                    self.mac,
                    multicast_mac(group),
                    Ipv6Addr::UNSPECIFIED,
                    group,
                    &NdiscRepr::NeighborSolicit { target_addr: target, lladdr: None },
                ) {
                    self.counters.ns_sent += 1;
                    queue(tx, pool, p);
                }
            }
        }
    }

    /// Timers: addresses whose detection passed, router advertisements.
    pub fn poll(&mut self, now: Micros, pool: &mut PacketPool, tx: &mut TxQueue) {
        for a in &mut self.addrs {
            if let AddrState::Tentative { until } = a.state {
                if now >= until {
                    a.state = AddrState::Preferred;
                    let _ = self.notes.push_back(Note::Preferred(a.net.addr()));
                }
            }
        }
        if !self.announced && self.addrs.iter().all(|a| !matches!(a.state, AddrState::Tentative { .. })) {
            self.announced = true;
            // Unsolicited advertisements, so neighbours learn the MAC (RFC 4861 §7.2.6).
            for a in self.addrs.iter().filter(|a| a.state == AddrState::Preferred) {
                let na = NdiscRepr::NeighborAdvert {
                    flags: NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE,
                    target_addr: a.net.addr(),
                    lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)),
                };
                if let Some(p) = ndisc(pool, self.mac, multicast_mac(ALL_NODES), a.net.addr(), ALL_NODES, &na) {
                    self.counters.na_sent += 1;
                    queue(tx, pool, p);
                }
            }
        }
        let ll_ok = self.addrs[0].state == AddrState::Preferred;
        let Some(ra) = self.ra.as_mut() else { return };
        if !ll_ok || now < ra.next {
            return;
        }
        let frame = router_advert(pool, self.mac, self.addrs[0].net.addr(), ra);
        ra.sent += 1;
        ra.last = Some(now);
        // The next one at a random time in [interval/3, interval] (RFC 4861 §6.2.4), the first few sooner.
        ra.rng ^= ra.rng << 13;
        ra.rng ^= ra.rng >> 7;
        ra.rng ^= ra.rng << 17;
        let max = ra.config.interval as Micros * 1_000_000;
        let min = max / 3;
        let mut wait = min + ra.rng % (max - min + 1);
        if ra.sent <= MAX_INITIAL_RTR_ADVERTISEMENTS {
            wait = wait.min(MAX_INITIAL_RTR_ADVERT_INTERVAL);
        }
        ra.next = now + wait;
        if let Some(p) = frame {
            self.counters.ra_sent += 1;
            queue(tx, pool, p);
        }
    }

    /// Handles an IPv6 packet for one of the appliance's addresses or a
    /// group the port listens to: neighbour discovery and echo are
    /// answered (in place) on `tx`; anything else is dropped, counted.
    /// Returns what the packet told of a neighbour.
    pub fn receive(
        &mut self,
        mut pkt: Packet,
        now: Micros,
        pool: &mut PacketPool,
        tx: &mut TxQueue,
        counters: &mut PortCounters,
    ) -> Option<Learned> {
        let l3 = pkt.meta.l3 as usize;
        let ip = pkt.l3();
        let (from, to, hops) = (super::src(ip), super::dst(ip), ip[7]);
        let mine = self.state_of(&to);
        if matches!(mine, Some(AddrState::Duplicate)) {
            counters.drop(DropReason::Ipv6LocalUnhandled);
            pool.free(pkt);
            return None;
        }
        let upper = match super::upper_layer(ip) {
            Ok(u) if u.first && u.proto == ICMPV6 => u,
            Ok(_) => {
                counters.drop(DropReason::Ipv6LocalUnhandled);
                pool.free(pkt);
                return None;
            }
            Err(r) => {
                counters.drop(r);
                pool.free(pkt);
                return None;
            }
        };
        let end = (HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize).min(ip.len());
        let icmp = &ip[upper.offset..end];
        let Ok(msg) = Icmpv6Packet::new_checked(icmp) else {
            counters.drop(DropReason::Icmpv6Malformed);
            pool.free(pkt);
            return None;
        };
        if !msg.verify_checksum(&from, &to) {
            counters.drop(DropReason::Icmpv6Malformed);
            pool.free(pkt);
            return None;
        }
        let caps = ChecksumCapabilities::ignored();
        let repr = Icmpv6Repr::parse(&from, &to, &msg, &caps);
        let eth_src: [u8; 6] = pkt.data()[6..12].try_into().expect("an Ethernet header");
        match repr {
            Ok(Icmpv6Repr::EchoRequest { .. }) => {
                let reply_from = match mine {
                    Some(AddrState::Preferred) => to,
                    // Another port's address (ingress found it is the
                    // appliance's): answered from it, as IPv4 is.
                    None if !to.is_multicast() => to,
                    // To a group: answer from this port.
                    None => match self.source_for(&from) {
                        Some(a) => a,
                        None => {
                            counters.drop(DropReason::Ipv6Tentative);
                            pool.free(pkt);
                            return None;
                        }
                    },
                    _ => {
                        counters.drop(DropReason::Ipv6Tentative);
                        pool.free(pkt);
                        return None;
                    }
                };
                let off = upper.offset;
                let len = end;
                pkt.set_len(l3 + len);
                let d = pkt.l3_mut();
                d[7] = 64;
                d[8..24].copy_from_slice(&reply_from.octets());
                d[24..40].copy_from_slice(&from.octets());
                d[off] = 129;
                let mut m = Icmpv6Packet::new_unchecked(&mut d[off..len]);
                m.fill_checksum(&reply_from, &from);
                reply_eth(&mut pkt, self.mac, eth_src);
                self.counters.echo_replies += 1;
                queue(tx, pool, pkt);
                None
            }
            Ok(Icmpv6Repr::Ndisc(nd)) => {
                // RFC 4861 §7.1.1, §6.1.1: hop limit 255, code 0 (checked by smoltcp).
                if hops != 255 {
                    counters.drop(DropReason::NdMalformed);
                    pool.free(pkt);
                    return None;
                }
                let learned = self.ndisc(nd, from, to, eth_src, now, pool, tx, counters);
                pool.free(pkt);
                learned
            }
            Ok(_) => {
                // Echo replies, errors about our own packets: nothing to do.
                counters.drop(DropReason::Ipv6LocalUnhandled);
                pool.free(pkt);
                None
            }
            Err(_) => {
                counters.drop(DropReason::Icmpv6Malformed);
                pool.free(pkt);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ndisc(
        &mut self,
        nd: NdiscRepr<'_>,
        from: Ipv6Addr,
        to: Ipv6Addr,
        eth_src: [u8; 6],
        now: Micros,
        pool: &mut PacketPool,
        tx: &mut TxQueue,
        counters: &mut PortCounters,
    ) -> Option<Learned> {
        let mac_of = |l: Option<RawHardwareAddress>| {
            l.filter(|l| l.len() == 6).map(|l| <[u8; 6]>::try_from(l.as_bytes()).expect("6 bytes"))
        };
        match nd {
            NdiscRepr::NeighborSolicit { target_addr, lladdr } => {
                self.counters.ns_received += 1;
                let dad = from.is_unspecified();
                if target_addr.is_multicast() || dad && (lladdr.is_some() || !is_solicited_node(&to)) {
                    counters.drop(DropReason::NdMalformed);
                    return None;
                }
                match self.state_of(&target_addr) {
                    Some(AddrState::Tentative { .. }) if dad => {
                        // Another node checks the same address: ours is a duplicate (RFC 4862 §5.4.3).
                        self.duplicate(target_addr);
                        return None;
                    }
                    Some(AddrState::Preferred) => {}
                    None if self.also.binary_search(&target_addr).is_ok() => {}
                    _ => return None,
                }
                let learned = mac_of(lladdr).filter(|_| !dad).map(|mac| Learned {
                    ip: from,
                    mac,
                    how: Heard::Unconfirmed,
                    create: true,
                });
                let (dst, dst_mac, flags) = if dad {
                    (ALL_NODES, multicast_mac(ALL_NODES), NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE)
                } else {
                    (
                        from,
                        mac_of(lladdr).unwrap_or(eth_src),
                        NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                    )
                };
                let na = NdiscRepr::NeighborAdvert {
                    flags,
                    target_addr,
                    lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)),
                };
                if let Some(p) = ndisc(pool, self.mac, dst_mac, target_addr, dst, &na) {
                    self.counters.na_sent += 1;
                    queue(tx, pool, p);
                }
                learned
            }
            NdiscRepr::NeighborAdvert { flags, target_addr, lladdr } => {
                self.counters.na_received += 1;
                if target_addr.is_multicast() || to.is_multicast() && flags.contains(NdiscNeighborFlags::SOLICITED) {
                    counters.drop(DropReason::NdMalformed);
                    return None;
                }
                match self.state_of(&target_addr) {
                    Some(AddrState::Tentative { .. }) => {
                        self.duplicate(target_addr);
                        return None;
                    }
                    Some(_) => {
                        // Someone claims an address we use: counted, not believed.
                        self.counters.dad_duplicates += 1;
                        return None;
                    }
                    None => {}
                }
                let how =
                    if flags.contains(NdiscNeighborFlags::SOLICITED) { Heard::Confirmed } else { Heard::Unconfirmed };
                mac_of(lladdr).map(|mac| Learned { ip: target_addr, mac, how, create: false })
            }
            NdiscRepr::RouterSolicit { lladdr } => {
                self.counters.rs_received += 1;
                if from.is_unspecified() && lladdr.is_some() {
                    counters.drop(DropReason::NdMalformed);
                    return None;
                }
                if let Some(ra) = self.ra.as_mut() {
                    // Answered by the next advertisement, brought forward (RFC 4861 §6.2.6).
                    let soonest = ra.last.map_or(now, |l| l + MIN_DELAY_BETWEEN_RAS).max(now);
                    ra.next = ra.next.min(soonest);
                }
                mac_of(lladdr).filter(|_| !from.is_unspecified()).map(|mac| Learned {
                    ip: from,
                    mac,
                    how: Heard::Unconfirmed,
                    create: true,
                })
            }
            // Other routers' advertisements and redirects: a router ignores them.
            _ => None,
        }
    }

    fn duplicate(&mut self, a: Ipv6Addr) {
        if let Some(x) = self.addrs.iter_mut().find(|x| x.net.addr() == a) {
            x.state = AddrState::Duplicate;
        }
        self.counters.dad_duplicates += 1;
        let _ = self.notes.push_back(Note::Duplicate(a));
    }

    /// A neighbour solicitation for `target` (address resolution to the
    /// solicited-node group, or a unicast probe to `known`), from the
    /// port's address for it; `None` if the port has none yet.
    pub fn solicit(&mut self, pool: &mut PacketPool, target: Ipv6Addr, known: Option<[u8; 6]>) -> Option<Packet> {
        let from = self.source_for(&target)?;
        let (dst, mac) = match known {
            Some(m) => (target, m),
            None => (solicited_node(target), multicast_mac(solicited_node(target))),
        };
        let ns =
            NdiscRepr::NeighborSolicit { target_addr: target, lladdr: Some(RawHardwareAddress::from_bytes(&self.mac)) };
        let p = ndisc(pool, self.mac, mac, from, dst, &ns)?;
        self.counters.ns_sent += 1;
        Some(p)
    }
}

fn queue(tx: &mut TxQueue, pool: &mut PacketPool, p: Packet) {
    if let Err(p) = tx.push_back(p) {
        pool.free(p);
    }
}

fn reply_eth(pkt: &mut Packet, mac: [u8; 6], to: [u8; 6]) {
    let d = pkt.data_mut();
    d[0..6].copy_from_slice(&to);
    d[6..12].copy_from_slice(&mac);
    d[12..14].copy_from_slice(&super::ETHERTYPE);
}

/// A fresh frame holding the neighbour discovery message `nd`.
fn ndisc(
    pool: &mut PacketPool,
    mac: [u8; 6],
    eth_dst: [u8; 6],
    from: Ipv6Addr,
    to: Ipv6Addr,
    nd: &NdiscRepr<'_>,
) -> Option<Packet> {
    let repr = Icmpv6Repr::Ndisc(*nd);
    let len = repr.buffer_len();
    let mut p = pool.alloc()?;
    if !p.set_len(ETH_HLEN + HLEN + len) {
        pool.free(p);
        return None;
    }
    let d = p.data_mut();
    d[0..6].copy_from_slice(&eth_dst);
    d[6..12].copy_from_slice(&mac);
    d[12..14].copy_from_slice(&super::ETHERTYPE);
    write_header(&mut d[ETH_HLEN..], len as u16, ICMPV6, 255, from, to);
    repr.emit(
        &from,
        &to,
        &mut Icmpv6Packet::new_unchecked(&mut d[ETH_HLEN + HLEN..]),
        &ChecksumCapabilities::default(),
    );
    Some(p)
}

/// A router advertisement to all nodes: flags, lifetime, the port's MAC
/// and MTU, and one prefix information option per prefix (on-link,
/// autonomous).
fn router_advert(pool: &mut PacketPool, mac: [u8; 6], from: Ipv6Addr, ra: &Ra) -> Option<Packet> {
    let c = &ra.config;
    let mut flags = NdiscRouterFlags::empty();
    if c.managed {
        flags |= NdiscRouterFlags::MANAGED;
    }
    if c.other {
        flags |= NdiscRouterFlags::OTHER;
    }
    let base = NdiscRepr::RouterAdvert {
        hop_limit: 64,
        flags,
        router_lifetime: Duration::from_secs(c.lifetime as u64),
        reachable_time: Duration::from_millis(0),
        retrans_time: Duration::from_millis(0),
        lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
        mtu: Some(ra.mtu as u32),
        prefix_info: None,
    };
    const PREFIX_OPT: usize = 32;
    let extra = c.prefixes.len() * PREFIX_OPT;
    let mut p = ndisc(pool, mac, multicast_mac(ALL_NODES), from, ALL_NODES, &base)?;
    let at = p.len();
    if !p.set_len(at + extra) {
        pool.free(p);
        return None;
    }
    let d = p.data_mut();
    for (i, net) in c.prefixes.iter().enumerate() {
        let info = NdiscPrefixInformation {
            prefix_len: net.prefix_len(),
            flags: if net.prefix_len() == 64 {
                NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF
            } else {
                NdiscPrefixInfoFlags::ON_LINK
            },
            valid_lifetime: Duration::from_secs(VALID_LIFETIME),
            preferred_lifetime: Duration::from_secs(PREFERRED_LIFETIME),
            prefix: net.network(),
        };
        let o = at + i * PREFIX_OPT;
        NdiscOptionRepr::PrefixInformation(info).emit(&mut NdiscOption::new_unchecked(&mut d[o..o + PREFIX_OPT]));
    }
    let payload = (p.len() - ETH_HLEN - HLEN) as u16;
    let d = p.data_mut();
    d[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&payload.to_be_bytes());
    Icmpv6Packet::new_unchecked(&mut d[ETH_HLEN + HLEN..]).fill_checksum(&from, &ALL_NODES);
    Some(p)
}
