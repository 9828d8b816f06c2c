//! IPv6 through a real dataplane: every message sluice sends is parsed
//! back with smoltcp's wire types and checked field by field.

use core::net::Ipv6Addr;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, Icmpv6TimeExceeded, Ipv6Packet, NdiscNeighborFlags,
    NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
};

use super::*;
use crate::counters::DropReason;
use crate::testutil::Rig;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const CONFIG: &str = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                      port wan address 10.1.0.1/24 address 2001:db8:0:2::1/64 mtu 1280\n\
                      route 2001:db8:99::/48 via 2001:db8:0:2::9\n\
                      ra lan interval 4 managed\n\
                      router\n";

/// A rig whose addresses passed duplicate address detection.
fn rig() -> Rig {
    let mut r = Rig::with_config(CONFIG, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    known(&mut r, a("2001:db8:0:1::2"), a("2001:db8:0:1::1"));
    r
}

/// The lan host `from` makes itself known (its solicitation for `target`).
fn known(r: &mut Rig, from: Ipv6Addr, target: Ipv6Addr) {
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)),
    });
    r.send(0, &icmp6(LAN_MAC, from, solicited_node(target), 255, &ns));
    let _ = r.sent(0);
}

/// An Ethernet + IPv6 frame.
fn v6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    crate::testutil::ipv6_frame((dst_mac, HOST_MAC), src, dst, hops, next, payload)
}

fn icmp6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, repr: &Icmpv6Repr<'_>) -> Vec<u8> {
    crate::testutil::icmpv6_frame((dst_mac, HOST_MAC), src, dst, hops, repr)
}

fn udp6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, len: usize) -> Vec<u8> {
    let mut body = std::vec![0u8; 8 + len];
    body[0..2].copy_from_slice(&40000u16.to_be_bytes());
    body[2..4].copy_from_slice(&33434u16.to_be_bytes());
    body[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    v6(dst_mac, src, dst, hops, UDP, &body)
}

/// (IPv6 header, ICMPv6 bytes) of a frame sluice sent, the checksum verified.
fn parse(frame: &[u8]) -> (Ipv6Packet<&[u8]>, Icmpv6Packet<&[u8]>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), smoltcp::wire::EthernetProtocol::Ipv6);
    let ip = Ipv6Packet::new_checked(&frame[ETH_HLEN..]).unwrap();
    assert_eq!(ip.next_header(), smoltcp::wire::IpProtocol::Icmpv6);
    let icmp = Icmpv6Packet::new_checked(&frame[ETH_HLEN + HLEN..ETH_HLEN + HLEN + ip.payload_len() as usize]).unwrap();
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()), "bad ICMPv6 checksum");
    (ip, icmp)
}

fn repr<'a>(ip: &Ipv6Packet<&[u8]>, icmp: &'a Icmpv6Packet<&'a [u8]>) -> Icmpv6Repr<'a> {
    Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), icmp, &ChecksumCapabilities::default()).unwrap()
}

#[test]
fn addresses_are_checked_by_dad_then_announced() {
    let mut r = Rig::with_config(CONFIG, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    let ns: Vec<_> = r.sent(0).into_iter().filter(|f| f[12..14] == ETHERTYPE).collect();
    let targets: Vec<Ipv6Addr> = ns
        .iter()
        .map(|f| {
            let (ip, icmp) = parse(f);
            assert_eq!(ip.src_addr(), Ipv6Addr::UNSPECIFIED);
            assert_eq!(ip.hop_limit(), 255);
            match repr(&ip, &icmp) {
                Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr: None }) => {
                    assert_eq!(ip.dst_addr(), solicited_node(target_addr));
                    assert_eq!(f[0..6], multicast_mac(solicited_node(target_addr)));
                    target_addr
                }
                other => panic!("not a DAD solicitation: {other:?}"),
            }
        })
        .collect();
    assert_eq!(targets, [link_local(LAN_MAC), a("2001:db8:0:1::1")]);
    // Tentative: an echo to it is not answered.
    let ping = Icmpv6Repr::EchoRequest { ident: 1, seq_no: 1, data: b"x" };
    r.send(0, &icmp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:1::1"), 64, &ping));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(0, DropReason::Ipv6Tentative), 1);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let na: Vec<_> = r.sent(0).into_iter().filter(|f| f[12..14] == ETHERTYPE).collect();
    assert_eq!(na.len() + 1, 4, "two unsolicited NAs and the first RA: {na:?}");
    for f in &na[..2] {
        let (ip, icmp) = parse(f);
        match repr(&ip, &icmp) {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, lladdr: Some(l), .. }) => {
                assert!(flags.contains(NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE));
                assert!(!flags.contains(NdiscNeighborFlags::SOLICITED));
                assert_eq!(l.as_bytes(), LAN_MAC);
                assert_eq!(ip.dst_addr(), ALL_NODES);
            }
            other => panic!("not an unsolicited NA: {other:?}"),
        }
    }
    r.finish();
}

