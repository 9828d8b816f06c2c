//! The dataplane on its own: ingress, reloads, management, wires.

use super::*;
use crate::mgmt::Request;
use crate::packet::BURST;
use crate::registry as config;
use crate::testutil::*;
use ipnet::Ipv4Net;
use proptest::prelude::*;
use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, Ipv4Packet};
use std::string::String;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn net() -> Option<Ipv4Net> {
    Some("10.0.0.1/24".parse().unwrap())
}

fn classify1(frame: &[u8]) -> Verdict {
    classify((MAC, net(), false), &[ME, Ipv4Addr::new(10, 1, 0, 1)], (&[], &[]), frame, frame.len())
}

#[test]
fn classification_of_real_frames() {
    assert_eq!(classify1(&arp_request(PEER_MAC, PEER_IP, ME)), Verdict::Arp);
    assert_eq!(classify1(&echo_request(MAC, PEER_IP, ME, 1, b"x")), Verdict::Local);
    assert_eq!(
        classify1(&echo_request(MAC, PEER_IP, Ipv4Addr::new(10, 1, 0, 1), 1, b"x")),
        Verdict::Local,
        "another port's address"
    );
    let other = echo_request(MAC, PEER_IP, Ipv4Addr::new(192, 0, 2, 1), 1, b"x");
    assert_eq!(classify1(&other), Verdict::Pipeline);
    let not_mine = echo_request([2, 0, 0, 0, 0, 5], PEER_IP, ME, 1, b"x");
    assert_eq!(classify1(&not_mine), Verdict::Drop(DropReason::NotOurMac));
    assert_eq!(classify1(&[0; 13]), Verdict::Drop(DropReason::EthTruncated));
}

#[test]
fn malformed_ipv4_gets_the_right_reason() {
    let good = echo_request(MAC, PEER_IP, ME, 1, b"abcdefgh");
    let with = |f: &dyn Fn(&mut std::vec::Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        classify1(&v)
    };
    assert_eq!(with(&|v| v.truncate(14 + 19)), Verdict::Drop(DropReason::Ipv4Truncated));
    assert_eq!(with(&|v| v.truncate(v.len() - 1)), Verdict::Drop(DropReason::Ipv4Truncated));
    assert_eq!(with(&|v| v[14] = 0x65), Verdict::Drop(DropReason::Ipv4BadVersion));
    assert_eq!(with(&|v| v[14] = 0x44), Verdict::Drop(DropReason::Ipv4BadHeaderLen));
    assert_eq!(with(&|v| v[24] ^= 0xff), Verdict::Drop(DropReason::Ipv4BadChecksum));
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

pub(crate) fn dataplane(extra: &str) -> Dataplane {
    let cfg =
        config::parse(&std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n{extra}")).unwrap();
    Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7)
}

#[test]
fn a_reload_whose_tables_do_not_fit_is_refused_and_the_old_config_stays() {
    let mut pool = PacketPool::new(8);
    let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n";
    let small = std::format!("{base}nat {{\n inside 10.0.0.0/24\n outside wan\n sessions 1000\n}}\n");
    let mut dp = Dataplane::new(&config::parse(&small).unwrap(), &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    dp.set_free_memory_probe(|| 4 << 20);
    let big = small.replace("sessions 1000", "sessions 1000000");
    let err = dp.reload("new.conf", &big, &mut pool).unwrap_err();
    assert!(err.contains("new.conf: the new tables need") && err.contains("the running config stays"), "{err}");
    let mut s = String::new();
    dp.write_stats(&mut s).unwrap();
    assert!(s.contains("session_capacity=1000 "), "{s}");
    // Tables that fit are taken.
    dp.reload("new.conf", &small.replace("sessions 1000", "sessions 2000"), &mut pool).unwrap();
    let mut s = String::new();
    dp.write_stats(&mut s).unwrap();
    assert!(s.contains("session_capacity=2000 "), "{s}");
}

const TOKEN: &[u8] = b"0123456789abcdef";

fn request(method: &str, path: &str, body: &str, bearer: Option<&str>) -> Request {
    Request { method: method.into(), path: path.into(), body: body.as_bytes().to_vec(), bearer: bearer.map(Into::into) }
}

#[test]
fn management_requests_need_the_token_and_reloads_need_one_configured() {
    let mut pool = PacketPool::new(8);
    let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nport mgmt address 10.9.0.1/24\n";
    let text = std::format!("{base}management mgmt listen 8080\n");
    let cfg = config::parse(&text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]], 0, 7);
    let mut c = crate::mgmt::MgmtCounters::default();
    // No token configured: reads work, reloads are refused.
    assert_eq!(dp.answer(&request("GET", "/metrics", "", None), &mut pool, &mut c).status, 200);
    assert_eq!(dp.answer(&request("PUT", "/config", &text, None), &mut pool, &mut c).status, 403);
    dp.set_management_token(Some(b"s3cret"));
    for (path, status) in [("/health", 200), ("/metrics", 401), ("/config", 401)] {
        assert_eq!(dp.answer(&request("GET", path, "", None), &mut pool, &mut c).status, status, "{path}");
        assert_eq!(dp.answer(&request("GET", path, "", Some("wrong")), &mut pool, &mut c).status, status, "{path}");
        assert_eq!(dp.answer(&request("GET", path, "", Some("s3cret")), &mut pool, &mut c).status, 200, "{path}");
    }
    assert_eq!(c.unauthorized, 5, "the 403 and two refusals each for /metrics and /config");
    let r =
        dp.answer(&request("PUT", "/config", &std::format!("# moved\n\n{text}"), Some("s3cret")), &mut pool, &mut c);
    assert_eq!(r.status, 200, "{}", std::string::String::from_utf8_lossy(&r.body));
    assert!(std::str::from_utf8(&r.body).unwrap().contains("lasts until the appliance restarts"));
    let health = dp.answer(&request("GET", "/health", "", None), &mut pool, &mut c);
    assert!(std::str::from_utf8(&health.body).unwrap().contains("config: PUT /config, reload 1"));
    // The token never shows in the config the endpoint serves.
    let served = dp.answer(&request("GET", "/config", "", Some("s3cret")), &mut pool, &mut c);
    assert!(!std::str::from_utf8(&served.body).unwrap().contains("s3cret"));
    // The management port's pipeline cannot be changed by a reload.
    let r = dp.answer(
        &request("PUT", "/config", &std::format!("{text}pipeline mgmt router\n"), Some("s3cret")),
        &mut pool,
        &mut c,
    );
    assert_eq!(r.status, 400);
    // metrics open: /metrics without the token.
    let open = std::format!("{base}management mgmt listen 8080 metrics open\n");
    let mut dp = Dataplane::new(&config::parse(&open).unwrap(), &[MAC, [2; 6], [4; 6]], 0, 7);
    dp.set_management_token(Some(b"s3cret"));
    assert_eq!(dp.answer(&request("GET", "/metrics", "", None), &mut pool, &mut c).status, 200);
    assert_eq!(dp.answer(&request("GET", "/config", "", None), &mut pool, &mut c).status, 401);
}

