//! A guard page under the kernel stack, and a separate stack for the
//! exceptions that report hitting it.
//!
//! The boot stub maps all RAM with 2 MiB pages. Here the 2 MiB page that
//! holds the bottom of the stack is split into 4 KiB pages with the one
//! below the stack left unmapped, so running off the stack is a page fault
//! at a known address, not a silent write into whatever lies below it. The
//! page-fault, stack-fault and double-fault handlers run on a stack of
//! their own (IST1 of a TSS), because the faulting stack is by then full:
//! without it the CPU could not push the exception frame and would reset.

use core::arch::asm;

extern "C" {
    static boot_pd: u8;
    static boot_stack_guard: u8;
}

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

static mut GUARD_PT: PageTable = PageTable([0; 512]);

#[repr(C, align(16))]
struct ExceptionStack([u8; 16 * 1024]);

static mut EXCEPTION_STACK: ExceptionStack = ExceptionStack([0; 16 * 1024]);

/// The 64-bit TSS (Intel SDM vol. 3, §8.7): only IST1 is used.
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss =
    Tss { reserved0: 0, rsp: [0; 3], reserved1: 0, ist: [0; 7], reserved2: 0, reserved3: 0, iomap_base: 104 };

/// Null, 64-bit code (0x08), data (0x10), then the TSS (0x18, two slots):
/// the same code and data descriptors as the boot GDT.
static mut GDT: [u64; 5] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0, 0];

/// The unmapped page's address range.
pub fn guard_page() -> (u64, u64) {
    let g = core::ptr::addr_of!(boot_stack_guard) as u64;
    (g, g + 4096)
}

/// Unmaps the guard page and loads a TSS whose IST1 is the exception stack.
/// Call once, first thing in `kmain`.
pub fn init() {
    let (guard, _) = guard_page();
    let region = guard & !((2 << 20) - 1);
    let pd = core::ptr::addr_of!(boot_pd) as *mut u64;
    // SAFETY: one CPU, interrupts off, called once before anything else
    // runs. GUARD_PT is a static page-aligned table only touched here; it
    // maps the same 2 MiB region the PD entry mapped (identity, write-back),
    // minus the guard page, so every other address stays as it was. The PD
    // entry index is the region's address / 2 MiB (boot_pd holds 2048
    // entries covering 4 GiB), and the region lies in RAM below 3 GiB.
    unsafe {
        let pt = &mut *core::ptr::addr_of_mut!(GUARD_PT);
        for (i, e) in pt.0.iter_mut().enumerate() {
            let page = region + (i as u64) * 4096;
            *e = if page == guard { 0 } else { page | 0x3 };
        }
        pd.add((region >> 21) as usize).write_volatile(pt.0.as_ptr() as u64 | 0x3);
        // Reloading CR3 flushes the TLB's old 2 MiB entry.
        asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
    // SAFETY: as above; the TSS, GDT and exception stack are statics used
    // only by the CPU from here on. The GDT keeps the boot GDT's code and
    // data descriptors at the same selectors, so CS and the data segments
    // stay valid across the `lgdt`; `ltr` marks the TSS descriptor busy.
    unsafe {
        let stack = core::ptr::addr_of_mut!(EXCEPTION_STACK) as u64 + core::mem::size_of::<ExceptionStack>() as u64;
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        tss.ist[0] = stack & !0xf;
        let base = core::ptr::addr_of!(TSS) as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt[3] = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, 64-bit TSS (available)
            | ((limit >> 16) & 0xf) << 48
            | ((base >> 24) & 0xff) << 56;
        gdt[4] = base >> 32;
        #[repr(C, packed)]
        struct Gdtr {
            limit: u16,
            base: u64,
        }
        let gdtr = Gdtr { limit: (core::mem::size_of_val(gdt) - 1) as u16, base: gdt.as_ptr() as u64 };
        asm!("lgdt [{}]", in(reg) &gdtr, options(nostack));
        asm!("ltr {0:x}", in(reg) 0x18u16, options(nostack));
    }
}
