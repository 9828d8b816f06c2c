//! NAT64 through a real dataplane (nat64 + router on both ports): every
//! translated packet is parsed back with smoltcp and its checksums
//! verified.

use core::net::{Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet,
    Ipv6Packet, NdiscRepr, RawHardwareAddress, TcpPacket, UdpPacket,
};

use super::*;
use crate::testutil::{arp_reply, Rig};

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const POOL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn host() -> Ipv6Addr {
    a("2001:db8:0:1::2")
}

/// The server under the network-specific prefix (RFC 8215's local-use
/// range): a private IPv4 address may be embedded there, never under the
/// well-known prefix (RFC 6052 §3.1).
fn server6() -> Ipv6Addr {
    a("64:ff9b:1::a01:2")
}

const CONFIG: &str = "port lan address 2001:db8:0:1::1/64\n\
                      port wan address 10.1.0.1/24\n\
                      nat64 {\n prefix 64:ff9b:1::/96\n inside 2001:db8:0:1::/64\n outside wan\n filtering address-dependent\n}\n\
                      router\n";

/// A rig with both neighbours known: the server by ARP, the inside host
/// by its solicitation.
fn rig() -> Rig {
    rig_with(CONFIG)
}

fn rig_with(config: &str) -> Rig {
    let mut r = Rig::with_config(config, &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    r.send(1, &arp_reply(SERVER_MAC, SERVER, WAN_MAC, POOL));
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: a("2001:db8:0:1::1"),
        lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)),
    });
    r.send(
        0,
        &v6(
            LAN_MAC,
            host(),
            crate::ipv6::solicited_node(a("2001:db8:0:1::1")),
            255,
            ICMPV6,
            &icmp6(host(), a("ff02::1:ff00:1"), &ns),
        ),
    );
    let _ = (r.sent(0), r.sent(1));
    r
}

fn v6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = std::vec![0u8; ETH_HLEN + HLEN + payload.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&HOST_MAC);
    f[12..14].copy_from_slice(&ipv6::ETHERTYPE);
    ipv6::write_header(&mut f[ETH_HLEN..], payload.len() as u16, next, hops, src, dst);
    f[ETH_HLEN + HLEN..].copy_from_slice(payload);
    f
}

fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, repr: &Icmpv6Repr<'_>) -> Vec<u8> {
    let mut body = std::vec![0u8; repr.buffer_len()];
    repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut body[..]), &ChecksumCapabilities::default());
    body
}

/// A UDP (or TCP SYN) body with a valid checksum for the given pseudo-header.
fn l4(proto: u8, src: IpAddress, dst: IpAddress, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    if proto == UDP {
        let repr = smoltcp::wire::UdpRepr { src_port: sport, dst_port: dport };
        let mut b = std::vec![0u8; 8 + data.len()];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut b[..]),
            &src,
            &dst,
            data.len(),
            |p| p.copy_from_slice(data),
            &caps,
        );
        b
    } else {
        let mut b = std::vec![0u8; 20];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_header_len(20);
        t.set_syn(true);
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(7));
        t.set_window_len(1000);
        t.fill_checksum(&src, &dst);
        b
    }
}

fn v4(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let repr = smoltcp::wire::Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::from(proto),
        payload_len: payload.len(),
        hop_limit: ttl,
    };
    let mut f = std::vec![0u8; ETH_HLEN + 20 + payload.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&SERVER_MAC);
    f[12..14].copy_from_slice(&[8, 0]);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_HLEN..]);
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    f[ETH_HLEN + 20..].copy_from_slice(payload);
    f
}

/// Sends an IPv6 packet from the inside host and returns the IPv4 frame.
fn out4(r: &mut Rig, proto: u8, payload: &[u8], hops: u8) -> Vec<u8> {
    let f = v6(LAN_MAC, host(), server6(), hops, proto, payload);
    r.through(0, &f, 1)
}

