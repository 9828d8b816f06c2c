//! NIC drivers for sluice, behind one small trait.
//!
//! A [`Nic`] receives and transmits *bursts* of owned [`Packet`]s from the one
//! [`PacketPool`]: the buffer a NIC received into is the buffer a stage
//! rewrites and the buffer a NIC transmits, with no copy. [`poll::poll_once`]
//! is one turn of the appliance's loop over a set of NICs and a dataplane; the
//! kernel calls it forever, host backends and tests can call it too.
#![no_std]

extern crate alloc;

pub mod poll;
pub mod virtio;

use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, PacketPool};

pub use vnfs::packet::Packet;

/// Counters a driver keeps about its own work (not about packets' fates).
#[derive(Clone, Copy, Debug, Default)]
pub struct NicStats {
    /// Device notifications for the receive queue (after refills).
    pub rx_kicks: u64,
    /// Device notifications for the transmit queue.
    pub tx_kicks: u64,
    /// Receive bursts that returned at least one packet.
    pub rx_bursts: u64,
    /// Transmit bursts that posted at least one packet.
    pub tx_bursts: u64,
    /// Frames the device returned with a length below its own header.
    pub rx_bad_len: u64,
    /// Packets refused for transmit because a stage left no room in front
    /// of the frame for the device's header.
    pub tx_no_headroom: u64,
    /// Frames received in several buffers or as segmentation super-packets.
    pub rx_large: u64,
    /// Segmentation super-packets transmitted (the device cuts them).
    pub tx_large: u64,
    /// Frames in several buffers dropped because one of their buffers could
    /// not be kept (no tail list free in the pool, or a bad length).
    pub rx_chain_dropped: u64,
    /// Frames whose offload header asked for work never negotiated.
    pub rx_bad_offload: u64,
    /// Packets needing offloads handed to a NIC without them (a bug upstream).
    pub tx_bad_offload: u64,
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
}
