//! Load balancer cost per packet on the host: bursts of 1, 8 and 32 from clients to
//! a VIP (ingress, LB, router, egress), with 1k and 1M flows, for packets
//! that open flows and packets of established flows; beside each, the same
//! packets through a router-only pipeline. Then the Maglev table build time
//! for 10, 100 and 1000 backends beside the floor of writing the table once.
//!
//! Cycles are ns × the CPU clock from /proc/cpuinfo.

use std::time::Instant;

use vnfs::dataplane::Dataplane;
use vnfs::lb::maglev::{MaglevTable, Member, DEFAULT_SIZE};
use vnfs::packet::PacketPool;

mod common;
use common::{arp_reply, cpu_mhz, Rng};

const C_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const S_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const BATCH: usize = 32;

fn dataplane(lb: bool, flows: usize) -> (Dataplane, PacketPool) {
    let mut text = String::from(
        "port client address 10.1.0.1/24\nport servers address 10.2.0.1/16\nroute 0.0.0.0/0 via 10.1.0.254\n",
    );
    if lb {
        text += &format!("lb flows {flows}\nservice dns {{\n vip 10.1.0.1:53 udp\n mode dnat\n check none\n");
        for i in 0..10 {
            text += &format!(" backend 10.2.0.{}:53\n", 10 + i);
        }
        text += "}\npipeline client lb router\npipeline servers lb router\n";
    } else {
        text += "pipeline client router\npipeline servers router\n";
    }
    // Backends (and, for the baseline, 10.2.0.53) answer ARP.
    let arps: Vec<Vec<u8>> =
        (10..20).chain([53]).map(|l| arp_reply([2, 0, 0, 0, 1, l], [10, 2, 0, l], S_MAC, [10, 2, 0, 1])).collect();
    common::build(&text, [C_MAC, S_MAC], &arps)
}

fn main() {
    let mhz = cpu_mhz();
    println!("LB, host, one core, 10 backends, DNAT ({mhz:.0} MHz; cycles = ns x clock; established: best of 3)\n");
    println!(
        "{:<10} {:<12} {:>5} {:>16} {:>24} {:>18}",
        "flows", "packets", "batch", "lb+router", "baseline: router only", "lb's share"
    );
    const VIP: [u8; 4] = [10, 1, 0, 1];
    const ROUTED: [u8; 4] = [10, 2, 0, 53];
    for n in [1_000usize, 1_000_000] {
        let mut rng = Rng(0x77 ^ n as u64);
        let flows =
            common::unique_flows(n, || (0x0b00_0000 | (rng.next() & 0x00ff_ffff), 1024 + (rng.next() % 60000) as u16));
        let total = n.max(BATCH * 64) / BATCH * BATCH;
        let (mut dp, mut pool) = dataplane(true, n + 4096);
        let mut i = 0;
        let new_ns = common::run_udp(&mut dp, &mut pool, total, BATCH, C_MAC, VIP, || {
            let f = flows[i % flows.len()];
            i += 1;
            f
        });
        let (mut base, mut bpool) = dataplane(false, 0);
        let mut j = 0;
        let base_new = common::run_udp(&mut base, &mut bpool, total, BATCH, C_MAC, ROUTED, || {
            let f = flows[j % flows.len()];
            j += 1;
            f
        });
        common::row(n, "new flows", BATCH, new_ns, base_new, mhz);
        let picks = common::picks(&flows, 1_000_000, 5);
        for batch in [1, 8, 32] {
            let est = common::best_of(3, || {
                common::run_udp(&mut dp, &mut pool, 1_000_000, batch, C_MAC, VIP, common::in_order(&picks))
            });
            let base_est = common::best_of(3, || {
                common::run_udp(&mut base, &mut bpool, 1_000_000, batch, C_MAC, ROUTED, common::in_order(&picks))
            });
            common::row(n, "established", batch, est, base_est, mhz);
        }
    }
    println!("\nMaglev table build, M = {DEFAULT_SIZE}");
    println!("{:<10} {:>14} {:>34}", "backends", "maglev build", "baseline: fill M slots round-robin");
    for n in [10usize, 100, 1000] {
        let members: Vec<Member> =
            (0..n as u64).map(|i| Member { id: 0x0a02_0000_0050 + (i << 16), weight: 1 + (i % 3) as u32 }).collect();
        let t = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            std::hint::black_box(MaglevTable::build(&members, DEFAULT_SIZE));
        }
        let maglev = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            let v: Vec<u16> = (0..DEFAULT_SIZE).map(|i| (i % n) as u16).collect();
            std::hint::black_box(v);
        }
        let rr = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        println!("{:<10} {:>11.2} ms {:>31.3} ms", n, maglev, rr);
    }
}
