//! One turn of the appliance's poll loop: reclaim, receive, process, transmit,
//! refill, for every port.

use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, PacketPool};
use vnfs::Micros;

use crate::Nic;

/// Runs one iteration over `nics` (index = port id). Returns the number of
/// packets received, so a caller can tell an idle turn from a busy one.
pub fn poll_once<N: Nic>(nics: &mut [N], dp: &mut Dataplane, pool: &mut PacketPool, now: Micros) -> usize {
    let mut received = 0;
    let mut batch = Batch::new();
    for (i, nic) in nics.iter_mut().enumerate() {
        nic.reclaim(pool);
        let n = nic.rx_burst(&mut batch, pool);
        if n > 0 {
            received += n;
            dp.receive(i as u8, &mut batch, pool, now);
        }
    }
    dp.poll(now, pool);
    for (i, nic) in nics.iter_mut().enumerate() {
        if !dp.port_mut(i as u8).tx.is_empty() {
            dp.transmit(i as u8, now, |q| nic.tx_burst(q, pool));
        }
        nic.refill(pool);
    }
    received
}
