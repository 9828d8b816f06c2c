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
    let (va, vb) = (format!("{}v", wan.tap.name), format!("{}f", wan.tap.name));
    let far = wan.ns.veth_host(&format!("{}-far", wan.ns.name), &va, &vb, "10.9.0.2/24", false).unwrap();
    wan.ns.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", &va]).unwrap();
    wan.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
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

/// A trafgen packet: a TCP SYN from a random 198.18.0.0/16 source and port
/// to `dst:dport`, checksums filled in.
fn syn_flood_conf(dir: &std::path::Path, dst_mac: &str, src_mac: &str, dport: u16) -> std::path::PathBuf {
    let conf = dir.join("synflood.trafgen");
    let hex = |m: &str| m.split(':').map(|b| format!("0x{b}")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &conf,
        format!(
            "{{ {}, {}, 0x08, 0x00, 0x45, 0, 0, 40, drnd(2), 0x40, 0, 64, 6, csumip(14, 33), \
             198, 18, drnd(2), 10, 1, 0, 1, drnd(2), {}, {}, drnd(4), 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, \
             csumtcp(14, 34), 0, 0 }}\n",
            hex(dst_mac),
            hex(src_mac),
            dport >> 8,
            dport & 0xff
        ),
    )
    .unwrap();
    conf
}

#[test]
fn a_spoofed_syn_flood_through_a_forward_spares_established_flows_and_new_clients() {
    // Replies to the spoofed sources leave by the default route.
    let mut lab =
        nat_lab("  sessions 2048\n  forward tcp 10.1.0.1:8080 10.0.0.2:8080", "route 0.0.0.0/0 via 10.1.0.2\n");
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    serve_http(lan, "10.0.0.2", 8080, "inside");
    serve_http(wan, "10.1.0.2", 8000, "far");
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9000", "far"]).unwrap();
    curl(lan, "http://10.1.0.2:8000/");
    curl(wan, "http://10.1.0.1:8080/");
    // Established before the flood: a 12 s TCP stream and a UDP flow.
    let stream = lan.ns.command(&["curl", "-sS", "--max-time", "40", "http://10.1.0.2:8000/slow?n=60"]).output();
    let stream = std::thread::spawn(move || stream);
    let udp = lan.ns.command(&["python3", &script("udp_steady.py"), "5353", "10.1.0.2:9000", "12"]).output();
    let udp = std::thread::spawn(move || udp);
    std::thread::sleep(std::time::Duration::from_secs(1));
    // The flood: spoofed SYNs at 20k pps for 8 s at the forward.
    let src_mac =
        String::from_utf8(wan.ns.output(&["cat", &format!("/sys/class/net/{}/address", wan.tap.name)]).unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
    let conf = syn_flood_conf(&lab.config_path.parent().unwrap().to_path_buf(), &wan.mac, &src_mac, 8080);
    let flood = wan
        .ns
        .command(&[
            "trafgen",
            "-o",
            &wan.tap.name,
            "-i",
            conf.to_str().unwrap(),
            "-b",
            "20000pps",
            "-n",
            "160000",
            "-P",
            "1",
            "-C",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let flood = std::thread::spawn(move || flood);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // New legitimate clients get in during the flood, both ways.
    let out = curl(wan, "http://10.1.0.1:8080/");
    assert!(out.starts_with("inside saw 10.1.0.2:"), "{out}");
    let out = curl(lan, "http://10.1.0.2:8000/");
    assert!(out.starts_with("far saw 10.1.0.1:"), "{out}");
    assert!(flood.join().unwrap().unwrap().success(), "trafgen failed");
    let out = stream.join().unwrap().unwrap();
    assert!(out.status.success(), "the stream broke: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60, "the stream lost data");
    let udp = String::from_utf8(udp.join().unwrap().unwrap().stdout).unwrap();
    let w: Vec<u32> = udp.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert!(w.len() == 3 && w[1] * 10 >= w[0] * 9 && w[2] == 1, "the UDP flow: {udp}");
    let stats = lab.vm.stats().unwrap();
    let evicted = stats.get("nat", "evicted_transitory");
    eprintln!(
        "flood: evicted_transitory={evicted} refused_quota={} refused_table_full={} sessions={} udp: {}",
        stats.get("nat", "refused_quota"),
        stats.get("nat", "refused_table_full"),
        stats.get("nat", "sessions"),
        udp.trim()
    );
    assert!(evicted > 1000, "{stats:?}");
}

#[test]
fn an_outside_host_cannot_reach_an_inside_host_directly_unless_inbound_route() {
    // The outside host knows the inside prefix is behind sluice (a
    // neighbour's route, a guess): a plain router would route it in.
    for (setting, reaches) in [("", false), ("  inbound route", true)] {
        let mut lab = nat_lab(setting, "");
        let (lan, wan) = (lab.port("lan"), lab.port("wan"));
        wan.ns.exec(&["ip", "route", "add", "10.0.0.0/24", "via", "10.1.0.1"]).unwrap();
        lan.ns.spawn(&["python3", &script("udp_echo.py"), "10.0.0.2", "9999", "inside"]).unwrap();
        wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9999", "far"]).unwrap();
        // Inside out through the NAT works either way.
        let (ok, out) = ns_retry(lan, &["python3", &script("udp_client.py"), "40000", "10.1.0.2:9999"], 20);
        assert!(ok && out.starts_with("far saw 10.1.0.1:40000"), "{out}");
        // Unsolicited UDP from outside to the inside host's port.
        let (_, out) = ns_run(wan, &["python3", &script("udp_client.py"), "41000", "10.0.0.2:9999"]);
        let stats = lab.vm.stats().unwrap();
        let dropped = stats.get("wan", "drop_nat_inbound_unsolicited");
        if reaches {
            // It arrives; the answer leaves translated, as any packet from
            // inside does (so connections from outside need a `forward`).
            assert!(out.starts_with("inside saw 10.1.0.2:41000"), "inbound route: {out}");
            assert_eq!(dropped, 0, "{stats:?}");
        } else {
            assert!(out.starts_with("no answer"), "an unsolicited datagram reached the inside: {out}");
            assert!(dropped >= 3, "{stats:?}");
            // The appliance's own inside address still answers ping.
            let (ok, out) = ns_run(lab.port("wan"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"]);
            assert!(ok && out.contains(" 0% packet loss"), "{out}");
        }
        assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
    }
}
