//! The config language as a whole: the grammar, the framework's statements
//! and the registry's features read together.

use super::*;
use crate::lb::{CheckKind, LbConfig, LbMode};
use crate::nat::{ForwardConfig, NatConfig, NatFiltering};
use crate::registry::parse;
use crate::router::RouterConfig;
use std::string::ToString;

fn router_bytes(c: &Config) -> usize {
    c.stages[c.stage_by_name("router").unwrap()].config.table_bytes(c)
}

fn errs(text: &str) -> Vec<String> {
    parse(text).unwrap_err().iter().map(|e| e.display("t.conf").to_string()).collect()
}

const TWO: &str = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n";

#[test]
fn deep_nesting_is_refused_without_recursion() {
    // 20,000 levels once overflowed the stack when the tree was dropped.
    for text in ["port lan {\n".repeat(20_000), "port lan {".repeat(20_000), "a {\n".repeat(3000)] {
        let e = errs(&text);
        assert!(e.iter().any(|e| e.contains("blocks nest at most 4 deep")), "{:?}", &e[..3]);
        assert!(e.len() <= MAX_ERRORS + 1, "{}", e.len());
    }
    let ok = std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n}}\n");
    parse(&ok).unwrap();
}

#[test]
fn errors_are_capped_and_the_rest_counted() {
    let text = "a\n".repeat(131_072);
    let e = errs(&text);
    assert_eq!(e.len(), MAX_ERRORS + 1);
    assert!(e[0].starts_with("t.conf:1:1: unknown statement `a`"), "{}", e[0]);
    assert!(e[MAX_ERRORS].contains("and 130972 more error(s)"), "{}", e[MAX_ERRORS]);
    assert!(e[MAX_ERRORS].starts_with("t.conf:101:1:"), "{}", e[MAX_ERRORS]);
}

#[test]
fn columns_are_counted_in_one_pass() {
    // 131k tokens on one line: once quadratic (a column recount per token).
    let line = std::format!("port lan address 10.0.0.1/24 {}", "x ".repeat(131_072));
    let e = errs(&line);
    assert!(e[0].contains(":1:30: "), "{}", e[0]);
    // Columns count characters, not bytes.
    assert!(errs("port lan ä mtu 9999")[0].starts_with("t.conf:1:"), "ok");
    let e = errs("port lan address 10.0.0.1/24 mtu ä9");
    assert!(e[0].starts_with("t.conf:1:34: bad MTU"), "{}", e[0]);
}

#[test]
fn positions_are_not_part_of_meaning() {
    let a = parse(&std::format!(
        "{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n forward tcp 10.1.0.1:80 10.0.0.2:80\n}}\n"
    ))
    .unwrap();
    let b = parse(&std::format!("# a comment\n\n{TWO}route 192.168.0.0/16 via 10.1.0.2\nnat {{\n inside 10.0.0.0/24\n\n outside wan\n forward tcp 10.1.0.1:80 10.0.0.2:80\n}}\n")).unwrap();
    assert_eq!(a.ports, b.ports);
    assert_eq!(a.first::<NatConfig>(), b.first::<NatConfig>());
    assert_eq!(a.stages, b.stages);
    assert_ne!(a.routes, b.routes);
}

#[test]
fn nonsense_addresses_and_duplicates_are_refused() {
    let nat = |body: &str| errs(&std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n{body}}}\n"));
    for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1"] {
        let e = nat(&std::format!(" pool {bad}\n"));
        assert!(e[0].starts_with("t.conf:6:7: pool address"), "{bad}: {e:?}");
    }
    let e = nat(" pool 10.0.0.2\n");
    assert!(e[0].contains("pool address 10.0.0.2 is inside 10.0.0.0/24"), "{e:?}");
    let e = nat(" forward tcp 10.1.0.1:80 10.0.0.2:80\n forward tcp 10.1.0.1:80 10.0.0.3:80\n");
    assert!(e[0].starts_with("t.conf:7:14: forward tcp 10.1.0.1:80 is already given on line 6"), "{e:?}");
    let e = nat(" forward tcp 10.1.0.1:0 10.0.0.2:80\n");
    assert!(e[0].contains("bad endpoint `10.1.0.1:0`"), "{e:?}");
    let svc = |body: &str| errs(&std::format!("{TWO}service web {{\n{body}}}\n"));
    for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
        let e = svc(&std::format!(" vip {bad}:80\n backend 10.1.0.2:80\n"));
        assert!(e[0].contains(&std::format!("VIP {bad} ")), "{bad}: {e:?}");
    }
    let e = svc(" vip 10.1.0.9:80\n backend 10.1.0.1:80\n");
    assert!(e[0].contains("backend 10.1.0.1 is the address of port `wan`"), "{e:?}");
    let e = errs("port lan address 10.0.0.1/24\nport wan address 10.0.0.129/25\n");
    assert!(e[0].starts_with("t.conf:2:6: port `wan`: 10.0.0.128/25 overlaps 10.0.0.0/24 of port `lan`"), "{e:?}");
    let many: std::string::String =
        (0..300).map(|i| std::format!(" backend 10.1.{}.{}:80\n", i / 200, 2 + i % 200)).collect();
    let e = errs(&std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/16\nservice w {{\n vip 10.0.0.9:80\n{many}}}\nlb table-size 251\n"));
    assert!(e[0].contains("has 300 backends but the Maglev table has 251 slots"), "{e:?}");
    let e = errs("port lan address 10.0.0.1/24\nport mgmt\nmanagement mgmt\n");
    assert!(e[0].contains("management port `mgmt` has no address"), "{e:?}");
    // RFC 3021: both addresses of a /31 are hosts.
    let c = parse("port lan address 10.0.0.0/31\nport wan address 10.1.0.1/31\n").unwrap();
    assert_eq!(c.ports[0].address.unwrap().prefix_len(), 31);
}

