//! The ports that are not NICs: VLAN sub-ports on a trunk NIC and tunnel
//! ports. Frames reach them through their trunk (tags read and taken off
//! once, at ingress) or through a tunnel's decapsulation; what they send
//! is drained from their transmit queues into the trunk's (tags put back)
//! or wrapped and routed through the tunnel's underlay.

use alloc::vec::Vec;

use crate::config::{Config, PortKind};
use crate::counters::DropReason;
use crate::packet::{Batch, PacketPool, PortId};
use crate::tunnel::Tunnels;
use crate::vlan::{self, Trunk};
use crate::Micros;

use super::Dataplane;

/// A VLAN sub-port's tagging.
#[derive(Clone, Copy, Debug)]
pub struct SubPort {
    pub port: PortId,
    pub parent: PortId,
    pub outer: u16,
    /// The outer tag's TPID (QinQ).
    pub outer_tpid: u16,
    pub vid: u16,
    pub priority: Option<u8>,
}

/// The dataplane's view of its non-NIC ports.
#[derive(Default)]
pub struct L2 {
    /// Any port is a sub-port or a tunnel (else the NIC path is untouched).
    pub active: bool,
    /// Per NIC port: its sub-ports and unknown-VLAN counters.
    pub trunks: Vec<Trunk>,
    pub subs: Vec<SubPort>,
    pub tunnels: Tunnels,
    /// Per port: its VRF.
    pub vrf: Vec<u8>,
    /// Per port: the addresses of ports in other VRFs (none of its own VRF
    /// has them). Not local there: they are routed in the port's VRF like
    /// any other address (empty without VRFs).
    pub foreign: Vec<Vec<core::net::Ipv4Addr>>,
    /// Per port: the subnets of the other ports of its VRF (an ARP
    /// request from a sender there is that port's to answer).
    pub other_nets: Vec<Vec<ipnet::Ipv4Net>>,
}

