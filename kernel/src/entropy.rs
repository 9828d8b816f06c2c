//! The boot secret that keys the NAT and LB hash indexes (and seeds their
//! port choice): RDSEED or RDRAND where the CPU has them, else the jitter of
//! timed TSC reads mixed with the config text, so that nobody outside can
//! predict where a flow lands in a table.

use core::arch::x86_64::{__cpuid, __cpuid_count};

fn has_rdrand() -> bool {
    __cpuid(1).ecx & (1 << 30) != 0
}

fn has_rdseed() -> bool {
    // Leaf 0 gives the highest leaf; leaf 7 is read only if present.
    __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ebx & (1 << 18) != 0
}

fn hw_random() -> Option<u64> {
    for _ in 0..32 {
        let mut v: u64 = 0;
        let ok: u8;
        if has_rdseed() {
            // SAFETY: the CPU reports RDSEED; it only writes the register
            // and CF.
            unsafe {
                core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
            };
        } else if has_rdrand() {
            // SAFETY: as above, for RDRAND.
            unsafe {
                core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
            };
        } else {
            return None;
        }
        if ok == 1 {
            return Some(v);
        }
    }
    None
}

fn mix(h: u64, w: u64) -> u64 {
    let h = (h.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 31)
}

/// The secret, and where it came from.
pub fn boot_secret(config_text: &str) -> (u64, &'static str) {
    let mut h = crate::x86::rdtsc();
    for chunk in config_text.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    if let Some(r) = hw_random() {
        return (mix(h, r), if has_rdseed() { "rdseed" } else { "rdrand" });
    }
    // The low bits of the time each short busy loop takes wander with the
    // host's scheduling, caches and the emulator: a few bits per read.
    for _ in 0..256 {
        let t0 = crate::x86::rdtsc();
        let mut x = h;
        for _ in 0..64 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        h = mix(h ^ x, crate::x86::rdtsc().wrapping_sub(t0));
    }
    (h, "tsc jitter")
}
