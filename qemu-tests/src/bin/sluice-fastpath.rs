//! sluice's own limit on the fast path: both ports on vhost-user, driven by
//! a DPDK generator (`qemu-tests/gen/sluice-gen.c`, not the kernel, not
//! QEMU's main loop). The generator owns both sockets: on the lan port it
//! sends 64-byte UDP frames of N flows (flow i from 10.254.0.2 + i % 250,
//! source port 1024 + i / 250, to the server 10.1.0.2:1001 or the LB's VIP)
//! at a set rate; on the wan port it is that server and sends every datagram
//! back (addresses and ports swapped); it counts what returns on lan and
//! answers ARP on both. So a forwarder carries each offered packet twice, as
//! request and reply, and a NAT or a load balancer sees N real sessions.
//!
//! Each row: 2 s flat out (sessions made, neighbours resolved; the
//! generator as fast as the lan ring takes frames: the most that gets
//! through), then a binary search of 7 one-second trials for the highest
//! offered rate with < 0.1 % loss (RFC 2544's throughput), then SECONDS at
//! the lowest lossy rate found, to say where the loss is: `lan-ring` and
//! `wan-ring` are the shares of frames the vhost enqueue refused (the
//! forwarder's receive ring full; the generator sending or reflecting),
//! `drops` the forwarder's own drop counters (the biggest reason beside
//! it), `pool` its buffer pool found empty. Every trial goes to
//! target/bench/fastpath.csv and fastpath.png (delivered vs offered).
//!
//! Beside sluice, in the same run and on the same path: the Linux VM doing
//! the same NAT (virtio-net + nft masquerade, conntrack room for 2M), and
//! DPDK's testpmd in a Linux VM forwarding in `io` and `mac` mode (its
//! virtio PMD, the same single vCPU).
//!
//! Pinning: QEMU's vCPU thread on CPU 0, the generator's lcores on CPU 1.
//! The generator gets `--no-pci` (DPDK would probe this machine's own NIC),
//! `--in-memory` and its own file prefix; hugepages are set up for the run
//! and put back after.
//!
//! `sluice-fastpath [SECONDS]` (make bench runs it; SECONDS is the flat-out
//! trial). It needs Debian's dpdk-dev (libdpdk-dev, dpdk-testpmd) and a C
//! compiler; `make bench` installs them. SLUICE_ONLY=router runs the rows
//! whose name contains that, SLUICE_FLOWS=1,1000 those flow counts;
//! SLUICE_RING=256 gives the NICs rings of that size (default 1024);
//! SLUICE_VERBOSE=1 prints the consoles.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::qemu::{Accel, Machine, NicSpec, Vm, VmSpec};
use sluice::topology::unique_id;

const LAN_MAC: &str = "52:54:00:fa:00:01";
const WAN_MAC: &str = "52:54:00:fa:00:02";
/// The generator's MACs: a host on lan, the server (10.1.0.2) on wan.
const GEN_LAN_MAC: &str = "02:00:00:00:00:01";
const GEN_WAN_MAC: &str = "02:00:00:00:00:02";
/// The load balancer's VIP (the generator's destination in the LB rows).
const VIP: &str = "10.253.0.10";
const SERVER: &str = "10.1.0.2";
/// Loss below which a trial counts as lossless (RFC 2544 asks for zero; a
/// tenth of a percent is the bar).
const LOSS: f64 = 0.001;

/// One trial's counters, as the generator prints them.
#[derive(Clone, Copy, Default, Debug)]
struct Trial {
    sent: u64,
    refused: u64,
    received: u64,
    rx1: u64,
    reflect_refused: u64,
    secs: f64,
}

