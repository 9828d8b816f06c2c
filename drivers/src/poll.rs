//! One turn of the appliance's poll loop: reclaim, receive, process, transmit,
//! refill, for every port.

use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, PacketPool};
use vnfs::Micros;

use crate::Nic;

/// TSC cycles a busy turn spent in each phase: receive (reclaim + rx
/// bursts), the dataplane on what was received, the dataplane's timers and
/// host stacks, transmit (tx bursts + refill).
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    pub rx: u64,
    pub process: u64,
    pub poll: u64,
    pub tx: u64,
}

/// Runs one iteration over `nics` (index = port id). Returns the number of
/// packets received, so a caller can tell an idle turn from a busy one.
pub fn poll_once<N: Nic>(nics: &mut [N], dp: &mut Dataplane, pool: &mut PacketPool, now: Micros) -> usize {
    poll_once_timed(nics, dp, pool, now, None)
}

/// A clock (TSC cycles) and the phase sums it adds to.
pub type Timing<'a> = Option<(fn() -> u64, &'a mut Phases)>;

/// [`poll_once`], adding each phase's cycles to `timed` (a clock and the
/// sums) when the turn found packets.
pub fn poll_once_timed<N: Nic>(
    nics: &mut [N],
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    now: Micros,
    timed: Timing<'_>,
) -> usize {
    let clock = timed.as_ref().map(|t| t.0);
    let tick = || clock.map_or(0, |c| c());
    let mut received = 0;
    let mut batch = Batch::new();
    let (mut rx, mut process) = (0u64, 0u64);
    for (i, nic) in nics.iter_mut().enumerate() {
        let t0 = tick();
        nic.reclaim(pool);
        let n = nic.rx_burst(&mut batch, pool);
        let t1 = tick();
        rx += t1.wrapping_sub(t0);
        if n > 0 {
            received += n;
            dp.receive(i as u8, &mut batch, pool, now);
            process += tick().wrapping_sub(t1);
        }
    }
    let t2 = tick();
    dp.poll(now, pool);
    let t3 = tick();
    for (i, nic) in nics.iter_mut().enumerate() {
        if !dp.port_mut(i as u8).tx.is_empty() {
            dp.transmit(i as u8, now, |q| nic.tx_burst(q, pool));
        }
        nic.refill(pool);
    }
    if let (Some((_, p)), true) = (timed, received > 0) {
        p.rx += rx;
        p.process += process;
        p.poll += t3.wrapping_sub(t2);
        p.tx += tick().wrapping_sub(t3);
    }
    received
}