#[test]
fn a_solicitation_for_our_address_is_answered_and_its_sender_learned() {
    let mut r = rig();
    let host = a("2001:db8:0:1::2");
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: a("2001:db8:0:1::1"),
        lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)),
    });
    let out = r.through(0, &icmp6(LAN_MAC, host, solicited_node(a("2001:db8:0:1::1")), 255, &ns), 0);
    assert_eq!(out[0..6], HOST_MAC);
    let (ip, icmp) = parse(&out);
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (a("2001:db8:0:1::1"), host, 255));
    match repr(&ip, &icmp) {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr, lladdr: Some(l) }) => {
            assert_eq!(
                flags,
                NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE
            );
            assert_eq!(target_addr, a("2001:db8:0:1::1"));
            assert_eq!(l.as_bytes(), LAN_MAC);
        }
        other => panic!("{other:?}"),
    }
    let learned: Vec<_> = r.dp.egress_neighbors6().collect();
    assert_eq!(learned, [(0, host, Some(HOST_MAC), "stale")]);
    let mut r = Rig::with_config(CONFIG, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = r.sent(0);
    // A solicitation with a hop limit below 255 came from off the link: refused.
    r.send(0, &icmp6(LAN_MAC, host, solicited_node(a("2001:db8:0:1::1")), 64, &ns));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(0, DropReason::NdMalformed), 1);
    r.finish();
}

#[test]
fn echo_to_a_global_and_a_link_local_address_is_answered() {
    let mut r = rig();
    // The port's own addresses, and the wan port's address reached from the lan.
    known(&mut r, a("fe80::99"), link_local(LAN_MAC));
    for (src, dst) in [
        (a("2001:db8:0:1::2"), a("2001:db8:0:1::1")),
        (a("fe80::99"), link_local(LAN_MAC)),
        (a("2001:db8:0:1::2"), a("2001:db8:0:2::1")),
    ] {
        let ping = Icmpv6Repr::EchoRequest { ident: 7, seq_no: 3, data: b"hello" };
        let out = r.through(0, &icmp6(LAN_MAC, src, dst, 64, &ping), 0);
        let (ip, icmp) = parse(&out);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (dst, src));
        assert_eq!(repr(&ip, &icmp), Icmpv6Repr::EchoReply { ident: 7, seq_no: 3, data: b"hello" });
        assert_eq!(out[0..6], HOST_MAC);
    }
    r.finish();
}

/// Sends `frame` in on lan toward the wan server and resolves the server
/// by answering sluice's solicitation; returns what came out of wan.
fn forward(r: &mut Rig, frame: &[u8]) -> Vec<Vec<u8>> {
    r.send(0, frame);
    let mut out = r.sent(1);
    if let Some(f) = out.first().filter(|f| f[0] == 0x33) {
        let (ip, icmp) = parse(f);
        let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr: Some(_) }) = repr(&ip, &icmp) else {
            panic!("expected a solicitation")
        };
        assert_eq!(ip.src_addr(), a("2001:db8:0:2::1"), "from the port's address on the target's prefix");
        let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
            target_addr,
            lladdr: Some(RawHardwareAddress::from_bytes(&SERVER_MAC)),
        });
        r.send(1, &icmp6(WAN_MAC, target_addr, a("2001:db8:0:2::1"), 255, &na));
        out = r.sent(1);
    }
    out
}

#[test]
fn a_packet_is_routed_after_neighbour_discovery_with_its_hop_limit_decremented() {
    let mut r = rig();
    let f = udp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 100);
    let out = forward(&mut r, &f);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0][0..6], SERVER_MAC);
    assert_eq!(out[0][6..12], WAN_MAC);
    assert_eq!(out[0][ETH_HLEN + 7], 63);
    assert_eq!(out[0][ETH_HLEN + 8..], f[ETH_HLEN + 8..], "nothing else changed");
    assert_eq!(r.dp.egress_neighbors6().find(|n| n.1 == a("2001:db8:0:2::5")).unwrap().3, "reachable");
    // Now known: straight through.
    let out = r.through(0, &f, 1);
    assert_eq!(out[0..6], SERVER_MAC);
    r.finish();
}

