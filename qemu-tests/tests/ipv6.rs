//! sluice as an IPv6 router, with real Linux hosts in namespaces on each
//! side: ping -6, tracepath -6 (PMTU from packet too big), curl -6 to a
//! Python server, ICMPv6 errors, SLAAC from sluice's advertisements,
//! duplicate address detection.

use sluice_qemu_tests::*;

const LAN6: &str = "2001:db8:0:1::1";
const WAN6: &str = "2001:db8:0:2::1";
const LAN_HOST: &str = "2001:db8:0:1::2";
const WAN_HOST: &str = "2001:db8:0:2::2";

/// lan and wan with IPv4 as before and an IPv6 /64 each; each host gets
/// its address (without DAD: the test knows it is unique) and a default
/// route via sluice, unless `slaac` leaves the lan host to configure
/// itself from router advertisements.
fn lab6(wan_extra: &str, extra_config: &str, slaac: bool) -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    let mut lan = PortSpec::new("lan", "10.0.0.1/24", "10.0.0.2/24").with(&format!("address {LAN6}/64"));
    if !slaac {
        lan = lan.host6(&format!("{LAN_HOST}/64"));
    }
    spec.ports[0] = lan;
    spec.ports[1] = PortSpec::new("wan", "10.1.0.1/24", "10.1.0.2/24")
        .with(&format!("address {WAN6}/64 {wan_extra}"))
        .host6(&format!("{WAN_HOST}/64"));
    spec.extra_config = extra_config.into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for (p, via) in [(lab.port("lan"), LAN6), (lab.port("wan"), WAN6)] {
        if slaac && p.name == "lan" {
            continue;
        }
        p.ns.exec(&["ip", "-6", "route", "add", "default", "via", via, "dev", &p.tap.name]).unwrap();
    }
    lab
}

