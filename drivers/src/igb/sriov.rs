//! The 82576 physical function's side of SR-IOV: VMDq pools that switch
//! received frames to a VF by destination MAC (datasheet §7.10), and the
//! PF–VF mailbox (§7.10.2.9), answered the way Linux's igb PF driver
//! answers it, so that the same VF driver works under sluice's PF and under
//! a Linux host's.
//!
//! Pools: VF `n` owns pool `n` (its queues `n` and `n + 8`); the PF's own
//! queue is pool `N` after the N VFs (at most 7). A unicast frame goes to
//! the pool whose receive-address entry holds its destination; a broadcast
//! to every pool that accepts broadcasts; a frame no pool owns goes to the
//! PF's pool (the default pool), so never to a VF. Between pools the
//! device switches locally (loopback), as on a real host.
//!
//! The protocol, per message (16 words of mailbox memory per VF): the VF
//! writes words and sets REQ; the PF reads them, ACKs, acts, and answers
//! with the request word | ACK or | NACK (and | CTS once the VF has reset).

use heapless::Vec as HVec;

use super::queues::Regs;
use super::{ra_of, RAH0};

/// Message types in word 0 (low 16 bits) and its flags (Linux's
/// `e1000_mbx.h`, the interface both sides keep).
pub mod msg {
    pub const VF_RESET: u32 = 0x01;
    pub const SET_MAC_ADDR: u32 = 0x02;
    pub const SET_MULTICAST: u32 = 0x03;
    pub const SET_VLAN: u32 = 0x04;
    pub const SET_LPE: u32 = 0x05;
    pub const SET_PROMISC: u32 = 0x06;
    pub const ACK: u32 = 0x8000_0000;
    pub const NACK: u32 = 0x4000_0000;
    /// Clear to send: the VF finished its reset handshake.
    pub const CTS: u32 = 0x2000_0000;
    pub const INFO_SHIFT: u32 = 16;
    /// Words of mailbox memory per VF.
    pub const WORDS: usize = 16;
}

// PF registers.
const CTRL_EXT: usize = 0x0018;
const CTRL_EXT_PFRSTD: u32 = 1 << 14;
const RCTL: usize = 0x0100;
const RCTL_MO_MASK: u32 = 3 << 12;
const VMBMEM: usize = 0x0800;
const P2VMAILBOX: usize = 0x0c00;
const MBVFICR: usize = 0x0c80;
const VFLRE: usize = 0x0c88;
const VFRE: usize = 0x0c8c;
const VFTE: usize = 0x0c90;
const DTXSWC: usize = 0x3500;
const DTXSWC_LOOPBACK: u32 = 1 << 31;
const MTA: usize = 0x5200;
const MRQC: usize = 0x5818;
/// MRQC: VMDq, no RSS.
const MRQC_VMDQ: u32 = 3;
const VT_CTL: usize = 0x581c;
const VT_CTL_DEFAULT_POOL_SHIFT: u32 = 7;
const VMOLR: usize = 0x5ad0;
const VMOLR_RLPML_MASK: u32 = 0x3fff;
const VMOLR_LPE: u32 = 1 << 16;
const VMOLR_AUPE: u32 = 1 << 24;
const VMOLR_ROMPE: u32 = 1 << 25;
const VMOLR_BAM: u32 = 1 << 27;
const VMOLR_STRCRC: u32 = 1 << 31;

// P2VMAILBOX bits.
const P2V_STS: u32 = 1 << 0;
const P2V_ACK: u32 = 1 << 1;
const P2V_VFU: u32 = 1 << 2;
const P2V_PFU: u32 = 1 << 3;

/// VFs a PF can have beside its own pool (8 pools).
pub const MAX_VFS: usize = 7;
/// Multicast hashes a VF may register (Linux's igb keeps 30).
const MAX_MC: usize = 30;
/// Largest frame (with CRC) a VF may ask for: the PF's 2 KiB buffers and
/// its MAC limit (no jumbo frames on this PF yet).
const MAX_VF_FRAME: u32 = 1522;

fn ral(n: usize) -> usize {
    0x5400 + 8 * n
}

