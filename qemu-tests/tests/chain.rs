//! A service chain of three sluice VMs — router → NAT → load balancer —
//! wired by taps and Linux bridges in namespaces, with the example configs
//! from images/configs; a client curls the LB's backends through all three.

use std::path::PathBuf;
use std::time::Duration;

use sluice::lab::BOOT_TIMEOUT;
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
    // The LB marks the backends up after its health checks.
    let mut answered = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
    drop(vms);
}
