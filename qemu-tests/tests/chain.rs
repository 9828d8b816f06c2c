//! A service chain of three sluice VMs — router → NAT → load balancer —
//! wired by taps and Linux bridges in namespaces, with the example configs
//! from images/configs; a client curls the LB's backends through all three.

use std::path::PathBuf;
use std::time::Duration;

use sluice::lab::BOOT_TIMEOUT;
use sluice::ovs::Ovs;
use sluice::qemu::{Accel, Machine, NicSpec, Vm, VmSpec};
use sluice::topology::{unique_id, Netns, Tap};
use sluice_qemu_tests::*;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/configs").join(name)
}

fn bridge_ns(name: &str) -> Netns {
    let ns = Netns::create(name).unwrap();
    ns.add_bridge().unwrap();
    ns
}

#[test]
fn client_reaches_the_backends_through_router_nat_and_lb_vms() {
    let id = unique_id();
    let accel = Accel::from_env().unwrap();
    // Taps: vm1 (clients, chain), vm2 (inside, outside), vm3 (front, back).
    let mut taps: Vec<Tap> = (0..6).map(|i| Tap::create(&format!("st{id}c{i}")).unwrap()).collect();
    let mut vms = Vec::new();
    for (k, conf) in ["chain-router.conf", "chain-nat.conf", "chain-lb.conf"].iter().enumerate() {
        let mut spec = VmSpec::new(sluice::image_path(), Machine::Microvm, accel);
        spec.config = Some((example(conf), conf.to_string()));
        spec.nics = (0..2).map(|j| NicSpec::new(&taps[k * 2 + j].name, &format!("52:54:00:c{k}:00:0{j}"))).collect();
        vms.push(Vm::start_paused(&spec).unwrap());
    }
    let client = Netns::create(&format!("sluice-t{id}-client")).unwrap();
    let link2 = bridge_ns(&format!("sluice-t{id}-l2"));
    let link3 = bridge_ns(&format!("sluice-t{id}-l3"));
    let backends = bridge_ns(&format!("sluice-t{id}-back"));
    taps[0].move_to(&client, "10.10.0.2/24").unwrap();
    client.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"]).unwrap();
    let (t1, rest) = taps.split_at_mut(2);
    t1[1].into_bridge(&link2).unwrap();
    rest[0].into_bridge(&link2).unwrap();
    rest[1].into_bridge(&link3).unwrap();
    rest[2].into_bridge(&link3).unwrap();
    rest[3].into_bridge(&backends).unwrap();
    // Two backends behind the LB, each in its own namespace on the bridge.
    let mut backend_ns = Vec::new();
    for (i, addr) in ["10.40.0.11", "10.40.0.12"].iter().enumerate() {
        let (a, b) = (format!("st{id}v{i}"), format!("st{id}w{i}"));
        let ns = backends.veth_host(&format!("sluice-t{id}-b{i}"), &a, &b, &format!("{addr}/24"), true).unwrap();
        ns.spawn(&["python3", &script("whoami_http.py"), addr, "8000", &format!("backend{i}")]).unwrap();
        backend_ns.push(ns);
    }
    for vm in &mut vms {
        vm.resume().unwrap();
    }
    for vm in &mut vms {
        vm.wait_for("sluice ready", BOOT_TIMEOUT).unwrap();
    }
    curl_through_the_chain(&client, &mut vms);
    drop(vms);
}

