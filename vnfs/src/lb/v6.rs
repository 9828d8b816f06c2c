//! IPv6 services: VIPs, backends and clients over IPv6, through the same
//! flow table, Maglev tables, timers and health checks as IPv4.
//!
//! The flow table keys endpoints by IPv4 address. An IPv6 VIP, backend or
//! full-NAT source gets a fixed stand-in from 254.0.0.0/8 ([`Names`], kept
//! across reloads, so an unchanged backend keeps its flows and health); an
//! IPv6 client one from 240.0.0.0/7 ([`crate::standin::Hosts`]), claimed by
//! each flow it makes and free again with its last: a packet that makes
//! no flow takes none, and one /64 holds at most `lb clients-per-64`.
//! Only the tables see stand-ins: packets
//! are rewritten with the real addresses, Maglev hashes the real 5-tuple
//! and member addresses (every instance with the same config picks the
//! same backend), and views show the real addresses.

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Key, Lb, LbConfig};
use crate::counters::DropReason;
use crate::csum;
use crate::flow::{Endpoint, TCP, UDP};
use crate::ipv6::{self, HLEN};
use crate::packet::Packet;
use crate::stage::StageContext;
use crate::table::hash_words;
use crate::Micros;

/// Fixed stand-ins: 254.0.0.0 + n.
const FIXED: u32 = 0xfe00_0000;
/// The client address of a key from an IPv6 client that holds no
/// stand-in yet (it has no flow): [`claim_client`] gives it one if a flow
/// is made.
pub(super) const PENDING: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// Stand-ins of the configured IPv6 addresses.
#[derive(Default)]
pub struct Names {
    of: BTreeMap<Ipv6Addr, Ipv4Addr>,
    back: BTreeMap<Ipv4Addr, Ipv6Addr>,
    next: u32,
}

impl Names {
    /// The table's address for `a`: itself for IPv4, its stand-in (given
    /// one now if new) for IPv6.
    pub fn v4_of(&mut self, a: IpAddr) -> Ipv4Addr {
        match a {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => {
                if let Some(s) = self.of.get(&a) {
                    return *s;
                }
                // Bounded: `keep_only` leaves at most the config's addresses.
                let s = Ipv4Addr::from(FIXED + (self.next & 0x00ff_ffff));
                self.next = self.next.wrapping_add(1);
                self.of.insert(a, s);
                self.back.insert(s, a);
                s
            }
        }
    }

    pub fn real(&self, s: Ipv4Addr) -> Option<Ipv6Addr> {
        self.back.get(&s).copied()
    }

    pub fn find(&self, a: &Ipv6Addr) -> Option<Ipv4Addr> {
        self.of.get(a).copied()
    }

    /// Forgets the addresses `config` no longer has.
    pub fn keep_only(&mut self, config: &LbConfig) {
        let mut used = alloc::collections::BTreeSet::new();
        for s in &config.services {
            for a in core::iter::once(s.vip).chain(core::iter::once(s.snat)).chain(s.backends.iter().map(|b| b.addr)) {
                if let IpAddr::V6(a) = a {
                    used.insert(a);
                }
            }
        }
        self.of.retain(|a, _| used.contains(a));
        let of = &self.of;
        self.back.retain(|_, a| of.contains_key(a));
    }
}

/// The flow key of a TCP or UDP IPv6 packet (no extension headers):
/// a client to a VIP (its stand-in, or [`PENDING`] if it has none), or a
/// backend's reply (to the full-NAT source, or to a client known here).
pub(super) fn key(lb: &mut Lb, pkt: &Packet, _now: Micros) -> Option<Key> {
    let ip = pkt.l3();
    let proto = ip[6];
    let total = HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let l4 = ip.get(HLEN..total)?;
    if !(proto == TCP && l4.len() >= 20 || proto == UDP && l4.len() >= 8) {
        return None;
    }
    let (src, dst) = (ipv6::src(ip), ipv6::dst(ip));
    let (sport, dport) = (csum::get(l4, 0), csum::get(l4, 2));
    let flags = if proto == TCP { l4[13] } else { 0 };
    let (s, d) = match lb.names.find(&dst) {
        // To a VIP (or the full-NAT source: a reply).
        Some(d) => match lb.names.find(&src) {
            Some(s) => (s, d),
            None if lb.service_for(proto, d, dport).is_some() => (lb.clients.find(&src).unwrap_or(PENDING), d),
            None => return None,
        },
        // A DNAT reply from a backend to a client.
        None => (lb.names.find(&src)?, lb.clients.find(&dst)?),
    };
    Some(Key {
        proto,
        src: Endpoint::new(s, sport),
        dst: Endpoint::new(d, dport),
        flags,
        l4: HLEN as u16,
        total: total as u16,
        v6: true,
    })
}

