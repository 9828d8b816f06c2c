//! NAT behaviour on real frames through the whole dataplane
//! (lan: router → nat; wan: nat → router).

use core::net::Ipv4Addr;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::wire::{EthernetFrame, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use crate::counters::DropReason;
use crate::csum;
use crate::testutil::*;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const OUT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const SERVER2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];

impl Rig {
    /// lan (inside) and wan (outside) with a NAT; `nat` adds settings.
    fn nat(nat: &str) -> Rig {
        let mut r = Rig::with_config(
            &std::format!(
                "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {{\n inside 10.0.0.0/24\n outside wan\n{nat}\n}}\n"
            ),
            &[LAN_MAC, WAN_MAC],
        );
        for host in [A, B] {
            r.send(0, &arp_request(PEER_MAC, host, Ipv4Addr::new(10, 0, 0, 1)));
        }
        for (ip, mac) in [(SERVER, SERVER_MAC), (SERVER2, SERVER_MAC)] {
            r.send(1, &arp_reply(mac, ip, WAN_MAC, OUT));
        }
        r.sent(0);
        r.sent(1);
        r
    }
}

fn ip(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    ip
}

/// (src, sport, dst, dport) of a UDP frame whose checksums verify.
fn udp(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = ip(frame);
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    if u.checksum() != 0 {
        assert!(u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()), "UDP checksum");
    }
    (ip.src_addr(), u.src_port(), ip.dst_addr(), u.dst_port())
}

fn tcp(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = ip(frame);
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()), "TCP checksum");
    (ip.src_addr(), t.src_port(), ip.dst_addr(), t.dst_port())
}

#[test]
fn udp_out_and_back_with_port_preservation() {
    let mut r = Rig::nat("");
    let out = r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"query"), 1);
    assert_eq!(udp(&out), (OUT, 5000, SERVER, 53));
    assert_eq!(EthernetFrame::new_checked(&out[..]).unwrap().dst_addr().0, SERVER_MAC);
    let back = r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"answer"), 0);
    assert_eq!(udp(&back), (SERVER, 53, A, 5000));
    assert_eq!(ip(&back).hop_limit(), 63, "routed after translation");
    r.finish();
}

#[test]
fn endpoint_independent_mapping_across_two_servers() {
    let mut r = Rig::nat("");
    let o1 = r.through(0, &udp_frame(LAN_MAC, (B, 5000), (SERVER, 53), b"x"), 1);
    // A takes 5000 first on another port so B's preserved port is taken.
    let a1 = r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"x"), 1);
    let a2 = r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER2, 53), b"x"), 1);
    assert_eq!(udp(&o1).1, 5000);
    assert_ne!(udp(&a1).1, 5000, "never two inside endpoints on one outside endpoint");
    assert_eq!(udp(&a1).1, udp(&a2).1, "same outside port for both servers");
    r.finish();
}

#[test]
fn address_dependent_filtering_by_default() {
    let mut r = Rig::nat("");
    r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"x"), 1);
    // Same server, other port: allowed; other server: filtered.
    r.through(1, &udp_frame(WAN_MAC, (SERVER, 9999), (OUT, 5000), b"y"), 0);
    r.send(1, &udp_frame(WAN_MAC, (SERVER2, 53), (OUT, 5000), b"z"));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(1, DropReason::NatFiltered), 1);
    r.finish();
}

#[test]
fn tcp_checksums_and_zero_udp_checksum() {
    let mut r = Rig::nat("");
    let out = r.through(0, &tcp_frame(LAN_MAC, (A, 40000), (SERVER, 80), true, false), 1);
    assert_eq!(tcp(&out), (OUT, 40000, SERVER, 80));
    let back = r.through(1, &tcp_frame(WAN_MAC, (SERVER, 80), (OUT, 40000), true, true), 0);
    assert_eq!(tcp(&back), (SERVER, 80, A, 40000));
    let mut zero = udp_frame(LAN_MAC, (A, 6000), (SERVER, 53), b"nocsum");
    zero[14 + 20 + 6] = 0;
    zero[14 + 20 + 7] = 0;
    let out = r.through(0, &zero, 1);
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0], "a zero UDP checksum stays zero");
    r.finish();
}

