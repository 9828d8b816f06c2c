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

impl Console {
    pub fn new() -> Self {
        Console { line: heapless::String::new() }
    }

    /// Reads what arrived on COM1 and runs complete lines.
    pub fn poll<N: Nic>(&mut self, dp: &Dataplane, nics: &[N], pool: &PacketPool, lp: &LoopStats) {
        while let Some(b) = serial::try_read() {
            match b {
                b'\r' | b'\n' => {
                    let line = core::mem::take(&mut self.line);
                    self.run(line.trim(), dp, nics, pool, lp);
                }
                _ => {
                    // Over-long lines are cut, never overflow.
                    let _ = self.line.push(b as char);
                }
            }
        }
    }

    fn run<N: Nic>(&self, cmd: &str, dp: &Dataplane, nics: &[N], pool: &PacketPool, lp: &LoopStats) {
        match cmd {
            "" => {}
            "stats" => dump(dp, nics, pool, lp),
            "quit" => {
                dump(dp, nics, pool, lp);
                println!("sluice: shutting down");
                crate::x86::reset();
            }
            "panic" => panic!("panic requested on the console"),
            "help" => println!("commands: stats, quit, panic, help"),
            other => println!("unknown command `{other}`: try help"),
        }
    }
}

fn dump<N: Nic>(dp: &Dataplane, nics: &[N], pool: &PacketPool, lp: &LoopStats) {
    let mut s = alloc::string::String::new();
    let _ = dp.write_stats(&mut s);
    for line in s.lines() {
        println!("{line}");
    }
    for (p, nic) in dp.ports().iter().zip(nics) {
        let n = nic.stats();
        println!(
            "nic port={} offloads={} rx_bursts={} tx_bursts={} rx_kicks={} tx_kicks={} rx_bad_len={} tx_no_headroom={} rx_large={} tx_large={} rx_chain_dropped={} rx_bad_offload={} tx_bad_offload={} host_tx_no_buffer={}",
            p.name,
            nic.offloads() as u8,
            n.rx_bursts,
            n.tx_bursts,
            n.rx_kicks,
            n.tx_kicks,
            n.rx_bad_len,
            n.tx_no_headroom,
            n.rx_large,
            n.tx_large,
            n.rx_chain_dropped,
            n.rx_bad_offload,
            n.tx_bad_offload,
            p.host.counters.tx_no_buffer
        );
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
    println!(
        "loop busy_turns={} idle_turns={} packets={} busy_cycles={} cycles_per_packet={} packets_per_busy_turn={} tsc_mhz={}",
        lp.busy_turns,
        lp.idle_turns,
        lp.packets,
        lp.busy_cycles,
        lp.busy_cycles.checked_div(lp.packets).unwrap_or(0),
        lp.packets.checked_div(lp.busy_turns).unwrap_or(0),
        crate::clock::tsc_mhz()
    );
    println!("stats end");
}
