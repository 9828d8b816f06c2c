//! VLAN sub-ports through the whole dataplane, on real frames.

use core::net::Ipv4Addr;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, Ipv4Packet};

use super::*;
use crate::counters::DropReason;
use crate::testutil::*;

const TRUNK_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const H100: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
const H200: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const HQ: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 2);
const H100_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0];
const H200_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 0];

const CONFIG: &str = "
port trunk0 address 10.0.0.1/24
port wan address 10.1.0.1/24
port lan100 on trunk0 vlan 100 address 10.100.0.1/24
port lan200 {
    on trunk0
    vlan 200
    priority 5
    address 10.200.0.1/24
}
port qq on trunk0 vlan 10 outer-vlan 20 address 10.30.0.1/24
neighbor 10.100.0.2 mac 02:00:00:00:01:00
neighbor 10.200.0.2 mac 02:00:00:00:02:00
neighbor 10.30.0.2 mac 02:00:00:00:03:00
";

fn rig() -> Rig {
    Rig::with_config(CONFIG, &[TRUNK_MAC, WAN_MAC])
}

/// `frame` with an 802.1Q tag (and an 802.1ad one outside it if `outer`).
fn tagged(frame: &[u8], outer: u16, vid: u16, pcp: u8) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    if outer != 0 {
        v.extend_from_slice(&TPID_8021AD.to_be_bytes());
        v.extend_from_slice(&(outer | (pcp as u16) << 13).to_be_bytes());
    }
    v.extend_from_slice(&TPID_8021Q.to_be_bytes());
    v.extend_from_slice(&(vid | (pcp as u16) << 13).to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

/// The tags of a frame the trunk sent, and the frame without them.
fn untag_frame(frame: &[u8]) -> (Tags, Vec<u8>) {
    let tags = parse(frame).expect("well-formed tags").expect("tagged");
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&frame[12 + tags.len as usize..]);
    (tags, v)
}

#[test]
fn the_sub_ports_answer_on_their_vlan() {
    let mut r = rig();
    // ARP on the VLAN: asked tagged, answered tagged.
    r.send(0, &tagged(&arp_request(PEER_MAC, H100, Ipv4Addr::new(10, 100, 0, 1)), 0, 100, 0));
    let out = r.sent(0);
    assert_eq!(out.len(), 1, "one ARP reply");
    let (tags, arp) = untag_frame(&out[0]);
    assert_eq!(tags.vid, 100);
    assert_eq!(EthernetFrame::new_checked(&arp[..]).unwrap().ethertype(), EthernetProtocol::Arp);
    let ping = echo_request(TRUNK_MAC, H100, Ipv4Addr::new(10, 100, 0, 1), 7, b"vlan");
    r.send(0, &tagged(&ping, 0, 100, 3));
    let out = r.sent(0);
    assert_eq!(out.len(), 1, "one echo reply on the trunk");
    let (tags, reply) = untag_frame(&out[0]);
    assert_eq!((tags.outer, tags.vid), (0, 100));
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    assert_eq!(eth.src_addr().0, TRUNK_MAC, "a sub-port has its trunk's MAC");
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::new(10, 100, 0, 1), H100));
    let icmp = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ip.payload()).unwrap(), &Default::default()).unwrap();
    assert!(matches!(icmp, Icmpv4Repr::EchoReply { ident: 7, data: b"vlan", .. }));
    assert_eq!(r.dp.ports()[2].counters.rx_packets, 2);
    assert_eq!(r.dp.ports()[2].counters.tx_packets, 2);
    // The untagged trunk answers for itself.
    r.send(0, &arp_request(PEER_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 1)));
    r.sent(0);
    r.send(0, &echo_request(TRUNK_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 1), 8, b"plain"));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    assert_eq!(parse(&out[0]), Ok(None), "untagged in, untagged out");
    r.finish();
}

#[test]
fn routing_between_vlans_keeps_or_sets_the_priority() {
    let mut r = rig();
    let frame = udp_frame(TRUNK_MAC, (H100, 4000), (H200, 5000), b"across");
    r.send(0, &tagged(&frame, 0, 100, 3));
    let out = r.sent(0);
    assert_eq!(out.len(), 1);
    let (tags, inner) = untag_frame(&out[0]);
    assert_eq!((tags.vid, tags.pcp), (200, 5), "lan200 sets priority 5");
    assert_eq!(&inner[0..6], &H200_MAC);
    let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
    assert_eq!(ip.hop_limit(), 63);
    assert!(ip.verify_checksum());
    // The other way, the priority it came with stays.
    let back = udp_frame(TRUNK_MAC, (H200, 5000), (H100, 4000), b"back");
    r.send(0, &tagged(&back, 0, 200, 6));
    let out = r.sent(0);
    let (tags, inner) = untag_frame(&out[0]);
    assert_eq!((tags.vid, tags.pcp), (100, 6));
    assert_eq!(&inner[0..6], &H100_MAC);
    // QinQ: S-tag 20, C-tag 10.
    let q = udp_frame(TRUNK_MAC, (H100, 1), (HQ, 2), b"qinq");
    r.send(0, &tagged(&q, 0, 100, 0));
    let out = r.sent(0);
    let (tags, _) = untag_frame(&out[0]);
    assert_eq!((tags.outer, tags.vid, tags.len), (20, 10, 8));
    assert_eq!(&out[0][12..14], &TPID_8021AD.to_be_bytes());
    // And from it, to the wan's untagged side (routed off the trunk).
    let from_q = udp_frame(TRUNK_MAC, (HQ, 2), (H100, 1), b"q-in");
    r.send(0, &tagged(&from_q, 20, 10, 0));
    assert_eq!(r.sent(0).len(), 1);
    r.finish();
}

