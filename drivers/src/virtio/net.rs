//! The virtio-net device (VIRTIO 1.2 §5.1) in poll mode.

use core::fmt;

use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};
use virtio_drivers::Hal;
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, Packet, PacketPool, BUF_SIZE, HEADROOM};

use super::queue::VirtQueue;
use crate::{Nic, NicStats};

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Ring entries we use per queue at most: what the device offers, up to
/// 1024. QEMU's virtio-pci offers 256 unless told `rx_queue_size`/
/// `tx_queue_size` (up to 1024; a transmit ring above 256 only on
/// vhost-user), its virtio-mmio (microvm) offers 1024 whatever the backend.
/// The lab gives its vhost-user NICs 1024, as OpenStack does, so that a
/// burst the vCPU is late for waits in the ring instead of being refused.
const QUEUE_SIZE: u16 = 1024;

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_HOST_TSO4: u64 = 1 << 11;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
const F_EVENT_IDX: u64 = 1 << 29;
const F_VERSION_1: u64 = 1 << 32;
const SUPPORTED: u64 = F_MAC | F_STATUS | F_EVENT_IDX | F_VERSION_1;
/// Checksum offload and TCP segmentation both ways, with mergeable receive
/// buffers so a 64 KiB super-packet arrives in ordinary pool buffers: all
/// five or none.
pub const OFFLOADS: u64 = F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_HOST_TSO4 | F_MRG_RXBUF;

// virtio_net_hdr (VIRTIO 1.2 §5.1.6).
const HDR_F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;

/// What becomes of a frame being taken off the receive ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Deliver,
    /// Its header asks for an offload never negotiated.
    BadOffload,
    /// A buffer of it could not be kept (no tail list free, bad length).
    Lost,
}

/// Why a virtio device could not be brought up as a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioNetError {
    NotANetworkDevice(DeviceType),
    NoMac,
    QueueUnavailable { queue: u16 },
    QueueTooSmall { queue: u16, size: u32 },
    FeaturesRejected,
}

impl fmt::Display for VirtioNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANetworkDevice(t) => {
                write!(f, "virtio device is a {t:?}, not a network device")
            }
            Self::NoMac => f.write_str("virtio-net device offers no MAC address (VIRTIO_NET_F_MAC)"),
            Self::QueueUnavailable { queue } => {
                write!(f, "virtqueue {queue} is already in use or absent")
            }
            Self::QueueTooSmall { queue, size } => {
                write!(f, "virtqueue {queue} has only {size} entries")
            }
            Self::FeaturesRejected => f.write_str("device refused the negotiated features (FEATURES_OK not set)"),
        }
    }
}

/// A virtio-net NIC over any virtio transport.
pub struct VirtioNet<H: Hal, T: Transport> {
    transport: T,
    rx: VirtQueue<H>,
    tx: VirtQueue<H>,
    mac: [u8; 6],
    /// virtio_net_hdr length: 12 with VERSION_1 or MRG_RXBUF, else 10.
    hdr_len: usize,
    /// [`OFFLOADS`] negotiated.
    offloads: bool,
    /// A frame whose further buffers have not all come back yet (mergeable
    /// receive buffers), with how many are still to come and whether it is
    /// already doomed.
    partial: Option<(Packet, u16, Fate)>,
    /// The most buffers the receive ring is given ([`Nic::set_rx_fill`]).
    rx_fill: usize,
    stats: NicStats,
}

