//! PCI: configuration space (port I/O 0xCF8/0xCFC, or ECAM where the
//! chipset has it), BAR assignment where the firmware left it undone (qboot
//! and microvm do; SeaBIOS may place 64-bit BARs above the 4 GiB we map), and
//! discovery of virtio-net and igb functions on bus 0 and behind bridges.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

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
    /// Intel 82576 physical functions and the address of their BAR 0.
    pub igb: Vec<(DeviceFunction, u64)>,
    /// 82576 virtual functions: passed through (found on the bus) or
    /// enabled here on a PF (its function, then the VFs', in VF order).
    pub igbvf: Vec<(DeviceFunction, u64, Option<DeviceFunction>)>,
    pub errors: Vec<(DeviceFunction, alloc::string::String)>,
}

/// Where ECAM is (0: none, only port I/O): SR-IOV lives in the extended
/// configuration space above 256 bytes, which only ECAM reaches.
static ECAM: AtomicU64 = AtomicU64::new(0);

fn ecam_at(df: DeviceFunction, offset: u16) -> Option<*mut u32> {
    let base = ECAM.load(Ordering::Relaxed);
    if base == 0 || offset >= 4096 || !offset.is_multiple_of(4) {
        return None;
    }
    let at =
        base + ((df.bus as u64) << 20 | (df.device as u64 & 31) << 15 | (df.function as u64 & 7) << 12 | offset as u64);
    Some(at as *mut u32)
}

fn ext_read(df: DeviceFunction, offset: u16) -> u32 {
    match ecam_at(df, offset) {
        // SAFETY: inside the 256 MiB ECAM window (bus < 256, offset < 4096),
        // identity mapped uncached; configuration reads have no side effects.
        Some(p) => unsafe { p.read_volatile() },
        None => u32::MAX,
    }
}

fn ext_write(df: DeviceFunction, offset: u16, v: u32) {
    if let Some(p) = ecam_at(df, offset) {
        // SAFETY: as in `ext_read`; this writes the function's own
        // configuration registers.
        unsafe { p.write_volatile(v) }
    }
}

/// The offset of extended capability `id`, walking at most 64 entries.
fn ext_capability(df: DeviceFunction, id: u16) -> Option<u16> {
    let mut at = 0x100u16;
    for _ in 0..64 {
        let h = ext_read(df, at);
        if h == u32::MAX || h == 0 {
            return None;
        }
        if h as u16 == id {
            return Some(at);
        }
        let next = (h >> 20) as u16 & !3;
        if next < 0x100 || next <= at {
            return None;
        }
        at = next;
    }
    None
}

const EXT_CAP_SRIOV: u16 = 0x0010;
const SRIOV_CTRL: u16 = 0x08;
const SRIOV_CTRL_VFE: u32 = 1 << 0;
const SRIOV_CTRL_MSE: u32 = 1 << 3;
const SRIOV_TOTAL: u16 = 0x0c;
const SRIOV_NUM: u16 = 0x10;
const SRIOV_OFFSET_STRIDE: u16 = 0x14;
const SRIOV_PAGE_SIZE: u16 = 0x20;
const SRIOV_BAR0: u16 = 0x24;

