//! NIC drivers for sluice, behind one small trait.
//!
//! A [`Nic`] receives and transmits *bursts* of owned [`Packet`]s from the one
//! [`PacketPool`]: the buffer a NIC received into is the buffer a stage
//! rewrites and the buffer a NIC transmits, with no copy. [`poll::poll_once`]
//! is one turn of the appliance's loop over a set of NICs and a dataplane; the
//! kernel calls it forever, host backends and tests can call it too.
#![no_std]

extern crate alloc;

pub mod igb;
pub mod poll;
#[cfg(test)]
mod testhal;
pub mod virtio;

use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, PacketPool};

pub use vnfs::packet::Packet;

vnfs::counters! {
    /// Counters a driver keeps about its own work (not about packets'
    /// fates), declared once: `stats` and `/metrics` take names and help
    /// from here.
    pub struct NicStats {
        rx_bursts: counter "receive bursts that returned at least one packet",
        tx_bursts: counter "transmit bursts that posted at least one packet",
        rx_kicks: counter "device notifications for the receive queue (after refills)",
        tx_kicks: counter "device notifications for the transmit queue",
        rx_bad_len: counter "frames the device returned shorter than its own header",
        tx_no_headroom: counter "packets refused for transmit: no room in front of the frame for the device header",
        rx_large: counter "frames received in several buffers or as segmentation super-packets",
        tx_large: counter "segmentation super-packets transmitted (the device cuts them)",
        rx_chain_dropped: counter "multi-buffer frames dropped: a buffer could not be kept",
        rx_bad_offload: counter "frames whose offload header asked for work never negotiated",
        tx_bad_offload: counter "packets needing offloads handed to a NIC without them",
    }
}

/// One network port's device: burst receive and burst transmit of owned buffers.
pub trait Nic {
    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];
    /// Posts free buffers from `pool` until the receive ring is full,
    /// notifying the device at most once.
    fn refill(&mut self, pool: &mut PacketPool);
    /// Moves received packets into `batch` until it is full or nothing is
    /// pending. Returns how many were added.
    fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize;
    /// Returns buffers the device has finished transmitting to `pool`.
    fn reclaim(&mut self, pool: &mut PacketPool);
    /// Posts frames from the front of `queue` until the ring is full or the
    /// queue is empty, notifying the device at most once. Returns the number
    /// of packets and bytes posted.
    fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize);
    /// The driver's own counters.
    fn stats(&self) -> NicStats;
    /// Whether the NIC completes partial checksums and cuts segmentation
    /// super-packets on transmit (and may receive them).
    fn offloads(&self) -> bool {
        false
    }
    /// Buffers the driver holds (posted to the device or waiting to be reclaimed).
    fn buffers_held(&self) -> usize;
    /// Entries of its receive and transmit rings together: the buffers it
    /// holds when both are full (the pool is sized from it).
    fn ring_entries(&self) -> usize;
    /// Entries of its receive ring.
    fn rx_ring_entries(&self) -> usize;
    /// Posts at most `n` buffers to the receive ring (its share of a pool
    /// too small to fill every ring: `vnfs::packet::sizing::plan`). Until
    /// called, refill fills the whole ring.
    fn set_rx_fill(&mut self, n: usize);
    /// The device's own counters (statistics registers), if it has any.
    fn device_counters(&self) -> heapless::Vec<vnfs::stats::Sample, 12> {
        heapless::Vec::new()
    }
}
