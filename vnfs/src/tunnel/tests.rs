//! Tunnel ports through the whole dataplane: two tenants with the same
//! inner prefix in VXLAN tunnels, each in its VRF behind its own NAT; a
//! Geneve tunnel; service insertion; every malformed header.

use core::net::Ipv4Addr;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::wire::{ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Ipv4Packet, UdpPacket};

use super::*;
use crate::counters::DropReason;
use crate::testutil::*;

const UNDER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const VTEP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 1];
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const BLUE_VTEP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const RED_VTEP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
const GENEVE_VTEP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 4);
const TENANT_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x10, 2];
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const UNDER: u8 = 0;
const WAN: u8 = 1;

const CONFIG: &str = "
vrf blue
vrf red
port under address 10.1.0.1/24
port wan address 198.51.100.1/24
tunnel tb vxlan vni 5001 local 10.1.0.1 remote 10.1.0.2 address 10.0.0.1/24 vrf blue rpf strict
tunnel tr vxlan vni 5002 local 10.1.0.1 remote 10.1.0.3 address 10.0.0.1/24 vrf red rpf strict
tunnel gv geneve vni 77 local 10.1.0.1 remote 10.1.0.4 address 10.9.0.1/24
route 0.0.0.0/0 via 198.51.100.254 port wan vrf blue
route 0.0.0.0/0 via 198.51.100.254 port wan vrf red
route 0.0.0.0/0 via 198.51.100.254
neighbor 10.1.0.2 mac 02:00:00:00:ee:01
neighbor 10.1.0.3 mac 02:00:00:00:ee:01
neighbor 10.1.0.4 mac 02:00:00:00:ee:01
neighbor 198.51.100.254 mac 02:00:00:00:fe:fe
nat blue {
    inside 10.0.0.0/24
    outside wan
    pool 198.51.100.10
    vrf blue
}
nat red {
    inside 10.0.0.0/24
    outside wan
    pool 198.51.100.11
    vrf red
}
";

fn rig() -> Rig {
    Rig::with_config(CONFIG, &[UNDER_MAC, WAN_MAC])
}

/// `inner` in outer Ethernet/IPv4/UDP and a VXLAN (or, with `geneve`,
/// a Geneve header carrying `opts`) header of `vni`.
fn wrap(inner: &[u8], from: Ipv4Addr, vni: u32, geneve: Option<&[u8]>) -> Vec<u8> {
    let mut h = Vec::new();
    match geneve {
        None => h.extend_from_slice(&[0x08, 0, 0, 0]),
        Some(opts) => {
            h.push((opts.len() / 4) as u8);
            h.push(0);
            h.extend_from_slice(&GENEVE_ETHERNET.to_be_bytes());
        }
    }
    h.extend_from_slice(&(vni << 8).to_be_bytes());
    if let Some(opts) = geneve {
        h.extend_from_slice(opts);
    }
    h.extend_from_slice(inner);
    let port = if geneve.is_some() { 6081 } else { 4789 };
    let mut f = udp_frame(UNDER_MAC, (from, 40000), (LOCAL, port), &h);
    f[6..12].copy_from_slice(&VTEP_MAC);
    // Zero UDP checksum, as Linux sends VXLAN over IPv4.
    f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    f
}

/// The outer IPv4 source/destination, UDP ports, VNI and inner frame of
/// an encapsulated frame sluice sent.
fn unwrap(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, u32, Vec<u8>) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(udp.checksum(), 0, "zero outer UDP checksum over IPv4");
    assert_eq!(udp.len() as usize, ip.payload().len());
    let h = udp.payload();
    let opts = if udp.dst_port() == 6081 { (h[0] & 0x3f) as usize * 4 } else { 0 };
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    (ip.src_addr(), ip.dst_addr(), udp.src_port(), udp.dst_port(), vni, h[8 + opts..].to_vec())
}

fn inner_ip(inner: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&inner[14..]).unwrap()
}

fn tunnel_mac(r: &Rig, name: &str) -> [u8; 6] {
    r.dp.ports().iter().find(|p| p.name == name).unwrap().mac
}