#[test]
fn rfc6052_embedding_at_every_prefix_length() {
    // RFC 6052 §2.4, 192.0.2.33 under each prefix length.
    let v4 = Ipv4Addr::new(192, 0, 2, 33);
    for (p, want) in [
        ("2001:db8::/32", "2001:db8:c000:221::"),
        ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
        ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
        ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
        ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
        ("2001:db8:122:344::/96", "2001:db8:122:344::c000:221"),
        ("64:ff9b::/96", "64:ff9b::c000:221"),
    ] {
        let p: Ipv6Net = p.parse().unwrap();
        assert_eq!(embed(&p, v4), a(want), "{p}");
        assert_eq!(extract(&p, &a(want)), v4, "{p}");
    }
}

#[test]
fn udp_goes_out_as_ipv4_from_the_pool_and_the_reply_comes_back_as_ipv6() {
    let mut r = rig();
    let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 5000, 53, b"query");
    let out = out4(&mut r, UDP, &body, 64);
    assert_eq!(out[0..6], SERVER_MAC);
    let ip = Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit(), ip.dont_frag()), (POOL, SERVER, 63, true));
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv4(POOL), &IpAddress::Ipv4(SERVER)), "UDP checksum after translation");
    assert_eq!((udp.dst_port(), udp.payload()), (53, &b"query"[..]));
    let port = udp.src_port();
    // The reply.
    let body = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 53, port, b"answer");
    let back = r.through(1, &v4(WAN_MAC, SERVER, POOL, 64, UDP, &body), 0);
    assert_eq!(back[0..6], HOST_MAC);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    assert_eq!((ip6.src_addr(), ip6.dst_addr(), ip6.hop_limit()), (server6(), host(), 63));
    let udp = UdpPacket::new_checked(ip6.payload()).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv6(server6()), &IpAddress::Ipv6(host())));
    assert_eq!((udp.src_port(), udp.dst_port(), udp.payload()), (53, 5000, &b"answer"[..]));
    // A zero IPv4 UDP checksum gets a real one on the IPv6 side.
    let mut body = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 53, port, b"nocsum");
    body[6..8].fill(0);
    let back = r.through(1, &v4(WAN_MAC, SERVER, POOL, 64, UDP, &body), 0);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    assert!(UdpPacket::new_checked(ip6.payload())
        .unwrap()
        .verify_checksum(&IpAddress::Ipv6(server6()), &IpAddress::Ipv6(host())));
    r.finish();
}

#[test]
fn tcp_checksums_stay_valid_both_ways() {
    let mut r = rig();
    let syn = l4(TCP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 40000, 80, b"");
    let out = out4(&mut r, TCP, &syn, 64);
    let ip = Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.verify_checksum(&IpAddress::Ipv4(POOL), &IpAddress::Ipv4(SERVER)));
    let port = tcp.src_port();
    let synack = l4(TCP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 80, port, b"");
    let back = r.through(1, &v4(WAN_MAC, SERVER, POOL, 64, TCP, &synack), 0);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    let tcp = TcpPacket::new_checked(ip6.payload()).unwrap();
    assert!(tcp.verify_checksum(&IpAddress::Ipv6(server6()), &IpAddress::Ipv6(host())));
    assert_eq!(tcp.dst_port(), 40000);
    r.finish();
}

