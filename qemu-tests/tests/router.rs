//! sluice as an IPv4 router, with real Linux hosts in namespaces on each
//! side: ping, tracepath, curl to a Python HTTP server, ICMP errors, PMTU.

use sluice_qemu_tests::*;

fn routed_lab(wan_extra: &str, extra_config: &str, dmz: bool) -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[1] = PortSpec::new("wan", "10.1.0.1/24", "10.1.0.2/24").with(wan_extra);
    if dmz {
        spec.ports.push(PortSpec::new("dmz", "10.2.0.1/24", "10.2.0.2/24"));
    }
    spec.extra_config = extra_config.into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    lab
}

fn assert_ping(lab: &Lab, from: &str, to: &str) {
    let p = lab.port(from);
    let (ok, out) = ns_run(p, &["ping", "-c", "5", "-i", "0.2", "-W", "2", to]);
    assert!(ok && out.contains(" 0% packet loss"), "ping {to} from {from}:\n{out}\n{}", lab.vm.console());
}

#[test]
fn two_subnets_ping_each_other_through_sluice() {
    let mut lab = routed_lab("", "", false);
    assert_ping(&lab, "lan", "10.1.0.2");
    assert_ping(&lab, "wan", "10.0.0.2");
    // And the appliance's far-side address answers from either side.
    assert_ping(&lab, "lan", "10.1.0.1");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("router", "forwarded") >= 20, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn tracepath_shows_sluice_as_a_hop() {
    let lab = routed_lab("", "", false);
    let lan = lab.port("lan");
    let (_, out) = ns_run(lan, &["tracepath", "-n", "-m", "5", "10.1.0.2"]);
    let hop1 = out.lines().find(|l| l.trim_start().starts_with("1:")).unwrap_or("");
    assert!(hop1.contains("10.0.0.1"), "first hop is not sluice:\n{out}");
    assert!(out.contains("10.1.0.2"), "destination not reached:\n{out}");
}

#[test]
fn curl_reaches_a_python_http_server_across_the_router() {
    let lab = routed_lab("", "", false);
    let wan = lab.port("wan");
    std::fs::create_dir_all(lab.config_path.parent().unwrap().join("www")).unwrap();
    let www = lab.config_path.parent().unwrap().join("www");
    std::fs::write(www.join("hello.txt"), "hello through sluice\n").unwrap();
    wan.ns
        .spawn(&["python3", "-m", "http.server", "8080", "--bind", "10.1.0.2", "--directory", www.to_str().unwrap()])
        .unwrap();
    let (ok, out) =
        ns_retry(lab.port("lan"), &["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8080/hello.txt"], 40);
    assert!(ok && out.contains("hello through sluice"), "curl:\n{out}\n{}", lab.vm.console());
}

#[test]
fn unrouted_prefix_gets_destination_net_unreachable() {
    let mut lab = routed_lab("", "", false);
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "1", "-W", "3", "192.0.2.1"]);
    assert!(!ok);
    assert!(out.contains("Destination Net Unreachable"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("lan", "drop_no_route"), 1, "{stats:?}");
    assert_eq!(stats.get("router", "icmp_errors"), 1, "{stats:?}");
}

#[test]
fn silent_neighbour_gets_destination_host_unreachable() {
    let mut lab = routed_lab("", "", false);
    // 10.1.0.77 is on the wan subnet but nobody answers ARP for it: sluice
    // asks three times, a second apart, then tells the sender.
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "1", "-W", "8", "10.1.0.77"]);
    assert!(!ok);
    assert!(out.contains("From 10.0.0.1") && out.contains("Destination Host Unreachable"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("lan", "drop_neighbor_unreachable"), 1, "{stats:?}");
    assert!(stats.get("egress", "arp_requests") >= 3, "{stats:?}");
}

#[test]
fn mtu_1400_egress_reports_frag_needed_and_tracepath_finds_the_pmtu() {
    let mut lab = routed_lab("mtu 1400", "", false);
    let lan = lab.port("lan");
    // Resolve the neighbour first so the big probe is not the one that waits for ARP.
    assert_ping(&lab, "lan", "10.1.0.2");
    let (ok, out) = ns_run(lan, &["ping", "-M", "do", "-s", "1472", "-c", "2", "-W", "2", "10.1.0.2"]);
    assert!(!ok, "{out}");
    assert!(out.contains("mtu = 1400") || out.contains("mtu=1400"), "no frag-needed with mtu 1400:\n{out}");
    let (_, out) = ns_run(lan, &["tracepath", "-n", "-m", "5", "10.1.0.2"]);
    assert!(out.contains("pmtu 1400"), "tracepath:\n{out}");
    // Without DF the router fragments, and the reply comes back.
    lan.ns.exec(&["ip", "route", "flush", "cache"]).unwrap();
    let (ok, out) = ns_run(lan, &["ping", "-M", "dont", "-s", "1472", "-c", "3", "-W", "2", "10.1.0.2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("egress", "fragments") >= 6, "{stats:?}");
    assert!(stats.get("lan", "drop_frag_needed") >= 1, "{stats:?}");
}

#[test]
fn static_route_through_a_next_hop_learned_by_arp() {
    let mut lab = routed_lab("", "route 172.16.0.0/24 via 10.2.0.2\n", true);
    let dmz = lab.port("dmz");
    // The next-hop namespace owns 172.16.0.1 behind it.
    dmz.ns.exec(&["ip", "addr", "add", "172.16.0.1/32", "dev", "lo"]).unwrap();
    assert_ping(&lab, "lan", "172.16.0.1");
    let (ok, out) = ns_run(lab.port("dmz"), &["ip", "neigh", "show", "10.2.0.1"]);
    assert!(ok && out.contains(&lab.port("dmz").mac), "{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("egress", "arp_requests") >= 1, "{stats:?}");
    assert!(stats.get("egress", "neighbors") >= 1, "{stats:?}");
}
