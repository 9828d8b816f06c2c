//! Load balancer behaviour on real frames.

use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;
use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::{flow_hash, Lb};
use crate::config;
use crate::flow::Endpoint;
use crate::packet::PacketPool;
use crate::testutil::*;

const C_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const S_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const LB_SIDE: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const BACKENDS: [Ipv4Addr; 3] = [Ipv4Addr::new(10, 2, 0, 11), Ipv4Addr::new(10, 2, 0, 12), Ipv4Addr::new(10, 2, 0, 13)];

fn cfg(mode: &str, backends: usize) -> config::Config {
    let mut text = std::format!(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\nservice web {{\n vip 10.1.0.1:80\n mode {mode}\n check none\n"
    );
    for b in &BACKENDS[..backends] {
        text += &std::format!(" backend {b}:8000\n");
    }
    text += "}\nservice dns {\n vip 10.1.0.1:53 udp\n check none\n backend 10.2.0.11:5353\n}\nlb table-size 251\n";
    crate::registry::parse(&text).unwrap()
}

impl Rig {
    fn lb(mode: &str) -> Rig {
        Rig::lb_with(cfg(mode, 3))
    }

    /// A client port and a servers port, every backend's MAC known.
    fn lb_with(cfg: config::Config) -> Rig {
        let mut r = Rig::with(&cfg, &[C_MAC, S_MAC]);
        r.send(0, &arp_request(PEER_MAC, CLIENT, VIP));
        for b in BACKENDS {
            r.send(1, &arp_reply(PEER_MAC, b, S_MAC, LB_SIDE));
        }
        r.sent(0);
        r.sent(1);
        r
    }
}

fn tcp4(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16, u8) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum());
    let t = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()), "TCP checksum");
    (ip.src_addr(), t.src_port(), ip.dst_addr(), t.dst_port(), ip.payload()[13])
}

#[test]
fn full_nat_both_ways() {
    let mut r = Rig::lb("full-nat");
    let out = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30000), (VIP, 80), true, false), 1);
    let (src, sport, dst, dport, _) = tcp4(&out);
    assert_eq!((src, sport, dport), (LB_SIDE, 30000, 8000), "source is the appliance, port kept");
    assert!(BACKENDS.contains(&dst));
    let back = r.through(1, &tcp_frame(S_MAC, (dst, 8000), (LB_SIDE, 30000), true, true), 0);
    let (a, b, c, d, _) = tcp4(&back);
    assert_eq!((a, b, c, d), (VIP, 80, CLIENT, 30000));
    // A client port outside the source-port range gets one from the range.
    let high = r.through(0, &tcp_frame(C_MAC, (CLIENT, 40000), (VIP, 80), true, false), 1);
    assert!((1024..=32767).contains(&tcp4(&high).1));
    // The same client goes on to the same backend.
    let again = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30000), (VIP, 80), false, true), 1);
    assert_eq!(tcp4(&again).2, dst);
    r.finish();
}

#[test]
fn dnat_keeps_the_client_address() {
    let mut r = Rig::lb("dnat");
    let out = r.through(0, &tcp_frame(C_MAC, (CLIENT, 40001), (VIP, 80), true, false), 1);
    let (src, sport, dst, _, _) = tcp4(&out);
    assert_eq!((src, sport), (CLIENT, 40001));
    let back = r.through(1, &tcp_frame(S_MAC, (dst, 8000), (CLIENT, 40001), true, true), 0);
    let (a, b, c, d, _) = tcp4(&back);
    assert_eq!((a, b, c, d), (VIP, 80, CLIENT, 40001));
    r.finish();
}

#[test]
fn udp_service() {
    let mut r = Rig::lb("full-nat");
    let out = r.through(0, &udp_frame(C_MAC, (CLIENT, 5555), (VIP, 53), b"q"), 1);
    let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    assert_eq!((ip.dst_addr(), u.dst_port()), (BACKENDS[0], 5353));
    r.finish();
}

#[test]
fn spread_follows_the_maglev_table() {
    let mut r = Rig::lb("full-nat");
    let mut seen: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for port in 20000..20600u16 {
        let out = r.through(0, &tcp_frame(C_MAC, (CLIENT, port), (VIP, 80), true, false), 1);
        *seen.entry(tcp4(&out).2).or_default() += 1;
    }
    assert_eq!(seen.len(), 3);
    for (b, n) in &seen {
        assert!((150..=250).contains(n), "{b}: {n} of 600");
    }
    r.finish();
}

