//! The dataplane: ports, their counters and host stacks, and the ingress
//! classification every received packet goes through.
//!
//! For each packet the verdict is one of: hand to the appliance's own host
//! stack (ARP, and IPv4 addressed to the port), or drop with a named reason.
//! Forwarding verdicts arrive with the router stage; until then an IPv4 packet
//! for any other address is dropped as `no_route`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::{
    ArpHardware, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet,
};

use crate::config::Config;
use crate::counters::{DropReason, PortCounters};
use crate::hoststack::{HostStack, TxQueue};
use crate::packet::{Batch, PacketPool, PortId};
use crate::Micros;

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// For the appliance itself.
    Local,
    Drop(DropReason),
}

/// One port: identity, counters, host stack and transmit queue.
pub struct Port {
    pub name: String,
    pub mac: [u8; 6],
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
    pub counters: PortCounters,
    pub host: HostStack,
    pub tx: TxQueue,
}

/// How often the host stacks run when nothing arrives for them (ARP cache
/// and, later, TCP timers).
const HOST_POLL_INTERVAL: Micros = 100_000;

pub struct Dataplane {
    ports: Vec<Port>,
    last_host_poll: Micros,
}

impl Dataplane {
    /// Builds the ports of `config`; `macs[i]` is the MAC of port `i`'s NIC
    /// (or the configured MAC).
    pub fn new(config: &Config, macs: &[[u8; 6]], now: Micros, seed: u64) -> Self {
        let ports = config
            .ports
            .iter()
            .zip(macs)
            .enumerate()
            .map(|(i, (pc, mac))| Port {
                name: pc.name.clone(),
                mac: *mac,
                address: pc.address,
                mtu: pc.mtu,
                counters: PortCounters::default(),
                host: HostStack::new(*mac, pc.address, pc.mtu, now, seed ^ i as u64),
                tx: TxQueue::new(),
            })
            .collect();
        Dataplane {
            ports,
            last_host_poll: now,
        }
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    pub fn port_mut(&mut self, id: PortId) -> &mut Port {
        &mut self.ports[id as usize]
    }

    /// Queues one gratuitous ARP per addressed port, so neighbours learn the
    /// appliance's MAC at start.
    pub fn announce(&mut self, pool: &mut PacketPool) {
        for port in &mut self.ports {
            if let Some(p) = port.host.gratuitous_arp(pool) {
                if let Err(p) = port.tx.push_back(p) {
                    pool.free(p);
                }
            }
        }
    }

    /// Processes a burst received on `port`. Every packet leaves the batch:
    /// to the host stack, or back to the pool with a drop counted.
    pub fn receive(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool) {
        let p = &mut self.ports[port as usize];
        for mut pkt in batch.drain(..) {
            pkt.meta.in_port = port;
            p.counters.rx_packets += 1;
            p.counters.rx_bytes += pkt.len() as u64;
            match classify(p.mac, p.address, pkt.data()) {
                Verdict::Local => match p.host.enqueue(pkt) {
                    Ok(()) => p.counters.local_packets += 1,
                    Err(pkt) => {
                        p.counters.drop(DropReason::HostStackBacklog);
                        pool.free(pkt);
                    }
                },
                Verdict::Drop(reason) => {
                    p.counters.drop(reason);
                    pool.free(pkt);
                }
            }
        }
    }

    /// Runs the host stacks that have work, and all of them now and then for
    /// their timers.
    pub fn poll_host(&mut self, now: Micros, pool: &mut PacketPool) {
        let timers_due = now.wrapping_sub(self.last_host_poll) >= HOST_POLL_INTERVAL;
        if timers_due {
            self.last_host_poll = now;
        }
        for port in &mut self.ports {
            if timers_due || port.host.has_work() {
                port.host.poll(now, pool, &mut port.tx);
            }
        }
    }

    /// Returns every buffer the dataplane holds to the pool.
    pub fn drain(&mut self, pool: &mut PacketPool) {
        for port in &mut self.ports {
            port.host.drain(pool);
            while let Some(p) = port.tx.pop_front() {
                pool.free(p);
            }
        }
    }

    /// Writes the counters, one line per port:
    /// `stats port=NAME rx_packets=N ... drop_REASON=N` (non-zero drops only).
    pub fn write_stats(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        for p in &self.ports {
            let c = &p.counters;
            write!(
                w,
                "stats port={} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} local_packets={} drops={}",
                p.name,
                c.rx_packets,
                c.rx_bytes,
                c.tx_packets,
                c.tx_bytes,
                c.local_packets,
                c.total_drops()
            )?;
            for r in DropReason::ALL {
                let n = c.dropped(*r);
                if n != 0 {
                    write!(w, " drop_{}={}", r.name(), n)?;
                }
            }
            writeln!(w)?;
        }
        Ok(())
    }
}

/// Decides what happens to a frame received on a port with `mac` and `address`.
pub fn classify(mac: [u8; 6], address: Option<Ipv4Net>, frame: &[u8]) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::Drop(DropReason::EthTruncated);
    };
    let dst = eth.dst_addr();
    if dst != EthernetAddress(mac) && !dst.is_broadcast() && !dst.is_multicast() {
        return Verdict::Drop(DropReason::NotOurMac);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()) {
            Ok(arp)
                if arp.hardware_type() == ArpHardware::Ethernet
                    && arp.protocol_type() == EthernetProtocol::Ipv4 =>
            {
                Verdict::Local
            }
            _ => Verdict::Drop(DropReason::ArpMalformed),
        },
        EthernetProtocol::Ipv4 => match check_ipv4(eth.payload()) {
            Err(reason) => Verdict::Drop(reason),
            Ok(dst) if is_local(dst, address) => Verdict::Local,
            Ok(_) => Verdict::Drop(DropReason::NoRoute),
        },
        EthernetProtocol::Ipv6 => Verdict::Drop(DropReason::Ipv6Unsupported),
        EthernetProtocol::Unknown(_) => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

