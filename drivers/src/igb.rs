//! Intel 82576 (igb) physical function, in poll mode: the NIC a whole
//! passed-through port is, and the one SR-IOV NIC QEMU models (`-device
//! igb`, 8086:10c9).
//!
//! One receive and one transmit queue with advanced descriptors (82576
//! datasheet §7.1.5, §7.2.2.3), 256 entries each, in DMA memory from the
//! `Hal`. Pool buffers are posted as they are (the frame lands after the
//! packet's headroom; the buffer received into is the buffer a stage
//! rewrites and the buffer transmitted), the tail register is written once
//! per refill and once per transmit burst, completions are found by the
//! descriptors' DD bits. No interrupts (IMC masks them all), no offloads
//! yet: the dataplane completes checksums in software for this port.
//!
//! The device's own statistics registers clear when read (§8.19); the
//! driver adds them up and reports them beside its own counters.

use alloc::vec::Vec;
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE};
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, Packet, PacketPool, BUF_SIZE, HEADROOM, MAX_FRAME};
use vnfs::stats::Sample;

use crate::{Nic, NicStats};

pub const VENDOR: u16 = 0x8086;
/// 82576 copper physical function (what `-device igb` is).
pub const DEVICE_82576: u16 = 0x10c9;
/// Bytes of register space BAR 0 decodes.
pub const BAR0_SIZE: usize = 128 << 10;

// Registers (82576 datasheet §8).
const CTRL: usize = 0x0000;
const STATUS: usize = 0x0008;
const MDIC: usize = 0x0020;
const IMC: usize = 0x150c;
const EIMC: usize = 0x1528;
const RCTL: usize = 0x0100;
const TCTL: usize = 0x0400;
const RAL0: usize = 0x5400;
const RAH0: usize = 0x5404;
const RDBAL0: usize = 0xc000;
const RDBAH0: usize = 0xc004;
const RDLEN0: usize = 0xc008;
const SRRCTL0: usize = 0xc00c;
const RDH0: usize = 0xc010;
const RDT0: usize = 0xc018;
const RXDCTL0: usize = 0xc028;
const TDBAL0: usize = 0xe000;
const TDBAH0: usize = 0xe004;
const TDLEN0: usize = 0xe008;
const TDH0: usize = 0xe010;
const TDT0: usize = 0xe018;
const TXDCTL0: usize = 0xe028;
// Statistics (clear on read).
const CRCERRS: usize = 0x4000;
const MPC: usize = 0x4010;
const GPRC: usize = 0x4074;
const GPTC: usize = 0x4080;
const GORCL: usize = 0x4088;
const GORCH: usize = 0x408c;
const GOTCL: usize = 0x4090;
const GOTCH: usize = 0x4094;
const RNBC: usize = 0x40a0;
const ROC: usize = 0x40ac;

const CTRL_SLU: u32 = 1 << 6;
/// Link reset: the link stays down while set (set at power-on).
const CTRL_LRST: u32 = 1 << 3;
/// MDIC: write, to PHY 1, ready.
const MDIC_OP_WRITE: u32 = 1 << 26;
const MDIC_PHY1: u32 = 1 << 21;
const MDIC_READY: u32 = 1 << 28;
/// PHY control (MII register 0): auto-negotiation on and restarted, 1000
/// Mb/s full duplex advertised.
const BMCR_AUTONEG_RESTART: u32 = 0x1340;
const STATUS_LU: u32 = 1 << 1;
const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const RAH_AV: u32 = 1 << 31;
const QUEUE_ENABLE: u32 = 1 << 25;
/// SRRCTL: 2 KiB packet buffers (in 1 KiB units), advanced one-buffer descriptors.
const SRRCTL_2K_ADV: u32 = 2 | (1 << 25);

const RXD_DD: u32 = 1 << 0;
const RXD_EOP: u32 = 1 << 1;
/// RXE: a CRC, symbol, sequence or length error the MAC found.
const RXD_ERR_RXE: u32 = 1 << 31;