#[test]
fn the_management_port_forwards_nothing() {
    let base =
        std::format!("{TWO}port mgmt address 10.9.0.1/24\nmanagement mgmt listen 8080 token-file t metrics open\n");
    let c = parse(&base).unwrap();
    let m = c.management.as_ref().unwrap();
    assert_eq!((m.listen, m.token_file.as_deref(), m.metrics_open), (8080, Some("t"), true));
    assert!(c.pipelines[2].is_empty());
    assert_eq!(c.ports[2].rpf, Some(Rpf::Strict));
    assert_eq!(c.ports[0].rpf, Some(Rpf::Loose));
    let e = errs(&std::format!("{base}pipeline mgmt router\n"));
    assert!(e[0].contains("`mgmt` is the management port: it forwards nothing"), "{e:?}");
    let e = errs(&std::format!("{base}route 192.168.0.0/16 via 10.9.0.2\n"));
    assert!(e[0].contains("route 192.168.0.0/16 leads into the management port"), "{e:?}");
}

#[test]
fn table_sizes_are_known_before_building() {
    let c = parse(&std::format!("{TWO}arp entries 1048576\n")).unwrap();
    assert!(c.neighbor_table_bytes() > 64 << 20, "{}", c.neighbor_table_bytes());
    let routes: std::string::String = (0..4096u32)
        .map(|i| std::format!("route 172.{}.{}.{}/32 via 10.1.0.2\n", 16 + i / 65536, (i >> 8) & 255, i & 255))
        .collect();
    let c = parse(&std::format!("{TWO}{routes}")).unwrap();
    // 16 /24s with /32s under one /16 (1 + 16 chunks), and the /24s of
    // the two ports (one chunk each) beside the top level.
    assert_eq!(router_bytes(&c), ((1 << 16) + 19 * 256) * 4 + 4096 * 16 + crate::router::lpm6::Lpm6::memory_for(0));
    let mut lpm = crate::router::lpm::Lpm::new();
    for (i, r) in c.routes.iter().enumerate() {
        lpm.insert(r.prefix, i as u32);
    }
    for p in &c.ports {
        lpm.insert(p.address.unwrap().trunc(), 0);
    }
    assert_eq!(
        lpm.memory(),
        crate::router::lpm::Lpm::memory_for(
            c.routes.iter().map(|r| &r.prefix).chain(c.ports.iter().map(|p| p.address.as_ref().unwrap()))
        )
    );
}

#[test]
fn a_huge_maglev_size_is_refused_before_any_primality_test() {
    // From the config fuzzer: this once spent minutes in trial division.
    let e = errs(&std::format!("{TWO}lb table-size 6553333333333333333\n"));
    assert!(e[0].contains("bad table-size `6553333333333333333`"), "{e:?}");
    assert!(errs(&std::format!("{TWO}lb table-size 18446744073709551557\n"))[0].contains("bad table-size"));
}

