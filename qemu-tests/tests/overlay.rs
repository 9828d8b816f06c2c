//! VLAN trunks, VXLAN tenants in VRFs, Geneve service insertion: the real
//! image with real Linux peers. This kernel has no 802.1Q module and no
//! VLAN filtering in its bridge, so the trunk comes from Open vSwitch's
//! userspace datapath (access ports tagged by OVS, the VM's tap a trunk);
//! it has the vxlan module, so the tenants' VTEPs are Linux vxlan devices;
//! it has no geneve module, so the Geneve peer is a Python UDP socket that
//! builds RFC 8926 headers itself.

use sluice::ovs::Switch;
use sluice::topology::{run, unique_id, Netns};
use sluice_qemu_tests::*;

/// A host on VLAN `vid` of the bridge that holds lab port `on`'s namespace
/// veth: a namespace with `addr`, default route via `gw`, its veth an OVS
/// access port tagged `vid`.
fn access_host(lab: &Lab, on: &str, vid: u16, addr: &str, gw: &str) -> Netns {
    let ovs = lab.ovs.as_ref().expect("an OVS lab");
    let ns_side = &lab.port(on).tap.name;
    // The lab names the pair st<id>n<i> (namespace) / st<id>o<i> (OVS).
    let at = ns_side.rfind('n').expect("a lab veth name");
    let ovs_side = format!("{}o{}", &ns_side[..at], &ns_side[at + 1..]);
    let bridge = ovs.vsctl(&["port-to-br", &ovs_side]).expect("the lab port's bridge").trim().to_string();
    let id = unique_id();
    let ns = Netns::create(&format!("sluice-t{id}-v{vid}")).unwrap();
    let (here, there) = (format!("st{id}v{vid}"), format!("st{id}w{vid}"));
    run(&["ip", "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns.name]).unwrap();
    run(&["ip", "link", "set", &here, "up"]).unwrap();
    ovs.add_port(&bridge, &here).unwrap();
    ovs.vsctl(&["set", "port", &here, &format!("tag={vid}")]).unwrap();
    ns.exec(&["ip", "addr", "add", addr, "dev", &there]).unwrap();
    ns.exec(&["ip", "link", "set", &there, "up"]).unwrap();
    // OVS's userspace datapath does not complete partial checksums.
    ns.exec(&["ethtool", "-K", &there, "tx", "off"]).unwrap();
    ns.exec(&["ip", "route", "add", "default", "via", gw]).unwrap();
    ns
}

const VLANS: &str = "
port lan100 on trunk0 vlan 100 address 10.100.0.1/24 address 2001:db8:100::1/64
port lan200 on trunk0 vlan 200 address 10.200.0.1/24 priority 4
port mg on trunk0 vlan 400 address 10.40.0.1/24
management mg listen 8080 metrics open
nat {
    inside 10.100.0.0/24
    inside 10.200.0.0/24
    outside wan
}
";

#[test]
fn vlans_on_one_trunk_behind_ovs_route_between_them_and_reach_out_through_the_nat() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.switch = Switch::Ovs;
    spec.ports[0] = PortSpec::new("trunk0", "10.0.0.1/24", "10.0.0.2/24");
    spec.extra_config = VLANS.into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    let console = lab.vm.console();
    assert!(console.contains("port lan100: 10.100.0.1/24 on trunk0 vlan 100"), "{console}");
    let h100 = access_host(&lab, "trunk0", 100, "10.100.0.2/24", "10.100.0.1");
    let h200 = access_host(&lab, "trunk0", 200, "10.200.0.2/24", "10.200.0.1");
    let h300 = access_host(&lab, "trunk0", 300, "10.30.0.2/24", "10.30.0.1");
    let h400 = access_host(&lab, "trunk0", 400, "10.40.0.2/24", "10.40.0.1");

    // Each VLAN's host pings its sub-port; one pings the other across.
    let (ok, out) = netns_retry(&h100, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.100.0.1"], 40);
    assert!(ok && out.contains(" 0% packet loss"), "ping lan100:\n{out}\n{}", lab.vm.console());
    let (ok, out) = netns_retry(&h200, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.200.0.1"], 40);
    assert!(ok, "ping lan200:\n{out}");
    let (ok, out) = netns_retry(&h100, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.200.0.2"], 20);
    assert!(ok && out.contains(" 0% packet loss"), "VLAN 100 to VLAN 200:\n{out}");
    let (ok, out) = netns_run(&h100, &["tracepath", "-n", "-m", "3", "10.200.0.2"]);
    assert!(ok && out.contains("10.100.0.1"), "sluice is the hop between the VLANs:\n{out}");
    // IPv6 on a sub-port: neighbour discovery and echo through the tag.
    let dev = h100.output(&["sh", "-c", "ls /sys/class/net | grep -v lo"]).unwrap();
    let dev = String::from_utf8_lossy(&dev.stdout).trim().to_string();
    h100.exec(&["ip", "-6", "addr", "add", "2001:db8:100::2/64", "dev", &dev, "nodad"]).unwrap();
    let (ok, out) = netns_retry(&h100, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:100::1"], 40);
    assert!(ok, "ping -6 to a VLAN sub-port:\n{out}");
    // The management endpoint on its own VLAN.
    let (ok, out) = netns_retry(&h400, &["curl", "-sS", "--max-time", "5", "http://10.40.0.1:8080/health"], 40);
    assert!(ok && out.contains("ok"), "management on VLAN 400:\n{out}");
    let (ok, out) = netns_run(&h400, &["curl", "-sS", "--max-time", "5", "http://10.40.0.1:8080/show/ports"]);
    assert!(ok && out.contains("vlan:trunk0/100"), "show ports names the sub-ports:\n{out}");
    // Untagged frames are the trunk's own port.
    let (ok, out) = ns_retry(lab.port("trunk0"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"], 20);
    assert!(ok, "untagged ping to the trunk:\n{out}");

    // Out through the NAT: the server sees the NAT's address.
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    wait_listening(wan, 8000);
    for h in [&h100, &h200] {
        let (ok, out) = netns_run(h, &["curl", "-sS", "--max-time", "10", "http://10.1.0.2:8000/"]);
        assert!(ok && out.contains("far saw 10.1.0.1:"), "curl from a VLAN through the NAT:\n{out}");
    }
    // Bulk TCP between the VLANs.
    h200.spawn(&["iperf3", "-s", "-1", "-B", "10.200.0.2"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, out) = netns_run(&h100, &["iperf3", "-c", "10.200.0.2", "-t", "2"]);
    assert!(ok, "iperf3 across the VLANs: {out}");
    eprintln!("{}", out.lines().filter(|l| l.contains("receiver")).collect::<Vec<_>>().join("\n"));

    // VLAN 300 has no sub-port: its frames are dropped and counted.
    let (ok, _) = netns_run(&h300, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.30.0.1"]);
    assert!(!ok, "nobody answers on VLAN 300");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("trunk0", "drop_vlan_unknown") >= 3, "{stats:?}");
    assert!(stats.get("lan100", "rx_packets") > 10 && stats.get("lan200", "tx_packets") > 10, "{stats:?}");
    let console = lab.vm.console();
    assert!(console.contains("vlan-unknown port=trunk0/300 frames="), "the unknown VLAN is named:\n{console}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

const TENANTS: &str = "
vrf blue
vrf red
tunnel tb vxlan vni 5001 local 10.1.0.1 remote 10.1.0.2 address 10.0.0.1/24 vrf blue
tunnel tr vxlan vni 5002 local 10.1.0.1 remote 10.1.0.2 address 10.0.0.1/24 vrf red
route 198.51.100.0/24 port wan vrf blue
route 198.51.100.0/24 port wan vrf red
nat blue {
    inside 10.0.0.0/24
    outside wan
    pool 198.51.100.10
    vrf blue
}
nat red {
    inside 10.0.0.0/24
    outside wan
    pool 198.51.100.11
    vrf red
}
";

/// A tenant: a vxlan device made in the underlay namespace (its UDP
/// socket stays there) and moved into the tenant's own namespace, with
/// the tenant's overlapping address.
fn tenant(under: &Netns, name: &str, vni: u32) -> Netns {
    let id = unique_id();
    let ns = Netns::create(&format!("sluice-t{id}-{name}")).unwrap();
    let dev = format!("st{id}x");
    let dev_in_under = ["ip", "link", "add", &dev, "type", "vxlan", "id", &vni.to_string()];
    let mut cmd: Vec<&str> = dev_in_under.to_vec();
    cmd.extend(["local", "10.1.0.2", "remote", "10.1.0.1", "dstport", "4789", "nolearning"]);
    under.exec(&cmd).unwrap();
    under.exec(&["ip", "link", "set", &dev, "netns", &ns.name]).unwrap();
    ns.exec(&["ip", "addr", "add", "10.0.0.2/24", "dev", &dev]).unwrap();
    ns.exec(&["ip", "link", "set", &dev, "up"]).unwrap();
    ns.exec(&["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    ns
}

#[test]
fn two_vxlan_tenants_with_one_prefix_reach_the_outside_each_through_its_nat() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports = vec![
        PortSpec::new("under", "10.1.0.1/24", "10.1.0.2/24"),
        PortSpec::new("wan", "198.51.100.1/24", "198.51.100.2/24"),
    ];
    spec.extra_config = TENANTS.into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab: {e}"));
    let console = lab.vm.console();
    assert!(console.contains("port tb: 10.0.0.1/24 vxlan vni 5001"), "{console}");
    let under = &lab.port("under").ns;
    let blue = tenant(under, "blue", 5001);
    let red = tenant(under, "red", 5002);
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "198.51.100.2", "8000", "far"]).unwrap();
    wait_listening(wan, 8000);

    for (ns, pool) in [(&blue, "198.51.100.10"), (&red, "198.51.100.11")] {
        let (ok, out) = netns_retry(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.1"], 40);
        assert!(
            ok && out.contains(" 0% packet loss"),
            "{}: ping the tunnel port:\n{out}\n{}",
            ns.name,
            lab.vm.console()
        );
        let (ok, out) = netns_retry(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.2"], 20);
        assert!(ok, "{}: ping the outside:\n{out}", ns.name);
        let (ok, out) = netns_run(ns, &["curl", "-sS", "--max-time", "10", "http://198.51.100.2:8000/"]);
        if !ok {
            let mut text = String::new();
            lab.vm.stats().unwrap();
            text += &lab.vm.console();
            panic!("{}: through its own NAT:\n{out}\n{text}", ns.name);
        }
        assert!(ok && out.contains(&format!("far saw {pool}:")), "{}: through its own NAT:\n{out}", ns.name);
    }
    // Bulk TCP inside the tunnel (inner segments cut to the tunnel's MTU).
    wan.ns.spawn(&["iperf3", "-s", "-1", "-B", "198.51.100.2"]).unwrap();
    wait_listening(wan, 5201);
    let (ok, out) = netns_run(&blue, &["iperf3", "-c", "198.51.100.2", "-t", "2"]);
    assert!(ok, "iperf3 through the tunnel and the NAT: {out}");
    eprintln!("{}", out.lines().filter(|l| l.contains("receiver")).collect::<Vec<_>>().join("\n"));
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("blue", "translated_out") > 10 && stats.get("red", "translated_out") > 3, "{stats:?}");
    assert!(stats.get("tb", "rx_packets") > stats.get("tr", "rx_packets"), "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn geneve_service_insertion_returns_flows_with_their_options_after_the_acl() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports = vec![PortSpec::new("under", "10.1.0.1/24", "10.1.0.2/24")];
    spec.extra_config = "
tunnel gw geneve vni 77 local 10.1.0.1 mode insertion
acl fw {
    port gw
    rule deny udp dport 23
    default permit
}
pipeline gw fw
"
    .into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab: {e}"));
    let under = lab.port("under");
    let (ok, out) = ns_run(under, &["python3", &script("geneve_peer.py"), "10.1.0.2", "10.1.0.1", "77", "80", "23"]);
    assert!(ok, "geneve peer: {out}\n{}", lab.vm.console());
    assert!(
        out.contains("dport=80 sent=5 back=5 options-intact=5 inner-intact=5"),
        "flows the ACL permits come back, options and inner frame intact:\n{out}\n{}",
        lab.vm.console()
    );
    assert!(out.contains("dport=23 sent=5 back=0"), "the ACL's denied flows do not come back:\n{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("fw", "denied") >= 5, "{stats:?}");
    assert!(stats.get("gw", "reflected") >= 5, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
