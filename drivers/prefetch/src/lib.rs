//! The cache-prefetch hint, for portable code that may not use `unsafe`.
//!
//! The translating stages look up tables far larger than the caches; a
//! burst first *prefetches* every packet's index slot and record, so that
//! their cache misses overlap instead of following one another. Rust has no
//! safe prefetch on stable, so the one instruction lives here, beside the
//! drivers, where sluice keeps its `unsafe` code.
#![no_std]

/// Asks the CPU to bring the cache line holding `r` into all cache levels.
/// Only a hint: it never faults, changes no memory and no architectural
/// state, and may be ignored (QEMU's TCG ignores it).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally visible and cannot
    // fault, whatever the address; `r` is a live reference anyway. It
    // touches neither the stack nor the flags.
    unsafe {
        core::arch::asm!("prefetcht0 [{0}]", in(reg) r as *const T, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetch_changes_nothing() {
        let v = [1u32, 2, 3];
        super::prefetch(&v[1]);
        assert_eq!(v, [1, 2, 3]);
    }
}
