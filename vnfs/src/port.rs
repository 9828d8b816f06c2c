//! A port as the dataplane and the stages see it: identity, counters, host
//! stack and transmit queue, and the way a packet reaches the host stack.

use alloc::string::String;
use ipnet::Ipv4Net;

use crate::counters::{DropReason, PortCounters};
use crate::hoststack::{HostStack, TxQueue};
use crate::packet::PacketPool;

/// One port: identity, counters, host stack and transmit queue.
pub struct Port {
    pub name: String,
    pub mac: [u8; 6],
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
    pub counters: PortCounters,
    pub host: HostStack,
    /// The port's IPv6 (addresses, neighbour discovery, advertisements);
    /// `None` when the config gives it no IPv6 address.
    pub host6: Option<crate::ipv6::host::Host6>,
    pub tx: TxQueue,
    /// The port's NIC completes partial checksums and cuts TCP
    /// super-packets on transmit (set by whoever binds the NIC).
    pub offloads: bool,
    /// The NIC driver's own counters (kicks, bursts, large frames…), as
    /// its owner last copied them in; shown on the `nic` line and in
    /// `/metrics`.
    pub nic_counters: DriverCounters,
}

/// Named counters a NIC driver or the poll loop keeps, copied into the
/// dataplane so that `stats` and `/metrics` show them (vnfs knows no driver).
pub type DriverCounters = heapless::Vec<crate::stats::Sample, 24>;

/// Hands a packet to the host stack of the port it came in on. The host
/// stack takes only whole, ordinary frames: a super-packet is cut into
/// segments here and a partial checksum completed (what a NIC without
/// offloads would have delivered).
pub fn to_host(ports: &mut [Port], pool: &mut PacketPool, pkt: crate::packet::Packet) {
    let in_port = pkt.meta.in_port as usize;
    let mss = pkt.meta.offload.gso_size;
    if let Err(reason) = crate::offload::normalize(pkt, mss, true, pool, |p, pool| enqueue_host(ports, pool, p)) {
        if let Some(p) = ports.get_mut(in_port) {
            p.counters.drop(reason);
        }
    }
}

fn enqueue_host(ports: &mut [Port], pool: &mut PacketPool, pkt: crate::packet::Packet) {
    let p = &mut ports[pkt.meta.in_port as usize];
    match p.host.enqueue(pkt) {
        Ok(()) => p.counters.local_packets += 1,
        Err(pkt) => {
            p.counters.drop(DropReason::HostStackBacklog);
            pool.free(pkt);
        }
    }
}