/// Enables `count` VFs on the SR-IOV PF `pf` (on bus 0, its BARs placed):
/// sizes and places the VF BARs in `mem`, sets VF Enable and VF Memory
/// Space, turns bus mastering on in each VF. Returns each VF's function
/// and BAR 0.
fn enable_vfs(
    reader: &Cam2,
    root: &mut PciRoot<Cam2>,
    pf: DeviceFunction,
    count: u16,
    mem: &mut Window,
) -> Result<Vec<(DeviceFunction, u64)>, String> {
    if ECAM.load(Ordering::Relaxed) == 0 {
        return Err("SR-IOV needs PCIe extended configuration space (ECAM): use the q35 machine".into());
    }
    let cap = ext_capability(pf, EXT_CAP_SRIOV).ok_or("the function has no SR-IOV capability")?;
    let total = (ext_read(pf, cap + SRIOV_TOTAL) >> 16) as u16;
    if count > total {
        return Err(alloc::format!("asked for {count} VFs but the function offers {total}"));
    }
    let ctrl = ext_read(pf, cap + SRIOV_CTRL) & 0xffff;
    ext_write(pf, cap + SRIOV_CTRL, ctrl & !(SRIOV_CTRL_VFE | SRIOV_CTRL_MSE));
    ext_write(pf, cap + SRIOV_PAGE_SIZE, 1);
    ext_write(pf, cap + SRIOV_NUM, count as u32);
    let os = ext_read(pf, cap + SRIOV_OFFSET_STRIDE);
    let (offset, stride) = (os & 0xffff, os >> 16);
    // The VF BARs: each VF's BAR i is the PF's VF BAR i + VF number × size.
    let mut bar0 = None;
    let mut i = 0u16;
    while i < 6 {
        let reg = cap + SRIOV_BAR0 + 4 * i;
        ext_write(pf, reg, u32::MAX);
        let lo = ext_read(pf, reg);
        let wide = lo & 0x6 == 0x4;
        let hi = if wide {
            ext_write(pf, reg + 4, u32::MAX);
            ext_read(pf, reg + 4)
        } else {
            u32::MAX
        };
        let mask = (hi as u64) << 32 | (lo & !0xf) as u64;
        let size = if lo & 1 == 0 && lo & !0xf != 0 { (!mask).wrapping_add(1) } else { 0 };
        if size > 0 && size <= 1 << 30 {
            let whole = size * count as u64;
            let at = mem.alloc(whole.next_power_of_two()).ok_or("PCI memory window exhausted (VF BARs)")?;
            ext_write(pf, reg, at as u32 | (lo & 0xf));
            if wide {
                ext_write(pf, reg + 4, (at >> 32) as u32);
            }
            if i == 0 {
                bar0 = Some((at, size));
            }
        } else {
            ext_write(pf, reg, 0);
            if wide {
                ext_write(pf, reg + 4, 0);
            }
        }
        i += if wide { 2 } else { 1 };
    }
    let (bar0, size0) = bar0.ok_or("the VFs have no memory BAR 0")?;
    ext_write(pf, cap + SRIOV_CTRL, ctrl | SRIOV_CTRL_VFE | SRIOV_CTRL_MSE);
    let rid = (pf.bus as u32) << 8 | (pf.device as u32) << 3 | pf.function as u32;
    let mut vfs = Vec::new();
    for n in 0..count as u32 {
        let r = rid + offset + n * stride;
        if r > 0xffff {
            return Err(alloc::format!("VF {n} would sit past bus 255"));
        }
        let df = DeviceFunction { bus: (r >> 8) as u8, device: ((r >> 3) & 31) as u8, function: (r & 7) as u8 };
        // A VF's vendor and device IDs read 0xffff (SR-IOV §3.4.1.1: they
        // are the PF's VF Device ID); its class code is its own.
        let class = reader.read_word(df, 8);
        if class >> 8 != 0x02_00_00 {
            return Err(alloc::format!("VF {n} did not appear at {df} (class register {class:#010x})"));
        }
        // A VF's memory decoding follows the PF's VF MSE (its own Memory
        // Space bit is read-only zero on hardware; QEMU's model looks at
        // it, so it is set too); DMA is its own.
        root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
        vfs.push((df, bar0 + n as u64 * size0));
    }
    Ok(vfs)
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
            ECAM.store(base, Ordering::Relaxed);
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

/// Every function on bus 0 and behind bridges (bus numbers as the firmware
/// gave them: 256 buses at most, each seen once), and the memory windows
/// the firmware opened on those bridges.
/// Functions found, and bridge windows (start, end).
type Found = (Vec<(DeviceFunction, virtio_drivers::transport::pci::bus::DeviceFunctionInfo)>, Vec<(u64, u64)>);

fn enumerate(root: &PciRoot<Cam2>, reader: &Cam2) -> Found {
    let mut functions = Vec::new();
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
    (functions, bridge_windows)
}

const VIRTIO_BLK_MODERN: u16 = 0x1042;
const VIRTIO_BLK_TRANSITIONAL: u16 = 0x1001;
/// Where virtio-blk BARs go when the firmware left them unassigned: above
/// the NICs' window start, so the NIC scan (which keeps other devices'
/// BARs where they are) never lands on them.
const BLK_WINDOW: (u64, u64) = (0xF000_0000, 0xF800_0000);

/// The virtio-blk functions (a config drive may be one), their BARs made
/// usable: read before the config is known, so before the NIC scan.
pub fn block_devices() -> Vec<(DeviceFunction, PciTransport)> {
    let mut out = Vec::new();
    let Some((mut root, reader, _)) = root() else { return out };
    let (functions, bridge_windows) = enumerate(&root, &reader);
    let mut mem = Window { next: BLK_WINDOW.0, end: BLK_WINDOW.1, used: bridge_windows };
    let mut io = Window { next: 0xF000, end: IO_WINDOW.1, used: Vec::new() };
    let mut errors = Vec::new();
    for (df, info) in functions {
        if info.vendor_id != VIRTIO_VENDOR
            || !(info.device_id == VIRTIO_BLK_MODERN || info.device_id == VIRTIO_BLK_TRANSITIONAL)
        {
            continue;
        }
        let unassigned = root.bars(df).unwrap_or_default().iter().flatten().any(|b| match b {
            BarInfo::Memory { address, size, .. } => *size > 0 && *address == 0,
            BarInfo::IO { address, size } => *size > 0 && *address == 0,
        });
        if df.bus == 0 && unassigned {
            root.set_command(df, Command::empty());
            assign_bars(&mut root, df, &mut mem, &mut io, &mut errors);
        } else if unassigned {
            continue;
        }
        root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        if let Ok(t) = PciTransport::new::<KernelHal, _>(&mut root, df) {
            out.push((df, t));
        }
    }
    out
}

/// Lists the virtio-net and igb functions, on bus 0 and behind bridges,
/// and makes their BARs usable; enables the VFs `sriov` asks for on the
/// 82576 PFs it names (bus, device, function, VFs).
pub fn scan(sriov: &[((u8, u8, u8), u16)]) -> PciScan {
    let mut out =
        PciScan { mechanism: "none", transports: Vec::new(), igb: Vec::new(), igbvf: Vec::new(), errors: Vec::new() };
    let Some((mut root, reader, mechanism)) = root() else {
        return out;
    };
    out.mechanism = mechanism;
    let (mut functions, bridge_windows) = enumerate(&root, &reader);
    // Bus order, as the firmware and `lspci` number them (buses were
    // walked depth first): a NIC behind root port 1 comes before one
    // behind root port 2, as libvirt's q35 puts its first and second
    // interface, and ports bind in that order.
    functions.sort_by_key(|(df, _)| (df.bus, df.device, df.function));
    // Addresses the firmware already gave to devices we leave alone.
    let mut mem = Window { next: MMIO_WINDOW.0, end: MMIO_WINDOW.1, used: Vec::new() };
    let mut io = Window { next: IO_WINDOW.0, end: IO_WINDOW.1, used: Vec::new() };
    mem.used.extend(bridge_windows);
    let is_virtio = |v: u16, d: u16| v == VIRTIO_VENDOR && (d == VIRTIO_NET_MODERN || d == VIRTIO_NET_TRANSITIONAL);
    let is_igb = |v: u16, d: u16| v == drivers::igb::VENDOR && d == drivers::igb::DEVICE_82576;
    let is_igbvf = |v: u16, d: u16| v == drivers::igb::VENDOR && d == drivers::igb::DEVICE_82576_VF;
    let is_net = |v: u16, d: u16| is_virtio(v, d) || is_igb(v, d) || is_igbvf(v, d);
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
            // (Above 4 GiB, where OVMF puts 64-bit BARs, is fine: the
            // HAL maps device ranges there on first use.)
            let unusable = bars.iter().flatten().any(|b| match b {
                BarInfo::Memory { address, size, .. } => *size > 0 && *address == 0,
                BarInfo::IO { .. } => false,
            });
            if unusable {
                out.errors.push((
                    df,
                    "behind a bridge with a memory BAR the firmware left unassigned \
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
        if is_igb(info.vendor_id, info.device_id) || is_igbvf(info.vendor_id, info.device_id) {
            let bar0 = match root.bars(df).ok().and_then(|b| b[0].clone()) {
                Some(BarInfo::Memory { address, size, .. })
                    if address != 0 && crate::paging::map_device(address, size) =>
                {
                    address
                }
                _ => {
                    out.errors.push((df, "igb: BAR 0 is not a usable memory BAR".into()));
                    continue;
                }
            };
            if is_igbvf(info.vendor_id, info.device_id) {
                // Passed through: the host's PF serves its mailbox.
                out.igbvf.push((df, bar0, None));
                continue;
            }
            out.igb.push((df, bar0));
            let asked = sriov.iter().find(|(at, _)| *at == (df.bus, df.device, df.function));
            if let Some(&(_, count)) = asked {
                let enabled = if df.bus != 0 {
                    Err("SR-IOV on a PF behind a bridge is not supported yet: put the PF on bus 0".into())
                } else {
                    enable_vfs(&reader, &mut root, df, count, &mut mem)
                };
                match enabled {
                    Ok(vfs) => out.igbvf.extend(vfs.into_iter().map(|(vf, bar)| (vf, bar, Some(df)))),
                    Err(e) => out.errors.push((df, alloc::format!("SR-IOV: {e}"))),
                }
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