fn lb_of(c: &crate::config::Config) -> &crate::lb::LbConfig {
    c.first::<crate::lb::LbConfig>().unwrap()
}

fn lb_and_pool(backends: usize) -> (Lb, PacketPool) {
    (Lb::from_config(lb_of(&cfg("full-nat", backends)), 1), PacketPool::new(4))
}

/// The backend `lb` sends a SYN from `client_port` to.
fn pick(lb: &mut Lb, pool: &mut PacketPool, client_port: u16) -> Ipv4Addr {
    let mut p = pool.alloc().unwrap();
    p.fill(&tcp_frame(C_MAC, (CLIENT, client_port), (VIP, 80), client_port.is_multiple_of(2), true));
    let k = lb.key_of(&p, 0).unwrap();
    lb.forward_to_backend(&mut p, 0, None, &k, 0).unwrap();
    let dst = Ipv4Packet::new_unchecked(&p.data()[14..]).dst_addr();
    pool.free(p);
    dst
}

#[test]
fn removing_a_backend_moves_only_its_flows_and_adding_one_moves_none() {
    let (mut lb, mut pool) = lb_and_pool(3);
    let before: Vec<Ipv4Addr> = (1000..4000).map(|p| pick(&mut lb, &mut pool, p)).collect();
    // Backend 2 goes down.
    lb.services[0].backends[2].healthy = false;
    lb.services[0].rebuild(251);
    let mut moved_others = 0;
    for (i, p) in (1000..4000).enumerate() {
        let now = pick(&mut lb, &mut pool, p);
        if before[i] == BACKENDS[2] {
            assert_ne!(now, BACKENDS[2]);
        } else if now != before[i] {
            moved_others += 1;
        }
    }
    assert_eq!(moved_others, 0, "established flows on healthy backends stay");
    // It comes back: existing flows stay where they are now.
    let settled: Vec<Ipv4Addr> = (1000..4000).map(|p| pick(&mut lb, &mut pool, p)).collect();
    lb.services[0].backends[2].healthy = true;
    lb.services[0].rebuild(251);
    for (i, p) in (1000..4000).enumerate() {
        assert_eq!(pick(&mut lb, &mut pool, p), settled[i], "no established flow moves when a backend joins");
    }
    // New flows do use it again.
    assert!((5000..5300).any(|p| pick(&mut lb, &mut pool, p) == BACKENDS[2]));
}

#[test]
fn two_instances_pick_the_same_backend() {
    let (a, _) = lb_and_pool(3);
    let (b, _) = lb_and_pool(3);
    for port in 0..2000u16 {
        let h = flow_hash(6, Endpoint::new(CLIENT, port), Endpoint::new(VIP, 80));
        assert_eq!(a.services[0].table.lookup(h), b.services[0].table.lookup(h));
    }
}

#[test]
fn no_backend_up_gets_reset_or_port_unreachable() {
    // Health-checked backends start down: nothing answers yet.
    let text = "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
                service web {\n vip 10.1.0.1:80\n backend 10.2.0.11:8000\n check tcp\n}\n\
                service dns {\n vip 10.1.0.1:53 udp\n backend 10.2.0.11:5353\n check tcp\n}\n";
    let mut r = Rig::lb_with(crate::registry::parse(text).unwrap());
    let rst = r.through(0, &tcp_frame(C_MAC, (CLIENT, 40000), (VIP, 80), true, false), 0);
    let (src, sport, dst, dport, flags) = tcp4(&rst);
    assert_eq!((src, sport, dst, dport), (VIP, 80, CLIENT, 40000));
    assert_eq!(flags & 0x14, 0x14, "RST+ACK");
    let t = TcpPacket::new_checked(&rst[34..]).unwrap();
    assert_eq!(t.ack_number().0, 1001, "acknowledges the SYN");
    let unreach = r.through(0, &udp_frame(C_MAC, (CLIENT, 5555), (VIP, 53), b"q"), 0);
    let ip = Ipv4Packet::new_checked(&unreach[14..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(&ip.payload()[..2], &[3, 3], "port unreachable");
    assert_eq!(r.dp.ports()[0].counters.dropped(crate::counters::DropReason::LbNoBackend), 2);
    r.finish();
}

#[test]
fn refusals_are_rate_limited_per_client() {
    let text = "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
                service web {\n vip 10.1.0.1:80\n backend 10.2.0.11:8000\n check tcp\n}\n\
                lb table-size 251 refusal-rate 1 refusal-burst 3\n";
    let mut r = Rig::lb_with(crate::registry::parse(text).unwrap());
    for p in 0..10 {
        r.send(0, &tcp_frame(C_MAC, (CLIENT, 41000 + p), (VIP, 80), true, false));
    }
    assert_eq!(r.sent(0).len(), 3, "a SYN flood gets the burst of resets, no more");
    // Another client still gets its reset.
    let other = Ipv4Addr::new(10, 1, 0, 3);
    r.send(0, &arp_request(PEER_MAC, other, VIP));
    r.sent(0);
    let rst = r.through(0, &tcp_frame(C_MAC, (other, 42000), (VIP, 80), true, false), 0);
    assert_eq!(tcp4(&rst).2, other);
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    assert!(s.contains(" refusals_rate_limited=7"), "{s}");
    r.finish();
}

proptest! {
    #[test]
    fn random_frames_through_the_lb_never_panic_or_leak(
        frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..80), any::<bool>(), 0usize..60, any::<u8>(), any::<u16>()), 1..24),
    ) {
        let mut r = Rig::lb("full-nat");
        for (body, from_backend, at, v, port) in frames {
            let mut f = if from_backend {
                l4_frame(S_MAC, BACKENDS[port as usize % 3], LB_SIDE, [IpProtocol::Udp, IpProtocol::Tcp][at % 2], &body)
            } else {
                let mut b = body.clone();
                if b.len() >= 4 { b[2..4].copy_from_slice(&[0, if port.is_multiple_of(2) { 80 } else { 53 }]); }
                l4_frame(C_MAC, CLIENT, VIP, [IpProtocol::Udp, IpProtocol::Tcp][at % 2], &b)
            };
            if let Some(b) = f.get_mut(14 + 20 + at) { *b = v; }
            r.send(if from_backend { 1 } else { 0 }, &f);
            r.sent(0);
            r.sent(1);
        }
        r.finish();
    }
}