/// What the PF remembers of one VF.
#[derive(Clone, Default)]
struct VfState {
    mac: [u8; 6],
    /// The MAC was set by the PF's config: the VF may not change it.
    admin_mac: bool,
    /// The VF completed the reset handshake.
    cts: bool,
    multicast: HVec<u16, MAX_MC>,
    max_frame: u32,
}

vnfs::counters! {
    /// What the PF's mailbox service did.
    pub struct MailboxStats {
        mbx_requests: counter "messages the VFs sent the PF",
        mbx_resets: counter "VF resets (function level or CTRL.RST) the PF saw",
        mbx_acked: counter "VF requests the PF carried out (ACK)",
        mbx_refused: counter "VF requests the PF refused (NACK): unsupported, invalid or before reset",
        mbx_busy: counter "times a VF held the mailbox when the PF wanted it (retried)",
    }
}

/// The PF's SR-IOV service: owns the pools and answers the mailbox.
/// Poll it (every millisecond is plenty); it never blocks.
pub struct VfService {
    regs: Regs,
    vfs: HVec<VfState, MAX_VFS>,
    serve: bool,
    pub stats: MailboxStats,
}

/// The MAC sluice gives VF `i` of a PF with MAC `pf` when the config names
/// none: locally administered, derived from the PF's (stable across boots).
pub fn default_vf_mac(pf: [u8; 6], i: usize) -> [u8; 6] {
    [0x02, pf[1], pf[2], pf[3], pf[4] ^ 0x80, pf[5].wrapping_add(i as u8 + 1)]
}

impl VfService {
    /// Puts the PF (already started by [`super::Igb::new`] on queue
    /// `macs.len()`, or not driven at all) in VMDq mode for `macs.len()` VFs
    /// with these MACs (`true`: set by the config, fixed). With `serve`
    /// false the mailbox is left unanswered and the VFs are never told the
    /// PF finished its reset: a host whose PF driver is gone (for testing
    /// VF drivers).
    pub fn new(regs: Regs, macs: &[([u8; 6], bool)], serve: bool) -> VfService {
        let n = macs.len().min(MAX_VFS);
        let pf_pool = n as u32;
        let mut vfs = HVec::new();
        for &(mac, admin_mac) in &macs[..n] {
            let _ = vfs.push(VfState { mac, admin_mac, ..VfState::default() });
        }
        regs.write(MRQC, MRQC_VMDQ);
        // Frames no pool owns go to the PF's pool.
        regs.write(VT_CTL, pf_pool << VT_CTL_DEFAULT_POOL_SHIFT);
        let rah = regs.read(RAH0);
        regs.write(RAH0, (rah & !(0xff << 18)) | 1 << (18 + pf_pool));
        for pool in 0..=n {
            let bam = if pool == n { VMOLR_BAM } else { 0 };
            regs.write(VMOLR + 4 * pool, VMOLR_STRCRC | VMOLR_AUPE | bam | 1518);
        }
        // Only the PF's pool moves frames until a VF resets.
        regs.write(VFRE, 1 << pf_pool);
        regs.write(VFTE, 1 << pf_pool);
        regs.write(DTXSWC, DTXSWC_LOOPBACK);
        for i in 0..n {
            regs.write(ral(1 + i) + 4, 0);
        }
        let mut s = VfService { regs, vfs, serve, stats: MailboxStats::default() };
        s.write_mta();
        if serve {
            // Tells every VF the PF's reset is done (RSTI → RSTD).
            let v = regs.read(CTRL_EXT);
            regs.write(CTRL_EXT, v | CTRL_EXT_PFRSTD);
        }
        s
    }

    /// The MAC VF `i` has (what it learns at its reset).
    pub fn vf_mac(&self, i: usize) -> Option<[u8; 6]> {
        self.vfs.get(i).map(|v| v.mac)
    }

    pub fn vf_count(&self) -> usize {
        self.vfs.len()
    }