#[test]
fn two_tenants_with_one_prefix_each_reach_the_outside_through_their_own_nat() {
    let mut r = rig();
    for (vtep, vni, tname, pool) in [
        (BLUE_VTEP, 5001, "tb", Ipv4Addr::new(198, 51, 100, 10)),
        (RED_VTEP, 5002, "tr", Ipv4Addr::new(198, 51, 100, 11)),
    ] {
        let mac = tunnel_mac(&r, tname);
        // The tenant host asks for its gateway: the answer comes back in its tunnel.
        let mut arp = arp_request(HOST_MAC, TENANT_HOST, Ipv4Addr::new(10, 0, 0, 1));
        arp[6..12].copy_from_slice(&HOST_MAC);
        r.send(UNDER, &wrap(&arp, vtep, vni, None));
        let out = r.sent(UNDER);
        assert_eq!(out.len(), 1, "{tname}: one ARP reply");
        assert_eq!(&out[0][0..6], &VTEP_MAC);
        assert_eq!(&out[0][6..12], &UNDER_MAC);
        let (src, dst, sport, dport, got_vni, inner) = unwrap(&out[0]);
        assert_eq!((src, dst, dport, got_vni), (LOCAL, vtep, 4789, vni));
        assert!(!Ipv4Packet::new_checked(&out[0][14..]).unwrap().dont_frag(), "DF clear, as Linux sends");
        assert!(sport >= 49152, "source port from the dynamic range");
        let reply = ArpRepr::parse(&ArpPacket::new_checked(&inner[14..]).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, .. } = reply else { panic!() };
        assert_eq!((source_hardware_addr.0, source_protocol_addr), (mac, Ipv4Addr::new(10, 0, 0, 1)));
        // Out through the tenant's NAT.
        let mut udp = udp_frame(mac, (TENANT_HOST, 1000), (SERVER, 53), tname.as_bytes());
        udp[6..12].copy_from_slice(&HOST_MAC);
        r.send(UNDER, &wrap(&udp, vtep, vni, None));
        let out = r.sent(WAN);
        assert_eq!(out.len(), 1, "{tname}: out of wan");
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (pool, SERVER), "{tname}: its own NAT");
        let sport = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
        // The reply goes back into the right tunnel, to the right host.
        let back = udp_frame(WAN_MAC, (SERVER, 53), (pool, sport), b"answer");
        r.send(WAN, &back);
        let out = r.sent(UNDER);
        assert_eq!(out.len(), 1, "{tname}: the reply, encapsulated");
        let (_, dst, _, _, got_vni, inner) = unwrap(&out[0]);
        assert_eq!((dst, got_vni), (vtep, vni), "{tname}: its own tunnel");
        assert_eq!(&inner[0..6], &HOST_MAC);
        let ip = inner_ip(&inner);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVER, TENANT_HOST));
        assert_eq!(UdpPacket::new_checked(ip.payload()).unwrap().dst_port(), 1000);
    }
    // The underlay's address is the default VRF's: from a tenant it is
    // routed in the tenant's table (out through its NAT), not answered.
    let mac = tunnel_mac(&r, "tb");
    let mut ping = echo_request(mac, TENANT_HOST, LOCAL, 9, b"vrf");
    ping[6..12].copy_from_slice(&HOST_MAC);
    r.send(UNDER, &wrap(&ping, BLUE_VTEP, 5001, None));
    assert!(r.sent(UNDER).is_empty(), "no echo reply from another VRF's address");
    let out = r.sent(WAN);
    assert_eq!(out.len(), 1);
    assert_eq!(Ipv4Packet::new_checked(&out[0][14..]).unwrap().src_addr(), Ipv4Addr::new(198, 51, 100, 10));
    let t = r.dp.tunnels();
    assert_eq!(t.get(2).unwrap().counters.decapsulated, 3);
    assert_eq!(t.get(2).unwrap().counters.encapsulated, 2);
    r.finish();
}

