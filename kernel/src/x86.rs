//! The few x86 instructions the kernel needs: port I/O, the TSC, halting,
//! and leaving QEMU.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the caller drives; a write to the wrong
/// port can reprogram hardware (e.g. start DMA).
#[inline]
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port. # Safety: as [`outb`].
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 16-bit word to an I/O port. # Safety: as [`outb`].
#[inline]
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: as `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) }
}

/// Reads a 16-bit word from an I/O port. # Safety: as [`outb`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as `inb`.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a 32-bit word to an I/O port. # Safety: as [`outb`].
#[inline]
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: as `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) }
}

/// Reads a 32-bit word from an I/O port. # Safety: as [`outb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as `inb`.
    unsafe { asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects and is allowed at CPL0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stops the CPU for good (interrupts are never enabled).
pub fn halt() -> ! {
    loop {
        // SAFETY: with interrupts disabled, hlt just stops this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// Exit codes written to QEMU's isa-debug-exit device (port 0xf4); QEMU
/// exits with status `code * 2 + 1`.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Failure {
    /// A Rust panic or CPU exception: QEMU status 3.
    Panic = 1,
    /// The config or the platform was refused at start: QEMU status 5.
    Startup = 2,
}

/// The pvpanic ISA device's port (QEMU `-device pvpanic`, libvirt
/// `<panic model='isa'/>`).
const PVPANIC: u16 = 0x505;
/// pvpanic event: the guest panicked.
const PVPANIC_PANICKED: u8 = 1;

/// Leaves with a failure status when QEMU has isa-debug-exit (the tests'
/// and `sluice run`'s machines); otherwise tells the hypervisor through
/// pvpanic, if the machine has one (so libvirt's `<on_crash>` fires and
/// `virsh domstate` says crashed), then halts.
pub fn fail(why: Failure) -> ! {
    crate::serial::flush();
    // SAFETY: 0xf4 is isa-debug-exit when present and unused otherwise.
    unsafe { outb(0xf4, why as u8) };
    // SAFETY: reading 0x505 is harmless: pvpanic answers with the events
    // it supports, an empty port with 0xff.
    let events = unsafe { inb(PVPANIC) };
    if events != 0xff && events & PVPANIC_PANICKED != 0 {
        // SAFETY: the pvpanic device is there and supports the event.
        unsafe { outb(PVPANIC, PVPANIC_PANICKED) };
    }
    halt()
}

/// Resets the machine by triple fault; QEMU run with `-no-reboot` exits
/// with status 0. This is sluice's clean shutdown.
pub fn reset() -> ! {
    crate::serial::flush();
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: loading an empty IDT and trapping is the intended triple fault.
    unsafe { asm!("lidt [{}]", "int3", in(reg) &empty, options(nostack)) };
    halt()
}