/// The config of `cfg("full-nat", 3)` with the backend lines replaced.
fn cfg_backends(lines: &str) -> config::Config {
    let text = std::format!(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\nservice web {{\n vip 10.1.0.1:80\n mode full-nat\n check none\n{lines}}}\nservice dns {{\n vip 10.1.0.1:53 udp\n check none\n backend 10.2.0.11:5353\n}}\nlb table-size 251\n"
    );
    crate::registry::parse(&text).unwrap()
}

#[test]
fn a_reload_keeps_flows_on_their_backends_and_rebuilds_only_changed_services() {
    let (mut lb, mut pool) = lb_and_pool(3);
    // 300 flows spread over the three backends.
    let before: Vec<Ipv4Addr> = (20000..20300).map(|p| pick(&mut lb, &mut pool, p)).collect();
    let on_13 = before.iter().filter(|b| **b == BACKENDS[2]).count();
    assert!(on_13 > 0);
    // Add a backend, reweight one, drain one (weight 0), remove .13.
    let new =
        cfg_backends(" backend 10.2.0.11:8000 weight 3\n backend 10.2.0.12:8000 weight 0\n backend 10.2.0.14:8000\n");
    assert!(lb.reconfigure(lb_of(&new)));
    assert_eq!(lb.counters.flows_backend_removed as usize, on_13, "the removed backend's flows end");
    assert_eq!(lb.counters.maglev_rebuilds, 1, "only `web` changed; `dns` keeps its table");
    // Every other flow stays where it was, the drained backend's included.
    for (p, b) in (20000..20300).zip(&before) {
        let now = pick(&mut lb, &mut pool, p);
        if *b != BACKENDS[2] {
            assert_eq!(now, *b, "flow from port {p} moved");
        } else {
            assert_ne!(now, BACKENDS[2]);
        }
    }
    // New flows never go to the drained backend.
    for p in 30000..30300 {
        assert_ne!(pick(&mut lb, &mut pool, p), BACKENDS[1], "a new flow on the drained backend");
    }
    // A different flow-table size cannot be taken in place.
    let mut bigger = lb_of(&new).clone();
    bigger.flows *= 2;
    assert!(!lb.reconfigure(&bigger));
}

