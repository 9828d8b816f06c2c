//! PVH and multiboot2 entry: from 32-bit protected mode (as QEMU's
//! `-kernel`, Firecracker and cloud-hypervisor start a PVH kernel, and as
//! GRUB starts a multiboot2 kernel from a disk image) to 64-bit long mode
//! and `kmain`. Both protocols enter at the same address with paging off;
//! they differ in what EBX points at (EAX tells which), which `BootInfo`
//! sorts out.
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

    /* Multiboot2 header (spec §3.1): magic, i386, length, checksum, end tag.
       GRUB enters at the ELF entry point, i.e. pvh_start. */
    .section .text.multiboot2, "ax"
    .balign 8
mb2_header:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header
    .long -(0xE85250D6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 0, 0
    .long 8
mb2_header_end:

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096
    .global boot_pd
    .global boot_pml4
    .global boot_stack_guard
boot_stack_guard: .skip 4096       /* unmapped by guard::init */
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
    mov ebp, ebx                       /* hvm_start_info or multiboot2 info */
    mov dword ptr [{boot_magic}], eax  /* 0x36d76289 from a multiboot2 loader */
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
    boot_magic = sym BOOT_MAGIC,
    kmain = sym crate::kmain,
);

/// TSC at the first instruction of the kernel, written by the entry stub.
#[no_mangle]
pub static mut BOOT_TSC: u64 = 0;

/// EAX at entry: the multiboot2 magic when GRUB started us.
#[no_mangle]
pub static mut BOOT_MAGIC: u32 = 0;

const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

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
    /// How we were started.
    pub protocol: &'static str,
    /// Where the loader's information block lies: the heap keeps clear.
    pub info: (u64, u64),
    /// The ACPI RSDP (or the loader's copy of it), if the loader said.
    pub rsdp: u64,
}

/// A copy of the command line, safe from the heap (the loader's copy may
/// sit right after the image).
static mut CMDLINE: [u8; 1024] = [0; 1024];

fn keep_cmdline(s: &[u8]) -> &'static str {
    let n = s.len().min(1024);
    // SAFETY: written once, before anything reads it, on the one CPU.
    let buf = unsafe { &mut *core::ptr::addr_of_mut!(CMDLINE) };
    buf[..n].copy_from_slice(&s[..n]);
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

impl BootInfo {
    /// Reads the boot information at physical address `addr`: a multiboot2
    /// information structure if the loader said so, else `hvm_start_info`.
    pub fn parse(addr: usize) -> Result<BootInfo, &'static str> {
        // SAFETY: written by the entry stub before Rust code runs.
        if unsafe { core::ptr::addr_of!(BOOT_MAGIC).read_volatile() } == MULTIBOOT2_MAGIC {
            return Self::parse_multiboot2(addr);
        }
        Self::parse_pvh(addr)
    }

    /// Multiboot2 (spec §3.6): 8-byte-aligned tags after an 8-byte header.
    fn parse_multiboot2(addr: usize) -> Result<BootInfo, &'static str> {
        // SAFETY: a multiboot2 loader passes the address of its information
        // structure in EBX; memory is identity mapped.
        let total = unsafe { (addr as *const u32).read() } as usize;
        // SAFETY: the structure is `total` bytes long.
        let info = unsafe { core::slice::from_raw_parts(addr as *const u8, total) };
        let u32_at = |o: usize| u32::from_le_bytes(info[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(info[o..o + 8].try_into().unwrap());
        let mut cmdline = "";
        let mut ram = heapless::Vec::new();
        let mut rsdp = 0;
        let mut at = 8;
        while at + 8 <= total {
            let (kind, size) = (u32_at(at), u32_at(at + 4) as usize);
            if kind == 0 || size < 8 || at + size > total {
                break;
            }
            match kind {
                1 => {
                    let s = &info[at + 8..at + size];
                    let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                    cmdline = keep_cmdline(&s[..n]);
                }
                6 => {
                    let entry = u32_at(at + 8) as usize;
                    let mut e = at + 16;
                    while entry >= 24 && e + entry <= at + size {
                        if u32_at(e + 16) == E820_RAM {
                            let base = u64_at(e);
                            let _ = ram.push((base, base + u64_at(e + 8)));
                        }
                        e += entry;
                    }
                }
                // The loader's copy of the RSDP (old, new).
                14 | 15 if size >= 8 + 20 => rsdp = (addr + at + 8) as u64,
                _ => {}
            }
            at += size.next_multiple_of(8);
        }
        if ram.is_empty() {
            return Err("multiboot2 information has no memory map");
        }
        Ok(BootInfo { cmdline, ram, protocol: "multiboot2", info: (addr as u64, (addr + total) as u64), rsdp })
    }

    /// Reads `hvm_start_info` at physical address `addr`.
    fn parse_pvh(addr: usize) -> Result<BootInfo, &'static str> {
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
            keep_cmdline(c.to_bytes())
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
        Ok(BootInfo { cmdline, ram, protocol: "pvh", info: (0, 0), rsdp: si.rsdp_paddr })
    }
}
