//! sluice as a NAT gateway between a lan namespace (inside, 10.0.0.0/24)
//! and a wan namespace (outside, 10.1.0.0/24), with real Linux clients and
//! servers: curl, UDP, ping, tracepath, a port forward and hairpinning.

use sluice_qemu_tests::*;

/// lan (inside) + wan (outside) with `nat { ... }` settings appended.
fn nat_lab(nat: &str, extra: &str) -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = format!("nat {{\n  inside 10.0.0.0/24\n  outside wan\n{nat}\n}}\n{extra}");
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    // Inside hosts route through sluice; outside hosts know nothing of 10.0.0.0/24.
    route_via_appliance(lab.port("lan"));
    lab
}

fn serve_http(port: &sluice::lab::LabPort, bind: &str, tcp_port: u16, name: &str) {
    port.ns.spawn(&["python3", &script("whoami_http.py"), bind, &tcp_port.to_string(), name]).unwrap();
}

fn curl(port: &sluice::lab::LabPort, url: &str) -> String {
    let (ok, out) = ns_retry(port, &["curl", "-sS", "--max-time", "5", url], 40);
    assert!(ok, "curl {url} from {}:\n{out}", port.ns.name);
    out
}

#[test]
fn outside_server_sees_the_nat_address() {
    let mut lab = nat_lab("", "");
    let wan = lab.port("wan");
    serve_http(wan, "10.1.0.2", 8000, "server");
    let out = curl(lab.port("lan"), "http://10.1.0.2:8000/");
    assert!(out.starts_with("server saw 10.1.0.1:"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("nat", "translated_out") >= 3, "{stats:?}");
    assert!(stats.get("nat", "translated_in") >= 3, "{stats:?}");
}

#[test]
fn udp_ping_and_endpoint_independent_mapping() {
    let lab = nat_lab("", "");
    let wan = lab.port("wan");
    wan.ns.exec(&["ip", "addr", "add", "10.1.0.3/24", "dev", &wan.tap.name]).unwrap();
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9999", "s1"]).unwrap();
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.3", "9999", "s2"]).unwrap();
    let lan = lab.port("lan");
    let (ok, out) =
        ns_retry(lan, &["python3", &script("udp_client.py"), "40000", "10.1.0.2:9999", "10.1.0.3:9999"], 20);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    // Same inside endpoint, two servers: one outside endpoint (EIM), port preserved.
    assert_eq!(lines[0], "s1 saw 10.1.0.1:40000", "{out}");
    assert_eq!(lines[1], "s2 saw 10.1.0.1:40000", "{out}");
    let (ok, out) = ns_run(lan, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{out}");
}

#[test]
fn tracepath_from_inside_shows_the_hops_beyond_the_nat() {
    // wan host 10.1.0.2 routes on to a far namespace 10.9.0.0/24.
    let lab = nat_lab("", "route 10.9.0.0/24 via 10.1.0.2\n");
    let wan = lab.port("wan");
    let far = sluice::topology::Netns::create(&format!("{}-far", wan.ns.name)).unwrap();
    let (va, vb) = (format!("{}v", wan.tap.name), format!("{}f", wan.tap.name));
    sluice::topology::run(&[
        "ip",
        "link",
        "add",
        &va,
        "netns",
        &wan.ns.name,
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        &far.name,
    ])
    .unwrap();
    wan.ns.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", &va]).unwrap();
    wan.ns.exec(&["ip", "link", "set", &va, "up"]).unwrap();
    wan.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    far.exec(&["ip", "addr", "add", "10.9.0.2/24", "dev", &vb]).unwrap();
    far.exec(&["ip", "link", "set", &vb, "up"]).unwrap();
    far.exec(&["ip", "route", "add", "default", "via", "10.9.0.1"]).unwrap();
    let (_, out) = ns_run(lab.port("lan"), &["tracepath", "-n", "-m", "6", "10.9.0.2"]);
    let hop = |n: &str| out.lines().find(|l| l.trim_start().starts_with(n)).unwrap_or("").to_string();
    assert!(hop("1:").contains("10.0.0.1"), "hop 1 is sluice:\n{out}");
    assert!(hop("2:").contains("10.1.0.2"), "hop 2 is the outside router, its error translated back:\n{out}");
    assert!(out.contains("10.9.0.2"), "destination reached:\n{out}");
    drop(far);
}

#[test]
fn port_forward_and_hairpin_reach_the_inside_server() {
    let mut lab = nat_lab("  forward tcp 10.1.0.1:8080 10.0.0.3:80", "");
    let lan = lab.port("lan");
    lan.ns.exec(&["ip", "addr", "add", "10.0.0.3/24", "dev", &lan.tap.name]).unwrap();
    serve_http(lan, "10.0.0.3", 80, "inside-server");
    // From outside, through the forward: the server sees the real client.
    let out = curl(lab.port("wan"), "http://10.1.0.1:8080/");
    assert!(out.starts_with("inside-server saw 10.1.0.2:"), "{out}");
    // From inside host 10.0.0.2 via the outside address: hairpinned, and the
    // server sees the client's outside mapping, as any outside host would.
    let (ok, out) =
        ns_retry(lan, &["curl", "-sS", "--max-time", "5", "--interface", "10.0.0.2", "http://10.1.0.1:8080/"], 20);
    assert!(ok, "{out}\n{}", lab.vm.console());
    assert!(out.starts_with("inside-server saw 10.1.0.1:"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("nat", "hairpinned") >= 3, "{stats:?}");
}

#[test]
fn full_session_table_keeps_old_sessions_and_counts_refusals() {
    let mut lab = nat_lab("  sessions 64", "");
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9999", "s1"]).unwrap();
    // Make sure the server is up before the flood.
    let (ok, out) = ns_retry(lab.port("lan"), &["python3", &script("udp_client.py"), "30000", "10.1.0.2:9999"], 20);
    assert!(ok && out.contains("s1 saw"), "{out}");
    let (ok, out) =
        ns_run(lab.port("lan"), &["python3", &script("udp_client.py"), "--flows", "200", "30000", "10.1.0.2:9999"]);
    assert!(ok, "{out}");
    assert!(out.contains("first: s1 saw 10.1.0.1:30000"), "the first session survives: {out}");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("nat", "sessions"), 64, "{stats:?}");
    assert!(stats.get("lan", "drop_nat_table_full") >= 136, "{stats:?}");
    assert!(stats.get("nat", "refused_table_full") >= 136, "{stats:?}");
}
