//! The three stages on one packet, on the host: clients on the inside
//! port send to a VIP beyond the outside port; the load balancer picks a
//! backend (DNAT), the router routes to it, the NAT translates the source
//! (SNAT): `pipeline lan lb router nat`. Bursts of 1, 8 and 32, with 1k and
//! 1M flows (as many LB flows as NAT sessions). Beside each, in the same
//! run, the same packets through a router-only pipeline.
//!
//! Cycles are ns × the CPU clock from /proc/cpuinfo.

use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;

mod common;
use common::{arp_reply, cpu_mhz, Rng};

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const BATCH: usize = 32;
const VIP: [u8; 4] = [198, 51, 100, 1];
/// For the baseline: a destination the router sends to the same gateway.
const ROUTED: [u8; 4] = [198, 51, 100, 2];

fn dataplane(chain: bool, flows: usize) -> (Dataplane, PacketPool) {
    let mut text =
        String::from("port lan address 10.0.0.1/8\nport wan address 172.16.0.1/16\nroute 0.0.0.0/0 via 172.16.0.254\n");
    if chain {
        text += &format!("lb flows {flows}\nservice dns {{\n vip 198.51.100.1:53 udp\n mode dnat\n check none\n");
        for i in 0..10 {
            text += &format!(" backend 172.16.2.{}:53\n", 10 + i);
        }
        text += &format!(
            "}}\nnat {{\n inside 10.0.0.0/8\n outside wan\n sessions {flows}\n filtering endpoint-independent\n"
        );
        for i in 0..32 {
            text += &format!(" pool 172.16.1.{}\n", i + 1);
        }
        text += "}\npipeline lan lb router nat\npipeline wan nat lb router\n";
    } else {
        text += "pipeline lan router\npipeline wan router\n";
    }
    // The backends and the gateway answer ARP.
    let arps: Vec<Vec<u8>> = (10..20)
        .map(|l| arp_reply([2, 0, 0, 0, 2, l], [172, 16, 2, l], WAN_MAC, [172, 16, 0, 1]))
        .chain([arp_reply([2, 0, 0, 0, 0, 0xfe], [172, 16, 0, 254], WAN_MAC, [172, 16, 0, 1])])
        .collect();
    common::build(&text, [LAN_MAC, WAN_MAC], &arps)
}

fn main() {
    let mhz = cpu_mhz();
    println!("LB -> router -> NAT on every packet, host, one core ({mhz:.0} MHz; established: best of 3)\n");
    println!(
        "{:<10} {:<12} {:>5} {:>16} {:>24} {:>18}",
        "flows", "packets", "batch", "lb+router+nat", "baseline: router only", "lb+nat share"
    );
    for n in [1_000usize, 1_000_000] {
        let mut rng = Rng(0x4242 ^ n as u64);
        let flows = common::unique_flows(n, || {
            (0x0a00_0000 | (rng.next() & 0x00ff_fffe) | 2, 1024 + (rng.next() % 60000) as u16)
        });
        let total = n / BATCH * BATCH;
        let (mut dp, mut pool) = dataplane(true, n + 4096);
        let (mut base, mut bpool) = dataplane(false, 0);
        let mut i = 0;
        let new_ns = common::run_udp(&mut dp, &mut pool, total, BATCH, LAN_MAC, VIP, || {
            i += 1;
            flows[(i - 1) % n]
        });
        let mut j = 0;
        let base_new = common::run_udp(&mut base, &mut bpool, total, BATCH, LAN_MAC, ROUTED, || {
            j += 1;
            flows[(j - 1) % n]
        });
        common::row(n, "new flows", BATCH, new_ns, base_new, mhz);
        let picks = common::picks(&flows, 1_000_000, 7);
        for batch in [1, 8, 32] {
            let est = common::best_of(3, || {
                common::run_udp(&mut dp, &mut pool, 1_000_000, batch, LAN_MAC, VIP, common::in_order(&picks))
            });
            let base_est = common::best_of(3, || {
                common::run_udp(&mut base, &mut bpool, 1_000_000, batch, LAN_MAC, ROUTED, common::in_order(&picks))
            });
            common::row(n, "established", batch, est, base_est, mhz);
        }
    }
}