#[test]
fn a_full_flow_table_evicts_half_open_flows_never_established_ones() {
    let text = "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
                service web {\n vip 10.1.0.1:80\n check none\n backend 10.2.0.11:8000\n}\nlb table-size 251 flows 16 client-flows 1000\n";
    // One client floods here: its quota is out of the way (another test has it).
    let mut lb = Lb::from_config(lb_of(&crate::registry::parse(text).unwrap()), 1);
    let mut pool = PacketPool::new(4);
    let mut send = |lb: &mut Lb, port: u16, syn: bool, ack: bool| {
        let mut p = pool.alloc().unwrap();
        p.fill(&tcp_frame(C_MAC, (CLIENT, port), (VIP, 80), syn, ack));
        let k = lb.key_of(&p, 0).unwrap();
        let r = lb.forward_to_backend(&mut p, 0, None, &k, 0);
        pool.free(p);
        r
    };
    // Four established flows (SYN, then the backend's SYN-ACK, then ACK).
    for port in 1000..1004 {
        send(&mut lb, port, true, false).unwrap();
        let i = (0..lb.flows.len())
            .find(|i| lb.flows[*i].client.port == port && lb.flows[*i].service != super::NONE)
            .unwrap();
        let mut st = lb.flows[i].tcp;
        crate::flow::idle_timeout(&lb.timeouts, &mut st, 6, 0x12, false);
        lb.flows[i].tcp = st;
        send(&mut lb, port, false, true).unwrap();
    }
    // A SYN flood fills the rest and keeps coming.
    for port in 2000..2200 {
        send(&mut lb, port, true, false).unwrap();
    }
    assert!(lb.counters.flows_evicted >= 188, "{}", lb.counters.flows_evicted);
    for port in 1000..1004 {
        let i = (0..lb.flows.len()).find(|i| lb.flows[*i].client.port == port && lb.flows[*i].service != super::NONE);
        assert!(i.is_some_and(|i| crate::flow::is_established(lb.flows[i].tcp)), "flow {port} survived");
    }
}

#[test]
fn show_flows_lists_live_flows_filtered_and_paged() {
    use crate::stage::Stage;
    let (mut lb, mut pool) = lb_and_pool(3);
    for port in 40000..40005u16 {
        pick(&mut lb, &mut pool, port);
    }
    let mut out = std::string::String::new();
    assert!(lb.show("flows", &[], 1, &mut out));
    let rows: std::vec::Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{out}");
    assert!(rows.iter().all(|r| r.starts_with("tcp ") && r.contains(&std::format!("{CLIENT}:4000"))), "{out}");
    let mut out = std::string::String::new();
    lb.show("flows", &[("limit", "2")], 1, &mut out);
    assert_eq!(out.lines().count(), 1 + 2 + 1, "two rows and where to go on: {out}");
    assert!(out.lines().last().unwrap().starts_with("… more: offset="), "{out}");
    let mut out = std::string::String::new();
    lb.show("flows", &[("addr", "192.0.2.99")], 1, &mut out);
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// A TCP segment with any flags (`FIN` 0x01, `SYN` 0x02, `RST` 0x04, `ACK`
/// 0x10), built as [`tcp_frame`] builds a plain one.
fn tcp_flags_frame(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let mut f = tcp_frame(dst_mac, src, dst, flags & 0x02 != 0, flags & 0x10 != 0);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    let mut t = TcpPacket::new_unchecked(ip.payload_mut());
    t.set_fin(flags & 0x01 != 0);
    t.set_rst(flags & 0x04 != 0);
    t.fill_checksum(&s.into(), &d.into());
    f
}

/// `web` (TCP) in `mode` with the three backends at `weights`.
fn web_conf(mode: &str, weights: [u32; 3]) -> std::string::String {
    let mut text = std::format!(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\nservice web {{\n vip 10.1.0.1:80\n mode {mode}\n check none\n"
    );
    for (b, w) in BACKENDS.iter().zip(weights) {
        text += &std::format!(" backend {b}:8000 weight {w}\n");
    }
    text + "}\nlb table-size 251\n"
}

/// A full handshake from `CLIENT:port` through the rig, then the client's
/// `close` (RST, or FIN each way with their ACKs); returns where the
/// SYN went (backend, source the backend saw).
fn connect_and_close(r: &mut Rig, port: u16, rst: bool) -> (Ipv4Addr, (Ipv4Addr, u16)) {
    let syn = r.through(0, &tcp_frame(C_MAC, (CLIENT, port), (VIP, 80), true, false), 1);
    let (src, sport, be, _, _) = tcp4(&syn);
    r.through(1, &tcp_flags_frame(S_MAC, (be, 8000), (src, sport), 0x12), 0);
    r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, port), (VIP, 80), 0x10), 1);
    if rst {
        r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, port), (VIP, 80), 0x14), 1);
    } else {
        r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, port), (VIP, 80), 0x11), 1);
        r.through(1, &tcp_flags_frame(S_MAC, (be, 8000), (src, sport), 0x11), 0);
        r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, port), (VIP, 80), 0x10), 1);
    }
    (be, (src, sport))
}