    /// Handles VF resets and pending messages.
    pub fn poll(&mut self) {
        if !self.serve {
            return;
        }
        let mask = (1u32 << self.vfs.len()) - 1;
        let reset = self.regs.read(VFLRE) & mask;
        if reset != 0 {
            self.regs.write(VFLRE, reset);
            for vf in 0..self.vfs.len() {
                if reset & 1 << vf != 0 {
                    self.reset_event(vf);
                }
            }
        }
        let icr = self.regs.read(MBVFICR);
        // VF acknowledgements of our replies: nothing waits for them.
        if icr & mask << 16 != 0 {
            self.regs.write(MBVFICR, icr & mask << 16);
        }
        for vf in 0..self.vfs.len() {
            if icr & 1 << vf != 0 {
                self.receive(vf);
            }
        }
    }

    /// A VF reset itself: it must redo the handshake; its filters go.
    fn reset_event(&mut self, vf: usize) {
        self.stats.mbx_resets += 1;
        let s = &mut self.vfs[vf];
        s.cts = false;
        s.multicast.clear();
        s.max_frame = 0;
        self.set_pool(vf, false);
        self.write_mta();
    }

    /// Takes the mailbox of `vf` for the PF; false if the VF holds it.
    fn lock(&mut self, vf: usize) -> bool {
        self.regs.write(P2VMAILBOX + 4 * vf, P2V_PFU);
        let got = self.regs.read(P2VMAILBOX + 4 * vf) & (P2V_PFU | P2V_VFU) == P2V_PFU;
        if !got {
            self.stats.mbx_busy += 1;
        }
        got
    }

    fn receive(&mut self, vf: usize) {
        if !self.lock(vf) {
            // Still flagged in MBVFICR: read on the next poll.
            return;
        }
        self.regs.write(MBVFICR, 1 << vf);
        let mut m = [0u32; msg::WORDS];
        for (i, w) in m.iter_mut().enumerate() {
            *w = self.regs.read(VMBMEM + 0x40 * vf + 4 * i);
        }
        // Read: acknowledge and release the buffer.
        self.regs.write(P2VMAILBOX + 4 * vf, P2V_ACK);
        if m[0] & (msg::ACK | msg::NACK) != 0 {
            // A reply of ours the VF echoed, or garbage: nothing to do.
            return;
        }
        self.stats.mbx_requests += 1;
        let mut reply = [0u32; 3];
        let words = self.handle(vf, &m, &mut reply);
        if reply[0] & msg::NACK != 0 {
            self.stats.mbx_refused += 1;
        } else {
            self.stats.mbx_acked += 1;
        }
        self.send(vf, &reply[..words]);
    }

    /// Acts on a request; writes the reply and returns its length in words.
    fn handle(&mut self, vf: usize, m: &[u32; msg::WORDS], reply: &mut [u32; 3]) -> usize {
        let kind = m[0] & 0xffff;
        if kind == msg::VF_RESET {
            let s = &mut self.vfs[vf];
            s.cts = true;
            let mac = s.mac;
            self.set_pool(vf, true);
            let ok = mac != [0; 6];
            reply[0] = msg::VF_RESET | if ok { msg::ACK } else { msg::NACK };
            reply[1] = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
            reply[2] = u16::from_le_bytes([mac[4], mac[5]]) as u32;
            return 3;
        }
        let ok = self.vfs[vf].cts
            && match kind {
                msg::SET_MAC_ADDR => {
                    let (a, b) = (m[1].to_le_bytes(), m[2].to_le_bytes());
                    let mac = [a[0], a[1], a[2], a[3], b[0], b[1]];
                    let s = &self.vfs[vf];
                    let valid = mac != [0; 6] && mac[0] & 1 == 0;
                    if valid && (!s.admin_mac || s.mac == mac) {
                        self.vfs[vf].mac = mac;
                        self.set_pool(vf, true);
                        true
                    } else {
                        false
                    }
                }
                msg::SET_MULTICAST => {
                    let n = ((m[0] >> msg::INFO_SHIFT) & 0xff) as usize;
                    // Two 16-bit hashes per word after word 0.
                    if n > MAX_MC {
                        false
                    } else {
                        let s = &mut self.vfs[vf];
                        s.multicast.clear();
                        for i in 0..n {
                            let w = m[1 + i / 2];
                            let _ = s.multicast.push(if i % 2 == 0 { w as u16 } else { (w >> 16) as u16 });
                        }
                        self.set_pool(vf, true);
                        self.write_mta();
                        true
                    }
                }
                msg::SET_LPE => {
                    let size = m[1];
                    if (64..=MAX_VF_FRAME).contains(&size) {
                        self.vfs[vf].max_frame = size;
                        self.set_pool(vf, true);
                        true
                    } else {
                        false
                    }
                }
                // No VLAN filters (sluice does not filter VLANs: every tag
                // reaches every pool) and no promiscuous pools: refused.
                msg::SET_VLAN | msg::SET_PROMISC => false,
                _ => false,
            };
        reply[0] = m[0] | if ok { msg::ACK } else { msg::NACK } | if self.vfs[vf].cts { msg::CTS } else { 0 };
        1
    }

