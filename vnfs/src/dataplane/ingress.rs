//! Ingress: what happens to a received frame before any stage sees it.
//! The L2 header is checked once here (and, with it, the IPv4 header),
//! ARP is answered or learnt, and the reverse-path check applied.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;
use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet,
};

use crate::config::{self, Config};
use crate::counters::DropReason;
use crate::port::Port;

/// What ingress decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// ARP: the egress learns from it, the host stack answers it.
    Arp,
    /// IPv4 to one of the appliance's addresses (or a broadcast).
    Local,
    /// IPv6 to one of the appliance's addresses or a group its ports
    /// listen to (all nodes, all routers, solicited-node): for the port's
    /// IPv6 host (neighbour discovery, echo).
    Local6,
    /// IPv4 to be routed: for the input port's pipeline.
    Pipeline,
    Drop(DropReason),
}

/// A port's reverse-path refusals, ready for the per-packet check: the
/// appliance's own addresses (with NAT pools and VIPs, dozens of /32s)
/// sorted for a binary search, and the few prefixes with their masks
/// worked out. (A scan of `Ipv4Net::contains` over 34 entries, each
/// computing its mask, was a tenth of the NAT's packet in the host bench.)
#[derive(Clone, Debug, Default)]
pub(super) struct Refused {
    hosts: Vec<u32>,
    nets: Vec<(u32, u32)>,
}

impl Refused {
    pub(super) fn new(v: &[Ipv4Net]) -> Refused {
        let mut r = Refused::default();
        for n in v {
            if n.prefix_len() == 32 {
                r.hosts.push(u32::from(n.addr()));
            } else {
                r.nets.push((u32::from(n.network()), u32::from(n.netmask())));
            }
        }
        r.hosts.sort_unstable();
        r.hosts.dedup();
        r
    }

    pub(super) fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    pub(super) fn refuses(&self, src: Ipv4Addr) -> bool {
        let a = u32::from(src);
        self.hosts.binary_search(&a).is_ok() || self.nets.iter().any(|&(net, mask)| a & mask == net)
    }
}

/// Per port, the sources its reverse-path check refuses (see
/// [`config::Rpf`]).
pub(super) fn rpf_of(config: &Config, local: &[Ipv4Addr]) -> Vec<Refused> {
    let mgmt = config.management.as_ref().map(|m| m.port);
    let own = || local.iter().map(|a| Ipv4Net::new(*a, 32).expect("a /32 is valid"));
    config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v: Vec<Ipv4Net> = match p.rpf.unwrap_or(config::Rpf::Loose) {
                config::Rpf::Off => Vec::new(),
                config::Rpf::Loose => {
                    let m = mgmt.filter(|m| *m != i).and_then(|m| config.ports[m].address).map(|a| a.trunc());
                    own().chain(m).collect()
                }
                // Other ports of the same VRF (another VRF may reuse this
                // port's own prefix).
                config::Rpf::Strict => config
                    .ports
                    .iter()
                    .enumerate()
                    .filter(|(j, q)| *j != i && q.vrf == p.vrf)
                    .filter_map(|(_, q)| q.address.map(|a| a.trunc()))
                    .chain(own())
                    .collect(),
            };
            Refused::new(&v)
        })
        .collect()
}

/// Per port, the destinations refused on arrival (see
/// [`config::StageConfig::inbound_refused`]): (network, mask, reason).
pub(super) fn inbound_refused_of(config: &Config) -> Vec<Vec<(u32, u32, DropReason)>> {
    let mut v: Vec<Vec<(u32, u32, DropReason)>> = alloc::vec![Vec::new(); config.ports.len()];
    for s in &config.stages {
        for (port, net, reason) in s.config.inbound_refused(config) {
            if let Some(p) = v.get_mut(port) {
                p.push((u32::from(net.network()), u32::from(net.netmask()), reason));
            }
        }
    }
    v
}

/// The same check for IPv6 sources: the appliance's own addresses
/// (`local6`, link-local ones included) and the management port's
/// prefixes on every port with a check, and with `rpf strict` the other
/// ports' IPv6 prefixes too.
pub(super) fn rpf6_of(config: &Config, local6: &[Ipv6Addr]) -> Vec<Vec<ipnet::Ipv6Net>> {
    let mgmt = config.management.as_ref().map(|m| m.port);
    let own = || local6.iter().map(|a| ipnet::Ipv6Net::new(*a, 128).expect("a /128 is valid"));
    config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v: Vec<ipnet::Ipv6Net> = match p.rpf.unwrap_or(config::Rpf::Loose) {
                config::Rpf::Off => Vec::new(),
                config::Rpf::Loose => {
                    let m = mgmt.filter(|m| *m != i).map_or(&[][..], |m| config.ports[m].address6.as_slice());
                    own().chain(m.iter().map(|a| a.trunc())).collect()
                }
                config::Rpf::Strict => config
                    .ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, q)| q.address6.iter().map(|a| a.trunc()))
                    .chain(own())
                    .collect(),
            };
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect()
}

