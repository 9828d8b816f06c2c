//! Egress: the last step of every routed packet (VPP's ip4-rewrite).
//!
//! Stages decide *where* a packet goes (`meta.out_port`, `meta.next_hop`);
//! the egress makes it fit and addresses it: fragments a datagram larger than
//! the port's MTU (DF clear; DF set was answered by the router already),
//! resolves the next hop's MAC in the neighbour cache — holding a few packets
//! while ARP is asked, all unresolved next hops of a port together within a
//! small share of the pool ([`held_cap`]) — rewrites the Ethernet header and
//! queues the frame on the port. Doing this after all stages lets NAT rewrite a packet after the
//! routing decision (SNAT is post-routing) and still be fragmented and
//! addressed correctly.

use core::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Packet,
};

use crate::counters::DropReason;
use crate::neighbor::{Enqueued, Lookup, NeighborCache, TimerAction, QUEUE};
use crate::offload;
use crate::packet::{Packet, PacketPool, PortId};
use crate::port::Port;
use crate::Micros;

/// The egress writes the frames' L2 headers: plain Ethernet.
use crate::wire::ETH_HLEN as ETH;
/// Neighbour-cache slots whose timers each loop turn advances.
const SWEEP_PER_POLL: usize = 8;
/// The share of the buffer pool that packets waiting for their next hop
/// may hold, split evenly over the ports (ARP and ND together): a scan of
/// a connected prefix must not take the buffers receive refill needs.
pub const HELD_SHARE: usize = 16;

/// Buffers the unresolved neighbours of one port may hold together: a
/// `1/HELD_SHARE` share of the pool split over `ports`, at least one
/// neighbour's queue.
pub fn held_cap(pool: usize, ports: usize) -> usize {
    (pool / HELD_SHARE / ports.max(1)).max(QUEUE)
}

crate::counters! {
    /// What the egress did besides sending.
    pub struct EgressCounters {
        fragments: counter "IPv4 fragments made for a smaller MTU",
        arp_requests: counter "ARP requests sent for next hops",
        /// Super-packets sent on whole for the NIC to cut.
        large_sent: counter "segmentation super-packets handed whole to a NIC that cuts them",
        /// Segments cut in software (for a port without offloads, or a smaller MTU).
        segments_cut: counter "TCP segments cut in software",
        /// Partial checksums completed in software.
        checksums_completed: counter "partial checksums completed in software",
    }
}

/// Packets whose next hop did not answer ARP, kept for the router to
/// answer with ICMP host unreachable (at most this many between two turns
/// of the loop; more are only dropped).
pub const UNREACHABLE_BACKLOG: usize = 16;

pub struct Egress {
    pub neighbors: NeighborCache,
    /// The IPv6 neighbour cache (RFC 4861 states).
    pub neighbors6: NeighborCache<Ipv6Addr>,
    /// IPv6 next hops by the index an IPv6 packet's `meta.next_hop`
    /// holds (1-based; 0: the packet's destination is on the link).
    pub gateways6: alloc::vec::Vec<Ipv6Addr>,
    pub counters: EgressCounters,
    /// Given up on (their next hop is unreachable): counted as dropped
    /// already; the dataplane takes them for the ICMP error.
    pub unreachable: heapless::Deque<Packet, UNREACHABLE_BACKLOG>,
}

impl Egress {
    pub fn new(neighbors: usize, reachable: Micros, seed: u64) -> Self {
        Egress {
            neighbors: NeighborCache::<Ipv4Addr>::new(neighbors, reachable).keyed(seed),
            neighbors6: NeighborCache::<Ipv6Addr>::new(0, reachable).keyed(seed ^ 6),
            gateways6: alloc::vec::Vec::new(),
            counters: EgressCounters::default(),
            unreachable: heapless::Deque::new(),
        }
    }

