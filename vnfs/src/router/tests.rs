//! Router behaviour on real frames through the whole dataplane.

use core::net::Ipv4Addr;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4DstUnreachable, Icmpv4Message,
    Icmpv4Packet, Icmpv4TimeExceeded, Ipv4Packet,
};

use super::decrement_ttl;
use crate::counters::DropReason;
use crate::testutil::*;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const WAN_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];

impl Rig {
    /// lan and wan (MTU 1400), routing; `extra` adds statements.
    fn router(extra: &str) -> Rig {
        Rig::with_config(
            &std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 mtu 1400\n{extra}"),
            &[LAN_MAC, WAN_MAC],
        )
    }

    /// Lets both hosts be known neighbours (as after ARP).
    fn learn_hosts(&mut self) {
        self.send(0, &arp_request(PEER_MAC, LAN_HOST, Ipv4Addr::new(10, 0, 0, 1)));
        self.send(1, &arp_reply(WAN_HOST_MAC, WAN_HOST, WAN_MAC, Ipv4Addr::new(10, 1, 0, 1)));
        self.sent(0);
        self.sent(1);
    }
}

fn ip_of(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum(), "bad IPv4 checksum");
    ip
}

/// An ICMP error's type, code, bytes 4..8 and quoted datagram. (smoltcp's
/// Repr insists on 8 bytes of quoted data and an untruncated quote; RFC 1812
/// errors about short or long datagrams have neither.)
struct IcmpErr {
    ty: Icmpv4Message,
    code: u8,
    rest: [u8; 4],
    quoted: Vec<u8>,
}

fn icmp_of(frame: &[u8]) -> IcmpErr {
    let ip = ip_of(frame);
    let bytes = &frame[14 + ip.header_len() as usize..14 + ip.total_len() as usize];
    let icmp = Icmpv4Packet::new_checked(bytes).unwrap();
    assert!(icmp.verify_checksum(), "bad ICMP checksum");
    IcmpErr {
        ty: icmp.msg_type(),
        code: icmp.msg_code(),
        rest: bytes[4..8].try_into().unwrap(),
        quoted: bytes[8..].to_vec(),
    }
}

fn quoted_dst(e: &IcmpErr) -> Ipv4Addr {
    Ipv4Packet::new_unchecked(&e.quoted[..]).dst_addr()
}

#[test]
fn forwards_after_resolving_the_next_hop() {
    let mut r = Rig::router("");
    let frame = ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 64, true, b"hello world");
    r.send(0, &frame);
    // The packet waits; an ARP request goes out of wan.
    let arp = r.sent(1);
    assert_eq!(arp.len(), 1);
    let req = ArpRepr::parse(&ArpPacket::new_checked(&arp[0][14..]).unwrap()).unwrap();
    assert!(
        matches!(req, ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, target_protocol_addr, source_protocol_addr, .. }
        if target_protocol_addr == WAN_HOST && source_protocol_addr == Ipv4Addr::new(10, 1, 0, 1))
    );
    // The reply releases it, rewritten.
    r.send(1, &arp_reply(WAN_HOST_MAC, WAN_HOST, WAN_MAC, Ipv4Addr::new(10, 1, 0, 1)));
    let out = r.sent(1);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(eth.dst_addr().0, WAN_HOST_MAC);
    assert_eq!(eth.src_addr().0, WAN_MAC);
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = ip_of(&out[0]);
    assert_eq!(ip.hop_limit(), 63);
    assert_eq!(ip.payload(), b"hello world");
    // Later packets go straight out.
    r.send(0, &frame);
    assert_eq!(r.sent(1).len(), 1);
    r.finish();
}

#[test]
fn ttl_expiry_gets_time_exceeded_from_the_ingress_address() {
    let mut r = Rig::router("");
    r.learn_hosts();
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 1, false, b"probe"));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    let ip = ip_of(&out[0]);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::new(10, 0, 0, 1), LAN_HOST));
    assert_eq!(EthernetFrame::new_checked(&out[0][..]).unwrap().dst_addr().0, PEER_MAC);
    let e = icmp_of(&out[0]);
    assert_eq!((e.ty, Icmpv4TimeExceeded::from(e.code)), (Icmpv4Message::TimeExceeded, Icmpv4TimeExceeded::TtlExpired));
    assert_eq!(quoted_dst(&e), WAN_HOST);
    assert_eq!(e.rest, [0; 4]);
    assert!(r.sent(1).is_empty());
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::TtlExpired), 1);
    r.finish();
}

