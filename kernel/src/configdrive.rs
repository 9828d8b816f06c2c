//! The config drive: when fw_cfg gives no config, each virtio-blk disk
//! (PCI, or virtio-mmio on microvm) is read for a FAT volume holding
//! `SLUICE.CFG` (vnfs::configdrive parses it; a boot disk is not FAT at
//! sector 0 and is passed over).

use alloc::string::String;

use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use crate::hal::KernelHal;

/// (where it came from, the config text) from the first disk that has one.
pub fn read() -> Option<(String, String)> {
    let disks = crate::pci::block_devices()
        .into_iter()
        .map(|(df, t)| (alloc::format!("pci {df}"), SomeTransport::from(t)))
        .chain(
            crate::mmio::scan()
                .into_iter()
                .map(|(slot, t)| (alloc::format!("mmio slot {slot}"), SomeTransport::from(t))),
        )
        .filter(|(_, t)| t.device_type() == DeviceType::Block);
    for (what, t) in disks {
        let Ok(mut blk) = VirtIOBlk::<KernelHal, _>::new(t) else { continue };
        let sectors = blk.capacity();
        let found = vnfs::configdrive::find_config(|lba, buf: &mut [u8; 512]| {
            if lba >= sectors {
                return Err(());
            }
            blk.read_blocks(lba as usize, &mut buf[..SECTOR_SIZE]).map_err(|_| ())
        });
        match found {
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => return Some((alloc::format!("config drive ({what}):SLUICE.CFG"), text)),
                Err(_) => crate::println!("config drive ({what}): SLUICE.CFG is not UTF-8 text"),
            },
            Ok(None) => {}
            Err(why) => crate::println!("config drive ({what}): {why}"),
        }
    }
    None
}
