//! virtio-mmio discovery on QEMU's microvm: up to 24 transports of 512 bytes
//! from 0xFEB0_0000 (hw/i386/microvm.c). Empty slots read device id 0.

use alloc::vec::Vec;
use core::ptr::NonNull;

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};

const BASE: usize = 0xfeb0_0000;
const SLOTS: usize = 24;
const SIZE: usize = 0x200;
const MAGIC: u32 = 0x7472_6976; // "virt"

/// Returns (slot, transport) for every populated slot that holds a device.
pub fn scan() -> Vec<(usize, MmioTransport<'static>)> {
    let mut out = Vec::new();
    // QEMU fills slots from the top: walking down gives command-line order.
    for slot in (0..SLOTS).rev() {
        let addr = BASE + slot * SIZE;
        // SAFETY: the microvm virtio-mmio window is identity mapped
        // uncached; on other machines it is unclaimed PCI hole and reads
        // all-ones, which fails the magic check.
        let (magic, device_id) = unsafe {
            let p = addr as *const u32;
            (p.read_volatile(), p.add(2).read_volatile())
        };
        if magic != MAGIC || device_id == 0 {
            continue;
        }
        let header = NonNull::new(addr as *mut VirtIOHeader).unwrap();
        // SAFETY: a virtio-mmio register block of SIZE bytes lives at
        // `addr` (magic checked), valid for the life of the VM, and this
        // is the only transport created for it.
        if let Ok(t) = unsafe { MmioTransport::new(header, SIZE) } {
            out.push((slot, t));
        }
    }
    out
}
