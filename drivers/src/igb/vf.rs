//! The 82576 virtual function (igbvf, 8086:10ca): what a guest gets when a
//! host passes an SR-IOV VF through, and what sluice's own PF enables.
//!
//! Written against the mailbox protocol of Linux's igb PF driver: reset the
//! function (CTRL.RST), wait until the PF's reset is done (RSTI clear),
//! send VF_RESET and take the MAC from the PF's answer, or ask for the
//! config's MAC with SET_MAC_ADDR. Then the VF's one queue pair, polled,
//! with the PF's data path ([`super::queues`]): bursts, zero copy, one tail
//! write per burst. Nothing waits forever: a PF that does not answer is
//! an error within a second.

use core::cell::Cell;

use virtio_drivers::Hal;
use vnfs::hoststack::TxQueue;
use vnfs::packet::{Batch, PacketPool};
use vnfs::stats::Sample;

use super::queues::{Layout, Queues, Regs, RING, SRRCTL_DROP_EN};
use super::sriov::msg;
use crate::{Nic, NicStats};

/// Bytes of register space a VF's BAR 0 decodes.
pub const VF_BAR0_SIZE: usize = 16 << 10;

const CTRL: usize = 0x0000;
const CTRL_RST: u32 = 1 << 26;
const STATUS: usize = 0x0008;
const STATUS_LU: u32 = 1 << 1;
const EIMC: usize = 0x1528;
const VMBMEM: usize = 0x0800;
const V2PMAILBOX: usize = 0x0c40;
// The VF's statistics (not cleared on read; 32 bits that wrap).
const VFGPRC: usize = 0x0f10;
const VFGPTC: usize = 0x0f14;
const VFGORC: usize = 0x0f18;
const VFGOTC: usize = 0x0f34;
const VFMPRC: usize = 0x0f3c;

// V2PMAILBOX bits.
const REQ: u32 = 1 << 0;
const ACK: u32 = 1 << 1;
const VFU: u32 = 1 << 2;
const PFU: u32 = 1 << 3;
const PFSTS: u32 = 1 << 4;
const PFACK: u32 = 1 << 5;
const RSTI: u32 = 1 << 6;
const RSTD: u32 = 1 << 7;

/// How long the PF gets for each step of the handshake.
const TIMEOUT_US: u64 = 1_000_000;
/// The largest frame this driver receives (CRC included), for SET_LPE.
const MAX_FRAME_CRC: u32 = 1522;

#[derive(Debug)]
pub enum VfError {
    /// The PF never finished its reset (RSTI stayed set).
    PfResetTimeout,
    /// The PF did not answer a message in time (which one).
    MailboxTimeout(&'static str),
    /// The PF answered the reset without a MAC (NACK) and the config names none.
    NoMac,
    /// The PF refused the MAC the config asks for.
    MacRefused([u8; 6]),
    /// The answer to VF_RESET was not one.
    BadReply(u32),
}

impl core::fmt::Display for VfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VfError::PfResetTimeout => f.write_str(
                "the PF never completed its reset (mailbox RSTI still set after 1 s): no PF driver serves this VF",
            ),
            VfError::MailboxTimeout(what) => {
                write!(f, "the PF did not answer {what} within 1 s: no PF driver serves this VF's mailbox")
            }
            VfError::NoMac => f.write_str("the PF gave no MAC at reset and the config names none (`nic ... mac`)"),
            VfError::MacRefused(m) => write!(
                f,
                "the PF refused MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (the host set this VF's MAC)",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            VfError::BadReply(w) => write!(f, "the PF answered the reset with {w:#010x}"),
        }
    }
}

/// The VF's side of the mailbox. Reading V2PMAILBOX clears PFSTS, PFACK
/// and RSTD, so the bits seen are kept until used.
struct Mailbox<'a> {
    regs: Regs,
    seen: u32,
    now_us: &'a dyn Fn() -> u64,
    /// Runs while waiting: a PF in the same image answers from here.
    serve: &'a mut dyn FnMut(),
}

