//! Open vSwitch as the lab's switch: the userspace (`netdev`) datapath, with
//! taps, or OVS-DPDK with vhost-user ports, so that sluice sits behind the
//! vSwitch NFV deployments use (this machine cannot load the OVS kernel
//! datapath: FACTS.md).
//!
//! Each [`Ovs`] runs its own `ovsdb-server` and `ovs-vswitchd` from its own
//! directory (database, sockets, pid files, logs), and stops them by PID
//! when dropped, even when a test fails. OVS-DPDK instances take a machine
//! wide lock (one at a time: each busy-polls a core and holds hugepages),
//! get `--no-pci` (DPDK would otherwise probe this machine's own NIC) and a
//! file prefix of their own.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::topology::run;

/// Which vSwitch the lab puts between the namespaces and the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Each tap moved into its namespace: the kernel's own path (today's).
    Tap,
    /// OVS userspace datapath, taps as OVS ports.
    Ovs,
    /// OVS-DPDK, vhost-user ports (the backend reads guest memory).
    OvsDpdk,
}

impl Switch {
    pub fn parse(s: &str) -> Option<Switch> {
        Some(match s {
            "tap" | "bridge" => Switch::Tap,
            "ovs" => Switch::Ovs,
            "ovs-dpdk" => Switch::OvsDpdk,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Switch::Tap => "tap",
            Switch::Ovs => "ovs",
            Switch::OvsDpdk => "ovs-dpdk",
        }
    }
}

const VSWITCHD_DPDK: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const VSWITCHD: &str = "/usr/lib/openvswitch-switch/ovs-vswitchd";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
/// 2 MiB pages OVS-DPDK gets (its `dpdk-socket-mem` is 512 MiB).
const PAGES: u64 = 300;

/// One running OVS.
pub struct Ovs {
    pub dir: PathBuf,
    pub dpdk: bool,
    pids: Vec<u32>,
    bridges: Vec<String>,
    /// The OVS-DPDK lock, held while this instance lives.
    _lock: Option<File>,
    /// The hugepage count before we raised it.
    pages_before: Option<u64>,
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits for (and takes) the machine-wide OVS-DPDK lock (released when
/// the file closes, also when the process dies).
fn dpdk_lock() -> io::Result<File> {
    let f = File::create(std::env::temp_dir().join("sluice-ovs-dpdk.lock"))?;
    f.lock()?;
    Ok(f)
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd (the DPDK build with `dpdk`)
    /// in `dir`.
    pub fn start(dir: &Path, dpdk: bool) -> io::Result<Ovs> {
        std::fs::create_dir_all(dir)?;
        let lock = if dpdk { Some(dpdk_lock()?) } else { None };
        let mut ovs = Ovs {
            dir: dir.to_path_buf(),
            dpdk,
            pids: Vec::new(),
            bridges: Vec::new(),
            _lock: lock,
            pages_before: None,
        };
        if dpdk {
            ovs.hugepages()?;
        }
        let db = dir.join("conf.db");
        let sock = dir.join("db.sock");
        run(&["ovsdb-tool", "create", db.to_str().unwrap(), SCHEMA])?;
        run(&[
            "ovsdb-server",
            db.to_str().unwrap(),
            &format!("--remote=punix:{}", sock.display()),
            &format!("--pidfile={}", dir.join("ovsdb-server.pid").display()),
            &format!("--unixctl={}", dir.join("ovsdb-server.ctl").display()),
            &format!("--log-file={}", dir.join("ovsdb-server.log").display()),
            "--detach",
        ])?;
        if let Some(p) = read_pid(&dir.join("ovsdb-server.pid")) {
            ovs.pids.push(p);
        }
        ovs.vsctl(&["--no-wait", "init"])?;
        if dpdk {
            let prefix = format!("sluice{}", std::process::id());
            ovs.vsctl(&[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:dpdk-init=true",
                "other_config:dpdk-socket-mem=512",
                // Mempools sized per port, not OVS's shared 256k mbufs
                // (which do not fit in 512 MiB).
                "other_config:per-port-memory=true",
                "other_config:dpdk-lcore-mask=0x1",
                "other_config:pmd-cpu-mask=0x2",
                // A PMD thread spins on its core; on a 2-core machine that
                // starves the VMs under test, so it sleeps (up to 500 us)
                // when idle. Benches set 0 (`pmd-maxsleep`).
                "other_config:pmd-maxsleep=500",
                // Never let DPDK probe PCI: it would try this machine's NIC.
                &format!("other_config:dpdk-extra=--no-pci --iova-mode=va --file-prefix={prefix}"),
            ])?;
        }
        let vswitchd = if dpdk { VSWITCHD_DPDK } else { VSWITCHD };
        let status = Command::new(vswitchd)
            .arg(format!("unix:{}", sock.display()))
            .arg(format!("--pidfile={}", dir.join("ovs-vswitchd.pid").display()))
            .arg(format!("--unixctl={}", dir.join("ovs-vswitchd.ctl").display()))
            .arg(format!("--log-file={}", dir.join("ovs-vswitchd.log").display()))
            .arg("--detach")
            .env("OVS_RUNDIR", dir)
            .env("OVS_DBDIR", dir)
            .env("OVS_LOGDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() || !wait_for(&dir.join("ovs-vswitchd.pid"), Duration::from_secs(60)) {
            return Err(io::Error::other(format!(
                "{vswitchd} did not start: {}",
                std::fs::read_to_string(dir.join("ovs-vswitchd.log")).unwrap_or_default()
            )));
        }
        if let Some(p) = read_pid(&dir.join("ovs-vswitchd.pid")) {
            ovs.pids.push(p);
        }
        Ok(ovs)
    }

    /// Enough 2 MiB pages and hugetlbfs at /dev/hugepages.
    fn hugepages(&mut self) -> io::Result<()> {
        let now: u64 = std::fs::read_to_string(HUGEPAGES)?.trim().parse().unwrap_or(0);
        if now < PAGES {
            std::fs::write(HUGEPAGES, PAGES.to_string())?;
            self.pages_before = Some(now);
        }
        let mounted = std::fs::read_to_string("/proc/mounts")?.lines().any(|l| l.contains(" hugetlbfs "));
        if !mounted {
            std::fs::create_dir_all("/dev/hugepages")?;
            run(&["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"])?;
        }
        Ok(())
    }

    /// `ovs-vsctl` against this instance's database.
    pub fn vsctl(&self, args: &[&str]) -> io::Result<String> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut full = vec!["ovs-vsctl", "--timeout=30", db.as_str()];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&run(&full)?.stdout).into_owned())
    }

