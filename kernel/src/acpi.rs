//! ACPI, as far as an appliance needs it: the power button (`virsh
//! shutdown`, QMP `system_powerdown`) and soft-off. The FADT gives the PM1
//! event and control blocks; sluice enables the power-button event, polls
//! its status bit from the main loop (no SCI, no interrupts) and powers off
//! through PM1 control with the S5 sleep type from the DSDT's `\_S5`.
//!
//! Tables come from firmware and are read defensively: every length is
//! bounded, every checksum checked, nothing recursed.

use crate::x86::{inb, inw, outb, outw};

/// PM1 status/enable: the power button's bit (ACPI 6.5 §4.8.3.1).
const PWRBTN: u16 = 1 << 8;
/// PM1 control: SCI_EN (ACPI mode on), SLP_EN, SLP_TYP's shift.
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
/// Tables larger than this are not believed.
const MAX_TABLE: usize = 1 << 20;

pub struct PowerButton {
    sts: u16,
    en: u16,
    cnt: u16,
    slp_typ_s5: u16,
}

/// `len` bytes of physical memory at `addr`, if below the 4 GiB the boot
/// page tables identity-map and `len` is sane.
fn phys(addr: u64, len: usize) -> Option<&'static [u8]> {
    if addr == 0 || len > MAX_TABLE || addr.checked_add(len as u64)? > 1 << 32 {
        return None;
    }
    // SAFETY: identity mapped (boot.rs maps 4 GiB); firmware's ACPI tables
    // are in reserved memory the heap never uses, and nothing writes them.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
}

/// A whole table with a valid header and checksum, by its address.
fn table(addr: u64) -> Option<&'static [u8]> {
    let len = u32_at(phys(addr, 36)?, 4)? as usize;
    let t = phys(addr, len.max(36))?;
    sums_to_zero(t).then_some(t)
}

/// The RSDP at `hint`, or found in the BIOS area (ACPI 6.5 §5.2.5.1).
fn rsdp(hint: u64) -> Option<&'static [u8]> {
    let valid = |a: u64| phys(a, 20).filter(|r| &r[..8] == b"RSD PTR " && sums_to_zero(r));
    if let Some(r) = valid(hint) {
        return Some(r);
    }
    (0xe0000u64..0x100000).step_by(16).find_map(valid)
}

/// The `\_S5` sleep type from the DSDT's AML: `Name (_S5, Package () {
/// typ, ...})`, read without an interpreter (a bounded byte search).
fn s5_sleep_type(dsdt: &[u8]) -> u16 {
    let Some(at) = dsdt.windows(4).position(|w| w == b"_S5_") else { return 0 };
    let aml = &dsdt[at + 4..];
    // PackageOp, PkgLength (1-4 bytes: the top two bits of the first say
    // how many follow), NumElements, then the first element.
    let Some((&0x12, rest)) = aml.split_first() else { return 0 };
    let Some(&lead) = rest.first() else { return 0 };
    let skip = 1 + (lead >> 6) as usize + 1;
    match rest.get(skip..skip + 2) {
        Some([0x0a, v]) => *v as u16 & 7,
        Some([0x01, _]) => 1,
        _ => 0,
    }
}

impl PowerButton {
    /// Finds the PM1 blocks, switches the chipset to ACPI mode if the
    /// firmware left it in legacy mode, and enables the power-button event.
    pub fn init(rsdp_hint: u64) -> Result<PowerButton, &'static str> {
        let r = rsdp(rsdp_hint).ok_or("no ACPI RSDP")?;
        let rev = r[15];
        let xsdt = if rev >= 2 { phys_rsdp_full(r).and_then(|f| u64_at(f, 24)) } else { None };
        let (root, entry) = match xsdt.filter(|a| *a != 0) {
            Some(x) => (table(x).ok_or("bad XSDT")?, 8),
            None => (table(u32_at(r, 16).ok_or("bad RSDP")? as u64).ok_or("bad RSDT")?, 4),
        };
        let fadt = root[36..]
            .chunks_exact(entry)
            .filter_map(|c| if entry == 8 { u64_at(c, 0) } else { u32_at(c, 0).map(u64::from) })
            .filter_map(table)
            .find(|t| &t[..4] == b"FACP")
            .ok_or("no FADT")?;
        let pm1a_evt = u32_at(fadt, 56).ok_or("short FADT")?;
        let pm1a_cnt = u32_at(fadt, 64).ok_or("short FADT")?;
        let evt_len = *fadt.get(88).ok_or("short FADT")? as u32;
        if pm1a_evt == 0 || pm1a_cnt == 0 || evt_len < 4 || pm1a_evt > 0xfff0 || pm1a_cnt > 0xfffe {
            return Err("no PM1 blocks in I/O space (hardware-reduced ACPI)");
        }
        let slp_typ_s5 = u32_at(fadt, 40).and_then(|d| table(d as u64)).map_or(0, s5_sleep_type);
        let pb =
            PowerButton { sts: pm1a_evt as u16, en: (pm1a_evt + evt_len / 2) as u16, cnt: pm1a_cnt as u16, slp_typ_s5 };
        let (smi_cmd, acpi_enable) = (u32_at(fadt, 48).unwrap_or(0), fadt.get(52).copied().unwrap_or(0));
        // SAFETY: the FADT names these ports as the PM1 blocks and the SMI
        // command port; reading PM1 control changes nothing.
        unsafe {
            if inw(pb.cnt) & SCI_EN == 0 && smi_cmd != 0 && smi_cmd <= 0xffff && acpi_enable != 0 {
                outb(smi_cmd as u16, acpi_enable);
                for _ in 0..100_000 {
                    if inw(pb.cnt) & SCI_EN != 0 {
                        break;
                    }
                    let _ = inb(0x80);
                }
            }
            // Clear a stale press (write one to clear), then enable it.
            outw(pb.sts, PWRBTN);
            outw(pb.en, PWRBTN);
        }
        Ok(pb)
    }

    /// Whether the power button was pressed since the last call.
    pub fn pressed(&self) -> bool {
        // SAFETY: the PM1 status register the FADT names; writing the bit
        // back clears only that bit.
        unsafe {
            if inw(self.sts) & PWRBTN == 0 {
                return false;
            }
            outw(self.sts, PWRBTN);
        }
        true
    }

    /// Enters S5 (soft off): QEMU powers the machine off.
    pub fn power_off(&self) -> ! {
        crate::serial::flush();
        // SAFETY: PM1 control with SLP_TYP = S5 and SLP_EN is the ACPI
        // soft-off; nothing runs after it.
        unsafe { outw(self.cnt, self.slp_typ_s5 << SLP_TYP_SHIFT | SLP_EN) };
        crate::x86::halt()
    }
}

/// The whole RSDP (36 bytes, revision 2) with its extended checksum.
fn phys_rsdp_full(r: &'static [u8]) -> Option<&'static [u8]> {
    let full = phys(r.as_ptr() as u64, 36)?;
    sums_to_zero(full).then_some(full)
}