#[test]
fn ping_out_and_back_translates_the_identifier() {
    let mut r = Rig::nat("");
    let out = r.through(0, &echo_request(LAN_MAC, A, SERVER, 77, b"ping"), 1);
    let o = ip(&out);
    assert_eq!(o.src_addr(), OUT);
    let icmp = smoltcp::wire::Icmpv4Packet::new_checked(o.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let id = icmp.echo_ident();
    // The reply, as the server would send it.
    let mut reply = echo_request(WAN_MAC, SERVER, OUT, id, b"ping");
    reply[14 + 20] = 0; // echo reply
    let l = reply.len();
    reply[14 + 22] = 0;
    reply[14 + 23] = 0;
    let c = csum::checksum(&reply[14 + 20..l]);
    csum::set(&mut reply, 14 + 22, c);
    let back = r.through(1, &reply, 0);
    let b = ip(&back);
    assert_eq!(b.dst_addr(), A);
    let icmp = smoltcp::wire::Icmpv4Packet::new_checked(b.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.echo_ident(), 77);
    r.finish();
}

#[test]
fn inbound_icmp_error_is_translated_with_its_quote() {
    let mut r = Rig::nat("");
    let out = r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 33434), b"probe"), 1);
    // The server answers with port unreachable quoting what it received.
    let quote = &out[14..];
    let mut body = std::vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(quote);
    let c = csum::checksum(&body);
    csum::set(&mut body, 2, c);
    let err = l4_frame(WAN_MAC, SERVER, OUT, IpProtocol::Icmp, &body);
    let back = r.through(1, &err, 0);
    let b = ip(&back);
    assert_eq!(b.dst_addr(), A);
    let icmp = smoltcp::wire::Icmpv4Packet::new_checked(b.payload()).unwrap();
    assert!(icmp.verify_checksum(), "outer ICMP checksum");
    let q = &b.payload()[8..];
    let qip = Ipv4Packet::new_checked(q).unwrap();
    assert!(qip.verify_checksum(), "quoted IP checksum");
    assert_eq!(qip.src_addr(), A, "quote restored to the inside host");
    let qu = UdpPacket::new_checked(qip.payload()).unwrap();
    assert_eq!(qu.src_port(), 5000);
    assert!(qu.verify_checksum(&A.into(), &SERVER.into()), "quoted UDP checksum");
    // An error about nothing we sent is dropped.
    let mut stray = body.clone();
    stray[8 + 12..8 + 16].copy_from_slice(&[10, 1, 0, 1]);
    stray[8 + 20] = 0x99; // another source port
    r.send(1, &l4_frame(WAN_MAC, SERVER, OUT, IpProtocol::Icmp, &stray));
    assert!(r.sent(0).is_empty());
    r.finish();
}

#[test]
fn fragmented_udp_crosses_the_nat() {
    let mut r = Rig::nat("");
    let whole = udp_frame(LAN_MAC, (A, 7000), (SERVER, 9000), &[0x5a; 1000]);
    // Split the datagram by hand: 512 payload bytes, then the rest.
    let ipd = &whole[14..];
    let mk = |off: usize, data: &[u8], more: bool| {
        let mut f = whole[..34].to_vec();
        f.extend_from_slice(data);
        let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
        p.set_total_len((20 + data.len()) as u16);
        p.set_frag_offset(off as u16);
        p.set_more_frags(more);
        p.fill_checksum();
        f
    };
    let first = mk(0, &ipd[20..20 + 512], true);
    let second = mk(512, &ipd[20 + 512..], false);
    let f1 = r.through(0, &first, 1);
    let f2 = r.through(0, &second, 1);
    assert_eq!(ip(&f1).src_addr(), OUT);
    assert_eq!(ip(&f2).src_addr(), OUT, "non-first fragment follows the first");
    // Reassembled, the UDP checksum verifies with the new addresses.
    let mut dgram = ip(&f1).payload().to_vec();
    dgram.extend_from_slice(ip(&f2).payload());
    assert!(UdpPacket::new_checked(&dgram[..]).unwrap().verify_checksum(&OUT.into(), &SERVER.into()));
    // A stray non-first fragment is dropped and counted.
    let mut stray = second.clone();
    stray[14 + 4] = 0x77;
    Ipv4Packet::new_unchecked(&mut stray[14..]).fill_checksum();
    r.send(0, &stray);
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::NatFragmentUnknown), 1);
    r.finish();
}

