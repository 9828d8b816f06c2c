use super::classifier::{first_match_linear, Classifier, Fields};
use super::config::ANY_PORT;
use super::*;
use crate::testutil::*;
use proptest::prelude::*;
use smoltcp::wire::{Icmpv4Message, IpProtocol};

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const WAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

/// What the rules mean, written out from the README rather than taken from
/// the classifier (whose `matches` the ACL itself runs): the first rule
/// whose protocol, family, prefixes, port ranges and ICMP type and code all
/// hold. The property tests judge the reassembled datagram with it.
pub(super) fn spec_match(rules: &[Rule], f: &Fields) -> Option<usize> {
    rules.iter().position(|r| {
        let proto = r.proto.is_none_or(|p| p == f.proto);
        let addresses = match (r.v6, f.v6) {
            (None, None) => r.src.contains(&Ipv4Addr::from(f.src)) && r.dst.contains(&Ipv4Addr::from(f.dst)),
            (Some((rs, rd)), Some((s, d))) => rs.contains(&s) && rd.contains(&d),
            _ => false,
        };
        let within = |(lo, hi): (u16, u16), p: u16| lo <= p && p <= hi;
        let ports = (r.sport == ANY_PORT && r.dport == ANY_PORT)
            || f.ports.is_some_and(|(s, d)| within(r.sport, s) && within(r.dport, d));
        let icmp = (r.icmp_type.is_none() && r.icmp_code.is_none())
            || f.icmp.is_some_and(|(t, c)| r.icmp_type.is_none_or(|x| x == t) && r.icmp_code.is_none_or(|x| x == c));
        proto && addresses && ports && icmp
    })
}

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
                v6: None,
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
                v6: None,
            };
            prop_assert_eq!(c.first_match(&f), first_match_linear(&rules, &f), "{:?}", f);
            prop_assert_eq!(first_match_linear(&rules, &f), spec_match(&rules, &f), "{:?}", f);
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
    let e = errs(" source-connections 0\n");
    assert!(e[0].starts_with("a.conf:3:21: bad source-connections `0`: expected 1 to 4000000"), "{e:?}");
    let e = errs(" rule permit tcp dport 90-80\n rule deny icmp type x\n port wan\n");
    assert!(
        e[0].contains("bad port range `90-80`")
            && e[1].contains("bad ICMP type `x`")
            && e[2].contains("no port named `wan`"),
        "{e:?}"
    );
}

/// A TCP segment with `flags` (FIN 1, SYN 2, RST 4, ACK 16) and `payload`.
fn tcp_segment(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = std::vec![0u8; 20];
    {
        let mut t = TcpPacket::new_unchecked(&mut body[..]);
        t.set_src_port(src.1);
        t.set_dst_port(dst.1);
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(1000));
        t.set_header_len(20);
        t.set_fin(flags & 1 != 0);
        t.set_syn(flags & 2 != 0);
        t.set_rst(flags & 4 != 0);
        t.set_ack(flags & 16 != 0);
        t.set_window_len(1024);
    }
    body.extend_from_slice(payload);
    l4_frame(dst_mac, src.0, dst.0, IpProtocol::Tcp, &body)
}

const OTHER_LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

/// A frame out of port 0 that is IPv4 (not an ARP request).
fn ipv4_out(r: &mut Rig, port: u8) -> usize {
    r.sent(port).iter().filter(|f| f[12..14] == [0x08, 0x00]).count()
}

#[test]
fn a_chained_super_packet_is_filtered_like_the_plain_frame() {
    let mut r = rig(" port lan wan\n stateful\n rule permit src 10.0.0.0/24\n default deny\n");
    r.pool = crate::packet::PacketPool::with_tails(RIG_BUFFERS, 4);
    let frame = tcp_segment(MACS[1], (WAN_HOST, 40000), (LAN_HOST, 445), 0x10, &[0x5a; 200]);
    r.send(1, &frame);
    assert_eq!(ipv4_out(&mut r, 0), 0, "the plain frame is denied");
    // The same bytes in two buffers: the headers in the first, the total
    // length beyond it.
    let head = chained(&mut r.pool, &frame, 128);
    assert!(head.is_chained());
    r.send_packet(1, head);
    assert_eq!(ipv4_out(&mut r, 0), 0, "the super-packet is denied too");
    assert_eq!(r.drops(1, DropReason::Policy), 2);
    // Headers cut across the buffers cannot be classified: dropped, counted.
    let head = chained(&mut r.pool, &frame, 40);
    r.send_packet(1, head);
    assert_eq!(ipv4_out(&mut r, 0), 0);
    assert_eq!(r.drops(1, DropReason::AclUnparsable), 1);
    // A permitted super-packet still passes.
    let out = tcp_segment(MACS[0], (LAN_HOST, 40000), (WAN_HOST, 445), 0x10, &[0x5a; 200]);
    let head = chained(&mut r.pool, &out, 128);
    r.send_packet(0, head);
    assert_eq!(ipv4_out(&mut r, 1), 1);
    r.finish();
}