#[test]
fn unrouted_prefix_gets_net_unreachable() {
    let mut r = Rig::router("");
    r.learn_hosts();
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, Ipv4Addr::new(192, 0, 2, 1), 64, false, b"x"));
    let out = r.sent(0);
    let e = icmp_of(&out[0]);
    assert_eq!(
        (e.ty, Icmpv4DstUnreachable::from(e.code)),
        (Icmpv4Message::DstUnreachable, Icmpv4DstUnreachable::NetUnreachable)
    );
    assert_eq!(quoted_dst(&e), Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::NoRoute), 1);
    r.finish();
}

#[test]
fn df_over_mtu_gets_frag_needed_with_the_next_hop_mtu() {
    let mut r = Rig::router("");
    r.learn_hosts();
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 64, true, &[7; 1480]));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    let e = icmp_of(&out[0]);
    assert_eq!(
        (e.ty, Icmpv4DstUnreachable::from(e.code)),
        (Icmpv4Message::DstUnreachable, Icmpv4DstUnreachable::FragRequired)
    );
    assert_eq!(e.rest, [0, 0, 0x05, 0x78], "next-hop MTU 1400");
    assert_eq!(e.quoted.len(), 576 - 28, "quote capped at 576 bytes in all");
    assert!(r.sent(1).is_empty());
    r.finish();
}

#[test]
fn df_clear_over_mtu_is_fragmented_and_reassembles() {
    let mut r = Rig::router("");
    r.learn_hosts();
    let payload: Vec<u8> = (0..1800u32).map(|i| i as u8).collect();
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 64, false, &payload));
    let frags = r.sent(1);
    assert_eq!(frags.len(), 2);
    let mut joined = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        let ip = ip_of(f);
        assert!(ip.total_len() <= 1400);
        assert_eq!(ip.frag_offset() as usize, joined.len());
        assert_eq!(ip.more_frags(), i < 1);
        assert_eq!(ip.ident(), 0x1234);
        assert_eq!(ip.hop_limit(), 63);
        assert!(i == 1 || ip.payload().len().is_multiple_of(8));
        joined.extend_from_slice(ip.payload());
    }
    assert_eq!(joined, payload);
    r.finish();
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut r = Rig::router("router icmp-rate 1 icmp-burst 2");
    r.learn_hosts();
    for _ in 0..5 {
        r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 1, false, b"x"));
    }
    assert_eq!(r.sent(0).len(), 2);
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::TtlExpired), 5);
    // The limit is per source: another host on the link still gets its
    // errors (one global bucket once let a single host starve everyone).
    let other = Ipv4Addr::new(10, 0, 0, 3);
    r.send(0, &arp_reply(PEER_MAC, other, LAN_MAC, Ipv4Addr::new(10, 0, 0, 1)));
    r.sent(0);
    r.send(0, &ipv4_frame(LAN_MAC, other, WAN_HOST, 1, false, b"x"));
    assert_eq!(r.sent(0).len(), 1, "the other source's error is sent");
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    assert!(s.contains(" icmp_errors=3 icmp_rate_limited=3 "), "{s}");
    r.now = 1_000_000;
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 1, false, b"x"));
    assert_eq!(r.sent(0).len(), 1, "a token came back after a second");
    r.finish();
}

/// The ICMP destination unreachable in `frame`: (code, quoted destination, quoted TTL).
fn unreachable_of(frame: &[u8]) -> (u8, Ipv4Addr, u8) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    let quoted = Ipv4Packet::new_unchecked(icmp.data());
    (icmp.msg_code(), quoted.dst_addr(), quoted.hop_limit())
}