#[test]
fn echo_is_translated_both_ways_with_its_identifier() {
    let mut r = rig();
    let ping = icmp6(host(), server6(), &Icmpv6Repr::EchoRequest { ident: 77, seq_no: 5, data: b"ping" });
    let out = out4(&mut r, ICMPV6, &ping, 64);
    let ip = Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let Icmpv4Repr::EchoRequest { ident, seq_no: 5, data } =
        Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap()
    else {
        panic!("not an echo request")
    };
    assert_eq!(data, b"ping");
    let reply = Icmpv4Repr::EchoReply { ident, seq_no: 5, data: b"ping" };
    let mut body = std::vec![0u8; reply.buffer_len()];
    reply.emit(&mut Icmpv4Packet::new_unchecked(&mut body[..]), &ChecksumCapabilities::default());
    let back = r.through(1, &v4(WAN_MAC, SERVER, POOL, 64, ICMP, &body), 0);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    let m = Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    let repr = Icmpv6Repr::parse(&server6(), &host(), &m, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(repr, Icmpv6Repr::EchoReply { ident: 77, seq_no: 5, data: b"ping" });
    r.finish();
}

/// An ICMPv4 error from the server about the packet `out` (as it left).
fn error4(ty: u8, code: u8, mtu: u16, out: &[u8]) -> Vec<u8> {
    let quote = &out[ETH_HLEN..(ETH_HLEN + 28 + 8).min(out.len())];
    let mut body = std::vec![ty, code, 0, 0, 0, 0];
    body.extend_from_slice(&mtu.to_be_bytes());
    body.extend_from_slice(quote);
    let c = crate::csum::checksum(&body);
    crate::csum::set(&mut body, 2, c);
    v4(WAN_MAC, SERVER, POOL, 64, ICMP, &body)
}

#[test]
fn icmpv4_errors_come_back_as_icmpv6_with_the_quote_translated() {
    let mut r = rig();
    let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 5000, 9999, b"hello");
    let out = out4(&mut r, UDP, &body, 64);
    for (ty, code, mtu) in [(3, 3, 0), (3, 4, 1400), (11, 0, 0)] {
        let back = r.through(1, &error4(ty, code, mtu, &out), 0);
        let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
        assert_eq!((ip6.src_addr(), ip6.dst_addr()), (server6(), host()));
        let m = Icmpv6Packet::new_checked(ip6.payload()).unwrap();
        assert!(m.verify_checksum(&server6(), &host()));
        let repr = Icmpv6Repr::parse(&server6(), &host(), &m, &ChecksumCapabilities::default()).unwrap();
        let header = match (ty, repr) {
            (3, Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::PortUnreachable, header, .. }) => header,
            (3, Icmpv6Repr::PktTooBig { mtu, header, .. }) => {
                assert_eq!(mtu, 1420, "the IPv4 MTU + 20");
                header
            }
            (11, Icmpv6Repr::TimeExceeded { header, .. }) => header,
            other => panic!("{other:?}"),
        };
        assert_eq!((header.src_addr, header.dst_addr), (host(), server6()), "the quote is what the host sent");
        assert_eq!(header.next_header, IpProtocol::Udp);
        let q = &m.payload()[HLEN..];
        assert_eq!((csum::get(q, 0), csum::get(q, 2)), (5000, 9999), "the quote's ports are the host's");
    }
    assert_eq!(r.dp.ports()[1].counters.dropped(DropReason::NatIcmpErrorNoMatch), 0);
    r.finish();
}

#[test]
fn hop_limit_one_is_answered_by_the_translator_and_ttl_one_too() {
    let mut r = rig();
    let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 5000, 53, b"x");
    let f = v6(LAN_MAC, host(), server6(), 1, UDP, &body);
    let back = r.through(0, &f, 0);
    let ip6 = Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    assert_eq!((ip6.src_addr(), ip6.dst_addr()), (a("2001:db8:0:1::1"), host()));
    let m = Icmpv6Packet::new_checked(ip6.payload()).unwrap();
    assert!(matches!(
        Icmpv6Repr::parse(&ip6.src_addr(), &host(), &m, &ChecksumCapabilities::default()),
        Ok(Icmpv6Repr::TimeExceeded { .. })
    ));
    // A session, then its reply with TTL 1: ICMPv4 time exceeded to the server.
    let out = out4(&mut r, UDP, &body, 64);
    let port = UdpPacket::new_checked(Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap().payload()).unwrap().src_port();
    let reply = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 53, port, b"y");
    let back = r.through(1, &v4(WAN_MAC, SERVER, POOL, 1, UDP, &reply), 1);
    let ip = Ipv4Packet::new_checked(&back[ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.next_header()), (POOL, SERVER, IpProtocol::Icmp));
    assert_eq!(ip.payload()[0], 11);
    r.finish();
}

