//! Console commands on COM1, one per line:
//! `stats` dumps the counters, `quit` dumps them and shuts down cleanly,
//! `panic` crashes on purpose (to test that crashes are caught, like
//! Linux's sysrq-c), `help` lists these.

use drivers::Nic;
use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;

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
}

/// Copies the drivers' and the poll loop's counters into the dataplane,
/// which shows them with its own (`stats`, `/metrics`).
pub fn publish<N: Nic>(dp: &mut Dataplane, nics: &[N], lp: &LoopStats) {
    for (i, nic) in nics.iter().enumerate() {
        let n = nic.stats();
        let c = &mut dp.port_mut(i as u8).nic_counters;
        c.clear();
        for kv in [
            ("rx_bursts", n.rx_bursts),
            ("tx_bursts", n.tx_bursts),
            ("rx_kicks", n.rx_kicks),
            ("tx_kicks", n.tx_kicks),
            ("rx_bad_len", n.rx_bad_len),
            ("tx_no_headroom", n.tx_no_headroom),
            ("rx_large", n.rx_large),
            ("tx_large", n.tx_large),
            ("rx_chain_dropped", n.rx_chain_dropped),
            ("rx_bad_offload", n.rx_bad_offload),
            ("tx_bad_offload", n.tx_bad_offload),
            ("buffers_held", nic.buffers_held() as u64),
        ] {
            let _ = c.push(kv);
        }
    }
    let c = &mut dp.loop_counters;
    c.clear();
    for kv in [
        ("busy_turns", lp.busy_turns),
        ("idle_turns", lp.idle_turns),
        ("packets", lp.packets),
        ("busy_cycles", lp.busy_cycles),
        ("cycles_per_packet", lp.busy_cycles.checked_div(lp.packets).unwrap_or(0)),
        ("packets_per_busy_turn", lp.packets.checked_div(lp.busy_turns).unwrap_or(0)),
        ("tsc_mhz", crate::clock::tsc_mhz()),
        ("heap_used_bytes", crate::heap::used() as u64),
        ("heap_free_bytes", crate::heap::free() as u64),
    ] {
        let _ = c.push(kv);
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
            "help" => println!("commands: stats, quit, panic, help"),
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
