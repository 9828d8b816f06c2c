//! The ACL on IPv6 through a real dataplane: rules by prefix and port,
//! stateful replies, the RFC 4890 ICMPv6 defaults and fragments.

use core::net::Ipv6Addr;
use std::vec::Vec;

use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress};

use crate::counters::DropReason;
use crate::ipv6::{solicited_node, ETHERTYPE, HLEN, ICMPV6};
use crate::testutil::Rig;
use crate::wire::ETH_HLEN;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const PORTS: &str = "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\n\
                     port wan address 10.1.0.1/24 address 2001:db8:0:2::1/64\n\
                     router\n";

/// A rig with `acl` configured, its addresses past DAD, the lan host
/// 2001:db8:0:1::2 and the wan server 2001:db8:0:2::5 known as neighbours.
fn rig(acl: &str) -> Rig {
    let mut r = Rig::with_config(&std::format!("{PORTS}{acl}"), &[LAN_MAC, WAN_MAC]);
    r.dp.announce(&mut r.pool);
    r.now = 1_200_000;
    r.dp.poll(r.now, &mut r.pool);
    let _ = (r.sent(0), r.sent(1));
    for (port, mac, host, us) in [
        (0, LAN_MAC, a("2001:db8:0:1::2"), a("2001:db8:0:1::1")),
        (1, WAN_MAC, a("2001:db8:0:2::5"), a("2001:db8:0:2::1")),
    ] {
        let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: host,
            lladdr: Some(RawHardwareAddress::from_bytes(if port == 0 { &HOST_MAC } else { &SERVER_MAC })),
        });
        let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: us,
            lladdr: Some(RawHardwareAddress::from_bytes(if port == 0 { &HOST_MAC } else { &SERVER_MAC })),
        });
        r.send(port, &icmp6(mac, host, solicited_node(us), 255, &ns));
        r.send(port, &icmp6(mac, host, us, 255, &na));
        let _ = (r.sent(0), r.sent(1));
    }
    r
}

fn v6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    crate::testutil::ipv6_frame((dst_mac, HOST_MAC), src, dst, hops, next, payload)
}

fn icmp6(dst_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, hops: u8, repr: &Icmpv6Repr<'_>) -> Vec<u8> {
    crate::testutil::icmpv6_frame((dst_mac, HOST_MAC), src, dst, hops, repr)
}

/// A TCP header (flags as in the header's byte 13) from `sp` to `dp`.
fn tcp_hdr(sp: u16, dp: u16, flags: u8) -> Vec<u8> {
    let mut t = std::vec![0u8; 20];
    t[0..2].copy_from_slice(&sp.to_be_bytes());
    t[2..4].copy_from_slice(&dp.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tcp6(mac: [u8; 6], src: (&str, u16), dst: (&str, u16), flags: u8) -> Vec<u8> {
    v6(mac, a(src.0), a(dst.0), 64, 6, &tcp_hdr(src.1, dst.1, flags))
}

fn udp6(mac: [u8; 6], src: (&str, u16), dst: (&str, u16)) -> Vec<u8> {
    let mut u = std::vec![0u8; 12];
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    v6(mac, a(src.0), a(dst.0), 64, 17, &u)
}

/// Frames out of `out` after `frame` came in on `port`.
fn pass(r: &mut Rig, port: u8, frame: &[u8], out: u8) -> usize {
    r.send(port, frame);
    let n = r.sent(out).len();
    let _ = r.sent(port);
    n
}

const LAN: &str = "2001:db8:0:1::2";
const SERVER: &str = "2001:db8:0:2::5";

#[test]
fn ipv6_rules_permit_and_deny_by_prefix_and_port() {
    let mut r = rig("acl guard {\n port lan\n rule deny tcp src 2001:db8:0:1::66/128\n rule permit tcp6 dport 80\n rule permit udp src 2001:db8:0:1::/64 dst 2001:db8:0:2::/64 dport 53\n rule permit tcp dport 22\n}\n");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 80), SYN), 1), 1, "tcp6 dport 80");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 81), SYN), 1), 0);
    assert_eq!(
        pass(&mut r, 0, &tcp6(LAN_MAC, ("2001:db8:0:1::66", 4000), (SERVER, 80), SYN), 1),
        0,
        "the earlier deny"
    );
    assert_eq!(pass(&mut r, 0, &udp6(LAN_MAC, (LAN, 4000), (SERVER, 53)), 1), 1, "by IPv6 prefixes");
    assert_eq!(pass(&mut r, 0, &udp6(LAN_MAC, (LAN, 4000), (SERVER, 54)), 1), 0);
    assert_eq!(pass(&mut r, 0, &udp6(LAN_MAC, (LAN, 4000), ("2001:db8:0:3::5", 53)), 1), 0, "outside dst");
    // `permit tcp dport 22` has no prefix nor a 6: an IPv4 rule.
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 22), SYN), 1), 0);
    assert_eq!(r.drops(0, DropReason::Policy), 5);
    r.finish();
}

