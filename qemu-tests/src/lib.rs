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
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