#[test]
fn what_has_no_session_is_not_let_in_and_pings_to_the_pool_are_answered() {
    let mut r = rig();
    // No mapping: the appliance's own host stack sees it (and drops it).
    let body = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 53, 4444, b"who");
    r.send(1, &v4(WAN_MAC, SERVER, POOL, 64, UDP, &body));
    assert!(r.sent(0).is_empty(), "nothing reaches the inside");
    let answered = r.sent(1);
    assert!(
        answered.iter().all(|f| Ipv4Packet::new_checked(&f[ETH_HLEN..]).unwrap().next_header() == IpProtocol::Icmp),
        "the host stack's port unreachable, nothing else"
    );
    // A ping to the pool address is the appliance's to answer.
    r.send(1, &crate::testutil::echo_request(WAN_MAC, SERVER, POOL, 9, b"hi"));
    let reply = r.sent(1);
    assert_eq!(reply.len(), 1, "echo reply from the pool address");
    let ip = Ipv4Packet::new_checked(&reply[0][ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.payload()[0]), (POOL, 0));
    // Address-dependent filtering: another server may not use a mapping.
    let syn = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 6000, 53, b"q");
    let out = out4(&mut r, UDP, &syn, 64);
    let port = UdpPacket::new_checked(Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap().payload()).unwrap().src_port();
    let other = Ipv4Addr::new(10, 1, 0, 9);
    r.send(1, &arp_reply([2, 0, 0, 0, 0, 9], other, WAN_MAC, POOL));
    let body = l4(UDP, IpAddress::Ipv4(other), IpAddress::Ipv4(POOL), 53, port, b"spoof");
    r.send(1, &v4(WAN_MAC, other, POOL, 64, UDP, &body));
    assert!(r.sent(0).is_empty(), "filtered");
    assert_eq!(r.dp.ports()[1].counters.dropped(DropReason::NatFiltered), 1);
    r.finish();
}

#[test]
fn nat64_configs_are_checked() {
    let bad = |extra: &str| {
        let text = std::format!("port lan address 2001:db8:0:1::1/64\nport wan address 10.1.0.1/24\n{extra}");
        crate::registry::parse(&text).unwrap_err().into_iter().map(|e| e.message).collect::<Vec<_>>().join("\n")
    };
    assert!(bad("nat64 {\n prefix 2001:db8::/33\n inside 2001:db8:0:1::/64\n outside wan\n}\n").contains("RFC 6052"));
    assert!(bad("nat64 {\n inside 2001:db8:0:1::/64\n outside wan\n forward tcp 10.1.0.1:80 10.0.0.1:80\n}\n")
        .contains("no port forwards"));
    assert!(bad("nat64 {\n outside wan\n}\n").contains("needs at least one `inside PREFIX`"));
    let one_armed = "port lan address 2001:db8:0:1::1/64\nport wan address 10.1.0.1/24 address 2001:db8:0:2::1/64\n\
                     nat64 {\n inside 2001:db8::/48\n outside wan\n}\n";
    let e = crate::registry::parse(one_armed).unwrap_err();
    assert!(e[0].message.contains("is on its outside port `wan`"), "{e:?}");
    let both = "nat {\n inside 10.0.0.0/24\n outside wan\n}\nnat64 {\n inside 2001:db8:0:1::/64\n outside wan\n}\n";
    assert!(bad(both).contains("overlaps the nat"), "{}", bad(both));
    let ok = "nat {\n inside 10.0.0.0/24\n outside wan\n ports 1024-30000\n}\nnat64 {\n inside 2001:db8:0:1::/64\n outside wan\n ports 30001-65535\n}\n";
    let c = crate::registry::parse(&std::format!(
        "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\nport wan address 10.1.0.1/24\n{ok}"
    ))
    .unwrap();
    let n64 = c.stages.iter().find(|s| s.def.kind == "nat64").unwrap();
    assert_eq!(
        n64.settings::<NatConfig>().unwrap().nat64.as_ref().unwrap().prefix,
        crate::nat::config::well_known_prefix()
    );
}

