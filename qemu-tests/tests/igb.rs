//! The Intel 82576 (igb) physical-function driver on the real image: q35
//! with two `-device igb` NICs on taps (QEMU 10's 82576 model), the gateway
//! config (router + NAT), real traffic between namespaces.

use sluice_qemu_tests::*;

fn igb_lab(extra_config: &str) -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Q35Qboot).unwrap();
    for p in &mut spec.ports {
        *p = p.clone().model("igb");
    }
    spec.extra_config = extra_config.into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    lab
}

#[test]
fn a_nat_gateway_on_two_igb_ports_carries_ping_curl_and_iperf3() {
    let mut lab = igb_lab("nat {\n inside 10.0.0.0/24\n outside wan\n}\n");
    let console = lab.vm.console();
    assert!(
        console.contains("igb (82576) at pci 00:08.0") && console.contains("igb (82576) at pci 00:0b.0"),
        "{console}"
    );
    // The link comes up half a second after the driver restarts
    // auto-negotiation: the first pings may find it down.
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"], 20);
    assert!(ok && out.contains(" 0% packet loss"), "ping:\n{out}\n{}", lab.vm.console());
    let www = lab.config_path.parent().unwrap().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hi.txt"), "over igb\n").unwrap();
    let wan = lab.port("wan");
    wan.ns
        .spawn(&["python3", "-m", "http.server", "8080", "--bind", "10.1.0.2", "--directory", www.to_str().unwrap()])
        .unwrap();
    let (ok, out) = ns_retry(wan, &["sh", "-c", "ss -ltn | grep -q ':8080 '"], 120);
    assert!(ok, "no HTTP server: {out}");
    let (ok, out) = ns_run(lab.port("lan"), &["curl", "-sS", "--max-time", "10", "http://10.1.0.2:8080/hi.txt"]);
    assert!(ok && out.contains("over igb"), "curl:\n{out}");
    wan.ns.spawn(&["iperf3", "-s", "-1", "-B", "10.1.0.2"]).unwrap();
    wait_listening(wan, 5201);
    let (ok, out) = ns_run(lab.port("lan"), &["iperf3", "-c", "10.1.0.2", "-t", "3", "-J"]);
    assert!(ok, "iperf3: {out}");
    let bps = out
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    eprintln!("iperf3 TCP lan -> wan over igb: {:.1} Mbit/s", bps / 1e6);
    assert!(bps > 0.0, "{out}");
    let stats = lab.vm.stats().unwrap();
    // The device's own statistics registers agree that traffic crossed.
    assert!(stats.get("lan", "dev_rx_packets") >= stats.get("lan", "rx_packets").min(1000) / 2, "{stats:?}");
    assert!(stats.get("wan", "dev_tx_packets") > 100, "{stats:?}");
    assert_eq!(stats.get("lan", "link_up"), 1);
    assert!(stats.get("nat", "translated_out") > 100, "{stats:?}");
    assert_eq!(stats.get("lan", "rx_bad_len") + stats.get("wan", "rx_bad_len"), 0, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn one_port_on_virtio_net_one_on_igb() {
    let mut spec = LabSpec::two_ports(Machine::Q35Qboot).unwrap();
    spec.ports[1] = spec.ports[1].clone().model("igb");
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    let console = lab.vm.console();
    assert!(console.contains("virtio-net at pci") && console.contains("igb (82576) at pci"), "{console}");
    for (from, to) in [("lan", "10.1.0.2"), ("wan", "10.0.0.2")] {
        let (ok, out) = ns_retry(lab.port(from), &["ping", "-c", "3", "-i", "0.2", "-W", "2", to], 20);
        assert!(ok && out.contains(" 0% packet loss"), "ping {to} from {from}:\n{out}\n{}", lab.vm.console());
    }
    // Bulk TCP from the virtio side arrives as super-packets; they leave
    // the igb side whole, for the device to cut (TSO, context descriptors).
    lab.port("wan").ns.spawn(&["iperf3", "-s", "-1", "-B", "10.1.0.2"]).unwrap();
    wait_listening(lab.port("wan"), 5201);
    let (ok, out) = ns_run(lab.port("lan"), &["iperf3", "-c", "10.1.0.2", "-t", "2"]);
    assert!(ok, "iperf3: {out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("wan", "tx_large") > 0 && stats.get("egress", "large_sent") > 0, "{stats:?}");
    assert_eq!(stats.get("wan", "tx_bad_offload"), 0, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