fn stats(r: &Rig) -> std::string::String {
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    s
}

#[test]
fn a_syn_on_a_reset_flow_starts_a_new_flow_under_the_reloaded_mode() {
    let mut r = Rig::lb_with(crate::registry::parse(&web_conf("full-nat", [1, 1, 1])).unwrap());
    let (_, seen) = connect_and_close(&mut r, 30000, true);
    assert_eq!(seen, (LB_SIDE, 30000), "full-NAT: the backend sees the appliance");
    r.dp.reload("t", &web_conf("dnat", [1, 1, 1]), &mut r.pool).unwrap();
    // The client reuses its port: a new connection, as the new mode says.
    let syn = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30000), (VIP, 80), true, false), 1);
    let (src, sport, _, _, _) = tcp4(&syn);
    assert_eq!((src, sport), (CLIENT, 30000), "DNAT keeps the client's address");
    assert!(stats(&r).contains(" flows_restarted=1"), "{}", stats(&r));
    r.finish();
}

#[test]
fn a_syn_on_a_closed_flow_is_scheduled_afresh_under_the_new_weights() {
    for rst in [true, false] {
        let mut r = Rig::lb_with(crate::registry::parse(&web_conf("full-nat", [1, 1, 1])).unwrap());
        let (be, _) = connect_and_close(&mut r, 30001, rst);
        let i = BACKENDS.iter().position(|b| *b == be).unwrap();
        let mut w = [1; 3];
        w[i] = 0;
        r.dp.reload("t", &web_conf("full-nat", w), &mut r.pool).unwrap();
        let syn = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30001), (VIP, 80), true, false), 1);
        assert_ne!(tcp4(&syn).2, be, "a new connection went to the drained backend (closed by RST: {rst})");
        assert!(stats(&r).contains(" flows_restarted=1"), "{}", stats(&r));
        r.finish();
    }
}

#[test]
fn a_syn_on_an_open_flow_keeps_its_backend() {
    // Only one FIN: the connection may still carry data the other way.
    let mut r = Rig::lb_with(crate::registry::parse(&web_conf("full-nat", [1, 1, 1])).unwrap());
    let syn = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30002), (VIP, 80), true, false), 1);
    let (src, sport, be, _, _) = tcp4(&syn);
    r.through(1, &tcp_flags_frame(S_MAC, (be, 8000), (src, sport), 0x12), 0);
    r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, 30002), (VIP, 80), 0x11), 1);
    let i = BACKENDS.iter().position(|b| *b == be).unwrap();
    let mut w = [1; 3];
    w[i] = 0;
    r.dp.reload("t", &web_conf("dnat", w), &mut r.pool).unwrap();
    let again = r.through(0, &tcp_frame(C_MAC, (CLIENT, 30002), (VIP, 80), true, false), 1);
    let (s2, p2, b2, _, _) = tcp4(&again);
    assert_eq!((s2, p2, b2), (src, sport, be), "a half-closed flow stays where it is");
    assert!(stats(&r).contains(" flows_restarted=0"), "{}", stats(&r));
    r.finish();
}

/// `dns` (UDP) and `web` (TCP) with a 16-flow table and `lb` settings `extra`.
fn small_table(extra: &str) -> config::Config {
    let text = std::format!(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
         service web {{\n vip 10.1.0.1:80\n check none\n backend 10.2.0.11:8000\n}}\n\
         service dns {{\n vip 10.1.0.1:53 udp\n check none\n backend 10.2.0.11:5353\n}}\n\
         lb table-size 251 flows 16{extra}\n"
    );
    crate::registry::parse(&text).unwrap()
}