#[test]
fn geneve_carries_a_ping_and_the_router_answers_what_does_not_fit() {
    let mut r = rig();
    let mac = tunnel_mac(&r, "gv");
    let mut arp = arp_request(HOST_MAC, Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 1));
    arp[6..12].copy_from_slice(&HOST_MAC);
    r.send(UNDER, &wrap(&arp, GENEVE_VTEP, 77, Some(&[])));
    r.sent(UNDER);
    let mut ping = echo_request(mac, Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 1), 3, b"geneve");
    ping[6..12].copy_from_slice(&HOST_MAC);
    // A non-critical option is skipped.
    let opt = [0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd];
    r.send(UNDER, &wrap(&ping, GENEVE_VTEP, 77, Some(&opt)));
    let out = r.sent(UNDER);
    assert_eq!(out.len(), 1, "the echo reply");
    let (_, dst, _, dport, vni, inner) = unwrap(&out[0]);
    assert_eq!((dst, dport, vni), (GENEVE_VTEP, 6081, 77));
    assert_eq!(inner_ip(&inner).src_addr(), Ipv4Addr::new(10, 9, 0, 1));
    // The tunnel's MTU is the underlay's less 50: a DF packet of 1500
    // routed into it is answered with fragmentation needed, MTU 1450.
    assert_eq!(r.dp.ports()[4].mtu, 1450);
    let mut big = ipv4_frame(UNDER_MAC, Ipv4Addr::new(10, 1, 0, 9), Ipv4Addr::new(10, 9, 0, 2), 64, true, &[0; 1472]);
    big[6..12].copy_from_slice(&[2, 0, 0, 0, 9, 9]);
    r.send(UNDER, &arp_reply([2, 0, 0, 0, 9, 9], Ipv4Addr::new(10, 1, 0, 9), UNDER_MAC, LOCAL));
    r.sent(UNDER);
    r.send(UNDER, &big);
    let out = r.sent(UNDER);
    assert_eq!(out.len(), 1);
    let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
    assert_eq!(ip.next_header(), smoltcp::wire::IpProtocol::Icmp);
    assert_eq!(&ip.payload()[0..2], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]), 1450);
    r.finish();
}

#[test]
fn malformed_tunnel_packets_get_named_drops() {
    let mut r = rig();
    let mac = tunnel_mac(&r, "tb");
    let inner = udp_frame(mac, (TENANT_HOST, 1000), (SERVER, 53), b"x");
    let good = wrap(&inner, BLUE_VTEP, 5001, None);
    let with = |r: &mut Rig, f: &dyn Fn(&mut Vec<u8>), why: DropReason| {
        let mut v = good.clone();
        f(&mut v);
        let before = r.drops(0, why);
        r.send(UNDER, &v);
        assert_eq!(r.drops(0, why), before + 1, "{why:?}");
        assert!(r.sent(WAN).is_empty());
    };
    let fix_ip = |v: &mut Vec<u8>| {
        let mut ip = Ipv4Packet::new_unchecked(&mut v[14..]);
        ip.fill_checksum();
    };
    // VXLAN without the I flag.
    with(&mut r, &|v| v[42] = 0, DropReason::TunnelBadHeader);
    // A VNI no tunnel has, a stranger as the remote.
    with(&mut r, &|v| v[46] = 9, DropReason::TunnelUnknownVni);
    with(
        &mut r,
        &|v| {
            v[26..30].copy_from_slice(&[10, 1, 0, 77]);
            fix_ip(v);
        },
        DropReason::TunnelUnknownRemote,
    );
    // A non-zero UDP checksum that is wrong.
    with(&mut r, &|v| v[40..42].copy_from_slice(&[0x12, 0x34]), DropReason::TunnelBadChecksum);
    // A fragment.
    with(
        &mut r,
        &|v| {
            v[20] = 0x20;
            fix_ip(v);
        },
        DropReason::TunnelFragment,
    );
    // Shorter than its inner Ethernet header (UDP and IP lengths agree).
    with(
        &mut r,
        &|v| {
            v.truncate(14 + 20 + 8 + 8 + 10);
            let n = (v.len() - 14) as u16;
            v[16..18].copy_from_slice(&n.to_be_bytes());
            v[38..40].copy_from_slice(&(n - 20).to_be_bytes());
            fix_ip(v);
        },
        DropReason::TunnelTruncated,
    );
    // A UDP length beyond the datagram.
    with(&mut r, &|v| v[38..40].copy_from_slice(&[0x10, 0]), DropReason::TunnelTruncated);
    // A tunnel inside the tunnel: one level only.
    // (In the default VRF, where the tunnels' local address is local: in
    // blue it is another VRF's address, routed like any other.)
    let mut to_tunnel = good.clone();
    to_tunnel[0..6].copy_from_slice(&tunnel_mac(&r, "gv"));
    let nested = wrap(&to_tunnel, GENEVE_VTEP, 77, Some(&[]));
    r.send(UNDER, &nested);
    assert_eq!(r.drops(4, DropReason::TunnelNested), 1, "counted on the tunnel port it came out of");
    // Geneve: version 1, OAM, a critical option, not Ethernet.
    let g = wrap(&inner, GENEVE_VTEP, 77, Some(&[]));
    for (f, why) in [
        (&(|v: &mut Vec<u8>| v[42] |= 0x40) as &dyn Fn(&mut Vec<u8>), DropReason::TunnelBadHeader),
        (&|v: &mut Vec<u8>| v[43] |= 0x80, DropReason::TunnelOam),
        (&|v: &mut Vec<u8>| v[43] |= 0x40, DropReason::TunnelCriticalOption),
        (&|v: &mut Vec<u8>| v[44..46].copy_from_slice(&[0x08, 0x00]), DropReason::TunnelBadHeader),
        (&|v: &mut Vec<u8>| v[42] = 0x3f, DropReason::TunnelTruncated),
    ] {
        let mut v = g.clone();
        f(&mut v);
        let before = r.drops(0, why);
        r.send(UNDER, &v);
        assert_eq!(r.drops(0, why), before + 1, "geneve {why:?}");
    }
    // A correct non-zero checksum is accepted.
    let mut v = good.clone();
    let (src, dst) = (BLUE_VTEP, LOCAL);
    let udp_len = v.len() - 34;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&v[34..]);
    let c = crate::csum::checksum(&pseudo);
    v[40..42].copy_from_slice(&c.to_be_bytes());
    r.send(UNDER, &v);
    assert_eq!(r.sent(WAN).len(), 1, "a checksummed VXLAN packet goes through");
    r.finish();
}