#[test]
fn an_inside_hosts_icmpv6_error_goes_out_as_icmpv4_with_the_quote_translated() {
    let mut r = rig();
    // A session: the host asks the server.
    let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 5000, 53, b"q");
    let out = out4(&mut r, UDP, &body, 64);
    let port = UdpPacket::new_checked(Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap().payload()).unwrap().src_port();
    // The server's reply as the host got it, and the host's port unreachable about it.
    let reply_body = l4(UDP, IpAddress::Ipv6(server6()), IpAddress::Ipv6(host()), 53, 5000, b"late");
    let got = v6(LAN_MAC, server6(), host(), 63, UDP, &reply_body);
    let quoted = &got[ETH_HLEN..];
    let header = smoltcp::wire::Ipv6Repr {
        src_addr: server6(),
        dst_addr: host(),
        next_header: IpProtocol::Udp,
        payload_len: reply_body.len(),
        hop_limit: 63,
    };
    let err =
        Icmpv6Repr::DstUnreachable { reason: Icmpv6DstUnreachable::PortUnreachable, header, data: &quoted[HLEN..] };
    let f = v6(LAN_MAC, host(), server6(), 64, ICMPV6, &icmp6(host(), server6(), &err));
    let sent = r.through(0, &f, 1);
    let ip = Ipv4Packet::new_checked(&sent[ETH_HLEN..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.next_header()), (POOL, SERVER, IpProtocol::Icmp));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap() {
        Icmpv4Repr::DstUnreachable { reason: smoltcp::wire::Icmpv4DstUnreachable::PortUnreachable, header, data } => {
            assert_eq!((header.src_addr, header.dst_addr, header.next_header), (SERVER, POOL, IpProtocol::Udp));
            assert_eq!((csum::get(data, 0), csum::get(data, 2)), (53, port), "the quote as the server sent it");
        }
        other => panic!("{other:?}"),
    }
    r.finish();
}

/// `body` as IPv6 fragments of `size` payload bytes each (after the
/// fragment header), identification `ident`.
fn fragments6(body: &[u8], size: usize, ident: u32) -> Vec<Vec<u8>> {
    fragments6_from(host(), body, size, ident)
}

fn fragments6_from(src: Ipv6Addr, body: &[u8], size: usize, ident: u32) -> Vec<Vec<u8>> {
    body.chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let more = (i + 1) * size < body.len();
            let mut p = std::vec![UDP, 0];
            p.extend_from_slice(&(((i * size / 8) as u16) << 3 | more as u16).to_be_bytes());
            p.extend_from_slice(&ident.to_be_bytes());
            p.extend_from_slice(chunk);
            v6(LAN_MAC, src, server6(), 64, 44, &p)
        })
        .collect()
}

