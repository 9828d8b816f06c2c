//! COM1 (16550 UART at 0x3f8): the human-readable console for boot messages,
//! counters and panics, and a line-oriented command input.

use core::fmt;

use crate::x86::{inb, outb};

const COM1: u16 = 0x3f8;

pub fn init() {
    // SAFETY: COM1's registers; 115200 8N1, FIFOs on, no interrupts.
    unsafe {
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x80);
        outb(COM1, 0x01);
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03);
        outb(COM1 + 2, 0xC7);
        outb(COM1 + 4, 0x03);
    }
}

fn put(b: u8) {
    // SAFETY: COM1 line status and transmit registers.
    unsafe {
        let mut spins = 0u32;
        while inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
            spins += 1;
        }
        outb(COM1, b);
    }
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
