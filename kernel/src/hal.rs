//! virtio-drivers' `Hal` for sluice: memory is identity mapped, so physical
//! address = virtual address; DMA memory comes from the kernel heap.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

pub struct KernelHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned heap
// memory, which (identity mapping) the device reaches at the same address;
// MMIO addresses below 4 GiB are identity mapped uncached, those above
// are mapped identity and uncached on first use (paging::map_device).
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let p = NonNull::new(p).expect("out of memory for virtqueues");
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout");
        // SAFETY: the caller passes back what dma_alloc returned.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // Above 4 GiB (OVMF's 64-bit PCI window) the range is mapped now.
        assert!(crate::paging::map_device(paddr, size as u64), "MMIO at {paddr:#x}+{size:#x} cannot be mapped");
        NonNull::new(paddr as *mut u8).expect("MMIO at address 0")
    }

    #[inline]
    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    #[inline]
    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