/// An ARP request for one of the appliance's addresses from a sender
/// outside the port's subnet: (sender MAC, sender IP, target IP). Linux asks
/// this way when the packet it wants to send has a source address from
/// another interface (a loopback service address, a multi-homed host);
/// RFC 826 answers every request whose target is ours. smoltcp ignores such
/// requests, so the dataplane answers them itself. Requests from on-link
/// senders go to the host stack as before. A sender on the subnet of
/// another of the appliance's ports is not answered here (that port
/// answers it): two ports on one segment would otherwise both claim the
/// address and the sender would pick either MAC (ARP flux; Linux's
/// `arp_filter`).
pub(super) fn off_link_request(
    port: &Port,
    local: &[Ipv4Addr],
    arp: &ArpRepr,
    on_another_port: impl Fn(Ipv4Addr) -> bool,
) -> Option<([u8; 6], Ipv4Addr, Ipv4Addr)> {
    let ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = *arp
    else {
        return None;
    };
    let sender_ok = source_hardware_addr.is_unicast()
        && !source_protocol_addr.is_unspecified()
        && !source_protocol_addr.is_broadcast()
        && !source_protocol_addr.is_multicast();
    let on_link = port.address.is_some_and(|a| a.contains(&source_protocol_addr));
    let ours = local.binary_search(&target_protocol_addr).is_ok();
    (sender_ok && !on_link && ours && !on_another_port(source_protocol_addr)).then_some((
        source_hardware_addr.0,
        source_protocol_addr,
        target_protocol_addr,
    ))
}

/// Turns the request in `pkt` into the reply, in place.
pub(super) fn answer_arp(
    pkt: &mut crate::packet::Packet,
    mac: [u8; 6],
    (peer_mac, peer_ip, ours): &([u8; 6], Ipv4Addr, Ipv4Addr),
) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: *ours,
        target_hardware_addr: EthernetAddress(*peer_mac),
        target_protocol_addr: *peer_ip,
    };
    let eth = smoltcp::wire::EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress(*peer_mac),
        ethertype: EthernetProtocol::Arp,
    };
    pkt.set_len(eth.buffer_len() + arp.buffer_len());
    pkt.meta.offload = Default::default();
    let mut frame = EthernetFrame::new_unchecked(pkt.data_mut());
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

pub(super) fn arp_of(frame: &[u8]) -> Option<ArpRepr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
}

/// Decides what happens to a frame received on a port with `mac` and
/// `address`; `local` holds every address of the appliance (a few: scanned).
/// `frame` is the frame's first buffer; `frame_len` counts the whole frame
/// (a chained frame continues in further buffers).
/// `local6` holds the appliance's IPv6 addresses, sorted; `v6` says
/// whether the port has IPv6 at all.
pub fn classify(
    (mac, address, v6): ([u8; 6], Option<Ipv4Net>, bool),
    local: &[Ipv4Addr],
    (local6, vips6): (&[Ipv6Addr], &[Ipv6Addr]),
    frame: &[u8],
    frame_len: usize,
) -> Verdict {
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
                if arp.hardware_type() == ArpHardware::Ethernet && arp.protocol_type() == EthernetProtocol::Ipv4 =>
            {
                Verdict::Arp
            }
            _ => Verdict::Drop(DropReason::ArpMalformed),
        },
        EthernetProtocol::Ipv4 => match check_ipv4(eth.payload(), frame_len.saturating_sub(crate::wire::ETH_HLEN)) {
            Err(reason) => Verdict::Drop(reason),
            Ok(ip) if ip.is_broadcast() || local.contains(&ip) => Verdict::Local,
            Ok(ip) if address.is_some_and(|a| a.prefix_len() < 31 && ip == a.broadcast()) => Verdict::Local,
            // Multicast and broadcast frames are for the link, not for routing.
            Ok(_) if !dst.is_unicast() => Verdict::Drop(DropReason::MartianDestination),
            Ok(_) => Verdict::Pipeline,
        },
        EthernetProtocol::Ipv6 if !v6 => Verdict::Drop(DropReason::Ipv6Unsupported),
        EthernetProtocol::Ipv6 => {
            match crate::ipv6::check_ipv6(eth.payload(), frame_len.saturating_sub(crate::wire::ETH_HLEN)) {
                Err(reason) => Verdict::Drop(reason),
                Ok(ip) if ip.is_multicast() => {
                    let listened = ip == crate::ipv6::ALL_NODES
                        || ip == crate::ipv6::ALL_ROUTERS
                        || crate::ipv6::is_solicited_node(&ip);
                    if listened {
                        Verdict::Local6
                    } else {
                        // Multicast is for the link: sluice routes none.
                        Verdict::Drop(DropReason::MartianDestination)
                    }
                }
                Ok(ip) if local6.binary_search(&ip).is_ok() => Verdict::Local6,
                // A stage's address (an IPv6 VIP): for the pipeline.
                Ok(ip) if vips6.binary_search(&ip).is_ok() => Verdict::Local,
                Ok(_) if !dst.is_unicast() => Verdict::Drop(DropReason::MartianDestination),
                Ok(_) => Verdict::Pipeline,
            }
        }
        EthernetProtocol::Unknown(_) => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// Validates an IPv4 header against the frame it came in (RFC 1812 §5.2.2)
/// and returns the destination address. `bytes` starts at the header (all
/// of it must be there); `available` counts the datagram's bytes in the
/// whole frame, further buffers included.
pub fn check_ipv4(bytes: &[u8], available: usize) -> Result<Ipv4Addr, DropReason> {
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
    if ihl > bytes.len() || total > available.max(bytes.len()) {
        return Err(DropReason::Ipv4Truncated);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    Ok(ip.dst_addr())
}