#[test]
fn one_host_cannot_flush_another_hosts_fragments() {
    let mut r = Rig::nat("");
    let frag = |src: Ipv4Addr, ident: u16, off: usize, more: bool| {
        let mut f = udp_frame(LAN_MAC, (src, 7000 + ident), (SERVER, 9000), &[0x5a; 64]);
        let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
        p.set_ident(ident);
        p.set_frag_offset(off as u16);
        p.set_more_frags(more);
        p.fill_checksum();
        f
    };
    // B sends a first fragment, then A floods 600 first fragments.
    r.send(0, &frag(B, 1, 0, true));
    for i in 0..600u16 {
        r.send(0, &frag(A, 100 + i, 0, true));
        r.sent(1);
    }
    // B's second fragment still finds its translation.
    let f2 = r.through(0, &frag(B, 1, 512, false), 1);
    assert_eq!(ip(&f2).src_addr(), OUT);
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    assert!(s.contains(" fragments_evicted_own=584 fragments_evicted=0 "), "{s}");
    r.finish();
}

#[test]
fn port_forward_and_hairpin() {
    let mut r = Rig::nat("forward tcp 10.1.0.1:8080 10.0.0.3:80");
    // From outside.
    let f = r.through(1, &tcp_frame(WAN_MAC, (SERVER, 33000), (OUT, 8080), true, false), 0);
    assert_eq!(tcp(&f), (SERVER, 33000, B, 80));
    let reply = r.through(0, &tcp_frame(LAN_MAC, (B, 80), (SERVER, 33000), true, true), 1);
    assert_eq!(tcp(&reply), (OUT, 8080, SERVER, 33000));
    // From inside host A to the outside address: hairpinned to B, with A's
    // outside mapping as the source.
    let h = r.through(0, &tcp_frame(LAN_MAC, (A, 41000), (OUT, 8080), true, false), 0);
    let (src, sport, dst, dport) = tcp(&h);
    assert_eq!((src, dst, dport), (OUT, B, 80));
    assert_eq!(sport, 41000, "A's port, preserved");
    assert_eq!(EthernetFrame::new_checked(&h[..]).unwrap().dst_addr().0, PEER_MAC, "to B's MAC on lan");
    r.finish();
}

#[test]
fn ping_to_the_outside_address_is_answered_by_the_appliance() {
    let mut r = Rig::nat("");
    r.send(1, &echo_request(WAN_MAC, SERVER, OUT, 5, b"hi"));
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "echo reply from the host stack");
    r.finish();
}

#[test]
fn full_session_table_refuses_and_counts() {
    let mut r = Rig::nat(" sessions 16");
    for p in 0..40u16 {
        r.send(0, &udp_frame(LAN_MAC, (A, 2000 + p), (SERVER, 53), b"x"));
    }
    assert_eq!(r.sent(1).len(), 16);
    assert_eq!(r.drops(0, DropReason::NatTableFull), 24);
    // The first flows still work.
    r.through(0, &udp_frame(LAN_MAC, (A, 2000), (SERVER, 53), b"again"), 1);
    r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 2000), b"reply"), 0);
    r.finish();
}

fn transport_checksum(ip: &Ipv4Packet<&[u8]>, is_tcp: bool) -> u16 {
    csum::get(ip.payload(), if is_tcp { 16 } else { 6 })
}

