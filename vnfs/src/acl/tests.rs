use super::classifier::{first_match_linear, Classifier, Fields};
use super::*;
use crate::testutil::*;
use proptest::prelude::*;
use smoltcp::wire::{Icmpv4Message, IpProtocol};

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

fn rig(acl: &str) -> Rig {
    let text = std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nacl fw {{\n{acl}}}\n");
    let mut r = Rig::with_config(&text, &MACS);
    r.send(0, &arp_reply(LAN_MAC, LAN_HOST, MACS[0], Ipv4Addr::new(10, 0, 0, 1)));
    r.send(1, &arp_reply(WAN_MAC, WAN_HOST, MACS[1], Ipv4Addr::new(10, 1, 0, 1)));
    r.sent(0);
    r.sent(1);
    r
}

fn stage_line(r: &Rig) -> std::string::String {
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    s
}

#[test]
fn rules_decide_in_order_and_count_their_hits() {
    let mut r = rig(
        " port lan\n rule deny tcp dst 10.1.0.2/32 dport 22\n rule permit tcp dport 1-1023\n rule permit icmp type 8\n\
         rule permit udp src 10.0.0.0/24 dport 53\n default deny\n",
    );
    r.through(0, &tcp_frame(MACS[0], (LAN_HOST, 40000), (WAN_HOST, 80), true, false), 1);
    r.send(0, &tcp_frame(MACS[0], (LAN_HOST, 40000), (WAN_HOST, 22), true, false));
    assert!(r.sent(1).is_empty(), "ssh to .2 is denied before the broader permit");
    r.through(0, &echo_request(MACS[0], LAN_HOST, WAN_HOST, 1, b"x"), 1);
    r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 1);
    r.send(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 123), b"q"));
    assert!(r.sent(1).is_empty(), "the default denies");
    assert_eq!(r.drops(0, DropReason::Policy), 2);
    // wan is not filtered.
    r.through(1, &udp_frame(MACS[1], (WAN_HOST, 5000), (LAN_HOST, 123), b"q"), 0);
    let s = stage_line(&r);
    let line = s.lines().find(|l| l.starts_with("stage name=fw ")).unwrap();
    assert!(line.contains(" permitted=3 denied=2 ") && line.contains(" default_hits=1 "), "{line}");
    for (l, n) in [(5, 1), (6, 1), (7, 1), (8, 1)] {
        assert!(s.contains(&std::format!("acl-rule name=fw/{l} hits={n}\n")), "rule on line {l}: {s}");
    }
    r.finish();
}

#[test]
fn reject_answers_with_a_reset_or_admin_prohibited() {
    let mut r = rig(" port lan\n rule reject tcp dport 23\n rule reject udp\n default permit\n");
    let rst = r.through(0, &tcp_frame(MACS[0], (LAN_HOST, 40000), (WAN_HOST, 23), true, false), 0);
    let ip = Ipv4Packet::new_checked(&rst[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (WAN_HOST, LAN_HOST));
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.rst() && tcp.ack() && tcp.src_port() == 23 && tcp.dst_port() == 40000);
    let err = r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 0);
    let ip = Ipv4Packet::new_checked(&err[14..]).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.next_header()),
        (Ipv4Addr::new(10, 0, 0, 1), LAN_HOST, IpProtocol::Icmp)
    );
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (Icmpv4Message::DstUnreachable, 13));
    assert_eq!(r.drops(0, DropReason::Policy), 2);
    r.finish();
}

#[test]
fn stateful_mode_lets_replies_in_and_nothing_else() {
    let mut r = rig(" port lan wan\n stateful\n rule permit src 10.0.0.0/24\n default deny\n");
    // Inbound first: denied.
    r.send(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a"));
    assert!(r.sent(0).is_empty());
    // Outbound opens the connection; its replies come in.
    r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 1);
    r.through(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a"), 0);
    // Echo replies match their request's identifier.
    r.through(0, &echo_request(MACS[0], LAN_HOST, WAN_HOST, 77, b"x"), 1);
    let mut reply = echo_request(MACS[1], WAN_HOST, LAN_HOST, 77, b"x");
    reply[34] = 0; // echo reply
    let c = crate::csum::checksum(&{
        let mut b = reply[34..].to_vec();
        b[2] = 0;
        b[3] = 0;
        b
    });
    crate::csum::set(&mut reply, 36, c);
    r.through(1, &reply, 0);
    // An ICMP error about the tracked UDP connection (its quote) is let in;
    // one about another connection is not.
    let quote = |sport: u16| {
        let q = udp_frame(MACS[0], (LAN_HOST, sport), (WAN_HOST, 53), b"q");
        let mut body = std::vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&q[14..14 + 28]);
        let c = crate::csum::checksum(&body);
        crate::csum::set(&mut body, 2, c);
        l4_frame(MACS[1], WAN_HOST, LAN_HOST, IpProtocol::Icmp, &body)
    };
    r.through(1, &quote(5000), 0);
    r.send(1, &quote(5999));
    assert!(r.sent(0).is_empty(), "an error about no tracked connection is denied");
    // Another port of the same host is a new connection: denied.
    r.send(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5001), b"a"));
    assert!(r.sent(0).is_empty());
    let s = stage_line(&r);
    assert!(s.contains(" established=2 related=1 ") && s.contains(" connections=2 "), "{s}");
    r.finish();
}