impl<H: Hal, T: Transport> VirtioNet<H, T> {
    /// Resets the device, negotiates features and sets up both queues.
    /// With `offloads`, also negotiates [`OFFLOADS`] if the device offers
    /// all of them.
    pub fn new(mut transport: T, offloads: bool) -> Result<Self, VirtioNetError> {
        let ty = transport.device_type();
        if ty != DeviceType::Network {
            return Err(VirtioNetError::NotANetworkDevice(ty));
        }
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        let mut features = offered & SUPPORTED;
        if offloads && offered & OFFLOADS == OFFLOADS {
            features |= OFFLOADS;
        }
        if features & F_MAC == 0 {
            transport.set_status(DeviceStatus::FAILED);
            return Err(VirtioNetError::NoMac);
        }
        transport.write_driver_features(features);
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(VirtioNetError::FeaturesRejected);
        }
        transport.set_guest_page_size(virtio_drivers::PAGE_SIZE as u32);
        let event_idx = features & F_EVENT_IDX != 0;
        let hdr_len = if features & (F_VERSION_1 | F_MRG_RXBUF) != 0 { 12 } else { 10 };
        let offloads = features & OFFLOADS == OFFLOADS;

        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = transport.read_config_space::<u8>(i).map_err(|_| VirtioNetError::NoMac)?;
        }
        let rx = Self::setup_queue(&mut transport, RX_QUEUE, event_idx)?;
        let tx = Self::setup_queue(&mut transport, TX_QUEUE, event_idx)?;
        transport.finish_init();
        let rx_fill = rx.size() as usize;
        Ok(VirtioNet { transport, rx, tx, mac, hdr_len, offloads, partial: None, rx_fill, stats: NicStats::default() })
    }

    fn setup_queue(transport: &mut T, queue: u16, event_idx: bool) -> Result<VirtQueue<H>, VirtioNetError> {
        if transport.queue_used(queue) {
            return Err(VirtioNetError::QueueUnavailable { queue });
        }
        let max = transport.max_queue_size(queue);
        if max < 2 {
            return Err(VirtioNetError::QueueTooSmall { queue, size: max });
        }
        // Largest power of two the device allows, capped.
        let size = (QUEUE_SIZE as u32).min(1 << (31 - max.leading_zeros())) as u16;
        let q = VirtQueue::<H>::new(size, event_idx);
        let (desc, driver, device) = q.addresses();
        transport.queue_set(queue, size as u32, desc, driver, device);
        Ok(q)
    }

    /// Whether the link is up (always true without VIRTIO_NET_F_STATUS).
    pub fn link_up(&self) -> bool {
        self.transport.read_config_space::<u16>(6).map(|s| s & 1 == 1).unwrap_or(true)
    }

    /// Whether checksum offload and TCP segmentation were negotiated.
    pub fn offloads(&self) -> bool {
        self.offloads
    }

    /// Takes the next frame off the receive ring: its first buffer, with
    /// the others of a merged frame chained on. `None` when the ring has
    /// nothing (more) for now.
    fn next_frame(&mut self, pool: &mut PacketPool) -> Option<Packet> {
        loop {
            let (mut pkt, mut remaining, mut fate) = match self.partial.take() {
                Some(p) => p,
                None => {
                    let (mut pkt, len) = self.rx.pop_used()?;
                    let len = len as usize;
                    if len < self.hdr_len || !pkt.set_window(HEADROOM, len - self.hdr_len) {
                        self.stats.rx_bad_len += 1;
                        pool.free(pkt);
                        continue;
                    }
                    let h = &pkt.headroom_mut()[HEADROOM - self.hdr_len..];
                    let (flags, gso_type) = (h[0], h[1]);
                    let word = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
                    let (gso_size, csum_start, csum_offset) = (word(4), word(6), word(8));
                    let buffers = if self.hdr_len == 12 && self.offloads { word(10).max(1) } else { 1 };
                    let mut fate = Fate::Deliver;
                    let o = &mut pkt.meta.offload;
                    o.csum_partial = flags & HDR_F_NEEDS_CSUM != 0;
                    o.csum_start = csum_start;
                    // Offsets past a byte are no TCP/UDP checksum: 255 makes
                    // the packet one the offload code refuses (counted).
                    o.csum_offset = u8::try_from(csum_offset).unwrap_or(u8::MAX);
                    o.gso_size = match gso_type & !GSO_ECN {
                        GSO_NONE => 0,
                        GSO_TCPV4 if gso_size > 0 => gso_size,
                        // Not negotiated: UDP or IPv6 segmentation, or nonsense.
                        _ => {
                            fate = Fate::BadOffload;
                            0
                        }
                    };
                    (pkt, buffers - 1, fate)
                }
            };
            while remaining > 0 {
                let Some((mut seg, len)) = self.rx.pop_used() else {
                    // The rest is not back yet: finish the frame next time.
                    self.partial = Some((pkt, remaining, fate));
                    return None;
                };
                remaining -= 1;
                // Further buffers carry no header: the data starts where
                // the buffer posted to the device starts.
                if fate != Fate::Deliver || !seg.set_window(HEADROOM - self.hdr_len, len as usize) {
                    fate = if fate == Fate::Deliver { Fate::Lost } else { fate };
                    pool.free(seg);
                    continue;
                }
                if let Err(seg) = pool.append(&mut pkt, seg) {
                    pool.free(seg);
                    fate = Fate::Lost;
                }
            }
            match fate {
                Fate::Deliver => {}
                Fate::BadOffload | Fate::Lost => {
                    // Drained whole (its other buffers too), then dropped.
                    if fate == Fate::Lost {
                        self.stats.rx_chain_dropped += 1;
                    } else {
                        self.stats.rx_bad_offload += 1;
                    }
                    pool.free(pkt);
                    continue;
                }
            }
            if pkt.is_chained() || pkt.meta.offload.is_gso() {
                self.stats.rx_large += 1;
            }
            return Some(pkt);
        }
    }

    /// Size of the receive and transmit rings.
    pub fn ring_sizes(&self) -> (u16, u16) {
        (self.rx.size(), self.tx.size())
    }
}