/// The ICMPv6 error sluice answered `frame` with, checked: from sluice's
/// lan address to the sender, quoting the packet as it was sent.
fn error_for(r: &mut Rig, frame: &[u8]) -> Icmpv6Repr<'static> {
    let out = r.through(0, frame, 0);
    let (ip, icmp) = parse(&out);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (a("2001:db8:0:1::1"), a("2001:db8:0:1::2")));
    assert!(out.len() - ETH_HLEN <= MIN_MTU, "an error fits 1280 bytes");
    let quote = &icmp.payload();
    let n = quote.len();
    assert_eq!(quote[..], frame[ETH_HLEN..ETH_HLEN + n], "the quote is the offending packet");
    let leaked: &'static [u8] = std::vec::Vec::leak(out);
    let (ip, icmp) = parse(leaked);
    let icmp: &'static Icmpv6Packet<&'static [u8]> = std::boxed::Box::leak(std::boxed::Box::new(icmp));
    repr(&ip, icmp)
}

#[test]
fn icmpv6_errors_are_built_in_place_with_the_right_type_code_and_quote() {
    let mut r = rig();
    let src = a("2001:db8:0:1::2");
    match error_for(&mut r, &udp6(LAN_MAC, src, a("2001:db8:0:2::5"), 1, 10)) {
        Icmpv6Repr::TimeExceeded { reason: Icmpv6TimeExceeded::HopLimitExceeded, header, .. } => {
            assert_eq!(header.hop_limit, 1)
        }
        other => panic!("{other:?}"),
    }
    match error_for(&mut r, &udp6(LAN_MAC, src, a("2001:db8:7::1"), 64, 10)) {
        Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::NoRoute, .. } => {}
        other => panic!("{other:?}"),
    }
    // 1400 bytes to the wan with its 1280 MTU.
    match error_for(&mut r, &udp6(LAN_MAC, src, a("2001:db8:0:2::5"), 64, 1352)) {
        Icmpv6Repr::PktTooBig { mtu, .. } => assert_eq!(mtu, 1280),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.drops(0, DropReason::HopLimitExpired), 1);
    assert_eq!(r.drops(0, DropReason::NoRoute), 1);
    assert_eq!(r.drops(0, DropReason::PacketTooBig), 1);
    // Never an error about an error.
    let err = Icmpv6Repr::DstUnreachable {
        reason: Icmpv6DstUnreachable::PortUnreachable,
        header: smoltcp::wire::Ipv6Repr {
            src_addr: a("2001:db8:0:2::5"),
            dst_addr: src,
            next_header: smoltcp::wire::IpProtocol::Udp,
            payload_len: 8,
            hop_limit: 64,
        },
        data: &[0; 8],
    };
    r.send(0, &icmp6(LAN_MAC, src, a("2001:db8:0:2::5"), 1, &err));
    assert!(r.sent(0).is_empty(), "no error about an ICMPv6 error");
    // A link-local source is not routed off its link.
    match error_for_ll(&mut r) {
        Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::BeyondScope, .. } => {}
        other => panic!("{other:?}"),
    }
    r.finish();
}

fn error_for_ll(r: &mut Rig) -> Icmpv6Repr<'static> {
    known(r, a("fe80::99"), link_local(LAN_MAC));
    let out = r.through(0, &udp6(LAN_MAC, a("fe80::99"), a("2001:db8:0:2::5"), 64, 10), 0);
    let (ip, _) = parse(&out);
    assert_eq!(ip.src_addr(), link_local(LAN_MAC), "a link-local peer hears from the link-local address");
    let leaked: &'static [u8] = std::vec::Vec::leak(out);
    let (ip, icmp) = parse(leaked);
    repr(&ip, std::boxed::Box::leak(std::boxed::Box::new(icmp)))
}

