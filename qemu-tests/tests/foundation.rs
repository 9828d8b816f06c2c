//! The foundation, proved on the real image: it boots on every machine type
//! we support, answers ping and ARP on every port, counts malformed frames
//! without falling over, refuses a bad config like `sluice check` does, and
//! a crash fails the VM.

use std::time::Duration;

use sluice_qemu_tests::*;

/// `ping -c 5` of the port's address from its namespace: 0% loss.
fn ping_ok(lab: &Lab, port: &str) {
    let p = lab.port(port);
    let (ok, out) = ns_run(p, &["ping", "-c", "5", "-i", "0.2", "-W", "2", &p.appliance_ip]);
    assert!(
        ok && out.contains(" 0% packet loss"),
        "ping {} from {}:\n{out}\n{}",
        p.appliance_ip,
        p.ns.name,
        lab.vm.console()
    );
}

fn boots_and_answers(machine: Machine) {
    let mut lab = two_port_lab(machine);
    ping_ok(&lab, "lan");
    ping_ok(&lab, "wan");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("lan", "local_packets") >= 5, "{stats:?}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn microvm_virtio_mmio() {
    boots_and_answers(Machine::Microvm);
}

#[test]
fn q35_qboot_virtio_pci() {
    boots_and_answers(Machine::Q35Qboot);
}

#[test]
fn pc_qboot_virtio_pci() {
    boots_and_answers(Machine::PcQboot);
}

#[test]
fn q35_seabios_virtio_pci() {
    boots_and_answers(Machine::Q35);
}

#[test]
fn pc_seabios_virtio_pci() {
    boots_and_answers(Machine::Pc);
}

#[test]
fn ready_line_reports_boot_time() {
    let lab = two_port_lab(Machine::Microvm);
    let us: u64 = lab
        .ready_line
        .split("sluice ready in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in `{}`", lab.ready_line));
    assert!(us > 0);
}

#[test]
fn arping_sees_the_configured_mac() {
    let lab = two_port_lab(Machine::Microvm);
    for p in &lab.ports {
        let (ok, out) = ns_run(p, &["arping", "-c", "3", "-w", "10", "-I", &p.tap.name, &p.appliance_ip]);
        assert!(ok, "arping failed:\n{out}");
        assert!(out.to_lowercase().contains(&p.mac), "arping for {} did not show {}:\n{out}", p.appliance_ip, p.mac);
    }
}

/// Sends raw frames from a namespace with an AF_PACKET socket.
fn send_raw(port: &sluice::lab::LabPort, frames_hex: &[String]) {
    let script = format!(
        "import socket,binascii\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\nfor h in {:?}:\n    s.send(binascii.unhexlify(h))\n",
        port.tap.name, frames_hex
    );
    let (ok, out) = ns_run(port, &["python3", "-c", &script]);
    assert!(ok, "raw send failed: {out}");
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut lab = two_port_lab(Machine::Microvm);
    let lan = lab.port("lan");
    let dst = lan.mac.replace(':', "");
    let src = "020000000001";
    // Unknown EtherType 0x88b5 (IEEE local experimental), padded to 60 bytes.
    let unknown = format!("{dst}{src}88b5{}", "00".repeat(46));
    // IPv4 EtherType with a 10-byte "header": truncated.
    let truncated = format!("{dst}{src}0800{}", "45000054000040004001");
    send_raw(lan, &[unknown.clone(), unknown.clone(), unknown, truncated.clone(), truncated]);
    // Counters settle once ping (which goes through the same ring) works.
    ping_ok(&lab, "lan");
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("lan", "drop_unknown_ethertype"), 3, "{stats:?}");
    assert_eq!(stats.get("lan", "drop_ipv4_truncated"), 2, "{stats:?}");
    ping_ok(&lab, "wan");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

/// The `sluice` host tool built next to this test binary.
fn sluice_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(bin.exists(), "{} not built (cargo build -p sluice)", bin.display());
    bin
}