#[test]
fn ipv6_stateful_replies_pass_and_unsolicited_inbound_does_not() {
    let mut r = rig("acl guard {\n port lan wan\n stateful\n rule permit tcp6 src 2001:db8:0:1::/64\n rule permit icmp6 type 128 src 2001:db8:0:1::/64\n}\n");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 80), SYN), 1), 1);
    assert_eq!(pass(&mut r, 1, &tcp6(WAN_MAC, (SERVER, 80), (LAN, 4000), SYN | ACK), 0), 1, "the reply");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 80), ACK), 1), 1);
    assert_eq!(pass(&mut r, 1, &tcp6(WAN_MAC, (SERVER, 80), (LAN, 4001), ACK), 0), 0, "another port");
    assert_eq!(pass(&mut r, 1, &tcp6(WAN_MAC, (SERVER, 5000), (LAN, 22), SYN), 0), 0, "unsolicited");
    assert_eq!(r.drops(1, DropReason::Policy), 2);
    // Echo is up to the rules, and its reply is tracked by identifier.
    let echo = |ty, from, to, mac| {
        let mut b = std::vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1];
        b.extend_from_slice(b"ping");
        v6(mac, a(from), a(to), 64, ICMPV6, &b)
    };
    assert_eq!(pass(&mut r, 0, &echo(128, LAN, SERVER, LAN_MAC), 1), 1);
    assert_eq!(pass(&mut r, 1, &echo(129, SERVER, LAN, WAN_MAC), 0), 1, "the echo reply");
    assert_eq!(pass(&mut r, 1, &echo(128, SERVER, LAN, WAN_MAC), 0), 1, "same identifier: the same flow");
    let mut other = echo(128, SERVER, LAN, WAN_MAC);
    other[ETH_HLEN + HLEN + 4] = 0x99;
    assert_eq!(pass(&mut r, 1, &other, 0), 0, "an echo request from the wan");
    r.finish();
}

#[test]
fn neighbour_discovery_and_icmpv6_errors_pass_a_default_deny() {
    let mut r = rig("acl guard {\n port lan wan\n stateful\n rule permit tcp6 dport 443\n default deny\n}\n");
    // A solicitation for the appliance's address is answered.
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: a("2001:db8:0:1::1"),
        lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)),
    });
    let us = a("2001:db8:0:1::1");
    r.send(0, &icmp6(LAN_MAC, a("2001:db8:0:1::3"), solicited_node(us), 255, &ns));
    assert_eq!(r.sent(0).len(), 1, "a neighbour advertisement");
    // The same with a hop limit below 255 cannot be from a neighbour.
    r.send(0, &icmp6(LAN_MAC, a("2001:db8:0:1::3"), solicited_node(us), 64, &ns));
    assert_eq!(r.sent(0).len(), 0);
    // Packet too big and destination unreachable from the wan reach the lan
    // host, about a connection it opened.
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 443), SYN), 1), 1);
    let quote = tcp6(WAN_MAC, (LAN, 4000), (SERVER, 443), ACK)[ETH_HLEN..].to_vec();
    let ptb = Icmpv6Repr::PktTooBig { mtu: 1280, header: parse_ip(&quote), data: &quote[HLEN..] };
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, a("2001:db8:0:2::9"), a(LAN), 64, &ptb), 0), 1);
    let unreach = Icmpv6Repr::DstUnreachable {
        reason: smoltcp::wire::Icmpv6DstUnreachable::PortUnreachable,
        header: parse_ip(&quote),
        data: &quote[HLEN..],
    };
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, a(SERVER), a(LAN), 64, &unreach), 0), 1);
    r.finish();
}