impl L2 {
    pub fn new(config: &Config) -> L2 {
        let nics = config.nic_count();
        let mut trunks = alloc::vec![Trunk::default(); nics];
        let mut subs = Vec::new();
        for (i, p) in config.ports.iter().enumerate() {
            if let PortKind::Vlan(v) = &p.kind {
                let _ = trunks[v.parent].subs.push((v.outer, v.vid, i as PortId, v.outer_tpid));
                subs.push(SubPort {
                    port: i as PortId,
                    parent: v.parent as PortId,
                    outer: v.outer,
                    outer_tpid: v.outer_tpid,
                    vid: v.vid,
                    priority: v.priority,
                });
            }
        }
        let tunnels = Tunnels::new(config.ports.iter().enumerate().filter_map(|(i, p)| match &p.kind {
            PortKind::Tunnel(t) => Some((i, t)),
            _ => None,
        }));
        let foreign = config
            .ports
            .iter()
            .map(|p| {
                if config.vrfs.is_empty() {
                    return Vec::new();
                }
                let own = |a| config.ports.iter().any(|q| q.vrf == p.vrf && q.ip() == Some(a));
                let mut v: Vec<core::net::Ipv4Addr> =
                    config.ports.iter().filter_map(|q| q.ip()).filter(|a| !own(*a)).collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let other_nets = (0..config.ports.len())
            .map(|i| {
                let vrf = config.ports[i].vrf;
                config
                    .ports
                    .iter()
                    .enumerate()
                    .filter(|(j, q)| *j != i && q.vrf == vrf)
                    .filter_map(|(_, q)| q.address)
                    .collect()
            })
            .collect();
        L2 {
            active: nics < config.ports.len(),
            foreign,
            other_nets,
            trunks,
            subs,
            tunnels,
            vrf: config.ports.iter().map(|p| p.vrf as u8).collect(),
        }
    }

    /// The MAC of every port: NICs' as found, a sub-port its trunk's, a
    /// tunnel its configured one or one derived from its VNI and index
    /// (locally administered).
    pub fn macs(config: &Config, nic_macs: &[[u8; 6]]) -> Vec<[u8; 6]> {
        let mut macs: Vec<[u8; 6]> = Vec::with_capacity(config.ports.len());
        for (i, p) in config.ports.iter().enumerate() {
            let m = match &p.kind {
                PortKind::Nic => nic_macs.get(i).copied().unwrap_or([0x02, 0, 0, 0, 0, i as u8]),
                PortKind::Vlan(v) => macs.get(v.parent).copied().unwrap_or([0x02, 0, 0, 0, 0, i as u8]),
                PortKind::Tunnel(t) => p.mac.unwrap_or_else(|| {
                    let v = t.vni.to_be_bytes();
                    [0x02, 0x53, v[1], v[2], v[3], i as u8]
                }),
            };
            macs.push(m);
        }
        macs
    }
}

impl Dataplane {
    /// A burst from a NIC port that has sub-ports, or when tunnels exist:
    /// each frame is given to the port it belongs to, then each port's
    /// frames run as one batch, in arrival order.
    pub(super) fn receive_l2(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool, now: Micros) {
        let mut sorted = Batch::new();
        let trunk = self.l2.trunks.get_mut(port as usize);
        let Some(trunk) = trunk else {
            return self.receive_port(port, batch, pool, now, 0);
        };
        let mut tagged = 0;
        for mut pkt in batch.drain(..) {
            pkt.meta.l2 = 0;
            pkt.meta.in_port = port;
            match vlan::parse(pkt.data()) {
                Ok(None) => {}
                Ok(Some(tags)) if tags.outer == 0 && tags.vid == 0 && tags.tpid == vlan::TPID_8021Q => {
                    // A priority tag: the frame is the trunk's own.
                    pkt.meta.set_pcp(tags.pcp);
                    if !vlan::pop(&mut pkt, &tags) {
                        drop_on(&mut self.ports, pool, port, pkt, DropReason::VlanMalformed);
                        continue;
                    }
                }
                Ok(Some(tags)) => match trunk.find(&tags) {
                    Ok(sub) if vlan::pop(&mut pkt, &tags) => {
                        tagged += 1;
                        pkt.meta.set_pcp(tags.pcp);
                        pkt.meta.in_port = sub;
                    }
                    Ok(_) => {
                        drop_on(&mut self.ports, pool, port, pkt, DropReason::VlanMalformed);
                        continue;
                    }
                    Err(reason @ DropReason::VlanBadTpid) => {
                        let c = &mut self.ports[port as usize].counters;
                        c.rx_packets += 1;
                        drop_on(&mut self.ports, pool, port, pkt, reason);
                        continue;
                    }
                    Err(_) => {
                        trunk.unknown.count(tags.outer, tags.vid);
                        let c = &mut self.ports[port as usize].counters;
                        c.rx_packets += 1;
                        c.rx_bytes += pkt.total_len() as u64;
                        drop_on(&mut self.ports, pool, port, pkt, DropReason::VlanUnknown);
                        continue;
                    }
                },
                Err(reason) => {
                    let c = &mut self.ports[port as usize].counters;
                    c.rx_packets += 1;
                    drop_on(&mut self.ports, pool, port, pkt, reason);
                    continue;
                }
            }
            // `sorted` has the capacity of `batch`.
            let _ = sorted.push(pkt);
        }
        if tagged > 0 {
            // The trunk counts what it carried for its sub-ports too (as a
            // Linux trunk device does).
            let c = &mut self.ports[port as usize].counters;
            c.rx_packets += tagged;
        }
        self.dispatch(sorted, pool, now, 0);
    }

    /// Runs packets that belong to several ports (`meta.in_port` each),
    /// port by port, keeping their order within a port.
    pub(super) fn dispatch(&mut self, mut pkts: Batch, pool: &mut PacketPool, now: Micros, depth: u8) {
        // One port's burst (the usual case) goes on whole.
        let first = pkts.first().map(|p| p.meta.in_port);
        if let Some(port) = first.filter(|p| pkts.iter().all(|q| q.meta.in_port == *p)) {
            if port as usize >= self.l2.trunks.len() {
                if let Some(c) = self.capture.as_mut().filter(|c| c.port == port) {
                    for pkt in pkts.iter() {
                        c.record(pkt.data(), pkt.total_len(), now);
                    }
                }
            }
            return self.receive_port(port, &mut pkts, pool, now, depth);
        }
        while !pkts.is_empty() {
            let port = pkts[0].meta.in_port;
            let mut one = Batch::new();
            let mut rest = Batch::new();
            for p in pkts.drain(..) {
                let _ = if p.meta.in_port == port { one.push(p) } else { rest.push(p) };
            }
            pkts = rest;
            if port as usize >= self.l2.trunks.len() {
                // A sub-port or tunnel: its capture sees the frame here.
                if let Some(c) = self.capture.as_mut().filter(|c| c.port == port) {
                    for pkt in one.iter() {
                        c.record(pkt.data(), pkt.total_len(), now);
                    }
                }
            }
            self.receive_port(port, &mut one, pool, now, depth);
        }
    }

    /// Drains the transmit queues of sub-ports and tunnels: tunnels first
    /// (their packets may leave through a sub-port), then sub-ports into
    /// their trunks.
    pub(super) fn flush_virtual(&mut self, pool: &mut PacketPool, now: Micros) {
        if !self.l2.active {
            return;
        }
        let Dataplane { ports, l2, egress, .. } = self;
        for ti in 0..l2.tunnels.list.len() {
            let port = l2.tunnels.list[ti].port;
            while let Some(pkt) = ports[port as usize].tx.pop_front() {
                let len = pkt.total_len() as u64;
                let mss = pkt.meta.offload.gso_size;
                let o = pkt.meta.offload;
                let sent = if pkt.is_chained() || o.csum_partial || o.is_gso() {
                    // The host stack never sends these; a stage's super-packet
                    // is cut and checksummed here first.
                    crate::offload::normalize(pkt, mss, false, pool, |seg, pool| {
                        emit(&mut l2.tunnels, port, seg, pool, ports, egress, now)
                    })
                    .map(|_| ())
                } else {
                    emit(&mut l2.tunnels, port, pkt, pool, ports, egress, now);
                    Ok(())
                };
                let c = &mut ports[port as usize].counters;
                match sent {
                    Err(reason) => c.drop(reason),
                    Ok(()) => {
                        c.tx_packets += 1;
                        c.tx_bytes += len;
                    }
                }
            }
        }
        for s in &l2.subs {
            let offloads = ports[s.parent as usize].offloads;
            ports[s.port as usize].offloads = offloads;
            while let Some(mut pkt) = ports[s.port as usize].tx.pop_front() {
                let pcp = s.priority.unwrap_or(pkt.meta.pcp());
                let len = pkt.total_len() as u64;
                if !vlan::push(&mut pkt, (s.outer_tpid, s.outer), s.vid, pcp) {
                    drop_on(ports, pool, s.port, pkt, DropReason::OffloadUnsupported);
                    continue;
                }
                match ports[s.parent as usize].tx.push_back(pkt) {
                    Ok(()) => {
                        let c = &mut ports[s.port as usize].counters;
                        c.tx_packets += 1;
                        c.tx_bytes += len;
                    }
                    Err(pkt) => drop_on(ports, pool, s.port, pkt, DropReason::TxRingFull),
                }
            }
        }
    }

    /// The tunnels (counters, remotes), for `show tunnels` and `/metrics`.
    pub fn tunnels(&self) -> &Tunnels {
        &self.l2.tunnels
    }

    /// Per NIC port, the frames of VLANs no sub-port takes.
    pub fn unknown_vlans(&self) -> impl Iterator<Item = (PortId, &vlan::UnknownVlans)> + '_ {
        self.l2.trunks.iter().enumerate().map(|(i, t)| (i as PortId, &t.unknown))
    }
}

/// Wraps one frame of tunnel `port` and sends each copy through the underlay.
fn emit(
    tunnels: &mut Tunnels,
    port: PortId,
    pkt: crate::packet::Packet,
    pool: &mut PacketPool,
    ports: &mut [crate::port::Port],
    egress: &mut crate::egress::Egress,
    now: Micros,
) {
    tunnels.encap(port, pkt, pool, now, |r, pool| match r {
        Ok(p) => {
            let u = p.meta.out_port.unwrap_or(0) as usize;
            if p.len() - crate::wire::ETH_HLEN > ports[u].mtu as usize {
                drop_on(ports, pool, port, p, DropReason::TunnelTooBig);
            } else {
                egress.send(p, ports, pool, now);
            }
        }
        Err((p, reason)) => drop_on(ports, pool, port, p, reason),
    });
}

fn drop_on(
    ports: &mut [crate::port::Port],
    pool: &mut PacketPool,
    port: PortId,
    pkt: crate::packet::Packet,
    reason: DropReason,
) {
    ports[port as usize].counters.drop(reason);
    pool.free(pkt);
}