fn ping6(lab: &Lab, from: &str, to: &str) {
    let (ok, out) = ns_retry(lab.port(from), &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", to], 8);
    assert!(ok && out.contains(" 0% packet loss"), "ping -6 {to} from {from}:\n{out}\n{}", lab.vm.console());
}

#[test]
fn ping6_tracepath6_and_curl6_cross_the_router_and_packet_too_big_gives_the_pmtu() {
    let mut lab = lab6("mtu 1400", "", false);
    ping6(&lab, "lan", LAN6);
    ping6(&lab, "lan", WAN_HOST);
    ping6(&lab, "wan", LAN_HOST);
    // The far-side address and the link-local one answer too.
    ping6(&lab, "lan", WAN6);
    let lan = lab.port("lan");
    let (_, out) = ns_run(lan, &["ping", "-6", "-c", "1", "-W", "2", WAN6]);
    assert!(out.contains(&format!("from {WAN6}")), "the far-side address answers from itself:\n{out}");
    let (_, out) = ns_run(lan, &["tracepath", "-6", "-n", "-m", "5", WAN_HOST]);
    let hop1 = out.lines().find(|l| l.trim_start().starts_with("1:")).unwrap_or("");
    assert!(hop1.contains(LAN6), "first hop is not sluice:\n{out}");
    assert!(out.contains(WAN_HOST), "destination not reached:\n{out}");
    assert!(out.contains("pmtu 1400"), "no packet too big with mtu 1400:\n{out}");
    // traceroute -6 (UDP probes) sees sluice, then the host.
    let (_, out) = ns_run(lan, &["traceroute", "-6", "-n", "-w", "2", "-q", "1", "-m", "4", WAN_HOST]);
    let line = |n: &str| out.lines().find(|l| l.trim_start().starts_with(n)).unwrap_or("").to_string();
    assert!(line("1 ").contains(LAN6) && line("2 ").contains(WAN_HOST), "traceroute -6:\n{out}");
    // A full-size ping cannot pass: sluice says how big a packet may be.
    let (ok, out) = ns_run(lan, &["ping", "-6", "-M", "do", "-s", "1452", "-c", "2", "-W", "2", WAN_HOST]);
    assert!(!ok, "{out}");
    let wan = lab.port("wan");
    let www = lab.config_path.parent().unwrap().join("www6");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello over IPv6\n").unwrap();
    wan.ns
        .spawn(&["python3", "-m", "http.server", "8080", "--bind", WAN_HOST, "--directory", www.to_str().unwrap()])
        .unwrap();
    let url = format!("http://[{WAN_HOST}]:8080/hello.txt");
    let (ok, out) = ns_retry(lan, &["curl", "-6", "-sS", "--max-time", "5", &url], 40);
    assert!(ok && out.contains("hello over IPv6"), "curl -6:\n{out}\n{}", lab.vm.console());
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("router", "forwarded6") >= 12, "{stats:?}");
    assert!(stats.get("lan", "drop_packet_too_big") >= 1, "{stats:?}");
    assert!(stats.get("wan", "ns_sent") >= 1 && stats.get("wan", "na_received") >= 1, "{stats:?}");
    assert!(stats.get("lan", "echo_replies") >= 6, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn icmpv6_errors_no_route_hop_limit_and_a_silent_neighbour() {
    let mut lab = lab6("", "", false);
    let lan = lab.port("lan");
    ping6(&lab, "lan", WAN_HOST);
    let (ok, out) = ns_run(lan, &["ping", "-6", "-c", "1", "-W", "3", "2001:db8:99::1"]);
    assert!(!ok && out.contains("No route"), "unrouted prefix:\n{out}");
    let (ok, out) = ns_run(lan, &["ping", "-6", "-t", "1", "-c", "1", "-W", "3", WAN_HOST]);
    assert!(!ok && out.contains(LAN6) && out.contains("Time exceeded"), "hop limit 1:\n{out}");
    // On the wan prefix, but nobody answers solicitations for it.
    let (ok, out) = ns_run(lan, &["ping", "-6", "-c", "1", "-W", "8", "2001:db8:0:2::77"]);
    assert!(!ok && out.contains("Address unreachable"), "silent neighbour:\n{out}");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("lan", "drop_no_route"), 1, "{stats:?}");
    assert_eq!(stats.get("lan", "drop_hop_limit_expired"), 1, "{stats:?}");
    assert_eq!(stats.get("lan", "drop_neighbor_unreachable"), 1, "{stats:?}");
    assert_eq!(stats.get("router", "icmp6_errors"), 3, "{stats:?}");
}

#[test]
fn a_slaac_host_configures_itself_from_sluices_advertisements_and_reaches_the_other_subnet() {
    let lab = lab6("", "ra lan interval 4\n", true);
    let lan = lab.port("lan");
    let dev = lan.tap.name.as_str();
    // Linux accepts RAs on a host interface by default; the address comes
    // from the advertised prefix, the default route from sluice's link-local.
    let mut addrs = String::new();
    for _ in 0..80 {
        addrs = ns_run(lan, &["ip", "-6", "addr", "show", "dev", dev, "scope", "global"]).1;
        if addrs.contains("2001:db8:0:1:") && !addrs.contains("tentative") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(addrs.contains("2001:db8:0:1:"), "no SLAAC address:\n{addrs}\n{}", lab.vm.console());
    let (_, routes) = ns_run(lan, &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fe80::") && routes.contains("proto ra"), "no default route from the RA:\n{routes}");
    ping6(&lab, "lan", WAN_HOST);
}

#[test]
fn an_address_another_host_holds_is_found_by_dad_and_not_used() {
    // The lan host takes sluice's address before sluice boots.
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[0] = PortSpec::new("lan", "10.0.0.1/24", "10.0.0.2/24")
        .with(&format!("address {LAN6}/64 address 2001:db8:0:3::1/64"))
        .host6(&format!("{LAN6}/64"))
        .host6("2001:db8:0:3::2/64");
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    lab.vm
        .wait_for(&format!("{LAN6} is used by another node"), std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no DAD report: {e}\n{}", lab.vm.console()));
    // The other address passed and answers.
    let lan = lab.port("lan");
    let (ok, out) = ns_retry(lan, &["ping", "-6", "-c", "1", "-W", "2", "2001:db8:0:3::1"], 20);
    assert!(ok, "{out}");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("lan", "dad_duplicates"), 1, "{stats:?}");
    assert_eq!(stats.get("lan", "addresses"), 2, "link-local and the second address: {stats:?}");
}

/// An IPv6-only inside host (lan) and an IPv4-only server (wan, 10.1.0.2)
/// through sluice's NAT64, under a network-specific prefix (RFC 8215's
/// local-use range): the well-known one carries no private address.
#[test]
fn an_ipv6_only_host_reaches_an_ipv4_server_through_nat64() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[0] =
        PortSpec::new("lan", "10.0.0.1/24", "").with(&format!("address {LAN6}/64")).host6(&format!("{LAN_HOST}/64"));
    spec.extra_config =
        "nat64 {\n prefix 64:ff9b:1::/96\n inside 2001:db8:0:1::/64\n outside wan\n}\nroute 203.0.113.0/24 via 10.1.0.2\n".into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let lan = lab.port("lan");
    lan.ns.exec(&["ip", "-6", "route", "add", "default", "via", LAN6, "dev", &lan.tap.name]).unwrap();
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8080", "v4server"]).unwrap();
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9999", "v4udp"]).unwrap();
    wait_listening(wan, 8080);
    let server = "64:ff9b:1::10.1.0.2";
    // HTTP: the IPv4 server sees the pool address.
    let (ok, out) = ns_retry(lan, &["curl", "-6", "-sS", "--max-time", "5", &format!("http://[{server}]:8080/")], 20);
    assert!(ok && out.contains("v4server saw 10.1.0.1:"), "curl through NAT64:\n{out}\n{}", lab.vm.console());
    ping6(&lab, "lan", server);
    // UDP both ways, and a closed port's ICMPv4 error back as ICMPv6 with a
    // quote Linux matches to the socket.
    let echo = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('10.1.0.2', 9997))\nwhile True:\n    d, a = s.recvfrom(65536)\n    s.sendto(d, a)\n";
    wan.ns.spawn(&["python3", "-c", echo]).unwrap();
    let (_, out) = ns_run(lan, &["python3", &script("udp6_probe.py"), server, "9999", "9998", "9997"]);
    assert!(out.contains("answer: v4udp saw 10.1.0.1:"), "UDP through NAT64:\n{out}");
    assert!(out.contains("big: ok"), "3000-byte datagrams, fragmented both ways, through NAT64:\n{out}");
    assert!(out.contains("closed: refused"), "port unreachable through NAT64:\n{out}");
    // sluice is the first hop; the IPv4 server answers beyond it.
    let (_, out) = ns_run(lan, &["tracepath", "-6", "-n", "-m", "4", server]);
    let hop1 = out.lines().find(|l| l.trim_start().starts_with("1:")).unwrap_or("");
    assert!(hop1.contains(LAN6), "first hop is not sluice:\n{out}");
    assert!(out.contains("64:ff9b:1::a01:2") && out.contains("reached"), "tracepath through NAT64:\n{out}");
    // An IPv4 network one router beyond: the wan host routes to it.
    let beyond_name = wan.ns.name.replace("-wan", "-beyond");
    let beyond = sluice::topology::Netns::create(&beyond_name).unwrap();
    for cmd in [
        &["ip", "link", "add", "vb0", "type", "veth", "peer", "name", "vb1", "netns", &beyond_name][..],
        &["ip", "addr", "add", "203.0.113.1/24", "dev", "vb0"],
        &["ip", "link", "set", "vb0", "up"],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ] {
        wan.ns.exec(cmd).unwrap();
    }
    for cmd in [
        &["ip", "addr", "add", "203.0.113.11/24", "dev", "vb1"][..],
        &["ip", "link", "set", "vb1", "up"],
        &["ip", "route", "add", "default", "via", "203.0.113.1"],
    ] {
        beyond.exec(cmd).unwrap();
    }
    beyond.spawn(&["python3", &script("whoami_http.py"), "203.0.113.11", "80", "beyond"]).unwrap();
    let (ok, out) = ns_retry(lan, &["curl", "-6", "-sS", "--max-time", "5", "http://[64:ff9b:1::203.0.113.11]/"], 40);
    assert!(ok && out.contains("beyond saw 10.1.0.1:"), "curl to the network beyond:\n{out}");
    let (_, out) = ns_run(lan, &["tracepath", "-6", "-n", "-m", "5", "64:ff9b:1::203.0.113.11"]);
    let hop = |n: &str| out.lines().find(|l| l.trim_start().starts_with(n)).unwrap_or("").to_string();
    assert!(hop("1:").contains(LAN6), "first hop is not sluice:\n{out}");
    assert!(hop("2:").contains("64:ff9b:1::a01:2"), "the IPv4 router beyond sluice is hop 2:\n{out}");
    assert!(out.contains("reached"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("nat64", "to_ipv4") >= 10 && stats.get("nat64", "to_ipv6") >= 9, "{stats:?}");
    assert!(stats.get("nat64", "icmp_errors") >= 1, "{stats:?}");
    assert!(stats.get("nat64", "fragments") >= 4, "{stats:?}");
    assert!(stats.get("nat64", "sessions") >= 3, "{stats:?}");
}

/// Under the well-known prefix (the default) only global IPv4 addresses
/// are translated (RFC 6052 §3.1): a ping from an inside host to
/// 64:ff9b::10.1.0.2 (a private address whose host answers pings) is
/// dropped and counted; and IPv6 to the prefix from the outside port is
/// never translated, whatever its source.
#[test]
fn nat64_under_the_well_known_prefix_reaches_no_private_ipv4_and_serves_only_its_inside() {
    let mut lab = lab6("", "nat64 {\n inside 2001:db8:0:1::/64\n outside wan\n}\n", false);
    let ping = ["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", "64:ff9b::10.1.0.2"];
    let (ok, out) = ns_run(lab.port("lan"), &ping);
    assert!(!ok && out.contains("100% packet loss"), "ping -6 64:ff9b::10.1.0.2 from inside:\n{out}");
    let (ok, out) = ns_run(lab.port("wan"), &ping);
    assert!(!ok && out.contains("100% packet loss"), "ping -6 64:ff9b::10.1.0.2 from outside:\n{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("lan", "drop_nat64_non_global") >= 2, "{stats:?}");
    assert!(stats.get("wan", "drop_nat64_not_inside") >= 2, "{stats:?}");
    assert_eq!(stats.get("nat64", "sessions"), 0, "{stats:?}");
}

#[test]
fn the_management_endpoint_answers_over_ipv6_and_closed_ports_refuse() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[0] = PortSpec::new("lan", "10.0.0.1/24", "10.0.0.2/24")
        .with(&format!("address {LAN6}/64"))
        .host6(&format!("{LAN_HOST}/64"));
    spec.ports.push(
        PortSpec::new("mgmt", "10.9.0.1/24", "10.9.0.2/24").with("address 2001:db8:9::1/64").host6("2001:db8:9::2/64"),
    );
    spec.extra_config = "management mgmt listen 8080\n".into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let mgmt = lab.port("mgmt");
    let (ok, out) = ns_retry(mgmt, &["curl", "-6", "-sS", "--max-time", "5", "http://[2001:db8:9::1]:8080/health"], 20);
    assert!(ok && out.contains("ok"), "GET /health over IPv6:\n{out}\n{}", lab.vm.console());
    let (ok, out) = ns_run(mgmt, &["curl", "-6", "-sS", "--max-time", "5", "http://[2001:db8:9::1]:8080/metrics"]);
    assert!(ok && out.contains("sluice_nd_ns_received"), "GET /metrics over IPv6:\n{out}");
    // TCP to a port nothing listens on, over IPv6: refused (a reset), not silence.
    let probe = format!(
        "import socket\ntry:\n    socket.create_connection(('{LAN6}', 81), timeout=5)\n    print('open')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept OSError as e:\n    print('other', e)\n"
    );
    let (_, out) = ns_run(lab.port("lan"), &["python3", "-c", &probe]);
    assert_eq!(out.trim(), "refused", "closed port over IPv6");
}

/// Who answered each of `n` new connections to `url` (the `NAME` of
/// whoami_http), counted.
fn spread(lab: &Lab, url: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let (ok, out) = ns_retry(lab.port("lan"), &["curl", "-6", "-sS", "--max-time", "3", url], 8);
        assert!(ok, "curl {url}:\n{out}\n{}", lab.vm.console());
        let name = out.split_whitespace().next().unwrap_or("").to_string();
        assert!(out.contains("saw 2001:db8:0:2::1:"), "full-NAT: the backend sees sluice's dmz address:\n{out}");
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

#[test]
fn an_ipv6_vip_spreads_over_three_ipv6_backends_by_weight_and_health_checks_fail_over() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[0] = PortSpec::new("lan", "10.0.0.1/24", "10.0.0.2/24")
        .with(&format!("address {LAN6}/64"))
        .host6(&format!("{LAN_HOST}/64"));
    spec.ports[1] = PortSpec::new("dmz", "10.2.0.1/24", "10.2.0.2/24")
        .with("address 2001:db8:0:2::1/64")
        .host6("2001:db8:0:2::11/64")
        .host6("2001:db8:0:2::12/64")
        .host6("2001:db8:0:2::13/64");
    spec.extra_config = "service web6 {\n vip [2001:db8:0:1::80]:80\n check tcp\n interval 500ms\n timeout 400ms\n rise 1\n fall 2\n\
                         backend [2001:db8:0:2::11]:8000\n backend [2001:db8:0:2::12]:8000 weight 2\n backend [2001:db8:0:2::13]:8000\n}\n"
        .into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    lab.port("lan")
        .ns
        .exec(&["ip", "-6", "route", "add", "default", "via", LAN6, "dev", &lab.port("lan").tap.name])
        .unwrap();
    let dmz = lab.port("dmz");
    let mut pids = Vec::new();
    for (i, b) in ["2001:db8:0:2::11", "2001:db8:0:2::12", "2001:db8:0:2::13"].iter().enumerate() {
        pids.push(
            dmz.ns.spawn(&["python3", &script("whoami_http.py"), b, "8000", &format!("backend{}", i + 1)]).unwrap(),
        );
    }
    wait_listening(dmz, 8000);
    // Every backend up by its checks (over IPv6, from sluice's own stack).
    let up = |lab: &mut Lab, b: &str| lab.vm.stats().unwrap().get(&format!("web6/[{b}]:8000"), "healthy");
    for _ in 0..40 {
        if ["2001:db8:0:2::11", "2001:db8:0:2::12", "2001:db8:0:2::13"].iter().all(|b| up(&mut lab, b) == 1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let url = "http://[2001:db8:0:1::80]:80/";
    // 100 flows: weights 1:2:1 over 40 put backend 2 behind another about one run in twenty.
    let seen = spread(&lab, url, 100);
    let n = |s: &std::collections::BTreeMap<String, usize>, k: &str| s.get(k).copied().unwrap_or(0);
    assert!(n(&seen, "backend1") > 0 && n(&seen, "backend3") > 0, "every backend gets flows: {seen:?}");
    assert!(
        n(&seen, "backend2") > n(&seen, "backend1") && n(&seen, "backend2") > n(&seen, "backend3"),
        "weight 2 gets the most: {seen:?}"
    );
    // backend3 stops: its checks fail and it leaves the table.
    let _ = std::process::Command::new("kill").arg(pids[2].to_string()).status();
    let mut down = false;
    for _ in 0..40 {
        if up(&mut lab, "2001:db8:0:2::13") == 0 {
            down = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(down, "backend3 never marked down: {}", lab.vm.console());
    let seen = spread(&lab, url, 20);
    assert_eq!(n(&seen, "backend3"), 0, "no flows to the failed backend: {seen:?}");
    assert_eq!(n(&seen, "backend1") + n(&seen, "backend2"), 20, "{seen:?}");
}
