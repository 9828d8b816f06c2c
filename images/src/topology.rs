//! Network namespaces and taps that clean up after themselves.
//!
//! Every object is named after the creating process (`pid` in hex) and a
//! counter, so parallel tests never clash, and [`sweep_stale`] can remove what
//! a killed process left behind. Drop removes namespaces, taps and the
//! processes started in a namespace, by name and PID, also when a test panics.

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short id unique to this process and call: `<pid hex><counter hex>`.
pub fn unique_id() -> String {
    format!("{:x}x{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command; an error carries its stderr.
pub fn run(cmd: &[&str]) -> io::Result<Output> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{}` failed ({}): {}",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A network namespace.
pub struct Netns {
    pub name: String,
    children: Mutex<Vec<Child>>,
}

impl Netns {
    pub fn create(name: &str) -> io::Result<Netns> {
        run(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.to_string(), children: Mutex::new(Vec::new()) };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Builds a command that runs inside the namespace.
    pub fn command(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(cmd);
        c
    }

    /// Runs a command inside the namespace; fails if it fails.
    pub fn exec(&self, cmd: &[&str]) -> io::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// Runs a command inside the namespace and returns its output, whatever
    /// its exit status.
    pub fn output(&self, cmd: &[&str]) -> io::Result<Output> {
        self.command(cmd).stdin(Stdio::null()).output()
    }

    /// Adds a Linux bridge `br0` here and brings it up.
    pub fn add_bridge(&self) -> io::Result<()> {
        self.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        self.exec(&["ip", "link", "set", "br0", "up"])?;
        Ok(())
    }

    /// A host behind a veth: creates namespace `name` and a veth pair, `here`
    /// in this namespace (joined to `br0` with `bridge`, else given
    /// `here_addr` if any) and `there` in the new one with `addr` (CIDR);
    /// both ends up. The pair goes with the new namespace.
    pub fn veth_host(&self, name: &str, here: &str, there: &str, addr: &str, bridge: bool) -> io::Result<Netns> {
        let host = Netns::create(name)?;
        run(&[
            "ip", "-n", &self.name, "link", "add", here, "type", "veth", "peer", "name", there, "netns", &host.name,
        ])?;
        if bridge {
            self.exec(&["ip", "link", "set", here, "master", "br0"])?;
        }
        self.exec(&["ip", "link", "set", here, "up"])?;
        host.exec(&["ip", "addr", "add", addr, "dev", there])?;
        host.exec(&["ip", "link", "set", there, "up"])?;
        Ok(host)
    }

    /// Starts a background process inside the namespace; it is killed when
    /// the namespace is dropped.
    pub fn spawn(&self, cmd: &[&str]) -> io::Result<u32> {
        let child = self.command(cmd).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        Ok(pid)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_pids_in(&self.name);
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Kills every process still inside namespace `name`, by PID.
fn kill_pids_in(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// A tap device created in the root namespace (QEMU opens it there) and
/// possibly moved into a namespace later.
pub struct Tap {
    pub name: String,
    netns: Option<String>,
}

impl Tap {
    pub fn create(name: &str) -> io::Result<Tap> {
        run(&["ip", "tuntap", "add", "dev", name, "mode", "tap"])?;
        // Bursty senders overflow the default 1000 before QEMU reads (FACTS.md).
        let _ = run(&["ip", "link", "set", name, "txqueuelen", "20000"]);
        Ok(Tap { name: name.to_string(), netns: None })
    }

    /// Takes charge of interface `name` in `ns` (a veth end, say): deleted
    /// there when dropped, like a tap.
    pub fn adopt(name: &str, ns: &Netns) -> Tap {
        Tap { name: name.to_string(), netns: Some(ns.name.clone()) }
    }

    /// Records that the tap now lives in `ns` (moved by the caller), so it
    /// is deleted there.
    pub fn set_netns(&mut self, ns: &Netns) {
        self.netns = Some(ns.name.clone());
    }

    /// Moves the tap into `ns` without an address, as a member of its `br0`.
    pub fn into_bridge(&mut self, ns: &Netns) -> io::Result<()> {
        run(&["ip", "link", "set", &self.name, "netns", &ns.name])?;
        self.netns = Some(ns.name.clone());
        ns.exec(&["ip", "link", "set", &self.name, "master", "br0", "up"])?;
        Ok(())
    }

    /// Moves the tap into `ns`, gives it `addr` (CIDR; none if empty) and
    /// brings it up.
    pub fn move_to(&mut self, ns: &Netns, addr: &str) -> io::Result<()> {
        run(&["ip", "link", "set", &self.name, "netns", &ns.name])?;
        self.netns = Some(ns.name.clone());
        if !addr.is_empty() {
            ns.exec(&["ip", "addr", "add", addr, "dev", &self.name])?;
        }
        ns.exec(&["ip", "link", "set", &self.name, "up"])?;
        Ok(())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        match &self.netns {
            Some(ns) => {
                let _ = run(&["ip", "-n", ns, "link", "del", &self.name]);
            }
            None => {
                let _ = run(&["ip", "link", "del", &self.name]);
            }
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces (`sluice-<pid>x...`) and taps (`st<pid>x...`) left by
/// processes that no longer exist.
pub fn sweep_stale() {
    let dead = |id: &str| {
        id.split('x').next().and_then(|p| u32::from_str_radix(p, 16).ok()).is_some_and(|pid| !pid_alive(pid))
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(rest) = name.strip_prefix("sluice-t") {
                if dead(rest) {
                    kill_pids_in(name);
                    let _ = run(&["ip", "netns", "del", name]);
                }
            }
        }
    }
    // Labs of dead processes: their OVS daemons (by pid file), then the
    // directory (an OVS-DPDK would hold hugepages and a core otherwise).
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("sluice-lab-").or_else(|| name.strip_prefix("sluice-fastpath-")) else {
                continue;
            };
            if !dead(rest) {
                continue;
            }
            for pidfile in ["ovs/ovs-vswitchd.pid", "ovs/ovsdb-server.pid"] {
                let pid =
                    std::fs::read_to_string(e.path().join(pidfile)).ok().and_then(|p| p.trim().parse::<u32>().ok());
                if let Some(pid) = pid.filter(|p| pid_alive(*p)) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            // Taps and veths (st…), OVS bridges' ports (sb…), the chain's
            // and libvirt test's bridges (sc…, sl…).
            let name = name.split('@').next().unwrap_or(name);
            if let Some(rest) = ["st", "sb", "sc", "sl"].iter().find_map(|p| name.strip_prefix(p)) {
                if rest.contains('x') && dead(rest) {
                    let _ = run(&["ip", "link", "del", name]);
                }
            }
        }
    }
}