#[test]
fn sources_that_belong_on_another_port_are_dropped() {
    let mut pool = PacketPool::new(16);
    let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 rpf strict\nport mgmt address 10.9.0.1/24\nmanagement mgmt\nroute 0.0.0.0/0 via 10.1.0.254\n";
    let cfg = config::parse(base).unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]], 0, 7);
    let far = Ipv4Addr::new(192, 0, 2, 9);
    let send = |dp: &mut Dataplane, pool: &mut PacketPool, port: PortId, mac: [u8; 6], src: Ipv4Addr| {
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(mac, src, far, 1, b"x"));
        b.push(p).unwrap();
        dp.receive(port, &mut b, pool, 0);
        dp.ports()[port as usize].counters.dropped(DropReason::SourceWrongPort)
    };
    // lan (loose): the appliance's own address and the management
    // prefix are refused as sources; another data port's prefix is not.
    assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 9, 0, 1)), 1);
    assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 9, 0, 7)), 2);
    assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 1, 0, 1)), 3);
    assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 1, 0, 7)), 3);
    assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 0, 0, 7)), 3);
    // wan (strict): lan's prefix is refused there.
    let wan = [0x52, 0x54, 0, 0, 0, 2];
    assert_eq!(send(&mut dp, &mut pool, 1, wan, Ipv4Addr::new(10, 0, 0, 7)), 1);
    assert_eq!(send(&mut dp, &mut pool, 1, wan, Ipv4Addr::new(198, 51, 100, 7)), 1);
    // Nothing is routed into the management network.
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 9, 0, 2), 1, b"x"));
    b.push(p).unwrap();
    let before = dp.ports()[0].counters.dropped(DropReason::NoRoute);
    let neighbors_before = dp.egress.neighbors.len();
    dp.receive(0, &mut b, &mut pool, 0);
    dp.poll(1, &mut pool);
    assert!(dp.ports()[2].tx.is_empty(), "nothing leaves the management port");
    // It follows the default route to wan's gateway (already asked
    // for), not a connected route into 10.9.0.0/24.
    assert_eq!(dp.ports()[0].counters.dropped(DropReason::NoRoute), before);
    assert_eq!(dp.egress.neighbors.len(), neighbors_before, "no ARP for 10.9.0.2");
    let mut stats = String::new();
    dp.write_stats(&mut stats).unwrap();
    assert!(stats.contains("stage name=router packets=4 tx=0 forwarded=4 "), "{stats}");
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 16);
}