/// The TCP or UDP checksum of `ip` computed from scratch.
fn fresh_checksum(ip: &Ipv4Packet<&[u8]>, is_tcp: bool) -> u16 {
    let mut zeroed = ip.payload().to_vec();
    let at = if is_tcp { 16 } else { 6 };
    zeroed[at] = 0;
    zeroed[at + 1] = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip.src_addr().octets());
    pseudo.extend_from_slice(&ip.dst_addr().octets());
    pseudo.extend_from_slice(&[0, if is_tcp { 6 } else { 17 }]);
    pseudo.extend_from_slice(&(zeroed.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&zeroed);
    match csum::checksum(&pseudo) {
        0 if !is_tcp => 0xffff,
        c => c,
    }
}

proptest! {
    // Every translated checksum equals one computed from scratch, on the
    // general path and on the fast path, both ways.
    #[test]
    fn translated_checksums_equal_recomputed(
        a in 2u8..250, sport in 1u16.., dport in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..64), is_tcp in any::<bool>(),
    ) {
        let mut r = Rig::nat(" filtering endpoint-independent");
        let src = Ipv4Addr::new(10, 0, 0, a);
        r.send(0, &arp_request(PEER_MAC, src, Ipv4Addr::new(10, 0, 0, 1)));
        r.sent(0);
        let frame = if is_tcp { tcp_frame(LAN_MAC, (src, sport), (SERVER, dport), true, false) } else { udp_frame(LAN_MAC, (src, sport), (SERVER, dport), &payload) };
        // The first packet opens the session (general path), the second
        // takes the established fast path; then a reply comes in.
        let mut outside = None;
        for _ in 0..2 {
            let out = r.through(0, &frame, 1);
            let o = ip(&out);
            prop_assert_eq!(transport_checksum(&o, is_tcp), fresh_checksum(&o, is_tcp));
            let port = u16::from_be_bytes([o.payload()[0], o.payload()[1]]);
            prop_assert!(outside.is_none_or(|p| p == port));
            outside = Some(port);
        }
        let reply = if is_tcp { tcp_frame(WAN_MAC, (SERVER, dport), (OUT, outside.unwrap()), true, true) } else { udp_frame(WAN_MAC, (SERVER, dport), (OUT, outside.unwrap()), &payload) };
        let back = r.through(1, &reply, 0);
        let b = ip(&back);
        prop_assert_eq!(b.dst_addr(), src);
        prop_assert_eq!(transport_checksum(&b, is_tcp), fresh_checksum(&b, is_tcp));
        r.finish();
    }

    #[test]
    fn random_frames_through_the_nat_never_panic_or_leak(
        frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..120), any::<bool>(), 0usize..60, any::<u8>()), 1..24),
    ) {
        let mut r = Rig::nat(" forward udp 10.1.0.1:5353 10.0.0.3:53");
        for (body, inbound, at, v) in frames {
            let mut f = if inbound {
                l4_frame(WAN_MAC, SERVER, OUT, [IpProtocol::Udp, IpProtocol::Tcp, IpProtocol::Icmp][at % 3], &body)
            } else {
                l4_frame(LAN_MAC, A, SERVER, [IpProtocol::Udp, IpProtocol::Tcp, IpProtocol::Icmp][at % 3], &body)
            };
            if let Some(b) = f.get_mut(14 + 20 + at) { *b = v; }
            r.send(if inbound { 1 } else { 0 }, &f);
            r.sent(0);
            r.sent(1);
        }
        r.finish();
    }
}