impl Lb {
    /// The real address behind a table address (IPv4 as is).
    pub(super) fn real_of(&self, a: Ipv4Addr) -> IpAddr {
        self.names.real(a).or_else(|| self.clients.host(a)).map_or(IpAddr::V4(a), IpAddr::V6)
    }
}

/// The client endpoint of a packet to a VIP, and its flow hash if still
/// good: a client that was [`PENDING`] when the burst was keyed may have
/// got its stand-in from an earlier packet of the burst.
pub(super) fn client_of(lb: &Lb, pkt: &Packet, k: &Key, h: Option<u64>) -> (Endpoint, Option<u64>) {
    if !k.v6 || k.src.addr != PENDING {
        return (k.src, h);
    }
    match lb.clients.find(&ipv6::src(pkt.l3())) {
        Some(s) => (Endpoint::new(s, k.src.port), None),
        None => (k.src, h),
    }
}

/// A new flow's claim on its IPv6 client's stand-in (given now if the
/// client has none); the flow's end releases it ([`Lb::remove`]). A
/// configured address (a backend as a client) keeps its fixed one.
pub(super) fn claim_client(lb: &mut Lb, pkt: &Packet, client: Endpoint) -> Result<Endpoint, DropReason> {
    if lb.names.real(client.addr).is_some() {
        return Ok(client);
    }
    match lb.clients.claim(ipv6::src(pkt.l3())) {
        Ok(s) => Ok(Endpoint::new(s, client.port)),
        Err(crate::standin::Refused::Per64) => Err(DropReason::LbClientsPer64),
        Err(crate::standin::Refused::Full) => {
            lb.counters.table_full += 1;
            Err(DropReason::LbFlowTableFull)
        }
    }
}

/// Writes the real addresses behind `dst` and `src` into the IPv6 packet,
/// with the ports; the transport checksum follows (the pseudo-header).
pub(super) fn rewrite(lb: &Lb, pkt: &mut Packet, k: &Key, dst: Option<Endpoint>, src: Option<Endpoint>) {
    let real = |e: &Endpoint| match lb.real_of(e.addr) {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    };
    let total = k.total as usize;
    let field = if k.proto == TCP { 16 } else { 6 };
    let ip = &mut pkt.l3_mut()[..total];
    for (e, at, port_at) in [(dst, 24, 2), (src, 8, 0)] {
        let Some(e) = e else { continue };
        let Some(a) = real(&e) else { continue };
        let old: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
        ip[at..at + 16].copy_from_slice(&a.octets());
        let (l3, l4) = ip.split_at_mut(HLEN);
        let old_port = csum::get(l4, port_at);
        csum::set(l4, port_at, e.port);
        let zero_udp = k.proto == UDP && csum::get(l4, field) == 0;
        if !zero_udp {
            let c = csum::update16(csum::replace(csum::get(l4, field), &old, &l3[at..at + 16]), old_port, e.port);
            csum::set(l4, field, if k.proto == UDP && c == 0 { 0xffff } else { c });
        }
    }
}

/// The Maglev flow hash of an IPv6 packet: its real 5-tuple.
pub(super) fn maglev_hash(pkt: &Packet, k: &Key) -> u64 {
    let ip = pkt.l3();
    let (s, d) = (u128::from(ipv6::src(ip)), u128::from(ipv6::dst(ip)));
    hash_words(
        0x5eed,
        &[k.proto as u64, (s >> 64) as u64, s as u64, k.src.port as u64, (d >> 64) as u64, d as u64, k.dst.port as u64],
    )
}

/// No backend up: a TCP reset, or ICMPv6 port unreachable, from the VIP.
pub(super) fn refuse(pkt: Packet, vip: Ipv6Addr, tcp: bool, cx: &mut StageContext<'_>) -> Option<Packet> {
    ipv6::refusal(pkt, tcp, ipv6::Icmp6Error::PortUnreachable, Some(vip), cx.pool)
}

/// `ADDR:PORT`, `[ADDR6]:PORT`.
pub fn show_ep(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => alloc::format!("{a}:{port}"),
        IpAddr::V6(a) => alloc::format!("[{a}]:{port}"),
    }
}

/// The Host header of a health check.
pub fn host_header(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => alloc::format!("{a}"),
        IpAddr::V6(a) => alloc::format!("[{a}]"),
    }
}

#[cfg(test)]
#[path = "v6_tests.rs"]
mod tests;
