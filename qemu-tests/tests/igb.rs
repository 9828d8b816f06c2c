//! The Intel 82576 (igb) drivers on the real image, on QEMU 10's 82576
//! model: q35 with two `-device igb` PFs on taps carrying the gateway
//! config (router + NAT); one PF whose two SR-IOV VFs sluice enables and
//! drives (the data ports are the VFs, the hosts share the PF's wire); a
//! VF beside virtio-net; a VF whose PF never answers. Real traffic between
//! namespaces.

use std::path::PathBuf;

use sluice::lab::BOOT_TIMEOUT;
use sluice::qemu::{Accel, NicSpec, VmSpec};
use sluice::topology::{unique_id, Netns, Tap};
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

/// One igb PF on a tap in a bridge namespace, with hosts `lan`
/// (10.0.0.2/24) and `wan` (10.1.0.2/24) on that bridge: both reach the
/// appliance through the same wire, each talking to "its" VF's MAC.
struct VfLab {
    vm: Vm,
    lan: Netns,
    wan: Netns,
    _switch: Netns,
    _tap: Tap,
    dir: PathBuf,
}

impl Drop for VfLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The MAC sluice's PF gives VF `i` of the PF whose MAC is lab MAC 0
/// (52:54:00:5c:00:01) when the config names none.
fn default_vf_mac(i: u8) -> String {
    format!("02:54:00:5c:80:{:02x}", 2 + i)
}