#[test]
fn reload_keeps_sessions_and_refuses_bad_configs() {
    let mut r = Rig::nat("");
    let base =
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {\n inside 10.0.0.0/24\n outside wan\n\n}\n";
    r.dp.set_config_text(base);
    r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"q"), 1);
    // A route added: the NAT is unchanged, its session lives on.
    let text = std::format!("{base}route 192.168.0.0/16 via 10.1.0.254\n");
    r.dp.reload("t", &text, &mut r.pool).unwrap();
    let back = r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"a"), 0);
    assert_eq!(udp(&back), (SERVER, 53, A, 5000));
    // A bad config is refused with its errors, and the running one stays.
    let err = r.dp.reload("t", "port lan address 10.0.0.1/33\n", &mut r.pool).unwrap_err();
    assert!(err.starts_with("t:1:18: bad address"), "{err}");
    let err = r.dp.reload("t", "port lan address 10.0.0.1/24\n", &mut r.pool).unwrap_err();
    assert!(err.contains("ports cannot change"), "{err}");
    r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"a"), 0);
    // Metrics in the Prometheus text format.
    let m = r.dp.metrics(&r.pool);
    assert!(m.contains("# TYPE sluice_port_rx_packets_total counter\n"), "{m}");
    assert!(m.contains("sluice_stage_sessions{stage=\"nat\"} 1\n"), "{m}");
    assert!(m.contains("sluice_config_reloads_total 1\n"), "{m}");
    r.finish();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    // Whatever offload metadata and chaining a NIC hands over (a guest on
    // the other side of a tap writes the virtio-net header), packets through
    // the NAT never panic and every buffer comes back.
    #[test]
    fn any_offload_metadata_through_the_nat_never_panics_or_leaks(
        frames in proptest::collection::vec(
            (any::<bool>(), any::<bool>(), 0usize..4000, 64usize..1900, any::<bool>(), 0u16..80, 0u8..40, prop_oneof![Just(0u16), Just(1448u16), any::<u16>()]),
            1..6,
        ),
        wan_offloads in any::<bool>(),
    ) {
        let mut r = Rig::nat(" filtering endpoint-independent");
        r.pool = crate::packet::PacketPool::with_tails(RIG_BUFFERS, 4);
        r.dp.port_mut(1).offloads = wan_offloads;
        for (inbound, tcp, payload, chunk, partial, csum_start, csum_offset, gso_size) in frames {
            let mut body = std::vec![0u8; if tcp { 20 } else { 8 }];
            if tcp {
                body[12] = 5 << 4;
                body[13] = 0x10;
            } else {
                body[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
            }
            body[0..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
            body.extend((0..payload).map(|i| i as u8));
            let proto = if tcp { IpProtocol::Tcp } else { IpProtocol::Udp };
            let frame = if inbound {
                l4_frame(WAN_MAC, SERVER, OUT, proto, &body)
            } else {
                l4_frame(LAN_MAC, A, SERVER, proto, &body)
            };
            let mut head = chained(&mut r.pool, &frame, chunk);
            head.meta.offload = crate::packet::Offload { csum_partial: partial, csum_start, csum_offset, gso_size };
            let mut batch = crate::packet::Batch::new();
            batch.push(head).unwrap();
            r.dp.receive(if inbound { 1 } else { 0 }, &mut batch, &mut r.pool, r.now);
            r.dp.poll(r.now, &mut r.pool);
            r.sent(0);
            r.sent(1);
        }
        // Every buffer, chained or cut, is back in the pool.
        r.finish();
    }
}

#[test]
fn show_lists_sessions_filtered_and_paged_and_the_framework_views() {
    let mut r = Rig::nat("");
    for p in 0..5u16 {
        r.through(0, &udp_frame(LAN_MAC, (A, 5000 + p), (SERVER, 53), b"q"), 1);
    }
    r.through(0, &udp_frame(LAN_MAC, (B, 7000), (SERVER2, 53), b"q"), 1);
    let show = |r: &Rig, what: &str, q: &str| {
        let mut s = std::string::String::new();
        assert!(r.dp.show(what, &crate::dataplane::query_pairs(q), r.now, &mut s), "{what}");
        s
    };
    let all = show(&r, "sessions", "");
    assert_eq!(all.lines().filter(|l| l.starts_with("udp ")).count(), 6, "{all}");
    assert!(all.contains("10.0.0.3:7000") && all.contains("10.1.0.3:53"), "{all}");
    let b = show(&r, "sessions", "addr=10.0.0.3");
    assert_eq!(b.lines().filter(|l| l.starts_with("udp ")).count(), 1, "{b}");
    let page = show(&r, "sessions", "limit=2");
    assert_eq!(page.lines().filter(|l| l.starts_with("udp ")).count(), 2, "{page}");
    let next = page.lines().find_map(|l| l.strip_prefix("more: offset=")).expect("a next page");
    let rest = show(&r, "sessions", &std::format!("offset={next}&limit=1000"));
    assert_eq!(rest.lines().filter(|l| l.starts_with("udp ")).count(), 4, "{rest}");
    assert!(show(&r, "neighbors", "").contains("10.1.0.2") && show(&r, "neighbors", "").contains("reachable"));
    assert!(show(&r, "routes", "").contains("10.0.0.0/24"));
    assert!(show(&r, "stages", "").contains("pipeline lan: router nat"));
    let mut s = std::string::String::new();
    assert!(!r.dp.show("nonsense", &[], 0, &mut s));
    r.finish();
}

#[test]
fn unsolicited_inbound_to_an_inside_host_is_dropped_unless_inbound_route() {
    let mut r = Rig::nat("filtering address-and-port-dependent");
    // Not to the pool, straight to an inside host (the router has a
    // connected route for it): no session asked for it.
    r.send(1, &udp_frame(WAN_MAC, (SERVER, 4000), (A, 22), b"probe"));
    r.send(1, &tcp_frame(WAN_MAC, (SERVER, 4000), (B, 22), true, false));
    assert!(r.sent(0).is_empty(), "nothing reaches the inside");
    assert_eq!(r.drops(1, DropReason::NatInboundUnsolicited), 2);
    // Sessions and port forwards work as before.
    let out = r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"query"), 1);
    assert_eq!(udp(&out), (OUT, 5000, SERVER, 53));
    let back = r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"answer"), 0);
    assert_eq!(udp(&back), (SERVER, 53, A, 5000));
    // The appliance's own inside address still answers (not forwarded).
    r.send(1, &echo_request(WAN_MAC, SERVER, Ipv4Addr::new(10, 0, 0, 1), 1, b"x"));
    assert_eq!(r.sent(1).len(), 1, "echo reply");
    r.finish();

    // `inbound route` routes them in, as a plain router would.
    let mut r = Rig::nat("filtering address-and-port-dependent\ninbound route");
    let inbound = r.through(1, &udp_frame(WAN_MAC, (SERVER, 4000), (A, 22), b"probe"), 0);
    assert_eq!(udp(&inbound), (SERVER, 4000, A, 22));
    assert_eq!(r.drops(1, DropReason::NatInboundUnsolicited), 0);
    r.finish();
}

