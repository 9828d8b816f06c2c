use super::*;
use crate::testutil::*;
use core::net::Ipv4Addr;

#[test]
fn single_rate_three_colour_marker_follows_rfc_2697() {
    // CIR 1000 B/s, CBS 3000, EBS 2000: both buckets start full.
    let mut m = TokenMeter::new(1000, 3000, Meter::SingleRate { excess_burst: 2000 }, 0);
    let colours: std::vec::Vec<Colour> = (0..6).map(|_| m.colour(1000, 0)).collect();
    use Colour::*;
    assert_eq!(colours, [Green, Green, Green, Yellow, Yellow, Red]);
    // One second refills 1000 bytes into the committed bucket first.
    assert_eq!(m.colour(1000, 1_000_000), Green);
    assert_eq!(m.colour(1000, 1_000_000), Red);
    // Ten seconds: CBS full (3000), the overflow tops up EBS (2000).
    let later: std::vec::Vec<Colour> = (0..6).map(|_| m.colour(1000, 11_000_000)).collect();
    assert_eq!(later, [Green, Green, Green, Yellow, Yellow, Red]);
    // Half a byte's worth of time is not lost between packets.
    let mut m = TokenMeter::new(1, 1, Meter::SingleRate { excess_burst: 0 }, 0);
    assert_eq!(m.colour(1, 0), Green);
    assert_eq!(m.colour(1, 500_000), Red);
    assert_eq!(m.colour(1, 1_000_000), Green);
}

#[test]
fn two_rate_three_colour_marker_follows_rfc_2698() {
    // CIR 1000 B/s CBS 2000, PIR 2000 B/s PBS 4000.
    let mut m = TokenMeter::new(1000, 2000, Meter::TwoRate { peak_rate: 2000, peak_burst: 4000 }, 0);
    use Colour::*;
    let c: std::vec::Vec<Colour> = (0..5).map(|_| m.colour(1000, 0)).collect();
    assert_eq!(c, [Green, Green, Yellow, Yellow, Red]);
    // A red packet takes no tokens; one second gives 2000 peak, 1000 committed.
    assert_eq!(m.colour(1000, 1_000_000), Green);
    assert_eq!(m.colour(1000, 1_000_000), Yellow);
    assert_eq!(m.colour(1000, 1_000_000), Red);
    // A packet above PBS is always red.
    assert_eq!(m.colour(5000, 100_000_000), Red);
}

#[test]
fn a_super_packet_needs_one_segment_of_tokens_and_pays_for_all() {
    let mut m = TokenMeter::new(1000, 3000, Meter::SingleRate { excess_burst: 0 }, 0);
    // 60 kB in 1448-byte segments: admitted, and the bucket owes the rest.
    assert_eq!(m.colour_in(60_000, 1500, 0), Colour::Green);
    assert_eq!(m.colour(100, 1_000_000), Colour::Red, "in debt: nothing passes");
    // The debt is bounded (64 KiB): 60 s at 1000 B/s pays it and refills.
    assert_eq!(m.colour(1000, 61_000_000), Colour::Green);
}

#[test]
fn huge_gaps_and_rates_do_not_overflow() {
    let mut m =
        TokenMeter::new(50_000_000_000, 1 << 30, Meter::TwoRate { peak_rate: 50_000_000_000, peak_burst: 1 << 30 }, 0);
    assert_eq!(m.colour(1500, u64::MAX / 2), Colour::Green);
    assert_eq!(m.colour(1500, 1), Colour::Green, "time going back refills nothing and breaks nothing");
}

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

fn rig(policer: &str) -> Rig {
    let text = std::format!(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\npolicer up {{\n port lan\n{policer}}}\n"
    );
    let mut r = Rig::with_config(&text, &MACS);
    // The wan host answers ARP, so routed packets leave at once.
    r.send(1, &arp_reply([2, 0, 0, 0, 1, 2], WAN_HOST, MACS[1], Ipv4Addr::new(10, 1, 0, 1)));
    r.sent(1);
    r
}

fn send_udp(r: &mut Rig, n: usize, src: Ipv4Addr) -> usize {
    let mut out = 0;
    for _ in 0..n {
        r.send(0, &udp_frame(MACS[0], (src, 4000), (WAN_HOST, 53), &[0u8; 958]));
        out += r.sent(1).len();
    }
    out
}

