//! VXLAN (RFC 7348) and Geneve (RFC 8926) tunnel ports.
//!
//! A tunnel is a port like any other (addresses, pipeline, counters, ARP,
//! host stack): what it receives is the inner Ethernet frame of a UDP
//! packet that reached one of the appliance's addresses on its `local`
//! address and UDP port with its VNI, from one of its remotes; what it
//! sends is wrapped in outer Ethernet/IPv4/UDP/VXLAN-or-Geneve headers and
//! routed to a remote through the underlay port. Broadcast, multicast and
//! unknown unicast go to every remote (the flood list); a unicast inner MAC
//! learnt from a remote goes to that remote only.
//!
//! Decapsulation ([`Tunnels::decap`]) takes only packets that arrived on
//! the underlay port (whose address is `local`) addressed to `local`, then
//! checks, in order: whole outer
//! datagram (no fragments), the UDP length, a non-zero UDP checksum
//! (a zero one is accepted, RFC 7348 §5 / RFC 8926 §3.3), the VXLAN I flag
//! or the Geneve version, OAM bit, critical options and protocol, the VNI,
//! the remote. Each failure is a named drop. Only one level is undone: a
//! tunnel packet found inside a tunnel is dropped (`tunnel_nested`).
//!
//! Encapsulation ([`Tunnels::encap`]) picks the outer UDP source port from
//! a hash of the inner flow (RFC 7348 §5: ECMP underlays spread tunnels by
//! it), sends with a zero UDP checksum over IPv4 and never fragments the
//! outer packet (RFC 7348 §4.3): the tunnel port's MTU is the underlay's
//! less the 50 bytes of headers, so the router answers an inner packet
//! that does not fit with ICMP fragmentation needed / packet too big.
//!
//! Geneve service insertion (`mode insertion`), as cloud gateway load
//! balancers use it: a packet that arrives is decapsulated, runs the
//! tunnel port's pipeline (an ACL, a NAT…) and, if the pipeline neither
//! dropped nor routed it, goes back to the sender inside the same outer
//! headers, its options (TLVs) untouched ([`reflect`]). The outer headers
//! stay in the buffer's headroom in front of the inner frame while the
//! pipeline runs; where they start is noted in the headroom's first bytes.

pub mod config;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::net::Ipv4Addr;

pub use config::{Proto, TunnelPort};

use crate::counters::DropReason;
use crate::packet::{Packet, PacketPool, PortId};
use crate::wire::ETH_HLEN;
use crate::Micros;

/// Ethernet inside Geneve ("transparent Ethernet bridging").
pub const GENEVE_ETHERNET: u16 = 0x6558;
/// Outer IPv4 + UDP + VXLAN/Geneve base header.
const OUTER_L3: usize = 20 + 8 + 8;
/// Learnt inner MACs per tunnel (direct-mapped by MAC hash).
const MAC_SLOTS: usize = 256;
/// How long a learnt MAC is believed.
const MAC_AGE: Micros = 300_000_000;

/// Counters of one tunnel.
#[derive(Clone, Copy, Debug, Default)]
pub struct TunnelCounters {
    pub decapsulated: u64,
    pub encapsulated: u64,
    /// Frames sent to every remote (broadcast, multicast, unknown unicast).
    pub flooded: u64,
    /// Service insertion: packets sent back into their tunnel.
    pub reflected: u64,
}

#[derive(Clone, Copy, Default)]
struct Learnt {
    mac: [u8; 6],
    remote: u8,
    at: Micros,
}

/// One tunnel port at run time.
pub struct Tunnel {
    pub port: PortId,
    pub cfg: TunnelPort,
    macs: Vec<Learnt>,
    ident: u16,
    pub counters: TunnelCounters,
}

/// Every tunnel of the appliance.
#[derive(Default)]
pub struct Tunnels {
    pub list: Vec<Tunnel>,
    /// (local address, UDP port) pairs any tunnel listens on.
    listen: Vec<(Ipv4Addr, u16)>,
}

fn mac_slot(mac: &[u8; 6]) -> usize {
    let x = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % MAC_SLOTS
}

/// The result of looking at a local IPv4 packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Decap {
    /// Not a tunnel's: the host stack or the stages take it.
    NotTunnel,
    /// Decapsulated: the inner frame, received on this tunnel port.
    Inner(PortId),
}

