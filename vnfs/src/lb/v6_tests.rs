//! IPv6 services through a real dataplane (lb + router), every packet
//! parsed back with smoltcp and its checksum verified.

use core::net::Ipv6Addr;
use std::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress, Ipv6Packet, NdiscNeighborFlags, NdiscRepr,
    RawHardwareAddress, TcpPacket, TcpSeqNumber, UdpPacket,
};

use crate::counters::DropReason;
use crate::ipv6::{self, HLEN, ICMPV6};
use crate::testutil::Rig;
use crate::wire::ETH_HLEN;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const DMZ_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const CONFIG: &str = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                      port dmz address 10.2.0.1/24 address 2001:db8:0:2::1/64\n\
                      service web6 {\n vip [2001:db8:0:1::80]:80\n check none\n backend [2001:db8:0:2::11]:8000\n backend [2001:db8:0:2::12]:8000 weight 2\n}\n\
                      service dns6 {\n vip [2001:db8:0:1::80]:53 udp\n check none\n mode dnat\n backend [2001:db8:0:2::13]:53 weight 0\n}\n\
                      service ssh6 {\n vip [2001:db8:0:1::80]:22\n check none\n backend [2001:db8:0:2::14]:22 weight 0\n}\n\
                      service app6 {\n vip [2001:db8:0:1::80]:8080\n check none\n mode dnat\n backend [2001:db8:0:2::15]:8080\n}\n\
                      router\n";

fn frame(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = std::vec![0u8; ETH_HLEN + HLEN + payload.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&PEER);
    f[12..14].copy_from_slice(&ipv6::ETHERTYPE);
    ipv6::write_header(&mut f[ETH_HLEN..], payload.len() as u16, next, 64, src, dst);
    f[ETH_HLEN + HLEN..].copy_from_slice(payload);
    f
}

fn tcp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = std::vec![0u8; 20];
    let mut t = TcpPacket::new_unchecked(&mut b[..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_header_len(20);
    t.set_syn(syn);
    t.set_ack(ack);
    t.set_seq_number(TcpSeqNumber(100));
    t.set_window_len(1000);
    t.fill_checksum(&IpAddress::Ipv6(src), &IpAddress::Ipv6(dst));
    b
}

/// A neighbour solicitation from `who` on `port`'s link (makes it known).
fn ns(r: &mut Rig, port: u8, mac: [u8; 6], who: Ipv6Addr, target: Ipv6Addr) {
    let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from_bytes(&PEER)),
    });
    let group = ipv6::solicited_node(target);
    let mut body = std::vec![0u8; repr.buffer_len()];
    repr.emit(&who, &group, &mut Icmpv6Packet::new_unchecked(&mut body[..]), &ChecksumCapabilities::default());
    let mut f = frame(mac, who, group, ICMPV6, &body);
    f[ETH_HLEN + 7] = 255;
    r.send(port, &f);
}

fn rig() -> Rig {
    rig_with(CONFIG)
}

