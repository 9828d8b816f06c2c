//! The kernel heap: one region of RAM after the image, below the 3 GiB line
//! where the boot page tables start mapping device memory uncached.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

extern "C" {
    static __kernel_end: u8;
}

const DEVICE_MEMORY: u64 = 0xC000_0000;

/// Gives the heap the RAM region that holds the end of the image. Returns
/// the heap's size in bytes.
pub fn init(ram: &[(u64, u64)]) -> Result<usize, &'static str> {
    let start = (core::ptr::addr_of!(__kernel_end) as u64).next_multiple_of(4096);
    let (_, end) = ram.iter().find(|(s, e)| *s <= start && start < *e).ok_or("no RAM after the kernel image")?;
    let end = (*end).min(DEVICE_MEMORY);
    if end <= start + (1 << 20) {
        return Err("less than 1 MiB of RAM after the kernel image");
    }
    let size = (end - start) as usize;
    // SAFETY: [start, end) is RAM per the loader's memory map, above the
    // image and below device memory, identity mapped, and used by nothing else.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    Ok(size)
}

/// Bytes of heap in use.
pub fn used() -> usize {
    HEAP.lock().used()
}