#[test]
fn a_silent_next_hop_draws_address_unreachable() {
    let mut r = rig();
    r.send(0, &udp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:99::1"), 64, 10));
    let ns = r.sent(1);
    assert_eq!(ns.len(), 1, "a solicitation for the static route's next hop");
    for _ in 0..4 {
        r.now += 1_100_000;
        for _ in 0..256 {
            r.dp.poll(r.now, &mut r.pool);
        }
    }
    assert!(r.sent(1).len() >= 2, "retries");
    let mut out = r.sent(0);
    out.retain(|f| f[ETH_HLEN + HLEN] != 134);
    assert_eq!(out.len(), 1, "one error to the sender");
    let (ip, icmp) = parse(&out[0]);
    match repr(&ip, &icmp) {
        Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::AddrUnreachable, header, .. } => {
            assert_eq!(header.hop_limit, 64, "the quote shows the packet as sent")
        }
        other => panic!("{other:?}"),
    }
    r.finish();
}

#[test]
fn router_advertisements_carry_flags_lifetime_mtu_and_the_prefix() {
    let mut r = Rig::with_config(CONFIG, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    let _ = r.sent(0);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let ra = r.sent(0).into_iter().find(|f| f[ETH_HLEN + HLEN] == 134).expect("an RA");
    let (ip, icmp) = parse(&ra);
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (link_local(LAN_MAC), ALL_NODES, 255));
    match repr(&ip, &icmp) {
        Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { flags, router_lifetime, lladdr, mtu, prefix_info, .. }) => {
            assert_eq!(flags, NdiscRouterFlags::MANAGED);
            assert_eq!(router_lifetime.secs(), 12, "three intervals");
            assert_eq!(lladdr.unwrap().as_bytes(), LAN_MAC);
            assert_eq!(mtu, Some(1500));
            let p = prefix_info.expect("the port's /64");
            assert_eq!((p.prefix, p.prefix_len), (a("2001:db8:0:1::"), 64));
            assert!(p.flags.contains(smoltcp::wire::NdiscPrefixInfoFlags::ADDRCONF));
        }
        other => panic!("{other:?}"),
    }
    // A solicitation brings the next one forward, at most one each 3 s.
    let rs = Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)) });
    r.now += 3_100_000;
    r.send(0, &icmp6(LAN_MAC, a("fe80::99"), ALL_ROUTERS, 255, &rs));
    r.now += 100_000;
    r.dp.poll(r.now, &mut r.pool);
    assert!(r.sent(0).iter().any(|f| f[ETH_HLEN + HLEN] == 134), "an RA answers the RS");
    r.finish();
}

#[test]
fn extension_header_walk_is_bounded() {
    // Nine destination-options headers: one more than is walked.
    let mut payload = Vec::new();
    for _ in 0..9 {
        payload.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&[0; 8]);
    let f = v6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 60, &payload);
    assert_eq!(upper_layer(&f[ETH_HLEN..]), Err(DropReason::Ipv6BadExtHeader));
    let f = v6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 60, &[17, 0, 1, 4, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(upper_layer(&f[ETH_HLEN..]), Ok(Upper { proto: 17, offset: 48, first: true, frag: None }));
    // A header that claims more than the packet holds.
    let f = v6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 0, &[17, 200, 0, 0, 0, 0, 0, 0]);
    assert_eq!(upper_layer(&f[ETH_HLEN..]), Err(DropReason::Ipv6BadExtHeader));
    let mut r = rig();
    r.send(0, &f);
    assert_eq!(r.drops(0, DropReason::Ipv6BadExtHeader), 1);
    r.finish();
}

#[test]
fn the_acl_drops_ipv6_the_nat_passes_it() {
    let cfg = std::format!(
        "{CONFIG}nat gw {{\n inside 10.0.0.0/24\n outside wan\n}}\nacl guard {{\n port lan\n rule permit udp src 10.0.0.0/24\n}}\npipeline lan guard router gw\npipeline wan router gw\n"
    );
    let mut r = Rig::with_config(&cfg, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    known(&mut r, a("2001:db8:0:1::2"), a("2001:db8:0:1::1"));
    r.send(0, &udp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 10));
    assert_eq!(r.drops(0, DropReason::Ipv6Unsupported), 1, "the ACL cannot read IPv6 rules: it drops");
    // From the wan (no ACL), IPv6 passes the NAT untouched.
    r.send(1, &udp6(WAN_MAC, a("2001:db8:0:2::5"), a("2001:db8:0:1::2"), 64, 10));
    let out = r.sent(0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0][ETH_HLEN + 8..ETH_HLEN + 24], a("2001:db8:0:2::5").octets(), "not translated");
    r.finish();
}

