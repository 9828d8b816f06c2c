//! COM1 (16550 UART at 0x3f8): the human-readable console for boot messages,
//! counters and panics, and a line-oriented command input.

use core::fmt;

use crate::x86::{inb, outb};

const COM1: u16 = 0x3f8;

pub fn init() {
    init_uart(COM1);
}

/// Sets up the 16550 at `base`: 115200 8N1, FIFOs on, no interrupts.
pub fn init_uart(base: u16) {
    // SAFETY: the UART's own registers (COM1 or COM2).
    unsafe {
        outb(base + 1, 0x00);
        outb(base + 3, 0x80);
        outb(base, 0x01);
        outb(base + 1, 0x00);
        outb(base + 3, 0x03);
        outb(base + 2, 0xC7);
        outb(base + 4, 0x03);
    }
}

/// Sends a byte on the UART at `base`, waiting for room. The wait is
/// bounded so a wedged UART cannot hang the appliance, but long: QEMU holds
/// the line busy while its backend (a pipe, a socket) is full, and console
/// output must not be lost then. A missing UART reads all ones (room).
pub fn put_uart(base: u16, b: u8) {
    // SAFETY: the UART's line status and transmit registers.
    unsafe {
        let mut spins = 0u32;
        while inb(base + 5) & 0x20 == 0 && spins < 20_000_000 {
            spins += 1;
        }
        outb(base, b);
    }
}

/// Waits until COM1 has sent everything (transmitter empty), so that
/// nothing printed is lost when the VM stops right after.
pub fn flush() {
    // SAFETY: COM1's line status register.
    unsafe {
        let mut spins = 0u32;
        while inb(COM1 + 5) & 0x40 == 0 && spins < 20_000_000 {
            spins += 1;
        }
    }
}

fn put(b: u8) {
    put_uart(COM1, b);
}

/// A received byte, if one is waiting.
pub fn try_read() -> Option<u8> {
    // SAFETY: COM1 line status and receive registers.
    unsafe { (inb(COM1 + 5) & 1 == 1).then(|| inb(COM1)) }
}

/// The console; stateless, so any code (a panic too) can write to it.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Console, $($arg)*);
    }};
}