#[test]
fn a_reload_that_edits_the_rules_keeps_the_connections() {
    let acl = |extra: &str| {
        std::format!(
            "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nacl fw {{\n port lan wan\n stateful\n{extra} rule permit udp src 10.0.0.0/24\n default deny\n}}\n"
        )
    };
    let mut r = rig(" port lan wan\n stateful\n rule permit udp src 10.0.0.0/24\n default deny\n");
    r.dp.reload("t", &acl(""), &mut r.pool).unwrap();
    r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 1);
    // A new rule: the connection opened before it still gets its replies.
    r.dp.reload("t", &acl(" rule deny udp dport 123\n"), &mut r.pool).unwrap();
    r.through(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a"), 0);
    // The new rule (before the permit) is in force.
    let denied = r.drops(0, DropReason::Policy);
    r.send(0, &udp_frame(MACS[0], (LAN_HOST, 5001), (WAN_HOST, 123), b"q"));
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::Policy), denied + 1);
    // A different table size cannot keep the table: rebuilt, the old
    // connection's replies are new (and denied) now.
    let bigger = acl(" connections 1024\n");
    r.dp.reload("t", &bigger, &mut r.pool).unwrap();
    r.send(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a"));
    assert!(r.sent(0).is_empty(), "a rebuilt table knows no connection");
    r.finish();
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (0u8..3, prop::option::of(prop_oneof![Just(6u8), Just(17u8), Just(1u8)]), 0u8..4, 0u8..4, any::<u16>(), 0u16..3)
        .prop_map(|(a, proto, s, d, port, span)| {
            let net = |sel: u8, base: u32| {
                let len = [0u8, 8, 24, 32][sel as usize];
                Ipv4Net::new(Ipv4Addr::from(base), len).unwrap().trunc()
            };
            let ports = matches!(proto, Some(6) | Some(17)) && span > 0;
            Rule {
                action: [AclAction::Permit, AclAction::Deny, AclAction::Reject][a as usize],
                proto,
                src: net(s, 0x0a00_0000 | (port as u32 & 0x3)),
                dst: net(d, 0x0a01_0000 | (port as u32 >> 14)),
                sport: config::ANY_PORT,
                dport: if ports { (port % 8, port % 8 + span) } else { config::ANY_PORT },
                icmp_type: (proto == Some(1) && span == 1).then_some(8),
                icmp_code: None,
                line: crate::config::Line(0),
            }
        })
}

use ipnet::Ipv4Net;

proptest! {
    #[test]
    fn tuple_space_search_finds_the_first_match_as_a_scan_does(
        rules in prop::collection::vec(arb_rule(), 0..300),
        pkts in prop::collection::vec((prop_oneof![Just(6u8), Just(17u8), Just(1u8)], 0u32..4, 0u32..4, 0u16..12, prop::bool::ANY), 1..64),
    ) {
        let c = Classifier::new(&rules);
        for (proto, s, d, port, frag) in pkts {
            let f = Fields {
                proto,
                src: 0x0a00_0000 | s,
                dst: 0x0a01_0000 | d,
                ports: (proto != 1 && !frag).then_some((1000, port)),
                icmp: (proto == 1 && !frag).then_some((if port % 2 == 0 { 8 } else { 0 }, 0)),
            };
            prop_assert_eq!(c.first_match(&f), first_match_linear(&rules, &f), "{:?}", f);
        }
    }
}

#[test]
fn config_errors_say_what_is_wrong() {
    use std::string::ToString;
    let errs = |t: &str| {
        crate::registry::parse(&std::format!("port lan address 10.0.0.1/24\nacl a {{\n{t}}}\n"))
            .unwrap_err()
            .iter()
            .map(|e| e.display("a.conf").to_string())
            .collect::<std::vec::Vec<_>>()
    };
    let e = errs(" rule allow tcp\n");
    assert!(e[0].starts_with("a.conf:3:7: unknown action `allow`"), "{e:?}");
    let e = errs(" rule permit dport 80\n");
    assert!(e[0].contains("`dport` needs the protocol tcp or udp first"), "{e:?}");
    let e = errs(" rule permit tcp dport 90-80\n rule deny icmp type x\n port wan\n");
    assert!(
        e[0].contains("bad port range `90-80`")
            && e[1].contains("bad ICMP type `x`")
            && e[2].contains("no port named `wan`"),
        "{e:?}"
    );
}
