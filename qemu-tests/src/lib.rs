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
    netns_run(&port.ns, cmd)
}

/// [`ns_run`] in any namespace (hosts a test made beside the lab's).
pub fn netns_run(ns: &sluice::topology::Netns, cmd: &[&str]) -> (bool, String) {
    let out = ns.output(cmd).expect("spawn command in namespace");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// [`ns_retry`] in any namespace.
pub fn netns_retry(ns: &sluice::topology::Netns, cmd: &[&str], tries: usize) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..tries {
        last = netns_run(ns, cmd);
        if last.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    last
}

/// Points the namespace's default route at the appliance, as a host on that
/// subnet would be configured.
pub fn route_via_appliance(port: &sluice::lab::LabPort) {
    port.ns.exec(&["ip", "route", "add", "default", "via", &port.appliance_ip]).expect("default route");
}

/// Runs `cmd` in the port's namespace until it succeeds (a server may still
/// be starting), up to `tries` times a quarter second apart.
pub fn ns_retry(port: &sluice::lab::LabPort, cmd: &[&str], tries: usize) -> (bool, String) {
    netns_retry(&port.ns, cmd, tries)
}

/// Waits until something in the port's namespace listens on TCP `port`
/// (servers start slowly beside a busy TCG guest; a client that comes too
/// early tests RSTs, and a one-shot iperf3 server may be spent on it).
pub fn wait_listening(port: &sluice::lab::LabPort, tcp_port: u16) {
    let probe = format!("ss -ltn | grep -q ':{tcp_port} '");
    let (ok, out) = ns_retry(port, &["sh", "-c", &probe], 120);
    assert!(ok, "nothing listens on {tcp_port} in {}: {out}", port.ns.name);
}

/// Path of a helper script in `qemu-tests/scripts/`.
pub fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A bench's table: writes `csv` to `out/STEM.csv` and plots it to
/// `out/STEM.png` with `scripts/PLOTTER` (matplotlib). Returns the line that
/// says where both went.
pub fn write_and_plot(out: &std::path::Path, stem: &str, csv: &str, plotter: &str) -> String {
    let _ = std::fs::create_dir_all(out);
    let (table, png) = (out.join(format!("{stem}.csv")), out.join(format!("{stem}.png")));
    if let Err(e) = std::fs::write(&table, csv) {
        return format!("{}: not written: {e}", table.display());
    }
    let plotted = std::process::Command::new("python3")
        .arg(script(plotter))
        .arg(&table)
        .arg(&png)
        .status()
        .is_ok_and(|s| s.success());
    if plotted {
        format!("{} and {}", table.display(), png.display())
    } else {
        format!("{} (plot failed: is matplotlib installed?)", table.display())
    }
}

/// The lab the memory figure is measured with: a NAT with 64k sessions and
/// three NICs (lan, wan and dmz) on microvm, whose virtio-mmio rings offer
/// 1024 entries each, in `memory_mb` of RAM.
pub fn small_nat_spec(memory_mb: u32) -> Result<LabSpec, String> {
    let mut spec = LabSpec::two_ports(Machine::Microvm)?;
    spec.ports.push(PortSpec::new("dmz", "10.2.0.1/24", "10.2.0.2/24"));
    spec.memory_mb = memory_mb;
    spec.extra_config = "nat {\n  inside 10.0.0.0/24\n  outside wan\n  sessions 65536\n}\n".into();
    Ok(spec)
}

/// Whether that lab boots in `memory_mb` and then works: the appliance
/// answers ping on every port, and forwards (lan → wan through the NAT,
/// lan → dmz and dmz → lan routed). `Err` says what failed first.
pub fn small_nat_works(memory_mb: u32) -> Result<(), String> {
    let spec = small_nat_spec(memory_mb)?;
    let lab = Lab::start(&spec).map_err(|e| format!("-m {memory_mb}: did not start: {e}"))?;
    let ping = |from: &str, to: &str| {
        let (ok, out) = ns_retry(lab.port(from), &["ping", "-c", "2", "-i", "0.2", "-W", "2", to], 4);
        if ok {
            Ok(())
        } else {
            Err(format!("-m {memory_mb}: ping {to} from {from}:\n{out}\n{}", lab.vm.console()))
        }
    };
    for p in &lab.ports {
        ping(&p.name, &p.appliance_ip)?;
    }
    for p in &lab.ports {
        route_via_appliance(p);
    }
    ping("lan", "10.1.0.2")?;
    ping("lan", "10.2.0.2")?;
    ping("dmz", "10.0.0.2")
}

/// The smallest whole MiB in `lo..=hi` for which `works` holds, by
/// bisection (more RAM is taken never to hurt); `None` if `hi` fails.
pub fn smallest_working(lo: u32, hi: u32, works: impl Fn(u32) -> bool) -> Option<u32> {
    if !works(hi) {
        return None;
    }
    // Invariant: `hi` works; everything below `lo` is untested or fails.
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if works(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
}

/// The management endpoint of the labs that have a `mgmt` port.
pub const MGMT_URL: &str = "http://10.9.0.1:8080";

/// curl from `port` to the management endpoint's `path`, with
/// `Authorization: Bearer TOKEN` when a token is given and `args` before
/// the URL: (success, output).
pub fn mgmt_curl(port: &sluice::lab::LabPort, token: Option<&str>, args: &[&str], path: &str) -> (bool, String) {
    let bearer = token.map(|t| format!("Authorization: Bearer {t}"));
    let url = format!("{MGMT_URL}{path}");
    let mut cmd = vec!["curl", "-sS", "--max-time", "20"];
    if let Some(b) = &bearer {
        cmd.extend(["-H", b.as_str()]);
    }
    cmd.extend_from_slice(args);
    cmd.push(&url);
    ns_run(port, &cmd)
}

/// PUTs `text` (written to `file` first) as the config, with the token:
/// (accepted, the response).
pub fn mgmt_put(port: &sluice::lab::LabPort, file: &std::path::Path, token: &str, text: &[u8]) -> (bool, String) {
    std::fs::write(file, text).expect("write the config to PUT");
    let data = format!("@{}", file.display());
    mgmt_curl(port, Some(token), &["--fail-with-body", "-X", "PUT", "--data-binary", &data], "/config")
}
