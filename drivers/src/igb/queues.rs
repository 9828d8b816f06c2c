//! One receive and one transmit queue of the 82576 with advanced
//! descriptors (datasheet §7.1.5, §7.2.2.3): the data path the physical
//! function and its virtual functions share. Only where the queue's
//! registers sit differs (the PF's queue `n` at 0xC000/0xE000 + 0x40·n, a
//! VF's queue 0 at 0x2800/0x3800 of its own BAR).
//!
//! 256 entries each, in DMA memory from the `Hal`. Pool buffers are posted
//! as they are (the frame lands after the packet's headroom; the buffer
//! received into is the buffer a stage rewrites and the buffer
//! transmitted), the tail register is written once per refill and once per
//! transmit burst, completions are found by the descriptors' DD bits.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE};
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, Packet, PacketPool, BUF_SIZE, HEADROOM, MAX_FRAME};

use crate::NicStats;

/// Descriptors per ring: one page of 16-byte descriptors.
pub const RING: usize = PAGE_SIZE / 16;

// Offsets inside a queue's register block (both directions).
const DBAL: usize = 0x00;
const DBAH: usize = 0x04;
const DLEN: usize = 0x08;
const SRRCTL: usize = 0x0c;
const DH: usize = 0x10;
const DT: usize = 0x18;
const DCTL: usize = 0x28;

const QUEUE_ENABLE: u32 = 1 << 25;
/// SRRCTL: 2 KiB packet buffers (in 1 KiB units), advanced one-buffer descriptors.
pub(super) const SRRCTL_2K_ADV: u32 = 2 | (1 << 25);
/// SRRCTL: drop frames when this queue has no descriptor instead of
/// holding up the packet buffer the queues share (what a VF wants).
pub const SRRCTL_DROP_EN: u32 = 1 << 31;

pub(super) const RXD_DD: u32 = 1 << 0;
pub(super) const RXD_EOP: u32 = 1 << 1;
/// RXE: a CRC, symbol, sequence or length error the MAC found.
pub(super) const RXD_ERR_RXE: u32 = 1 << 31;

pub(super) const TXD_DTYP_DATA: u32 = 3 << 20;
pub(super) const TXD_EOP: u32 = 1 << 24;
pub(super) const TXD_IFCS: u32 = 1 << 25;
pub(super) const TXD_RS: u32 = 1 << 27;
pub(super) const TXD_DEXT: u32 = 1 << 29;
pub(super) const TXD_STA_DD: u32 = 1 << 0;
pub(super) const TXD_PAYLEN_SHIFT: u32 = 14;
/// Data descriptor: TCP segmentation (TSO).
const TXD_TSE: u32 = 1 << 31;
/// olinfo POPTS: insert the IPv4 header checksum / the L4 checksum.
const TXD_POPTS_IXSM: u32 = 1 << 8;
const TXD_POPTS_TXSM: u32 = 1 << 9;
/// Context descriptor type and its TUCMD bits (IPv4, L4 = TCP).
const TXD_DTYP_CTXT: u32 = 2 << 20;
const TUCMD_IPV4: u32 = 1 << 10;
const TUCMD_L4T_TCP: u32 = 1 << 11;

/// A device's register space (BAR 0), read and written 32 bits at a time.
#[derive(Clone, Copy)]
pub struct Regs {
    base: NonNull<u8>,
    size: usize,
}

impl Regs {
    /// # Safety
    /// `base` maps `size` bytes of the device's registers, uncached, for as
    /// long as any copy of the returned value is used.
    pub unsafe fn new(base: NonNull<u8>, size: usize) -> Regs {
        Regs { base, size }
    }

    pub fn read(&self, reg: usize) -> u32 {
        assert!(reg + 4 <= self.size && reg.is_multiple_of(4), "register {reg:#x} outside BAR 0");
        // SAFETY: `reg` is a 4-aligned register inside the mapped BAR
        // (checked above); MMIO, hence volatile.
        unsafe { (self.base.as_ptr().add(reg) as *const u32).read_volatile() }
    }

    pub fn write(&self, reg: usize, v: u32) {
        assert!(reg + 4 <= self.size && reg.is_multiple_of(4), "register {reg:#x} outside BAR 0");
        // SAFETY: as for `read`.
        unsafe { (self.base.as_ptr().add(reg) as *mut u32).write_volatile(v) }
    }
}

/// One descriptor ring in DMA memory.
pub(super) struct Ring<H: Hal> {
    paddr: u64,
    base: NonNull<u8>,
    _hal: core::marker::PhantomData<H>,
}