impl Trial {
    fn parse(line: &str) -> Trial {
        let get = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Trial {
            sent: get("sent"),
            refused: get("refused"),
            received: get("received"),
            rx1: get("rx1"),
            reflect_refused: get("reflect_refused"),
            secs: get("ns") as f64 / 1e9,
        }
    }
    /// Offered on lan, per second (what was sent and what the ring refused).
    fn offered(&self) -> f64 {
        (self.sent + self.refused) as f64 / self.secs.max(1e-9)
    }
    /// Came back on lan, per second.
    fn delivered(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }
    /// Packets the forwarder passed, both directions, per second.
    fn forwarded(&self) -> f64 {
        (self.received + self.rx1) as f64 / self.secs.max(1e-9)
    }
    fn loss(&self) -> f64 {
        let offered = self.sent + self.refused;
        if offered == 0 {
            return 1.0;
        }
        1.0 - self.received as f64 / offered as f64
    }
}

/// The generator process: commands on stdin, one answer line each.
struct Gen {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    /// Its other output (EAL's log), the last lines, for errors.
    log: Arc<Mutex<Vec<String>>>,
}

impl Gen {
    fn start(bin: &Path, socks: [&Path; 2], flows: u32, dst: &str, prefix: &str) -> Result<Gen, String> {
        let mut args: Vec<String> = vec![
            "--lcores".into(),
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
        args.push("--".into());
        for (k, v) in [
            ("--flows", flows.to_string()),
            ("--hosts", "250".into()),
            ("--src", "10.254.0.2".into()),
            ("--sport", "1024".into()),
            ("--dst", dst.into()),
            ("--dport", "1001".into()),
            ("--mac0", GEN_LAN_MAC.into()),
            ("--mac1", GEN_WAN_MAC.into()),
            ("--dut-mac", LAN_MAC.into()),
        ] {
            args.push(k.into());
            args.push(v);
        }
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("sluice-gen: {e}"))?;
        let (tx, answers) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        // Both streams read all the time (a full pipe would stall it).
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if ["gen ready", "result ", "error", "sluice-gen:"].iter().any(|p| line.starts_with(p)) {
                        let _ = tx.send(line.clone());
                    }
                    if !line.contains("VHOST_CONFIG") {
                        let mut log = log.lock().unwrap();
                        log.push(line);
                        let n = log.len();
                        if n > 40 {
                            log.drain(..n - 40);
                        }
                    }
                }
            });
        }
        let stdin = child.stdin.take().expect("piped");
        let mut gen = Gen { child, stdin, answers, log };
        gen.answer("gen ready", Duration::from_secs(30))?;
        Ok(gen)
    }

    fn answer(&mut self, want: &str, timeout: Duration) -> Result<String, String> {
        match self.answers.recv_timeout(timeout) {
            Ok(line) if line.starts_with(want) => Ok(line),
            Ok(line) => Err(format!("sluice-gen: {line} | {}", self.log.lock().unwrap().join(" | "))),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                Err(format!("sluice-gen: no `{want}` in {timeout:?} | {}", self.log.lock().unwrap().join(" | ")))
            }
        }
    }

    /// One trial at `rate` pps on lan (0: flat out) for `secs`.
    fn run(&mut self, rate: f64, secs: u64) -> Result<Trial, String> {
        writeln!(self.stdin, "run {} {secs} 300", rate as u64).map_err(|e| e.to_string())?;
        let line = self.answer("result ", Duration::from_secs(secs + 15))?;
        if std::env::var_os("SLUICE_VERBOSE").is_some() {
            eprintln!("gen: run {} {secs}: {line}", rate as u64);
        }
        Ok(Trial::parse(&line))
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the generator into target/bench-cache (again when its source is
/// newer).
fn build_gen() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("gen/sluice-gen.c");
    let out = sluice::workspace_root().join("target/bench-cache/sluice-gen");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&out).is_some() && mtime(&out) >= mtime(&src) {
        return Ok(out);
    }
    std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libdpdk"])
        .output()
        .map_err(|e| format!("pkg-config: {e}"))?;
    if !flags.status.success() {
        return Err("pkg-config finds no libdpdk (Debian's libdpdk-dev)".into());
    }
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    let cc = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .args(flags.split_whitespace())
        .output()
        .map_err(|e| format!("cc: {e}"))?;
    if !cc.status.success() {
        return Err(format!("cc {}: {}", src.display(), String::from_utf8_lossy(&cc.stderr)));
    }
    Ok(out)
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

/// What runs in the VM: sluice with a config and RAM, the Linux-VM NAT
/// (Debian's kernel, nft masquerade: images/linuxvm), or DPDK's testpmd in
/// that VM forwarding in a mode (`io`, `mac`).
enum Guest {
    Sluice { config: String, memory_mb: u32 },
    Linux { memory_mb: u32 },
    Testpmd(&'static str),
}

struct Case {
    name: String,
    guest: Guest,
    flows: u32,
    /// The generator's destination: the server, or the VIP.
    dst: &'static str,
}

struct Row {
    lossless: Trial,
    /// Flat out was lossless: the generator, not the forwarder, was the limit.
    generator_bound: bool,
    flat: Trial,
    /// The trial just above the lossless rate.
    over: Trial,
    /// sluice's counters over `over`: drops, the biggest drop reason, pool
    /// found empty, cycles per packet.
    drops: Option<(u64, String, u64, f64)>,
    trials: Vec<Trial>,
}

fn counter_diff(before: &sluice::qemu::Stats, after: &sluice::qemu::Stats) -> (u64, String, u64) {
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut drops = 0;
    for port in ["lan", "wan"] {
        drops += after.get(port, "drops").saturating_sub(before.get(port, "drops"));
        if let Some(counters) = after.ports.get(port) {
            for (k, v) in counters {
                if let Some(reason) = k.strip_prefix("drop_") {
                    *reasons.entry(reason.to_string()).or_default() += v.saturating_sub(before.get(port, k));
                }
            }
        }
    }
    let top = reasons.into_iter().filter(|r| r.1 > 0).max_by_key(|r| r.1).map(|r| r.0).unwrap_or_default();
    let pool = |s: &sluice::qemu::Stats| s.pool.get("exhausted").copied().unwrap_or(0);
    (drops, top, pool(after).saturating_sub(pool(before)))
}

fn case(gen_bin: &Path, c: &Case, seconds: u64) -> Result<Row, String> {
    let id = unique_id();
    let dir = std::env::temp_dir().join(format!("sluice-fastpath-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _clean = Cleanup(dir.clone());
    let conf = dir.join("fastpath.conf");
    let (lan, wan) = (dir.join("lan.sock"), dir.join("wan.sock"));
    // The generator first: it connects (and reconnects) as the client.
    let mut gen = Gen::start(gen_bin, [&lan, &wan], c.flows, c.dst, &format!("gen{id}"))?;
    let accel = Accel::from_env().unwrap();
    let cache = sluice::workspace_root().join("target/bench-cache/linuxvm");
    let mut spec = match &c.guest {
        Guest::Sluice { config, memory_mb } => {
            std::fs::write(&conf, config).unwrap();
            let mut spec = VmSpec::new(sluice::image_path(), Machine::Microvm, accel);
            spec.memory_mb = *memory_mb;
            spec.config = Some((conf.clone(), conf.display().to_string()));
            spec
        }
        Guest::Linux { memory_mb } => {
            let mut spec = VmSpec::new(cache.join("vmlinuz"), Machine::PcQboot, accel);
            spec.initrd = Some(cache.join("initramfs.cpio.gz"));
            spec.cmdline = Some("console=ttyS0 quiet sluice.fastpath".into());
            spec.memory_mb = *memory_mb;
            spec
        }
        Guest::Testpmd(mode) => {
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
    spec.nics = vec![NicSpec::vhost_user("lan", LAN_MAC, &lan), NicSpec::vhost_user("wan", WAN_MAC, &wan)];
    if let Some(ring) = std::env::var("SLUICE_RING").ok().and_then(|r| r.parse().ok()) {
        for n in &mut spec.nics {
            n.ring = Some(ring);
        }
    }
    let mut vm = Vm::start(&spec).map_err(|e| e.to_string())?;
    let sluice = matches!(c.guest, Guest::Sluice { .. });
    let ready = match c.guest {
        Guest::Sluice { .. } => "sluice ready",
        Guest::Linux { .. } => "FORWARDING_READY",
        Guest::Testpmd(_) => "Press enter to exit",
    };
    let verbose = std::env::var_os("SLUICE_VERBOSE").is_some();
    if let Err(e) = vm.wait_for(ready, Duration::from_secs(180)) {
        if verbose {
            eprintln!("=== guest console ===\n{}\n=== end ===", vm.console());
        }
        return Err(e.what);
    }
    pin_thread(vm.pid(), "CPU 0/TCG", 0);
    pin_thread(vm.pid(), "CPU 0/KVM", 0);
    std::thread::sleep(Duration::from_millis(500));
    // Flat out for 2 s: sessions and flows made, neighbours resolved, and
    // the most the forwarder passes when the generator does not wait (a
    // generator spinning on a full ring also slows the guest's side of it:
    // the lossless rate is the figure to compare).
    let flat = gen.run(0.0, 2)?;
    let mut trials = vec![flat];
    // The search: the highest rate with < 0.1 % loss, between nothing and
    // a little above what came back flat out (what the generator offered
    // flat out is far more: the rate at which the ring refuses frames).
    let (mut lo, mut hi) = (0.0f64, (flat.delivered() * 1.3).min(flat.offered()));
    let mut lossless = Trial::default();
    let generator_bound = flat.loss() < LOSS;
    if generator_bound {
        lossless = flat;
        hi = flat.offered();
    } else {
        for _ in 0..7 {
            let mid = (lo + hi) / 2.0;
            let t = gen.run(mid, 1)?;
            trials.push(t);
            if t.loss() < LOSS {
                lo = mid;
                lossless = t;
            } else {
                hi = mid;
            }
        }
    }
    // Just above the lossless rate (the lowest lossy rate tried): where the
    // loss is, from the generator's and sluice's counters.
    let over_rate = if generator_bound { 0.0 } else { hi.max(lo * 1.05) };
    let before = if sluice { vm.stats().ok() } else { None };
    let over = gen.run(over_rate, seconds)?;
    trials.push(over);
    let mut drops = None;
    if let Some(before) = before {
        let after = vm.stats().map_err(|e| e.what)?;
        let (n, top, pool) = counter_diff(&before, &after);
        let mark = vm.mark();
        let _ = vm.stats();
        let console = vm.console();
        let cpp = console[mark..]
            .lines()
            .find(|l| l.starts_with("loop "))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("cycles_per_packet=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if verbose {
            eprintln!("{}", &console[mark..]);
        }
        drops = Some((n, top, pool, cpp));
    }
    if verbose && !sluice {
        eprintln!("=== guest console ===\n{}\n=== end ===", vm.console());
    }
    let _ = vm.quit();
    drop(vm);
    drop(gen);
    Ok(Row { lossless, generator_bound, flat, over, drops, trials })
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kpps(v: f64) -> String {
    format!("{:.0}k", v / 1000.0)
}

/// `part` of `whole` as a percentage.
fn pct(part: u64, whole: u64) -> String {
    format!("{:.2}%", 100.0 * part as f64 / whole.max(1) as f64)
}

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let gen_bin = match build_gen() {
        Ok(b) => b,
        Err(e) => {
            println!("fast path: not measured: the generator did not build: {e}");
            return;
        }
    };
    let _pages = Hugepages::ensure(300);
    let base = format!(
        "port lan address 10.254.0.1/24\nport wan address 10.1.0.1/24\n\
         neighbor {SERVER} mac {GEN_WAN_MAC}\nroute 0.0.0.0/0 via {SERVER}\n"
    );
    // 32 pool addresses (2M ports): every flow goes to the one server, so
    // each needs its own address and port (the Linux VM gets the same
    // range: images/linuxvm/init).
    let pool: String = (10..42).map(|i| format!(" pool 10.1.0.{i}\n")).collect();
    let nat = |sessions: u32| {
        format!(
            "nat {{\n inside 10.254.0.0/24\n outside wan\n{pool} sessions {sessions}\n host-sessions {sessions}\n}}\n"
        )
    };
    let lb = |flows: u32| {
        format!(
            "lb flows {flows}\nservice fast {{\n vip {VIP}:1001 udp\n mode dnat\n backend {SERVER}:1001\n check none\n}}\n"
        )
    };
    let sl = |config: String, memory_mb: u32| Guest::Sluice { config, memory_mb };
    let mut cases: Vec<Case> = Vec::new();
    for flows in [1u32, 1000, 65_536, 1 << 20] {
        // Room for the tables: a million sessions need a few hundred MiB.
        let room = (flows * 2).next_power_of_two().max(65_536);
        let mb = |small: u32| if flows > 100_000 { small * 8 } else { small };
        let case = |name: &str, guest: Guest, dst: &'static str| Case { name: name.into(), guest, flows, dst };
        cases.push(case("sluice wire (null)", sl("port lan\nport wan\nwire lan wan\n".into(), 64), SERVER));
        cases.push(case("sluice router", sl(base.clone(), 64), SERVER));
        cases.push(case("sluice NAT", sl(format!("{base}{}", nat(room)), mb(128)), SERVER));
        cases.push(case("sluice LB (dnat)", sl(format!("{base}{}", lb(room)), mb(128)), VIP));
        cases.push(case("sluice LB+router+NAT", sl(format!("{base}{}{}", nat(room), lb(room)), mb(192)), VIP));
    }
    // The baselines on the same path: Linux's virtio-net and nft NAT, and
    // DPDK itself in the Linux VM.
    let built = Command::new(sluice::workspace_root().join("images/linuxvm/build.sh"))
        .arg(sluice::workspace_root().join("target/bench-cache/linuxvm"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if built {
        for flows in [1u32, 1000, 65_536, 1 << 20] {
            let memory_mb = if flows > 100_000 { 1024 } else { 512 };
            cases.push(Case {
                name: "baseline: Linux VM NAT".into(),
                guest: Guest::Linux { memory_mb },
                flows,
                dst: SERVER,
            });
        }
        if sluice::workspace_root().join("target/bench-cache/linuxvm/initramfs-testpmd.cpio.gz").exists() {
            for (name, mode) in [("baseline: testpmd io (VM)", "io"), ("baseline: testpmd mac (VM)", "mac")] {
                cases.push(Case { name: name.into(), guest: Guest::Testpmd(mode), flows: 1, dst: SERVER });
            }
        } else {
            println!("baseline: testpmd in a VM: not measured: no dpdk-testpmd to put in the initramfs");
        }
    } else {
        println!("baseline: Linux VM NAT: not measured: images/linuxvm/build.sh failed");
    }
    if let Some(only) = std::env::var_os("SLUICE_ONLY") {
        let only = only.to_string_lossy().to_string();
        cases.retain(|c| c.name.contains(&only));
    }
    if let Some(flows) = std::env::var_os("SLUICE_FLOWS") {
        let flows: Vec<u32> = flows.to_string_lossy().split(',').filter_map(|f| f.trim().parse().ok()).collect();
        cases.retain(|c| flows.contains(&c.flows));
    }
    // Rows in forwarder order, flow counts within.
    cases.sort_by_key(|c| (forwarder_rank(&c.name), c.flows));

    println!(
        "fast path: vhost-user, sluice-gen (DPDK) on CPU 1, the guest's vCPU on CPU 0 ({}); 64-byte UDP round trips, \
         each packet forwarded out and back; lossless = < 0.1 % loss, flat out = {seconds} s as fast as the ring takes",
        Accel::from_env().unwrap().name()
    );
    println!(
        "{:<24} {:>7} {:>9} {:>9} | just above the lossless rate: forwarded, and where the rest was lost",
        "", "", "lossless", "flat out"
    );
    println!(
        "{:<24} {:>7} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>8} {:>5} {:>7}  top drop",
        "forwarder", "flows", "fwd pps", "fwd pps", "fwd pps", "lan-ring", "wan-ring", "drops", "pool", "cyc/pkt"
    );
    let out = sluice::workspace_root().join("target/bench");
    let mut csv = String::from("forwarder,flows,trial,offered_pps,delivered_pps,loss\n");
    let mut results: Vec<(String, u32, f64)> = Vec::new();
    for c in &cases {
        match case(&gen_bin, c, seconds) {
            Ok(r) => {
                let (drops, top, pool, cpp) = match &r.drops {
                    Some((n, top, pool, cpp)) => (n.to_string(), top.clone(), pool.to_string(), format!("{cpp:.0}")),
                    None => ("-".into(), String::new(), "-".into(), "-".into()),
                };
                println!(
                    "{:<24} {:>7} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>8} {:>5} {:>7}  {}",
                    c.name,
                    c.flows,
                    format!("{}{}", if r.generator_bound { "≥" } else { "" }, kpps(r.lossless.forwarded())),
                    kpps(r.flat.forwarded()),
                    kpps(r.over.forwarded()),
                    pct(r.over.refused, r.over.sent + r.over.refused),
                    pct(r.over.reflect_refused, r.over.rx1),
                    drops,
                    pool,
                    cpp,
                    top
                );
                for (i, t) in r.trials.iter().enumerate() {
                    let kind = if i == 0 { "flat-out" } else { "paced" };
                    csv += &format!(
                        "{},{},{kind},{:.0},{:.0},{:.5}\n",
                        c.name,
                        c.flows,
                        t.offered(),
                        t.delivered(),
                        t.loss()
                    );
                }
                results.push((c.name.clone(), c.flows, r.lossless.forwarded()));
            }
            Err(e) => println!("{:<24} {:>7} not measured: {e}", c.name, c.flows),
        }
    }
    summary(&results);
    println!("trials: {}", sluice_qemu_tests::write_and_plot(&out, "fastpath", &csv, "plot_fastpath.py"));
}

fn forwarder_rank(name: &str) -> usize {
    FORWARDERS.iter().position(|k| *k == name).unwrap_or(FORWARDERS.len())
}

const FORWARDERS: [&str; 8] = [
    "sluice wire (null)",
    "sluice router",
    "sluice NAT",
    "sluice LB (dnat)",
    "sluice LB+router+NAT",
    "baseline: Linux VM NAT",
    "baseline: testpmd io (VM)",
    "baseline: testpmd mac (VM)",
];

/// The goals against this run's lossless rates.
fn summary(results: &[(String, u32, f64)]) {
    let get =
        |name: &str, flows: u32| results.iter().find(|r| r.0 == name && r.1 == flows).map(|r| r.2).filter(|v| *v > 0.0);
    let ratio = |what: &str, a: Option<f64>, b: Option<f64>, goal: f64| match (a, b) {
        (Some(a), Some(b)) => {
            let r = a / b;
            println!("goal: {what}: {r:.2}× (goal ≥ {goal}×: {})", if r >= goal { "met" } else { "missed" })
        }
        _ => println!("goal: {what}: not measured in this run"),
    };
    ratio("sluice NAT / sluice wire at 64k flows", get("sluice NAT", 65_536), get("sluice wire (null)", 65_536), 0.9);
    for flows in [1u32, 1000, 65_536, 1 << 20] {
        ratio(
            &format!("sluice NAT / Linux VM NAT at {flows} flows"),
            get("sluice NAT", flows),
            get("baseline: Linux VM NAT", flows),
            3.0,
        );
    }
    ratio("sluice wire / testpmd io (VM)", get("sluice wire (null)", 1), get("baseline: testpmd io (VM)", 1), 1.0);
    for name in &FORWARDERS[..5] {
        ratio(&format!("{name} at 1M flows / at 1 flow"), get(name, 1 << 20), get(name, 1), 0.7);
    }
}