#[test]
fn inbound_setting_is_parsed_and_a_bad_one_refused_with_its_place() {
    let conf = |s: &str| {
        std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {{\n inside 10.0.0.0/24\n outside wan\n {s}\n}}\n")
    };
    let nat =
        |s: &str| crate::registry::parse(&conf(s)).unwrap().first::<crate::nat::NatConfig>().unwrap().inbound_route;
    assert!(!nat(""), "dropped by default");
    assert!(!nat("inbound drop"));
    assert!(nat("inbound route"));
    let e = crate::registry::parse(&conf("inbound forward")).unwrap_err();
    let e = std::format!("{}", e[0].display("t.conf"));
    assert!(e.starts_with("t.conf:6:10:") && e.contains("expected drop or route"), "{e}");
}

#[test]
fn a_load_balancers_backend_inside_the_nat_is_still_reached_through_its_vip() {
    // images/configs/edge.conf: the VIP on wan, its backend in dmz, dmz
    // inside the NAT. The refusal looks at the packet as it arrived (to the
    // VIP), not at where the LB sends it.
    let dmz_mac = [0x52, 0x54, 0, 0, 0, 3];
    let backend = Ipv4Addr::new(10, 2, 0, 11);
    let mut r = Rig::with_config(
        "port wan address 10.1.0.1/24\nport dmz address 10.2.0.1/24\nport lan address 10.0.0.1/24\n\
         service web {\n vip 10.1.0.1:80\n mode dnat\n check none\n backend 10.2.0.11:8000\n}\n\
         nat {\n inside 10.0.0.0/24\n inside 10.2.0.0/24\n outside wan\n}\n\
         pipeline wan lb nat router\npipeline dmz lb router nat\npipeline lan router nat\n",
        &[WAN_MAC, dmz_mac, LAN_MAC],
    );
    r.send(1, &arp_reply(SERVER_MAC, backend, dmz_mac, Ipv4Addr::new(10, 2, 0, 1)));
    r.sent(1);
    let to_backend = r.through(0, &tcp_frame(WAN_MAC, (SERVER, 4000), (OUT, 80), true, false), 1);
    assert_eq!(tcp(&to_backend), (SERVER, 4000, backend, 8000));
    // Straight to the backend's address: refused.
    r.send(0, &tcp_frame(WAN_MAC, (SERVER, 4001), (backend, 8000), true, false));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::NatInboundUnsolicited), 1);
    r.finish();
}