fn rig_with(config: &str) -> Rig {
    let mut r = Rig::with_config(config, &[LAN_MAC, DMZ_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    ns(&mut r, 0, LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:1::1"));
    for b in ["2001:db8:0:2::11", "2001:db8:0:2::12", "2001:db8:0:2::13", "2001:db8:0:2::14", "2001:db8:0:2::15"] {
        ns(&mut r, 1, DMZ_MAC, a(b), a("2001:db8:0:2::1"));
    }
    let _ = (r.sent(0), r.sent(1));
    r
}

#[test]
fn an_ipv6_vip_spreads_flows_by_weight_and_replies_come_back_from_the_vip() {
    let mut r = rig();
    let (client, vip, snat) = (a("2001:db8:0:1::2"), a("2001:db8:0:1::80"), a("2001:db8:0:2::1"));
    // The VIP is answered for on its link.
    ns(&mut r, 0, LAN_MAC, client, vip);
    let na = r.sent(0);
    assert_eq!(na.len(), 1, "a neighbour advertisement for the VIP");
    let ip = Ipv6Packet::new_checked(&na[0][ETH_HLEN..]).unwrap();
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(matches!(
        Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &m, &ChecksumCapabilities::default()),
        Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, flags, .. })) if target_addr == vip && flags.contains(NdiscNeighborFlags::SOLICITED)
    ));
    let mut per_backend = std::collections::BTreeMap::new();
    for port in 40000..40300u16 {
        let syn = tcp(client, vip, port, 80, true, false);
        let out = r.through(0, &frame(LAN_MAC, client, vip, 6, &syn), 1);
        let ip = Ipv6Packet::new_checked(&out[ETH_HLEN..]).unwrap();
        assert_eq!(ip.src_addr(), snat, "full-NAT: from the appliance's dmz address");
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            t.verify_checksum(&IpAddress::Ipv6(snat), &IpAddress::Ipv6(ip.dst_addr())),
            "TCP checksum after the rewrite"
        );
        assert_eq!(t.dst_port(), 8000);
        *per_backend.entry(ip.dst_addr()).or_insert(0) += 1;
        if port == 40000 {
            // The backend's SYN-ACK goes back to the client from the VIP.
            let synack = tcp(ip.dst_addr(), snat, 8000, t.src_port(), true, true);
            let back = r.through(1, &frame(DMZ_MAC, ip.dst_addr(), snat, 6, &synack), 0);
            let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
            assert_eq!((ip6.src_addr(), ip6.dst_addr()), (vip, client));
            let t = TcpPacket::new_checked(ip6.payload()).unwrap();
            assert!(t.verify_checksum(&IpAddress::Ipv6(vip), &IpAddress::Ipv6(client)));
            assert_eq!((t.src_port(), t.dst_port()), (80, 40000));
        }
    }
    let n11 = per_backend[&a("2001:db8:0:2::11")];
    let n12 = per_backend[&a("2001:db8:0:2::12")];
    assert!(n12 > n11 * 3 / 2 && n12 < n11 * 3, "weight 2 against 1: {n11} and {n12}");
    let mut s = std::string::String::new();
    assert!(r.dp.show("flows", &[], r.now, &mut s));
    assert!(s.contains("[2001:db8:0:1::2]:40000") && s.contains("[2001:db8:0:1::80]:80"), "{s}");
    r.finish();
}

#[test]
fn with_no_backend_up_tcp_gets_a_reset_and_udp_a_port_unreachable_from_the_vip() {
    let mut r = rig();
    let (client, vip) = (a("2001:db8:0:1::2"), a("2001:db8:0:1::80"));
    let syn = tcp(client, vip, 41000, 22, true, false);
    let rst = r.through(0, &frame(LAN_MAC, client, vip, 6, &syn), 0);
    let ip = Ipv6Packet::new_checked(&rst[ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (vip, client));
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.rst() && t.ack() && t.ack_number() == TcpSeqNumber(101));
    assert!(t.verify_checksum(&IpAddress::Ipv6(vip), &IpAddress::Ipv6(client)));
    let repr = smoltcp::wire::UdpRepr { src_port: 5353, dst_port: 53 };
    let mut udp = std::vec![0u8; 12];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut udp[..]),
        &IpAddress::Ipv6(client),
        &IpAddress::Ipv6(vip),
        4,
        |p| p.copy_from_slice(b"dns?"),
        &ChecksumCapabilities::default(),
    );
    let err = r.through(0, &frame(LAN_MAC, client, vip, 17, &udp), 0);
    let ip = Ipv6Packet::new_checked(&err[ETH_HLEN..]).unwrap();
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(matches!(
        Icmpv6Repr::parse(&vip, &client, &m, &ChecksumCapabilities::default()),
        Ok(Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::PortUnreachable, .. })
    ));
    assert_eq!(r.drops(0, DropReason::LbNoBackend), 2);
    r.finish();
}