#[test]
fn a_stateful_acl_passes_icmpv6_errors_only_about_its_connections_to_their_sender() {
    let mut r = rig("acl guard {\n port lan wan\n stateful\n rule permit tcp6 dport 443\n default deny\n}\n");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 443), SYN), 1), 1);
    fn error(quote: &[u8]) -> Icmpv6Repr<'_> {
        Icmpv6Repr::PktTooBig { mtu: 1280, header: parse_ip(quote), data: &quote[HLEN..] }
    }
    let tracked = tcp6(WAN_MAC, (LAN, 4000), (SERVER, 443), ACK)[ETH_HLEN..].to_vec();
    let router = a("2001:db8:0:2::9");
    // About the tracked connection, to its inside end: passes.
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, router, a(LAN), 64, &error(&tracked)), 0), 1);
    // The same error to another inside host: denied.
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, router, a("2001:db8:0:1::3"), 64, &error(&tracked)), 0), 0);
    // An error quoting a connection nobody opened: denied.
    let untracked = tcp6(WAN_MAC, (LAN, 4001), (SERVER, 443), ACK)[ETH_HLEN..].to_vec();
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, router, a(LAN), 64, &error(&untracked)), 0), 0);
    assert_eq!(r.drops(1, DropReason::Policy), 2);
    r.finish();
}

fn parse_ip(ip: &[u8]) -> smoltcp::wire::Ipv6Repr {
    smoltcp::wire::Ipv6Repr::parse(&smoltcp::wire::Ipv6Packet::new_checked(ip).unwrap()).unwrap()
}

/// An IPv6 fragment: a fragment header (`more`, `offset` in 8-byte
/// units, identification 7) before `payload` of protocol `next`.
fn frag6(src: &str, dst: &str, next: u8, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = std::vec![next, 0];
    b.extend_from_slice(&((offset << 3) | more as u16).to_be_bytes());
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(payload);
    v6(LAN_MAC, a(src), a(dst), 64, 44, &b)
}

#[test]
fn ipv6_fragments_are_judged_with_their_first() {
    let mut r = rig("acl guard {\n port lan\n rule permit udp6 dport 53\n rule permit tcp6 dport 80\n}\n");
    // A first fragment holding 4 bytes of TCP: no flags to judge.
    r.send(0, &frag6(LAN, SERVER, 6, 0, true, &tcp_hdr(4000, 80, SYN)[..4]));
    assert_eq!(r.drops(0, DropReason::AclTinyFragment), 1);
    assert!(r.sent(1).is_empty());
    // A later fragment with no first judged: dropped.
    r.send(0, &frag6(LAN, SERVER, 17, 4, false, &[0; 16]));
    assert_eq!(r.drops(0, DropReason::AclFragmentUnknown), 1);
    // A permitted first fragment, then its later one, pass.
    let mut udp = std::vec![0u8; 32];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&53u16.to_be_bytes());
    udp[4..6].copy_from_slice(&48u16.to_be_bytes());
    assert_eq!(pass(&mut r, 0, &frag6(LAN, SERVER, 17, 0, true, &udp), 1), 1);
    assert_eq!(pass(&mut r, 0, &frag6(LAN, SERVER, 17, 4, false, &[0; 16]), 1), 1);
    // A denied one's later fragment is denied.
    udp[2..4].copy_from_slice(&54u16.to_be_bytes());
    let other = |off, more, body: &[u8]| frag6("2001:db8:0:1::3", SERVER, 17, off, more, body);
    assert_eq!(pass(&mut r, 0, &other(0, true, &udp), 1), 0);
    assert_eq!(pass(&mut r, 0, &other(4, false, &[0; 16]), 1), 0);
    assert_eq!(r.drops(0, DropReason::Policy), 2);
    // A later fragment at offset 8 could rewrite a TCP header's flags
    // (RFC 1858 §4): dropped, whatever its first's verdict.
    assert_eq!(pass(&mut r, 0, &frag6(LAN, SERVER, 17, 1, false, &[0; 16]), 1), 0);
    assert_eq!(r.drops(0, DropReason::AclTinyFragment), 2);
    r.finish();
}

