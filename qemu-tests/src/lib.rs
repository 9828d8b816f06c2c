//! Helpers for the qemu-tests (the tests themselves are in `tests/`).
//!
//! The lab (namespaces, taps, QEMU) lives in the `sluice` crate so that
//! `sluice run` and the tests share one implementation.

pub use sluice::lab::{Lab, LabSpec, PortSpec};
pub use sluice::qemu::{Ending, Machine, Stats, Vm};

/// Starts a two-port lab on `machine` or fails the test with the console.
pub fn two_port_lab(machine: Machine) -> Lab {
    let spec = LabSpec::two_ports(machine).expect("SLUICE_ACCEL");
    Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"))
}

/// Output of a command in a namespace as text, with the status.
pub fn ns_run(port: &sluice::lab::LabPort, cmd: &[&str]) -> (bool, String) {
    let out = port.ns.output(cmd).expect("spawn command in namespace");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Points the namespace's default route at the appliance, as a host on that
/// subnet would be configured.
pub fn route_via_appliance(port: &sluice::lab::LabPort) {
    port.ns.exec(&["ip", "route", "add", "default", "via", &port.appliance_ip]).expect("default route");
}

/// Runs `cmd` in the port's namespace until it succeeds (a server may still
/// be starting), up to `tries` times a quarter second apart.
pub fn ns_retry(port: &sluice::lab::LabPort, cmd: &[&str], tries: usize) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..tries {
        last = ns_run(port, cmd);
        if last.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    last
}

/// Path of a helper script in `qemu-tests/scripts/`.
pub fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}