fn is_local(dst: Ipv4Addr, address: Option<Ipv4Net>) -> bool {
    dst.is_broadcast()
        || address.is_some_and(|a| dst == a.addr() || (a.prefix_len() < 31 && dst == a.broadcast()))
}

/// Validates an IPv4 header against the frame it came in (RFC 1812 §5.2.2)
/// and returns the destination address.
pub fn check_ipv4(bytes: &[u8]) -> Result<Ipv4Addr, DropReason> {
    if bytes.len() < 20 {
        return Err(DropReason::Ipv4Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(bytes);
    if ip.version() != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    let ihl = ip.header_len() as usize;
    let total = ip.total_len() as usize;
    if ihl < 20 || total < ihl {
        return Err(DropReason::Ipv4BadHeaderLen);
    }
    if ihl > bytes.len() || total > bytes.len() {
        return Err(DropReason::Ipv4Truncated);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    Ok(ip.dst_addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::packet::BURST;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::string::String;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn net() -> Option<Ipv4Net> {
        Some("10.0.0.1/24".parse().unwrap())
    }

    #[test]
    fn classification_of_real_frames() {
        assert_eq!(
            classify(MAC, net(), &arp_request(PEER_MAC, PEER_IP, ME)),
            Verdict::Local
        );
        assert_eq!(
            classify(MAC, net(), &echo_request(MAC, PEER_IP, ME, 1, b"x")),
            Verdict::Local
        );
        let other = echo_request(MAC, PEER_IP, Ipv4Addr::new(192, 0, 2, 1), 1, b"x");
        assert_eq!(
            classify(MAC, net(), &other),
            Verdict::Drop(DropReason::NoRoute)
        );
        let not_mine = echo_request([2, 0, 0, 0, 0, 5], PEER_IP, ME, 1, b"x");
        assert_eq!(
            classify(MAC, net(), &not_mine),
            Verdict::Drop(DropReason::NotOurMac)
        );
        assert_eq!(
            classify(MAC, net(), &[0; 13]),
            Verdict::Drop(DropReason::EthTruncated)
        );
    }

    #[test]
    fn malformed_ipv4_gets_the_right_reason() {
        let good = echo_request(MAC, PEER_IP, ME, 1, b"abcdefgh");
        let with = |f: &dyn Fn(&mut std::vec::Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            classify(MAC, net(), &v)
        };
        assert_eq!(
            with(&|v| v.truncate(14 + 19)),
            Verdict::Drop(DropReason::Ipv4Truncated)
        );
        assert_eq!(
            with(&|v| v.truncate(v.len() - 1)),
            Verdict::Drop(DropReason::Ipv4Truncated)
        );
        assert_eq!(
            with(&|v| v[14] = 0x65),
            Verdict::Drop(DropReason::Ipv4BadVersion)
        );
        assert_eq!(
            with(&|v| v[14] = 0x44),
            Verdict::Drop(DropReason::Ipv4BadHeaderLen)
        );
        assert_eq!(
            with(&|v| v[24] ^= 0xff),
            Verdict::Drop(DropReason::Ipv4BadChecksum)
        );
        assert_eq!(
            with(&|v| {
                v[12] = 0x88;
                v[13] = 0xb5
            }),
            Verdict::Drop(DropReason::UnknownEthertype)
        );
        assert_eq!(
            with(&|v| {
                v[12] = 0x86;
                v[13] = 0xdd
            }),
            Verdict::Drop(DropReason::Ipv6Unsupported)
        );
        // Ethernet padding after the IPv4 total length is fine.
        assert_eq!(with(&|v| v.extend_from_slice(&[0; 10])), Verdict::Local);
    }

    fn dataplane() -> Dataplane {
        let cfg =
            config::parse("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24").unwrap();
        Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7)
    }

    #[test]
    fn receive_counts_and_answers() {
        let mut pool = PacketPool::new(64);
        let mut dp = dataplane();
        let mut batch = Batch::new();
        for frame in [
            arp_request(PEER_MAC, PEER_IP, ME),
            echo_request(MAC, PEER_IP, ME, 3, b"ping"),
            std::vec![0xff; 60],
        ] {
            let mut p = pool.alloc().unwrap();
            p.fill(&frame);
            batch.push(p).unwrap();
        }
        dp.receive(0, &mut batch, &mut pool);
        assert!(batch.is_empty());
        dp.poll_host(1, &mut pool);
        let port = &dp.ports()[0];
        assert_eq!(port.counters.rx_packets, 3);
        assert_eq!(port.counters.local_packets, 2);
        assert_eq!(port.tx.len(), 2, "ARP reply and echo reply");
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        assert!(s.starts_with("stats port=lan rx_packets=3 "), "{s}");
        assert!(s.contains(" drop_unknown_ethertype=1\n"), "{s}");
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn announce_queues_one_gratuitous_arp_per_port() {
        let mut pool = PacketPool::new(8);
        let mut dp = dataplane();
        dp.announce(&mut pool);
        assert_eq!(dp.ports()[0].tx.len(), 1);
        assert_eq!(dp.ports()[1].tx.len(), 1);
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 8);
    }

    proptest! {
        // Random bytes, and random mutations of valid frames, never panic and
        // never leak a buffer.
        #[test]
        fn random_frames_never_panic_or_leak(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..BURST),
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
        ) {
            let mut pool = PacketPool::new(BURST * 2);
            let mut dp = dataplane();
            let mut batch = Batch::new();
            for (i, f) in frames.iter().enumerate() {
                let mut p = pool.alloc().unwrap();
                let mut bytes = if i % 2 == 0 { f.clone() } else { echo_request(MAC, PEER_IP, ME, 1, f) };
                for (at, v) in &flips {
                    if let Some(b) = bytes.get_mut(*at) { *b = *v; }
                }
                p.fill(&bytes);
                batch.push(p).unwrap();
            }
            dp.receive(0, &mut batch, &mut pool);
            dp.poll_host(1, &mut pool);
            dp.drain(&mut pool);
            prop_assert_eq!(pool.available(), BURST * 2);
        }
    }
}
