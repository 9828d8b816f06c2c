//! PCI: configuration space (port I/O 0xCF8/0xCFC, or ECAM where the
//! chipset has it), BAR assignment where the firmware left it undone (qboot
//! and microvm do; SeaBIOS may place 64-bit BARs above the 4 GiB we map), and
//! discovery of virtio-net and igb functions on bus 0 and behind bridges.

use alloc::vec::Vec;

use virtio_drivers::transport::pci::bus::{
    BarInfo, Cam, Command, ConfigurationAccess, DeviceFunction, HeaderType, MemoryBarType, MmioCam, PciRoot,
};
use virtio_drivers::transport::pci::PciTransport;

use crate::hal::KernelHal;
use crate::x86::{inl, outl};

const VIRTIO_VENDOR: u16 = 0x1af4;
const VIRTIO_NET_MODERN: u16 = 0x1041;
const VIRTIO_NET_TRANSITIONAL: u16 = 0x1000;
/// Q35's memory controller hub: its PCIEXBAR register places ECAM.
const Q35_MCH: (u16, u16) = (0x8086, 0x29c0);
const PCIEXBAR: u8 = 0x60;
/// Where ECAM goes if the firmware did not enable it (as SeaBIOS does).
const ECAM_BASE: u64 = 0xB000_0000;
/// BARs we assign go here and up, clear of RAM (< 3 GiB), ECAM and the
/// APICs at 0xFEC0_0000.
const MMIO_WINDOW: (u64, u64) = (0xC000_0000, 0xFEB0_0000);
const IO_WINDOW: (u64, u64) = (0xC000, 0x10000);

/// Configuration space through the legacy 0xCF8/0xCFC ports.
pub struct PortCam;

impl PortCam {
    fn address(df: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | (df.bus as u32) << 16
            | (df.device as u32) << 11
            | (df.function as u32) << 8
            | (offset as u32 & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: 0xCF8/0xCFC are the PCI configuration mechanism #1 ports.
        unsafe {
            outl(0xcf8, Self::address(df, offset));
            inl(0xcfc)
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            outl(0xcf8, Self::address(df, offset));
            outl(0xcfc, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Either configuration mechanism.
pub enum Cam2 {
    Port(PortCam),
    Ecam(MmioCam<'static>),
}

impl ConfigurationAccess for Cam2 {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        match self {
            Cam2::Port(c) => c.read_word(df, offset),
            Cam2::Ecam(c) => c.read_word(df, offset),
        }
    }
    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        match self {
            Cam2::Port(c) => c.write_word(df, offset, data),
            Cam2::Ecam(c) => c.write_word(df, offset, data),
        }
    }
    unsafe fn unsafe_clone(&self) -> Self {
        match self {
            Cam2::Port(_) => Cam2::Port(PortCam),
            // SAFETY: forwarded contract: the clone only reads.
            Cam2::Ecam(c) => Cam2::Ecam(unsafe { c.unsafe_clone() }),
        }
    }
}

/// What PCI discovery found.
pub struct PciScan {
    pub mechanism: &'static str,
    pub transports: Vec<(DeviceFunction, PciTransport)>,
    /// Intel 82576 functions and the address of their BAR 0.
    pub igb: Vec<(DeviceFunction, u64)>,
    pub errors: Vec<(DeviceFunction, alloc::string::String)>,
}

/// Picks the configuration mechanism: ECAM on Q35 (enabling it at the
/// conventional address if the firmware did not), port I/O otherwise.
/// Also returns a second handle on the same mechanism, for reading
/// bridges' bus numbers while the root enumerates.
fn root() -> Option<(PciRoot<Cam2>, Cam2, &'static str)> {
    let mut port = PortCam;
    let host = DeviceFunction { bus: 0, device: 0, function: 0 };
    let id = port.read_word(host, 0);
    if id == 0xffff_ffff {
        return None;
    }
    if (id as u16, (id >> 16) as u16) == Q35_MCH {
        let mut bar = port.read_word(host, PCIEXBAR) as u64 | (port.read_word(host, PCIEXBAR + 4) as u64) << 32;
        if bar & 1 == 0 {
            port.write_word(host, PCIEXBAR + 4, 0);
            port.write_word(host, PCIEXBAR, ECAM_BASE as u32 | 1);
            bar = ECAM_BASE | 1;
        }
        let base = bar & 0xf_f000_0000;
        if base != 0 && base < MMIO_WINDOW.0 {
            // SAFETY: the MCH decodes 256 MiB of ECAM at `base` (bus 0–255),
            // identity mapped uncached by the boot page tables, and nothing
            // else uses that range.
            let cam = unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) };
            // SAFETY: the same range; this handle only reads bridge
            // registers, which enumeration does not write.
            let reader = unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) };
            return Some((PciRoot::new(Cam2::Ecam(cam)), Cam2::Ecam(reader), "ecam"));
        }
    }
    Some((PciRoot::new(Cam2::Port(port)), Cam2::Port(PortCam), "port-io"))
}