proptest! {
    /// Random IPv6 frames (a valid start, then anything) through router,
    /// NAT and LB never panic and never leak a buffer.
    #[test]
    fn random_ipv6_frames_never_panic_or_leak(
        hops in any::<u8>(), next in any::<u8>(), plen in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..200), to in 0u8..4, port in 0u8..2
    ) {
        let cfg = std::format!("{CONFIG}nat gw {{\n inside 10.0.0.0/24\n outside wan\n}}\nservice web {{\n vip 10.1.0.100:80\n backend 10.0.0.5:80\n}}\n");
        let mut r = Rig::with_config(&cfg, &[LAN_MAC, WAN_MAC]);
        r.dp.announce(&mut r.pool);
        r.now = 1_200_000;
        r.dp.poll(r.now, &mut r.pool);
        let dst = [a("2001:db8:0:2::5"), a("2001:db8:0:1::1"), ALL_NODES, solicited_node(a("2001:db8:0:1::1"))][to as usize];
        let mut f = v6(if port == 0 { LAN_MAC } else { WAN_MAC }, a("2001:db8:0:1::2"), dst, hops, next, &body);
        f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&plen.to_be_bytes());
        r.send(port, &f);
        r.now += 2_000_000;
        r.dp.poll(r.now, &mut r.pool);
        let _ = (r.sent(0), r.sent(1));
        r.finish();
    }
}

#[test]
fn a_reload_that_adds_ipv6_routes_and_changes_the_ra_takes_effect() {
    let mut r = rig();
    // A new gateway listed before the old one moves the old one's index.
    let text = CONFIG
        .replace(
            "route 2001:db8:99::/48 via 2001:db8:0:2::9\n",
            "route 2001:db8:98::/48 via 2001:db8:0:2::8\nroute 2001:db8:99::/48 via 2001:db8:0:2::9\n",
        )
        .replace("ra lan interval 4 managed", "ra lan interval 4 other");
    r.dp.reload("t.conf", &text, &mut r.pool).unwrap();
    for (dst, gw) in [("2001:db8:99::1", "2001:db8:0:2::9"), ("2001:db8:98::1", "2001:db8:0:2::8")] {
        r.send(0, &udp6(LAN_MAC, a("2001:db8:0:1::2"), a(dst), 64, 10));
        let out = r.sent(1);
        assert_eq!(out.len(), 1, "{dst}: a solicitation for its gateway");
        let (ip, icmp) = parse(&out[0]);
        match repr(&ip, &icmp) {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) => assert_eq!(target_addr, a(gw)),
            other => panic!("{other:?}"),
        }
    }
    r.now += 5_000_000;
    r.dp.poll(r.now, &mut r.pool);
    let ra = r.sent(0).into_iter().find(|f| f[ETH_HLEN + HLEN] == 134).expect("an RA after the reload");
    let (ip, icmp) = parse(&ra);
    match repr(&ip, &icmp) {
        Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { flags, .. }) => assert_eq!(flags, NdiscRouterFlags::OTHER),
        other => panic!("{other:?}"),
    }
    r.dp.drain(&mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    r.finish();
}

#[test]
fn permanent_neighbours_reverse_path_and_the_views_cover_ipv6() {
    let cfg = std::format!("{CONFIG}neighbor 2001:db8:0:2::5 mac 02:00:00:00:00:77\n");
    let mut r = Rig::with_config(&cfg, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    // Straight out to the permanent entry's MAC: no solicitation.
    let out = r.through(0, &udp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:2::5"), 64, 10), 1);
    assert_eq!(out[0..6], SERVER_MAC);
    // A source that is the appliance's own address is refused (loose rpf).
    r.send(0, &udp6(LAN_MAC, a("2001:db8:0:2::1"), a("2001:db8:0:2::5"), 64, 10));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::SourceWrongPort), 1);
    let mut s = std::string::String::new();
    assert!(r.dp.show("neighbors", &[], r.now, &mut s));
    assert!(s.lines().any(|l| l.starts_with("2001:db8:0:2::5") && l.contains("permanent")), "{s}");
    let mut s = std::string::String::new();
    assert!(r.dp.show("ports", &[], r.now, &mut s));
    assert!(s.lines().any(|l| l.starts_with("lan") && l.contains("2001:db8:0:1::1/64") && l.contains("fe80::")), "{s}");
    let mut s = std::string::String::new();
    assert!(r.dp.show("routes", &[], r.now, &mut s));
    assert!(s.contains("2001:db8:0:1::/64") && s.contains("2001:db8:99::/48") && s.contains("2001:db8:0:2::9"), "{s}");
    r.finish();
}

