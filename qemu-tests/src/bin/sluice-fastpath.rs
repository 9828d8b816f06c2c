//! sluice's own limit on the fast path: both ports on vhost-user, driven by
//! DPDK's `dpdk-testpmd` (not the kernel, not QEMU's main loop). One
//! testpmd owns both sockets in `flowgen` mode: on each port it sends
//! 64-byte UDP frames of N flows (flowgen varies the destination address:
//! 10.253.0.0 + flow, from 10.254.0.0:1000 to port 1001, MAC
//! 00:01:02:03:04:00 → 00:01:02:03:04:01, so both sluice NICs get that MAC)
//! and counts what comes back. So sluice forwards both ways at once, as
//! RFC 2544 does: the wire passes lan ⇄ wan; the router sends both
//! directions out wan (its default route), the lan side routed, the wan
//! side hairpinned; the NAT translates lan → wan and routes the rest. The
//! generator runs flat out; what sluice forwards is its limit, and the
//! counters say where the rest went: refused by sluice's receive rings
//! (testpmd's TX-dropped) or lost inside sluice (its drop counters).
//!
//! Why one testpmd: two busy-polling processes on one core take turns of
//! milliseconds, and a sink that waits its turn lets sluice's transmit ring
//! overflow (tried: a separate rxonly sink took 36k pps of 970k). Pinning:
//! QEMU's vCPU thread on CPU 0, testpmd's lcores on CPU 1.
//! Every testpmd gets `--no-pci` (DPDK would probe this machine's own NIC),
//! `--in-memory` and its own file prefix; hugepages are set up for the run
//! and put back after.
//!
//! `sluice-fastpath [SECONDS]` (make bench runs it). It needs `dpdk-testpmd`
//! (Debian's dpdk-dev; `make bench` installs it). SLUICE_ONLY=router runs
//! the rows whose name contains that; SLUICE_VERBOSE=1 prints the consoles.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::qemu::{Accel, Machine, NicSpec, Vm, VmSpec};
use sluice::topology::unique_id;

/// flowgen's fixed addresses (DPDK 22.11).
const GEN_DST_MAC: &str = "00:01:02:03:04:01";

struct Testpmd {
    child: Child,
    name: &'static str,
    /// Where its output goes (a file: testpmd writes a lot, and a full
    /// pipe would stall it).
    out: PathBuf,
}

impl Testpmd {
    /// Starts an interactive testpmd on vhost-user sockets `socks` (client:
    /// QEMU serves them), forwarding mode `mode`.
    fn start(name: &'static str, socks: &[&Path], mode: &str, flows: u32, prefix: &str, dir: &Path) -> Testpmd {
        let mut args = vec![
            "--lcores".to_string(),
            "0@1,1@1".into(),
            "--no-pci".into(),
            "--in-memory".into(),
            "--iova-mode=va".into(),
            "-m".into(),
            "128".into(),
            format!("--file-prefix={prefix}"),
        ];
        for (i, sock) in socks.iter().enumerate() {
            args.push("--vdev".into());
            args.push(format!("net_vhost{i},iface={},client=1", sock.display()));
        }
        args.extend([
            "--".into(),
            "-i".into(),
            format!("--forward-mode={mode}"),
            "--nb-cores=1".into(),
            "--txpkts=64".into(),
            // 16k mbufs (35 MiB), not testpmd's default 155k (338 MiB).
            "--total-num-mbufs=16384".into(),
        ]);
        if mode == "flowgen" {
            args.push(format!("--flowgen-flows={flows}"));
        }
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("dpdk-testpmd")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("dpdk-testpmd (install dpdk-dev: make bench does)");
        Testpmd { child, name, out }
    }

    /// Err with its output if it has already exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            _ => Err(format!(
                "testpmd ({}) exited: {}",
                self.name,
                std::fs::read_to_string(&self.out)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("VHOST_CONFIG"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped");
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
    }

    /// Quits and returns everything it printed.
    fn finish(mut self) -> String {
        self.send("quit");
        drop(self.child.stdin.take());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.name;
    }
}

/// "NAME: N" in the accumulated forward statistics testpmd prints at
/// `stop` (the block after "Accumulated forward statistics for all ports").
fn stat(out: &str, key: &str) -> u64 {
    let all = out.rsplit("Accumulated forward statistics").next().unwrap_or("");
    all.split(key).nth(1).and_then(|s| s.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Pins the thread of `pid` named like `name` to `cpu`.
fn pin_thread(pid: u32, name: &str, cpu: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut pinned = false;
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.contains(name) {
            let tid = t.file_name().to_string_lossy().to_string();
            pinned |= Command::new("taskset").args(["-p", "-c", &cpu.to_string(), &tid]).output().is_ok();
        }
    }
    pinned
}

struct Hugepages(u64);

impl Hugepages {
    fn ensure(pages: u64) -> Hugepages {
        let path = "/proc/sys/vm/nr_hugepages";
        let before: u64 = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if before < pages {
            let _ = std::fs::write(path, pages.to_string());
        }
        Hugepages(before)
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.0.to_string());
    }
}