/// A bump allocator for bus addresses that steps over ranges in use.
struct Window {
    next: u64,
    end: u64,
    used: Vec<(u64, u64)>,
}

impl Window {
    fn alloc(&mut self, size: u64) -> Option<u64> {
        let size = size.max(16);
        let mut addr = self.next.next_multiple_of(size);
        while let Some(&(_, e)) = self.used.iter().find(|(s, e)| addr < *e && *s < addr + size) {
            addr = e.next_multiple_of(size);
        }
        if addr + size > self.end {
            return None;
        }
        self.next = addr + size;
        self.used.push((addr, addr + size));
        Some(addr)
    }
}

/// Gives every BAR of `df` (on bus 0) an address in the windows.
fn assign_bars(
    root: &mut PciRoot<Cam2>,
    df: DeviceFunction,
    mem: &mut Window,
    io: &mut Window,
    errors: &mut Vec<(DeviceFunction, alloc::string::String)>,
) {
    let bars = root.bars(df).unwrap_or_default();
    let mut i = 0;
    while i < 6 {
        match &bars[i] {
            Some(BarInfo::Memory { address_type, size, .. }) if *size > 0 => {
                let wide = *address_type == MemoryBarType::Width64;
                match mem.alloc(*size) {
                    Some(a) if wide => root.set_bar_64(df, i as u8, a),
                    Some(a) => root.set_bar_32(df, i as u8, a as u32),
                    None => errors.push((df, "PCI memory window exhausted".into())),
                }
            }
            Some(BarInfo::IO { size, .. }) if *size > 0 => match io.alloc(*size as u64) {
                Some(a) => root.set_bar_32(df, i as u8, a as u32),
                None => errors.push((df, "PCI I/O window exhausted".into())),
            },
            _ => {}
        }
        i += if bars[i].as_ref().is_some_and(|b| b.takes_two_entries()) { 2 } else { 1 };
    }
}

