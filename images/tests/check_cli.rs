//! `sluice check` as a user runs it.

use std::process::Command;

fn check(text: &str) -> (bool, String, String) {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}-{}", std::process::id(), text.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("appliance.conf");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("check").arg(&file).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap().replace(&file.display().to_string(), "FILE"),
    )
}

#[test]
fn good_config_passes() {
    let (ok, stdout, _) = check("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n");
    assert!(ok);
    assert!(stdout.contains("ok (2 port(s))"), "{stdout}");
}

#[test]
fn every_error_is_printed_as_file_line_column() {
    let (ok, _, stderr) = check("port lan address 10.0.0.1/33\n\nport wan {\n  mtu 20\n  colour red\n}\n");
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "FILE:1:18: bad address `10.0.0.1/33`: expected A.B.C.D/LEN such as 10.0.0.1/24",
            "FILE:4:7: bad MTU `20`: expected a number from 68 to 1500",
            "FILE:5:3: unknown port setting `colour`: expected `address`, `mac`, `mtu`, `rpf`, `vrf`, or `on`, `vlan`, `outer-vlan`, `priority` for a VLAN sub-port",
        ]
    );
}

#[test]
fn shipped_example_configs_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("check").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn libvirt_examples_are_well_formed_and_carry_what_sluice_needs() {
    // The XML parses and carries the fw_cfg config, two virtio NICs on
    // bridges, COM2 for the defmt stream and a pvpanic device; the
    // qemu-tests drive real libvirt with them.
    for name in ["sluice-gateway-pc.xml", "sluice-gateway-q35.xml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libvirt").join(name);
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys,xml.etree.ElementTree as E\n\
                 d=E.parse(sys.argv[1]).getroot()\n\
                 e=d.find(\"sysinfo[@type='fwcfg']/entry[@name='opt/sluice/config']\")\n\
                 assert e is not None, 'no fw_cfg config entry'\n\
                 assert d.find('devices/disk/driver').get('type')=='qcow2'\n\
                 assert len(d.findall('devices/interface[@type=\"bridge\"]/model[@type=\"virtio\"]'))==2\n\
                 assert d.find(\"devices/serial/target[@port='1']\") is not None, 'no COM2'\n\
                 assert d.find('devices/panic') is not None, 'no pvpanic'\n\
                 assert d.find('features/acpi') is not None\n\
                 print('ok')",
            )
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn version_and_help_are_answered_not_taken_for_files() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (ok, stdout, _) = run(&["--version"]);
    assert!(ok, "--version succeeds");
    // As `sluice_build_info` says it: the version and the git commit.
    assert!(stdout.starts_with(&format!("sluice {} (git ", env!("CARGO_PKG_VERSION"))), "{stdout}");
    for args in [&["check", "--help"][..], &["--help"], &["help"], &["check", "-h"]] {
        let (ok, stdout, stderr) = run(args);
        assert!(ok, "{args:?}: {stderr}");
        assert!(stdout.contains("usage:") && stdout.contains("sluice check FILE"), "{args:?}: {stdout}");
        assert!(!stderr.contains("cannot read"), "{args:?}: {stderr}");
    }
}

#[test]
fn check_prints_the_pipelines_it_will_build() {
    let (ok, stdout, _) = check(
        "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {\n  inside 10.0.0.0/24\n  outside wan\n}\n",
    );
    assert!(ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with(": ok (2 port(s))"), "{stdout}");
    // Per input port, the stage instances in the order packets meet them.
    assert_eq!(lines[1..], ["  pipeline lan: router nat", "  pipeline wan: nat router"], "{stdout}");
}