#[test]
fn fragments_are_translated_both_ways() {
    let mut r = rig();
    let data: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(server6()), 7000, 9000, &data);
    let mut out = Vec::new();
    for f in fragments6(&body, 1232, 0xabcd_0042) {
        out.push(r.through(0, &f, 1));
    }
    // Two IPv4 fragments of one datagram: reassembled, its UDP checksum holds.
    let ips: Vec<Ipv4Packet<&[u8]>> = out.iter().map(|f| Ipv4Packet::new_checked(&f[ETH_HLEN..]).unwrap()).collect();
    assert!(ips
        .iter()
        .all(|ip| ip.verify_checksum() && ip.ident() == 0x0042 && ip.src_addr() == POOL && ip.dst_addr() == SERVER));
    assert!(ips[0].more_frags() && !ips[1].more_frags());
    assert_eq!((ips[0].frag_offset(), ips[1].frag_offset() as usize), (0, 1232));
    let mut whole = ips[0].payload().to_vec();
    whole.extend_from_slice(ips[1].payload());
    let udp = UdpPacket::new_checked(&whole[..]).unwrap();
    assert!(
        udp.verify_checksum(&IpAddress::Ipv4(POOL), &IpAddress::Ipv4(SERVER)),
        "the reassembled datagram's checksum"
    );
    assert_eq!(udp.payload(), &data[..]);
    let port = udp.src_port();
    // The server's reply in two IPv4 fragments: IPv6 fragments to the host.
    let reply = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 9000, port, &data);
    let mut back = Vec::new();
    for (i, chunk) in reply.chunks(1200).enumerate() {
        let mut f = v4(WAN_MAC, SERVER, POOL, 64, UDP, chunk);
        let more = (i + 1) * 1200 < reply.len();
        let ip = &mut f[ETH_HLEN..];
        ip[4..6].copy_from_slice(&0x77u16.to_be_bytes());
        ip[6..8].copy_from_slice(&(((i * 1200 / 8) as u16) | if more { 0x2000 } else { 0 }).to_be_bytes());
        ip[10..12].fill(0);
        let c = crate::csum::checksum(&ip[..20]);
        crate::csum::set(ip, 10, c);
        back.push(r.through(1, &f, 0));
    }
    let mut whole = Vec::new();
    for f in &back {
        let ip6 = Ipv6Packet::new_checked(&f[ETH_HLEN..]).unwrap();
        assert_eq!((ip6.src_addr(), ip6.dst_addr(), ip6.next_header()), (server6(), host(), IpProtocol::Ipv6Frag));
        let fh = &ip6.payload()[..8];
        assert_eq!((fh[0], u32::from_be_bytes(fh[4..8].try_into().unwrap())), (UDP, 0x77));
        whole.extend_from_slice(&ip6.payload()[8..]);
    }
    let udp = UdpPacket::new_checked(&whole[..]).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv6(server6()), &IpAddress::Ipv6(host())));
    assert_eq!((udp.dst_port(), udp.payload()), (7000, &data[..]));
    // One datagram (DF clear) too large for the IPv6 side: two IPv6 fragments.
    let big: Vec<u8> = (0..1600u32).map(|i| (i * 7) as u8).collect();
    let reply = l4(UDP, IpAddress::Ipv4(SERVER), IpAddress::Ipv4(POOL), 9000, port, &big);
    let mut f = v4(WAN_MAC, SERVER, POOL, 64, UDP, &reply);
    f[ETH_HLEN + 6] &= !0x40;
    f[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
    let c = crate::csum::checksum(&f[ETH_HLEN..ETH_HLEN + 20]);
    crate::csum::set(&mut f[ETH_HLEN..], 10, c);
    r.send(1, &f);
    let two = r.sent(0);
    assert_eq!(two.len(), 2, "split for the 1500-byte IPv6 side");
    let mut whole = Vec::new();
    for f in &two {
        let ip6 = Ipv6Packet::new_checked(&f[ETH_HLEN..]).unwrap();
        assert!(f.len() - ETH_HLEN <= 1500);
        whole.extend_from_slice(&ip6.payload()[8..]);
    }
    let udp = UdpPacket::new_checked(&whole[..]).unwrap();
    assert!(udp.verify_checksum(&IpAddress::Ipv6(server6()), &IpAddress::Ipv6(host())));
    assert_eq!(udp.payload(), &big[..]);
    // A later fragment of an unknown datagram goes nowhere.
    let stray = fragments6(&body, 1232, 0x999)[1].clone();
    r.send(0, &stray);
    assert!(r.sent(1).is_empty());
    assert_eq!(r.dp.ports()[0].counters.dropped(DropReason::NatFragmentUnknown), 1);
    r.finish();
}

/// The NAT64 stage's `stats` line.
fn stats(r: &Rig) -> std::string::String {
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    std::format!("{} ", s.lines().find(|l| l.contains("name=nat64")).unwrap_or_default())
}

/// A UDP datagram from `src` (an inside address) to the server.
fn udp_from(src: Ipv6Addr, sport: u16) -> Vec<u8> {
    let body = l4(UDP, IpAddress::Ipv6(src), IpAddress::Ipv6(server6()), sport, 53, b"q");
    v6(LAN_MAC, src, server6(), 64, UDP, &body)
}

/// Inside hosts across a /48, sessions for 64.
const SMALL: &str = "port lan address 2001:db8:0:1::1/64\n\
                     port wan address 10.1.0.1/24\n\
                     nat64 {\n prefix 64:ff9b:1::/96\n inside 2001:db8::/48\n outside wan\n sessions 64\n}\n\
                     router\n";

#[test]
fn a_flood_of_spoofed_sources_does_not_lock_out_a_new_host() {
    let mut r = rig_with(SMALL);
    // 1000 SYNs, each from another (spoofed) inside address, two per /64:
    // each opens a half-open session, and a full table evicts the oldest.
    for i in 0..1000u32 {
        let src = Ipv6Addr::from(0x2001_0db8_0000_0100_0000_0000_0000_0000u128 + ((i as u128 / 2) << 64) + i as u128);
        let syn = l4(TCP, IpAddress::Ipv6(src), IpAddress::Ipv6(server6()), 40000, 80, b"");
        r.send(0, &v6(LAN_MAC, src, server6(), 64, TCP, &syn));
        let _ = r.sent(1);
    }
    // A new host is translated at once: the flood's stand-ins went with
    // their evicted sessions.
    let out = r.through(0, &udp_from(host(), 5000), 1);
    assert_eq!(Ipv4Packet::new_checked(&out[ETH_HLEN..]).unwrap().src_addr(), POOL);
    assert!(stats(&r).contains(" stand_ins=64 "), "a stand-in per session, no more: {}", stats(&r));
    r.finish();
}