#[test]
fn arp_requests_from_off_link_senders_are_answered_but_not_learned() {
    let mut pool = PacketPool::new(8);
    let mut dp = dataplane("");
    let far = Ipv4Addr::new(192, 168, 77, 1);
    let mut b = Batch::new();
    for target in [ME, Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 0, 0, 99)] {
        let mut p = pool.alloc().unwrap();
        p.fill(&arp_request(PEER_MAC, far, target));
        b.push(p).unwrap();
    }
    dp.receive(0, &mut b, &mut pool, 0);
    dp.poll(1, &mut pool);
    let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(0).tx.pop_front()).collect();
    assert_eq!(out.len(), 2, "both appliance addresses answered, the stranger's not");
    for (p, ours) in out.iter().zip([ME, Ipv4Addr::new(10, 1, 0, 1)]) {
        let frame = EthernetFrame::new_checked(p.data()).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(PEER_MAC));
        assert_eq!(frame.src_addr(), EthernetAddress(MAC));
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(MAC),
                source_protocol_addr: ours,
                target_hardware_addr: EthernetAddress(PEER_MAC),
                target_protocol_addr: far,
            }
        );
    }
    assert_eq!(dp.egress.neighbors.len(), 0, "an off-link sender is not a neighbour");
    for p in out {
        pool.free(p);
    }
    // A sender on another port's subnet (two ports on one segment, as the
    // igb VFs on one PF's wire): only that port answers, or the sender could
    // take this port's MAC for the other's address.
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&arp_request(PEER_MAC, Ipv4Addr::new(10, 1, 0, 7), ME));
    b.push(p).unwrap();
    dp.receive(0, &mut b, &mut pool, 0);
    dp.poll(2, &mut pool);
    assert!(dp.port_mut(0).tx.is_empty(), "not answered on the port it is not on");
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 8);
}

#[test]
fn driver_and_loop_counters_reach_stats_and_metrics() {
    let pool = PacketPool::new(4);
    let mut dp = dataplane("");
    dp.port_mut(0).offloads = true;
    let c = |name, gauge, value| crate::stats::Sample { name, help: "h", gauge, value };
    dp.port_mut(0).nic_counters.extend([c("rx_kicks", false, 7), c("rx_large", false, 5)]);
    dp.loop_counters.extend([c("busy_turns", false, 3), c("cycles_per_packet", true, 900)]);
    let mut s = String::new();
    dp.write_stats(&mut s).unwrap();
    assert!(s.contains("nic port=lan offloads=1 rx_kicks=7 rx_large=5 host_tx_no_buffer=0\n"), "{s}");
    assert!(s.contains("loop name=poll busy_turns=3 cycles_per_packet=900\n"), "{s}");
    let m = dp.metrics(&pool);
    assert!(m.contains("# TYPE sluice_nic_rx_large_total counter\nsluice_nic_rx_large_total{port=\"lan\"} 5\n"), "{m}");
    assert!(m.contains("# TYPE sluice_nic_offloads gauge\n"), "{m}");
    assert!(
        m.contains("# TYPE sluice_loop_cycles_per_packet gauge\nsluice_loop_cycles_per_packet{loop=\"poll\"} 900\n"),
        "{m}"
    );
}

#[test]
fn receive_counts_and_answers() {
    let mut pool = PacketPool::new(64);
    let mut dp = dataplane("");
    let mut batch = Batch::new();
    for frame in [arp_request(PEER_MAC, PEER_IP, ME), echo_request(MAC, PEER_IP, ME, 3, b"ping"), std::vec![0xff; 60]] {
        let mut p = pool.alloc().unwrap();
        p.fill(&frame);
        batch.push(p).unwrap();
    }
    dp.receive(0, &mut batch, &mut pool, 0);
    assert!(batch.is_empty());
    dp.poll(1, &mut pool);
    let port = &dp.ports()[0];
    assert_eq!(port.counters.rx_packets, 3);
    assert_eq!(port.counters.local_packets, 2);
    assert_eq!(port.tx.len(), 2, "ARP reply and echo reply");
    let mut s = String::new();
    dp.write_stats(&mut s).unwrap();
    assert!(s.starts_with("stats port=lan rx_packets=3 "), "{s}");
    assert!(s.contains(" drop_unknown_ethertype=1\n"), "{s}");
    assert!(s.contains("stage name=router packets=1 tx=0 forwarded=0 "), "the ping to us passes the router: {s}");
    assert!(s.contains("egress name=egress "), "{s}");
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 64);
}