#[test]
fn one_clients_udp_flows_cannot_lock_others_out_of_a_full_table() {
    let mut r = Rig::lb_with(small_table(""));
    // Another client's established TCP connection.
    let other = Ipv4Addr::new(10, 1, 0, 3);
    let syn = r.through(0, &tcp_frame(C_MAC, (other, 40000), (VIP, 80), true, false), 1);
    let (src, sport, be, _, _) = tcp4(&syn);
    r.through(1, &tcp_flags_frame(S_MAC, (be, 8000), (src, sport), 0x12), 0);
    r.through(0, &tcp_flags_frame(C_MAC, (other, 40000), (VIP, 80), 0x10), 1);
    // One client's queries, each from a new port, fill the table.
    for p in 0..15u16 {
        r.now += 1_000_000;
        r.through(0, &udp_frame(C_MAC, (CLIENT, 5000 + p), (VIP, 53), b"q"), 1);
    }
    // A third client still gets through: the longest-idle UDP flow makes room.
    r.now += 1_000_000;
    let third = Ipv4Addr::new(10, 1, 0, 4);
    r.through(0, &udp_frame(C_MAC, (third, 6000), (VIP, 53), b"q"), 1);
    assert_eq!(r.drops(0, crate::counters::DropReason::LbFlowTableFull), 0);
    assert!(stats(&r).contains(" flows_evicted=1"), "{}", stats(&r));
    // The evicted flow was the oldest query's; the established one stays.
    let s = {
        let mut s = std::string::String::new();
        r.dp.show("flows", &[("limit", "100")], r.now, &mut s);
        s
    };
    assert!(!s.contains(&std::format!("{CLIENT}:5000 ")), "{s}");
    assert!(s.contains(&std::format!("{CLIENT}:5001 ")), "{s}");
    assert!(s.contains(&std::format!("{other}:40000 ")), "{s}");
    r.finish();
}

/// An established connection of `client` from `port` to the web service
/// (DNAT: the backend answers the client).
fn establish(r: &mut Rig, client: Ipv4Addr, port: u16) {
    let syn = r.through(0, &tcp_frame(C_MAC, (client, port), (VIP, 80), true, false), 1);
    let (src, sport, be, _, _) = tcp4(&syn);
    r.through(1, &tcp_flags_frame(S_MAC, (be, 8000), (src, sport), 0x12), 0);
    r.through(0, &tcp_flags_frame(C_MAC, (client, port), (VIP, 80), 0x10), 1);
}

#[test]
fn a_client_over_its_flow_quota_is_refused_and_counted() {
    let mut r = Rig::lb_with(small_table(" client-flows 4"));
    // Established connections are never evicted for the client's new ones.
    for p in 0..4u16 {
        establish(&mut r, CLIENT, 5000 + p);
    }
    r.send(0, &tcp_frame(C_MAC, (CLIENT, 5004), (VIP, 80), true, false));
    assert!(r.sent(1).is_empty(), "a fifth flow of one client");
    r.send(0, &udp_frame(C_MAC, (CLIENT, 5004), (VIP, 53), b"q"));
    assert!(r.sent(1).is_empty(), "nor a UDP one");
    assert_eq!(r.drops(0, crate::counters::DropReason::LbClientQuota), 2);
    // Its flows go on, and another client is not limited by it.
    r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, 5003), (VIP, 80), 0x10), 1);
    r.through(0, &udp_frame(C_MAC, (Ipv4Addr::new(10, 1, 0, 3), 5004), (VIP, 53), b"q"), 1);
    assert!(stats(&r).contains(" refused_client_quota=2"), "{}", stats(&r));
    assert!(stats(&r).contains(" flows_evicted=0"), "{}", stats(&r));
    r.finish();
}

#[test]
fn spoofed_syns_at_a_clients_quota_give_way_to_its_new_connection() {
    let mut r = Rig::lb_with(small_table(" client-flows 4"));
    establish(&mut r, CLIENT, 4000);
    // Spoofed SYNs in the client's name, never answered, fill its quota.
    for p in 0..3u16 {
        r.through(0, &tcp_frame(C_MAC, (CLIENT, 5000 + p), (VIP, 80), true, false), 1);
    }
    // Its real connection replaces the oldest half-open flow, however
    // long the transitory timeout; then the next, and so on.
    for p in 0..3u16 {
        r.through(0, &tcp_frame(C_MAC, (CLIENT, 6000 + p), (VIP, 80), true, false), 1);
    }
    // A UDP query likewise replaces one of them.
    r.through(0, &udp_frame(C_MAC, (CLIENT, 7000), (VIP, 53), b"q"), 1);
    assert_eq!(r.drops(0, crate::counters::DropReason::LbClientQuota), 0);
    assert!(stats(&r).contains(" flows_evicted=4"), "{}", stats(&r));
    let s = {
        let mut s = std::string::String::new();
        r.dp.show("flows", &[("limit", "100")], r.now, &mut s);
        s
    };
    for gone in [5000, 5001, 5002, 6000] {
        assert!(!s.contains(&std::format!("{CLIENT}:{gone} ")), "{gone} evicted, oldest first: {s}");
    }
    for kept in [4000, 6001, 6002, 7000] {
        assert!(s.contains(&std::format!("{CLIENT}:{kept} ")), "{kept} kept: {s}");
    }
    // The established connection still goes through.
    r.through(0, &tcp_flags_frame(C_MAC, (CLIENT, 4000), (VIP, 80), 0x10), 1);
    r.finish();
}