impl<H: Hal> Ring<H> {
    fn new() -> Self {
        let (paddr, base) = H::dma_alloc(1, BufferDirection::Both);
        Ring { paddr, base, _hal: core::marker::PhantomData }
    }

    fn desc(&self, i: usize) -> *mut u8 {
        assert!(i < RING);
        // SAFETY: `i < RING`, and the ring is one page of RING descriptors.
        unsafe { self.base.as_ptr().add(i * 16) }
    }

    fn write(&mut self, i: usize, lo: u64, hi: u64) {
        let d = self.desc(i);
        // SAFETY: descriptor `i` is the driver's (not handed to the device
        // yet), 16-byte aligned inside the ring page.
        unsafe {
            (d as *mut u64).write_volatile(lo);
            (d.add(8) as *mut u64).write_volatile(hi);
        }
    }

    fn read_u32(&self, i: usize, at: usize) -> u32 {
        // SAFETY: a 4-aligned field of descriptor `i`, inside the page; the
        // device writes it concurrently, hence volatile.
        unsafe { (self.desc(i).add(at) as *const u32).read_volatile() }
    }

    fn read_u16(&self, i: usize, at: usize) -> u16 {
        // SAFETY: as for `read_u32`, 2-aligned.
        unsafe { (self.desc(i).add(at) as *const u16).read_volatile() }
    }
}

impl<H: Hal> Drop for Ring<H> {
    fn drop(&mut self) {
        // SAFETY: allocated by `dma_alloc(1)` in `new`; the owner disabled
        // the queue before dropping its rings.
        unsafe { H::dma_dealloc(self.paddr, self.base, 1) };
    }
}

/// Where a queue pair's registers are: the receive and transmit blocks.
#[derive(Clone, Copy)]
pub struct Layout {
    pub rx: usize,
    pub tx: usize,
}

impl Layout {
    /// The PF's queue `n` (0..16).
    pub const fn pf(n: usize) -> Layout {
        Layout { rx: 0xc000 + 0x40 * n, tx: 0xe000 + 0x40 * n }
    }
    /// A VF's queue 0, in the VF's own BAR.
    pub const VF: Layout = Layout { rx: 0x2800, tx: 0x3800 };
}

/// A receive and a transmit queue, set up and enabled.
pub struct Queues<H: Hal> {
    regs: Regs,
    at: Layout,
    rx: Ring<H>,
    tx: Ring<H>,
    rx_slots: Vec<Option<Packet>>,
    /// Next receive descriptor to look at, and next to fill.
    rx_next: usize,
    rx_tail: usize,
    /// Receive descriptors the driver may still post (one stays empty, so
    /// a full ring is not mistaken for an empty one).
    rx_room: usize,
    /// The most descriptors posted at once (the pool's share for this ring).
    pub rx_fill: usize,
    /// Dropping the descriptors of a frame that spans several (until EOP).
    rx_discarding: bool,
    /// Per transmit head descriptor: the packet and its last descriptor.
    tx_slots: Vec<Option<(Packet, usize)>>,
    tx_next: usize,
    tx_tail: usize,
    tx_room: usize,
    pub stats: NicStats,
}

impl<H: Hal> Queues<H> {
    /// Points the queue pair at fresh rings and enables both queues
    /// (`srrctl_extra`: more SRRCTL bits, e.g. [`SRRCTL_DROP_EN`]).
    pub fn new(regs: Regs, at: Layout, srrctl_extra: u32) -> Self {
        let q = Queues {
            regs,
            at,
            rx: Ring::new(),
            tx: Ring::new(),
            rx_slots: (0..RING).map(|_| None).collect(),
            rx_next: 0,
            rx_tail: 0,
            rx_room: RING - 1,
            rx_fill: RING - 1,
            rx_discarding: false,
            tx_slots: (0..RING).map(|_| None).collect(),
            tx_next: 0,
            tx_tail: 0,
            tx_room: RING - 1,
            stats: NicStats::default(),
        };
        for (block, ring, srrctl) in [(at.rx, &q.rx, Some(SRRCTL_2K_ADV | srrctl_extra)), (at.tx, &q.tx, None)] {
            let v = regs.read(block + DCTL);
            regs.write(block + DCTL, v & !QUEUE_ENABLE);
            regs.write(block + DBAL, ring.paddr as u32);
            regs.write(block + DBAH, (ring.paddr >> 32) as u32);
            regs.write(block + DLEN, (RING * 16) as u32);
            if let Some(s) = srrctl {
                regs.write(block + SRRCTL, s);
            }
            regs.write(block + DH, 0);
            regs.write(block + DT, 0);
            regs.write(block + DCTL, v | QUEUE_ENABLE);
        }
        q
    }