#[test]
fn without_a_router_nothing_is_forwarded() {
    let mut pool = PacketPool::new(8);
    let mut dp = dataplane("pipeline lan");
    let mut batch = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&echo_request(MAC, PEER_IP, Ipv4Addr::new(10, 1, 0, 2), 3, b"ping"));
    batch.push(p).unwrap();
    dp.receive(0, &mut batch, &mut pool, 0);
    assert_eq!(dp.ports()[0].counters.dropped(DropReason::NoRoute), 1);
    assert_eq!(pool.available(), 8);
}

#[test]
fn a_wire_passes_every_frame_unchanged() {
    let mut pool = PacketPool::new(8);
    let mut dp = dataplane("wire lan wan");
    let mut batch = Batch::new();
    for frame in [std::vec![0xee; 60], arp_request(PEER_MAC, PEER_IP, ME)] {
        let mut p = pool.alloc().unwrap();
        p.fill(&frame);
        batch.push(p).unwrap();
    }
    dp.receive(0, &mut batch, &mut pool, 0);
    let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].data(), &[0xee; 60][..]);
    for p in out {
        pool.free(p);
    }
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 8);
}

/// A TCP super-packet of `payload` bytes from lan to 10.1.0.2, as a
/// NIC with offloads delivers it: chained, checksum partial.
fn super_packet(pool: &mut PacketPool, payload: usize) -> crate::packet::Packet {
    use crate::csum;
    use crate::packet::Offload;
    let mut f = tcp_frame(MAC, (PEER_IP, 40000), (Ipv4Addr::new(10, 1, 0, 2), 80), false, true);
    f.extend((0..payload).map(|i| (i % 253) as u8));
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = csum::checksum(&f[14..34]);
    csum::set(&mut f, 24, c);
    // The partial checksum: the pseudo-header sum.
    let mut sum = 6u32 + (ip_len as u32 - 20);
    for at in [26, 28, 30, 32] {
        sum += csum::get(&f, at) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    csum::set(&mut f, 34 + 16, sum as u16);
    let mut head = chained(pool, &f, 1800);
    head.meta.offload = Offload { csum_partial: true, csum_start: 34, csum_offset: 16, gso_size: 1448 };
    head
}

#[test]
fn super_packets_leave_whole_or_cut_as_the_out_port_allows() {
    use smoltcp::wire::TcpPacket;
    for offloads in [true, false] {
        let mut pool = PacketPool::with_tails(64, 2);
        let mut dp = dataplane("");
        dp.port_mut(1).offloads = offloads;
        // The next hop is known.
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&arp_reply(
            [2, 0, 0, 0, 0, 9],
            Ipv4Addr::new(10, 1, 0, 2),
            [0x52, 0x54, 0, 0, 0, 2],
            Ipv4Addr::new(10, 1, 0, 1),
        ));
        b.push(p).unwrap();
        dp.receive(1, &mut b, &mut pool, 0);
        while let Some(p) = dp.port_mut(1).tx.pop_front() {
            pool.free(p);
        }
        let mut b = Batch::new();
        b.push(super_packet(&mut pool, 10_000)).unwrap();
        dp.receive(0, &mut b, &mut pool, 0);
        let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
        if offloads {
            assert_eq!(out.len(), 1, "sent whole for the NIC to cut");
            assert!(out[0].is_chained() && out[0].meta.offload.is_gso());
        } else {
            assert_eq!(out.len(), 7, "10000 bytes in 1448-byte segments");
            let mut seq = 1000;
            for s in &out {
                let ip = Ipv4Packet::new_checked(&s.data()[14..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.hop_limit(), 63);
                let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
                assert_eq!(tcp.seq_number().0, seq);
                seq += tcp.payload().len() as i32;
                assert_eq!(s.meta.offload, Default::default());
            }
            assert_eq!(seq, 11_000);
        }
        for p in out {
            pool.free(p);
        }
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 64, "offloads {offloads}: every buffer back");
    }
}