#[test]
fn related_icmp_goes_only_to_the_endpoint_that_sent_the_quoted_packet() {
    let mut r = rig(" port lan wan\n stateful\n rule permit src 10.0.0.0/24\n default deny\n");
    r.send(0, &arp_reply([2, 0, 0, 0, 1, 3], OTHER_LAN_HOST, MACS[0], Ipv4Addr::new(10, 0, 0, 1)));
    r.sent(0);
    r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 1);
    // An ICMP port unreachable from the wan host quoting `quoted`, to `to`.
    let error = |quoted: &[u8], to: Ipv4Addr| {
        let mut body = std::vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&quoted[14..14 + 28]);
        let c = crate::csum::checksum(&body);
        crate::csum::set(&mut body, 2, c);
        let mut f = l4_frame(MACS[1], WAN_HOST, to, IpProtocol::Icmp, &body);
        f.resize(1056 + 14, 0);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_total_len(1056);
        ip.fill_checksum();
        f
    };
    let query = udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q");
    // To a host that has no connection: denied.
    r.send(1, &error(&query, OTHER_LAN_HOST));
    assert_eq!(ipv4_out(&mut r, 0), 0, "an error about 10.0.0.2's flow does not reach 10.0.0.3");
    // Quoting the reply way (a packet the wan host sent) to the lan host:
    // such an error would go to the wan host, not to 10.0.0.2.
    let reply = udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a");
    r.send(1, &error(&reply, LAN_HOST));
    assert_eq!(ipv4_out(&mut r, 0), 0, "an error about a packet 10.0.0.2 never sent");
    // To the endpoint that sent the quoted packet: related.
    r.through(1, &error(&query, LAN_HOST), 0);
    let s = stage_line(&r);
    assert!(s.contains(" related=1 "), "{s}");
    r.finish();
}

#[test]
fn tiny_and_later_fragments_are_judged_with_their_first_fragment() {
    let mut r = rig(" port lan\n rule deny tcp dport 22\n default permit\n");
    let syn = tcp_segment(MACS[0], (LAN_HOST, 40000), (WAN_HOST, 22), 0x02, &[]);
    r.send(0, &syn);
    assert!(r.sent(1).is_empty(), "the whole SYN is denied");
    // RFC 1858's tiny fragment: 8 bytes of TCP header, no flags; then the rest.
    let frags = fragments(&syn, &[8]);
    assert_eq!(frags.len(), 2);
    for f in &frags {
        r.send(0, f);
        assert!(r.sent(1).is_empty(), "no fragment of the denied SYN passes");
    }
    assert_eq!(r.drops(0, DropReason::AclTinyFragment), 2, "the tiny first and the offset-8 TCP fragment");
    // A first fragment with the whole header is judged by the rules; the
    // later fragments follow its verdict.
    let denied = tcp_segment(MACS[0], (LAN_HOST, 40001), (WAN_HOST, 22), 0x10, &[7; 100]);
    let policy = r.drops(0, DropReason::Policy);
    for f in fragments(&denied, &[32, 64]) {
        r.send(0, &f);
        assert!(r.sent(1).is_empty());
    }
    assert_eq!(r.drops(0, DropReason::Policy), policy + 3, "the first by its rule, the rest by its verdict");
    // A permitted flow's fragments pass, first then the rest.
    let permitted = tcp_segment(MACS[0], (LAN_HOST, 40002), (WAN_HOST, 80), 0x10, &[7; 100]);
    let mut ok = permitted.clone();
    Ipv4Packet::new_unchecked(&mut ok[14..]).set_ident(0x77);
    Ipv4Packet::new_unchecked(&mut ok[14..]).fill_checksum();
    for f in fragments(&ok, &[32, 64]) {
        r.through(0, &f, 1);
    }
    // Out of order: a later fragment before its first has no verdict to
    // follow (dropped, counted); the first and what follows it pass.
    let mut late = permitted.clone();
    Ipv4Packet::new_unchecked(&mut late[14..]).set_ident(0x78);
    Ipv4Packet::new_unchecked(&mut late[14..]).fill_checksum();
    let f = fragments(&late, &[32, 64]);
    r.send(0, &f[2]);
    assert!(r.sent(1).is_empty());
    assert_eq!(r.drops(0, DropReason::AclFragmentUnknown), 1);
    r.through(0, &f[0], 1);
    r.through(0, &f[1], 1);
    r.finish();
}