#[test]
fn ipv6_services_are_checked() {
    let bad = |svc: &str| {
        let text = std::format!(
            "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\nport dmz address 10.2.0.1/24\n{svc}"
        );
        crate::registry::parse(&text).unwrap_err().into_iter().map(|e| e.message).collect::<Vec<_>>().join("\n")
    };
    assert!(bad("service x {\n vip [2001:db8:0:1::80]:80\n backend 10.2.0.5:80\n}\n").contains("one family"));
    assert!(
        bad("service x {\n vip [2001:db8:0:1::80:80\n backend [2001:db8:0:1::5]:80\n}\n").contains("[ADDRESS]:PORT")
    );
    assert!(bad("service x {\n vip [ff02::1]:80\n backend [2001:db8:0:1::5]:80\n}\n").contains("multicast"));
    assert!(
        bad("service x {\n vip [2001:db8:0:1::80]:80\n backend [2001:db8:9::5]:80\n}\n").contains("no port's subnet")
    );
}

#[test]
fn dnat_keeps_the_ipv6_client_address_and_the_reply_leaves_from_the_vip() {
    let mut r = rig();
    let (client, vip, backend) = (a("2001:db8:0:1::2"), a("2001:db8:0:1::80"), a("2001:db8:0:2::15"));
    let syn = tcp(client, vip, 42000, 8080, true, false);
    let out = r.through(0, &frame(LAN_MAC, client, vip, 6, &syn), 1);
    let ip = Ipv6Packet::new_checked(&out[ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (client, backend), "DNAT: the backend sees the client");
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum(&IpAddress::Ipv6(client), &IpAddress::Ipv6(backend)));
    let synack = tcp(backend, client, 8080, 42000, true, true);
    let back = r.through(1, &frame(DMZ_MAC, backend, client, 6, &synack), 0);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    assert_eq!((ip6.src_addr(), ip6.dst_addr()), (vip, client));
    let t = TcpPacket::new_checked(ip6.payload()).unwrap();
    assert!(t.verify_checksum(&IpAddress::Ipv6(vip), &IpAddress::Ipv6(client)));
    assert_eq!(t.src_port(), 8080);
    r.finish();
}