    /// The cache the config asks for, its permanent entries in place;
    /// `seed` (the boot secret) keys the caches' slot hashes.
    pub fn with_static(config: &crate::config::Config, now: Micros, seed: u64) -> Self {
        let reachable = config.arp.timeout as Micros * 1_000_000;
        let mut e = Egress::new(config.arp.entries, reachable, seed);
        e.neighbors6 = NeighborCache::<Ipv6Addr>::new(config.neighbor6_entries(), reachable).keyed(seed ^ 6);
        e.gateways6 = config.gateways6();
        e.install_static(config, now);
        e
    }

    /// Replaces the permanent entries with `config`'s (nothing waits on
    /// them at start; on a reload, packets held for one go out with it).
    pub fn install_static(&mut self, config: &crate::config::Config, now: Micros) -> alloc::vec::Vec<Packet> {
        self.neighbors.clear_static();
        let mut out = alloc::vec::Vec::new();
        for n in &config.neighbors {
            out.extend(self.neighbors.set_static(n.port as PortId, n.ip, n.mac, now));
        }
        self.neighbors6.clear_static();
        for n in &config.neighbors6 {
            out.extend(self.neighbors6.set_static(n.port as PortId, n.ip, n.mac, now));
        }
        out
    }

    /// Sends a routed packet (`meta.out_port` set).
    pub fn send(&mut self, mut pkt: Packet, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
        let Some(out) = pkt.meta.out_port.filter(|p| (*p as usize) < ports.len()) else {
            return drop(ports, pool, pkt, DropReason::NoRoute);
        };
        if !pkt.untag() {
            return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
        }
        if crate::ipv6::is_ipv6(pkt.l3()) {
            return self.send6(pkt, out, ports, pool, now);
        }
        let o = pkt.meta.offload;
        if o.csum_partial || o.is_gso() || pkt.is_chained() {
            return self.send_large(pkt, out, ports, pool, now);
        }
        let mtu = ports[out as usize].mtu as usize;
        let total = pkt.len() - ETH;
        if total > mtu {
            let df = Ipv4Packet::new_unchecked(&pkt.data()[ETH..]).dont_frag();
            if df {
                return drop(ports, pool, pkt, DropReason::FragNeeded);
            }
            return self.fragment(pkt, mtu, ports, pool, now);
        }
        self.resolve(pkt, ports, pool, now);
    }

    /// Sends a packet that carries offload work (a partial checksum, a
    /// super-packet to cut) or spans several buffers: on whole to a port
    /// whose NIC does that work, else done here first.
    fn send_large(&mut self, mut pkt: Packet, out: PortId, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
        let mtu = ports[out as usize].mtu as usize;
        let nic_offloads = ports[out as usize].offloads;
        let o = pkt.meta.offload;
        if o.is_gso() {
            let Some(seg_len) = offload::segment_len(&pkt, o.gso_size) else {
                return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
            };
            if nic_offloads && seg_len <= mtu {
                if !offload::refresh_partial(&mut pkt) {
                    return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
                }
                self.counters.large_sent += 1;
                return self.resolve(pkt, ports, pool, now);
            }
            // Cut here, to the MTU if it is the smaller (the router already
            // answered DF super-packets whose segments do not fit).
            let headers = seg_len - o.gso_size as usize;
            let mss = (o.gso_size as usize).min(mtu.saturating_sub(headers)).max(1) as u16;
            let in_port = pkt.meta.in_port as usize;
            let mut cut = 0;
            let sent = offload::normalize(pkt, mss, false, pool, |seg, pool| {
                cut += 1;
                self.resolve(seg, ports, pool, now);
            });
            self.counters.segments_cut += cut;
            if let (Err(reason), Some(p)) = (sent, ports.get_mut(in_port)) {
                p.counters.drop(reason);
            }
            return;
        }
        if pkt.total_len() - ETH > mtu {
            if pkt.is_chained() {
                // Fragmenting a frame spread over several buffers is not
                // done (the router answered it if DF was set).
                return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
            }
            // One buffer, too big for the port: complete the checksum and
            // fragment it like any other datagram.
            self.counters.checksums_completed += o.csum_partial as u64;
            if !offload::complete_checksum(&mut pkt) {
                return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
            }
            return self.fragment(pkt, mtu, ports, pool, now);
        }
        let ok = if nic_offloads {
            offload::refresh_partial(&mut pkt)
        } else {
            self.counters.checksums_completed += o.csum_partial as u64;
            offload::complete_checksum(&mut pkt)
        };
        if !ok {
            return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
        }
        self.resolve(pkt, ports, pool, now);
    }