struct Row {
    name: String,
    flows: u32,
    offered: f64,
    refused: f64,
    delivered: f64,
    sluice_drops: Option<u64>,
    cpp: f64,
}

/// What runs in the VM: sluice with a config and RAM, or the Linux-VM NAT
/// baseline (Debian's kernel, nft masquerade: images/linuxvm).
enum Guest {
    Sluice {
        config: String,
        memory_mb: u32,
    },
    Linux,
    /// DPDK's testpmd in the Linux VM, its virtio PMD forwarding in this
    /// mode (`io`, `mac`).
    Testpmd(&'static str),
}

fn case(name: &str, guest: &Guest, flows: u32, seconds: u64) -> Result<Row, String> {
    let id = unique_id();
    let dir = std::env::temp_dir().join(format!("sluice-fastpath-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("fastpath.conf");
    let (lan, wan): (PathBuf, PathBuf) = (dir.join("lan.sock"), dir.join("wan.sock"));
    // testpmd first: it connects (and reconnects) as the client.
    let mut gen = Testpmd::start("gen", &[&lan, &wan], "flowgen", flows, &format!("gen{id}"), &dir);
    std::thread::sleep(Duration::from_secs(2));
    gen.alive()?;
    let accel = Accel::from_env().unwrap();
    let mut spec = match guest {
        Guest::Sluice { config, memory_mb } => {
            std::fs::write(&conf, config).unwrap();
            let mut spec = VmSpec::new(sluice::image_path(), Machine::Microvm, accel);
            spec.memory_mb = *memory_mb;
            spec.config = Some((conf.clone(), conf.display().to_string()));
            spec
        }
        Guest::Linux => {
            let cache = sluice::workspace_root().join("target/bench-cache/linuxvm");
            let mut spec = VmSpec::new(cache.join("vmlinuz"), Machine::PcQboot, accel);
            spec.initrd = Some(cache.join("initramfs.cpio.gz"));
            spec.cmdline = Some("console=ttyS0 quiet sluice.fastpath".into());
            spec.memory_mb = 512;
            spec
        }
        Guest::Testpmd(mode) => {
            let cache = sluice::workspace_root().join("target/bench-cache/linuxvm");
            let mut spec = VmSpec::new(cache.join("vmlinuz"), Machine::PcQboot, accel);
            spec.initrd = Some(cache.join("initramfs-testpmd.cpio.gz"));
            spec.cmdline = Some(format!("console=ttyS0 quiet sluice.testpmd={mode}"));
            spec.memory_mb = 512;
            // Debian's DPDK is built for corei7 (SSE4.2): TCG's default CPU
            // model lacks it.
            if accel == Accel::Tcg {
                spec.extra_args.extend(["-cpu".into(), "max".into()]);
            }
            spec
        }
    };
    spec.nics = vec![NicSpec::vhost_user("lan", GEN_DST_MAC, &lan), NicSpec::vhost_user("wan", GEN_DST_MAC, &wan)];
    let mut vm = Vm::start(&spec).map_err(|e| e.to_string())?;
    let sluice = matches!(guest, Guest::Sluice { .. });
    let ready = match guest {
        Guest::Sluice { .. } => "sluice ready",
        Guest::Linux => "FORWARDING_READY",
        Guest::Testpmd(_) => "Press enter to exit",
    };
    if let Err(e) = vm.wait_for(ready, Duration::from_secs(180)) {
        if std::env::var_os("SLUICE_VERBOSE").is_some() {
            eprintln!("=== guest console ===\n{}\n=== end ===", vm.console());
        }
        return Err(e.what);
    }
    pin_thread(vm.pid(), "CPU 0/TCG", 0);
    std::thread::sleep(Duration::from_millis(500));
    gen.send("clear port stats all");
    let before = if sluice { vm.stats().ok() } else { None };
    let t = Instant::now();
    gen.send("start");
    std::thread::sleep(Duration::from_secs(seconds));
    gen.send("stop");
    let elapsed = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let (mut drops, mut cpp) = (None, 0.0);
    if let Some(before) = before {
        let after = vm.stats().map_err(|e| e.what)?;
        drops = Some(["lan", "wan"].iter().map(|p| after.get(p, "drops") - before.get(p, "drops")).sum());
        let mark = vm.mark();
        let _ = vm.stats();
        let console = vm.console();
        if std::env::var_os("SLUICE_VERBOSE").is_some() {
            eprintln!("{}", &console[mark..]);
        }
        cpp = console[mark..]
            .lines()
            .find(|l| l.starts_with("loop "))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("cycles_per_packet=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let _ = vm.quit();
    } else if std::env::var_os("SLUICE_VERBOSE").is_some() {
        std::thread::sleep(Duration::from_secs(5));
        eprintln!("=== guest console ===\n{}\n=== end ===", vm.console());
    }
    drop(vm);
    let g = gen.finish();
    if std::env::var_os("SLUICE_VERBOSE").is_some() {
        eprintln!(
            "--- testpmd ---\n{}",
            g.lines().filter(|l| !l.contains("VHOST_CONFIG")).collect::<Vec<_>>().join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let sent = stat(&g, "TX-packets:");
    let refused = stat(&g, "TX-dropped:");
    let got = stat(&g, "RX-packets:");
    Ok(Row {
        name: name.into(),
        flows,
        offered: (sent + refused) as f64 / elapsed,
        refused: refused as f64 / elapsed,
        delivered: got as f64 / elapsed,
        sluice_drops: drops,
        cpp,
    })
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    if Command::new("dpdk-testpmd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        println!("fast path: not measured: dpdk-testpmd is missing (Debian's dpdk-dev)");
        return;
    }
    let _pages = Hugepages::ensure(300);
    // Both NICs have flowgen's destination MAC; ports bind in order.
    let base = "port lan address 10.254.0.1/24\nport wan address 10.1.0.1/24\n\
                neighbor 10.1.0.2 mac 02:00:00:00:00:02\nroute 0.0.0.0/0 via 10.1.0.2\n";
    let nat = |sessions: u32| {
        format!(
            "{base}nat {{\n inside 10.254.0.0/24\n outside wan\n sessions {sessions}\n host-sessions {sessions}\n}}\n"
        )
    };
    println!(
        "fast path: vhost-user, dpdk-testpmd flowgen into both ports and counting both, 64-byte UDP, {seconds} s each ({})",
        Accel::from_env().unwrap().name()
    );
    println!(
        "{:<24} {:>8} {:>12} {:>12} {:>12} {:>8} {:>10}",
        "forwarder", "flows", "offered pps", "ring-full", "forwarded", "drops", "cyc/pkt"
    );
    let sl = |config: String, memory_mb: u32| Guest::Sluice { config, memory_mb };
    let mut cases: Vec<(String, Guest, u32)> =
        vec![("sluice wire (null)".into(), sl("port lan\nport wan\nwire lan wan\n".into(), 64), 1)];
    for flows in [1u32, 1000, 65_536, 1 << 20] {
        cases.push(("sluice router".into(), sl(base.into(), 64), flows));
    }
    for flows in [1u32, 1000, 65_536, 1 << 20] {
        // Room for the session table: 1M sessions need a few hundred MiB.
        let sessions = (flows * 2).next_power_of_two().max(65_536);
        let mb = if flows > 100_000 { 768 } else { 128 };
        cases.push(("sluice NAT".into(), sl(nat(sessions), mb), flows));
    }
    // The load balancer and the whole chain: one flow (flowgen's single
    // destination is the VIP), since flowgen varies only the destination.
    let lb = "service fast {\n vip 10.253.0.0:1001 udp\n mode dnat\n backend 10.1.0.2:1001\n check none\n}\n";
    cases.push(("sluice LB (dnat)".into(), sl(format!("{base}{lb}"), 64), 1));
    cases.push(("sluice LB + router + NAT".into(), sl(format!("{}{lb}", nat(65_536)), 128), 1));
    // The baseline on the same path: Linux's virtio-net and nft NAT.
    let built = Command::new(sluice::workspace_root().join("images/linuxvm/build.sh"))
        .arg(sluice::workspace_root().join("target/bench-cache/linuxvm"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if built {
        for flows in [1u32, 65_536] {
            cases.push(("baseline: Linux VM NAT".into(), Guest::Linux, flows));
        }
        // DPDK itself in the Linux VM: what a performance-minded user would
        // run instead (no NAT: io forwarding is the ceiling sluice's wire is
        // measured against, mac forwarding the same plus a MAC rewrite).
        if sluice::workspace_root().join("target/bench-cache/linuxvm/initramfs-testpmd.cpio.gz").exists() {
            for (name, mode) in [("baseline: testpmd io (VM)", "io"), ("baseline: testpmd mac (VM)", "mac")] {
                cases.push((name.into(), Guest::Testpmd(mode), 1));
            }
        } else {
            println!("baseline: testpmd in a VM: not measured: no dpdk-testpmd to put in the initramfs");
        }
    } else {
        println!("baseline: Linux VM NAT: not measured: images/linuxvm/build.sh failed");
    }
    if let Some(only) = std::env::var_os("SLUICE_ONLY") {
        let only = only.to_string_lossy().to_string();
        cases.retain(|c| c.0.contains(&only));
    }
    for (name, guest, flows) in cases {
        match case(&name, &guest, flows, seconds) {
            Ok(r) => println!(
                "{:<24} {:>8} {:>12.0} {:>12.0} {:>12.0} {:>8} {:>10}",
                r.name,
                r.flows,
                r.offered,
                r.refused,
                r.delivered,
                r.sluice_drops.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                if r.cpp > 0.0 { format!("{:.0}", r.cpp) } else { "-".into() }
            ),
            Err(e) => println!("{name:<24} {flows:>8} not measured: {e}"),
        }
    }
}
