//! The qcow2 disk image (GRUB, multiboot2) boots without `-kernel`, under
//! SeaBIOS and under OVMF, takes its config from fw_cfg and forwards.

use sluice_qemu_tests::*;

fn boots_and_routes(machine: Machine) {
    let spec = LabSpec::two_ports(machine).unwrap();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("{machine:?}: {e}"));
    assert!(lab.vm.console().contains("(multiboot2)"), "{}", lab.vm.console());
    for p in &lab.ports {
        route_via_appliance(p);
    }
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{out}\n{}", lab.vm.console());
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn qcow2_under_seabios() {
    boots_and_routes(Machine::PcDisk);
}

#[test]
fn qcow2_under_ovmf() {
    boots_and_routes(Machine::Q35UefiDisk);
}