    /// Addresses `pkt` to its next hop's MAC, or holds it while ARP asks.
    fn resolve(&mut self, mut pkt: Packet, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
        let out = pkt.meta.out_port.unwrap_or(0);
        let hop = pkt.meta.next_hop;
        match self.neighbors.lookup(out, hop, now) {
            Lookup::Known { mac, refresh } => {
                write_eth(&mut pkt, ports[out as usize].mac, mac);
                transmit(ports, pool, out, pkt);
                if refresh {
                    self.arp_request(out, hop, Some(mac), ports, pool);
                }
            }
            Lookup::Unknown => {
                let room = self.room(out, &pkt, ports, pool);
                match self.neighbors.enqueue(out, hop, pkt, now, room) {
                    Enqueued::Held { request } => {
                        if request {
                            self.arp_request(out, hop, None, ports, pool);
                        }
                    }
                    Enqueued::NoRoom { pkt, request } => {
                        drop(ports, pool, pkt, DropReason::NeighborHoldFull);
                        if request {
                            self.arp_request(out, hop, None, ports, pool);
                        }
                    }
                    Enqueued::QueueFull(p) => drop(ports, pool, p, DropReason::NeighborQueueFull),
                    Enqueued::TableFull(p) => drop(ports, pool, p, DropReason::NeighborTableFull),
                    Enqueued::Unreachable(p) => self.give_up(ports, pool, p),
                }
            }
        }
    }

    /// Sends a routed IPv6 packet: never fragmented (the router answered
    /// what does not fit), a partial checksum completed for a NIC that
    /// does not, the next hop resolved by neighbour discovery.
    fn send6(&mut self, mut pkt: Packet, out: PortId, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
        if pkt.is_chained() || pkt.meta.offload.is_gso() {
            return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
        }
        if pkt.len() - ETH > ports[out as usize].mtu as usize {
            return drop(ports, pool, pkt, DropReason::PacketTooBig);
        }
        if pkt.meta.offload.csum_partial && !ports[out as usize].offloads {
            self.counters.checksums_completed += 1;
            if !offload::complete_checksum(&mut pkt) {
                return drop(ports, pool, pkt, DropReason::OffloadUnsupported);
            }
        }
        let hop = match pkt.meta.gateway6() as usize {
            0 => crate::ipv6::dst(pkt.l3()),
            i => match self.gateways6.get(i - 1) {
                Some(g) => *g,
                None => return drop(ports, pool, pkt, DropReason::NoRoute),
            },
        };
        match self.neighbors6.lookup(out, hop, now) {
            Lookup::Known { mac, .. } => {
                write_eth(&mut pkt, ports[out as usize].mac, mac);
                transmit(ports, pool, out, pkt);
            }
            Lookup::Unknown => {
                let room = self.room(out, &pkt, ports, pool);
                match self.neighbors6.enqueue(out, hop, pkt, now, room) {
                    Enqueued::Held { request } => {
                        if request {
                            self.solicit(out, hop, None, ports, pool);
                        }
                    }
                    Enqueued::NoRoom { pkt, request } => {
                        drop(ports, pool, pkt, DropReason::NeighborHoldFull);
                        if request {
                            self.solicit(out, hop, None, ports, pool);
                        }
                    }
                    Enqueued::QueueFull(p) => drop(ports, pool, p, DropReason::NeighborQueueFull),
                    Enqueued::TableFull(p) => drop(ports, pool, p, DropReason::NeighborTableFull),
                    Enqueued::Unreachable(p) => self.give_up(ports, pool, p),
                }
            }
        }
    }