#[test]
fn a_port_policer_drops_what_exceeds_the_rate_and_counts_it() {
    // 1000-byte frames; 8000 bit/s is 1000 B/s; a burst of 3000.
    let mut r = rig(" rate 8kbit\n burst 3000\n");
    let cfg = crate::registry::parse(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\npolicer up {\n port lan\n rate 8kbit\n}\n",
    )
    .unwrap();
    assert_eq!(cfg.pipeline_names(0), ["up", "router"]);
    assert_eq!(cfg.pipeline_names(1), ["router"]);
    assert_eq!(send_udp(&mut r, 10, LAN_HOST), 3, "the burst passes, the rest is red");
    r.now = 2_000_000;
    assert_eq!(send_udp(&mut r, 10, LAN_HOST), 2, "two seconds at the rate");
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    let line = s.lines().find(|l| l.starts_with("stage name=up ")).unwrap();
    assert!(
        line.contains(" green_packets=5 ") && line.contains(" red_packets=15 ") && line.contains(" dropped=15 "),
        "{line}"
    );
    assert!(line.contains(" drop_policy=15"), "{line}");
    assert_eq!(r.drops(0, DropReason::Policy), 15);
    // From the other side nothing is policed.
    for _ in 0..10 {
        r.send(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 4000), &[0u8; 958]));
    }
    assert_eq!(r.drops(1, DropReason::Policy), 0);
    r.finish();
}

#[test]
fn match_selects_a_prefix_and_remark_rewrites_the_dscp() {
    let mut r = rig(" rate 8kbit\n burst 1000\n match src 10.0.0.0/28\n violate remark 10\n");
    // Outside the prefix: passes unmetered.
    assert_eq!(send_udp(&mut r, 5, Ipv4Addr::new(10, 0, 0, 100)), 5);
    // Inside: the first is green, the rest red and remarked (AF11 = 10), not dropped.
    r.send(0, &udp_frame(MACS[0], (LAN_HOST, 4000), (WAN_HOST, 53), &[0u8; 958]));
    let first = r.sent(1).pop().unwrap();
    r.send(0, &udp_frame(MACS[0], (LAN_HOST, 4000), (WAN_HOST, 53), &[0u8; 958]));
    let second = r.sent(1).pop().unwrap();
    let ip = |f: &[u8]| Ipv4Packet::new_checked(f[14..].to_vec()).unwrap();
    assert_eq!(ip(&first).dscp(), 0);
    assert_eq!(ip(&second).dscp(), 10);
    assert!(ip(&second).verify_checksum());
    r.finish();
}

#[test]
fn config_errors_say_what_is_wrong() {
    let base = "port lan address 10.0.0.1/24\n";
    let errs = |t: &str| {
        crate::registry::parse(&std::format!("{base}{t}"))
            .unwrap_err()
            .iter()
            .map(|e| e.display("p.conf").to_string())
            .collect::<std::vec::Vec<_>>()
    };
    use std::string::ToString;
    let e = errs("policer p {\n rate fast\n}\n");
    assert!(e[0].starts_with("p.conf:3:7: bad rate `fast`"), "{e:?}");
    let e = errs("policer p {\n rate 10mbit\n peak-rate 5mbit\n}\n");
    assert!(e[0].contains("`peak-rate` must be at least `rate`"), "{e:?}");
    let e = errs("policer p {\n rate 10mbit\n peak-rate 20mbit\n excess-burst 1k\n}\n");
    assert!(e[0].contains("do not mix"), "{e:?}");
    let e = errs("policer p {\n rate 10mbit\n violate remark 64\n port wan\n}\n");
    assert!(e[0].contains("bad DSCP `64`") && e[1].contains("no port named `wan`"), "{e:?}");
    let e = errs("policer router {\n rate 10mbit\n}\n");
    assert!(e[0].contains("a stage named `router` is already defined"), "{e:?}");
    // Two policers, one per port, by name in explicit pipelines.
    let c = crate::registry::parse(&std::format!(
        "{base}port wan address 10.1.0.1/24\npolicer a {{\n rate 1mbit\n}}\npolicer b {{\n rate 2mbit\n}}\npipeline lan a router\npipeline wan b router\n"
    ))
    .unwrap();
    assert_eq!((c.pipeline_names(0), c.pipeline_names(1)), (std::vec!["a", "router"], std::vec!["b", "router"]));
}

