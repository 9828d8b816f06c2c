//! The kernel heap: one region of RAM after the image, below the 3 GiB line
//! where the boot page tables start mapping device memory uncached.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

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
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    Ok(size)
}

/// Bytes of heap in use.
pub fn used() -> usize {
    HEAP.lock().used()
}

/// Bytes of heap not in use (not all in one piece).
pub fn free() -> usize {
    HEAP.lock().free()
}