#[test]
fn a_partial_checksum_datagram_too_big_for_the_port_is_completed_and_fragmented() {
    use crate::csum;
    use smoltcp::wire::UdpPacket;
    let cfg = config::parse("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 mtu 1400\n").unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    dp.port_mut(1).offloads = true;
    let mut pool = PacketPool::new(16);
    let dst = Ipv4Addr::new(10, 1, 0, 2);
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&arp_reply([2, 0, 0, 0, 0, 9], dst, [0x52, 0x54, 0, 0, 0, 2], Ipv4Addr::new(10, 1, 0, 1)));
    b.push(p).unwrap();
    dp.receive(1, &mut b, &mut pool, 0);
    while let Some(p) = dp.port_mut(1).tx.pop_front() {
        pool.free(p);
    }
    // 1472 bytes of UDP, DF clear, checksum left partial by the sender.
    let payload: std::vec::Vec<u8> = (0..1464u32).map(|i| i as u8).collect();
    let mut f = udp_frame(MAC, (PEER_IP, 5000), (dst, 53), &payload);
    f[20] &= !0x40; // DF clear
    csum::set(&mut f, 24, 0);
    let c = csum::checksum(&f[14..34]);
    csum::set(&mut f, 24, c);
    let mut sum = 17u32 + 1472;
    for at in [26, 28, 30, 32] {
        sum += csum::get(&f, at) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    csum::set(&mut f, 34 + 6, sum as u16);
    let mut p = pool.alloc().unwrap();
    p.fill(&f);
    p.meta.offload = crate::packet::Offload { csum_partial: true, csum_start: 34, csum_offset: 6, gso_size: 0 };
    let mut b = Batch::new();
    b.push(p).unwrap();
    dp.receive(0, &mut b, &mut pool, 0);
    let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
    assert_eq!(out.len(), 2, "fragmented to the 1400-byte MTU");
    let mut datagram = std::vec::Vec::new();
    for s in &out {
        let ip = Ipv4Packet::new_checked(&s.data()[14..]).unwrap();
        assert!(ip.verify_checksum() && ip.total_len() <= 1400);
        datagram.extend_from_slice(ip.payload());
    }
    let udp = UdpPacket::new_checked(&datagram[..]).unwrap();
    assert!(udp.verify_checksum(&PEER_IP.into(), &dst.into()), "the completed checksum verifies");
    assert_eq!(udp.payload(), &payload[..]);
    for p in out {
        pool.free(p);
    }
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 16);
}

#[test]
fn announce_queues_one_gratuitous_arp_per_port() {
    let mut pool = PacketPool::new(8);
    let mut dp = dataplane("");
    dp.announce(&mut pool);
    assert_eq!(dp.ports()[0].tx.len(), 1);
    assert_eq!(dp.ports()[1].tx.len(), 1);
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 8);
}

proptest! {
    // Random bytes, and random mutations of valid frames, through the
    // whole dataplane (ingress, router, host stack) never panic and
    // never leak a buffer.
    #[test]
    fn random_frames_never_panic_or_leak(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..BURST),
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
        dst in any::<u32>(),
        ttl in 0u8..4,
    ) {
        let mut pool = PacketPool::new(BURST * 4);
        let mut dp = dataplane("route 0.0.0.0/0 via 10.1.0.254");
        let mut batch = Batch::new();
        for (i, f) in frames.iter().enumerate() {
            let mut p = pool.alloc().unwrap();
            let mut bytes = match i % 3 {
                0 => f.clone(),
                1 => echo_request(MAC, PEER_IP, ME, 1, f),
                _ => echo_request(MAC, PEER_IP, Ipv4Addr::from(dst), 1, f),
            };
            if bytes.len() > 22 && i % 3 == 2 {
                bytes[22] = ttl;
            }
            for (at, v) in &flips {
                if let Some(b) = bytes.get_mut(*at) { *b = *v; }
            }
            p.fill(&bytes);
            batch.push(p).unwrap();
        }
        dp.receive(0, &mut batch, &mut pool, 0);
        for t in 0..6 {
            dp.poll(t * 1_000_000, &mut pool);
        }
        dp.drain(&mut pool);
        prop_assert_eq!(pool.available(), BURST * 4);
    }
}

/// Runs `pkt` through port 0's pipeline and the egress as `receive` would
/// after ingress, so a test can hand stages an L2 header ingress does not
/// parse yet (an 802.1Q tag).
fn through_pipeline(dp: &mut Dataplane, pool: &mut PacketPool, pkt: crate::packet::Packet) {
    let Dataplane { ports, stages, config, egress, events, .. } = dp;
    let mut batch = Batch::new();
    batch.push(pkt).unwrap();
    for &s in &config.pipelines[0] {
        let r = &mut stages[s];
        r.stage.process(
            &mut batch,
            &mut crate::stage::StageContext::new(0, &r.name, pool, ports, &mut r.counters, events),
        );
    }
    for p in batch.drain(..) {
        egress.send(p, ports, pool, 0);
    }
}