impl Mailbox<'_> {
    fn read(&mut self) -> u32 {
        let v = self.regs.read(V2PMAILBOX);
        self.seen |= v & (PFSTS | PFACK | RSTD);
        v
    }

    fn take(&mut self, bit: u32) -> bool {
        self.read();
        let hit = self.seen & bit != 0;
        self.seen &= !bit;
        hit
    }

    /// Waits, serving, until `done`; false after TIMEOUT_US.
    fn wait(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = (self.now_us)().saturating_add(TIMEOUT_US);
        loop {
            (self.serve)();
            if done(self) {
                return true;
            }
            if (self.now_us)() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    fn lock(&mut self) -> bool {
        self.wait(|m| {
            m.regs.write(V2PMAILBOX, VFU);
            m.read() & (VFU | PFU) == VFU
        })
    }

    /// Sends `words` and waits for the PF's ACK of the read.
    fn send(&mut self, words: &[u32], what: &'static str) -> Result<(), VfError> {
        if !self.lock() {
            return Err(VfError::MailboxTimeout(what));
        }
        // Old acknowledgements are not this message's.
        self.seen &= !PFACK;
        for (i, w) in words.iter().enumerate().take(msg::WORDS) {
            self.regs.write(VMBMEM + 4 * i, *w);
        }
        // Request, releasing the buffer (VFU clear).
        self.regs.write(V2PMAILBOX, REQ);
        if !self.wait(|m| m.take(PFACK)) {
            return Err(VfError::MailboxTimeout(what));
        }
        Ok(())
    }

    /// Waits for the PF's message and reads its first `N` words.
    fn receive<const N: usize>(&mut self, what: &'static str) -> Result<[u32; N], VfError> {
        if !self.wait(|m| m.take(PFSTS)) || !self.lock() {
            return Err(VfError::MailboxTimeout(what));
        }
        let mut out = [0u32; N];
        for (i, w) in out.iter_mut().enumerate().take(msg::WORDS) {
            *w = self.regs.read(VMBMEM + 4 * i);
        }
        // Acknowledge, releasing the buffer.
        self.regs.write(V2PMAILBOX, ACK);
        Ok(out)
    }

    /// One request and its one-word answer: whether the PF ACKed it.
    fn request(&mut self, words: &[u32], what: &'static str) -> Result<bool, VfError> {
        self.send(words, what)?;
        let [answer] = self.receive::<1>(what)?;
        Ok(answer & msg::ACK != 0 && answer & 0xffff == words[0] & 0xffff)
    }
}

/// A VF's counters, kept as 64-bit totals across the registers' wraps.
#[derive(Clone, Copy, Default)]
struct VfTotals {
    last: [u32; 5],
    total: [u64; 5],
}

pub struct Igbvf<H: Hal> {
    regs: Regs,
    mac: [u8; 6],
    q: Queues<H>,
    totals: Cell<VfTotals>,
    offload: bool,
    /// The PF refused SET_LPE (it then keeps its default frame limit).
    pub lpe_refused: bool,
}

impl<H: Hal> Igbvf<H> {
    /// Takes over the VF whose BAR 0 is at `bar0` (bus mastering enabled by
    /// the caller): resets it through the PF, takes the MAC the PF gives
    /// (or asks for `want_mac`), starts its queues. `now_us` is a clock;
    /// `serve` runs while waiting for the PF (a PF driven by the same image
    /// answers there).
    pub fn new(
        bar0: u64,
        offloads: bool,
        want_mac: Option<[u8; 6]>,
        now_us: &dyn Fn() -> u64,
        serve: &mut dyn FnMut(),
    ) -> Result<Self, VfError> {
        // SAFETY: the caller passes BAR 0 of an 82576 VF, which decodes
        // VF_BAR0_SIZE bytes of registers there, mapped for the kernel's life.
        let regs = unsafe { Regs::new(H::mmio_phys_to_virt(bar0, VF_BAR0_SIZE), VF_BAR0_SIZE) };
        regs.write(EIMC, 0x7);
        let mut mbx = Mailbox { regs, seen: 0, now_us, serve };
        regs.write(CTRL, CTRL_RST);
        // The PF's reset must be over: RSTI clear, and RSTD (reset done,
        // cleared by reading) seen or gone.
        if !mbx.wait(|m| m.read() & (RSTI | RSTD) == 0) {
            return Err(VfError::PfResetTimeout);
        }
        mbx.seen = 0;
        mbx.send(&[msg::VF_RESET], "VF_RESET")?;
        let r = mbx.receive::<3>("VF_RESET")?;
        let (a, b) = (r[1].to_le_bytes(), r[2].to_le_bytes());
        let mut mac = match r[0] & !msg::CTS {
            w if w == msg::VF_RESET | msg::ACK => [a[0], a[1], a[2], a[3], b[0], b[1]],
            w if w == msg::VF_RESET | msg::NACK => [0; 6],
            w => return Err(VfError::BadReply(w)),
        };
        if let Some(want) = want_mac.filter(|w| *w != mac) {
            let words = [
                msg::SET_MAC_ADDR,
                u32::from_le_bytes([want[0], want[1], want[2], want[3]]),
                u16::from_le_bytes([want[4], want[5]]) as u32,
            ];
            if !mbx.request(&words, "SET_MAC_ADDR")? {
                return Err(VfError::MacRefused(want));
            }
            mac = want;
        }
        if mac == [0; 6] {
            return Err(VfError::NoMac);
        }
        let lpe_refused = !mbx.request(&[msg::SET_LPE, MAX_FRAME_CRC], "SET_LPE")?;
        let q = Queues::new(regs, Layout::VF, SRRCTL_DROP_EN);
        Ok(Igbvf { regs, mac, q, totals: Cell::new(VfTotals::default()), offload: offloads, lpe_refused })
    }

    pub fn ring_sizes(&self) -> (usize, usize) {
        (RING, RING)
    }

    /// The PF's link, as the VF sees it.
    pub fn link_up(&self) -> bool {
        self.regs.read(STATUS) & STATUS_LU != 0
    }

    fn update_totals(&self) -> [u64; 5] {
        let mut t = self.totals.get();
        for (i, reg) in [VFGPRC, VFGPTC, VFGORC, VFGOTC, VFMPRC].into_iter().enumerate() {
            let v = self.regs.read(reg);
            t.total[i] += v.wrapping_sub(t.last[i]) as u64;
            t.last[i] = v;
        }
        self.totals.set(t);
        t.total
    }
}

impl<H: Hal> Nic for Igbvf<H> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    super::queues::nic_via_queues!();
    fn offloads(&self) -> bool {
        self.offload
    }
    fn device_counters(&self) -> heapless::Vec<Sample, 12> {
        let [rxp, txp, rxb, txb, mc] = self.update_totals();
        let s = |name, help, value| Sample { name, help, gauge: false, value };
        let mut v = heapless::Vec::new();
        for x in [
            s("dev_rx_packets", "good packets the VF's pool received (VFGPRC)", rxp),
            s("dev_tx_packets", "good packets the VF transmitted (VFGPTC)", txp),
            s("dev_rx_bytes", "good octets the VF's pool received (VFGORC)", rxb),
            s("dev_tx_bytes", "good octets the VF transmitted (VFGOTC)", txb),
            s("dev_rx_multicast", "multicast packets the VF's pool received (VFMPRC)", mc),
            Sample { name: "link_up", help: "1 if the PF reports link", gauge: true, value: self.link_up() as u64 },
        ] {
            let _ = v.push(x);
        }
        v
    }
}