#[test]
fn a_stand_in_comes_back_when_its_last_session_expires() {
    let mut r = rig_with(SMALL);
    let _ = r.through(0, &udp_from(host(), 5000), 1);
    let ping = icmp6(host(), server6(), &Icmpv6Repr::EchoRequest { ident: 7, seq_no: 1, data: b"p" });
    let _ = r.through(0, &v6(LAN_MAC, host(), server6(), 64, ICMPV6, &ping), 1);
    assert!(stats(&r).contains(" stand_ins=1 sessions=2 "), "{}", stats(&r));
    // The ping's session ends (60 s), the UDP one (300 s) holds the stand-in.
    let sweep = |r: &mut Rig, at: u64| {
        r.now = at;
        for _ in 0..8 {
            r.dp.poll(r.now, &mut r.pool);
        }
    };
    sweep(&mut r, 1_200_000 + 100_000_000);
    assert!(stats(&r).contains(" stand_ins=1 sessions=1 "), "{}", stats(&r));
    sweep(&mut r, 1_200_000 + 400_000_000);
    assert!(stats(&r).contains(" stand_ins=0 sessions=0 "), "the last session took the stand-in: {}", stats(&r));
    r.finish();
}

#[test]
fn one_64_holds_at_most_its_quota_of_stand_ins() {
    let text = SMALL.replace(" sessions 64\n", " sessions 64\n hosts-per-64 4\n");
    let mut r = rig_with(&text);
    let in_64 = |net: u128, i: u128| Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + (net << 64) + i);
    for i in 0..4 {
        let _ = r.through(0, &udp_from(in_64(7, 10 + i), 5000), 1);
    }
    // A fifth host of that /64 is refused (counted); another /64's is not.
    r.send(0, &udp_from(in_64(7, 99), 5000));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::Nat64HostsPer64), 1);
    let _ = r.through(0, &udp_from(in_64(8, 99), 5000), 1);
    // More sessions of a host that has a stand-in are not refused.
    let _ = r.through(0, &udp_from(in_64(7, 10), 5001), 1);
    assert!(stats(&r).contains(" stand_ins=5 "), "{}", stats(&r));
    let bad = |q: &str| {
        let t = SMALL.replace(" sessions 64\n", &std::format!(" sessions 64\n hosts-per-64 {q}\n"));
        crate::registry::parse(&t).unwrap_err().into_iter().map(|e| e.message).collect::<Vec<_>>().join("\n")
    };
    assert!(bad("0").contains("hosts-per-64"), "{}", bad("0"));
    assert!(bad("many").contains("hosts-per-64"));
    r.finish();
}

#[test]
fn a_packet_to_the_prefix_from_the_outside_port_is_not_translated() {
    let text = CONFIG.replace("port wan address 10.1.0.1/24", "port wan address 10.1.0.1/24 address 2001:db8:ff::1/64");
    let mut r = rig_with(&text);
    // An inside source, spoofed from wan (its own subnet's neighbour).
    let mut f = udp_from(host(), 5000);
    f[0..6].copy_from_slice(&WAN_MAC);
    r.send(1, &f);
    assert!(r.sent(1).is_empty() && r.sent(0).is_empty(), "not translated");
    assert_eq!(r.drops(1, DropReason::Nat64NotInside), 1);
    assert!(stats(&r).contains(" sessions=0 "), "{}", stats(&r));
    // From the inside port, the same packet is.
    let _ = r.through(0, &udp_from(host(), 5000), 1);
    r.finish();
}

/// The same rig with the well-known prefix (the default) and a default
/// route beyond the server.
const WKP: &str = "port lan address 2001:db8:0:1::1/64\n\
                   port wan address 10.1.0.1/24\n\
                   nat64 {\n inside 2001:db8:0:1::/64\n outside wan\n filtering endpoint-independent\n}\n\
                   route 0.0.0.0/0 via 10.1.0.2\n\
                   router\n";

