//! End-to-end forwarding rate, 64-byte UDP frames from a sender namespace
//! through the forwarder to a receiver namespace, at stepped offered rates:
//! sluice as a wire (null pipeline: the ceiling of the virtual I/O path),
//! as a router, as a NAT; beside them, in the same run, the host kernel as
//! a namespace router with nft masquerade (the no-VM alternative).
//! Offered: trafgen asked for a rate, and what it achieved is reported (a
//! tap pushes back when its reader falls behind); delivered: the receiver
//! interface's packet counter. Prints the highest achieved offered rate
//! with < 0.1% loss and the peak delivered rate. One 5-tuple, then both
//! NATs again at about 1k, 64k and 1M flows (trafgen's varying source
//! bytes: [`Flows`]; `sluice-e2e flows` runs only those).
//!
//! The Linux-VM baseline is Debian's kernel with a busybox initramfs doing
//! the same NAT with nft (images/linuxvm/build.sh, cached under
//! target/bench-cache); it and a sluice NAT run on the same machine type
//! (pc + qboot), accelerator and taps.

use std::time::{Duration, Instant};

use sluice::lab::{Lab, LabSpec};
use sluice::qemu::{Accel, Machine, NicSpec, Vm, VmSpec};
use sluice::topology::{run, unique_id, Netns, Tap};

const RATES: &[u64] = &[25_000, 50_000, 100_000, 200_000, 400_000, 800_000];
const SECONDS: u64 = 2;

fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = ns.output(&["cat", &format!("/sys/class/net/{dev}/statistics/rx_packets")]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.output(&["cat", &format!("/sys/class/net/{dev}/address")]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Drops the test traffic at the receiver, so no ICMP flows back.
fn sink(ns: &Netns) {
    let _ = ns.exec(&["nft", "add table inet sink"]);
    let _ = ns.exec(&["nft", "add chain inet sink in { type filter hook input priority 0; }"]);
    let _ = ns.exec(&["nft", "add rule inet sink in udp dport 9 drop"]);
}

thread_local! {
    /// Flows in the sweeps that follow (see [`Flows`]).
    static FLOWS: std::cell::Cell<Flows> = const { std::cell::Cell::new(Flows::One) };
}

/// How many 5-tuples trafgen's frames carry. trafgen changes bytes, not
/// numbers: each varying byte steps once a frame through its own range,
/// and ranges of coprime lengths give every combination — the source
/// address's last byte over 2..=252 (251, a prime), the source port's low
/// byte over 4 or 256 values, and for a million its high byte over 17.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flows {
    One,
    K1,
    K64,
    M1,
}

impl Flows {
    fn count(self) -> u32 {
        match self {
            Flows::One => 1,
            Flows::K1 => 251 * 4,
            Flows::K64 => 251 * 256,
            Flows::M1 => 251 * 17 * 256,
        }
    }
    /// trafgen's bytes for the source address's last byte and the source
    /// port (10.0.0.2:4000 for one flow).
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Flows::One => ("2", "0x0f, 0xa0"),
            Flows::K1 => ("dinc(2, 252)", "0x0f, dinc(0, 3)"),
            Flows::K64 => ("dinc(2, 252)", "0x0f, dinc(0, 255)"),
            Flows::M1 => ("dinc(2, 252)", "dinc(0x10, 0x20), dinc(0, 255)"),
        }
    }
}

/// Writes the trafgen packet: 64-byte UDP 10.0.0.2:4000 → 10.1.0.2:9
/// (or the current [`FLOWS`]' sources) from `src_mac` to `dst_mac`;
/// trafgen recomputes the IPv4 checksum of a frame with varying bytes.
fn trafgen_conf(dir: &std::path::Path, dst_mac: &str, src_mac: &str) -> std::path::PathBuf {
    let conf = dir.join("udp64.trafgen");
    let hex = |m: &str| m.split(':').map(|b| format!("0x{b}")).collect::<Vec<_>>().join(", ");
    let (host, sport) = FLOWS.with(|f| f.get()).fields();
    std::fs::write(
        &conf,
        format!(
            "{{ {}, {}, 0x08, 0x00, 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, csumip(14, 33), 10, 0, 0, {host}, 10, 1, 0, 2, \
             {sport}, 0, 9, 0, 26, 0, 0, fill(0, 18) }}\n",
            hex(dst_mac),
            hex(src_mac)
        ),
    )
    .unwrap();
    conf
}