#[test]
fn a_tunnel_decapsulates_only_what_arrives_on_its_underlay() {
    let mut r = rig();
    let mac = tunnel_mac(&r, "tb");
    let mut udp = udp_frame(mac, (TENANT_HOST, 1000), (SERVER, 53), b"spoofed");
    udp[6..12].copy_from_slice(&HOST_MAC);
    // A host on wan that claims to be blue's VTEP, to the tunnel's local
    // address: it would inject frames into VRF blue (NATed out as blue).
    let mut f = wrap(&udp, BLUE_VTEP, 5001, None);
    f[0..6].copy_from_slice(&WAN_MAC);
    r.send(WAN, &f);
    assert!(r.sent(WAN).is_empty() && r.sent(UNDER).is_empty(), "nothing injected into VRF blue");
    assert_eq!(r.drops(WAN as usize, DropReason::TunnelWrongPort), 1);
    assert_eq!(r.dp.tunnels().get(2).unwrap().counters.decapsulated, 0);
    // The same packet on the underlay is the tunnel's.
    r.send(UNDER, &wrap(&udp, BLUE_VTEP, 5001, None));
    assert_eq!(r.sent(WAN).len(), 1);
    assert_eq!(r.dp.tunnels().get(2).unwrap().counters.decapsulated, 1);
    r.finish();
}

#[test]
fn service_insertion_sends_back_with_the_options_after_the_acl() {
    let cfg = "
port under address 10.1.0.1/24
tunnel gw geneve vni 9 local 10.1.0.1 mode insertion
acl fw {
    port gw
    rule deny udp dport 23
    default permit
}
pipeline gw fw
";
    let mut r = Rig::with_config(cfg, &[UNDER_MAC]);
    let gwlb = Ipv4Addr::new(10, 1, 0, 50);
    let opts = [0x01, 0x08, 0x01, 0x02, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04];
    // The inner frame is someone else's: addresses that are not sluice's.
    let inner =
        udp_frame([2, 0, 0, 0, 7, 7], (Ipv4Addr::new(192, 0, 2, 1), 5555), (Ipv4Addr::new(192, 0, 2, 2), 80), b"pass");
    let mut f = wrap(&inner, gwlb, 9, Some(&opts));
    f[43] |= 0x40; // critical: kept, not interpreted, in insertion mode
    r.send(UNDER, &f);
    let out = r.sent(UNDER);
    assert_eq!(out.len(), 1, "sent back");
    assert_eq!(&out[0][0..6], &VTEP_MAC, "to the sender's MAC");
    let (src, dst, sport, dport, vni, back) = unwrap(&out[0]);
    assert_eq!((src, dst, sport, dport, vni), (LOCAL, gwlb, 40000, 6081, 9));
    assert_eq!(back, inner, "the inner frame as the ACL left it");
    let geneve = &out[0][42..42 + 8 + opts.len()];
    assert_eq!(geneve[0] & 0x3f, 3, "option length kept");
    assert_eq!(geneve[1] & 0x40, 0x40, "C bit kept");
    assert_eq!(&geneve[8..], &opts, "options intact");
    // Denied by the ACL: nothing comes back.
    let telnet =
        udp_frame([2, 0, 0, 0, 7, 7], (Ipv4Addr::new(192, 0, 2, 1), 5555), (Ipv4Addr::new(192, 0, 2, 2), 23), b"no");
    r.send(UNDER, &wrap(&telnet, gwlb, 9, Some(&opts)));
    assert!(r.sent(UNDER).is_empty());
    assert_eq!(r.dp.tunnels().get(1).unwrap().counters.reflected, 1);
    r.finish();
}