impl<H: Hal, T: Transport> Nic for VirtioNet<H, T> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn refill(&mut self, pool: &mut PacketPool) {
        let offset = HEADROOM - self.hdr_len;
        while self.rx.free_count() > 0 && self.rx.in_flight() < self.rx_fill {
            let Some(pkt) = pool.alloc() else { break };
            if let Err(pkt) = self.rx.add(pkt, offset, BUF_SIZE - offset, true) {
                pool.free(pkt);
                break;
            }
        }
        if self.rx.publish() {
            self.stats.rx_kicks += 1;
            self.transport.notify(RX_QUEUE);
        }
    }

    fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize {
        let before = batch.len();
        while !batch.is_full() {
            let Some(pkt) = self.next_frame(pool) else {
                break;
            };
            // `batch` was checked not full.
            let _ = batch.push(pkt);
        }
        let n = batch.len() - before;
        if n > 0 {
            self.stats.rx_bursts += 1;
        }
        n
    }

    fn reclaim(&mut self, pool: &mut PacketPool) {
        while let Some((pkt, _)) = self.tx.pop_used() {
            pool.free(pkt);
        }
    }

    fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize) {
        let (mut pkts, mut bytes) = (0, 0);
        while self.tx.free_count() > 0 {
            let Some(mut pkt) = queue.pop_front() else {
                break;
            };
            let head = pkt.head();
            if head < self.hdr_len {
                // Stages keep the NIC's headroom; a packet without it is a bug
                // upstream, counted rather than sent corrupt.
                self.stats.tx_no_headroom += 1;
                pool.free(pkt);
                continue;
            }
            let len = pkt.len();
            let o = pkt.meta.offload;
            if !self.offloads && (o.csum_partial || o.is_gso()) {
                // The egress completes this work in software for a port
                // without offloads; reaching here is a bug upstream.
                self.stats.tx_bad_offload += 1;
                pool.free(pkt);
                continue;
            }
            let total = pkt.total_len();
            let h = &mut pkt.headroom_mut()[head - self.hdr_len..];
            h.fill(0);
            if o.csum_partial {
                h[0] = HDR_F_NEEDS_CSUM;
                h[6..8].copy_from_slice(&o.csum_start.to_le_bytes());
                h[8..10].copy_from_slice(&u16::from(o.csum_offset).to_le_bytes());
            }
            if o.is_gso() {
                h[1] = GSO_TCPV4;
                h[4..6].copy_from_slice(&o.gso_size.to_le_bytes());
            }
            if let Err(pkt) = self.tx.add_chain(pkt, head - self.hdr_len, len + self.hdr_len, false) {
                let _ = queue.push_front(pkt);
                break;
            }
            if o.is_gso() {
                self.stats.tx_large += 1;
            }
            pkts += 1;
            bytes += total;
        }
        if pkts > 0 {
            self.stats.tx_bursts += 1;
        }
        if self.tx.publish() {
            self.stats.tx_kicks += 1;
            self.transport.notify(TX_QUEUE);
        }
        (pkts, bytes)
    }

    fn stats(&self) -> NicStats {
        self.stats
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn ring_entries(&self) -> usize {
        self.rx.size() as usize + self.tx.size() as usize
    }

    fn rx_ring_entries(&self) -> usize {
        self.rx.size() as usize
    }

    fn set_rx_fill(&mut self, n: usize) {
        self.rx_fill = n;
    }

    fn buffers_held(&self) -> usize {
        // Descriptors in use (one per buffer), and a merged frame still
        // waiting for its last buffers.
        let partial = self.partial.as_ref().map_or(0, |(p, ..)| 1 + p.tail().len());
        self.rx.in_flight() + self.tx.in_flight() + partial
    }
}

impl<H: Hal, T: Transport> Drop for VirtioNet<H, T> {
    fn drop(&mut self) {
        // Stop the device before its rings and buffers go away.
        self.transport.set_status(DeviceStatus::empty());
        self.rx.drain().for_each(drop);
        self.tx.drain().for_each(drop);
    }
}