#[test]
fn silent_next_hop_is_asked_three_times_then_answered_host_unreachable() {
    let mut r = Rig::router("");
    r.learn_hosts();
    let silent = Ipv4Addr::new(10, 1, 0, 77);
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, silent, 64, false, b"x"));
    for t in 1..=4 {
        r.now = t * 1_000_000;
        // The sweep visits a few slots per turn: turn enough for all of them.
        for _ in 0..200 {
            r.dp.poll(r.now, &mut r.pool);
        }
    }
    let requests = r.sent(1).len();
    assert_eq!(requests, 3, "one request a second, three in all");
    // RFC 1812 §5.2.7.1: the source hears host unreachable, quoting its packet as sent.
    let back = r.sent(0);
    assert_eq!(back.len(), 1);
    assert_eq!(unreachable_of(&back[0]), (1, silent, 64));
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::NeighborUnreachable), 1);
    // During the hold-down new packets are refused at once, without asking again.
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, silent, 64, false, b"y"));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.sent(0).len(), 1, "answered at once");
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::NeighborUnreachable), 2);
    r.finish();
}

#[test]
fn static_route_via_a_gateway_resolves_the_gateway() {
    let mut r = Rig::router("route 172.16.0.0/12 via 10.1.0.254");
    r.learn_hosts();
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, Ipv4Addr::new(172, 16, 5, 5), 64, false, b"x"));
    let arp = r.sent(1);
    let req = ArpRepr::parse(&ArpPacket::new_checked(&arp[0][14..]).unwrap()).unwrap();
    assert!(
        matches!(req, ArpRepr::EthernetIpv4 { target_protocol_addr, .. } if target_protocol_addr == Ipv4Addr::new(10, 1, 0, 254))
    );
    r.finish();
}

#[test]
fn no_errors_about_icmp_errors_and_martians_are_dropped() {
    let mut r = Rig::router("");
    r.learn_hosts();
    let mut err = ipv4_frame(LAN_MAC, LAN_HOST, WAN_HOST, 1, false, &[3, 0, 0, 0, 0, 0, 0, 0]);
    err[14 + 9] = 1; // protocol ICMP, type 3: an error
    let mut ip = Ipv4Packet::new_unchecked(&mut err[14..]);
    ip.fill_checksum();
    r.send(0, &err);
    assert!(r.sent(0).is_empty());
    r.send(0, &ipv4_frame(LAN_MAC, Ipv4Addr::new(127, 0, 0, 1), WAN_HOST, 64, false, b"x"));
    r.send(0, &ipv4_frame(LAN_MAC, LAN_HOST, Ipv4Addr::new(224, 0, 0, 5), 64, false, b"x"));
    let c = &r.dp.ports()[0].counters;
    assert_eq!(c.dropped(DropReason::MartianSource), 1);
    assert_eq!(c.dropped(DropReason::MartianDestination), 1);
    r.finish();
}

fn checksum_from_scratch(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for (i, w) in h.chunks(2).enumerate() {
        if i != 5 {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

proptest! {
    #[test]
    fn incremental_ttl_update_equals_recomputation(mut header in proptest::collection::vec(any::<u8>(), 20), ttl in 1u8..=255) {
        header[8] = ttl;
        let c = checksum_from_scratch(&header);
        header[10..12].copy_from_slice(&c.to_be_bytes());
        decrement_ttl(&mut header);
        prop_assert_eq!(header[8], ttl - 1);
        let fresh = checksum_from_scratch(&header);
        // 0x0000 and 0xffff are the same in ones' complement.
        let got = u16::from_be_bytes([header[10], header[11]]);
        prop_assert!(got == fresh || (got == 0xffff && fresh == 0) || (got == 0 && fresh == 0xffff), "{got:#x} vs {fresh:#x}");
    }
}

#[test]
fn only_copied_options_follow_into_later_fragments() {
    let mut out = [0u8; 40];
    // security-like copied option (0x82, len 4), record route (7, not copied), NOP, EOL.
    let opts = [0x82, 4, 0xaa, 0xbb, 7, 3, 4, 1, 0, 0, 0, 0];
    let n = crate::egress::copied_options(&opts, &mut out);
    assert_eq!(&out[..n], &[0x82, 4, 0xaa, 0xbb]);
    // Malformed lengths stop the walk instead of panicking.
    assert_eq!(crate::egress::copied_options(&[0x83, 0], &mut out), 0);
    assert_eq!(crate::egress::copied_options(&[0x83, 40], &mut out), 0);
}
