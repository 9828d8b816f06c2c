//! `make bench`: figures for the real image, each beside a baseline measured
//! in the same run on the same machine. Never part of `make test`.
//!
//! - image size;
//! - boot: QEMU start → `sluice ready` (wall clock) and kernel entry → ready
//!   (sluice's TSC), median of 10, per machine type; beside it, QEMU start →
//!   the guest's first console line, which is QEMU's and the firmware's part;
//! - ping RTT through sluice's host stack beside Linux's, namespace to
//!   namespace over a veth pair;
//! - memory: the smallest `-m` (bisection over whole MiB) in which a NAT
//!   with 64k sessions and three NICs on microvm boots, answers on every
//!   port and forwards (`sluice-bench memory` runs only this). The README's
//!   memory figures quote it.

use std::time::{Duration, Instant};

use sluice::lab::{Lab, LabSpec};
use sluice::qemu::{Accel, Machine, NicSpec, Vm, VmSpec};
use sluice::topology::{run, unique_id, Netns, Tap};

const RUNS: usize = 10;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Boot {
    to_first_line_ms: f64,
    to_ready_ms: f64,
    entry_to_ready_us: f64,
}

fn boot_once(machine: Machine, accel: Accel) -> Boot {
    let id = unique_id();
    let taps: Vec<Tap> = (0..2).map(|i| Tap::create(&format!("st{id}p{i}")).unwrap()).collect();
    let mut spec = VmSpec::new(sluice::image_path(), machine, accel);
    spec.nics = taps.iter().enumerate().map(|(i, t)| NicSpec::new(&t.name, &sluice::lab::mac(i))).collect();
    let mut vm = Vm::start(&spec).unwrap();
    vm.wait_for("sluice ", Duration::from_secs(60)).unwrap();
    let first = vm.elapsed();
    let ready = vm.wait_for("sluice ready in ", Duration::from_secs(60)).unwrap();
    let wall = vm.elapsed();
    let us: f64 = ready.split("sluice ready in ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    drop(vm);
    Boot { to_first_line_ms: first.as_secs_f64() * 1e3, to_ready_ms: wall.as_secs_f64() * 1e3, entry_to_ready_us: us }
}

fn rtt_ms(ping_output: &str) -> f64 {
    // rtt min/avg/max/mdev = 0.046/0.061/0.095/0.015 ms
    let line = ping_output.lines().find(|l| l.contains("min/avg/max")).expect("ping summary");
    line.split('=').nth(1).unwrap().trim().split('/').nth(1).unwrap().parse().unwrap()
}

/// The memory figure: bisection between 4 MiB (too little for the image
/// itself) and 64 MiB, each probe a fresh boot.
fn memory() {
    let verbose = std::env::var_os("SLUICE_VERBOSE").is_some();
    let works = |mb: u32| match sluice_qemu_tests::small_nat_works(mb) {
        Ok(()) => true,
        Err(e) => {
            if verbose {
                eprintln!("{e}");
            }
            false
        }
    };
    let show = |m: Option<u32>| m.map(|m| format!("{m} MiB")).unwrap_or_else(|| "more than 64 MiB".into());
    println!(
        "\nsmallest -m that boots and forwards a 64k-session NAT with three NICs (microvm): {}",
        show(sluice_qemu_tests::smallest_working(4, 64, works))
    );
}

fn main() {
    if let Err(e) = run(&["true"]) {
        eprintln!("{e}");
    }
    if std::env::args().any(|a| a == "memory") {
        return memory();
    }
    let accel = Accel::from_env().unwrap();
    let image = sluice::image_path();
    let size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    println!("sluice bench ({} , {} runs per figure, median)\n", accel.name(), RUNS);
    println!("image: {} = {} bytes ({:.0} KiB)\n", image.display(), size, size as f64 / 1024.0);

    println!("{:<12} {:>22} {:>22} {:>22}", "boot", "QEMU start→1st line", "QEMU start→ready", "kernel entry→ready");
    for (name, machine) in [
        ("microvm", Machine::Microvm),
        ("q35-qboot", Machine::Q35Qboot),
        ("pc-qboot", Machine::PcQboot),
        ("pc-seabios", Machine::Pc),
    ] {
        let runs: Vec<Boot> = (0..RUNS).map(|_| boot_once(machine, accel)).collect();
        println!(
            "{:<12} {:>19.1} ms {:>19.1} ms {:>19.1} ms",
            name,
            median(runs.iter().map(|b| b.to_first_line_ms).collect()),
            median(runs.iter().map(|b| b.to_ready_ms).collect()),
            median(runs.iter().map(|b| b.entry_to_ready_us / 1e3).collect()),
        );
    }

    // Ping RTT: sluice's host stack vs Linux over veth, same ping settings.
    let lab = Lab::start(&LabSpec::two_ports(Machine::Microvm).unwrap()).unwrap();
    let lan = lab.port("lan");
    let _ = lan.ns.output(&["ping", "-c", "3", "-i", "0.05", &lan.appliance_ip]);
    let t = Instant::now();
    let out = lan.ns.output(&["ping", "-q", "-c", "50", "-i", "0.02", &lan.appliance_ip]).unwrap();
    let sluice_rtt = rtt_ms(&String::from_utf8_lossy(&out.stdout));
    let _ = t;
    drop(lab);

    let id = unique_id();
    let a = Netns::create(&format!("sluice-t{id}-a")).unwrap();
    let b = Netns::create(&format!("sluice-t{id}-b")).unwrap();
    run(&[
        "ip",
        "link",
        "add",
        &format!("sv{id}a"),
        "netns",
        &a.name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("sv{id}b"),
        "netns",
        &b.name,
    ])
    .unwrap();
    a.exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", &format!("sv{id}a")]).unwrap();
    b.exec(&["ip", "addr", "add", "10.9.0.2/24", "dev", &format!("sv{id}b")]).unwrap();
    a.exec(&["ip", "link", "set", &format!("sv{id}a"), "up"]).unwrap();
    b.exec(&["ip", "link", "set", &format!("sv{id}b"), "up"]).unwrap();
    let _ = a.output(&["ping", "-c", "3", "-i", "0.05", "10.9.0.2"]);
    let out = a.output(&["ping", "-q", "-c", "50", "-i", "0.02", "10.9.0.2"]).unwrap();
    let linux_rtt = rtt_ms(&String::from_utf8_lossy(&out.stdout));
    println!("\n{:<40} {:>10}", "ping RTT (avg of 50)", "ms");
    println!("{:<40} {:>10.3}", "sluice host stack (tap, QEMU)", sluice_rtt);
    println!("{:<40} {:>10.3}", "baseline: Linux namespace over veth", linux_rtt);
    memory();
}