    /// The device address of `len` bytes of `pkt`'s buffer from `offset`.
    fn share(pkt: &Packet, offset: usize, len: usize, direction: BufferDirection) -> u64 {
        let region = NonNull::slice_from_raw_parts(
            NonNull::new((pkt.buffer_addr() + offset) as *mut u8).expect("packet buffers are never at address 0"),
            len,
        );
        // SAFETY: the region lies inside the packet's buffer, which stays
        // put while a ring slot owns the packet.
        unsafe { H::share(region, direction) }
    }

    pub fn refill(&mut self, pool: &mut PacketPool) {
        let mut posted = 0;
        // Posted now: the room the ring had at start less what is left.
        while self.rx_room > 0 && RING - 1 - self.rx_room < self.rx_fill {
            let Some(pkt) = pool.alloc() else { break };
            let addr = Self::share(&pkt, HEADROOM, BUF_SIZE - HEADROOM, BufferDirection::DeviceToDriver);
            let i = self.rx_tail;
            // Read format: packet address, header address 0 (which also
            // clears the write-back's DD).
            self.rx.write(i, addr, 0);
            self.rx_slots[i] = Some(pkt);
            self.rx_tail = (i + 1) % RING;
            self.rx_room -= 1;
            posted += 1;
        }
        if posted > 0 {
            // Descriptors before the tail that hands them over.
            fence(Ordering::Release);
            self.regs.write(self.at.rx + DT, self.rx_tail as u32);
            self.stats.rx_kicks += 1;
        }
    }

    pub fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize {
        let before = batch.len();
        while !batch.is_full() {
            let i = self.rx_next;
            if self.rx_slots[i].is_none() {
                break;
            }
            let status = self.rx.read_u32(i, 8);
            if status & RXD_DD == 0 {
                break;
            }
            // The rest of the write-back only after DD.
            fence(Ordering::Acquire);
            let len = self.rx.read_u16(i, 12) as usize;
            let Some(mut pkt) = self.rx_slots[i].take() else { break };
            self.rx_next = (i + 1) % RING;
            self.rx_room += 1;
            let eop = status & RXD_EOP != 0;
            if self.rx_discarding || !eop {
                // A frame over one buffer: cannot happen with LPE clear;
                // dropped whole if a device does it anyway.
                self.rx_discarding = !eop;
                self.stats.rx_chain_dropped += 1;
                pool.free(pkt);
                continue;
            }
            if status & RXD_ERR_RXE != 0 || len == 0 || len > MAX_FRAME || !pkt.set_window(HEADROOM, len) {
                self.stats.rx_bad_len += 1;
                pool.free(pkt);
                continue;
            }
            // `batch` was checked not full.
            let _ = batch.push(pkt);
        }
        let n = batch.len() - before;
        if n > 0 {
            self.stats.rx_bursts += 1;
        }
        n
    }

    pub fn reclaim(&mut self, pool: &mut PacketPool) {
        while self.tx_next != self.tx_tail {
            let Some((_, last)) = self.tx_slots[self.tx_next].as_ref() else { break };
            let last = *last;
            if self.tx.read_u32(last, 12) & TXD_STA_DD == 0 {
                break;
            }
            if let Some((pkt, _)) = self.tx_slots[self.tx_next].take() {
                pool.free(pkt);
            }
            let n = (last + RING - self.tx_next) % RING + 1;
            self.tx_room += n;
            self.tx_next = (last + 1) % RING;
        }
    }