#[test]
fn durations_take_sub_second_values() {
    for (t, us) in [
        ("2", 2_000_000),
        ("0.5", 500_000),
        ("500ms", 500_000),
        ("2s", 2_000_000),
        ("1.25s", 1_250_000),
        ("10ms", 10_000),
        (".5", 500_000),
    ] {
        assert_eq!(parse_duration(t), Some(us), "{t}");
    }
    for t in ["", "s", "ms", "-1", "1.2.3", "5m", "1e3", "99999999999", "0.0000001"] {
        assert_eq!(parse_duration(t), None, "{t}");
    }
    let c = parse(&std::format!("{TWO}service w {{\n vip 10.1.0.9:80\n backend 10.1.0.2:80 weight 0\n backend 10.1.0.3:80\n interval 500ms\n timeout 0.2\n}}\nlb tcp-established-timeout 600 udp-timeout 30\n")).unwrap();
    let s = &c.first::<LbConfig>().unwrap().services[0];
    assert_eq!((s.interval, s.timeout, s.backends[0].weight), (500_000, 200_000, 0));
    assert_eq!(
        {
            let lb = c.first::<LbConfig>().unwrap();
            (lb.tcp_established_timeout, lb.udp_timeout, lb.tcp_transitory_timeout)
        },
        (600, 30, 240)
    );
    let e = errs(&std::format!("{TWO}service w {{\n vip 10.1.0.9:80\n backend 10.1.0.2:80\n interval 5ms\n}}\n"));
    assert!(e[0].contains("bad interval `5ms`"), "{e:?}");
}

#[test]
fn more_sessions_than_ports_is_a_warning() {
    let c = parse(&std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n}}\n")).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].1.contains("sessions 65536 exceed the 64512 outside ports"), "{w:?}");
}