#[test]
fn client_flows_is_parsed_with_a_default_and_refused_when_bad() {
    let lb = lb_of(&small_table("")).clone();
    assert_eq!(lb.client_quota(), 64, "an eighth of the table, at least 64");
    assert_eq!(lb_of(&small_table(" client-flows 3")).client_quota(), 3);
    let mut big = lb.clone();
    big.flows = 65536;
    assert_eq!(big.client_quota(), 8192);
    for bad in [" client-flows 0", " client-flows x", " client-flows"] {
        let text = std::format!(
            "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
             service dns {{\n vip 10.1.0.1:53 udp\n check none\n backend 10.2.0.11:5353\n}}\nlb flows 16{bad}\n"
        );
        let e = crate::registry::parse(&text).unwrap_err();
        assert_eq!(e[0].line, 8, "{bad}: {e:?}");
        assert!(e[0].column >= 13, "the value's or the setting's column: {e:?}");
        assert!(e[0].message.contains("client-flows"), "{bad}: {e:?}");
    }
}

/// A UDP DNS service on :53 whose backends answer on :5353, checked with
/// `check`.
fn dns_checked(check: &str) -> std::string::String {
    std::format!(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
         service dns {{\n vip 10.1.0.1:53 udp\n backend 10.2.0.11:5353\n {check}\n interval 1\n rise 1\n}}\n\
         lb table-size 251\n"
    )
}

#[test]
fn check_port_is_parsed_and_trailing_words_are_refused_with_their_column() {
    let svc = |check: &str| lb_of(&crate::registry::parse(&dns_checked(check)).unwrap()).services[0].clone();
    let s = svc("check tcp port 8053");
    assert_eq!((s.check.clone(), s.check_port), (super::CheckKind::Tcp, Some(8053)));
    let s = svc("check http /healthz port 8080");
    assert_eq!((s.check.clone(), s.check_port), (super::CheckKind::Http("/healthz".into()), Some(8080)));
    assert_eq!(svc("check tcp").check_port, None, "default: the backend's own port");
    // (check, column of the first word not understood, what the error says)
    for (check, column, says) in [
        ("check tcp foo", 12, "unexpected `foo`"),
        ("check http /health port", 21, "`port` needs a port number"),
        ("check http /health port 0", 26, "bad check port `0`"),
        ("check http /health port 70000", 26, "bad check port `70000`"),
        ("check http /health port 8080 now", 31, "unexpected `now`"),
        ("check tcp port 8053 port 8054", 22, "unexpected `port`"),
        ("check http /health 8080", 21, "unexpected `8080`"),
        ("check none port 53", 13, "unexpected `port`"),
        ("check http", 2, "`check http` needs a path"),
        ("check udp", 8, "unknown check `udp`"),
    ] {
        let e = crate::registry::parse(&dns_checked(check)).unwrap_err();
        assert_eq!((e.len(), e[0].line, e[0].column), (1, 6, column), "{check}: {e:?}");
        assert!(e[0].message.contains(says), "{check}: {e:?}");
    }
}

#[test]
fn a_udp_service_is_checked_on_another_tcp_port_of_its_backend() {
    let cfg = crate::registry::parse(&dns_checked("check tcp port 8053")).unwrap();
    let mut r = Rig::with(&cfg, &[C_MAC, S_MAC]);
    r.send(0, &arp_request(PEER_MAC, CLIENT, VIP));
    r.sent(0);
    // The checks begin; the host stack asks for the backend's address first.
    let mut syn = None;
    for _ in 0..20 {
        r.now += 100_000;
        r.dp.poll(r.now, &mut r.pool);
        for f in r.sent(1) {
            if f[12..14] == [0x08, 0x06] {
                r.send(1, &arp_reply(PEER_MAC, BACKENDS[0], S_MAC, LB_SIDE));
            } else if syn.is_none() {
                syn = Some(f);
            }
        }
        if syn.is_some() {
            break;
        }
    }
    let syn = syn.expect("a health check SYN");
    let (src, sport, dst, dport, flags) = tcp4(&syn);
    assert_eq!((src, dst, dport, flags & 0x12), (LB_SIDE, BACKENDS[0], 8053, 0x02), "the check's target");
    // The backend accepts on its check port: it comes up (rise 1), and
    // the service's queries go to the backend's DNS port.
    let seq = TcpPacket::new_checked(&syn[34..]).unwrap().seq_number();
    let mut synack = tcp_flags_frame(S_MAC, (dst, dport), (src, sport), 0x12);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut synack[14..]);
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        let mut t = TcpPacket::new_unchecked(ip.payload_mut());
        t.set_ack_number(seq + 1);
        t.fill_checksum(&s.into(), &d.into());
    }
    r.send(1, &synack);
    r.now += 1000;
    r.dp.poll(r.now, &mut r.pool);
    r.sent(1);
    assert!(stats(&r).contains("healthy=1"), "{}", stats(&r));
    let q = r.through(0, &udp_frame(C_MAC, (CLIENT, 5555), (VIP, 53), b"q"), 1);
    let ip = Ipv4Packet::new_checked(&q[14..]).unwrap();
    assert_eq!(UdpPacket::new_checked(ip.payload()).unwrap().dst_port(), 5353);
    let mut show = std::string::String::new();
    r.dp.show("backends", &[], r.now, &mut show);
    assert!(show.contains("tcp:8053"), "{show}");
    r.finish();
}

