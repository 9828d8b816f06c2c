//! Device memory above 4 GiB: the boot page tables identity-map the first
//! 4 GiB; firmware (OVMF) may place 64-bit BARs far above that, in its
//! 64-bit PCI window. [`map_device`] identity-maps such a range, uncached,
//! with 2 MiB pages, building the page-table levels it needs from the heap.

use alloc::alloc::{alloc_zeroed, Layout};
use core::arch::asm;

extern "C" {
    static mut boot_pml4: [u64; 512];
}

const PRESENT_WRITABLE: u64 = 0x3;
/// 2 MiB page, cache disabled and write-through: device memory.
const LARGE_UNCACHED: u64 = 0x83 | 0x18;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// The largest device range mapped in one call (a BAR is far smaller).
const MAX_RANGE: u64 = 1 << 30;
/// Physical addresses this code maps (46 bits: every x86-64 CPU QEMU models).
const PHYS_LIMIT: u64 = 1 << 46;
const FOUR_GIB: u64 = 1 << 32;

/// The next-level table an entry points at, made if absent (None: out of
/// memory, or the entry maps a large page already).
///
/// # Safety
/// `table` points at a live page table of 512 entries used only by this
/// CPU with interrupts off.
unsafe fn next(table: *mut u64, index: usize) -> Option<*mut u64> {
    // SAFETY: index < 512 (callers mask it), inside the table.
    let e = unsafe { table.add(index).read_volatile() };
    if e & 1 != 0 {
        return (e & 0x80 == 0).then_some((e & ADDR) as *mut u64);
    }
    let layout = Layout::from_size_align(4096, 4096).ok()?;
    // SAFETY: a non-zero-size layout; the page is never freed (page tables
    // live as long as the kernel) and, the heap being identity mapped, its
    // address is its physical address.
    let page = unsafe { alloc_zeroed(layout) } as u64;
    if page == 0 {
        return None;
    }
    // SAFETY: as above; the new table is zeroed, so it maps nothing until
    // filled.
    unsafe { table.add(index).write_volatile(page | PRESENT_WRITABLE) };
    Some(page as *mut u64)
}

/// Identity-maps `[addr, addr + len)` as uncached device memory if it lies
/// above 4 GiB (below, the boot tables map it already). False if the range
/// is absurd (over 1 GiB, past 46 bits) or memory for tables ran out.
pub fn map_device(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    if end <= FOUR_GIB {
        return true;
    }
    if len > MAX_RANGE || end > PHYS_LIMIT {
        return false;
    }
    let mut at = addr & !((2 << 20) - 1);
    while at < end {
        // SAFETY: one CPU, interrupts off while drivers start; boot_pml4 is
        // the live top-level table; entries added here map only device
        // ranges above 4 GiB, which nothing else maps, so no existing
        // translation changes.
        unsafe {
            let pml4 = core::ptr::addr_of_mut!(boot_pml4) as *mut u64;
            let Some(pdpt) = next(pml4, (at >> 39) as usize & 511) else { return false };
            let Some(pd) = next(pdpt, (at >> 30) as usize & 511) else { return false };
            pd.add((at >> 21) as usize & 511).write_volatile(at | LARGE_UNCACHED);
        }
        at += 2 << 20;
    }
    // SAFETY: reloading CR3 flushes stale (absent) translations.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack)) };
    true
}