#[test]
fn a_syn_flood_through_a_permit_does_not_lock_other_clients_out() {
    let mut r = rig(
        " port lan wan\n stateful\n connections 16\n rule permit tcp dport 80\n rule permit src 10.0.0.0/24\n default deny\n",
    );
    // 16 SYNs from outside (spoofed sources, never completed) fill the table.
    for i in 0..16u8 {
        let src = Ipv4Addr::new(10, 1, 0, 100 + i);
        r.send(1, &tcp_segment(MACS[1], (src, 1000 + i as u16), (LAN_HOST, 80), 0x02, &[]));
        r.sent(0);
        r.sent(1);
    }
    // An inside client's DNS query is tracked all the same (a half-open
    // connection makes room), and its reply comes in.
    r.through(0, &udp_frame(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 53), b"q"), 1);
    r.through(1, &udp_frame(MACS[1], (WAN_HOST, 53), (LAN_HOST, 5000), b"a"), 0);
    let s = stage_line(&r);
    assert!(s.contains(" connections_evicted=1 "), "{s}");
    r.finish();
    // One source holds at most `source-connections`: its own half-open
    // connections make room for its new ones.
    let mut r = rig(
        " port lan wan\n stateful\n connections 16\n source-connections 4\n rule permit tcp dport 80\n default deny\n",
    );
    for i in 0..16u16 {
        r.send(1, &tcp_segment(MACS[1], (WAN_HOST, 1000 + i), (LAN_HOST, 80), 0x02, &[]));
    }
    r.sent(0);
    let s = stage_line(&r);
    assert!(s.contains(" connections=4 ") && s.contains(" connections_evicted=12 "), "{s}");
    r.finish();
}

/// What the reference classifier reads of a whole (reassembled) datagram,
/// with smoltcp's checked views: the rule fields the ACL must judge it by.
fn reference_fields(dgram: &[u8]) -> Fields {
    let ip = Ipv4Packet::new_checked(dgram).unwrap();
    let proto = u8::from(ip.next_header());
    let mut f = Fields {
        proto,
        src: u32::from(ip.src_addr()),
        dst: u32::from(ip.dst_addr()),
        ports: None,
        icmp: None,
        v6: None,
    };
    match proto {
        6 => {
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            f.ports = Some((t.src_port(), t.dst_port()));
        }
        17 => {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            f.ports = Some((u.src_port(), u.dst_port()));
        }
        1 => {
            let i = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            f.icmp = Some((u8::from(i.msg_type()), i.msg_code()));
        }
        _ => {}
    }
    f
}

/// The IPv4 datagram the fragments `frags` (frames) make, put together by
/// offset, as the receiver's reassembly would.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, &[u8])> = frags
        .iter()
        .map(|f| {
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            (ip.frag_offset() as usize, &f[14 + ip.header_len() as usize..14 + ip.total_len() as usize])
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut d = frags[0][14..34].to_vec();
    for (_, p) in parts {
        d.extend_from_slice(p);
    }
    let total = d.len() as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut d[..]);
    ip.set_total_len(total);
    ip.set_frag_offset(0);
    ip.set_more_frags(false);
    d
}

/// A packet the property test sends: protocol, source and destination
/// host numbers, ports (ICMP: type), payload length, where to cut it into
/// fragments, whether they go out of order, and the head buffer's size if
/// it comes chained.
#[derive(Clone, Debug)]
struct TestPacket {
    proto: u8,
    src: u8,
    dst: u8,
    sport: u16,
    dport: u16,
    len: usize,
    cuts: Vec<usize>,
    reversed: bool,
    chunk: Option<usize>,
}

fn arb_packet() -> impl Strategy<Value = TestPacket> {
    (
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)],
        2u8..6,
        2u8..6,
        prop_oneof![Just(22u16), Just(53), Just(80), Just(1000)],
        prop_oneof![Just(22u16), Just(53), Just(80), Just(1000), Just(8), Just(0), Just(3)],
        0usize..300,
        prop::collection::vec(1usize..40, 0..4),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, 16usize..200),
    )
        .prop_map(|(proto, src, dst, sport, dport, len, cuts, reversed, chunk)| {
            let mut at = 0;
            let cuts = cuts
                .into_iter()
                .map(|c| {
                    at += c * 8;
                    at
                })
                .collect();
            TestPacket { proto, src, dst, sport, dport, len, cuts, reversed, chunk }
        })
}