    /// Writes `words` to the VF's mailbox and tells it (STS).
    fn send(&mut self, vf: usize, words: &[u32]) {
        // The VF cannot hold the buffer long; try a few times.
        for _ in 0..1000 {
            if self.lock(vf) {
                for (i, w) in words.iter().enumerate() {
                    self.regs.write(VMBMEM + 0x40 * vf + 4 * i, *w);
                }
                self.regs.write(P2VMAILBOX + 4 * vf, P2V_STS);
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Programs VF `vf`'s pool: its MAC filter, what it accepts, and
    /// whether it may move frames at all.
    fn set_pool(&mut self, vf: usize, on: bool) {
        let s = &self.vfs[vf];
        let (l, h) = ra_of(s.mac, 1 << vf);
        self.regs.write(ral(1 + vf), if on { l } else { 0 });
        self.regs.write(ral(1 + vf) + 4, if on { h } else { 0 });
        let rlpml = if s.max_frame != 0 { s.max_frame | VMOLR_LPE } else { 1518 };
        let rompe = if s.multicast.is_empty() { 0 } else { VMOLR_ROMPE };
        let bam = if on { VMOLR_BAM } else { 0 };
        self.regs
            .write(VMOLR + 4 * vf, VMOLR_STRCRC | VMOLR_AUPE | bam | rompe | (rlpml & (VMOLR_RLPML_MASK | VMOLR_LPE)));
        for reg in [VFRE, VFTE] {
            let v = self.regs.read(reg);
            self.regs.write(reg, if on { v | 1 << vf } else { v & !(1 << vf) });
        }
    }

    /// The multicast table: every VF's hashes (the PF registers none).
    fn write_mta(&mut self) {
        // RCTL.MO = 0: the hash is the 12 bits the VF computed.
        let rctl = self.regs.read(RCTL);
        self.regs.write(RCTL, rctl & !RCTL_MO_MASK);
        let mut mta = [0u32; 128];
        for h in self.vfs.iter().flat_map(|v| v.multicast.iter()) {
            let h = (*h & 0xfff) as usize;
            mta[h >> 5] |= 1 << (h & 31);
        }
        for (i, w) in mta.iter().enumerate() {
            self.regs.write(MTA + 4 * i, *w);
        }
    }
}

/// The PF service and the VF driver against devices made of memory: the
/// test stands in for the silicon between them, copying a VF's request
/// into the PF's mailbox memory and the PF's reply back, as the 82576
/// (and QEMU's model) does.
#[cfg(test)]
mod tests {
    extern crate std;

    use core::cell::{Cell, RefCell};
    use core::ptr::NonNull;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::igb::vf::{Igbvf, VfError, VF_BAR0_SIZE};
    use crate::testhal::TestHal;
    use crate::Nic;

    const PF_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    // The VF's view of its mailbox.
    const V2P: usize = 0x0c40 / 4;
    const V2P_REQ: u32 = 1 << 0;
    const V2P_PFSTS: u32 = 1 << 4;
    const V2P_PFACK: u32 = 1 << 5;
    const V2P_RSTI: u32 = 1 << 6;

    fn regs(mem: &mut [u32]) -> Regs {
        // SAFETY: the test's array, alive for the whole test.
        unsafe { Regs::new(NonNull::new(mem.as_mut_ptr() as *mut u8).unwrap(), mem.len() * 4) }
    }

    /// Puts a request from VF `vf` in the PF's mailbox and polls.
    fn request(pf: &mut [u32], svc: &mut VfService, vf: usize, words: &[u32]) -> Vec<u32> {
        for (i, w) in words.iter().enumerate() {
            pf[(VMBMEM + 0x40 * vf) / 4 + i] = *w;
        }
        pf[MBVFICR / 4] |= 1 << vf;
        svc.poll();
        assert_eq!(pf[(P2VMAILBOX + 4 * vf) / 4], P2V_STS, "the reply is flagged and the buffer released");
        (0..3).map(|i| pf[(VMBMEM + 0x40 * vf) / 4 + i]).collect()
    }

    #[test]
    fn the_pf_answers_as_linux_igb_does_and_refuses_what_it_cannot_do() {
        let mut pf = vec![0u32; super::super::BAR0_SIZE / 4];
        let r = regs(&mut pf);
        let admin = [2, 0, 0, 0, 0xa0, 2];
        let mut svc = VfService::new(r, &[(default_vf_mac(PF_MAC, 0), false), (admin, true)], true);
        assert_eq!(pf[MRQC / 4], MRQC_VMDQ);
        assert_eq!(pf[VT_CTL / 4] >> VT_CTL_DEFAULT_POOL_SHIFT, 2, "unowned frames go to the PF's pool");
        assert_eq!((pf[VFRE / 4], pf[VFTE / 4]), (1 << 2, 1 << 2), "no VF moves frames before its reset");
        assert_ne!(pf[CTRL_EXT / 4] & CTRL_EXT_PFRSTD, 0, "VFs are told the PF is ready");
        // Before its reset a VF may configure nothing.
        let reply = request(&mut pf, &mut svc, 0, &[msg::SET_MULTICAST | 1 << msg::INFO_SHIFT, 0x123]);
        assert_eq!(reply[0], msg::SET_MULTICAST | 1 << msg::INFO_SHIFT | msg::NACK);
        // Reset: ACK with the MAC, the MAC filter points at pool 0.
        let reply = request(&mut pf, &mut svc, 0, &[msg::VF_RESET]);
        let mac = default_vf_mac(PF_MAC, 0);
        assert_eq!(reply[0], msg::VF_RESET | msg::ACK);
        assert_eq!(reply[1].to_le_bytes()[..], mac[..4]);
        assert_eq!(reply[2] as u16, u16::from_le_bytes([mac[4], mac[5]]));
        assert_eq!(pf[ral(1) / 4 + 1], ra_of(mac, 1).1, "RAH: valid, pool 0");
        assert_ne!(pf[VFRE / 4] & 1, 0);
        assert_ne!(pf[VMOLR / 4] & VMOLR_BAM, 0, "broadcasts reach the VF");
        // Multicast hashes land in the table; too many is refused.
        let reply = request(&mut pf, &mut svc, 0, &[msg::SET_MULTICAST | 2 << msg::INFO_SHIFT, 0x0456_0123]);
        assert_eq!(reply[0] & (msg::ACK | msg::CTS), msg::ACK | msg::CTS);
        assert_ne!(pf[MTA / 4 + (0x123 >> 5)] & 1 << (0x123 & 31), 0);
        assert_ne!(pf[MTA / 4 + (0x456 >> 5)] & 1 << (0x456 & 31), 0);
        let reply = request(&mut pf, &mut svc, 0, &[msg::SET_MULTICAST | 200 << msg::INFO_SHIFT]);
        assert_ne!(reply[0] & msg::NACK, 0);
        // VLAN filters, promiscuous pools and jumbo frames: NACK.
        for words in [&[msg::SET_VLAN, 100][..], &[msg::SET_PROMISC, 1], &[msg::SET_LPE, 9018], &[0x77]] {
            let reply = request(&mut pf, &mut svc, 0, words);
            assert_ne!(reply[0] & msg::NACK, 0, "{words:x?}");
        }
        let reply = request(&mut pf, &mut svc, 0, &[msg::SET_LPE, 1522]);
        assert_ne!(reply[0] & msg::ACK, 0);
        // VF 1's MAC is the config's: it may not take another.
        request(&mut pf, &mut svc, 1, &[msg::VF_RESET]);
        let reply = request(&mut pf, &mut svc, 1, &[msg::SET_MAC_ADDR, 0x0000_0002, 0x0909]);
        assert_ne!(reply[0] & msg::NACK, 0);
        // A function-level reset of VF 0 takes its pool away until it resets again.
        pf[VFLRE / 4] = 1;
        pf[MBVFICR / 4] = 0;
        svc.poll();
        assert_eq!(pf[VFRE / 4] & 1, 0);
        assert_eq!(pf[ral(1) / 4 + 1], 0);
        let s = svc.stats;
        assert_eq!((s.mbx_requests, s.mbx_resets, s.mbx_acked, s.mbx_refused), (11, 1, 4, 7));
    }

    /// A VF driver and a PF service, the test as the wire between them.
    #[test]
    fn a_vf_resets_gets_its_mac_and_runs_under_the_pf_service() {
        let pf = RefCell::new(vec![0u32; super::super::BAR0_SIZE / 4]);
        let mut vfm = vec![0u32; VF_BAR0_SIZE / 4];
        let vf_regs = vfm.as_mut_ptr();
        let svc = RefCell::new(VfService::new(regs(&mut pf.borrow_mut()), &[(default_vf_mac(PF_MAC, 0), false)], true));
        let t = Cell::new(0u64);
        let now = || {
            t.set(t.get() + 10);
            t.get()
        };
        let mut serve = || {
            // SAFETY: the VF's register array, alive for the test; the
            // driver is not touching it while it calls `serve`.
            let vf = unsafe { core::slice::from_raw_parts_mut(vf_regs, VF_BAR0_SIZE / 4) };
            if vf[V2P] & V2P_REQ == 0 {
                return;
            }
            let mut p = pf.borrow_mut();
            p[VMBMEM / 4..VMBMEM / 4 + 16].copy_from_slice(&vf[0x800 / 4..0x800 / 4 + 16]);
            p[MBVFICR / 4] |= 1;
            drop(p);
            svc.borrow_mut().poll();
            let p = pf.borrow();
            vf[0x800 / 4..0x800 / 4 + 16].copy_from_slice(&p[VMBMEM / 4..VMBMEM / 4 + 16]);
            vf[V2P] = V2P_PFACK | V2P_PFSTS;
        };
        let nic = Igbvf::<TestHal>::new(vfm.as_mut_ptr() as u64, true, Some([2, 0, 0, 0, 0xb0, 1]), &now, &mut serve)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nic.mac(), [2, 0, 0, 0, 0xb0, 1], "the MAC the config asked for, granted by the PF");
        assert!(!nic.lpe_refused);
        assert_eq!(svc.borrow().vf_mac(0), Some([2, 0, 0, 0, 0xb0, 1]));
        assert_eq!(pf.borrow()[ral(1) / 4 + 1], ra_of([2, 0, 0, 0, 0xb0, 1], 1).1);
        // The VF's queue 0 points at its rings.
        assert_eq!(vfm[0x2808 / 4], (super::super::queues::RING * 16) as u32);
        drop(nic);
        assert_eq!(vfm[0x2808 / 4], 0, "a dropped VF leaves no ring behind");
    }

    #[test]
    fn a_vf_under_a_pf_that_never_answers_fails_within_its_deadline() {
        let t = Cell::new(0u64);
        let now = || {
            t.set(t.get() + 50_000);
            t.get()
        };
        // The PF never finished its reset.
        let mut vfm = vec![0u32; VF_BAR0_SIZE / 4];
        vfm[V2P] = V2P_RSTI;
        let e = Igbvf::<TestHal>::new(vfm.as_mut_ptr() as u64, true, None, &now, &mut || {}).err().unwrap();
        assert!(matches!(e, VfError::PfResetTimeout), "{e}");
        assert!(t.get() <= 1_200_000, "gave up after {} us", t.get());
        // Reset done, but nobody reads the mailbox.
        let mut vfm = vec![0u32; VF_BAR0_SIZE / 4];
        let e = Igbvf::<TestHal>::new(vfm.as_mut_ptr() as u64, true, None, &now, &mut || {}).err().unwrap();
        assert!(matches!(e, VfError::MailboxTimeout("VF_RESET")), "{e}");
    }
}