/// Lists the virtio-net and igb functions, on bus 0 and behind bridges,
/// and makes their BARs usable.
pub fn scan() -> PciScan {
    let mut out = PciScan { mechanism: "none", transports: Vec::new(), igb: Vec::new(), errors: Vec::new() };
    let Some((mut root, reader, mechanism)) = root() else {
        return out;
    };
    out.mechanism = mechanism;
    // Bus 0, then every bus a bridge (a PCIe root port, say) leads to, as
    // the firmware numbered them: 256 buses at most, each seen once.
    let mut functions = Vec::new();
    // Memory windows the firmware opened on bridges: no bus-0 BAR goes there.
    let mut bridge_windows: Vec<(u64, u64)> = Vec::new();
    let mut pending: Vec<u8> = alloc::vec![0];
    let mut seen = [false; 256];
    seen[0] = true;
    while let Some(bus) = pending.pop() {
        for (df, info) in root.enumerate_bus(bus) {
            if info.header_type == HeaderType::PciPciBridge {
                let secondary = (reader.read_word(df, 0x18) >> 8) as u8;
                // Memory base/limit (0x20) and prefetchable base/limit
                // (0x24, upper halves at 0x28/0x2c), in 1 MiB units.
                let w = reader.read_word(df, 0x20);
                let (base, limit) = (((w & 0xfff0) as u64) << 16, (((w >> 16) & 0xfff0) as u64) << 16 | 0xf_ffff);
                if base <= limit {
                    bridge_windows.push((base, limit + 1));
                }
                let p = reader.read_word(df, 0x24);
                let (hi_b, hi_l) = (reader.read_word(df, 0x28) as u64, reader.read_word(df, 0x2c) as u64);
                let (base, limit) = (
                    hi_b << 32 | ((p & 0xfff0) as u64) << 16,
                    hi_l << 32 | (((p >> 16) & 0xfff0) as u64) << 16 | 0xf_ffff,
                );
                if base <= limit {
                    bridge_windows.push((base, limit + 1));
                }
                if secondary != 0 && !seen[secondary as usize] {
                    seen[secondary as usize] = true;
                    pending.push(secondary);
                }
                continue;
            }
            functions.push((df, info));
        }
    }

    // Addresses the firmware already gave to devices we leave alone.
    let mut mem = Window { next: MMIO_WINDOW.0, end: MMIO_WINDOW.1, used: Vec::new() };
    let mut io = Window { next: IO_WINDOW.0, end: IO_WINDOW.1, used: Vec::new() };
    mem.used.extend(bridge_windows);
    let is_virtio = |v: u16, d: u16| v == VIRTIO_VENDOR && (d == VIRTIO_NET_MODERN || d == VIRTIO_NET_TRANSITIONAL);
    let is_igb = |v: u16, d: u16| v == drivers::igb::VENDOR && d == drivers::igb::DEVICE_82576;
    let is_net = |v: u16, d: u16| is_virtio(v, d) || is_igb(v, d);
    for (df, info) in &functions {
        if is_net(info.vendor_id, info.device_id) {
            continue;
        }
        for bar in root.bars(*df).unwrap_or_default().into_iter().flatten() {
            match bar {
                BarInfo::Memory { address, size, .. } if address != 0 => mem.used.push((address, address + size)),
                BarInfo::IO { address, size } if address != 0 => {
                    io.used.push((address as u64, (address + size) as u64))
                }
                _ => {}
            }
        }
    }

    for (df, info) in functions {
        if !is_net(info.vendor_id, info.device_id) {
            continue;
        }
        if df.bus != 0 {
            // Behind a bridge: the bridge's windows are the firmware's, so
            // its BAR assignment is used as it is, if it is reachable.
            let bars = root.bars(df).unwrap_or_default();
            let unusable = bars.iter().flatten().any(|b| match b {
                BarInfo::Memory { address, size, .. } => *size > 0 && (*address == 0 || *address >= MMIO_WINDOW.1),
                BarInfo::IO { .. } => false,
            });
            if unusable {
                out.errors.push((
                    df,
                    "behind a bridge with a memory BAR the firmware left unassigned or above 4 GiB \
                     (SeaBIOS and OVMF assign them; qboot does not)"
                        .into(),
                ));
                continue;
            }
        } else {
            // Decode nothing while BARs move.
            root.set_command(df, Command::empty());
            assign_bars(&mut root, df, &mut mem, &mut io, &mut out.errors);
        }
        root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        if is_igb(info.vendor_id, info.device_id) {
            match root.bars(df).ok().and_then(|b| b[0].clone()) {
                Some(BarInfo::Memory { address, .. }) if address != 0 && address < MMIO_WINDOW.1 => {
                    out.igb.push((df, address))
                }
                _ => out.errors.push((df, "igb: BAR 0 is not a usable memory BAR".into())),
            }
            continue;
        }
        match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => out.transports.push((df, t)),
            Err(e) => out.errors.push((df, alloc::format!("{e}"))),
        }
    }
    out
}
