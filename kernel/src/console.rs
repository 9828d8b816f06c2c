//! Console commands on COM1, one per line:
//! `stats` dumps the counters, `quit` dumps them and shuts down cleanly,
//! `panic` crashes on purpose (to test that crashes are caught, like
//! Linux's sysrq-c), `help` lists these.

use drivers::Nic;
use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;
use vnfs::stats::Sample;

use crate::{println, serial};

pub struct Console {
    line: heapless::String<64>,
}

/// What the poll loop itself did: turns that found packets and the TSC
/// cycles they took, against idle turns. Busy cycles per packet is the
/// appliance's own cost per packet, whatever the traffic generator manages.
#[derive(Default)]
pub struct LoopStats {
    pub busy_turns: u64,
    pub busy_cycles: u64,
    pub packets: u64,
    pub idle_turns: u64,
    /// Where busy turns spent their cycles.
    pub phases: drivers::poll::Phases,
}

/// Copies the drivers' and the poll loop's counters into the dataplane,
/// which shows them with its own (`stats`, `/metrics`).
pub fn publish<N: Nic>(dp: &mut Dataplane, nics: &[N], lp: &LoopStats, pfs: &[drivers::igb::sriov::VfService]) {
    for (i, nic) in nics.iter().enumerate() {
        let c = &mut dp.port_mut(i as u8).nic_counters;
        c.clear();
        let held = Sample {
            name: "buffers_held",
            help: "buffers the driver holds (posted or awaiting reclaim)",
            gauge: true,
            value: nic.buffers_held() as u64,
        };
        for s in nic.stats().samples().chain([held]).chain(nic.device_counters()) {
            let _ = c.push(s);
        }
    }
    let c = &mut dp.loop_counters;
    c.clear();
    let sample = |name, help, gauge, value| Sample { name, help, gauge, value };
    let per = |cycles: u64| cycles.checked_div(lp.packets).unwrap_or(0);
    for s in [
        sample("busy_turns", "loop turns that found packets", false, lp.busy_turns),
        sample("idle_turns", "loop turns that found nothing", false, lp.idle_turns),
        sample("packets", "packets received by the loop", false, lp.packets),
        sample("busy_cycles", "TSC cycles spent in busy turns", false, lp.busy_cycles),
        sample(
            "cycles_per_packet",
            "busy cycles per packet since boot",
            true,
            lp.busy_cycles.checked_div(lp.packets).unwrap_or(0),
        ),
        sample(
            "packets_per_busy_turn",
            "packets per busy turn since boot",
            true,
            lp.packets.checked_div(lp.busy_turns).unwrap_or(0),
        ),
        sample("rx_cycles_per_packet", "busy cycles per packet in reclaim and receive bursts", true, per(lp.phases.rx)),
        sample(
            "process_cycles_per_packet",
            "busy cycles per packet in the dataplane (ingress, stages, egress)",
            true,
            per(lp.phases.process),
        ),
        sample(
            "poll_cycles_per_packet",
            "busy cycles per packet in timers, host stacks and management",
            true,
            per(lp.phases.poll),
        ),
        sample("tx_cycles_per_packet", "busy cycles per packet in transmit bursts and refill", true, per(lp.phases.tx)),
        sample("tsc_mhz", "the calibrated TSC frequency", true, crate::clock::tsc_mhz()),
        sample("heap_used_bytes", "heap in use", true, crate::heap::used() as u64),
        sample("heap_free_bytes", "heap free", true, crate::heap::free() as u64),
    ] {
        let _ = c.push(s);
    }
    // The SR-IOV PFs' mailbox service, added up over the PFs.
    if !pfs.is_empty() {
        let mut sum = drivers::igb::sriov::MailboxStats::default();
        for p in pfs {
            sum.mbx_requests += p.stats.mbx_requests;
            sum.mbx_resets += p.stats.mbx_resets;
            sum.mbx_acked += p.stats.mbx_acked;
            sum.mbx_refused += p.stats.mbx_refused;
            sum.mbx_busy += p.stats.mbx_busy;
        }
        for s in sum.samples() {
            let _ = c.push(s);
        }
    }
}

impl Console {
    pub fn new() -> Self {
        Console { line: heapless::String::new() }
    }

    /// Reads what arrived on COM1 and runs complete lines.
    pub fn poll<N: Nic>(&mut self, dp: &Dataplane, nics: &[N], pool: &PacketPool) {
        while let Some(b) = serial::try_read() {
            match b {
                b'\r' | b'\n' => {
                    let line = core::mem::take(&mut self.line);
                    self.run(line.trim(), dp, nics, pool);
                }
                _ => {
                    // Over-long lines are cut, never overflow.
                    let _ = self.line.push(b as char);
                }
            }
        }
    }

    fn run<N: Nic>(&self, cmd: &str, dp: &Dataplane, nics: &[N], pool: &PacketPool) {
        match cmd {
            "" => {}
            "stats" => dump(dp, nics, pool),
            "quit" => {
                dump(dp, nics, pool);
                println!("sluice: shutting down");
                crate::x86::reset();
            }
            "panic" => panic!("panic requested on the console"),
            "help" => println!(
                "commands: stats, show VIEW [key=value&...], quit, panic, help\nviews: {}",
                vnfs::dataplane::views_help()
            ),
            other if other.starts_with("show") => {
                let rest = other["show".len()..].trim();
                let (what, q) = rest.split_once(' ').unwrap_or((rest, ""));
                let mut out = alloc::string::String::new();
                if dp.show(what, &vnfs::dataplane::query_pairs(q.trim()), crate::clock::now_us(), &mut out) {
                    println!("{}", out.trim_end());
                } else {
                    println!("no view `{what}`: try {}", vnfs::dataplane::views_help());
                }
            }
            other => println!("unknown command `{other}`: try help"),
        }
    }
}

fn dump<N: Nic>(dp: &Dataplane, nics: &[N], pool: &PacketPool) {
    let mut s = alloc::string::String::new();
    let _ = dp.write_stats(&mut s);
    for line in s.lines() {
        println!("{line}");
    }
    let held: usize = nics.iter().map(|n| n.buffers_held()).sum();
    println!(
        "pool available={} held_by_nics={} capacity={} exhausted={} tails_exhausted={} heap_used={}",
        pool.available(),
        held,
        pool.capacity(),
        pool.exhausted,
        pool.tails_exhausted,
        crate::heap::used()
    );
    println!("stats end");
}