const TXD_DTYP_DATA: u32 = 3 << 20;
const TXD_EOP: u32 = 1 << 24;
const TXD_IFCS: u32 = 1 << 25;
const TXD_RS: u32 = 1 << 27;
const TXD_DEXT: u32 = 1 << 29;
const TXD_STA_DD: u32 = 1 << 0;
const TXD_PAYLEN_SHIFT: u32 = 14;
/// Data descriptor: TCP segmentation (TSO).
const TXD_TSE: u32 = 1 << 31;
/// olinfo POPTS: insert the IPv4 header checksum / the L4 checksum.
const TXD_POPTS_IXSM: u32 = 1 << 8;
const TXD_POPTS_TXSM: u32 = 1 << 9;
/// Context descriptor type and its TUCMD bits (IPv4, L4 = TCP).
const TXD_DTYP_CTXT: u32 = 2 << 20;
const TUCMD_IPV4: u32 = 1 << 10;
const TUCMD_L4T_TCP: u32 = 1 << 11;

/// Descriptors per ring: one page of 16-byte descriptors.
const RING: usize = PAGE_SIZE / 16;

#[derive(Debug)]
pub enum IgbError {
    /// RAH0 holds no valid address (no EEPROM MAC).
    NoMac,
}

impl core::fmt::Display for IgbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IgbError::NoMac => f.write_str("the device has no MAC address (RAH0.AV clear)"),
        }
    }
}

/// One descriptor ring in DMA memory.
struct Ring<H: Hal> {
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
        debug_assert!(i < RING);
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

/// The device's counters, added up across clear-on-read reads.
#[derive(Clone, Copy, Default)]
struct DeviceTotals {
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_missed: u64,
    rx_no_buffer: u64,
    crc_errors: u64,
    rx_oversize: u64,
}

pub struct Igb<H: Hal> {
    regs: NonNull<u8>,
    mac: [u8; 6],
    rx: Ring<H>,
    tx: Ring<H>,
    rx_slots: Vec<Option<Packet>>,
    /// Next receive descriptor to look at, and next to fill.
    rx_next: usize,
    rx_tail: usize,
    /// Receive descriptors the driver may still post (one stays empty, so
    /// a full ring is not mistaken for an empty one).
    rx_room: usize,
    /// Dropping the descriptors of a frame that spans several (until EOP).
    rx_discarding: bool,
    /// Per transmit head descriptor: the packet and its last descriptor.
    tx_slots: Vec<Option<(Packet, usize)>>,
    tx_next: usize,
    tx_tail: usize,
    tx_room: usize,
    stats: NicStats,
    device: Cell<DeviceTotals>,
    /// Checksum offload and TSO on transmit (unless the image was told
    /// `offloads=off`).
    offload: bool,
}

impl<H: Hal> Igb<H> {
    /// Takes over the function whose BAR 0 is at `bar0` (memory decoding
    /// and bus mastering enabled by the caller): interrupts masked, one
    /// receive and one transmit queue, receive on.
    pub fn new(bar0: u64, offloads: bool) -> Result<Self, IgbError> {
        // SAFETY: the caller passes BAR 0 of an 82576, which decodes
        // BAR0_SIZE bytes of registers there.
        let regs = unsafe { H::mmio_phys_to_virt(bar0, BAR0_SIZE) };
        let mut nic = Igb {
            regs,
            mac: [0; 6],
            rx: Ring::new(),
            tx: Ring::new(),
            rx_slots: (0..RING).map(|_| None).collect(),
            rx_next: 0,
            rx_tail: 0,
            rx_room: RING - 1,
            rx_discarding: false,
            tx_slots: (0..RING).map(|_| None).collect(),
            tx_next: 0,
            tx_tail: 0,
            tx_room: RING - 1,
            stats: NicStats::default(),
            device: Cell::new(DeviceTotals::default()),
            offload: offloads,
        };
        nic.write(IMC, u32::MAX);
        nic.write(EIMC, u32::MAX);
        let (ral, rah) = (nic.read(RAL0), nic.read(RAH0));
        if rah & RAH_AV == 0 {
            return Err(IgbError::NoMac);
        }
        let m = ral.to_le_bytes();
        let h = rah.to_le_bytes();
        nic.mac = [m[0], m[1], m[2], m[3], h[0], h[1]];

        nic.write(RDBAL0, nic.rx.paddr as u32);
        nic.write(RDBAH0, (nic.rx.paddr >> 32) as u32);
        nic.write(RDLEN0, (RING * 16) as u32);
        nic.write(SRRCTL0, SRRCTL_2K_ADV);
        nic.write(RDH0, 0);
        nic.write(RDT0, 0);
        let v = nic.read(RXDCTL0);
        nic.write(RXDCTL0, v | QUEUE_ENABLE);
        // 2 KiB buffers (BSIZE 00), CRC stripped, broadcasts accepted; no
        // long packets (LPE clear): the MAC drops frames over 1522 bytes,
        // so no frame outgrows the MAX_FRAME bytes after a buffer's headroom.
        nic.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);