#[test]
fn bad_config_is_refused_with_the_same_errors_as_sluice_check() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.config_override =
        Some("port lan mac 52:54:00:5c:00:01 address 10.0.0.1/24\nport wan address 10.1.0.300/24 mtu 9000\n".into());
    let mut lab = Lab::boot(&spec).unwrap();
    let status = lab.vm.wait_exit(Duration::from_secs(60)).expect("VM did not exit on a bad config");
    assert_eq!(Ending::from(status), Ending::StartupRefused, "{}", lab.vm.console());
    let out = std::process::Command::new(sluice_bin()).arg("check").arg(&lab.config_path).output().unwrap();
    assert!(!out.status.success());
    let expected = String::from_utf8(out.stderr).unwrap();
    assert_eq!(expected.lines().count(), 2, "{expected}");
    let console = lab.vm.console();
    for line in expected.lines() {
        assert!(console.contains(line), "console lacks `{line}`:\n{console}");
    }
    assert!(!console.contains("sluice ready"), "{console}");
}

#[test]
fn tables_larger_than_the_ram_are_refused_before_they_are_allocated() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.memory_mb = 16;
    spec.extra_config = "nat {\n  inside 10.0.0.0/24\n  outside wan\n  sessions 1000000\n}\n".into();
    let mut lab = Lab::boot(&spec).unwrap();
    let status = lab.vm.wait_exit(Duration::from_secs(60)).expect("VM did not exit");
    let console = lab.vm.console();
    assert_eq!(Ending::from(status), Ending::StartupRefused, "{console}");
    assert!(console.contains(", nat ") && console.contains("give the VM more memory"), "{console}");
    assert!(!console.contains("panic"), "{console}");
}

#[test]
fn config_on_the_kernel_command_line() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.config_on_cmdline = true;
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(lab.vm.console().contains("config: cmdline (2 port(s))"), "{}", lab.vm.console());
    ping_ok(&lab, "wan");
}

#[test]
fn config_from_a_config_drive_when_fw_cfg_has_none() {
    // A FAT disk with SLUICE.CFG, as a cloud's config drive: on microvm
    // (virtio-mmio) and on q35 (virtio-blk-pci, its BARs placed by sluice).
    for machine in [Machine::Microvm, Machine::Q35Qboot] {
        let mut spec = LabSpec::two_ports(machine).unwrap();
        spec.config_drive = true;
        let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("{e}"));
        let console = lab.vm.console();
        assert!(
            console.contains("config: config drive (") && console.contains("):SLUICE.CFG (2 port(s))"),
            "{console}"
        );
        ping_ok(&lab, "wan");
    }
}

#[test]
fn a_panic_fails_the_vm_and_the_harness_reports_it() {
    let mut lab = two_port_lab(Machine::Microvm);
    lab.vm.send("panic").unwrap();
    let err = lab.vm.wait_for("this never appears", Duration::from_secs(30)).unwrap_err();
    assert!(err.what.contains("sluice panicked"), "{err}");
    assert!(err.console.contains("panic requested on the console"), "{err}");
    assert_eq!(lab.vm.wait_exit(Duration::from_secs(5)).map(Ending::from), Some(Ending::Panic));
}

#[test]
fn teardown_removes_namespaces_taps_and_qemu() {
    let lab = two_port_lab(Machine::Microvm);
    let pid = lab.vm.pid();
    let names: Vec<String> = lab.ports.iter().map(|p| p.ns.name.clone()).collect();
    let taps: Vec<String> = lab.ports.iter().map(|p| p.tap.name.clone()).collect();
    drop(lab);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "QEMU {pid} still running");
    let netns =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    let links =
        String::from_utf8(std::process::Command::new("ip").args(["-o", "link"]).output().unwrap().stdout).unwrap();
    for n in names {
        assert!(!netns.contains(&n), "namespace {n} left behind");
    }
    for t in taps {
        assert!(!links.contains(&t), "tap {t} left behind");
    }
}