#[test]
fn a_reload_that_adds_the_first_ipv6_service_makes_room_for_ipv6_clients() {
    let v4_only = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                   port dmz address 10.2.0.1/24 address 2001:db8:0:2::1/64\n\
                   service web {\n vip 10.0.0.80:80\n check none\n backend 10.2.0.11:8000\n}\nrouter\n";
    let mut r = Rig::with_config(v4_only, &[LAN_MAC, DMZ_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    r.dp.reload("t.conf", CONFIG, &mut r.pool).unwrap();
    let _ = (r.sent(0), r.sent(1));
    ns(&mut r, 1, DMZ_MAC, a("2001:db8:0:2::11"), a("2001:db8:0:2::1"));
    ns(&mut r, 1, DMZ_MAC, a("2001:db8:0:2::12"), a("2001:db8:0:2::1"));
    let _ = (r.sent(0), r.sent(1));
    let vip = a("2001:db8:0:1::80");
    // More clients than a table sized for none would hold.
    for i in 0..300u32 {
        let client = Ipv6Addr::from(u128::from(a("2001:db8:0:1::1000")) + i as u128);
        let syn = tcp(client, vip, 40000, 80, true, false);
        r.through(0, &frame(LAN_MAC, client, vip, 6, &syn), 1);
    }
    r.finish();
}

#[test]
fn a_ping_to_an_ipv6_vip_is_answered_from_the_vip() {
    let mut r = rig();
    let (client, vip) = (a("2001:db8:0:1::2"), a("2001:db8:0:1::80"));
    let ping = Icmpv6Repr::EchoRequest { ident: 3, seq_no: 9, data: b"vip?" };
    let mut body = std::vec![0u8; ping.buffer_len()];
    ping.emit(&client, &vip, &mut Icmpv6Packet::new_unchecked(&mut body[..]), &ChecksumCapabilities::default());
    let out = r.through(0, &frame(LAN_MAC, client, vip, ICMPV6, &body), 0);
    let ip = Ipv6Packet::new_checked(&out[ETH_HLEN..]).unwrap();
    let m = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (vip, client));
    assert_eq!(
        Icmpv6Repr::parse(&vip, &client, &m, &ChecksumCapabilities::default()).unwrap(),
        Icmpv6Repr::EchoReply { ident: 3, seq_no: 9, data: b"vip?" }
    );
    r.finish();
}

#[test]
fn packets_that_never_make_a_flow_take_no_client_slot() {
    // Room for 16 flows (and 64 client slots).
    let mut r = rig_with(&std::format!("{CONFIG}lb flows 16\n"));
    let vip = a("2001:db8:0:1::80");
    // 1000 SYNs from as many (spoofed, unrouted) sources to a service with
    // no backend: each is refused, none becomes a flow.
    for i in 0..1000u32 {
        let client = Ipv6Addr::from(u128::from(a("2001:db8:99::")) + ((i as u128) << 64 | 7));
        let syn = tcp(client, vip, 40000, 22, true, false);
        r.send(0, &frame(LAN_MAC, client, vip, 6, &syn));
        let _ = (r.sent(0), r.sent(1));
    }
    assert_eq!(r.drops(0, DropReason::LbNoBackend), 1000);
    // A new client is balanced as ever.
    let client = a("2001:db8:0:1::2");
    let out = r.through(0, &frame(LAN_MAC, client, vip, 6, &tcp(client, vip, 40000, 80, true, false)), 1);
    assert_eq!(
        TcpPacket::new_checked(Ipv6Packet::new_checked(&out[ETH_HLEN..]).unwrap().payload()).unwrap().dst_port(),
        8000
    );
    r.finish();
}

#[test]
fn a_client_slot_goes_with_its_last_flow_and_a_64_holds_at_most_its_quota() {
    let mut r = rig_with(&std::format!("{CONFIG}lb flows 16 clients-per-64 2\n"));
    let vip = a("2001:db8:0:1::80");
    let syn = |r: &mut Rig, client: &str, port: u16| {
        let c = a(client);
        r.send(0, &frame(LAN_MAC, c, vip, 6, &tcp(c, vip, port, 80, true, false)));
        r.sent(1).len()
    };
    assert_eq!(syn(&mut r, "2001:db8:0:1::2", 40000), 1);
    assert_eq!(syn(&mut r, "2001:db8:0:1::3", 40000), 1);
    // A third client of that /64 is refused (counted); another /64's is not,
    // nor another flow of a client that has a slot.
    assert_eq!(syn(&mut r, "2001:db8:0:1::4", 40000), 0);
    assert_eq!(r.drops(0, DropReason::LbClientsPer64), 1);
    assert_eq!(syn(&mut r, "2001:db8:0:5::4", 40000), 1);
    assert_eq!(syn(&mut r, "2001:db8:0:1::2", 40001), 1);
    // The half-open flows end (240 s): their slots come back.
    r.now += 300_000_000;
    for _ in 0..4 {
        r.dp.poll(r.now, &mut r.pool);
    }
    assert_eq!(syn(&mut r, "2001:db8:0:1::4", 40000), 1);
    let bad = std::format!("{CONFIG}lb clients-per-64 0\n");
    let e = crate::registry::parse(&bad).unwrap_err();
    assert!(e.iter().any(|e| e.message.contains("clients-per-64")), "{e:?}");
    r.finish();
}

#[test]
fn a_backend_as_a_client_keeps_one_flow() {
    let mut r = rig();
    let (backend, vip) = (a("2001:db8:0:2::12"), a("2001:db8:0:1::80"));
    for _ in 0..3 {
        r.send(1, &frame(DMZ_MAC, backend, vip, 6, &tcp(backend, vip, 40000, 80, true, false)));
        let _ = (r.sent(0), r.sent(1));
    }
    let mut s = std::string::String::new();
    assert!(r.dp.show("flows", &[], r.now, &mut s));
    assert_eq!(s.matches("[2001:db8:0:2::12]:40000").count(), 1, "{s}");
    r.finish();
}