#[test]
fn a_reload_that_changes_inbound_keeps_the_sessions_and_applies_at_once() {
    let mut r = Rig::nat("");
    let conf = |s: &str| {
        std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {{\n inside 10.0.0.0/24\n outside wan\n{s}\n}}\n")
    };
    r.through(0, &udp_frame(LAN_MAC, (A, 5000), (SERVER, 53), b"q"), 1);
    r.dp.reload("t", &conf(" inbound route"), &mut r.pool).unwrap();
    let back = r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"a"), 0);
    assert_eq!(udp(&back), (SERVER, 53, A, 5000), "the session lived on");
    let inbound = r.through(1, &udp_frame(WAN_MAC, (SERVER, 4000), (A, 22), b"probe"), 0);
    assert_eq!(udp(&inbound), (SERVER, 4000, A, 22), "routed in now");
    r.dp.reload("t", &conf(""), &mut r.pool).unwrap();
    r.send(1, &udp_frame(WAN_MAC, (SERVER, 4000), (A, 22), b"probe"));
    assert!(r.sent(0).is_empty());
    assert_eq!(r.drops(1, DropReason::NatInboundUnsolicited), 1);
    r.through(1, &udp_frame(WAN_MAC, (SERVER, 53), (OUT, 5000), b"a"), 0);
    r.finish();
}

/// A TCP segment with FIN (and ACK), as a closing side sends it.
fn tcp_fin_frame(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    tcp_control_frame(dst_mac, src, dst, smoltcp::wire::TcpControl::Fin, true)
}

#[test]
fn show_sessions_names_the_tcp_state_the_table_holds() {
    let mut r = Rig::nat("");
    let state = |r: &Rig| -> std::string::String {
        let mut s = std::string::String::new();
        assert!(r.dp.show("sessions", &crate::dataplane::query_pairs("proto=tcp"), r.now, &mut s));
        let row = s.lines().find(|l| l.starts_with("tcp ")).unwrap_or_else(|| panic!("no tcp row: {s}"));
        row.split_whitespace().nth(4).unwrap().into()
    };
    r.through(0, &tcp_frame(LAN_MAC, (A, 40000), (SERVER, 80), true, false), 1);
    assert_eq!(state(&r), "syn-sent");
    r.through(1, &tcp_frame(WAN_MAC, (SERVER, 80), (OUT, 40000), true, true), 0);
    assert_eq!(state(&r), "syn-received");
    r.through(0, &tcp_frame(LAN_MAC, (A, 40000), (SERVER, 80), false, true), 1);
    assert_eq!(state(&r), "established");
    r.through(0, &tcp_fin_frame(LAN_MAC, (A, 40000), (SERVER, 80)), 1);
    assert_eq!(state(&r), "fin-wait");
    r.through(1, &tcp_fin_frame(WAN_MAC, (SERVER, 80), (OUT, 40000)), 0);
    assert_eq!(state(&r), "closed");
    r.finish();
}

#[test]
fn a_bare_show_lists_every_view_stages_included() {
    let r = Rig::nat("");
    let mut s = std::string::String::new();
    assert!(r.dp.show("", &[], r.now, &mut s), "a bare show answers");
    for v in ["ports", "neighbors", "routes", "stages", "tunnels", "sessions", "backends", "flows"] {
        assert!(s.contains(v), "{v} missing: {s}");
    }
    r.finish();
}