fn vf_lab(config: &str, virtio_too: bool) -> Result<VfLab, String> {
    let id = unique_id();
    let dir = std::env::temp_dir().join(format!("sluice-vf-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("vf.conf");
    std::fs::write(&conf, config).unwrap();
    let mut tap = Tap::create(&format!("st{id}pf")).unwrap();
    let mut vtap = virtio_too.then(|| Tap::create(&format!("st{id}v")).unwrap());
    let mut spec = VmSpec::new(sluice::image_path(), Machine::Q35Qboot, Accel::from_env().unwrap());
    spec.config = Some((conf.clone(), conf.display().to_string()));
    spec.nics = vec![NicSpec { model: Some("igb".into()), ..NicSpec::new(&tap.name, &sluice::lab::mac(0)) }];
    if let Some(v) = &vtap {
        spec.nics.push(NicSpec::new(&v.name, "52:54:00:5c:00:09"));
    }
    let vm = Vm::start_paused(&spec).map_err(|e| e.to_string())?;
    let switch = Netns::create(&format!("sluice-t{id}-sw")).unwrap();
    switch.add_bridge().unwrap();
    tap.into_bridge(&switch).unwrap();
    let lan = switch
        .veth_host(&format!("sluice-t{id}-lan"), &format!("st{id}a"), &format!("st{id}b"), "10.0.0.2/24", true)
        .unwrap();
    let wan = match &mut vtap {
        // The wan host on the virtio NIC's own tap.
        Some(v) => {
            let ns = Netns::create(&format!("sluice-t{id}-wan")).unwrap();
            v.move_to(&ns, "10.1.0.2/24").unwrap();
            ns
        }
        None => switch
            .veth_host(&format!("sluice-t{id}-wan"), &format!("st{id}c"), &format!("st{id}d"), "10.1.0.2/24", true)
            .unwrap(),
    };
    lan.exec(&["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    wan.exec(&["ip", "route", "add", "default", "via", "10.1.0.1"]).unwrap();
    // The virtio tap belongs to the wan namespace now; it is removed with it.
    std::mem::forget(vtap);
    let lab = VfLab { vm, lan, wan, _switch: switch, _tap: tap, dir };
    lab.vm.resume().map_err(|e| e.to_string())?;
    Ok(lab)
}

#[test]
fn two_vfs_enabled_by_sluice_route_and_nat_between_hosts_on_the_pfs_wire() {
    let config = format!(
        "nic 0000:00:08.0 vfs 2\nnic 0000:00:18.2 mac 02:00:00:00:a0:02\n\
         port lan mac {} address 10.0.0.1/24\nport wan mac 02:00:00:00:a0:02 address 10.1.0.1/24\n\
         nat {{\n inside 10.0.0.0/24\n outside wan\n}}\n",
        default_vf_mac(0)
    );
    let mut lab = vf_lab(&config, false).unwrap();
    let ready = lab.vm.wait_for("sluice ready", BOOT_TIMEOUT);
    let console = lab.vm.console();
    assert!(ready.is_ok(), "{console}");
    assert!(console.contains("igb (82576) at pci 00:08.0") && console.contains("2 VFs"), "{console}");
    assert!(
        console.contains("igbvf (82576 VF) at pci 00:18.0 (VF of pci 00:08.0), mac 02:54:00:5c:80:02"),
        "{console}"
    );
    assert!(
        console.contains("igbvf (82576 VF) at pci 00:18.2 (VF of pci 00:08.0), mac 02:00:00:00:a0:02"),
        "{console}"
    );
    let (ok, out) = netns_retry(&lab.lan, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"], 20);
    assert!(ok && out.contains(" 0% packet loss"), "ping lan -> wan:\n{out}\n{}", lab.vm.console());
    // Through the NAT: the server sees the VF's address on wan.
    lab.wan.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    let (ok, out) = netns_retry(&lab.wan, &["sh", "-c", "ss -ltn | grep -q ':8000 '"], 120);
    assert!(ok, "no server: {out}");
    let (ok, out) = netns_run(&lab.lan, &["curl", "-sS", "--max-time", "10", "http://10.1.0.2:8000/"]);
    assert!(ok && out.contains("far saw 10.1.0.1:"), "curl through the NAT:\n{out}");
    lab.wan.spawn(&["iperf3", "-s", "-1", "-B", "10.1.0.2"]).unwrap();
    let (ok, out) = netns_retry(&lab.wan, &["sh", "-c", "ss -ltn | grep -q ':5201 '"], 120);
    assert!(ok, "no iperf3 server: {out}");
    let (ok, out) = netns_run(&lab.lan, &["iperf3", "-c", "10.1.0.2", "-t", "2"]);
    assert!(ok, "iperf3 over two VFs: {out}");
    eprintln!("{}", out.lines().filter(|l| l.contains("receiver")).collect::<Vec<_>>().join("\n"));
    // A frame to a MAC no pool owns reaches no VF (it goes to the PF's
    // pool, which no port took).
    let before = lab.vm.stats().unwrap();
    let lan_if = format!("st{}b", lab.lan.name.trim_start_matches("sluice-t").trim_end_matches("-lan"));
    lab.lan
        .exec(&["ip", "neigh", "add", "10.0.0.99", "lladdr", "02:00:00:00:99:99", "dev", &lan_if, "nud", "permanent"])
        .unwrap();
    let _ = netns_run(&lab.lan, &["ping", "-c", "40", "-i", "0.02", "-W", "1", "10.0.0.99"]);
    let after = lab.vm.stats().unwrap();
    for port in ["lan", "wan"] {
        let got = after.get(port, "dev_rx_packets") - before.get(port, "dev_rx_packets");
        assert!(got < 40, "{port}'s VF received {got} frames: 40 went to a MAC no pool owns\n{after:?}");
    }
    assert!(after.get("lan", "dev_rx_packets") > 100 && after.get("wan", "dev_tx_packets") > 100, "{after:?}");
    assert!(after.get("nat", "translated_out") > 10, "{after:?}");
    // The PF's mailbox service answered both VFs' reset and frame size.
    assert!(after.get("poll", "mbx_acked") >= 4 && after.get("poll", "mbx_resets") >= 2, "{after:?}");
    assert_eq!(after.get("poll", "mbx_refused"), 0, "{after:?}");
    assert_eq!(after.get("lan", "link_up"), 1, "{after:?}");
    assert_eq!(after.get("lan", "rx_bad_len") + after.get("wan", "rx_bad_len"), 0, "{after:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn one_port_on_virtio_net_one_on_an_igbvf() {
    let config = format!(
        "nic 0000:00:08.0 vfs 1\nport lan mac {} address 10.0.0.1/24\nport wan mac 52:54:00:5c:00:09 address 10.1.0.1/24\n",
        default_vf_mac(0)
    );
    let mut lab = vf_lab(&config, true).unwrap();
    let ready = lab.vm.wait_for("sluice ready", BOOT_TIMEOUT);
    assert!(ready.is_ok(), "{}", lab.vm.console());
    for (ns, to) in [(&lab.lan, "10.1.0.2"), (&lab.wan, "10.0.0.2")] {
        let (ok, out) = netns_retry(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", to], 20);
        assert!(ok && out.contains(" 0% packet loss"), "ping {to}:\n{out}\n{}", lab.vm.console());
    }
    lab.lan.spawn(&["iperf3", "-s", "-1", "-B", "10.0.0.2"]).unwrap();
    let (ok, out) = netns_retry(&lab.lan, &["sh", "-c", "ss -ltn | grep -q ':5201 '"], 120);
    assert!(ok, "no iperf3 server: {out}");
    // Super-packets from the virtio side leave the VF whole, for the device
    // to cut (TSO through the VF's context descriptors).
    let (ok, out) = netns_run(&lab.wan, &["iperf3", "-c", "10.0.0.2", "-t", "2"]);
    assert!(ok, "iperf3 virtio -> igbvf: {out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("lan", "tx_large") > 0, "{stats:?}");
    assert_eq!(stats.get("lan", "tx_bad_offload"), 0, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn a_vf_whose_pf_never_answers_is_refused_at_boot() {
    let config = format!(
        "nic 0000:00:08.0 vfs 1 mailbox off\nport lan address 10.0.0.1/24\nport wan mac {} address 10.1.0.1/24\n",
        default_vf_mac(0)
    );
    let mut lab = vf_lab(&config, false).unwrap();
    let status = lab.vm.wait_exit(BOOT_TIMEOUT);
    let console = lab.vm.console();
    assert_eq!(status.map(Ending::from), Some(Ending::StartupRefused), "{console}");
    assert!(
        console.contains(
            "pci 00:18.0: igbvf not usable: the PF never completed its reset (mailbox RSTI still set after 1 s)"
        ),
        "{console}"
    );
    assert!(console.contains("port `wan`: no NIC has MAC 02:54:00:5c:80:02"), "{console}");
}