#[test]
fn unknown_and_malformed_tags_are_dropped_and_counted() {
    let mut r = rig();
    let frame = udp_frame(TRUNK_MAC, (H100, 1), (H200, 2), b"x");
    for _ in 0..3 {
        r.send(0, &tagged(&frame, 0, 300, 0));
    }
    r.send(0, &tagged(&frame, 0, 301, 0));
    assert_eq!(r.drops(0, DropReason::VlanUnknown), 4);
    let unknown: Vec<(u16, u16, u64)> = r.dp.unknown_vlans().next().unwrap().1.per_vlan.iter().copied().collect();
    assert_eq!(unknown, [(0, 300, 3), (0, 301, 1)]);
    // Cut inside the tag, VLAN 4095, three tags.
    let t = tagged(&frame, 0, 100, 0);
    r.send(0, &t[..15]);
    r.send(0, &tagged(&frame, 0, 4095, 0));
    r.send(0, &tagged(&tagged(&frame, 20, 10, 0), 0, 5, 0));
    assert_eq!(r.drops(0, DropReason::VlanMalformed), 3);
    // Nothing went out.
    assert!(r.sent(0).is_empty() && r.sent(1).is_empty());
    r.finish();
}

/// `frame` with tags of the given TPIDs, outermost first: (TPID, VLAN id).
fn with_tags(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    for (tpid, vid) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
    }
    v.extend_from_slice(&frame[12..]);
    v
}

#[test]
fn a_sub_port_takes_only_its_own_tpids() {
    // 802.1Q sub-ports take an 802.1Q (0x8100) tag; QinQ ones an 802.1ad
    // (0x88a8) tag outside an 802.1Q one (IEEE 802.1Q-2018 §9.5).
    let mut r = rig();
    let to_200 = udp_frame(TRUNK_MAC, (H100, 4000), (H200, 5000), b"tpid");
    let to_100 = udp_frame(TRUNK_MAC, (HQ, 2), (H100, 1), b"tpid");
    // A lone 802.1ad tag is no customer tag.
    r.send(0, &with_tags(&to_200, &[(TPID_8021AD, 100)]));
    // Two 802.1Q tags are no QinQ, nor is 802.1Q inside 802.1Q or 802.1ad inside 802.1ad.
    r.send(0, &with_tags(&to_100, &[(TPID_8021Q, 20), (TPID_8021Q, 10)]));
    r.send(0, &with_tags(&to_100, &[(TPID_8021AD, 20), (TPID_8021AD, 10)]));
    r.send(0, &with_tags(&to_100, &[(0x9100, 20), (TPID_8021Q, 10)]));
    assert!(r.sent(0).is_empty() && r.sent(1).is_empty(), "nothing delivered");
    assert_eq!(r.drops(0, DropReason::VlanBadTpid), 4);
    assert_eq!(r.dp.ports()[2].counters.rx_packets + r.dp.ports()[4].counters.rx_packets, 0);
    // The right TPIDs go through.
    r.send(0, &with_tags(&to_200, &[(TPID_8021Q, 100)]));
    r.send(0, &with_tags(&to_100, &[(TPID_8021AD, 20), (TPID_8021Q, 10)]));
    assert_eq!(r.sent(0).len(), 2);
    r.finish();
}

#[test]
fn a_qinq_sub_port_may_take_a_legacy_outer_tpid() {
    let cfg = "port trunk0 address 10.0.0.1/24\n\
               port qq on trunk0 vlan 10 outer-vlan 20 tpid 0x9100 address 10.30.0.1/24\n\
               neighbor 10.30.0.2 mac 02:00:00:00:03:00\n";
    let mut r = Rig::with_config(cfg, &[TRUNK_MAC]);
    let ping = echo_request(TRUNK_MAC, HQ, Ipv4Addr::new(10, 30, 0, 1), 3, b"legacy");
    r.send(0, &with_tags(&ping, &[(TPID_8021AD, 20), (TPID_8021Q, 10)]));
    assert_eq!(r.drops(0, DropReason::VlanBadTpid), 1, "this sub-port's outer TPID is 0x9100");
    r.send(0, &with_tags(&ping, &[(0x9100, 20), (TPID_8021Q, 10)]));
    let out = r.sent(0);
    assert_eq!(out.len(), 1, "the echo reply");
    // The reply leaves with the same TPIDs.
    assert_eq!(&out[0][12..14], &0x9100u16.to_be_bytes());
    assert_eq!(&out[0][16..18], &TPID_8021Q.to_be_bytes());
    assert_eq!(u16::from_be_bytes([out[0][14], out[0][15]]) & 0xfff, 20);
    assert_eq!(u16::from_be_bytes([out[0][18], out[0][19]]) & 0xfff, 10);
    r.finish();
}