#[test]
fn stages_find_the_ip_header_where_ingress_recorded_it() {
    let macs = [MAC, [0x52, 0x54, 0, 0, 0, 2]];
    let mut r = Rig::with_config(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {\n inside 10.0.0.0/24\n outside wan\n}\n",
        &macs,
    );
    let server = Ipv4Addr::new(10, 1, 0, 2);
    r.send(1, &arp_reply([2, 0, 0, 0, 1, 2], server, macs[1], Ipv4Addr::new(10, 1, 0, 1)));
    r.sent(1);
    // Four bytes between the Ethernet header and IPv4, where a VLAN tag goes.
    let plain = udp_frame(MAC, (Ipv4Addr::new(10, 0, 0, 2), 4000), (server, 53), b"tagged");
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&plain[12..]);
    let mut p = r.pool.alloc().unwrap();
    assert!(p.fill(&tagged));
    p.meta.l3 = 18;
    through_pipeline(&mut r.dp, &mut r.pool, p);
    let out = r.sent(1);
    assert_eq!(out.len(), 1, "routed and translated");
    // Out untagged, TTL decremented, source translated, checksums right.
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(eth.ethertype(), smoltcp::wire::EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (Ipv4Addr::new(10, 1, 0, 1), server, 63));
    let u = smoltcp::wire::UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    assert_eq!(u.payload(), b"tagged");
    r.finish();
}

#[test]
fn a_permanent_neighbor_is_used_without_arp_and_a_reload_replaces_it() {
    let mut pool = PacketPool::new(16);
    let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nroute 198.18.0.0/15 via 10.1.0.2\n";
    let cfg = config::parse(&std::format!("{base}neighbor 10.1.0.2 mac 02:00:00:00:00:02\n")).unwrap();
    let wan_mac = [0x52, 0x54, 0, 0, 0, 2];
    let mut dp = Dataplane::new(&cfg, &[MAC, wan_mac], 0, 7);
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(198, 18, 0, 9), 1, b"x"));
    b.push(p).unwrap();
    dp.receive(0, &mut b, &mut pool, 0);
    dp.poll(1, &mut pool);
    let out = dp.ports()[1].tx.front().expect("routed out of wan at once");
    assert_eq!(&out.data()[..6], &[2, 0, 0, 0, 0, 2], "to the permanent MAC");
    assert_eq!(dp.egress.neighbors.counters.requests, 0, "no ARP request");
    let mut text = String::new();
    dp.show("neighbors", &[], 1, &mut text);
    assert!(text.contains("10.1.0.2") && text.contains("permanent"), "{text}");
    // A reload with another MAC replaces it; one without drops it.
    dp.reload("t.conf", &std::format!("{base}neighbor 10.1.0.2 mac 02:00:00:00:00:03\n"), &mut pool).unwrap();
    assert_eq!(
        dp.egress.neighbors.lookup(1, Ipv4Addr::new(10, 1, 0, 2), 2),
        crate::neighbor::Lookup::Known { mac: [2, 0, 0, 0, 0, 3], refresh: false }
    );
    dp.reload("t.conf", base, &mut pool).unwrap();
    assert_eq!(dp.egress.neighbors.lookup(1, Ipv4Addr::new(10, 1, 0, 2), 3), crate::neighbor::Lookup::Unknown);
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 16);
}

#[test]
fn a_capture_records_what_a_port_receives_and_sends_once_each() {
    let mut pool = PacketPool::new(16);
    let cfg = config::parse("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n").unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    // A capture records data-port traffic: refused without a token.
    assert_eq!(dp.handle_request(&request("GET", "/capture?port=lan&count=5", "", None), &mut pool).status, 403);
    dp.set_management_token(Some(TOKEN));
    let request = |m: &str, p: &str, b: &str, _: Option<&str>| request(m, p, b, Some("0123456789abcdef"));
    for (path, status) in [
        ("/capture", 400),
        ("/capture?port=dmz", 400),
        ("/capture?port=lan&count=0", 400),
        ("/capture?port=lan&seconds=61", 400),
        ("/capture?port=lan&filter=host+nonsense", 400),
    ] {
        assert_eq!(dp.handle_request(&request("GET", path, "", None), &mut pool).status, status, "{path}");
    }
    let r = dp.handle_request(&request("GET", "/capture?port=lan&count=5", "", None), &mut pool);
    assert_eq!(r.status, 0, "deferred");
    assert_eq!(dp.handle_request(&request("GET", "/capture?port=lan", "", None), &mut pool).status, 409);
    // A ping to the appliance: recorded coming in; its reply recorded once
    // going out, though the first transmit takes nothing.
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 1), 1, b"x"));
    b.push(p).unwrap();
    dp.receive(0, &mut b, &mut pool, 0);
    dp.poll(1, &mut pool);
    dp.transmit(0, 2, |_| (0, 0));
    let mut sent = alloc::vec::Vec::new();
    dp.transmit(0, 3, |q| {
        let n = q.len();
        while let Some(p) = q.pop_front() {
            sent.push(p);
        }
        (n, 0)
    });
    let c = dp.capture.as_ref().unwrap();
    assert_eq!(c.frames as usize, 1 + sent.len(), "the request and each reply frame, once");
    assert!(!sent.is_empty());
    for p in sent {
        pool.free(p);
    }
    dp.drain(&mut pool);
    assert_eq!(pool.available(), 16);
}