        nic.write(TDBAL0, nic.tx.paddr as u32);
        nic.write(TDBAH0, (nic.tx.paddr >> 32) as u32);
        nic.write(TDLEN0, (RING * 16) as u32);
        nic.write(TDH0, 0);
        nic.write(TDT0, 0);
        let v = nic.read(TXDCTL0);
        nic.write(TXDCTL0, v | QUEUE_ENABLE);
        let v = nic.read(TCTL);
        nic.write(TCTL, v | TCTL_EN | TCTL_PSP);
        let v = nic.read(CTRL);
        nic.write(CTRL, (v | CTRL_SLU) & !CTRL_LRST);
        // Restart auto-negotiation on the PHY (as Linux's igb does at
        // open): the link comes up when it completes, about half a second
        // on QEMU's model. Receive works from then on; nothing waits here.
        nic.write(MDIC, BMCR_AUTONEG_RESTART | MDIC_PHY1 | MDIC_OP_WRITE);
        for _ in 0..10_000 {
            if nic.read(MDIC) & MDIC_READY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Ok(nic)
    }

    fn read(&self, reg: usize) -> u32 {
        debug_assert!(reg < BAR0_SIZE);
        // SAFETY: `reg` is a 4-aligned register inside BAR 0 (mapped
        // uncached); MMIO, hence volatile.
        unsafe { (self.regs.as_ptr().add(reg) as *const u32).read_volatile() }
    }

    fn write(&self, reg: usize, v: u32) {
        debug_assert!(reg < BAR0_SIZE);
        // SAFETY: as for `read`.
        unsafe { (self.regs.as_ptr().add(reg) as *mut u32).write_volatile(v) }
    }

    pub fn ring_sizes(&self) -> (usize, usize) {
        (RING, RING)
    }

    /// Whether the PHY reports link (it comes up a moment after start).
    pub fn link_up(&self) -> bool {
        self.read(STATUS) & STATUS_LU != 0
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

    fn update_device_totals(&self) -> DeviceTotals {
        let mut t = self.device.get();
        t.rx_packets += self.read(GPRC) as u64;
        t.tx_packets += self.read(GPTC) as u64;
        // Low before high: the pair clears on the high read.
        t.rx_bytes += self.read(GORCL) as u64 | (self.read(GORCH) as u64) << 32;
        t.tx_bytes += self.read(GOTCL) as u64 | (self.read(GOTCH) as u64) << 32;
        t.rx_missed += self.read(MPC) as u64;
        t.rx_no_buffer += self.read(RNBC) as u64;
        t.crc_errors += self.read(CRCERRS) as u64;
        t.rx_oversize += self.read(ROC) as u64;
        self.device.set(t);
        t
    }
}

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

impl<H: Hal> Nic for Igb<H> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn refill(&mut self, pool: &mut PacketPool) {
        let mut posted = 0;
        while self.rx_room > 0 {
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
            self.write(RDT0, self.rx_tail as u32);
            self.stats.rx_kicks += 1;
        }
    }

