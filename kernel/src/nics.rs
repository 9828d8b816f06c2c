//! The NICs the image drives, as one type for the poll loop: virtio-net
//! (PCI or MMIO), the Intel 82576 (igb) physical function and its virtual
//! function.

use drivers::igb::vf::Igbvf;
use drivers::igb::Igb;
use drivers::virtio::VirtioNet;
use drivers::{Nic, NicStats};
use virtio_drivers::transport::SomeTransport;
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, PacketPool};
use vnfs::stats::Sample;

use crate::hal::KernelHal;

// A few NICs, built once: the size difference between the variants costs
// nothing worth a box (and a box would be one more pointer per call).
#[allow(clippy::large_enum_variant)]
pub enum Port {
    Virtio(VirtioNet<KernelHal, SomeTransport<'static>>),
    Igb(Igb<KernelHal>),
    Igbvf(Igbvf<KernelHal>),
}

macro_rules! each {
    ($self:ident, $n:ident => $e:expr) => {
        match $self {
            Port::Virtio($n) => $e,
            Port::Igb($n) => $e,
            Port::Igbvf($n) => $e,
        }
    };
}

impl Nic for Port {
    fn mac(&self) -> [u8; 6] {
        each!(self, n => n.mac())
    }
    fn refill(&mut self, pool: &mut PacketPool) {
        each!(self, n => n.refill(pool))
    }
    fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize {
        each!(self, n => n.rx_burst(batch, pool))
    }
    fn reclaim(&mut self, pool: &mut PacketPool) {
        each!(self, n => n.reclaim(pool))
    }
    fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize) {
        each!(self, n => n.tx_burst(queue, pool))
    }
    fn stats(&self) -> NicStats {
        each!(self, n => n.stats())
    }
    fn offloads(&self) -> bool {
        each!(self, n => n.offloads())
    }
    fn buffers_held(&self) -> usize {
        each!(self, n => n.buffers_held())
    }
    fn ring_entries(&self) -> usize {
        each!(self, n => n.ring_entries())
    }
    fn rx_ring_entries(&self) -> usize {
        each!(self, n => n.rx_ring_entries())
    }
    fn set_rx_fill(&mut self, n: usize) {
        each!(self, n2 => n2.set_rx_fill(n))
    }
    fn device_counters(&self) -> heapless::Vec<Sample, 12> {
        each!(self, n => n.device_counters())
    }
}