    /// Whether `pkt` may wait for a next hop on `out` within the port's
    /// share of the pool ([`held_cap`]).
    fn room(&self, out: PortId, pkt: &Packet, ports: &[Port], pool: &PacketPool) -> bool {
        let held = self.neighbors.held(out) + self.neighbors6.held(out);
        held + 1 + pkt.tail().len() <= held_cap(pool.capacity(), ports.len())
    }

    /// Sends a neighbour solicitation for `ip` out of `port`.
    fn solicit(
        &mut self,
        port: PortId,
        ip: Ipv6Addr,
        known: Option<[u8; 6]>,
        ports: &mut [Port],
        pool: &mut PacketPool,
    ) {
        let Some(h) = ports[port as usize].host6.as_mut() else { return };
        if let Some(mut p) = h.solicit(pool, ip, known) {
            p.meta.in_port = port;
            transmit(ports, pool, port, p);
        }
    }

    /// Learns what an IPv6 neighbour discovery message told of a
    /// neighbour on `in_port`, and sends what waited for it.
    pub fn learn6(
        &mut self,
        in_port: PortId,
        l: crate::ipv6::host::Learned,
        ports: &mut [Port],
        pool: &mut PacketPool,
        now: Micros,
    ) {
        for mut p in self.neighbors6.heard(in_port, l.ip, l.mac, now, l.create, l.how) {
            write_eth(&mut p, ports[in_port as usize].mac, l.mac);
            transmit(ports, pool, in_port, p);
        }
    }