const MGMT_CONFIG: &str = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                           port wan address 10.1.0.1/24 address 2001:db8:0:2::1/64\n\
                           port mgmt address 10.9.0.1/24 address 2001:db8:9::1/64\n\
                           management mgmt\n";

#[test]
fn ipv6_routes_into_the_management_port_are_refused_with_their_line() {
    let text = std::format!("{MGMT_CONFIG}route 2001:db8:99::/48 via 2001:db8:9::5\n");
    let e = crate::registry::parse(&text).unwrap_err();
    let e: Vec<_> = e.iter().map(|e| std::format!("{}", e.display("t.conf"))).collect();
    assert!(
        e.iter().any(|e| e.starts_with("t.conf:5:1:") && e.contains("leads into the management port `mgmt`")),
        "{e:?}"
    );
    let text = std::format!("{MGMT_CONFIG}route 2001:db8:99::/48 via 2001:db8:0:2::9\n");
    crate::registry::parse(&text).unwrap();
}

#[test]
fn ipv6_sources_in_the_management_prefix_are_refused_on_data_ports() {
    let text = std::format!("{MGMT_CONFIG}route 2001:db8:99::/48 via 2001:db8:0:2::9\n");
    let mut r = Rig::with_config(&text, &[LAN_MAC, WAN_MAC, [0x52, 0x54, 0, 0, 0, 3]]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1), r.sent(2));
    // From lan, claiming a management source: as for IPv4, refused.
    r.send(0, &udp6(LAN_MAC, a("2001:db8:9::5"), a("2001:db8:99::1"), 64, 8));
    assert_eq!(r.drops(0, DropReason::SourceWrongPort), 1);
    assert!(r.sent(1).is_empty(), "nothing routed out of wan");
    // A lan source is routed as before.
    r.send(0, &udp6(LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:99::1"), 64, 8));
    assert_eq!(r.drops(0, DropReason::SourceWrongPort), 1);
    assert_eq!(r.sent(1).len(), 1, "a neighbour solicitation for the next hop");
    r.finish();
}

/// Where each left-aligned column starts on `line` (a word after two or
/// more spaces, or the first), for comparing rows with the header.
fn column_starts(line: &str, n: usize) -> std::vec::Vec<usize> {
    let b = line.as_bytes();
    (0..b.len()).filter(|&i| b[i] != b' ' && (i == 0 || b[i - 1] == b' ')).take(n).collect()
}

#[test]
fn ipv6_rows_are_aligned_and_complete_in_the_views() {
    let cfg = std::format!(
        "{CONFIG}route ::/0 via 2001:db8:0:2::9\nroute 2001:db8:1234:5678::/64 via 2001:db8:0:2::1234:5678\n\
         neighbor 2001:db8:0:2:aaaa:bbbb:cccc:5 mac 02:00:00:00:00:77\n"
    );
    let mut r = Rig::with_config(&cfg, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    let show = |r: &Rig, what: &str| {
        let mut s = std::string::String::new();
        assert!(r.dp.show(what, &[], r.now, &mut s));
        s
    };
    // routes: every row has its four columns, each where the header has it.
    let routes = show(&r, "routes");
    let head = column_starts(routes.lines().next().unwrap(), 4);
    for l in routes.lines().skip(1) {
        assert_eq!(l.split_whitespace().count(), 4, "{l:?} in\n{routes}");
        assert_eq!(column_starts(l, 4), head, "{l:?} in\n{routes}");
    }
    assert!(routes.lines().any(|l| l.starts_with("::/0 ")), "{routes}");
    // neighbors: ip, port, mac, state start where the header's do.
    let neigh = show(&r, "neighbors");
    let head = column_starts(neigh.lines().next().unwrap(), 4);
    assert!(neigh.contains("2001:db8:0:2:aaaa:bbbb:cccc:5"), "{neigh}");
    for l in neigh.lines().skip(1) {
        assert_eq!(column_starts(l, 4), head, "{l:?} in\n{neigh}");
    }
    // ports: the vrf and kind columns (after the IPv6 addresses) line up.
    let ports = show(&r, "ports");
    let head = column_starts(ports.lines().next().unwrap(), 10);
    for l in ports.lines().skip(1) {
        let starts = column_starts(l, 10);
        assert_eq!(starts[7..], head[7..], "{l:?} in\n{ports}");
    }
    r.finish();
}