impl TestPacket {
    fn frame(&self, ident: u16) -> Vec<u8> {
        let src = Ipv4Addr::new(10, 0, 0, self.src);
        let dst = Ipv4Addr::new(10, 1, 0, self.dst);
        let payload = std::vec![0x42u8; self.len];
        let mut f = match self.proto {
            6 => tcp_segment(MACS[0], (src, self.sport), (dst, self.dport), 0x02, &payload),
            17 => udp_frame(MACS[0], (src, self.sport), (dst, self.dport), &payload),
            1 => {
                let mut body = std::vec![(self.dport % 16) as u8, 0, 0, 0, 0, 7, 0, 1];
                body.extend_from_slice(&payload);
                l4_frame(MACS[0], src, dst, IpProtocol::Icmp, &body)
            }
            _ => l4_frame(MACS[0], src, dst, IpProtocol::Unknown(self.proto), &payload),
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_ident(ident);
        ip.fill_checksum();
        f
    }
}

fn prop_rig(rules: &[Rule], default: AclAction) -> Rig {
    use std::fmt::Write;
    let mut acl = std::string::String::from(" port lan\n");
    for r in rules {
        let _ = write!(acl, " rule {}", ["permit", "deny", "reject"][r.action as usize]);
        if let Some(p) = r.proto {
            let _ = write!(acl, " {p}");
        }
        let _ = write!(acl, " src {} dst {}", r.src, r.dst);
        if r.sport != config::ANY_PORT {
            let _ = write!(acl, " sport {}-{}", r.sport.0, r.sport.1);
        }
        if r.dport != config::ANY_PORT {
            let _ = write!(acl, " dport {}-{}", r.dport.0, r.dport.1);
        }
        if let Some(t) = r.icmp_type {
            let _ = write!(acl, " type {t}");
        }
        acl.push('\n');
    }
    let _ = writeln!(acl, " default {}", ["permit", "deny", "reject"][default as usize]);
    let mut r = rig(&acl);
    r.pool = crate::packet::PacketPool::with_tails(RIG_BUFFERS, 4);
    for h in 2..6 {
        let mac = [2, 0, 0, 0, 2, h];
        r.send(1, &arp_reply(mac, Ipv4Addr::new(10, 1, 0, h), MACS[1], Ipv4Addr::new(10, 1, 0, 1)));
    }
    r.sent(1);
    r
}

fn arb_prop_rule() -> impl Strategy<Value = Rule> {
    (
        0u8..3,
        prop::option::of(prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)]),
        (0u8..4, 2u8..6),
        (0u8..4, 2u8..6),
        prop::option::of((prop_oneof![Just(22u16), Just(53), Just(80), Just(1000)], 0u16..30)),
        prop::option::of(prop_oneof![Just(0u8), Just(3), Just(8)]),
    )
        .prop_map(|(a, proto, (sl, sh), (dl, dh), ports, ty)| {
            let net = |sel: u8, base: Ipv4Addr| {
                let len = [0u8, 24, 31, 32][sel as usize];
                Ipv4Net::new(base, len).unwrap().trunc()
            };
            let l4 = matches!(proto, Some(6) | Some(17));
            Rule {
                action: [AclAction::Permit, AclAction::Deny, AclAction::Reject][a as usize],
                proto,
                src: net(sl, Ipv4Addr::new(10, 0, 0, sh)),
                dst: net(dl, Ipv4Addr::new(10, 1, 0, dh)),
                sport: config::ANY_PORT,
                dport: match ports {
                    Some((p, span)) if l4 => (p, p.saturating_add(span)),
                    _ => config::ANY_PORT,
                },
                icmp_type: if proto == Some(1) { ty } else { None },
                icmp_code: None,
                v6: None,
                line: crate::config::Line(0),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]
    /// For random rules and random packets (fragmented in any order,
    /// chained into buffers of any size), no packet of a datagram the
    /// reference classifier denies, given the whole datagram, passes; and
    /// a permitted one that can be judged (its first buffer holds its
    /// headers, its first fragment comes first and holds the transport
    /// header) passes whole.
    #[test]
    fn the_acl_never_passes_what_the_reference_denies_of_the_reassembled_packet(
        rules in prop::collection::vec(arb_prop_rule(), 0..12),
        default in prop_oneof![Just(AclAction::Permit), Just(AclAction::Deny)],
        pkts in prop::collection::vec(arb_packet(), 1..8),
    ) {
        let mut r = prop_rig(&rules, default);
        for (n, p) in pkts.iter().enumerate() {
            let whole = p.frame(0x100 + n as u16);
            let mut frags = fragments(&whole, &p.cuts);
            let dgram = reassemble(&frags);
            // The same datagram (the flags and checksum aside).
            prop_assert_eq!((&dgram[..4], &dgram[12..]), (&whole[14..18], &whole[26..]));
            let f = reference_fields(&dgram);
            let verdict = spec_match(&rules, &f).map_or(default, |i| rules[i].action);
            if p.reversed {
                frags.reverse();
            }
            let mut passed = 0;
            for frag in &frags {
                match p.chunk {
                    Some(c) => {
                        let head = chained(&mut r.pool, frag, c);
                        r.send_packet(0, head);
                    }
                    None => r.send(0, frag),
                }
                passed += ipv4_out(&mut r, 1);
                r.sent(0);
            }
            if verdict != AclAction::Permit {
                prop_assert_eq!(passed, 0, "{:?} of {:?} denied by the reference, rules {:?}", p, f, rules);
            } else {
                let l4 = match p.proto { 6 => 20, 17 | 1 => 8, _ => 0 };
                let first_len = p.cuts.iter().copied().find(|&c| c > 0 && c < dgram.len() - 20).unwrap_or(dgram.len() - 20);
                let in_order = !p.reversed || frags.len() == 1;
                let judged = first_len >= l4 && p.chunk.is_none_or(|c| c >= 14 + 20 + l4);
                if in_order && judged {
                    prop_assert_eq!(passed, frags.len(), "{:?} of {:?} permitted by the reference", p, f);
                }
            }
        }
        r.finish();
    }
}

#[test]
fn a_forged_reply_from_outside_does_not_establish_a_connection() {
    // Only port 80 inbound, and replies: a forged "SYN-ACK" that claims to
    // come from the inside server but arrives on the outside port is no
    // reply, so a spoofed source cannot complete a handshake by itself.
    let mut r = rig(" port lan wan\n stateful\n connections 16\n rule permit tcp dport 80\n default deny\n");
    for i in 0..16u8 {
        let s = (Ipv4Addr::new(10, 1, 0, 100 + i), 1000 + i as u16);
        r.send(1, &tcp_segment(MACS[1], s, (LAN_HOST, 80), 0x02, &[]));
        r.send(1, &tcp_segment(MACS[1], (LAN_HOST, 80), s, 0x12, &[]));
        r.send(1, &tcp_segment(MACS[1], s, (LAN_HOST, 80), 0x10, &[]));
        r.sent(0);
        r.sent(1);
    }
    assert_eq!(r.drops(1, DropReason::Policy), 16, "each forged SYN-ACK is judged by the rules");
    // A legitimate client still gets its connection tracked: the spoofed
    // ones stayed half-open, and one makes room; its reply comes back.
    r.through(0, &tcp_segment(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 80), 0x02, &[]), 1);
    r.through(1, &tcp_segment(MACS[1], (WAN_HOST, 80), (LAN_HOST, 5000), 0x12, &[]), 0);
    r.through(0, &tcp_segment(MACS[0], (LAN_HOST, 5000), (WAN_HOST, 80), 0x10, &[]), 1);
    let s = stage_line(&r);
    assert!(s.contains(" connections_evicted=1 "), "{s}");
    r.finish();
}

#[test]
fn a_spoofer_filling_a_sources_quota_does_not_lock_that_source_out() {
    // SYNs spoofed with the client's address fill its quota in a large
    // table; its own SYN replaces the oldest of them, wherever they are.
    let mut r = rig(
        " port lan wan\n stateful\n connections 65536\n source-connections 16\n rule permit tcp dport 80\n default deny\n",
    );
    for p in 0..16 {
        r.send(1, &tcp_segment(MACS[1], (WAN_HOST, 1000 + p), (LAN_HOST, 80), 0x02, &[]));
    }
    r.sent(0);
    r.through(1, &tcp_segment(MACS[1], (WAN_HOST, 5000), (LAN_HOST, 80), 0x02, &[]), 0);
    for p in 0..15 {
        r.send(1, &tcp_segment(MACS[1], (WAN_HOST, 2000 + p), (LAN_HOST, 80), 0x02, &[]));
    }
    r.sent(0);
    r.through(0, &tcp_segment(MACS[0], (LAN_HOST, 80), (WAN_HOST, 5000), 0x12, &[]), 1);
    let s = stage_line(&r);
    assert!(s.contains(" connections_refused=0 ") && s.contains(" connections_evicted=16 "), "{s}");
    r.finish();
}
