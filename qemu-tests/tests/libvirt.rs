//! The example libvirt domains (images/libvirt/) on real libvirt: libvirtd
//! and virtlogd (started here, by PID, when nothing runs them), the
//! `qemu:///system` driver, TCG. Each domain is the example as shipped but
//! for its name, bridges and file paths: `virsh define`, `start`, ping and
//! curl through its NAT from namespaces on the bridges, `virsh shutdown`
//! (sluice powers off on the ACPI power button), `undefine`. A config
//! sluice refuses crashes the domain through pvpanic (`<on_crash>`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::topology::{run, unique_id, Netns};

const URI: &str = "qemu:///system";

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh").arg("-c").arg(URI).args(args).output().expect("virsh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// libvirtd and virtlogd: the ones running, or ours (stopped on drop).
struct Daemons {
    ours: Vec<u32>,
}

impl Daemons {
    fn up() -> Result<Daemons, String> {
        if virsh(&["version"]).0 {
            return Ok(Daemons { ours: Vec::new() });
        }
        let mut ours = Vec::new();
        // No systemd here: start them as their packages' units would.
        for (daemon, pidfile) in [("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")] {
            let st = Command::new(daemon).args(["-d", "-p", pidfile]).status().map_err(|e| format!("{daemon}: {e}"))?;
            if !st.success() {
                return Err(format!("{daemon} -d failed: {st}"));
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|p| p.trim().parse().ok()) {
                    ours.push(pid);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let d = Daemons { ours };
        let t = Instant::now();
        while !virsh(&["version"]).0 {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("libvirtd does not answer on {URI}: {}", virsh(&["version"]).1));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(d)
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for pid in self.ours.iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A bridge in the root namespace (libvirt attaches the domain's taps).
struct Bridge(String);

impl Bridge {
    fn new(name: &str) -> Bridge {
        run(&["ip", "link", "add", name, "type", "bridge"]).unwrap();
        run(&["ip", "link", "set", name, "up"]).unwrap();
        Bridge(name.into())
    }

    /// A host in namespace `ns` on this bridge with `addr`, routing via `gw`.
    fn host(&self, ns: &str, addr: &str, gw: &str) -> Netns {
        let n = Netns::create(ns).unwrap();
        let (a, b) = (format!("{}a", self.0), format!("{}b", self.0));
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &n.name]).unwrap();
        run(&["ip", "link", "set", &a, "master", &self.0, "up"]).unwrap();
        n.exec(&["ip", "addr", "add", addr, "dev", &b]).unwrap();
        n.exec(&["ip", "link", "set", &b, "up"]).unwrap();
        n.exec(&["ip", "route", "add", "default", "via", gw]).unwrap();
        n
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.0]);
        let _ = run(&["ip", "link", "del", &format!("{}a", self.0)]);
    }
}

/// One domain from an example XML, renamed and pointed at `dir`.
struct Domain {
    name: String,
    dir: PathBuf,
}

impl Domain {
    fn define(example: &str, id: &str, tag: &str, config: &str, bridges: (&str, &str)) -> Domain {
        let root = sluice::workspace_root();
        let dir = PathBuf::from(format!("/tmp/sluice-libvirt-{id}-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        // QEMU runs as libvirt's user: it reads the disk and the config.
        run(&["chmod", "755", dir.to_str().unwrap()]).unwrap();
        std::fs::copy(sluice::disk_path(), dir.join("disk.qcow2")).expect("make disk first");
        std::fs::write(dir.join("gateway.conf"), config).unwrap();
        run(&["chmod", "644", dir.join("gateway.conf").to_str().unwrap()]).unwrap();
        let name = format!("sluice-t{id}-{tag}");
        let p = |f: &str| dir.join(f).display().to_string();
        let xml = std::fs::read_to_string(root.join("images/libvirt").join(example))
            .unwrap()
            .replace("<name>sluice-gateway</name>", &format!("<name>{name}</name>"))
            .replace("'sluice-lan'", &format!("'{}'", bridges.0))
            .replace("'sluice-wan'", &format!("'{}'", bridges.1))
            .replace("/var/lib/libvirt/images/sluice-gateway.qcow2", &p("disk.qcow2"))
            .replace("/var/lib/sluice/gateway.conf", &p("gateway.conf"))
            .replace("/var/log/libvirt/qemu/sluice-gateway-console.log", &p("console.log"))
            .replace("/var/log/libvirt/qemu/sluice-gateway-defmt.log", &p("defmt.log"))
            .replace("/var/lib/libvirt/qemu/nvram/sluice-gateway_VARS.fd", &p("VARS.fd"));
        std::fs::write(dir.join("domain.xml"), &xml).unwrap();
        let (ok, out) = virsh(&["define", &p("domain.xml")]);
        assert!(ok, "virsh define {example}: {out}");
        Domain { name, dir }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn state(&self) -> String {
        virsh(&["domstate", &self.name, "--reason"]).1.trim().to_string()
    }

    /// Waits until `f` holds for (console, state).
    fn wait(&self, what: &str, timeout: Duration, f: impl Fn(&str, &str) -> bool) {
        let t = Instant::now();
        loop {
            let (c, s) = (self.console(), self.state());
            if f(&c, &s) {
                return;
            }
            assert!(t.elapsed() < timeout, "{}: no {what} after {timeout:?}: state {s}\n{c}", self.name);
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name, "--nvram"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gateway_through_libvirt(example: &str, tag: &str, id: &str) {
    let (bl, bw) = (Bridge::new(&format!("sl{id}{tag}l")), Bridge::new(&format!("sl{id}{tag}w")));
    let lan = bl.host(&format!("sluice-t{id}-{tag}lan"), "10.0.0.2/24", "10.0.0.1");
    let wan = bw.host(&format!("sluice-t{id}-{tag}wan"), "10.1.0.2/24", "10.1.0.1");
    let config = std::fs::read_to_string(sluice::workspace_root().join("images/configs/gateway.conf")).unwrap();
    let dom = Domain::define(example, id, tag, &config, (&bl.0, &bw.0));
    let (ok, out) = virsh(&["start", &dom.name]);
    assert!(ok, "virsh start: {out}");
    dom.wait("`sluice ready`", Duration::from_secs(120), |c, _| c.contains("sluice ready"));
    let console = dom.console();
    assert!(console.contains("acpi: power button handled"), "{console}");
    if example.contains("q35") {
        // libvirt's q35 puts each NIC behind a PCIe root port.
        assert!(console.contains("virtio-net at pci 01:00.0") || console.contains("at pci 0"), "{console}");
    }
    // Through the NAT: the server sees the appliance's wan address.
    wan.spawn(&["python3", &sluice_qemu_tests::script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    let mut last = String::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let out = lan.output(&["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8000/"]).unwrap();
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(last.contains("far saw 10.1.0.1:"), "curl through the libvirt domain's NAT: {last}\n{}", dom.console());
    let out = lan.output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0% packet loss"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // virsh shutdown: the ACPI power button; sluice powers off.
    let (ok, out) = virsh(&["shutdown", &dom.name]);
    assert!(ok, "virsh shutdown: {out}");
    dom.wait("power-off", Duration::from_secs(60), |_, s| s.starts_with("shut off"));
    assert!(dom.console().contains("ACPI power button: powering off"), "{}", dom.console());
    let (ok, out) = virsh(&["undefine", &dom.name, "--nvram"]);
    assert!(ok, "virsh undefine: {out}");
    assert!(!virsh(&["dominfo", &dom.name]).0, "the domain is gone");
}

#[test]
fn the_example_domains_run_unchanged_under_libvirt() {
    if Command::new("virsh").arg("--version").output().is_err() {
        eprintln!("SKIPPED: libvirt is not installed (scripts/setup.sh installs libvirt-daemon-system)");
        return;
    }
    assert!(Path::new(&sluice::disk_path()).exists(), "make disk first");
    let _daemons = Daemons::up().unwrap_or_else(|e| panic!("{e}"));
    let id = unique_id();
    gateway_through_libvirt("sluice-gateway-pc.xml", "p", &id);
    gateway_through_libvirt("sluice-gateway-q35.xml", "q", &id);
    // A config sluice refuses: it signals pvpanic, libvirt sees a crash
    // and <on_crash>destroy</on_crash> ends the domain.
    let (bl, bw) = (Bridge::new(&format!("sl{id}rl")), Bridge::new(&format!("sl{id}rw")));
    let dom = Domain::define(
        "sluice-gateway-pc.xml",
        &id,
        "r",
        "port lan address 10.0.0.1/24\nroute nonsense\n",
        (&bl.0, &bw.0),
    );
    let (ok, out) = virsh(&["start", &dom.name]);
    assert!(ok, "virsh start: {out}");
    dom.wait("crash", Duration::from_secs(120), |_, s| s.starts_with("shut off") || s.contains("crashed"));
    let (state, console) = (dom.state(), dom.console());
    assert!(state.contains("crashed"), "state {state}\n{console}");
    assert!(console.contains("config refused"), "{console}");
}