/// Sends at each rate; returns (offered pps, delivered pps, loss) per step.
fn sweep(
    tx_ns: &Netns,
    tx_dev: &str,
    dst_mac: &str,
    rx_ns: &Netns,
    rx_dev: &str,
    dir: &std::path::Path,
) -> Vec<(u64, f64, f64)> {
    let src_mac = mac_of(tx_ns, tx_dev);
    let conf = trafgen_conf(dir, dst_mac, &src_mac);
    let mut out = Vec::new();
    for &rate in RATES {
        let n = rate * SECONDS;
        let before = rx_packets(rx_ns, rx_dev);
        let t = Instant::now();
        // SLUICE_TRAFGEN_NICE=-10 gives the generator more of the CPU
        // (for provoking overload; the figures are taken without it).
        let nice = std::env::var("SLUICE_TRAFGEN_NICE").unwrap_or_else(|_| "0".into());
        let status = tx_ns
            .command(&[
                "nice",
                "-n",
                &nice,
                "trafgen",
                "-o",
                tx_dev,
                "-i",
                conf.to_str().unwrap(),
                "-b",
                &format!("{rate}pps"),
                "-n",
                &n.to_string(),
                "-P",
                "1",
                "-C",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let sent_for = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let got = rx_packets(rx_ns, rx_dev) - before;
        if !status.success() {
            eprintln!("trafgen failed at {rate} pps");
        }
        let loss = 1.0 - got as f64 / n as f64;
        // The tap pushes back when QEMU does not keep up, so trafgen may
        // send slower than asked: report what it achieved.
        let offered = n as f64 / sent_for;
        out.push((offered as u64, got as f64 / sent_for, loss));
        if loss > 0.5 {
            break;
        }
    }
    out
}

thread_local! {
    /// Per sluice case: guest cycles per packet and the pps they allow.
    static GUEST: std::cell::RefCell<Vec<(String, f64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Every step measured, for the CSV and the plot.
    static ROWS: std::cell::RefCell<Vec<(String, u64, f64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn report(name: &str, steps: &[(u64, f64, f64)]) {
    // Plotted against the rate asked of trafgen: where a line flattens is
    // where the forwarder saturates.
    ROWS.with(|r| {
        r.borrow_mut().extend(RATES.iter().zip(steps).map(|(asked, (_, d, _))| (name.to_string(), *asked, *d)))
    });
    let lossless = steps.iter().filter(|(_, _, loss)| *loss < 0.001).map(|(o, _, _)| *o).max().unwrap_or(0);
    let peak = steps.iter().map(|(_, d, _)| *d).fold(0.0, f64::max);
    let cells: Vec<String> =
        steps.iter().map(|(o, d, loss)| format!("{}k→{:.0}k ({:.1}%)", o / 1000, d / 1000.0, loss * 100.0)).collect();
    println!("{:<28} {:>10} {:>10.0}   {}", name, lossless, peak, cells.join("  "));
}

fn sluice_case(name: &str, extra: &str, wire: bool, machine: Machine) {
    sluice_case_with(name, extra, wire, machine, "", true)
}

/// Both NATs on the tap path at about 1k, 64k and 1M flows, with the same
/// 32 pool addresses (every flow goes to one receiver, so each needs its
/// own address and port) and room for 2M sessions (`sluice-e2e flows` runs
/// only these).
fn many_flows() {
    let pool: String = (10..42).map(|i| format!("  pool 10.1.0.{i}\n")).collect();
    let big =
        format!("nat {{\n  inside 10.0.0.0/24\n  outside wan\n{pool}  sessions 2097152\n  host-sessions 2097152\n}}\n");
    for flows in [Flows::K1, Flows::K64, Flows::M1] {
        FLOWS.with(|f| f.set(flows));
        let n = flows.count();
        sluice_case_sized(&format!("sluice NAT, {n} flows"), &big, 1024);
        linux_vm_case_named(&format!("Linux VM NAT, {n} flows"), 1024, "sluice.pool");
    }
    FLOWS.with(|f| f.set(Flows::One));
}

/// A NAT with `memory_mb` of RAM (for large session tables), on microvm.
fn sluice_case_sized(name: &str, extra: &str, memory_mb: u32) {
    MEMORY.with(|m| m.set(memory_mb));
    sluice_case(name, extra, false, Machine::Microvm);
    MEMORY.with(|m| m.set(0));
}

thread_local! {
    /// RAM for the next sluice cases (0: the lab's default).
    static MEMORY: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One sluice configuration: the UDP sweep (if `sweep`), then iperf3 for a NAT.
fn sluice_case_with(name: &str, extra: &str, wire: bool, machine: Machine, kernel_args: &str, udp: bool) {
    sluice_case_nic(name, extra, wire, machine, kernel_args, udp, None)
}

/// The same with both ports on QEMU's NIC `model` (`igb`) instead of virtio-net.
fn sluice_case_nic(
    name: &str,
    extra: &str,
    wire: bool,
    machine: Machine,
    kernel_args: &str,
    udp: bool,
    model: Option<&str>,
) {
    let mut spec = LabSpec::two_ports(machine).unwrap();
    if MEMORY.with(|m| m.get()) > 0 {
        spec.memory_mb = MEMORY.with(|m| m.get());
    }
    spec.extra_config = extra.into();
    spec.kernel_args = kernel_args.into();
    // `igbvf`: each port is VF 0 of its own igb PF, enabled by sluice.
    let vf = model == Some("igbvf");
    if let Some(m) = model {
        for p in &mut spec.ports {
            *p = p.clone().model(if vf { "igb" } else { m });
        }
    }
    let vf_mac = |i: usize| format!("02:54:00:5c:80:{:02x}", i + 2);
    if vf {
        let text = Lab::config_text(&spec);
        let mut text = text.replace(&sluice::lab::mac(0), &vf_mac(0)).replace(&sluice::lab::mac(1), &vf_mac(1));
        text += "nic 0000:00:08.0 vfs 1\nnic 0000:00:0b.0 vfs 1\n";
        spec.config_override = Some(text);
    }
    let mut lab = Lab::start(&spec).unwrap();
    if vf {
        // What a sender on the wire addresses: the VFs' MACs.
        for (i, p) in lab.ports.iter_mut().enumerate() {
            p.mac = vf_mac(i);
        }
    }
    if !wire && extra.contains("nat") {
        println!("{:<28} boot: QEMU start → ready {:.2} s", name, lab.vm.elapsed().as_secs_f64());
    }
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    lan.ns.exec(&["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1"]).ok();
    sink(&wan.ns);
    // Resolve next hops before measuring.
    let _ = lan.ns.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.1.0.2"]);
    let dst_mac = if wire { mac_of(&wan.ns, &wan.tap.name) } else { lan.mac.clone() };
    if wire {
        // The wire passes Ethernet as is: addresses must fit the far side.
        let _ = wan.ns.exec(&["ip", "addr", "add", "10.1.0.2/24", "dev", &wan.tap.name]);
    }
    let dir = lab.config_path.parent().unwrap().to_path_buf();
    if udp {
        let steps = sweep(&lan.ns, &lan.tap.name, &dst_mac, &wan.ns, &wan.tap.name, &dir);
        report(name, &steps);
    }
    if udp {
        // The appliance's own cost per packet (TSC cycles of poll-loop turns
        // that moved packets), independent of what the generator achieved.
        let mark = lab.vm.mark();
        if lab.vm.stats().is_ok() {
            let console = lab.vm.console();
            if std::env::var_os("SLUICE_VERBOSE").is_some() {
                eprintln!("{}", &console[mark..]);
            }
            if let Some(l) = console[mark..].lines().find(|l| l.starts_with("loop ")) {
                let field = |k: &str| -> f64 {
                    l.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
                };
                let (cpp, mhz) = (field("cycles_per_packet="), field("tsc_mhz="));
                let capacity = if cpp > 0.0 { mhz * 1e6 / cpp } else { 0.0 };
                println!(
                    "{:<28}   guest: {:.0} TSC cycles per packet, {:.1} packets per busy turn: at most {:.0}k pps of guest work",
                    "",
                    cpp,
                    field("packets_per_busy_turn="),
                    capacity / 1e3
                );
                GUEST.with(|g| g.borrow_mut().push((name.to_string(), cpp, capacity)));
            }
        }
    }
    if extra.contains("nat") && FLOWS.with(|f| f.get()) == Flows::One {
        iperf(name, &lab.port("lan").ns, &lab.port("wan").ns);
    }
    if !udp {
        // What the NICs did: large frames in and out.
        let mark = lab.vm.mark();
        if lab.vm.stats().is_ok() {
            for l in lab.vm.console()[mark..].lines().filter(|l| l.starts_with("nic") || l.starts_with("egress")) {
                println!("{:<28}   {l}", "");
            }
        }
    }
}

/// The Linux-VM NAT, booted with `mb` MiB, its lan and wan namespaces
/// set up; `None` if it did not reach FORWARDING_READY.
struct LinuxVm {
    vm: Vm,
    lan: Netns,
    wan: Netns,
    taps: Vec<Tap>,
}

fn linux_vm(mb: u32) -> Result<LinuxVm, String> {
    linux_vm_with(mb, "")
}

/// The same with `args` on the kernel command line (`sluice.pool`: NAT to
/// 10.1.0.10-41 with room for 2M connections, for the many-flow sweeps).
fn linux_vm_with(mb: u32, args: &str) -> Result<LinuxVm, String> {
    let root = sluice::workspace_root();
    let cache = root.join("target/bench-cache/linuxvm");
    let built = std::process::Command::new(root.join("images/linuxvm/build.sh")).arg(&cache).status();
    if !built.map(|s| s.success()).unwrap_or(false) {
        return Err("images/linuxvm/build.sh failed".into());
    }
    let id = unique_id();
    let mut taps: Vec<Tap> = (0..2).map(|i| Tap::create(&format!("st{id}p{i}")).unwrap()).collect();
    let mut spec = VmSpec::new(cache.join("vmlinuz"), Machine::PcQboot, Accel::from_env().unwrap());
    spec.initrd = Some(cache.join("initramfs.cpio.gz"));
    spec.cmdline = Some(format!("console=ttyS0 quiet {args}").trim_end().to_string());
    spec.memory_mb = mb;
    spec.nics = taps.iter().enumerate().map(|(i, t)| NicSpec::new(&t.name, &format!("52:54:00:11:00:0{i}"))).collect();
    let mut vm = Vm::start_paused(&spec).map_err(|e| e.to_string())?;
    let lan = Netns::create(&format!("sluice-t{id}-lan")).unwrap();
    let wan = Netns::create(&format!("sluice-t{id}-wan")).unwrap();
    taps[0].move_to(&lan, "10.0.0.2/24").unwrap();
    taps[1].move_to(&wan, "10.1.0.2/24").unwrap();
    lan.exec(&["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    vm.resume().map_err(|e| e.what)?;
    vm.wait_for("FORWARDING_READY", Duration::from_secs(120)).map_err(|e| e.what)?;
    Ok(LinuxVm { vm, lan, wan, taps })
}

/// Debian's kernel doing the NAT in a VM, on the same harness.
fn linux_vm_case() {
    linux_vm_case_named("baseline: Linux VM NAT", 512, "")
}

fn linux_vm_case_named(name: &str, mb: u32, args: &str) {
    let l = match linux_vm_with(mb, args) {
        Ok(l) => l,
        Err(e) => return println!("{name:<28} not measured: {e}"),
    };
    println!("{:<28} boot: QEMU start → ready {:.2} s", name, l.vm.elapsed().as_secs_f64());
    sink(&l.wan);
    let _ = l.lan.output(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    let dir = std::env::temp_dir().join(format!("sluice-e2e-{}", unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let steps = sweep(&l.lan, &l.taps[0].name, "52:54:00:11:00:00", &l.wan, &l.taps[1].name, &dir);
    report(name, &steps);
    if FLOWS.with(|f| f.get()) == Flows::One {
        iperf(name, &l.lan, &l.wan);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// iperf3 TCP throughput from `client` to a server at 10.1.0.2 in `server`:
/// three runs, the median of those that worked, and why any did not (a
/// single run once printed 0.0 Mbit/s with no way to tell a stalled flow
/// from a lost harness).
fn iperf(name: &str, client: &Netns, server: &Netns) {
    let mut got = Vec::new();
    let mut why = Vec::new();
    for run in 1..=3 {
        match iperf_once(client, server) {
            Ok(bps) => got.push(bps),
            Err(e) => why.push(format!("run {run}: {e}")),
        }
    }
    got.sort_by(|a, b| a.total_cmp(b));
    let runs: Vec<String> = got.iter().map(|b| format!("{:.1}", b / 1e6)).collect();
    match got.get(got.len() / 2) {
        Some(m) if !got.is_empty() => println!(
            "{:<28} iperf3 TCP {:>8.1} Mbit/s (median of {}: {}){}",
            name,
            m / 1e6,
            got.len(),
            runs.join(", "),
            if why.is_empty() { String::new() } else { format!("; failed: {}", why.join("; ")) }
        ),
        _ => println!("{:<28} iperf3 TCP failed: {}", name, why.join("; ")),
    }
}

/// One 5-second iperf3 TCP run: the receiver's bits per second, or why not.
fn iperf_once(client: &Netns, server: &Netns) -> Result<f64, String> {
    let pid = server.spawn(&["iperf3", "-s", "-B", "10.1.0.2", "-1"]).map_err(|e| format!("server: {e}"))?;
    // Until the server listens (a client too early tests a reset).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let out = server.output(&["sh", "-c", "ss -ltn | grep -q ':5201 '"]).map_err(|e| e.to_string())?;
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client.output(&["iperf3", "-c", "10.1.0.2", "-t", "5", "-J"]).map_err(|e| e.to_string())?;
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    let json = String::from_utf8_lossy(&out.stdout);
    if let Some(err) = json.split("\"error\":").nth(1) {
        return Err(format!("iperf3 said {}", err.split('\n').next().unwrap_or("").trim()));
    }
    // "sum_received": { ... "bits_per_second": N
    let bps = json
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|r| r.split("\"bits_per_second\":").nth(1))
        .and_then(|v| v.split([',', '}']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no receiver summary (exit {})", out.status))?;
    if bps <= 0.0 {
        return Err("the receiver counted 0 bytes: the flow stalled".into());
    }
    Ok(bps)
}

/// Whether the Linux VM boots with `mb` MiB and forwards.
fn linux_forwards_in(mb: u32) -> bool {
    linux_vm(mb)
        .is_ok_and(|l| l.lan.output(&["ping", "-c", "2", "-W", "2", "10.1.0.2"]).is_ok_and(|o| o.status.success()))
}

fn smallest(sizes: &[u32], works: impl Fn(u32) -> bool) -> Option<u32> {
    sizes.iter().copied().find(|m| works(*m))
}

fn namespace_router() {
    let id = unique_id();
    let a = Netns::create(&format!("sluice-t{id}-a")).unwrap();
    let r = Netns::create(&format!("sluice-t{id}-r")).unwrap();
    let b = Netns::create(&format!("sluice-t{id}-b")).unwrap();
    let (a0, r0, r1, b0) = (format!("se{id}a"), format!("se{id}r"), format!("se{id}s"), format!("se{id}b"));
    run(&["ip", "link", "add", &a0, "netns", &a.name, "type", "veth", "peer", "name", &r0, "netns", &r.name]).unwrap();
    run(&["ip", "link", "add", &r1, "netns", &r.name, "type", "veth", "peer", "name", &b0, "netns", &b.name]).unwrap();
    for (ns, dev, addr) in
        [(&a, &a0, "10.0.0.2/24"), (&r, &r0, "10.0.0.1/24"), (&r, &r1, "10.1.0.1/24"), (&b, &b0, "10.1.0.2/24")]
    {
        ns.exec(&["ip", "addr", "add", addr, "dev", dev]).unwrap();
        ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
    }
    a.exec(&["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    r.exec(&["nft", "add table ip nat"]).unwrap();
    r.exec(&["nft", "add chain ip nat post { type nat hook postrouting priority 100; }"]).unwrap();
    r.exec(&["nft", &format!("add rule ip nat post oifname {r1} masquerade")]).unwrap();
    sink(&b);
    let _ = a.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.1.0.2"]);
    let dir = std::env::temp_dir().join(format!("sluice-e2e-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let steps = sweep(&a, &a0, &mac_of(&r, &r0), &b, &b0, &dir);
    report("baseline: namespace NAT (nft)", &steps);
    iperf("baseline: namespace NAT (nft)", &a, &b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sluice-e2e profile`: where QEMU's time goes while sluice's NAT forwards
/// as much 64-byte UDP as trafgen offers (perf sampling on the CPU clock;
/// this machine has no hardware counters).
fn profile() {
    let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = nat.into();
    let lab = Lab::start(&spec).unwrap();
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    lan.ns.exec(&["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1"]).ok();
    sink(&wan.ns);
    let _ = lan.ns.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.1.0.2"]);
    let dir = lab.config_path.parent().unwrap().to_path_buf();
    let conf = trafgen_conf(&dir, &lan.mac, &mac_of(&lan.ns, &lan.tap.name));
    let mut gen = lan
        .ns
        .command(&[
            "trafgen",
            "-o",
            &lan.tap.name,
            "-i",
            conf.to_str().unwrap(),
            "-b",
            "400000pps",
            "-n",
            "2400000",
            "-P",
            "1",
            "-C",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let data = std::env::temp_dir().join("sluice-e2e-perf.data");
    let pid = lab.vm.pid().to_string();
    let _ = std::process::Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "2000", "-o", data.to_str().unwrap(), "-p", &pid, "--", "sleep", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let _ = gen.wait();
    for sort in ["comm", "comm,dso", "comm,dso,sym"] {
        let report = std::process::Command::new("perf")
            .args(["report", "-i", data.to_str().unwrap(), "--stdio", "--sort", sort, "--percent-limit", "1"])
            .output()
            .unwrap();
        println!("by {sort}:");
        for l in String::from_utf8_lossy(&report.stdout).lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            println!("  {l}");
        }
    }
    println!("(perf data: {})", data.display());
}

/// sluice's NAT on virtio-net, on the Intel 82576 physical function
/// (QEMU's igb model) and on a VF of it that sluice enabled, all on q35 +
/// qboot: UDP sweep and iperf3.
/// The seed's table: the same sluice NAT and the same Linux VM NAT (pc +
/// qboot both) behind each switch — Linux bridge + tap (the lab's plain
/// taps), OVS userspace + tap, OVS-DPDK + vhost-user — with the UDP sweep,
/// iperf3, and the host CPU the VM's and the switch's threads used during
/// the sweep (from /proc, per thread; 1.00 = one core busy).
fn switches() {
    use sluice::ovs::Switch;
    println!("the seed's table: NAT behind each switch (pc + qboot, 64-byte UDP sweep, then iperf3)");
    println!("{:<28} {:>10} {:>10}   offered→delivered (loss)", "forwarder", "lossless", "peak pps");
    let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
    let cache = sluice::workspace_root().join("target/bench-cache/linuxvm");
    let linux_built = std::process::Command::new(sluice::workspace_root().join("images/linuxvm/build.sh"))
        .arg(&cache)
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    for switch in [Switch::Tap, Switch::Ovs, Switch::OvsDpdk] {
        for linux in [false, true] {
            let name = format!("{} NAT, {}", if linux { "Linux VM" } else { "sluice" }, switch.name());
            if linux && !linux_built {
                println!("{name:<28} not measured: images/linuxvm/build.sh failed");
                continue;
            }
            if let Err(e) = switch_case(&name, switch, linux, nat, &cache) {
                println!("{name:<28} not measured: {e}");
            }
        }
    }
}

fn switch_case(
    name: &str,
    switch: sluice::ovs::Switch,
    linux: bool,
    nat: &str,
    cache: &std::path::Path,
) -> Result<(), String> {
    let mut spec = LabSpec::two_ports(Machine::PcQboot).unwrap();
    spec.switch = switch;
    spec.extra_config = nat.into();
    if linux {
        spec.kernel = cache.join("vmlinuz");
        spec.initrd = Some(cache.join("initramfs.cpio.gz"));
        spec.kernel_args = "console=ttyS0 quiet".into();
        spec.memory_mb = 512;
    }
    let mut lab = Lab::boot(&spec).map_err(|e| e.to_string())?;
    let ready = if linux { "FORWARDING_READY" } else { "sluice ready" };
    lab.vm.wait_for(ready, Duration::from_secs(180)).map_err(|e| e.what)?;
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    lan.ns.exec(&["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1"]).ok();
    sink(&wan.ns);
    let _ = lan.ns.output(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.1.0.2"]);
    let dir = std::env::temp_dir().join(format!("sluice-e2e-{}", unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let qemu_before = sluice::qemu::thread_cpu(lab.vm.pid());
    let ovs_before = lab.ovs.as_ref().map(|o| o.thread_cpu()).unwrap_or_default();
    let t = Instant::now();
    let steps = sweep(&lan.ns, &lan.tap.name, &lan.mac, &wan.ns, &wan.tap.name, &dir);
    let secs = t.elapsed().as_secs_f64();
    let qemu_after = sluice::qemu::thread_cpu(lab.vm.pid());
    let ovs_after = lab.ovs.as_ref().map(|o| o.thread_cpu()).unwrap_or_default();
    report(name, &steps);
    println!("{:<28}   host CPU during the sweep: qemu {}", "", busy(&qemu_before, &qemu_after, secs));
    if lab.ovs.is_some() {
        println!("{:<28}   host CPU during the sweep: ovs-vswitchd {}", "", busy(&ovs_before, &ovs_after, secs));
    }
    // Many flows behind the same switch: 1,004 (the default NAT config's
    // one address and session table hold them on both VMs; the tap path's
    // 64k and 1M rows are `sluice-e2e flows`).
    FLOWS.with(|f| f.set(Flows::K1));
    let steps = sweep(&lan.ns, &lan.tap.name, &lan.mac, &wan.ns, &wan.tap.name, &dir);
    FLOWS.with(|f| f.set(Flows::One));
    report(&format!("{name}, {} flows", Flows::K1.count()), &steps);
    iperf(name, &lan.ns, &wan.ns);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Per thread (summed by name), the CPU used between two samples as a
/// fraction of one core over `secs`; threads that used under 1% left out.
fn busy(before: &[(String, f64)], after: &[(String, f64)], secs: f64) -> String {
    let mut by: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for (n, t) in after {
        *by.entry(n.clone()).or_default() += t;
    }
    for (n, t) in before {
        *by.entry(n.clone()).or_default() -= t;
    }
    let mut v: Vec<(String, f64)> = by.into_iter().map(|(n, t)| (n, t / secs)).filter(|(_, f)| *f >= 0.01).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = v.iter().map(|x| x.1).sum();
    let parts: Vec<String> = v.iter().map(|(n, f)| format!("{n} {f:.2}")).collect();
    format!("{total:.2} cores ({})", parts.join(", "))
}

fn nics() {
    println!("NIC models, same machine (q35 + qboot), sluice NAT:");
    let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
    sluice_case_nic("sluice NAT, virtio-net q35", nat, false, Machine::Q35Qboot, "", true, None);
    sluice_case_nic("sluice NAT, igb PF q35", nat, false, Machine::Q35Qboot, "", true, Some("igb"));
    sluice_case_nic("sluice NAT, igbvf q35", nat, false, Machine::Q35Qboot, "", true, Some("igbvf"));
}

fn main() {
    if std::env::args().any(|a| a == "profile") {
        return profile();
    }
    if std::env::args().any(|a| a == "memory") {
        // Only the memory figures: `sluice-e2e memory` (sluice's is
        // measured by sluice-bench, this is the baseline beside it).
        let l = smallest(&[32, 48, 64, 96, 128, 192, 256, 512], linux_forwards_in);
        println!("smallest -m that forwards: Linux VM NAT {l:?} MiB");
        return;
    }
    if std::env::args().any(|a| a == "wire") {
        // Only the null pipeline, a few times: `sluice-e2e wire`.
        for _ in 0..3 {
            sluice_case_with("sluice wire (null)", "wire lan wan\n", true, Machine::Microvm, "", true);
        }
        return;
    }
    if std::env::args().any(|a| a == "udp") {
        // Only sluice's UDP sweeps: `sluice-e2e udp`.
        println!("{:<28} {:>10} {:>10}   offered→delivered (loss)", "forwarder", "lossless", "peak pps");
        let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
        sluice_case_with("sluice wire (null)", "wire lan wan\n", true, Machine::Microvm, "", true);
        sluice_case_with("sluice router", "", false, Machine::Microvm, "", true);
        sluice_case_with("sluice NAT", nat, false, Machine::Microvm, "", true);
        return;
    }
    if std::env::args().any(|a| a == "flows") {
        println!("end to end, 64-byte UDP, {SECONDS} s per step, many flows (tap path)\n");
        println!("{:<28} {:>10} {:>10}   offered→delivered (loss)", "forwarder", "lossless", "peak pps");
        many_flows();
        return;
    }
    if std::env::args().any(|a| a == "switches") {
        // Bridge + tap, OVS userspace + tap, OVS-DPDK + vhost-user:
        // `sluice-e2e switches`.
        switches();
        return;
    }
    if std::env::args().any(|a| a == "nics") {
        // virtio-net against the igb physical function, same machine:
        // `sluice-e2e nics`.
        nics();
        return;
    }
    if std::env::args().any(|a| a == "tcp") {
        // Only the TCP figures: `sluice-e2e tcp`.
        let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
        sluice_case_with("sluice NAT", nat, false, Machine::Microvm, "", false);
        sluice_case_with("sluice NAT, offloads off", nat, false, Machine::Microvm, "offloads=off", false);
        sluice_case_with("sluice NAT, pc", nat, false, Machine::PcQboot, "", false);
        return;
    }
    println!("end to end, 64-byte UDP, {SECONDS} s per step ({})\n", sluice::qemu::Accel::from_env().unwrap().name());
    println!("{:<28} {:>10} {:>10}   offered→delivered (loss)", "forwarder", "lossless", "peak pps");
    let nat = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n";
    sluice_case("sluice wire (null)", "wire lan wan\n", true, Machine::Microvm);
    sluice_case("sluice router", "", false, Machine::Microvm);
    sluice_case("sluice NAT", nat, false, Machine::Microvm);
    // TCP without the virtio offloads: what they are worth.
    sluice_case_with("sluice NAT, offloads off", nat, false, Machine::Microvm, "offloads=off", false);
    nics();
    println!("same machine type for both (pc + qboot):");
    sluice_case("sluice NAT, pc", nat, false, Machine::PcQboot);
    linux_vm_case();
    many_flows();
    println!("no VM:");
    namespace_router();
    // sluice's own figure is sluice-bench's (three NICs, by bisection).
    let l = smallest(&[32, 48, 64, 96, 128, 192, 256, 512], linux_forwards_in);
    let show = |m: Option<u32>| m.map(|m| format!("{m} MiB")).unwrap_or_else(|| "none tried".into());
    println!("\nsmallest -m that forwards: Linux VM NAT {} (sluice's: sluice-bench)", show(l));
    // The table as CSV, and a plot of it.
    let out = sluice::workspace_root().join("target/bench");
    let mut csv = String::from("forwarder,asked,delivered\n");
    ROWS.with(|r| {
        for (name, o, d) in r.borrow().iter() {
            csv += &format!("\"{}\",{o},{d:.0}\n", name.replace('"', "'"));
        }
    });
    println!("{}", sluice_qemu_tests::write_and_plot(&out, "e2e", &csv, "plot_e2e.py"));
}
