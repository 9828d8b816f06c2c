//! QEMU's fw_cfg: named files from the host (`-fw_cfg name=...,file=...`,
//! libvirt's `<sysinfo type='fwcfg'>`). The DMA interface moves a whole file
//! with one I/O exit; byte-wise port reads are the fallback.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use crate::x86::{inb, outl, outw};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const DMA_HI: u16 = 0x514;
const DMA_LO: u16 = 0x518;
const SIGNATURE: u16 = 0x0000;
const ID: u16 = 0x0001;
const FILE_DIR: u16 = 0x0019;

const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SELECT: u32 = 0x08;

pub struct FwCfg {
    dma: bool,
}

#[repr(C)]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

impl FwCfg {
    /// Finds fw_cfg; `None` if the machine has none.
    pub fn probe() -> Option<FwCfg> {
        let mut sig = [0u8; 4];
        let mut cfg = FwCfg { dma: false };
        cfg.read_port(SIGNATURE, &mut sig);
        if &sig != b"QEMU" {
            return None;
        }
        let mut id = [0u8; 4];
        cfg.read_port(ID, &mut id);
        cfg.dma = u32::from_le_bytes(id) & 2 != 0;
        Some(cfg)
    }

    fn read_port(&mut self, key: u16, buf: &mut [u8]) {
        // SAFETY: the fw_cfg selector and data ports.
        unsafe {
            outw(SELECTOR, key);
            for b in buf {
                *b = inb(DATA);
            }
        }
    }

    fn read(&mut self, key: u16, buf: &mut [u8]) {
        if !self.dma || buf.is_empty() {
            return self.read_port(key, buf);
        }
        let access = DmaAccess {
            control: ((key as u32) << 16 | DMA_SELECT | DMA_READ).to_be(),
            length: (buf.len() as u32).to_be(),
            address: (buf.as_mut_ptr() as u64).to_be(),
        };
        let addr = &access as *const DmaAccess as u64;
        fence(Ordering::SeqCst);
        // SAFETY: the fw_cfg DMA address registers (big-endian); writing the
        // low half starts the transfer into `buf`, which is identity mapped
        // and outlives it (we wait for completion below).
        unsafe {
            outl(DMA_HI, ((addr >> 32) as u32).to_be());
            outl(DMA_LO, (addr as u32).to_be());
        }
        loop {
            // SAFETY: `access` is ours; QEMU updates `control` when done.
            let control = u32::from_be(unsafe { core::ptr::addr_of!(access.control).read_volatile() });
            if control & !DMA_ERROR == 0 {
                if control & DMA_ERROR != 0 {
                    // Fall back to the slow path rather than lose the file.
                    self.read_port(key, buf);
                }
                break;
            }
        }
        fence(Ordering::SeqCst);
    }

    /// Reads the named file, if the host provided it.
    pub fn file(&mut self, name: &str) -> Option<Vec<u8>> {
        let mut count = [0u8; 4];
        self.read(FILE_DIR, &mut count);
        let count = u32::from_be_bytes(count) as usize;
        let mut dir = vec![0u8; 4 + 64 * count];
        self.read(FILE_DIR, &mut dir);
        for entry in dir[4..].chunks_exact(64) {
            let size = u32::from_be_bytes(entry[0..4].try_into().unwrap()) as usize;
            let select = u16::from_be_bytes(entry[4..6].try_into().unwrap());
            let raw = &entry[8..];
            let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            if &raw[..n] == name.as_bytes() {
                let mut data = vec![0u8; size];
                self.read(select, &mut data);
                return Some(data);
            }
        }
        None
    }

    /// Reads the named file as text (lossy for invalid UTF-8).
    pub fn text(&mut self, name: &str) -> Option<String> {
        self.file(name).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}