    /// Learns from an ARP packet that arrived on `in_port` (RFC 826: add
    /// the sender if it is addressed to us, else only update), and sends
    /// what waited for it.
    pub fn observe_arp(
        &mut self,
        in_port: PortId,
        arp: &ArpRepr,
        ports: &mut [Port],
        pool: &mut PacketPool,
        now: Micros,
    ) {
        let ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } = *arp
        else {
            return;
        };
        if source_protocol_addr.is_unspecified() || !source_hardware_addr.is_unicast() {
            return;
        }
        let address = ports.get(in_port as usize).and_then(|p| p.address);
        // Only neighbours on the port's own link are learned (a request from
        // an off-link source address is still answered: see the dataplane).
        if !address.is_some_and(|a| a.contains(&source_protocol_addr)) {
            return;
        }
        let mine = address.map(|a| a.addr());
        let create = Some(target_protocol_addr) == mine;
        let waiting = self.neighbors.learn(in_port, source_protocol_addr, source_hardware_addr.0, now, create);
        for mut p in waiting {
            write_eth(&mut p, ports[in_port as usize].mac, source_hardware_addr.0);
            transmit(ports, pool, in_port, p);
        }
    }

    /// Drops a packet whose next hop is unreachable, keeping it (if there is
    /// room) for the ICMP host unreachable the dataplane has the router send.
    fn give_up(&mut self, ports: &mut [Port], pool: &mut PacketPool, pkt: Packet) {
        if let Some(p) = ports.get_mut(pkt.meta.in_port as usize) {
            p.counters.drop(DropReason::NeighborUnreachable);
        }
        if let Err(pkt) = self.unreachable.push_back(pkt) {
            pool.free(pkt);
        }
    }

    /// Neighbour timers: retries, and giving up on silent next hops.
    pub fn poll(&mut self, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
        let mut actions: heapless::Vec<TimerAction, { SWEEP_PER_POLL * (QUEUE + 1) }> = heapless::Vec::new();
        self.neighbors.tick(now, SWEEP_PER_POLL, |a| {
            let _ = actions.push(a);
        });
        for a in actions {
            match a {
                TimerAction::Request { port, ip, known } => self.arp_request(port, ip, known, ports, pool),
                TimerAction::GiveUp(p) => self.give_up(ports, pool, p),
            }
        }
        let mut actions6: heapless::Vec<TimerAction<Ipv6Addr>, { SWEEP_PER_POLL * (QUEUE + 1) }> = heapless::Vec::new();
        self.neighbors6.tick(now, SWEEP_PER_POLL, |a| {
            let _ = actions6.push(a);
        });
        for a in actions6 {
            match a {
                TimerAction::Request { port, ip, known } => self.solicit(port, ip, known, ports, pool),
                TimerAction::GiveUp(p) => self.give_up(ports, pool, p),
            }
        }
    }

    /// Splits an IPv4 datagram (DF clear) into fragments that fit `mtu`
    /// (RFC 791 §3.2): offsets in 8-byte units, all options in the first
    /// fragment, only "copied" options after.
    fn fragment(&mut self, pkt: Packet, mtu: usize, ports: &mut [Port], pool: &mut PacketPool, now: Micros) {
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
        let mut frags: heapless::Vec<Packet, 48> = heapless::Vec::new();
        while off < payload.len() {
            let hl = if off == 0 { ihl } else { 20 + later_len };
            let room = (mtu - hl) / 8 * 8;
            let n = room.min(payload.len() - off);
            let last = off + n == payload.len();
            let Some(mut f) = pool.alloc() else {
                ports[pkt.meta.in_port as usize].counters.drop(DropReason::FragNoBuffer);
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
            if let Err(f) = frags.push(f) {
                // 48 fragments carry any frame a buffer can hold at MTU ≥ 68.
                pool.free(f);
            }
            off += n;
        }
        pool.free(pkt);
        for f in frags {
            self.resolve(f, ports, pool, now);
        }
    }

    /// Sends an ARP request for `ip` out of `port` (unicast to `known` when
    /// refreshing an entry, else broadcast).
    fn arp_request(
        &mut self,
        port: PortId,
        ip: Ipv4Addr,
        known: Option<[u8; 6]>,
        ports: &mut [Port],
        pool: &mut PacketPool,
    ) {
        let Some(mut pkt) = pool.alloc() else { return };
        let p = &ports[port as usize];
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
        transmit(ports, pool, port, pkt);
    }

    /// Returns every held packet to the pool.
    pub fn drain(&mut self, pool: &mut PacketPool) {
        self.neighbors.drain(|p| pool.free(p));
        self.neighbors6.drain(|p| pool.free(p));
        while let Some(p) = self.unreachable.pop_front() {
            pool.free(p);
        }
    }
}

fn write_eth(pkt: &mut Packet, src: [u8; 6], dst: [u8; 6]) {
    let d = pkt.data_mut();
    d[0..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    let v6 = crate::ipv6::is_ipv6(d.get(ETH..).unwrap_or(&[]));
    d[12..14].copy_from_slice(if v6 { &crate::ipv6::ETHERTYPE } else { &[0x08, 0x00] });
}

fn transmit(ports: &mut [Port], pool: &mut PacketPool, out: PortId, pkt: Packet) {
    let in_port = pkt.meta.in_port as usize;
    if let Err(pkt) = ports[out as usize].tx.push_back(pkt) {
        ports[in_port].counters.drop(DropReason::TxRingFull);
        pool.free(pkt);
    }
}

fn drop(ports: &mut [Port], pool: &mut PacketPool, pkt: Packet, reason: DropReason) {
    if let Some(p) = ports.get_mut(pkt.meta.in_port as usize) {
        p.counters.drop(reason);
    }
    pool.free(pkt);
}

/// Copies the options with the "copied" flag into `out`, padded to a
/// multiple of 4 with end-of-options; returns the padded length.
pub(crate) fn copied_options(opts: &[u8], out: &mut [u8; 40]) -> usize {
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

#[cfg(test)]
mod tests;