    fn rx_burst(&mut self, batch: &mut Batch, pool: &mut PacketPool) -> usize {
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

    fn reclaim(&mut self, pool: &mut PacketPool) {
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

    fn tx_burst(&mut self, queue: &mut TxQueue, pool: &mut PacketPool) -> (usize, usize) {
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
            self.write(TDT0, self.tx_tail as u32);
            self.stats.tx_bursts += 1;
            self.stats.tx_kicks += 1;
        }
        (n, bytes)
    }

    fn stats(&self) -> NicStats {
        self.stats
    }

    /// Checksum offload and TSO on transmit (context descriptors); the
    /// device delivers plain frames on receive.
    fn offloads(&self) -> bool {
        self.offload
    }

    fn device_counters(&self) -> heapless::Vec<Sample, 12> {
        let t = self.update_device_totals();
        let s = |name, help, value| Sample { name, help, gauge: false, value };
        let mut v = heapless::Vec::new();
        for x in [
            s("dev_rx_packets", "good packets the device received (GPRC)", t.rx_packets),
            s("dev_tx_packets", "good packets the device transmitted (GPTC)", t.tx_packets),
            s("dev_rx_bytes", "good octets the device received (GORC)", t.rx_bytes),
            s("dev_tx_bytes", "good octets the device transmitted (GOTC)", t.tx_bytes),
            s("dev_rx_missed", "packets the device missed: its FIFO was full (MPC)", t.rx_missed),
            s("dev_rx_no_buffer", "times the device found no receive descriptor (RNBC)", t.rx_no_buffer),
            s("dev_crc_errors", "frames with a bad CRC (CRCERRS)", t.crc_errors),
            s("dev_rx_oversize", "frames over the maximum size, dropped by the MAC (ROC)", t.rx_oversize),
            Sample { name: "link_up", help: "1 if the PHY reports link", gauge: true, value: self.link_up() as u64 },
        ] {
            let _ = v.push(x);
        }
        v
    }

    fn buffers_held(&self) -> usize {
        self.rx_slots.iter().filter(|s| s.is_some()).count() + self.tx_slots.iter().filter(|s| s.is_some()).count()
    }
}

/// The driver against a device made of memory: the registers are a plain
/// array and the test writes the descriptors' write-backs as the 82576
/// would, hostile ones included.
#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::testhal::TestHal;
    use std::vec;

    struct Device {
        regs: vec::Vec<u32>,
    }

    impl Device {
        fn new() -> Device {
            let mut regs = vec![0u32; BAR0_SIZE / 4];
            regs[RAL0 / 4] = u32::from_le_bytes([0x52, 0x54, 0, 0x12]);
            regs[RAH0 / 4] = RAH_AV | u16::from_le_bytes([0x34, 0x56]) as u32;
            Device { regs }
        }

        fn bar(&mut self) -> u64 {
            self.regs.as_mut_ptr() as u64
        }

        fn reg(&self, r: usize) -> u32 {
            // SAFETY: a register of the array the driver also writes through
            // its pointer; read volatile so the compiler does not cache it.
            unsafe { (self.regs.as_ptr().add(r / 4)).read_volatile() }
        }

        fn ring(&self, lo: usize, hi: usize) -> *mut u8 {
            (self.reg(lo) as u64 | (self.reg(hi) as u64) << 32) as *mut u8
        }

        /// Writes back receive descriptor `i`: status and length.
        fn rx_done(&self, i: usize, status: u32, len: u16) {
            let d = self.ring(RDBAL0, RDBAH0);
            // SAFETY: descriptor `i` < RING of the driver's receive ring.
            unsafe {
                (d.add(i * 16 + 12) as *mut u16).write_volatile(len);
                (d.add(i * 16 + 8) as *mut u32).write_volatile(status);
            }
        }

        fn tx_desc(&self, i: usize) -> (u64, u32, u32) {
            let d = self.ring(TDBAL0, TDBAH0);
            // SAFETY: descriptor `i` < RING of the driver's transmit ring.
            unsafe {
                (
                    (d.add(i * 16) as *const u64).read_volatile(),
                    (d.add(i * 16 + 8) as *const u32).read_volatile(),
                    (d.add(i * 16 + 12) as *const u32).read_volatile(),
                )
            }
        }