#[test]
fn config_checks_for_sub_ports() {
    let bad = |text: &str, want: &str| {
        let e = crate::registry::parse(text).expect_err(text);
        assert!(e.iter().any(|e| e.message.contains(want)), "{text}: {e:?}");
    };
    bad("port a address 10.0.0.1/24\nport b on a address 10.1.0.1/24", "no `vlan VID`");
    bad("port a address 10.0.0.1/24\nport b vlan 5 address 10.1.0.1/24", "no trunk");
    bad("port a address 10.0.0.1/24\nport b on zz vlan 5", "no port named `zz`");
    bad("port a address 10.0.0.1/24\nport b on a vlan 4095", "1 to 4094");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5\nport c on a vlan 5", "already port `b`");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5\nport c on b vlan 6", "not a NIC port");
    bad("port a address 10.0.0.1/24 mtu 1400\nport b on a vlan 5 mtu 1500", "larger than its trunk");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5 mac 02:00:00:00:00:01", "trunk's MAC");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5 priority 8", "0 to 7");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5 tpid 0x9100", "needs `outer-vlan SVID`");
    bad("port a address 10.0.0.1/24\nport b on a vlan 5 outer-vlan 6 tpid 0x0800", "bad TPID `0x0800`");
    // NIC ports come first whatever the text order (the kernel binds them).
    let c = crate::registry::parse(
        "port b on a vlan 5 address 10.5.0.1/24\nport a address 10.0.0.1/24\nport w address 10.1.0.1/24",
    )
    .unwrap();
    let names: Vec<&str> = c.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "w", "b"]);
    assert_eq!(c.nic_count(), 2);
}

proptest! {
    /// Any tagged frame: a named drop or a delivery, never a panic or a
    /// lost buffer; a pushed tag pops back to the same frame.
    #[test]
    fn any_tagged_frame_is_handled(vid in 0u16..4096, outer in 0u16..4096, pcp in 0u8..8, cut in 0usize..64,
                                   body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut r = rig();
        let mut f = udp_frame(TRUNK_MAC, (H100, 1), (H200, 2), &body);
        f = tagged(&f, outer, vid, pcp);
        let n = f.len().saturating_sub(cut);
        r.send(0, &f[..n.max(1)]);
        r.sent(0);
        r.sent(1);
        r.finish();
        let mut pool = crate::packet::PacketPool::new(2);
        let plain = udp_frame(TRUNK_MAC, (H100, 1), (H200, 2), &body);
        let mut p = pool.alloc().unwrap();
        prop_assert!(p.fill(&plain));
        let v = vid.clamp(1, 4094);
        prop_assert!(push(&mut p, (TPID_8021AD, outer.min(4094)), v, pcp));
        let tags = parse(p.data()).unwrap().unwrap();
        prop_assert_eq!(tags.vid, v);
        prop_assert!(pop(&mut p, &tags));
        prop_assert_eq!(p.data(), &plain[..]);
        pool.free(p);
    }
}

#[test]
fn offload_offsets_follow_the_tags() {
    // A TCP super-packet's partial checksum counts from the frame start:
    // taking a tag off and putting two on moves it by -4 and +8.
    let mut pool = crate::packet::PacketPool::new(1);
    let frame = tagged(&tcp_frame(TRUNK_MAC, (H100, 1), (H200, 2), false, true), 0, 100, 0);
    let mut p = pool.alloc().unwrap();
    assert!(p.fill(&frame));
    p.meta.offload =
        crate::packet::Offload { csum_partial: true, csum_start: 18 + 20, csum_offset: 16, gso_size: 1448 };
    let tags = parse(p.data()).unwrap().unwrap();
    assert!(pop(&mut p, &tags));
    assert_eq!(p.meta.offload.csum_start, 34);
    assert_eq!(&p.data()[12..14], &[0x08, 0x00]);
    assert!(push(&mut p, (TPID_8021AD, 20), 10, 0));
    assert_eq!(p.meta.offload.csum_start, 42);
    assert_eq!(&p.data()[12..14], &TPID_8021AD.to_be_bytes());
    assert_eq!(&p.data()[20..22], &[0x08, 0x00]);
    pool.free(p);
}