#[test]
fn a_trace_records_each_packet_through_the_stages_and_why_it_went() {
    let mut pool = PacketPool::new(32);
    let text = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nneighbor 10.1.0.2 mac 02:00:00:00:00:02\n\
                nat {\n inside 10.0.0.0/24\n outside wan\n}\n";
    let cfg = config::parse(text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    // A trace records data-port traffic: refused without a token.
    assert_eq!(dp.handle_request(&request("POST", "/trace?count=2", "", None), &mut pool).status, 403);
    dp.set_management_token(Some(TOKEN));
    let request = |m: &str, p: &str, b: &str, _: Option<&str>| request(m, p, b, Some("0123456789abcdef"));
    assert_eq!(dp.handle_request(&request("GET", "/trace", "", None), &mut pool).status, 404);
    assert_eq!(dp.handle_request(&request("POST", "/trace?count=500", "", None), &mut pool).status, 400);
    assert_eq!(dp.handle_request(&request("POST", "/trace?count=2&port=lan", "", None), &mut pool).status, 200);
    let mut b = Batch::new();
    for dst in [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 1, 0, 2)] {
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), dst, 1, b"x"));
        b.push(p).unwrap();
    }
    dp.receive(0, &mut b, &mut pool, 0);
    let r = dp.handle_request(&request("GET", "/trace", "", None), &mut pool);
    let t = String::from_utf8(r.body).unwrap();
    assert!(t.starts_with("trace: 2 of 2 packets"), "{t}");
    // The NAT rewrote the source, the router chose wan, the egress sent it.
    assert!(t.contains("packet 1: in lan: 10.0.0.7 > 10.1.0.2 icmp ttl 64"), "{t}");
    // lan's pipeline: the router first, then the NAT (after routing).
    assert!(t.contains("  router: 10.0.0.7 > 10.1.0.2 icmp ttl 63 len 43 → wan via 10.1.0.2"), "{t}");
    assert!(t.contains("  nat: 10.1.0.1 > 10.1.0.2 icmp ttl 63 len 43 → wan via 10.1.0.2"), "{t}");
    assert!(t.contains("  egress (wan): taken"), "{t}");
    // No route for 192.0.2.1: the router dropped it, and says why.
    assert!(t.contains("packet 2: in lan: 10.0.0.7 > 192.0.2.1"), "{t}");
    assert!(t.contains("  router: dropped: no_route; answers with 10.0.0.1 > 10.0.0.7 icmp"), "{t}");
    assert!(!t.contains("packet 3"), "count=2: {t}");
    dp.drain(&mut pool);
    for p in dp.ports.iter_mut() {
        while let Some(pkt) = p.tx.pop_front() {
            pool.free(pkt);
        }
    }
    assert_eq!(pool.available(), 32);
}

#[test]
fn the_reverse_path_check_refuses_own_addresses_and_listed_prefixes_only() {
    let nets: Vec<Ipv4Net> =
        ["10.1.0.0/24", "10.0.0.1/32", "198.51.100.7/32", "10.0.0.1/32"].iter().map(|n| n.parse().unwrap()).collect();
    let r = ingress::Refused::new(&nets);
    for a in ["10.0.0.1", "198.51.100.7", "10.1.0.0", "10.1.0.255"] {
        assert!(r.refuses(a.parse().unwrap()), "{a}");
    }
    for a in ["10.0.0.2", "198.51.100.6", "10.1.1.0", "0.0.0.0", "255.255.255.255"] {
        assert!(!r.refuses(a.parse().unwrap()), "{a}");
    }
    assert!(!r.is_empty());
    assert!(ingress::Refused::new(&[]).is_empty());
    // A /0 refuses everything (rpf strict beside a default-route port).
    assert!(ingress::Refused::new(&["0.0.0.0/0".parse().unwrap()]).refuses("203.0.113.9".parse().unwrap()));
}

