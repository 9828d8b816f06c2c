//! The kernel heap: one region of RAM after the image, below the 3 GiB line
//! where the boot page tables start mapping device memory uncached.
//!
//! The allocator is Talc (a published no_std allocator): free chunks sit in
//! size-class bins found through a bitmap, so an allocation or a free costs
//! the same however many allocations are live. (The linked-list allocator
//! before it scanned its free list on every allocation: 262 KB of `a\n`
//! config lines took more than 75 s to parse in the image.)

use talc::locking::AssumeUnlockable;
use talc::{ErrOnOom, Span, Talc, Talck};

// AssumeUnlockable: one CPU, interrupts never enabled, and nothing that runs
// inside the allocator allocates, so the heap is never entered twice at once.
#[global_allocator]
static HEAP: Talck<AssumeUnlockable, ErrOnOom> = Talc::new(ErrOnOom).lock();

extern "C" {
    static __kernel_end: u8;
}

const DEVICE_MEMORY: u64 = 0xC000_0000;

/// Gives the heap the largest stretch of RAM above the image, below the
/// 3 GiB line, and clear of the loader's information block `avoid` (UEFI
/// firmware leaves RAM in many pieces; the one holding the image may be
/// small). Returns the heap's size in bytes.
pub fn init(ram: &[(u64, u64)], avoid: (u64, u64)) -> Result<usize, &'static str> {
    let floor = (core::ptr::addr_of!(__kernel_end) as u64).next_multiple_of(4096);
    let mut best = (0u64, 0u64);
    for &(s, e) in ram {
        let (s, e) = (s.max(floor).next_multiple_of(4096), e.min(DEVICE_MEMORY));
        // Split around the information block and keep the larger side.
        let pieces = if avoid.0 < e && s < avoid.1 {
            [(s, avoid.0.min(e)), (avoid.1.next_multiple_of(4096).max(s), e)]
        } else {
            [(s, e), (0, 0)]
        };
        for (ps, pe) in pieces {
            if pe > ps && pe - ps > best.1 - best.0 {
                best = (ps, pe);
            }
        }
    }
    let (start, end) = best;
    if end <= start + (1 << 20) {
        return Err("less than 1 MiB of free RAM above the kernel image");
    }
    let size = (end - start) as usize;
    // SAFETY: [start, end) is RAM per the loader's memory map, above the
    // image, clear of the loader's information, below device memory,
    // identity mapped, and used by nothing else.
    unsafe { HEAP.lock().claim(Span::from_base_size(start as *mut u8, size)) }
        .map_err(|()| "the heap region is too small for the allocator")?;
    Ok(size)
}

/// Bytes of heap in use.
pub fn used() -> usize {
    HEAP.lock().get_counters().allocated_bytes
}

/// Bytes of heap not in use (not all in one piece).
pub fn free() -> usize {
    HEAP.lock().get_counters().available_bytes
}