    /// A bridge on the userspace datapath.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        self.vsctl(&["add-br", name, "--", "set", "bridge", name, "datapath_type=netdev"])?;
        run(&["ip", "link", "set", name, "up"]).ok();
        self.bridges.push(name.to_string());
        Ok(())
    }

    /// A kernel interface (tap, veth) as a port of `bridge`.
    pub fn add_port(&self, bridge: &str, port: &str) -> io::Result<()> {
        self.vsctl(&["add-port", bridge, port]).map(|_| ())
    }

    /// A vhost-user port whose socket QEMU serves at `socket` (OVS is the
    /// client, so it reconnects when QEMU restarts).
    pub fn add_vhost_user(&self, bridge: &str, port: &str, socket: &Path) -> io::Result<()> {
        self.vsctl(&[
            "add-port",
            bridge,
            port,
            "--",
            "set",
            "Interface",
            port,
            "type=dpdkvhostuserclient",
            &format!("options:vhost-server-path={}", socket.display()),
        ])
        .map(|_| ())
    }

    /// `ovs-appctl` to the vswitchd (e.g. `dpif-netdev/pmd-stats-show`).
    pub fn appctl(&self, args: &[&str]) -> io::Result<String> {
        let ctl = self.dir.join("ovs-vswitchd.ctl");
        let mut full = vec!["ovs-appctl", "-t", ctl.to_str().unwrap()];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&run(&full)?.stdout).into_owned())
    }

    /// The CPU time (user + system, seconds) of each thread of the
    /// vswitchd, by thread name, from /proc.
    pub fn thread_cpu(&self) -> Vec<(String, f64)> {
        self.pids.last().map(|p| crate::qemu::thread_cpu(*p)).unwrap_or_default()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for b in self.bridges.clone() {
            let _ = self.vsctl(&["--if-exists", "del-br", &b]);
        }
        for pid in self.pids.iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10)
            && self.pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in &self.pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        if let Some(n) = self.pages_before {
            let _ = std::fs::write(HUGEPAGES, n.to_string());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