#[test]
fn a_trace_that_never_matches_ends_at_its_deadline() {
    let mut pool = PacketPool::new(16);
    let cfg = config::parse("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n").unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    dp.set_management_token(Some(TOKEN));
    let req = |m: &str, p: &str| request(m, p, "", Some("0123456789abcdef"));
    assert_eq!(dp.handle_request(&req("POST", "/trace?seconds=601"), &mut pool).status, 400);
    let r = dp.handle_request(&req("POST", "/trace?count=5&filter=host+192.0.2.99&seconds=2"), &mut pool);
    assert_eq!(r.status, 200);
    assert!(std::str::from_utf8(&r.body).unwrap().contains("for at most 2 s"));
    let ping = |dp: &mut Dataplane, pool: &mut PacketPool, now| {
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 1), 1, b"x"));
        b.push(p).unwrap();
        dp.receive(0, &mut b, pool, now);
        dp.poll(now, pool);
    };
    ping(&mut dp, &mut pool, 1_000_000);
    assert!(dp.trace.as_ref().unwrap().left > 0, "still waiting before its deadline");
    ping(&mut dp, &mut pool, 2_000_001);
    let t = dp.trace.as_ref().unwrap();
    assert_eq!(t.left, 0, "over at its deadline, with no packet matched");
    let r = dp.handle_request(&req("GET", "/trace"), &mut pool);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.starts_with("trace: 0 of 5 packets\n(the trace's deadline passed"), "{text}");
    dp.drain(&mut pool);
}

#[test]
fn neighbors_are_shown_a_page_at_a_time() {
    let mut pool = PacketPool::new(16);
    let mut text = String::from("port lan address 10.0.0.1/16\nport wan address 10.1.0.1/24\narp entries 4096\n");
    for i in 0..1024u32 {
        text += &std::format!(
            "neighbor 10.0.{}.{} mac 02:00:00:00:{:02x}:{:02x}\n",
            1 + i / 250,
            1 + i % 250,
            i >> 8,
            i & 255
        );
    }
    let cfg = config::parse(&text).unwrap();
    let dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0;
    let mut pages = 0;
    loop {
        let mut out = String::new();
        let q = std::format!("offset={offset}&limit=100000");
        assert!(dp.show("neighbors", &crate::dataplane::query_pairs(&q), 0, &mut out));
        let rows: std::vec::Vec<&str> = out.lines().skip(1).filter(|l| !l.starts_with("more:")).collect();
        assert!(rows.len() <= crate::dataplane::show::NEIGHBOR_PAGE, "a page is bounded: {}", rows.len());
        for r in rows {
            assert!(seen.insert(String::from(r.split_whitespace().next().unwrap())), "{r} twice");
        }
        pages += 1;
        match out.lines().find_map(|l| l.strip_prefix("more: offset=")) {
            Some(n) => offset = n.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (1024, 2));
    let mut out = String::new();
    dp.show("neighbors", &[], 0, &mut out);
    assert_eq!(out.lines().count(), 1 + 100 + 1, "100 rows by default, and where the next page starts");
    let _ = &mut pool;
}

#[test]
fn a_capture_is_bounded_up_front_by_the_management_budget() {
    let mut pool = PacketPool::new(16);
    let text =
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nport mgmt address 10.9.0.1/24\nmanagement mgmt\n";
    let cfg = config::parse(text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]], 0, 7);
    dp.set_management_token(Some(TOKEN));
    dp.set_management_budget(100 * 1024);
    let req = |p: &str| request("GET", p, "", Some("0123456789abcdef"));
    // 1000 frames need 272 KiB: more than the budget holds.
    let r = dp.handle_request(&req("/capture?port=lan&count=1000"), &mut pool);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("needs 266 KiB"), "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(dp.management_budget().0, 0);
    // 100 frames fit: the whole buffer is charged when the capture starts.
    assert_eq!(dp.handle_request(&req("/capture?port=lan&count=100"), &mut pool).status, 0);
    let need = crate::capture::Capture::bytes_for(100);
    assert_eq!(dp.management_budget().0, need);
    let m = String::from_utf8(dp.handle_request(&req("/metrics"), &mut pool).body).unwrap();
    let line = m.lines().find(|l| l.starts_with("sluice_mgmt_budget_used_bytes")).unwrap_or("");
    assert!(line.ends_with(&std::format!(" {need}")), "{line}");
    assert!(dp.capture.as_ref().unwrap().file.capacity() >= need);
    // It ends (no connection waits for it): the charge is given back.
    dp.poll(11_000_000, &mut pool);
    assert!(dp.capture.is_none());
    assert_eq!(dp.management_budget().0, 0);
    dp.drain(&mut pool);
}