    pub fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        while let Some(front) = queue.front() {
            let need = 1 + front.tail().len();
            if need > self.tx_room {
                break;
            }
            let o = front.meta.offload;
            let ctx = (o.csum_partial || o.is_gso()).then(|| offload_context(front));
            if need + ctx.is_some() as usize > self.tx_room {
                break;
            }
            let Some(pkt) = queue.pop_front() else { break };
            let total = pkt.total_len();
            let (ctx, paylen, popts, tse) = match ctx {
                None => (None, total, 0, 0),
                Some(None) => {
                    // Offload work this code cannot describe to the device
                    // (not TCP/UDP over IPv4 with its headers in place).
                    self.stats.tx_bad_offload += 1;
                    pool.free(pkt);
                    continue;
                }
                Some(Some(c)) => {
                    let tse = if o.is_gso() { TXD_TSE } else { 0 };
                    let popts = TXD_POPTS_TXSM | if o.is_gso() { TXD_POPTS_IXSM } else { 0 };
                    (Some((c.0, c.1)), if o.is_gso() { total.saturating_sub(c.2) } else { total }, popts, tse)
                }
            };
            let first = self.tx_tail;
            let mut i = first;
            if let Some((lo, hi)) = ctx {
                // The context descriptor goes first: its slot is the packet's.
                self.tx.write(i, lo, hi);
                i = (i + 1) % RING;
            }
            let parts = core::iter::once(&pkt).chain(pkt.tail());
            for (k, seg) in parts.enumerate() {
                let addr = Self::share(seg, seg.head(), seg.len(), BufferDirection::DriverToDevice);
                let mut cmd = seg.len() as u32 | TXD_DTYP_DATA | TXD_DEXT | TXD_IFCS | tse;
                if k + 1 == need {
                    cmd |= TXD_EOP | TXD_RS;
                }
                let olinfo = if k == 0 { (paylen as u32) << TXD_PAYLEN_SHIFT | popts } else { 0 };
                self.tx.write(i, addr, cmd as u64 | (olinfo as u64) << 32);
                if k + 1 < need {
                    i = (i + 1) % RING;
                }
            }
            if tse != 0 {
                self.stats.tx_large += 1;
            }
            self.tx_slots[first] = Some((pkt, i));
            self.tx_tail = (i + 1) % RING;
            self.tx_room -= need + ctx.is_some() as usize;
            n += 1;
            bytes += total;
        }
        if n > 0 {
            fence(Ordering::Release);
            self.regs.write(self.at.tx + DT, self.tx_tail as u32);
            self.stats.tx_bursts += 1;
            self.stats.tx_kicks += 1;
        }
        (n, bytes)
    }

    pub fn buffers_held(&self) -> usize {
        self.rx_slots.iter().filter(|s| s.is_some()).count() + self.tx_slots.iter().filter(|s| s.is_some()).count()
    }
}

impl<H: Hal> Drop for Queues<H> {
    /// Stops both queues before their rings (and the buffers posted in
    /// them) go back to the heap: a NIC no port took must not write into
    /// freed memory.
    fn drop(&mut self) {
        for block in [self.at.rx, self.at.tx] {
            let v = self.regs.read(block + DCTL);
            self.regs.write(block + DCTL, v & !QUEUE_ENABLE);
            self.regs.write(block + DLEN, 0);
        }
    }
}

/// The `Nic` methods of a driver whose data path is its `q: Queues`: the PF
/// and the VF hand them over alike.
macro_rules! nic_via_queues {
    () => {
        fn refill(&mut self, pool: &mut PacketPool) {
            self.q.refill(pool)
        }
        fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize {
            self.q.rx_burst(batch, pool)
        }
        fn reclaim(&mut self, pool: &mut PacketPool) {
            self.q.reclaim(pool)
        }
        fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize) {
            self.q.tx_burst(queue, pool)
        }
        fn stats(&self) -> NicStats {
            self.q.stats
        }
        fn buffers_held(&self) -> usize {
            self.q.buffers_held()
        }
        fn ring_entries(&self) -> usize {
            2 * $crate::igb::queues::RING
        }
        fn rx_ring_entries(&self) -> usize {
            $crate::igb::queues::RING
        }
        fn set_rx_fill(&mut self, n: usize) {
            self.q.rx_fill = n;
        }
    };
}
pub(crate) use nic_via_queues;

/// The advanced context descriptor (datasheet §7.2.2.2) for a packet with a
/// partial checksum or a TSO super-packet: (low and high quadwords, bytes of
/// headers). `None`: not TCP/UDP over IPv4 with its headers in the first
/// buffer.
fn offload_context(pkt: &Packet) -> Option<(u64, u64, usize)> {
    let l3 = pkt.meta.l3 as usize;
    let ip = pkt.l3();
    let h = ip.get(..20)?;
    let ihl = (h[0] & 0x0f) as usize * 4;
    let (tcp, l4len) = match h[9] {
        6 => (true, (*ip.get(ihl + 12)? >> 4) as usize * 4),
        17 if !pkt.meta.offload.is_gso() => (false, 8),
        _ => return None,
    };
    if ihl < 20 || l4len < 8 || ip.len() < ihl + l4len {
        return None;
    }
    let vlan_macip_lens = (l3 as u32) << 9 | ihl as u32;
    let type_tucmd = TXD_DTYP_CTXT | TXD_DEXT | TUCMD_IPV4 | if tcp { TUCMD_L4T_TCP } else { 0 };
    let mss_l4len = (pkt.meta.offload.gso_size as u32) << 16 | (l4len as u32) << 8;
    Some((vlan_macip_lens as u64, type_tucmd as u64 | (mss_l4len as u64) << 32, l3 + ihl + l4len))
}