#[test]
fn an_acl_without_ipv6_rules_drops_forwarded_ipv6_but_not_neighbour_discovery() {
    let mut r = rig("acl guard {\n port lan\n rule permit tcp dport 80\n default permit\n}\n");
    assert_eq!(pass(&mut r, 0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 80), SYN), 1), 0);
    assert_eq!(r.drops(0, DropReason::Ipv6Unsupported), 1, "even with default permit: no IPv6 rules");
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: a("2001:db8:0:1::1"),
        lladdr: Some(RawHardwareAddress::from_bytes(&HOST_MAC)),
    });
    r.send(0, &icmp6(LAN_MAC, a("2001:db8:0:1::3"), solicited_node(a("2001:db8:0:1::1")), 255, &ns));
    assert_eq!(r.sent(0).len(), 1, "a neighbour advertisement");
    r.finish();
}

#[test]
fn the_rfc_4890_defaults_open_nothing_the_rules_close() {
    let quote = tcp6(WAN_MAC, (LAN, 4000), (SERVER, 443), ACK)[ETH_HLEN..].to_vec();
    let ptb = Icmpv6Repr::PktTooBig { mtu: 1280, header: parse_ip(&quote), data: &quote[HLEN..] };
    let error = icmp6(WAN_MAC, a("2001:db8:0:2::9"), a(LAN), 64, &ptb);
    // An IPv4-only ACL drops every IPv6 packet, ICMPv6 errors too.
    let mut r = rig("acl guard {\n port lan wan\n rule permit tcp dport 80\n default deny\n}\n");
    assert_eq!(pass(&mut r, 1, &error, 0), 0);
    assert_eq!(r.drops(1, DropReason::Ipv6Unsupported), 1);
    r.finish();
    // A stateless ACL: the defaults pass errors no rule names, and a rule
    // that names them decides.
    let mut r = rig("acl guard {\n port lan wan\n rule permit tcp6 dport 443\n default deny\n}\n");
    assert_eq!(pass(&mut r, 1, &error, 0), 1);
    r.finish();
    let mut r = rig("acl guard {\n port lan wan\n rule deny icmp6 type 2\n rule permit tcp6 dport 443\n}\n");
    assert_eq!(pass(&mut r, 1, &error, 0), 0);
    assert_eq!(r.drops(1, DropReason::Policy), 1);
    // Neighbour discovery to a global address is forwarded traffic, judged
    // by the rules: here the default (deny).
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr: a(LAN), lladdr: None });
    assert_eq!(pass(&mut r, 1, &icmp6(WAN_MAC, a("2001:db8:0:2::9"), a(LAN), 255, &ns), 0), 0);
    assert_eq!(r.drops(1, DropReason::Policy), 2);
    r.finish();
}

