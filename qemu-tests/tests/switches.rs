//! sluice behind the vSwitches NFV deployments use: Open vSwitch's
//! userspace datapath with taps, and OVS-DPDK with vhost-user ports (the
//! backend reads guest memory; QEMU's main loop leaves the data path). The
//! lab starts OVS with its own database and run directory and stops it by
//! PID; DPDK never probes PCI (`--no-pci`).

use sluice::ovs::Switch;
use sluice_qemu_tests::*;

const NAT: &str = "nat {\n inside 10.0.0.0/24\n outside wan\n}\n";

fn lab_behind(switch: Switch, machine: Machine) -> Lab {
    let mut spec = LabSpec::two_ports(machine).unwrap();
    spec.switch = switch;
    spec.extra_config = NAT.into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab behind {} did not start: {e}", switch.name()));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    lab
}

/// ping, curl (through the NAT: the server sees the appliance) and iperf3.
fn carries_traffic(lab: &mut Lab) {
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"], 40);
    assert!(ok && out.contains(" 0% packet loss"), "ping:\n{out}\n{}", lab.vm.console());
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    wait_listening(wan, 8000);
    let (ok, out) = ns_run(lab.port("lan"), &["curl", "-sS", "--max-time", "10", "http://10.1.0.2:8000/"]);
    assert!(ok && out.contains("far saw 10.1.0.1:"), "curl through the NAT:\n{out}");
    wan.ns.spawn(&["iperf3", "-s", "-1", "-B", "10.1.0.2"]).unwrap();
    wait_listening(wan, 5201);
    let (ok, out) = ns_run(lab.port("lan"), &["iperf3", "-c", "10.1.0.2", "-t", "3"]);
    assert!(ok, "iperf3: {out}");
    eprintln!("{}", out.lines().filter(|l| l.contains("receiver")).collect::<Vec<_>>().join("\n"));
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("nat", "translated_out") > 100, "{stats:?}");
    assert_eq!(stats.get("lan", "rx_bad_len") + stats.get("wan", "rx_bad_len"), 0, "{stats:?}");
}

#[test]
fn a_nat_gateway_behind_ovs_userspace_with_taps() {
    let mut lab = lab_behind(Switch::Ovs, Machine::Microvm);
    carries_traffic(&mut lab);
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn a_nat_gateway_behind_ovs_dpdk_on_vhost_user() {
    let mut lab = lab_behind(Switch::OvsDpdk, Machine::Q35Qboot);
    let console = lab.vm.console();
    assert!(console.contains("virtio-net at pci"), "{console}");
    carries_traffic(&mut lab);
    let ovs = lab.ovs.as_ref().unwrap();
    let show = ovs.vsctl(&["show"]).unwrap();
    assert!(show.contains("dpdkvhostuserclient"), "{show}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn sluice_restarted_behind_ovs_dpdk_reconnects_and_forwards_again() {
    let mut lab = lab_behind(Switch::OvsDpdk, Machine::Microvm);
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.1.0.2"], 40);
    assert!(ok, "ping before the restart:\n{out}\n{}", lab.vm.console());
    // QEMU serves the sockets; OVS is the client and reconnects.
    assert_eq!(lab.restart_vm().unwrap(), Ending::Clean);
    // Until OVS has reconnected both ports (it retries every second).
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "1", "-W", "1", "10.1.0.2"], 40);
    assert!(ok, "no ping after the restart:\n{out}\n{}", lab.vm.console());
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"], 40);
    assert!(ok && out.contains(" 0% packet loss"), "ping after the restart:\n{out}\n{}", lab.vm.console());
    let log = std::fs::read_to_string(lab.ovs.as_ref().unwrap().dir.join("ovs-vswitchd.log")).unwrap();
    assert!(log.matches("has been added on numa node").count() >= 4, "both ports reconnected:\n{log}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