#[test]
fn one_line_and_block_forms_agree() {
    let a = parse("port lan address 10.0.0.1/24 mac 52:54:00:00:00:01 mtu 1400\n").unwrap();
    let b = parse("# lan side\nport lan {\n  address 10.0.0.1/24\n  mac 52:54:00:00:00:01 # fixed\n  mtu 1400\n}\n")
        .unwrap();
    assert_eq!(a.ports[0].address, b.ports[0].address);
    assert_eq!(a.ports[0].mac, b.ports[0].mac);
    assert_eq!(a.ports[0].mtu, 1400);
    assert_eq!(b.ports[0].mtu, 1400);
    assert_eq!(a.ports[0].ip(), Some(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn semicolons_separate_statements_on_one_line() {
    let c = parse("port a address 10.0.0.1/24; port b address 10.1.0.1/24").unwrap();
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.ports[1].name, "b");
}

#[test]
fn errors_carry_line_and_column() {
    assert_eq!(
        errs("port lan address 10.0.0.1/24\nport wan address 10.0.300.1/24\n"),
        ["t.conf:2:18: bad address `10.0.300.1/24`: expected A.B.C.D/LEN such as 10.0.0.1/24"]
    );
    assert_eq!(
        errs("port lan {\n    mtu 9000\n}\n"),
        ["t.conf:2:9: bad MTU `9000`: expected a number from 68 to 1500"]
    );
}

#[test]
fn every_error_is_reported() {
    let e = errs("bogus 1\nport lan mac zz:00:00:00:00:00 colour blue\nport lan address 10.0.0.1/24\n}\n");
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("t.conf:1:1: unknown statement `bogus`"));
    assert!(e[1].starts_with("t.conf:2:14: bad MAC"));
    assert!(e[2].starts_with("t.conf:2:32: unknown port setting `colour`"));
    assert!(e[3].starts_with("t.conf:4:1: `}` without an open block"));
}

#[test]
fn duplicates_are_refused() {
    let e = errs(
        "port a address 10.0.0.1/24 mac 02:00:00:00:00:01\nport a address 10.1.0.1/24\nport b mac 02:00:00:00:00:01\n",
    );
    assert!(e[0].contains("port `a` is defined twice"), "{e:?}");
    assert!(e[1].contains("same MAC as port `a` (line 1)"), "{e:?}");
    let e = errs("port a address 10.0.0.1/24 address 10.0.0.2/24");
    assert!(e[0].contains("`address` is given twice"), "{e:?}");
}

#[test]
fn unclosed_block_and_missing_values() {
    let e = errs("port lan {\n  address\n");
    assert!(e[0].starts_with("t.conf:1:10: block of `port` is never closed"), "{e:?}");
    assert!(e[1].starts_with("t.conf:2:3: `address` needs a value"), "{e:?}");
}

#[test]
fn network_broadcast_multicast_refused() {
    assert!(errs("port a address 10.0.0.0/24")[0].contains("network or broadcast"));
    assert!(errs("port a address 10.0.0.255/24")[0].contains("network or broadcast"));
    assert!(errs("port a address 10.0.0.1/24 mac 01:00:5e:00:00:01")[0].contains("multicast MAC"));
    assert!(parse("port a address 10.0.0.7/32").is_ok());
}

#[test]
fn too_many_and_no_ports() {
    let mut text = String::new();
    for i in 0..9 {
        text += &std::format!("port p{i} address 10.{i}.0.1/24\n");
    }
    assert!(errs(&text)[0].starts_with("t.conf:9:1: too many NIC ports"), "{:?}", errs(&text));
    let mut text = String::from("port t address 10.0.0.1/24\n");
    for i in 1..33 {
        text += &std::format!("port p{i} on t vlan {i} address 10.{i}.0.1/24\n");
    }
    assert!(errs(&text)[0].starts_with("t.conf:33:1: too many ports"), "{:?}", errs(&text));
    assert!(errs("# nothing\n")[0].contains("no ports"));
}

#[test]
fn routes_router_and_pipelines() {
    let c = parse(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n\
         route 0.0.0.0/0 via 10.1.0.254\nroute 192.168.0.0/16 port lan\n\
         router icmp-rate 5\narp entries 64\npipeline wan: router\npipeline lan\n",
    )
    .unwrap();
    assert_eq!(
        c.routes[0],
        RouteConfig {
            vrf: 0,
            prefix: "0.0.0.0/0".parse().unwrap(),
            port: 1,
            via: Some(Ipv4Addr::new(10, 1, 0, 254)),
            line: Line(3)
        }
    );
    assert_eq!(c.routes[1].port, 0);
    assert_eq!(c.routes[1].via, None);
    assert_eq!(c.first::<RouterConfig>().unwrap().icmp_rate, 5);
    assert_eq!(c.arp.entries, 64);
    assert_eq!(c.first::<RouterConfig>().unwrap().icmp_burst, RouterConfig::default().icmp_burst);
    assert_eq!((c.pipeline_names(0), c.pipeline_names(1)), (std::vec![], std::vec!["router"]));
    // Without pipeline statements every port routes.
    let c = parse("port a address 10.0.0.1/24").unwrap();
    assert_eq!(c.pipeline_names(0), ["router"]);
}

#[test]
fn route_errors() {
    let base = "port lan address 10.0.0.1/24\n";
    let e = errs(&std::format!("{base}route 10.9.0.0/16 via 10.9.0.1\n"));
    assert_eq!(
        e,
        ["t.conf:2:23: next hop 10.9.0.1 is not on the subnet of any port: give a port an address on its link"]
    );
    let e = errs(&std::format!("{base}route 10.9.0.1/16 via 10.0.0.9\n"));
    assert!(e[0].contains("has host bits set: did you mean 10.9.0.0/16?"), "{e:?}");
    let e = errs(&std::format!("{base}route 10.9.0.0/16 port wan\nroute 10.8.0.0/16\n"));
    assert!(e[0].contains("no port named `wan`"), "{e:?}");
    assert!(e[1].starts_with("t.conf:3:1: incomplete route"), "{e:?}");
    let e = errs(&std::format!("{base}route 0.0.0.0/0 via 10.0.0.9\nroute 0.0.0.0/0 via 10.0.0.8\n"));
    assert!(e[0].contains("already given on line 2"), "{e:?}");
    let e = errs(&std::format!("{base}pipeline lan firewall\npipeline wan router\nrouter icmp-rate lots\n"));
    assert!(e[0].contains("no stage named `firewall`: this config defines router"), "{e:?}");
    assert!(e[1].contains("no port named `wan`"), "{e:?}");
    assert!(e[2].contains("bad icmp-rate `lots`"), "{e:?}");
}

#[test]
fn nat_block() {
    let c = parse(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {\n  inside 10.0.0.0/24\n  outside wan\n  \
         filtering endpoint-independent\n  sessions 64\n  udp-timeout 30\n  forward tcp 10.1.0.1:8080 10.0.0.2:80\n}\n",
    )
    .unwrap();
    let nat = c.first::<NatConfig>().unwrap();
    assert_eq!(nat.outside, 1);
    assert_eq!(nat.pool, [Ipv4Addr::new(10, 1, 0, 1)], "defaults to the outside address");
    assert_eq!(nat.sessions, 64);
    assert_eq!(nat.udp_timeout, 30);
    assert_eq!(nat.tcp_established_timeout, 7440);
    assert_eq!(nat.filtering, NatFiltering::EndpointIndependent);
    assert_eq!(
        nat.forwards[0],
        ForwardConfig {
            proto: 6,
            outside: (Ipv4Addr::new(10, 1, 0, 1), 8080),
            inside: (Ipv4Addr::new(10, 0, 0, 2), 80),
            line: Line(9)
        }
    );
    assert_eq!((c.pipeline_names(0), c.pipeline_names(1)), (std::vec!["router", "nat"], std::vec!["nat", "router"]));
    let e = errs(
        "port lan address 10.0.0.1/24\nnat {\n  inside 10.0.0.0/24\n  outside wan\n  ports 9-2\n}\npipeline lan nat\n",
    );
    assert!(e[0].contains("no port named `wan`"), "{e:?}");
    assert!(e[1].contains("bad port range `9-2`"), "{e:?}");
    let e = errs("port lan address 10.0.0.1/24\npipeline lan router nat\n");
    assert!(e[0].contains("no stage named `nat`"), "{e:?}");
}

#[test]
fn services() {
    let c = parse(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
         service web {\n vip 10.1.0.1:80\n backend 10.2.0.11:8000 weight 2\n backend 10.2.0.12:8000\n check http /healthz\n mode dnat\n fall 3\n}\n\
         lb table-size 251\n",
    )
    .unwrap();
    let s = &c.first::<LbConfig>().unwrap().services[0];
    assert_eq!(
        (s.vip, s.port, s.proto, s.mode),
        (core::net::IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 80, 6, LbMode::Dnat)
    );
    assert_eq!(s.backends[0].weight, 2);
    assert_eq!(s.backends[1].via_port, 1);
    assert_eq!(s.check, CheckKind::Http("/healthz".into()));
    assert_eq!((s.interval, s.timeout, s.rise, s.fall), (2_000_000, 1_000_000, 2, 3));
    assert_eq!(c.first::<LbConfig>().unwrap().table_size, 251);
    assert_eq!(c.pipeline_names(0), ["lb", "router"]);
    let e = errs(
        "port a address 10.1.0.1/24\nservice web {\n vip 10.1.0.1:80\n backend 10.9.0.1:80\n}\nlb table-size 1000\n",
    );
    assert!(e[0].contains("backend 10.9.0.1 is on no port's subnet"), "{e:?}");
    assert!(e[1].contains("bad table-size `1000`"), "{e:?}");
}

#[test]
fn mac_parse_and_format() {
    let m = parse_mac("52:54:00:AB:cd:0f").unwrap();
    assert_eq!(fmt_mac(&m).to_string(), "52:54:00:ab:cd:0f");
    assert!(parse_mac("52:54:00:ab:cd").is_none());
    assert!(parse_mac("52:54:00:ab:cd:0f:11").is_none());
    assert!(parse_mac("5:54:00:ab:cd:0f").is_none());
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC*") {
        let _ = parse(&s);
    }

    #[test]
    fn arbitrary_config_like_text_never_panics(lines in proptest::collection::vec(
        "(port|route|via|router|pipeline|icmp-rate|mtu|mac|address|\\{|\\}|;|#|lan|10\\.0\\.0\\.1/24|0\\.0\\.0\\.0/0|1500| |\t){0,8}", 0..10)) {
        let _ = parse(&lines.join("\n"));
    }
}