#[test]
fn check_warns_that_an_acl_without_ipv6_rules_drops_ipv6_on_its_ipv6_ports() {
    let cfg = |acl: &str| crate::registry::parse(&std::format!("{PORTS}port dmz address 10.2.0.1/24\n{acl}")).unwrap();
    let w = cfg("acl guard {\n port lan wan dmz\n rule permit tcp dport 80\n}\n").warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, 5, "the acl's line");
    assert!(w[0].1.contains("acl guard has no IPv6 rules: it drops the IPv6 forwarded on lan, wan "), "{w:?}");
    assert!(cfg("acl guard {\n port lan\n rule permit tcp6 dport 80\n}\n").warnings().is_empty());
    assert!(cfg("acl guard {\n port dmz\n rule permit tcp dport 80\n}\n").warnings().is_empty(), "no IPv6 on dmz");
}

#[test]
fn ipv6_rule_syntax_errors_name_the_word() {
    let err = |acl: &str| {
        std::format!("{:?}", crate::registry::parse(&std::format!("{PORTS}acl g {{\n{acl}\n}}\n")).unwrap_err())
    };
    assert!(err("rule permit tcp src 10.0.0.0/8 dst 2001:db8::/32").contains("mixes IPv4 and IPv6"));
    assert!(err("rule permit tcp6 src 10.0.0.0/8").contains("mixes IPv4 and IPv6"));
    assert!(err("rule permit icmp src 2001:db8::/32").contains("use icmp6"));
    assert!(err("rule permit icmp6 src 10.0.0.0/8").contains("mixes IPv4 and IPv6"));
    assert!(err("rule permit udp6 type 1").contains("needs the protocol icmp or icmp6"));
}

#[test]
fn ipv6_reject_answers_with_a_reset_or_admin_prohibited() {
    let mut r = rig("acl guard {\n port lan\n rule reject tcp6 dport 23\n rule reject udp6\n rule permit ip6\n}\n");
    r.send(0, &tcp6(LAN_MAC, (LAN, 4000), (SERVER, 23), SYN));
    assert!(r.sent(1).is_empty());
    let back = r.sent(0);
    assert_eq!(back.len(), 1, "a reset");
    let ip = smoltcp::wire::Ipv6Packet::new_checked(&back[0][ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), u8::from(ip.next_header())), (a(SERVER), a(LAN), 6));
    let t = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(t.rst() && t.ack() && (t.src_port(), t.dst_port()) == (23, 4000));
    assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    r.send(0, &udp6(LAN_MAC, (LAN, 4000), (SERVER, 9)));
    assert!(r.sent(1).is_empty());
    let back = r.sent(0);
    assert_eq!(back.len(), 1, "an ICMPv6 error");
    let ip = smoltcp::wire::Ipv6Packet::new_checked(&back[0][ETH_HLEN..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (a("2001:db8:0:1::1"), a(LAN)), "from the input port's address");
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (1, 1), "administratively prohibited");
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    assert_eq!(r.drops(0, DropReason::Policy), 2);
    r.finish();
}

mod property {
    use super::*;
    use crate::acl::classifier::Fields;
    use crate::acl::config::{AclAction, Rule, ANY_PORT};
    use ipnet::Ipv6Net;
    use proptest::prelude::*;