impl Tunnels {
    /// The tunnels of `ports` (port index → config).
    pub fn new<'a>(ports: impl Iterator<Item = (usize, &'a TunnelPort)>) -> Tunnels {
        let mut t = Tunnels::default();
        for (i, cfg) in ports {
            if !t.listen.contains(&(cfg.local, cfg.udp_port)) {
                t.listen.push((cfg.local, cfg.udp_port));
            }
            t.list.push(Tunnel {
                port: i as PortId,
                cfg: cfg.clone(),
                macs: alloc::vec![Learnt::default(); MAC_SLOTS],
                ident: 0,
                counters: TunnelCounters::default(),
            });
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Takes a reload's next hops (routes may have changed), keeping what
    /// was learnt.
    pub fn update(&mut self, ports: impl Iterator<Item = (usize, TunnelPort)>) {
        for (i, cfg) in ports {
            if let Some(t) = self.list.iter_mut().find(|t| t.port as usize == i) {
                t.cfg = cfg;
            }
        }
    }

    pub fn get(&self, port: PortId) -> Option<&Tunnel> {
        self.list.iter().find(|t| t.port == port)
    }

    fn index(&self, port: PortId) -> Option<usize> {
        self.list.iter().position(|t| t.port == port)
    }

    /// Whether `port` is a service-insertion tunnel.
    pub fn is_insertion(&self, port: PortId) -> bool {
        self.get(port).is_some_and(|t| t.cfg.insertion)
    }

    /// Looks at an IPv4 packet to one of the appliance's addresses (its
    /// header checked by ingress): a tunnel's packets are decapsulated in
    /// place, their window moved to the inner frame and `in_port` set to
    /// the tunnel port.
    pub fn decap(&mut self, pkt: &mut Packet, now: Micros) -> Result<Decap, DropReason> {
        let l3 = pkt.meta.l3 as usize;
        let ip = pkt.l3();
        if ip.len() < 20 || ip[9] != 17 {
            return Ok(Decap::NotTunnel);
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let Some(udp) = ip.get(ihl..ihl + 8) else { return Ok(Decap::NotTunnel) };
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        if !self.listen.contains(&(dst, dport)) {
            return Ok(Decap::NotTunnel);
        }
        // Only the underlay carries a tunnel: the remote's address is all
        // that authenticates it, and a host on another port can claim it
        // (a spoofed VTEP on wan would inject frames into the tenant's VRF).
        let port = pkt.meta.in_port as usize;
        if !self.list.iter().any(|t| t.cfg.local == dst && t.cfg.udp_port == dport && t.cfg.underlay == port) {
            return Err(DropReason::TunnelWrongPort);
        }
        if pkt.is_chained() {
            return Err(DropReason::TunnelTruncated);
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            return Err(DropReason::TunnelFragment);
        }
        let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
        let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        if udp_len < 16 || ihl + udp_len > total {
            return Err(DropReason::TunnelTruncated);
        }
        let sum = u16::from_be_bytes([udp[6], udp[7]]);
        let o = pkt.meta.offload;
        // A partial checksum (virtio: the sending host leaves it to be
        // completed) means the frame is from the local host and not yet
        // summed: its outer checksum, if any, was computed for the inner
        // one completed (Linux's local checksum offload): nothing to verify.
        if sum != 0 && !o.csum_partial && !udp_checksum_ok(&ip[..ihl + udp_len], ihl) {
            return Err(DropReason::TunnelBadChecksum);
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let h = &ip[ihl + 8..ihl + udp_len];
        let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
        let mut opts = 0;
        let mut geneve = None;
        let mut vxlan_ok = None;
        for t in self.list.iter().filter(|t| t.cfg.local == dst && t.cfg.udp_port == dport) {
            match t.cfg.proto {
                Proto::Vxlan => vxlan_ok = Some(h[0] & 0x08 != 0),
                Proto::Geneve => geneve = Some(t.cfg.insertion),
            }
        }
        if let Some(ok) = vxlan_ok {
            if !ok {
                return Err(DropReason::TunnelBadHeader);
            }
        } else if geneve.is_some() {
            if h[0] >> 6 != 0 {
                return Err(DropReason::TunnelBadHeader);
            }
            opts = (h[0] & 0x3f) as usize * 4;
            if h[1] & 0x80 != 0 {
                return Err(DropReason::TunnelOam);
            }
            if u16::from_be_bytes([h[2], h[3]]) != GENEVE_ETHERNET {
                return Err(DropReason::TunnelBadHeader);
            }
            if 8 + opts > h.len() {
                return Err(DropReason::TunnelTruncated);
            }
        }
        let critical = geneve.is_some() && h[1] & 0x40 != 0;
        let inner_at = l3 + ihl + 8 + 8 + opts;
        let inner_len = (l3 + ihl + udp_len).saturating_sub(inner_at);
        if inner_len < ETH_HLEN {
            return Err(DropReason::TunnelTruncated);
        }
        let Some(ti) = self.list.iter().position(|t| {
            t.cfg.local == dst
                && t.cfg.udp_port == dport
                && t.cfg.vni == vni
                && (vxlan_ok.is_none() || t.cfg.proto == Proto::Vxlan)
        }) else {
            return Err(DropReason::TunnelUnknownVni);
        };
        let t = &mut self.list[ti];
        let remote = t.cfg.remotes.iter().position(|r| *r == src);
        if remote.is_none() && !(t.cfg.insertion && t.cfg.remotes.is_empty()) {
            return Err(DropReason::TunnelUnknownRemote);
        }
        if critical && !t.cfg.insertion {
            return Err(DropReason::TunnelCriticalOption);
        }
        let head = pkt.head();
        let d = pkt.data();
        let inner_src: [u8; 6] = d[inner_at + 6..inner_at + 12].try_into().expect("inner Ethernet header checked");
        if let (Some(r), true) = (remote, t.cfg.remotes.len() > 1 && inner_src[0] & 1 == 0) {
            t.macs[mac_slot(&inner_src)] = Learnt { mac: inner_src, remote: r as u8, at: now };
        }
        t.counters.decapsulated += 1;
        let port = t.port;
        let insertion = t.cfg.insertion;
        if !pkt.set_window(head + inner_at, inner_len) {
            return Err(DropReason::TunnelTruncated);
        }
        if insertion {
            // Where the outer headers start, for the way back.
            let room = pkt.headroom_mut();
            room[0..2].copy_from_slice(&(inner_at as u16).to_le_bytes());
            room[2..4].copy_from_slice(&((head + inner_at) as u16).to_le_bytes());
        }
        let off = &mut pkt.meta.offload;
        if off.csum_partial && off.csum_start as usize >= inner_at {
            off.csum_start -= inner_at as u16;
        } else {
            *off = Default::default();
        }
        off.gso_size = 0;
        pkt.meta.in_port = port;
        pkt.meta.l3 = ETH_HLEN as u8;
        pkt.meta.set_inserted(insertion);
        Ok(Decap::Inner(port))
    }

    /// Wraps a frame the tunnel port sends: one copy per remote it goes
    /// to, each handed to `send` routed through the underlay (`out_port`,
    /// `next_hop` set; the egress writes the outer Ethernet addresses).
    /// The frame must be whole and its checksums complete (the tunnel
    /// port has no offloads: the egress did that work).
    pub fn encap(
        &mut self,
        port: PortId,
        pkt: Packet,
        pool: &mut PacketPool,
        now: Micros,
        mut send: impl FnMut(Result<Packet, (Packet, DropReason)>, &mut PacketPool),
    ) {
        let Some(ti) = self.index(port) else { return send(Err((pkt, DropReason::NoRoute)), pool) };
        let t = &mut self.list[ti];
        if pkt.is_chained() || pkt.meta.offload.csum_partial || pkt.meta.offload.is_gso() || pkt.len() < ETH_HLEN {
            return send(Err((pkt, DropReason::OffloadUnsupported)), pool);
        }
        let dst: [u8; 6] = pkt.data()[0..6].try_into().expect("a whole Ethernet header");
        let learnt = (dst[0] & 1 == 0).then(|| t.macs[mac_slot(&dst)]).filter(|l| {
            l.mac == dst && now.saturating_sub(l.at) < MAC_AGE && (l.remote as usize) < t.cfg.remotes.len()
        });
        let n = t.cfg.remotes.len();
        if n == 0 {
            // A service-insertion tunnel without remotes only answers.
            return send(Err((pkt, DropReason::NoRoute)), pool);
        }
        let targets = match learnt {
            Some(l) => l.remote as usize..l.remote as usize + 1,
            None => 0..n,
        };
        if targets.len() > 1 {
            t.counters.flooded += 1;
        }
        let hash = flow_hash(pkt.data());
        let mut pkt = Some(pkt);
        for r in targets.clone() {
            let last = r + 1 == targets.end;
            let one = if last {
                pkt.take()
            } else {
                let orig = pkt.as_ref().expect("kept until the last remote");
                pool.alloc().map(|mut c| {
                    c.fill(orig.data());
                    c.meta = orig.meta;
                    c
                })
            };
            let Some(one) = one else { continue };
            send(t.wrap(one, r, hash), pool);
        }
        if let Some(p) = pkt {
            pool.free(p);
        }
    }
}

impl Tunnel {
    /// Puts the outer headers in front of `pkt` for remote `r`.
    fn wrap(&mut self, mut pkt: Packet, r: usize, hash: u32) -> Result<Packet, (Packet, DropReason)> {
        let inner = pkt.len();
        let outer = ETH_HLEN + OUTER_L3;
        // Room for the headers and, in front of them, the NIC's own.
        let room = pkt.head().checked_sub(outer).filter(|h| *h >= 16);
        let (Some(_), Some(start)) = (self.cfg.remotes.get(r), room) else {
            return Err((pkt, DropReason::OffloadUnsupported));
        };
        if !pkt.move_start(start) {
            return Err((pkt, DropReason::OffloadUnsupported));
        }
        self.ident = self.ident.wrapping_add(1);
        let total = (OUTER_L3 + inner) as u16;
        let d = pkt.data_mut();
        d[0..12].fill(0);
        d[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut d[ETH_HLEN..];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&self.ident.to_be_bytes());
        ip[6..8].copy_from_slice(&[0, 0]);
        ip[8] = 64;
        ip[9] = 17;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&self.cfg.local.octets());
        ip[16..20].copy_from_slice(&self.cfg.remotes[r].octets());
        let c = crate::csum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp = &mut ip[20..];
        // Source port in the dynamic range, from the inner flow.
        let sport = 49152 | (hash as u16 & 0x3fff);
        udp[0..2].copy_from_slice(&sport.to_be_bytes());
        udp[2..4].copy_from_slice(&self.cfg.udp_port.to_be_bytes());
        udp[4..6].copy_from_slice(&(total - 20).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let h = &mut udp[8..16];
        let vni = (self.cfg.vni << 8).to_be_bytes();
        match self.cfg.proto {
            Proto::Vxlan => h[0..4].copy_from_slice(&[0x08, 0, 0, 0]),
            Proto::Geneve => {
                h[0..2].copy_from_slice(&[0, 0]);
                h[2..4].copy_from_slice(&GENEVE_ETHERNET.to_be_bytes());
            }
        }
        h[4..8].copy_from_slice(&vni);
        pkt.meta.offload = Default::default();
        pkt.meta.l3 = ETH_HLEN as u8;
        pkt.meta.route(self.cfg.underlay as PortId, self.cfg.next_hops.get(r).copied().unwrap_or(self.cfg.remotes[r]));
        self.counters.encapsulated += 1;
        Ok(pkt)
    }
}

/// Sends a service-insertion packet back into the tunnel it came from: the
/// outer headers it arrived in (still in front of it) with the addresses
/// swapped, lengths and checksum refreshed, options as they were. `Err`
/// if a stage moved the frame (the outer headers are gone).
pub fn reflect(pkt: &mut Packet) -> Result<(), DropReason> {
    let head = pkt.head();
    let room = pkt.headroom_mut();
    if room.len() < 4 {
        return Err(DropReason::TunnelTruncated);
    }
    let outer = u16::from_le_bytes([room[0], room[1]]) as usize;
    let at = u16::from_le_bytes([room[2], room[3]]) as usize;
    if at != head || outer < ETH_HLEN + OUTER_L3 || pkt.is_chained() || head < outer + 4 {
        return Err(DropReason::TunnelTruncated);
    }
    let inner = pkt.len();
    if !pkt.move_start(head - outer) {
        return Err(DropReason::TunnelTruncated);
    }
    let d = pkt.data_mut();
    let (a, b) = d.split_at_mut(6);
    a.swap_with_slice(&mut b[0..6]);
    let ip = &mut d[ETH_HLEN..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = (outer - ETH_HLEN + inner) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    for i in 0..4 {
        ip.swap(12 + i, 16 + i);
    }
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = crate::csum::checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut ip[ihl..];
    udp[4..6].copy_from_slice(&(total - ihl as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    pkt.meta.offload = Default::default();
    pkt.meta.l3 = ETH_HLEN as u8;
    pkt.meta.set_inserted(false);
    Ok(())
}

/// Whether the UDP checksum of `dgram` (IPv4 header of `ihl` bytes, then
/// the UDP header and payload) verifies: pseudo-header and datagram sum
/// to all ones.
fn udp_checksum_ok(dgram: &[u8], ihl: usize) -> bool {
    let udp = &dgram[ihl..];
    let pseudo = crate::csum::sum(&dgram[12..20]) + 17 + udp.len() as u32;
    crate::csum::fold(pseudo + crate::csum::sum(udp)) == 0xffff
}

/// A hash of the inner frame's flow: MACs, and for IPv4 the addresses,
/// protocol and the first four L4 bytes (ports).
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: &[u8]| {
        for x in b {
            h = (h ^ *x as u32).wrapping_mul(0x0100_0193);
        }
    };
    eat(frame.get(0..12).unwrap_or(&[]));
    if frame.get(12..14) == Some(&[0x08, 0x00]) {
        if let Some(ip) = frame.get(ETH_HLEN..ETH_HLEN + 20) {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            eat(&ip[9..10]);
            eat(&ip[12..20]);
            eat(frame.get(ETH_HLEN + ihl..ETH_HLEN + ihl + 4).unwrap_or(&[]));
        }
    }
    h ^ h >> 16
}