/// curl from `client` reaches both backends through router → NAT → LB, and
/// each VM did its part.
fn curl_through_the_chain(client: &Netns, vms: &mut [Vm]) {
    // The LB marks the backends up after its health checks.
    let mut answered = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while answered.len() < 2 && std::time::Instant::now() < deadline {
        let out = client.output(&["curl", "-sS", "--max-time", "5", "http://10.30.0.2/"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            // Full-NAT at the LB: the backend sees the LB's address.
            assert!(text.contains(" saw 10.40.0.1:"), "{text}");
            answered.insert(text.split_whitespace().next().unwrap().to_string());
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let consoles: Vec<String> = vms.iter().map(|v| v.console()).collect();
    assert_eq!(answered.len(), 2, "both backends answered through the chain: {answered:?}\n{consoles:#?}");
    // Each member did its part.
    let s: Vec<_> = vms.iter_mut().map(|v| v.stats().unwrap()).collect();
    assert!(s[0].get("router", "forwarded") > 0, "{:?}", s[0]);
    assert!(s[1].get("nat", "translated_out") > 0, "{:?}", s[1]);
    assert!(s[2].get("web", "new_flows") > 0, "{:?}", s[2]);
}

/// A veth from OVS bridge `bridge` to a new namespace `name` with `addr`
/// (transmit checksum offload off: OVS's userspace datapath leaves partial
/// checksums as they are).
fn ovs_host(ovs: &Ovs, bridge: &str, name: &str, here: &str, there: &str, addr: &str) -> Netns {
    let ns = Netns::create(name).unwrap();
    sluice::topology::run(&["ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", &ns.name])
        .unwrap();
    sluice::topology::run(&["ip", "link", "set", here, "up"]).unwrap();
    ovs.add_port(bridge, here).unwrap();
    ns.exec(&["ip", "addr", "add", addr, "dev", there]).unwrap();
    ns.exec(&["ip", "link", "set", there, "up"]).unwrap();
    ns.exec(&["ethtool", "-K", there, "tx", "off"]).unwrap();
    ns
}

/// The same chain, its links OVS-DPDK bridges and every VM NIC a
/// vhost-user port (the seed's service chain through OVS).
#[test]
fn the_chain_runs_over_ovs_dpdk_vhost_user_links() {
    let id = unique_id();
    let accel = Accel::from_env().unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-lab-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ovs = Ovs::start(&dir.join("ovs"), true).unwrap();
    // Links: client–vm1, vm1–vm2, vm2–vm3, vm3–backends.
    let links: Vec<String> = (0..4).map(|i| format!("sc{id}{i}")).collect();
    for l in &links {
        ovs.add_bridge(l).unwrap();
    }
    let sock = |k: usize, j: usize| dir.join(format!("vm{k}-{j}.sock"));
    for k in 0..3 {
        for j in 0..2 {
            ovs.add_vhost_user(&links[k + j], &format!("vu{id}{k}{j}"), &sock(k, j)).unwrap();
        }
    }
    let mut vms = Vec::new();
    for (k, conf) in ["chain-router.conf", "chain-nat.conf", "chain-lb.conf"].iter().enumerate() {
        let mut spec = VmSpec::new(sluice::image_path(), Machine::Microvm, accel);
        spec.config = Some((example(conf), conf.to_string()));
        spec.nics = (0..2)
            .map(|j| NicSpec::vhost_user(&format!("vu{k}{j}"), &format!("52:54:00:c{k}:00:0{j}"), &sock(k, j)))
            .collect();
        vms.push(Vm::start(&spec).unwrap());
    }
    let client = ovs_host(
        &ovs,
        &links[0],
        &format!("sluice-t{id}-client"),
        &format!("st{id}c0"),
        &format!("st{id}c1"),
        "10.10.0.2/24",
    );
    client.exec(&["ip", "route", "add", "default", "via", "10.10.0.1"]).unwrap();
    let mut backend_ns = Vec::new();
    for (i, addr) in ["10.40.0.11", "10.40.0.12"].iter().enumerate() {
        let ns = ovs_host(
            &ovs,
            &links[3],
            &format!("sluice-t{id}-b{i}"),
            &format!("st{id}v{i}"),
            &format!("st{id}w{i}"),
            &format!("{addr}/24"),
        );
        ns.spawn(&["python3", &script("whoami_http.py"), addr, "8000", &format!("backend{i}")]).unwrap();
        backend_ns.push(ns);
    }
    for vm in &mut vms {
        vm.wait_for("sluice ready", BOOT_TIMEOUT).unwrap();
    }
    curl_through_the_chain(&client, &mut vms);
    drop(vms);
    drop(backend_ns);
    drop(client);
    drop(ovs);
    let _ = std::fs::remove_dir_all(&dir);
}