    const SRC_NETS: [&str; 4] = ["::/0", "2001:db8:0:1::/64", "2001:db8:0:1::2/127", "2001:db8:0:1::3/128"];
    const DST_NETS: [&str; 4] = ["::/0", "2001:db8:0:2::/64", "2001:db8:0:2::5/128", "2001:db8:0:2::6/128"];
    const PROTOS: [Option<u8>; 4] = [None, Some(6), Some(17), Some(58)];

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (0u8..3, 0usize..4, 0usize..4, 0usize..4, 0u16..8, 0u16..4, prop::bool::ANY).prop_map(
            |(act, p, s, d, port, span, ty)| {
                let proto = PROTOS[p];
                let l4 = matches!(proto, Some(6) | Some(17));
                Rule {
                    action: [AclAction::Permit, AclAction::Deny, AclAction::Reject][act as usize],
                    proto,
                    src: Default::default(),
                    dst: Default::default(),
                    sport: ANY_PORT,
                    dport: if l4 && span > 0 { (port, port + span) } else { ANY_PORT },
                    icmp_type: (proto == Some(58) && span > 0).then_some(if ty { 128 } else { 129 }),
                    icmp_code: None,
                    v6: Some((SRC_NETS[s].parse::<Ipv6Net>().unwrap(), DST_NETS[d].parse::<Ipv6Net>().unwrap())),
                    line: crate::config::Line(0),
                }
            },
        )
    }

    fn config(rules: &[Rule], default: AclAction) -> std::string::String {
        use std::fmt::Write;
        let word = |a: AclAction| ["permit", "deny", "reject"][a as usize];
        let mut acl = std::string::String::from("acl guard {\n port lan\n");
        for r in rules {
            let proto = match r.proto {
                None => "ip6",
                Some(6) => "tcp6",
                Some(17) => "udp6",
                _ => "icmp6",
            };
            let (s, d) = r.v6.unwrap();
            let _ = write!(acl, " rule {} {proto} src {s} dst {d}", word(r.action));
            if r.dport != ANY_PORT {
                let _ = write!(acl, " dport {}-{}", r.dport.0, r.dport.1);
            }
            if let Some(t) = r.icmp_type {
                let _ = write!(acl, " type {t}");
            }
            acl.push('\n');
        }
        let _ = writeln!(acl, " default {}\n}}", word(default));
        acl
    }

    /// A packet: protocol, source and destination (indices), destination
    /// port or echo type, and a cut (8-byte units of its transport bytes)
    /// to fragment at, its fragments maybe sent in reverse.
    fn arb_packet() -> impl Strategy<Value = (u8, u8, u8, u16, Option<u16>, bool)> {
        (
            prop_oneof![Just(6u8), Just(17u8), Just(58u8)],
            2u8..6,
            5u8..7,
            0u16..12,
            // Cuts of 8 and 16 bytes: later fragments there are dropped.
            prop::option::of(prop_oneof![Just(0u16), 3u16..6]),
            prop::bool::ANY,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random IPv6 frames (a valid start, then anything: extension
        /// headers, fragments, short transport headers) through a stateful
        /// IPv6 ACL never panic and never leak a buffer.
        #[test]
        fn random_ipv6_frames_through_the_acl_never_panic_or_leak(
            hops in any::<u8>(), next in prop_oneof![Just(6u8), Just(17), Just(58), Just(44), Just(0), Just(60), any::<u8>()],
            plen in any::<u16>(), body in prop::collection::vec(any::<u8>(), 0..120), port in 0u8..2,
        ) {
            let mut r = rig("acl guard {\n port lan wan\n stateful\n rule permit tcp6 dport 80\n rule reject udp6\n rule permit icmp6 type 128\n default reject\n}\n");
            let (src, dst) = if port == 0 { (LAN, SERVER) } else { (SERVER, LAN) };
            let mut f = v6(if port == 0 { LAN_MAC } else { WAN_MAC }, a(src), a(dst), hops, next, &body);
            f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&plen.to_be_bytes());
            r.send(port, &f);
            r.send(port, &v6(if port == 0 { LAN_MAC } else { WAN_MAC }, a(src), a(dst), hops, next, &body));
            let _ = (r.sent(0), r.sent(1));
            r.finish();
        }

        /// The IPv6 ACL never passes a fragment of what the reference
        /// (a scan of the rules over the whole datagram) denies, and
        /// passes all of what it permits when the first fragment comes
        /// first and holds its transport header.
        #[test]
        fn the_acl_never_passes_ipv6_the_reference_denies(
            rules in prop::collection::vec(arb_rule(), 0..10),
            default in prop_oneof![Just(AclAction::Permit), Just(AclAction::Deny)],
            pkts in prop::collection::vec(arb_packet(), 1..8),
        ) {
            let mut r = rig(&config(&rules, default));
            // The second wan server makes itself known (its solicitation).
            let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr: a("2001:db8:0:2::1"),
                lladdr: Some(RawHardwareAddress::from_bytes(&SERVER_MAC)),
            });
            r.send(1, &icmp6(WAN_MAC, a("2001:db8:0:2::6"), solicited_node(a("2001:db8:0:2::1")), 255, &ns));
            let _ = r.sent(1);
            for (n, &(proto, s, d, port, cut, reversed)) in pkts.iter().enumerate() {
                let (src, dst) = (a(&std::format!("2001:db8:0:1::{s}")), a(&std::format!("2001:db8:0:2::{d}")));
                let mut l4 = std::vec![0u8; 48];
                let min = match proto {
                    6 => {
                        l4[..20].copy_from_slice(&tcp_hdr(40000, port, ACK));
                        20
                    }
                    17 => {
                        l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
                        l4[2..4].copy_from_slice(&port.to_be_bytes());
                        l4[4..6].copy_from_slice(&48u16.to_be_bytes());
                        8
                    }
                    _ => {
                        l4[0] = if port % 2 == 0 { 128 } else { 129 };
                        8
                    }
                };
                let f = Fields {
                    proto,
                    ports: (proto != 58).then_some((40000, port)),
                    icmp: (proto == 58).then_some((l4[0], 0)),
                    v6: Some((src, dst)),
                    ..Fields::default()
                };
                // Without IPv6 rules the ACL drops IPv6, whatever the default.
                let verdict = match crate::acl::tests::spec_match(&rules, &f) {
                    _ if rules.is_empty() => AclAction::Deny,
                    m => m.map_or(default, |i| rules[i].action),
                };
                let frag = |off: u16, more: bool, body: &[u8]| {
                    let mut b = std::vec![proto, 0];
                    b.extend_from_slice(&((off << 3) | more as u16).to_be_bytes());
                    b.extend_from_slice(&(0x100 + n as u32).to_be_bytes());
                    b.extend_from_slice(body);
                    v6(LAN_MAC, src, dst, 64, 44, &b)
                };
                let mut frames = match cut {
                    None => std::vec![v6(LAN_MAC, src, dst, 64, proto, &l4)],
                    Some(c) => {
                        let at = c as usize * 8;
                        std::vec![frag(0, true, &l4[..at]), frag(c, false, &l4[at..])]
                    }
                };
                if reversed {
                    frames.reverse();
                }
                let mut passed = 0;
                for fr in &frames {
                    r.send(0, fr);
                    passed += r.sent(1).iter().filter(|o| o[12..14] == ETHERTYPE).count();
                    let _ = r.sent(0);
                }
                if verdict != AclAction::Permit {
                    prop_assert_eq!(passed, 0, "{:?} denied by the reference, rules {:?}", f, rules);
                } else if (frames.len() == 1 || !reversed) && cut.is_none_or(|c| c as usize * 8 >= min) {
                    prop_assert_eq!(passed, frames.len(), "{:?} permitted by the reference, rules {:?}", f, rules);
                }
            }
            r.finish();
        }
    }
}

#[test]
fn ipv6_source_connections_count_per_64() {
    // One host may take any address of its /64: the quota is the /64's.
    let mut r = rig(
        "acl guard {\n port lan wan\n stateful\n source-connections 4\n rule permit udp6 dport 53\n default deny\n}\n",
    );
    for i in 0..10 {
        let src = std::format!("2001:db8:0:1::{:x}", 0x100 + i);
        r.send(0, &udp6(LAN_MAC, (&src, 4000), (SERVER, 53)));
        let _ = (r.sent(0), r.sent(1));
    }
    let mut s = std::string::String::new();
    r.dp.write_stats(&mut s).unwrap();
    assert!(s.contains(" connections6=4 "), "{s}");
    r.finish();
}