#[test]
fn the_well_known_prefix_carries_only_global_ipv4_addresses() {
    let mut r = rig_with(WKP);
    let wkp = |v4: Ipv4Addr| embed(&crate::nat::config::well_known_prefix(), v4);
    let send = |r: &mut Rig, to: Ipv4Addr, sport: u16| {
        let dst = wkp(to);
        let body = l4(UDP, IpAddress::Ipv6(host()), IpAddress::Ipv6(dst), sport, 53, b"q");
        r.send(0, &v6(LAN_MAC, host(), dst, 64, UDP, &body));
        r.sent(1)
    };
    // RFC 1918, shared (RFC 6598), documentation, benchmarking, loopback,
    // link-local, this network, reserved, multicast, IETF protocol
    // assignments: dropped, counted.
    let non_global = [
        "10.1.0.2",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.11",
        "198.18.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "0.1.2.3",
        "240.0.0.1",
        "224.0.0.5",
        "192.0.0.8",
    ];
    for (i, v4) in non_global.iter().enumerate() {
        assert!(send(&mut r, v4.parse().unwrap(), 6000 + i as u16).is_empty(), "{v4} under 64:ff9b::/96");
    }
    assert_eq!(r.drops(0, DropReason::Nat64NonGlobal), non_global.len() as u64);
    assert!(stats(&r).contains(" sessions=0 "), "{}", stats(&r));
    // A global address is translated; its reply comes back.
    let global = Ipv4Addr::new(192, 0, 0, 9);
    let out = send(&mut r, global, 5000);
    assert_eq!(out.len(), 1, "192.0.0.9 is globally reachable (IANA)");
    let global = Ipv4Addr::new(1, 2, 3, 4);
    let out = send(&mut r, global, 5001);
    assert_eq!(out.len(), 1);
    let ip = Ipv4Packet::new_checked(&out[0][ETH_HLEN..]).unwrap();
    let port = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
    let reply = |from: Ipv4Addr| {
        let body = l4(UDP, IpAddress::Ipv4(from), IpAddress::Ipv4(POOL), 53, port, b"a");
        v4(WAN_MAC, from, POOL, 64, UDP, &body)
    };
    let back = r.through(1, &reply(global), 0);
    assert_eq!(Ipv6Packet::new_checked(&back[ETH_HLEN..]).unwrap().src_addr(), wkp(global));
    // Endpoint-independent filtering lets anyone in, but a private source
    // is never synthesised under the well-known prefix.
    r.send(1, &reply(Ipv4Addr::new(10, 1, 0, 9)));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(1, DropReason::Nat64NonGlobal), 1);
    // Nor is an ICMP error from a private router on the way.
    let sent = {
        let body = l4(UDP, IpAddress::Ipv4(POOL), IpAddress::Ipv4(global), port, 53, b"q");
        v4(SERVER_MAC, POOL, global, 63, UDP, &body)
    };
    r.send(1, &error4(11, 0, 0, &sent));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(1, DropReason::Nat64NonGlobal), 2);
    r.finish();
}

#[test]
fn one_source_cannot_flush_another_sources_fragments() {
    let mut r = rig();
    let other = a("2001:db8:0:1::3");
    let data: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let body = |src: Ipv6Addr| l4(UDP, IpAddress::Ipv6(src), IpAddress::Ipv6(server6()), 7000, 9000, &data);
    // B sends a first fragment, then A floods 600 first fragments.
    let b = fragments6(&body(host()), 1232, 1);
    let _ = r.through(0, &b[0], 1);
    for i in 0..600u32 {
        let _ = r.through(0, &fragments6_from(other, &body(other), 1232, 100 + i)[0], 1);
    }
    // B's second fragment still finds its translation.
    let f2 = r.through(0, &b[1], 1);
    assert_eq!(Ipv4Packet::new_checked(&f2[ETH_HLEN..]).unwrap().src_addr(), POOL);
    assert!(stats(&r).contains(" fragments_evicted_own=584 fragments_evicted=0 "), "{}", stats(&r));
    r.finish();
}