        fn tx_done(&self, i: usize) {
            let d = self.ring(TDBAL0, TDBAH0);
            // SAFETY: as for `tx_desc`.
            unsafe { (d.add(i * 16 + 12) as *mut u32).write_volatile(TXD_STA_DD) };
        }
    }

    #[test]
    fn setup_receive_hostile_write_backs_and_transmit() {
        let mut dev = Device::new();
        let mut nic = Igb::<TestHal>::new(dev.bar(), true).unwrap();
        assert_eq!(nic.mac(), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(dev.reg(RCTL), RCTL_EN | RCTL_BAM | RCTL_SECRC);
        assert_eq!((dev.reg(RDLEN0), dev.reg(SRRCTL0)), ((RING * 16) as u32, SRRCTL_2K_ADV));
        assert_ne!(dev.reg(TCTL) & TCTL_EN, 0);
        assert_eq!(dev.reg(IMC), u32::MAX, "interrupts masked");
        let mut pool = PacketPool::new(RING + 8);
        nic.refill(&mut pool);
        assert_eq!(dev.reg(RDT0) as usize, RING - 1, "all but one descriptor posted, one tail write");
        // A good frame; a frame over two descriptors; an oversized length;
        // a MAC error: one packet comes out, the rest are counted.
        dev.rx_done(0, RXD_DD | RXD_EOP, 60);
        dev.rx_done(1, RXD_DD, 2048);
        dev.rx_done(2, RXD_DD | RXD_EOP, 100);
        dev.rx_done(3, RXD_DD | RXD_EOP, 5000);
        dev.rx_done(4, RXD_DD | RXD_EOP | RXD_ERR_RXE, 60);
        dev.rx_done(5, RXD_DD | RXD_EOP, 0);
        let mut batch = Batch::new();
        assert_eq!(nic.rx_burst(&mut batch, &mut pool), 1);
        let s = nic.stats();
        assert_eq!((s.rx_chain_dropped, s.rx_bad_len), (2, 3));
        let pkt = batch.pop().unwrap();
        assert_eq!((pkt.head(), pkt.len()), (HEADROOM, 60));
        // Descriptor 6 is not done: nothing more.
        assert_eq!(nic.rx_burst(&mut batch, &mut pool), 0);
        nic.refill(&mut pool);
        assert_eq!(dev.reg(RDT0) as usize, (RING - 1 + 6) % RING);
        // Transmit the packet and one more: two descriptors, one tail write.
        let mut q = TxQueue::new();
        let addr = (pkt.buffer_addr() + pkt.head()) as u64;
        q.push_back(pkt).unwrap();
        let mut p2 = pool.alloc().unwrap();
        assert!(p2.fill(&[7u8; 1500]));
        q.push_back(p2).unwrap();
        assert_eq!(nic.tx_burst(&mut q, &mut pool), (2, 1560));
        assert_eq!(dev.reg(TDT0), 2);
        let (a, cmd, olinfo) = dev.tx_desc(0);
        assert_eq!(a, addr);
        assert_eq!(cmd & 0xffff, 60);
        assert_eq!(
            cmd & (TXD_EOP | TXD_RS | TXD_IFCS | TXD_DEXT | TXD_DTYP_DATA),
            TXD_EOP | TXD_RS | TXD_IFCS | TXD_DEXT | TXD_DTYP_DATA
        );
        assert_eq!(olinfo >> TXD_PAYLEN_SHIFT, 60);
        // Completion of the first only: one buffer back.
        let held = nic.buffers_held();
        dev.tx_done(0);
        nic.reclaim(&mut pool);
        assert_eq!(nic.buffers_held(), held - 1);
        dev.tx_done(1);
        nic.reclaim(&mut pool);
        assert_eq!(nic.buffers_held(), held - 2);
        drop(nic);
        // A device without an address in RAH0 is refused, not guessed at.
        let mut blank = Device::new();
        blank.regs[RAH0 / 4] = 0;
        assert!(matches!(Igb::<TestHal>::new(blank.bar(), true), Err(IgbError::NoMac)));
    }
}