#[test]
fn image_options() {
    assert!(parse(TWO).unwrap().options.offloads);
    assert!(!parse(&std::format!("{TWO}options offloads off\n")).unwrap().options.offloads);
    let e = errs(&std::format!("{TWO}options offloads maybe\noptions speed 9\n"));
    assert!(e[0].contains("expected `offloads on` or `offloads off`"), "{e:?}");
    assert!(e[1].contains("`options` is already given on line 3"), "{e:?}");
}

#[test]
fn nic_statements_set_up_vfs_and_macs() {
    let c = parse(&std::format!(
        "{TWO}nic 0000:00:08.0 vfs 2\nnic 00:18.0 mac 02:00:00:00:00:01\nnic 0000:01:00.0 vfs 7 mailbox off\n"
    ))
    .unwrap();
    assert_eq!(c.nics.len(), 3);
    assert_eq!(
        (c.nics[0].pci, c.nics[0].vfs, c.nics[0].mailbox),
        (PciAddr { bus: 0, device: 8, function: 0 }, 2, true)
    );
    assert_eq!(c.nics[1].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!((c.nics[2].pci.bus, c.nics[2].vfs, c.nics[2].mailbox), (1, 7, false));
    assert_eq!(std::format!("{}", c.nics[1].pci), "0000:00:18.0");
    let e = errs(&std::format!(
        "{TWO}nic 00:08.0 vfs 8\nnic 00:08.0 vfs 1\nnic 0001:00:08.0\nnic 00:20.0\nnic 00:09.0 mac ff:ff:ff:ff:ff:ff\nnic 00:0a.0 mailbox off\nnic 00:0b.0 speed 10\nnic\n"
    ));
    assert!(e[0].starts_with("t.conf:3:") && e[0].contains("`vfs 8`: expected 1 to 7"), "{e:?}");
    assert!(e[1].contains("nic 0000:00:08.0 is already set up on line 3"), "{e:?}");
    assert!(e[2].contains("`0001:00:08.0` is not a PCI address"), "{e:?}");
    assert!(e[3].contains("`00:20.0` is not a PCI address"), "{e:?}");
    assert!(e[4].contains("not a unicast MAC"), "{e:?}");
    assert!(e[5].contains("`mailbox off` is a setting of a PF's VFs"), "{e:?}");
    assert!(e[6].contains("unknown nic setting `speed`"), "{e:?}");
    assert!(e[7].contains("`nic` needs a PCI address"), "{e:?}");
    assert_eq!(e.len(), 8, "{e:?}");
}

#[test]
fn permanent_neighbors() {
    let c = parse(&std::format!("{TWO}neighbor 10.1.0.2 mac 02:00:00:00:00:02\n")).unwrap();
    assert_eq!(c.neighbors.len(), 1);
    assert_eq!((c.neighbors[0].port, c.neighbors[0].mac), (1, [2, 0, 0, 0, 0, 2]));
    let e = errs(&std::format!(
        "{TWO}neighbor 10.9.0.2 mac 02:00:00:00:00:02\nneighbor 10.1.0.1 mac 02:00:00:00:00:02\n\
         neighbor 10.1.0.255 mac 02:00:00:00:00:02\nneighbor 10.1.0.3 mac 01:00:5e:00:00:01\n\
         neighbor 10.1.0.4 02:00:00:00:00:02\nneighbor 10.1.0.5 mac 02:00:00:00:00:05\nneighbor 10.1.0.5 mac 02:00:00:00:00:05\n"
    ));
    assert!(e[0].contains("neighbor 10.9.0.2 is on no port's subnet"), "{e:?}");
    assert!(e[1].contains("port `wan`'s own, network or broadcast address"), "{e:?}");
    assert!(e[2].contains("own, network or broadcast"), "{e:?}");
    assert!(e[3].contains("not a unicast MAC"), "{e:?}");
    assert!(e[4].contains("expected `neighbor IP mac MAC"), "{e:?}");
    assert!(e[5].contains("neighbor 10.1.0.5 is already given on line 8"), "{e:?}");
    assert_eq!(e.len(), 6, "{e:?}");
    // A table too small for them is refused.
    let many: std::string::String =
        (0..5).map(|i| std::format!("neighbor 10.1.0.{} mac 02:00:00:00:00:0{i}\n", 10 + i)).collect();
    let e = errs(&std::format!("{TWO}arp entries 16\n{many}"));
    assert!(e[0].contains("5 permanent neighbours need `arp entries` of at least 20 (it is 16)"), "{e:?}");
}

#[test]
fn ipv6_addresses_routes_and_advertisements_are_read_and_bad_ones_refused_with_line_and_reason() {
    let c = parse(
        "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64 address fd00:1::1/64\n\
         port wan address 2001:db8:0:2::1/64\n\
         route ::/0 via 2001:db8:0:2::254\n\
         route 2001:db8:5::/48 via fe80::1 port wan\n\
         route 2001:db8:6::/48 port lan\n\
         ra lan interval 30 lifetime 0 other\n",
    )
    .unwrap();
    assert_eq!(c.ports[0].address6.len(), 2);
    assert_eq!(c.routes6.len(), 3);
    assert_eq!((c.routes6[1].port, c.routes6[1].via), (1, Some("fe80::1".parse().unwrap())));
    assert_eq!(
        c.gateways6(),
        ["2001:db8:0:2::254".parse::<core::net::Ipv6Addr>().unwrap(), "fe80::1".parse().unwrap()]
    );
    let ra = &c.ras[0];
    assert_eq!((ra.interval, ra.lifetime, ra.other, ra.managed), (30, 0, true, false));
    assert_eq!(ra.prefixes, ["2001:db8:0:1::/64".parse::<ipnet::Ipv6Net>().unwrap(), "fd00:1::/64".parse().unwrap()]);
    assert!(c.has_ipv6());
    for (text, want) in [
        ("port lan address fe80::1/64\n", "is link-local"),
        ("port lan address ff02::1/64\n", "multicast"),
        ("port lan address 2001:db8::/64\n", "subnet-router anycast"),
        ("port lan address 2001:db8::1/64 mtu 1200\n", "IPv6 needs at least 1280"),
        ("port lan address 2001:db8::1/64 address 2001:db8::2/64\n", "twice: one address per prefix"),
        ("port lan address 10.0.0.1/24 address 10.0.1.1/24\n", "one IPv4 address"),
        ("port lan address 2001:db8::1/64\nport wan address 2001:db8::2/64\n", "overlaps"),
        ("port lan address 2001:db8::1/64\nroute ::/0 via fe80::1\n", "is link-local: say which port"),
        ("port lan address 2001:db8::1/64\nroute ::/0 via 2001:db9::1\n", "not on an IPv6 prefix"),
        ("port lan address 2001:db8::1/64\nroute 2001:db8:1::1/48 port lan\n", "host bits set"),
        ("port lan address 2001:db8::1/64\nra lan interval 2\n", "seconds from 4 to 1800"),
        ("port lan address 2001:db8::1/64\nra lan interval 100 lifetime 50\n", "shorter than the interval"),
        ("port lan address 10.0.0.1/24\nra lan\n", "no IPv6 prefix to advertise"),
        ("port lan address 2001:db8::1/64\nra lan\nra lan\n", "has an `ra` already"),
    ] {
        let e = errs(text);
        assert!(e.iter().any(|m| m.contains(want)), "{text:?}: want {want:?} in {e:?}");
        assert!(e.iter().all(|m| m.starts_with("t.conf:")), "{e:?}");
    }
}

/// Every statement form the language has, valid together: the table of
/// [`every_statement_refuses_a_word_it_does_not_understand`].
const EVERY_FORM: &str = "\
port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64 mtu 1500 rpf loose
port wan address 10.1.0.1/24 mac 52:54:00:00:00:02
port mgmt {
    address 192.168.99.1/24
    mac 52:54:00:00:00:03
}
port trunk0 address 10.10.0.1/24
port under address 10.5.0.1/24
port w1 address 10.7.0.1/24
port w2 address 10.8.0.1/24
port office on trunk0 vlan 100 address 10.100.0.1/24 priority 3
port q on trunk0 vlan 10 outer-vlan 20 address 10.101.0.1/24
vrf blue
tunnel blue0 vxlan vni 5001 local 10.5.0.1 remote 10.5.0.2 address 10.50.0.1/24 vrf blue
tunnel gen0 geneve vni 7 local 10.5.0.1 remote 10.5.0.3 address 10.51.0.1/24 dstport 6081 mode tunnel
tunnel gi geneve vni 9 local 10.5.0.1 mode insertion address 10.52.0.1/24 mtu 1400
route 0.0.0.0/0 via 10.1.0.254
route 192.168.0.0/16 port lan
route 172.16.0.0/12 via 10.1.0.254 port wan
route 0.0.0.0/0 via 10.1.0.254 port wan vrf blue
route 2001:db8:99::/48 via 2001:db8:0:1::2
route 2001:db8:98::/48 via fe80::1 port lan
route 2001:db8:97::/48 port lan
neighbor 10.0.0.9 mac 52:54:00:00:00:09
neighbor 10.1.0.9 mac 52:54:00:00:00:0b port wan
neighbor 2001:db8:0:1::9 mac 52:54:00:00:00:0a
ra lan interval 600 lifetime 1800 prefix 2001:db8:0:1::/64 managed other
management mgmt listen 8080 metrics open token-file mgmt.token
arp entries 1024 timeout 300
options offloads on
nic 0000:00:08.0 vfs 2 mailbox on
wire w1 w2
router icmp-rate 100 icmp-burst 20
nat gw {
    inside 10.0.0.0/24
    outside wan
    pool 10.1.0.5
    ports 1024-65535
    filtering address-dependent
    sessions 65536
    udp-timeout 300
    tcp-established-timeout 7440
    tcp-transitory-timeout 240
    icmp-timeout 60
    host-sessions 100
    forward-sessions 100
    forward tcp 10.1.0.5:80 10.0.0.2:80
}
nat64 x64 {
    prefix 2001:db8:64::/96
    inside 2001:db8:0:1::/64
    outside wan
    pool 10.1.0.6
}
service web {
    vip 10.1.0.1:80 tcp
    mode full-nat
    snat 10.0.0.1
    backend 10.0.0.11:8000 weight 2
    backend 10.0.0.12:8000
    check http /health
    interval 2
    timeout 1
    rise 2
    fall 2
}
service dns {
    vip 10.1.0.1:53 udp
    backend 10.0.0.13:53
    check none
}
service ssh {
    vip 10.1.0.1:22
    mode dnat
    backend 10.0.0.14:22
    check tcp
}
lb table-size 65537 flows 65536 udp-timeout 300
policer up {
    port lan
    rate 10mbit
    burst 128k
    peak-rate 20mbit
    peak-burst 256k
    match src 10.0.0.0/24
    exceed remark 10
    violate drop
}
policer dn {
    port wan
    rate 1mbit
    excess-burst 64k
    match dst 10.0.0.0/24
    exceed pass
    violate remark 8
}
acl edge {
    port wan
    stateful
    connections 65536
    rule permit tcp src 10.0.0.0/24 dport 80-443
    rule deny icmp type 8 code 0
    rule reject udp
    rule permit udp dst 10.0.0.0/24 sport 1-1023
    rule permit any src 10.0.0.0/8
    default deny
}
pipeline lan up router gw
";

#[test]
fn every_statement_refuses_a_word_it_does_not_understand() {
    parse(EVERY_FORM).unwrap();
    let lines: Vec<&str> = EVERY_FORM.lines().collect();
    let mut missed = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_end_matches('{').trim_end();
        if body.trim().is_empty() || body.trim() == "}" {
            continue;
        }
        // The junk goes at the end of the statement, before a block's `{`.
        let column = body.chars().count() + 2;
        let mut text = String::new();
        for (j, l) in lines.iter().enumerate() {
            if j == i {
                text += body;
                text += " junk";
                if line.ends_with('{') {
                    text += " {";
                }
            } else {
                text += l;
            }
            text += "\n";
        }
        let want = std::format!("t.conf:{}:{column}: ", i + 1);
        match parse(&text) {
            Ok(_) => missed.push(std::format!("{}: `{}` accepted", i + 1, line.trim())),
            Err(e) => {
                let e: Vec<String> = e.iter().map(|e| e.display("t.conf").to_string()).collect();
                if !e.iter().any(|m| m.starts_with(&want) && m.contains("`junk`")) {
                    missed.push(std::format!("{}: `{}`: {e:?}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn unread_words_are_refused_at_their_column_once_per_statement() {
    let svc =
        |check: &str| std::format!("{TWO}service web {{\n  vip 10.1.0.1:80\n  backend 10.0.0.2:80\n  {check}\n}}\n");
    // `check` names what it expected itself (lb/config.rs); once, at the column.
    let e = errs(&svc("check tcp foo"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.conf:6:13: unexpected `foo`"), "{e:?}");
    let e = errs(&svc("check http /health bogus 8080"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.conf:6:22: unexpected `bogus`"), "{e:?}");
    // `;` puts statements on one line: each is judged by its own words.
    let e = errs("vrf blue junk; vrf red; port a address 10.0.0.1/24 vrf red");
    assert_eq!(e, ["t.conf:1:10: unexpected word `junk` in `vrf`: the statement is complete without it"]);
    // A line in the block of a statement that takes none.
    let e = errs(&std::format!("{TWO}route 10.9.0.0/16 via 10.1.0.2 {{\n  port wan\n}}\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.conf:4:3: unexpected `port` in the block of `route`"), "{e:?}");
    // A statement refused for another reason is not refused again for the
    // words its parser stopped before, nor are the lines of its block.
    let e = errs(&std::format!("{TWO}nic 00:20.0 vfs 2 mac 02:00:00:00:00:01\nnic 00:21.0 {{\n  vfs 2\n}}\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().all(|e| e.contains("is not a PCI address")), "{e:?}");
}

#[test]
fn a_stage_with_errors_reports_its_own_cause_not_every_pipeline_that_names_it() {
    // A typo in one backend line: that line's error, and no "no stage
    // named `lb`" for each pipeline (the stage exists; it failed to parse).
    let e = errs(&std::format!(
        "{TWO}service web {{\n  vip 10.1.0.1:80\n  backend 10.0.0.11:80 wieght 1\n}}\n\
         pipeline lan router lb\npipeline wan lb router\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.conf:5:"), "{e:?}");
    // A name that no statement could have defined is still refused.
    let e =
        errs(&std::format!("{TWO}nat {{\n  inside 10.0.0.0/24\n  outside wan\n  ports 9-2\n}}\npipeline lan nat lb\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("bad port range `9-2`"), "{e:?}");
    assert!(e[1].contains("no stage named `lb`"), "{e:?}");
}