#[test]
fn config_checks_for_tunnels() {
    let bad = |text: &str, want: &str| {
        let e = crate::registry::parse(text).expect_err(text);
        assert!(e.iter().any(|e| e.message.contains(want)), "{text}: {e:?}");
    };
    let u = "port u address 10.1.0.1/24\n";
    bad(&std::format!("{u}tunnel t vxlan local 10.1.0.1 remote 10.1.0.2"), "needs `vni N`");
    bad(&std::format!("{u}tunnel t vxlan vni 1 remote 10.1.0.2"), "needs `local ADDRESS`");
    bad(&std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1"), "at least one `remote");
    bad(&std::format!("{u}tunnel t vxlan vni 16777216 local 10.1.0.1 remote 10.1.0.2"), "bad VNI");
    bad(&std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.9 remote 10.1.0.2"), "not the address of a port");
    bad(&std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1 remote 192.0.2.7"), "neither on port `u`");
    bad(&std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1 remote 10.1.0.2 mtu 1460"), "does not fit");
    bad(&std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1 remote 10.1.0.2 mode insertion"), "Geneve mode");
    bad(&std::format!("{u}tunnel t gre vni 1"), "expected vxlan or geneve");
    bad(
        &std::format!(
            "{u}port m address 10.9.0.1/24\nmanagement m\ntunnel t vxlan vni 1 local 10.9.0.1 remote 10.9.0.2"
        ),
        "the management port's address",
    );
    bad(
        "port u address 10.1.0.1/24 mtu 100\ntunnel t vxlan vni 1 local 10.1.0.1 remote 10.1.0.2",
        "leaves less than 68",
    );
    bad(
        &std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1 remote 10.1.0.2\ntunnel s vxlan vni 1 local 10.1.0.1 remote 10.1.0.3"),
        "UDP port and VNI of tunnel `t`",
    );
    bad(
        &std::format!("{u}tunnel t vxlan vni 1 local 10.1.0.1 remote 10.1.0.2 dstport 6081\ntunnel s geneve vni 2 local 10.1.0.1 remote 10.1.0.3"),
        "another `dstport`",
    );
    bad(&std::format!("{u}port x address 10.2.0.1/24 vrf nope"), "no VRF named `nope`");
    bad(&std::format!("vrf a\n{u}port x address 10.1.0.9/24 vrf a\nport y address 10.1.0.7/24 vrf a"), "overlaps");
    // The same prefix in two VRFs is fine; a remote behind a route too.
    let ok = std::format!(
        "vrf a\n{u}port x address 10.1.0.9/24 vrf a\nroute 192.0.2.0/24 via 10.1.0.254\ntunnel t vxlan vni 1 local 10.1.0.1 remote 192.0.2.7"
    );
    let c = crate::registry::parse(&ok).unwrap();
    let crate::config::PortKind::Tunnel(t) = &c.ports[2].kind else { panic!() };
    assert_eq!((t.underlay, t.next_hops.as_slice()), (0, &[Ipv4Addr::new(10, 1, 0, 254)][..]));
    assert_eq!(c.ports[2].mtu, 1450);
}

proptest! {
    /// Any bytes after a well-formed outer header: a named drop or a
    /// delivery, never a panic or a lost buffer.
    #[test]
    fn any_tunnel_payload_is_handled(body in proptest::collection::vec(any::<u8>(), 0..120), geneve in any::<bool>(),
                                     flip in 0usize..200, bit in 0u8..8) {
        let mut r = rig();
        let (vtep, vni) = if geneve { (GENEVE_VTEP, 77) } else { (BLUE_VTEP, 5001) };
        let mut f = wrap(&body, vtep, vni, geneve.then_some(&[][..]));
        if flip < f.len() && flip >= 42 {
            f[flip] ^= 1 << bit;
        }
        r.send(UNDER, &f);
        r.sent(UNDER);
        r.sent(WAN);
        r.finish();
    }
}
