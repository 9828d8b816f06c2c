//! Structured logging with defmt on COM2 (0x2F8): compact binary frames
//! (rzCOBS) that `sluice logs` decodes on the host with the image's ELF.
//! COM1 stays human-readable. Without a COM2 the bytes go nowhere.

use core::sync::atomic::{AtomicBool, Ordering};

const COM2: u16 = 0x2f8;

static TAKEN: AtomicBool = AtomicBool::new(false);
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

pub fn init() {
    crate::serial::init_uart(COM2);
}

fn put(bytes: &[u8]) {
    for &b in bytes {
        crate::serial::put_uart(COM2, b);
    }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: acquire/release bracket every frame; one CPU, no interrupts, so
// the flag only guards against a log call from inside a log call.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        if TAKEN.swap(true, Ordering::Acquire) {
            // Nested logging (from a panic while logging): drop the frame.
            return;
        }
        // SAFETY: exclusive by the flag above.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(put) }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: exclusive by the flag set in acquire.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(put) };
        TAKEN.store(false, Ordering::Release);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: exclusive by the flag set in acquire.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, put) }
    }
}

defmt::timestamp!("{=u64:us}", crate::clock::now_us());
