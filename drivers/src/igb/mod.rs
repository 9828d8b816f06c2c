//! Intel 82576 (igb), in poll mode: the physical function (`-device igb`,
//! 8086:10c9, the NIC a whole passed-through port is), its SR-IOV side
//! (VMDq pools and the PF–VF mailbox, in [`sriov`]) and the virtual
//! function's own driver ([`vf`], 8086:10ca, what a passed-through VF is).
//! QEMU models this one SR-IOV NIC.
//!
//! The PF driver: one receive and one transmit queue ([`queues`]), queue 0
//! normally, queue N (the pool after its N VFs) when VFs are on. No
//! interrupts (IMC masks them all). Checksum offload and TSO on transmit;
//! on receive the dataplane checks checksums in software.
//!
//! The device's own statistics registers clear when read (§8.19); the
//! driver adds them up and reports them beside its own counters.

pub mod queues;
pub mod sriov;
pub mod vf;

use core::cell::Cell;

use virtio_drivers::Hal;
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, PacketPool};
use vnfs::stats::Sample;

use crate::{Nic, NicStats};
use queues::{Layout, Queues, Regs, RING};

pub const VENDOR: u16 = 0x8086;
/// 82576 copper physical function (what `-device igb` is).
pub const DEVICE_82576: u16 = 0x10c9;
/// 82576 virtual function.
pub const DEVICE_82576_VF: u16 = 0x10ca;
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
    regs: Regs,
    mac: [u8; 6],
    q: Queues<H>,
    device: Cell<DeviceTotals>,
    /// Checksum offload and TSO on transmit (unless the image was told
    /// `offloads=off`).
    offload: bool,
}

/// The MAC in a receive-address pair (RAL, RAH).
fn mac_of(ral: u32, rah: u32) -> [u8; 6] {
    let (m, h) = (ral.to_le_bytes(), rah.to_le_bytes());
    [m[0], m[1], m[2], m[3], h[0], h[1]]
}

/// The receive-address pair for `mac`, valid (AV), `pools` in RAH's pool
/// select bits (VMDq).
fn ra_of(mac: [u8; 6], pools: u32) -> (u32, u32) {
    (
        u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        RAH_AV | pools << 18 | u16::from_le_bytes([mac[4], mac[5]]) as u32,
    )
}

impl<H: Hal> Igb<H> {
    /// Takes over the function whose BAR 0 is at `bar0` (memory decoding
    /// and bus mastering enabled by the caller): interrupts masked, one
    /// receive and one transmit queue (`queue`: 0, or the PF's pool when
    /// VFs take the pools before it), receive on. `mac`: an address to use
    /// instead of the EEPROM's.
    pub fn new(bar0: u64, offloads: bool, queue: usize, mac: Option<[u8; 6]>) -> Result<Self, IgbError> {
        // SAFETY: the caller passes BAR 0 of an 82576, which decodes
        // BAR0_SIZE bytes of registers there, mapped for the kernel's life.
        let regs = unsafe { Regs::new(H::mmio_phys_to_virt(bar0, BAR0_SIZE), BAR0_SIZE) };
        regs.write(IMC, u32::MAX);
        regs.write(EIMC, u32::MAX);
        let (ral, rah) = (regs.read(RAL0), regs.read(RAH0));
        if rah & RAH_AV == 0 && mac.is_none() {
            return Err(IgbError::NoMac);
        }
        let mac = mac.unwrap_or(mac_of(ral, rah));
        let (l, h) = ra_of(mac, 0);
        regs.write(RAL0, l);
        regs.write(RAH0, h);
        let q = Queues::new(regs, Layout::pf(queue.min(15)), 0);
        // 2 KiB buffers (BSIZE 00), CRC stripped, broadcasts accepted; no
        // long packets (LPE clear): the MAC drops frames over 1522 bytes,
        // so no frame outgrows the MAX_FRAME bytes after a buffer's headroom.
        regs.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        let v = regs.read(TCTL);
        regs.write(TCTL, v | TCTL_EN | TCTL_PSP);
        let v = regs.read(CTRL);
        regs.write(CTRL, (v | CTRL_SLU) & !CTRL_LRST);
        // Restart auto-negotiation on the PHY (as Linux's igb does at
        // open): the link comes up when it completes, about half a second
        // on QEMU's model. Receive works from then on; nothing waits here.
        regs.write(MDIC, BMCR_AUTONEG_RESTART | MDIC_PHY1 | MDIC_OP_WRITE);
        for _ in 0..10_000 {
            if regs.read(MDIC) & MDIC_READY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Ok(Igb { regs, mac, q, device: Cell::new(DeviceTotals::default()), offload: offloads })
    }

    /// The register space, for the SR-IOV side of the same function.
    pub fn regs(&self) -> Regs {
        self.regs
    }

    pub fn ring_sizes(&self) -> (usize, usize) {
        (RING, RING)
    }

    /// Whether the PHY reports link (it comes up a moment after start).
    pub fn link_up(&self) -> bool {
        self.regs.read(STATUS) & STATUS_LU != 0
    }

    fn update_device_totals(&self) -> DeviceTotals {
        let r = |reg| self.regs.read(reg) as u64;
        let mut t = self.device.get();
        t.rx_packets += r(GPRC);
        t.tx_packets += r(GPTC);
        // Low before high: the pair clears on the high read.
        t.rx_bytes += r(GORCL) | r(GORCH) << 32;
        t.tx_bytes += r(GOTCL) | r(GOTCH) << 32;
        t.rx_missed += r(MPC);
        t.rx_no_buffer += r(RNBC);
        t.crc_errors += r(CRCERRS);
        t.rx_oversize += r(ROC);
        self.device.set(t);
        t
    }
}

impl<H: Hal> Nic for Igb<H> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    queues::nic_via_queues!();

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
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::queues::*;
    use super::*;
    use crate::testhal::TestHal;
    use std::vec;
    use vnfs::packet::HEADROOM;

    const RDBAL0: usize = 0xc000;
    const RDBAH0: usize = 0xc004;
    const RDLEN0: usize = 0xc008;
    const SRRCTL0: usize = 0xc00c;
    const RDT0: usize = 0xc018;
    const TDBAL0: usize = 0xe000;
    const TDBAH0: usize = 0xe004;
    const TDT0: usize = 0xe018;

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
    fn the_receive_ring_takes_no_more_than_its_share_of_the_pool() {
        let mut dev = Device::new();
        let mut nic = Igb::<TestHal>::new(dev.bar(), true, 0, None).unwrap();
        let mut pool = PacketPool::new(RING + 8);
        nic.set_rx_fill(100);
        nic.refill(&mut pool);
        assert_eq!(dev.reg(RDT0), 100, "100 descriptors posted");
        assert_eq!(pool.available(), RING + 8 - 100, "the rest stays in the pool for the others");
        // Received buffers are replaced, never more.
        dev.rx_done(0, RXD_DD | RXD_EOP, 60);
        let mut batch = Batch::new();
        assert_eq!(nic.rx_burst(&mut batch, &mut pool), 1);
        pool.free_all(&mut batch);
        nic.refill(&mut pool);
        assert_eq!((dev.reg(RDT0), nic.buffers_held()), (101, 100));
    }

    #[test]
    fn setup_receive_hostile_write_backs_and_transmit() {
        let mut dev = Device::new();
        let mut nic = Igb::<TestHal>::new(dev.bar(), true, 0, None).unwrap();
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
        assert!(matches!(Igb::<TestHal>::new(blank.bar(), true, 0, None), Err(IgbError::NoMac)));
    }
}
