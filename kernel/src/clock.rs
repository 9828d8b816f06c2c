//! Time: the TSC, calibrated once at boot against the PIT (channel 2, which
//! every QEMU x86 machine model has unless told otherwise).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::x86::{inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 2 ms is within 0.1% of a PIT tick and keeps boot short.
const CAL_TICKS: u64 = PIT_HZ / 500;
/// Used when the PIT never answers (e.g. a machine without one).
const FALLBACK_HZ: u64 = 2_000_000_000;

/// Microseconds per TSC tick as a 32.32 fixed-point number, so that the
/// per-loop clock read is a multiply and a shift, not a division.
static US_PER_TICK_FP: AtomicU64 = AtomicU64::new((1_000_000u64 << 32) / FALLBACK_HZ);

/// Reads PIT channel 0's current count (latched).
fn pit_count() -> u16 {
    // SAFETY: 0x43 latch command and 0x40 data port of PIT channel 0.
    unsafe {
        outb(0x43, 0x00);
        let lo = inb(0x40) as u16;
        let hi = inb(0x40) as u16;
        hi << 8 | lo
    }
}

/// Measures the TSC frequency against PIT channel 0 (port 0x61 and
/// channel 2 are absent on microvm, channel 0 is not). Returns the
/// frequency and whether the PIT answered.
pub fn calibrate() -> (u64, bool) {
    // SAFETY: PIT mode/command port and channel 0 data port. Channel 0
    // may raise IRQ 0; interrupts are never enabled.
    unsafe {
        outb(0x43, 0x34); // channel 0, lo/hi byte, mode 2 (rate generator)
        outb(0x40, 0xff);
        outb(0x40, 0xff);
    }
    // Wait for the counter to move, so we start on a tick edge; a machine
    // without a PIT reads a constant.
    let first = pit_count();
    let mut spins = 0u32;
    let mut start = first;
    while start == first {
        spins += 1;
        if spins > 100_000 {
            return fallback();
        }
        start = pit_count();
    }
    let t0 = rdtsc();
    loop {
        let now = pit_count();
        // Counts down from 0xffff and reloads: the wrapping difference is
        // the elapsed ticks while it is below one period.
        if start.wrapping_sub(now) as u64 >= CAL_TICKS {
            break;
        }
    }
    let t1 = rdtsc();
    let hz = (t1 - t0) * PIT_HZ / CAL_TICKS;
    set_hz(hz);
    (hz, true)
}

fn set_hz(hz: u64) {
    US_PER_TICK_FP.store((1_000_000u64 << 32) / hz.max(1_000_000), Ordering::Relaxed);
}

/// Without a PIT: the CPU's own statement of its base frequency (CPUID
/// leaf 0x16) if it makes one, else a guess.
fn fallback() -> (u64, bool) {
    let max = core::arch::x86_64::__cpuid(0).eax;
    let hz = if max >= 0x16 {
        let mhz = core::arch::x86_64::__cpuid(0x16).eax as u64;
        if mhz > 0 {
            mhz * 1_000_000
        } else {
            FALLBACK_HZ
        }
    } else {
        FALLBACK_HZ
    };
    set_hz(hz);
    (hz, false)
}

/// The calibrated TSC frequency in MHz.
pub fn tsc_mhz() -> u64 {
    (1u64 << 32) / US_PER_TICK_FP.load(Ordering::Relaxed).max(1)
}

/// Converts a TSC interval to microseconds.
pub fn tsc_to_us(ticks: u64) -> u64 {
    ((ticks as u128 * US_PER_TICK_FP.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Microseconds since kernel entry.
pub fn now_us() -> u64 {
    us_at(rdtsc())
}

/// Microseconds since kernel entry at TSC value `tsc` (one already read).
pub fn us_at(tsc: u64) -> u64 {
    tsc_to_us(tsc.wrapping_sub(crate::boot::boot_tsc()))
}
