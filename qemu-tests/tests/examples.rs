//! Every example config in images/configs boots on the real image, and each
//! of its ports answers ping from a host on its subnet.

use std::path::PathBuf;

use sluice_qemu_tests::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../images/configs")
}

fn boot_example(file: &str) {
    let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
    let config = vnfs::registry::parse(&text).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    // One namespace per NIC port (sub-ports and tunnels ride on them),
    // with a host at the first other address.
    spec.ports = config.ports[..config.nic_count()]
        .iter()
        .map(|p| {
            let net = p.address.expect("example ports have addresses");
            let host = net.hosts().find(|h| *h != net.addr()).unwrap();
            PortSpec::new(&p.name, &net.to_string(), &format!("{host}/{}", net.prefix_len()))
        })
        .collect();
    spec.config_override = Some(text);
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("{file} did not boot: {e}"));
    assert!(lab.vm.console().contains(&format!("({} port(s))", config.ports.len())));
    for p in &lab.ports {
        let (ok, out) = ns_run(p, &["ping", "-c", "2", "-i", "0.2", "-W", "2", &p.appliance_ip]);
        assert!(ok && out.contains(" 0% packet loss"), "{file}: ping {} on {}:\n{out}", p.appliance_ip, p.name);
    }
}

#[test]
fn default_example() {
    boot_example("default.conf");
}

#[test]
fn gateway_example() {
    boot_example("gateway.conf");
}

#[test]
fn lb_example() {
    boot_example("lb.conf");
}

#[test]
fn edge_example() {
    boot_example("edge.conf");
}

#[test]
fn tenants_example() {
    boot_example("tenants.conf");
}

#[test]
fn chain_member_examples() {
    for f in ["chain-router.conf", "chain-nat.conf", "chain-lb.conf"] {
        boot_example(f);
    }
}