/// `n` TCP super-packets (2896 bytes of payload: two 1448-byte segments,
/// chained in two buffers) from `src` through the rig, at 1 µs intervals;
/// returns the segments that left on wan.
fn send_super_packets(r: &mut Rig, n: usize, src: Ipv4Addr) -> usize {
    let mut out = 0;
    for _ in 0..n {
        let p = super_packet(&mut r.pool, MACS[0], (src, 40000), (WAN_HOST, 80), 2896, 1800);
        let mut b = crate::packet::Batch::new();
        b.push(p).unwrap();
        r.dp.receive(0, &mut b, &mut r.pool, r.now);
        out += r.sent(1).len();
        r.now += 1;
    }
    out
}

#[test]
fn a_matching_super_packet_is_metered_for_all_its_bytes() {
    // A NIC with offloads hands over TCP in chained super-packets: the
    // IPv4 header is in the first buffer, the total length spans the
    // chain. The `match` must read it there, and the meter take every byte.
    let mut r = rig(" rate 1mbit\n burst 4k\n match src 10.0.0.0/24\n");
    r.pool = crate::packet::PacketPool::with_tails(RIG_BUFFERS, 4);
    let out = send_super_packets(&mut r, 20, LAN_HOST);
    // 4 KiB of burst: the first (2950 bytes) is green, the rest red.
    assert_eq!(out, 2, "one super-packet's two segments");
    assert_eq!(r.drops(0, DropReason::Policy), 19);
    // Counted as the wire carries it: two segments of 54 + 1448 bytes.
    let mut st = std::string::String::new();
    r.dp.write_stats(&mut st).unwrap();
    let line = st.lines().find(|l| l.starts_with("stage name=up ")).unwrap();
    assert!(line.contains(" green_packets=1 ") && line.contains(" green_bytes=3004 "), "{line}");
    assert!(line.contains(" red_packets=19 ") && line.contains(" red_bytes=57076 "), "{line}");
    r.finish();
}

#[test]
fn a_remarked_super_packet_gets_its_dscp() {
    let mut r = rig(" rate 1mbit\n burst 4k\n match dst 10.1.0.0/24\n violate remark 46\n");
    r.pool = crate::packet::PacketPool::with_tails(RIG_BUFFERS, 4);
    let mut dscps = std::vec::Vec::new();
    for _ in 0..2 {
        let p = super_packet(&mut r.pool, MACS[0], (LAN_HOST, 40000), (WAN_HOST, 80), 2896, 1800);
        let mut b = crate::packet::Batch::new();
        b.push(p).unwrap();
        r.dp.receive(0, &mut b, &mut r.pool, r.now);
        for f in r.sent(1) {
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum());
            dscps.push(ip.dscp());
        }
    }
    assert_eq!(dscps, [0, 0, 46, 46], "the second is red: both its segments remarked");
    r.finish();
}

#[test]
fn ipv6_is_metered_too() {
    // A rate on a port holds for every packet on it, IPv6 as well.
    let text = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                port wan address 10.1.0.1/24 address 2001:db8:0:2::1/64\n\
                policer up {\n port lan\n rate 8kbit\n burst 3000\n}\n";
    let mut r = Rig::with_config(text, &MACS);
    let (src, dst) = ("2001:db8:0:1::2".parse().unwrap(), "2001:db8:0:2::2".parse().unwrap());
    // 1000-byte frames: Ethernet 14, IPv6 40, UDP 8 and 938 bytes.
    let ip = smoltcp::wire::Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: smoltcp::wire::IpProtocol::Udp,
        payload_len: 946,
        hop_limit: 64,
    };
    let mut f = std::vec![0u8; 1000];
    f[0..6].copy_from_slice(&MACS[0]);
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&crate::ipv6::ETHERTYPE);
    ip.emit(&mut smoltcp::wire::Ipv6Packet::new_unchecked(&mut f[14..]));
    f[54..56].copy_from_slice(&4000u16.to_be_bytes());
    f[56..58].copy_from_slice(&53u16.to_be_bytes());
    f[58..60].copy_from_slice(&946u16.to_be_bytes());
    for _ in 0..10 {
        r.send(0, &f);
        r.sent(1);
    }
    assert_eq!(r.drops(0, DropReason::Policy), 7, "the burst (3000 bytes) passes, the rest is red");
    r.finish();
}
