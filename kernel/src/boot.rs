//! PVH entry: from 32-bit protected mode (as QEMU's `-kernel`, Firecracker
//! and cloud-hypervisor start a PVH kernel) to 64-bit long mode and `kmain`.
//!
//! The stub identity-maps the first 4 GiB with 2 MiB pages (RAM write-back,
//! 3–4 GiB uncached for PCI BARs, virtio-mmio and the APICs), enables PAE,
//! long mode and paging, loads a flat GDT and calls `kmain` with the physical
//! address of `hvm_start_info`. It reads the TSC first, so the kernel can say
//! how long it took from entry to ready. `.bss` is zero by the ELF loader's
//! contract (memsz beyond filesz), so the stub does not clear it.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4            /* name size: "Xen\0" */
    .long 4            /* descriptor size */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
boot_stack: .skip 128 * 1024
boot_stack_top:

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF   /* 0x08: 64-bit code */
    .quad 0x00CF93000000FFFF   /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov ebp, ebx                       /* hvm_start_info */
    rdtsc
    mov dword ptr [{boot_tsc}], eax
    mov dword ptr [{boot_tsc} + 4], edx

    mov edi, offset boot_pml4          /* clear PML4 and PDPT */
    xor eax, eax
    mov ecx, 2048
    rep stosd
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 8], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 16], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 24], eax

    mov edi, offset boot_pd            /* 2048 x 2 MiB pages */
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83                       /* present, writable, 2 MiB */
    cmp ecx, 1536
    jb 2f
    or eax, 0x18                       /* >= 3 GiB: PCD | PWT */
2:  mov dword ptr [edi + ecx * 8], eax
    mov dword ptr [edi + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 2048
    jb 1b

    mov eax, cr4
    or eax, 0x620                      /* PAE | OSFXSR | OSXMMEXCPT */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080                /* EFER */
    rdmsr
    or eax, 0x100                      /* LME */
    wrmsr
    mov eax, cr0
    and eax, 0xFFFFFFFB                /* no x87 emulation */
    or eax, 0x80000003                 /* PG | MP | PE */
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    /* ljmp 0x08:boot_long_mode, spelled out: assemblers disagree on the mnemonic */
    .byte 0xea
    .long boot_long_mode
    .word 0x08

    .code64
boot_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + boot_stack_top]
    mov edi, ebp
    call {kmain}
4:  hlt
    jmp 4b
    "#,
    boot_tsc = sym BOOT_TSC,
    kmain = sym crate::kmain,
);

/// TSC at the first instruction of the kernel, written by the entry stub.
#[no_mangle]
pub static mut BOOT_TSC: u64 = 0;

/// TSC value at kernel entry.
pub fn boot_tsc() -> u64 {
    // SAFETY: written once by the entry stub before any Rust code runs;
    // only read afterwards, on the one CPU.
    unsafe { core::ptr::addr_of!(BOOT_TSC).read_volatile() }
}

/// `struct hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h).
#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

const START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// What the boot loader told us.
pub struct BootInfo {
    pub cmdline: &'static str,
    /// Usable RAM regions (start, end).
    pub ram: heapless::Vec<(u64, u64), 16>,
}

impl BootInfo {
    /// Reads `hvm_start_info` at physical address `addr`.
    pub fn parse(addr: usize) -> Result<BootInfo, &'static str> {
        if addr == 0 {
            return Err("no hvm_start_info: boot through PVH (qemu -kernel)");
        }
        // SAFETY: the PVH boot protocol passes the address of a valid
        // hvm_start_info in ebx; memory is identity mapped.
        let si = unsafe { &*(addr as *const StartInfo) };
        if si.magic != START_MAGIC {
            return Err("hvm_start_info has a bad magic number");
        }
        let cmdline = if si.cmdline_paddr == 0 {
            ""
        } else {
            // SAFETY: the loader gives a NUL-terminated string in RAM that it
            // never touches again.
            let c = unsafe { core::ffi::CStr::from_ptr(si.cmdline_paddr as *const core::ffi::c_char) };
            c.to_str().unwrap_or("")
        };
        let mut ram = heapless::Vec::new();
        if si.version >= 1 && si.memmap_paddr != 0 {
            // SAFETY: version 1 start info carries a memmap array of
            // `memmap_entries` entries at `memmap_paddr`.
            let map = unsafe {
                core::slice::from_raw_parts(si.memmap_paddr as *const MemmapEntry, si.memmap_entries as usize)
            };
            for e in map.iter().filter(|e| e.kind == E820_RAM) {
                let _ = ram.push((e.addr, e.addr + e.size));
            }
        }
        if ram.is_empty() {
            return Err("hvm_start_info has no memory map (needs PVH start info version 1)");
        }
        Ok(BootInfo { cmdline, ram })
    }
}