/// Each client's list of evictable flows holds exactly its live evictable
/// flows, linked both ways, and its count its live flows.
fn check_client_lists(lb: &Lb) {
    let free: std::collections::BTreeSet<u32> = lb.free_clients.iter().copied().collect();
    let mut listed = 0;
    for (c, cl) in lb.client_flows.iter().enumerate() {
        if free.contains(&(c as u32)) {
            continue;
        }
        let live = |f: &super::Flow| f.service != super::NONE && f.client.addr == cl.addr;
        assert_eq!(lb.flows.iter().filter(|f| live(f)).count() as u32, cl.flows, "count of {}", cl.addr);
        let mut j = cl.evictable;
        for _ in 0..=cl.flows {
            if j == super::NIL {
                break;
            }
            let f = &lb.flows[j as usize];
            assert!(live(f) && super::evictable(f), "flow {j} on {}'s list", cl.addr);
            assert_eq!(lb.flows[f.links.0 as usize].links.1, j, "linked both ways");
            listed += 1;
            j = f.links.0;
            if j == cl.evictable {
                break;
            }
        }
    }
    let evictable = lb.flows.iter().filter(|f| f.service != super::NONE && super::evictable(f)).count();
    assert_eq!(listed, evictable, "every evictable flow listed once");
}

proptest! {
    #[test]
    fn client_lists_follow_flows_through_any_traffic(
        ops in proptest::collection::vec((0u8..2, 0u16..4, 0u8..8, 0u64..3), 1..200),
    ) {
        let text = "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
                    service web {\n vip 10.1.0.1:80\n mode dnat\n check none\n backend 10.2.0.11:8000\n}\n\
                    service dns {\n vip 10.1.0.1:53 udp\n mode dnat\n check none\n backend 10.2.0.11:5353\n}\n\
                    lb table-size 251 flows 16 client-flows 3 tcp-transitory-timeout 60 udp-timeout 60\n";
        let mut lb = Lb::from_config(lb_of(&crate::registry::parse(text).unwrap()), 1);
        let mut pool = PacketPool::new(4);
        let mut now = 0;
        for (c, port, kind, dt) in ops {
            now += dt * 20_000_000;
            let client = Ipv4Addr::new(10, 1, 0, 2 + c);
            let frame = match kind {
                0 => tcp_frame(C_MAC, (client, port), (VIP, 80), true, false),
                1 => tcp_flags_frame(C_MAC, (client, port), (VIP, 80), 0x10),
                2 => tcp_flags_frame(C_MAC, (client, port), (VIP, 80), 0x11),
                3 => tcp_flags_frame(C_MAC, (client, port), (VIP, 80), 0x04),
                4 => tcp_flags_frame(S_MAC, (BACKENDS[0], 8000), (client, port), 0x12),
                6 => tcp_flags_frame(S_MAC, (BACKENDS[0], 8000), (client, port), 0x11),
                7 => tcp_flags_frame(S_MAC, (BACKENDS[0], 8000), (client, port), 0x04),
                _ => udp_frame(C_MAC, (client, port), (VIP, 53), b"q"),
            };
            let mut p = pool.alloc().unwrap();
            p.fill(&frame);
            let k = lb.key_of(&p, now).unwrap();
            if kind == 4 || kind >= 6 {
                lb.reply_from_backend(&mut p, None, &k, now);
            } else {
                let _ = lb.forward_to_backend(&mut p, if kind == 5 { 1 } else { 0 }, None, &k, now);
            }
            pool.free(p);
            check_client_lists(&lb);
        }
    }
}
