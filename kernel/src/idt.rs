//! CPU exceptions. The kernel never enables interrupts; exceptions are bugs,
//! so each one prints what happened and fails the VM like a panic does
//! (rather than triple-faulting, which would look like a clean reset).

use core::arch::{asm, global_asm};

global_asm!(
    r#"
    .section .text
    .balign 16
    .global exception_stubs
exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    push \n
    jmp 1f
    .endr
1:  mov rdi, [rsp]
    lea rsi, [rsp + 8]
    and rsp, -16
    call {handler}
    ud2
    "#,
    handler = sym exception,
);

extern "C" {
    static exception_stubs: u8;
}

#[repr(C, align(16))]
struct Idt([u64; 64]);

static mut IDT: Idt = Idt([0; 64]);

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 error",
    "alignment check",
    "machine check",
    "SIMD error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Vectors that push an error code before RIP.
fn has_error_code(v: u64) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

extern "C" fn exception(vector: u64, frame: *const u64) -> ! {
    let rip_at = if has_error_code(vector) { 1 } else { 0 };
    // SAFETY: `frame` points at the CPU-pushed exception frame on our stack.
    let (err, rip) = unsafe { (if rip_at == 1 { *frame } else { 0 }, *frame.add(rip_at)) };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let (guard, guard_end) = crate::guard::guard_page();
    if matches!(vector, 8 | 14) && (guard..guard_end).contains(&cr2) {
        crate::println!("\nsluice: kernel stack overflow (the guard page below the stack was hit at rip={rip:#x})");
    }
    crate::println!(
        "\nsluice: CPU exception {} ({}) at rip={:#x} error={:#x} cr2={:#x}",
        vector,
        NAMES.get(vector as usize).unwrap_or(&"?"),
        rip,
        err,
        cr2
    );
    crate::x86::fail(crate::x86::Failure::Panic)
}

pub fn init() {
    let base = core::ptr::addr_of!(exception_stubs) as u64;
    // SAFETY: single CPU, interrupts off, called once at boot before any
    // exception can be taken; nothing else references IDT.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for v in 0..32 {
        let addr = base + 16 * v as u64;
        // Page, stack and double faults run on IST1 (guard.rs): the stack
        // they come from may be the one that just overflowed.
        let ist = if matches!(v, 8 | 12 | 14) { 1u64 } else { 0 };
        let low = (addr & 0xffff) | (0x08 << 16) | (ist << 32) | (0x8e00 << 32) | ((addr >> 16) & 0xffff) << 48;
        idt.0[v * 2] = low;
        idt.0[v * 2 + 1] = addr >> 32;
    }
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit: (32 * 16 - 1) as u16, base: idt.0.as_ptr() as u64 };
    // SAFETY: the IDT is static and fully initialised above.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(nostack)) };
}