#[test]
fn nics_behind_pcie_root_ports_are_found() {
    // libvirt puts every q35 NIC behind its own root port; SeaBIOS numbers
    // the buses and assigns the BARs there.
    let mut spec = LabSpec::two_ports(Machine::Q35).unwrap();
    for p in &mut spec.ports {
        *p = p.clone().behind_root_port();
    }
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let console = lab.vm.console();
    assert!(
        console.contains("virtio-net at pci 01:00.0") && console.contains("virtio-net at pci 02:00.0"),
        "{console}"
    );
    route_via_appliance(lab.port("lan"));
    route_via_appliance(lab.port("wan"));
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"], 20);
    assert!(ok && out.contains(" 0% packet loss"), "ping:\n{out}\n{}", lab.vm.console());
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn without_isa_debug_exit_a_refused_config_is_reported_through_pvpanic() {
    // A machine as libvirt builds it: no isa-debug-exit, a pvpanic device.
    // QEMU is told to exit on a guest panic, so the event is visible here
    // as an exit status (libvirt would run `<on_crash>`).
    let dir = std::env::temp_dir().join(format!("sluice-pvpanic-{}", sluice::topology::unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "port lan address 10.0.0.300/24\n").unwrap();
    let mut spec =
        sluice::qemu::VmSpec::new(sluice::image_path(), Machine::Q35Qboot, sluice::qemu::Accel::from_env().unwrap());
    spec.config = Some((conf.clone(), "bad.conf".into()));
    spec.debug_exit = false;
    spec.extra_args = ["-device", "pvpanic", "-action", "panic=exit-failure"].map(String::from).to_vec();
    let mut vm = Vm::start(&spec).unwrap();
    let status = vm.wait_exit(Duration::from_secs(60));
    let console = vm.console();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| panic!("the VM halted silently instead of signalling pvpanic:\n{console}"));
    assert!(console.contains("bad.conf:1:") && console.contains("config refused"), "{console}");
    assert_eq!(status.code(), Some(1), "QEMU's exit on a guest panic: {status:?}\n{console}");
}

#[test]
fn the_acpi_power_button_powers_the_appliance_off() {
    // `virsh shutdown` is QMP system_powerdown: the ACPI power button.
    for machine in [Machine::Q35Qboot, Machine::Pc] {
        let spec = LabSpec::two_ports(machine).unwrap();
        let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
        let line = lab.vm.wait_for("acpi: ", Duration::from_secs(10)).unwrap();
        assert!(line.contains("power button handled"), "{machine:?}: {line}\n{}", lab.vm.console());
        lab.vm.qmp("system_powerdown").unwrap();
        let status = lab.vm.wait_exit(Duration::from_secs(30));
        let console = lab.vm.console();
        let status = status.unwrap_or_else(|| panic!("{machine:?}: still running after system_powerdown:\n{console}"));
        assert!(console.contains("ACPI power button: powering off"), "{console}");
        assert_eq!(Ending::from(status), Ending::Clean, "{machine:?}: {status:?}\n{console}");
    }
}

#[test]
fn image_options_come_from_the_config_too() {
    // What `offloads=off` on the kernel command line does, for images whose
    // command line is fixed (the disk image's GRUB, a libvirt domain).
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = "options offloads off\n".into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let console = lab.vm.console();
    assert_eq!(console.matches("offloads off").count(), 2, "{console}");
    route_via_appliance(lab.port("lan"));
    route_via_appliance(lab.port("wan"));
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.1.0.2"], 20);
    assert!(ok, "{out}");
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}

#[test]
fn a_small_vm_that_says_ready_answers_and_forwards_on_every_port() {
    // -m 12 once said `sluice ready … 753 buffers` and then answered
    // nothing on two of its three ports: the first NIC's 1024-entry
    // receive ring took every buffer.
    if let Err(e) = small_nat_works(12) {
        panic!("{e}");
    }
}

#[test]
fn a_vm_too_small_for_its_rings_is_refused_with_the_numbers_or_works() {
    // -m 11 once said ready with 334 buffers, all in the first ring. Now the
    // pool cannot give every ring its 64: the boot is refused and says why
    // (should the image shrink enough for it to fit, it must then work).
    let mut lab = Lab::boot(&small_nat_spec(11).unwrap()).unwrap();
    if lab.vm.wait_for("sluice ready", Duration::from_secs(60)).is_ok() {
        drop(lab);
        if let Err(e) = small_nat_works(11) {
            panic!("{e}");
        }
        return;
    }
    let status = lab.vm.wait_exit(Duration::from_secs(10));
    let console = lab.vm.console();
    assert_eq!(status.map(Ending::from), Some(Ending::StartupRefused), "{console}");
    assert!(console.contains("give the VM more memory"), "{console}");
    assert!(!console.contains("panic"), "{console}");
}
