//! The config drive: a small unpartitioned FAT12/16/32 disk (as `mformat`,
//! `mkfs.vfat` or a cloud's config-drive tooling make them) holding
//! `SLUICE.CFG` in its root directory, read when fw_cfg gives no config.
//! Only reads, through a 512-byte block reader; every number from the disk
//! is bounded before it is used (a hostile disk is refused, never trusted).

use alloc::vec::Vec;

/// Largest config read from a drive.
pub const MAX_CONFIG: usize = 1 << 20;
/// The file looked for: `SLUICE.CFG` as an 8.3 directory name.
const NAME: &[u8; 11] = b"SLUICE  CFG";
/// Root directory entries scanned at most (FAT32 roots are cluster chains).
const MAX_ROOT_ENTRIES: usize = 4096;

fn u16_at(b: &[u8], at: usize) -> u32 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u32
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// The volume's layout, from its boot sector.
struct Volume {
    kind: Kind,
    sectors_per_cluster: u64,
    fat_start: u64,
    root_start: u64,
    root_sectors: u64,
    root_cluster: u32,
    data_start: u64,
    clusters: u32,
}

impl Volume {
    fn parse(bs: &[u8; 512]) -> Result<Volume, &'static str> {
        if bs[510] != 0x55 || bs[511] != 0xaa {
            return Err("no boot-sector signature");
        }
        if u16_at(bs, 11) != 512 {
            return Err("not 512-byte sectors");
        }
        let spc = bs[13] as u64;
        if spc == 0 || !spc.is_power_of_two() || spc > 128 {
            return Err("bad sectors per cluster");
        }
        let reserved = u16_at(bs, 14) as u64;
        let fats = bs[16] as u64;
        let root_entries = u16_at(bs, 17) as u64;
        let total = match u16_at(bs, 19) {
            0 => u32_at(bs, 32) as u64,
            n => n as u64,
        };
        let fat_size = match u16_at(bs, 22) {
            0 => u32_at(bs, 36) as u64,
            n => n as u64,
        };
        if reserved == 0 || !(1..=2).contains(&fats) || fat_size == 0 || total == 0 {
            return Err("not a FAT volume");
        }
        let fat_start = reserved;
        let root_start = reserved + fats * fat_size;
        let root_sectors = (root_entries * 32).div_ceil(512);
        let data_start = root_start + root_sectors;
        if data_start >= total {
            return Err("the FAT volume's regions overlap");
        }
        let clusters = ((total - data_start) / spc).min(u32::MAX as u64) as u32;
        let kind = match clusters {
            0..4085 => Kind::Fat12,
            4085..65525 => Kind::Fat16,
            _ => Kind::Fat32,
        };
        // The FAT must hold an entry for every cluster.
        let fat_bytes = fat_size * 512;
        let need = match kind {
            Kind::Fat12 => (clusters as u64 + 2) * 3 / 2 + 1,
            Kind::Fat16 => (clusters as u64 + 2) * 2,
            Kind::Fat32 => (clusters as u64 + 2) * 4,
        };
        if need > fat_bytes {
            return Err("the FAT is too small for the volume");
        }
        let root_cluster = if kind == Kind::Fat32 { u32_at(bs, 44) } else { 0 };
        Ok(Volume {
            kind,
            sectors_per_cluster: spc,
            fat_start,
            root_start,
            root_sectors,
            root_cluster,
            data_start,
            clusters,
        })
    }

    fn cluster_sector(&self, c: u32) -> u64 {
        self.data_start + (c as u64 - 2) * self.sectors_per_cluster
    }

    fn valid(&self, c: u32) -> bool {
        c >= 2 && c < self.clusters.saturating_add(2)
    }
}

/// Reads `SLUICE.CFG` from the FAT volume that `read` (sector number →
/// 512 bytes) gives. `Ok(None)`: a FAT volume without the file, or no FAT
/// volume at all (another disk). `Err`: the file is there but cannot be read.
pub fn find_config<E>(
    mut read: impl FnMut(u64, &mut [u8; 512]) -> Result<(), E>,
) -> Result<Option<Vec<u8>>, &'static str> {
    let mut sector = [0u8; 512];
    if read(0, &mut sector).is_err() {
        return Ok(None);
    }
    let Ok(vol) = Volume::parse(&sector) else { return Ok(None) };
    let mut fat_cache: Option<(u64, [u8; 512])> = None;
    let mut next = |c: u32, read: &mut dyn FnMut(u64, &mut [u8; 512]) -> bool| -> Option<u32> {
        let off = match vol.kind {
            Kind::Fat12 => c as u64 * 3 / 2,
            Kind::Fat16 => c as u64 * 2,
            Kind::Fat32 => c as u64 * 4,
        };
        let mut byte = |at: u64| -> Option<u8> {
            let s = vol.fat_start + at / 512;
            if fat_cache.as_ref().is_none_or(|(cs, _)| *cs != s) {
                let mut b = [0u8; 512];
                if !read(s, &mut b) {
                    return None;
                }
                fat_cache = Some((s, b));
            }
            fat_cache.as_ref().map(|(_, b)| b[(at % 512) as usize])
        };
        let v = match vol.kind {
            Kind::Fat12 => {
                let w = byte(off)? as u32 | (byte(off + 1)? as u32) << 8;
                if c & 1 == 0 {
                    w & 0xfff
                } else {
                    w >> 4
                }
            }
            Kind::Fat16 => byte(off)? as u32 | (byte(off + 1)? as u32) << 8,
            Kind::Fat32 => {
                (byte(off)? as u32
                    | (byte(off + 1)? as u32) << 8
                    | (byte(off + 2)? as u32) << 16
                    | (byte(off + 3)? as u32) << 24)
                    & 0x0fff_ffff
            }
        };
        vol.valid(v).then_some(v)
    };
    let mut rd = |s: u64, b: &mut [u8; 512]| read(s, b).is_ok();
    // The root directory's sectors: a fixed region (FAT12/16) or a chain.
    let mut found: Option<(u32, usize)> = None;
    let mut scanned = 0usize;
    let visit = |b: &[u8; 512], found: &mut Option<(u32, usize)>, scanned: &mut usize| -> bool {
        for e in b.chunks_exact(32) {
            *scanned += 1;
            if e[0] == 0 || *scanned > MAX_ROOT_ENTRIES {
                return false;
            }
            let attr = e[11];
            if e[0] != 0xe5 && attr & 0x18 == 0 && &e[..11] == NAME {
                let cluster = u16_at(e, 26) | if vol.kind == Kind::Fat32 { u16_at(e, 20) << 16 } else { 0 };
                *found = Some((cluster, u32_at(e, 28) as usize));
                return false;
            }
        }
        true
    };
    if vol.kind == Kind::Fat32 {
        let mut c = vol.valid(vol.root_cluster).then_some(vol.root_cluster);
        'chain: for _ in 0..vol.clusters.min(MAX_ROOT_ENTRIES as u32) {
            let Some(cl) = c else { break };
            for i in 0..vol.sectors_per_cluster {
                if !rd(vol.cluster_sector(cl) + i, &mut sector) || !visit(&sector, &mut found, &mut scanned) {
                    break 'chain;
                }
            }
            c = next(cl, &mut rd);
        }
    } else {
        for i in 0..vol.root_sectors {
            if !rd(vol.root_start + i, &mut sector) || !visit(&sector, &mut found, &mut scanned) {
                break;
            }
        }
    }
    let Some((first, size)) = found else { return Ok(None) };
    if size > MAX_CONFIG {
        return Err("SLUICE.CFG is larger than 1 MiB");
    }
    let mut out = Vec::with_capacity(size);
    let mut c = if size == 0 { None } else { vol.valid(first).then_some(first) };
    if size > 0 && c.is_none() {
        return Err("SLUICE.CFG starts at a cluster outside the volume");
    }
    // The chain is walked at most as far as the size needs: a loop in a
    // hostile FAT ends there.
    let per_cluster = vol.sectors_per_cluster as usize * 512;
    let mut seen = alloc::collections::BTreeSet::new();
    for _ in 0..size.div_ceil(per_cluster) {
        let Some(cl) = c else { return Err("SLUICE.CFG's cluster chain ends before its size") };
        if !seen.insert(cl) {
            return Err("SLUICE.CFG's cluster chain loops");
        }
        for i in 0..vol.sectors_per_cluster {
            if out.len() >= size {
                break;
            }
            if !rd(vol.cluster_sector(cl) + i, &mut sector) {
                return Err("a read of the config drive failed");
            }
            let take = (size - out.len()).min(512);
            out.extend_from_slice(&sector[..take]);
        }
        c = next(cl, &mut rd);
    }
    if out.len() < size {
        return Err("SLUICE.CFG's cluster chain ends before its size");
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    /// A FAT12 floppy-sized volume (as `mformat -f 1440`) with `file` as
    /// SLUICE.CFG, one-sector clusters.
    fn fat12(file: &[u8]) -> vec::Vec<u8> {
        let mut d = vec![0u8; 2880 * 512];
        let bs = &mut d[..512];
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 1;
        bs[14..16].copy_from_slice(&1u16.to_le_bytes());
        bs[16] = 2;
        bs[17..19].copy_from_slice(&224u16.to_le_bytes());
        bs[19..21].copy_from_slice(&2880u16.to_le_bytes());
        bs[22..24].copy_from_slice(&9u16.to_le_bytes());
        bs[510] = 0x55;
        bs[511] = 0xaa;
        // FAT: clusters 2.. chained, the last marked end.
        let n = file.len().div_ceil(512).max(1) as u32;
        let set = |d: &mut [u8], c: u32, v: u32| {
            let off = 512 + (c * 3 / 2) as usize;
            let w = u16::from_le_bytes([d[off], d[off + 1]]) as u32;
            let w = if c & 1 == 0 { (w & 0xf000) | v } else { (w & 0x000f) | v << 4 };
            d[off..off + 2].copy_from_slice(&(w as u16).to_le_bytes());
        };
        for i in 0..n {
            set(&mut d, 2 + i, if i + 1 == n { 0xfff } else { 3 + i });
        }
        // Root directory at sector 1 + 2 * 9 = 19.
        let root = 19 * 512;
        d[root..root + 11].copy_from_slice(b"OTHER   TXT");
        let e = root + 32;
        d[e..e + 11].copy_from_slice(NAME);
        d[e + 11] = 0x20;
        d[e + 26..e + 28].copy_from_slice(&2u16.to_le_bytes());
        d[e + 28..e + 32].copy_from_slice(&(file.len() as u32).to_le_bytes());
        // Data starts after the 14 root sectors: sector 33.
        let data = 33 * 512;
        d[data..data + file.len()].copy_from_slice(file);
        d
    }

    fn reader(d: &[u8]) -> impl FnMut(u64, &mut [u8; 512]) -> Result<(), ()> + '_ {
        move |s, b| {
            let at = s as usize * 512;
            b.copy_from_slice(d.get(at..at + 512).ok_or(())?);
            Ok(())
        }
    }

    #[test]
    fn reads_sluice_conf_from_a_fat12_volume() {
        let text: vec::Vec<u8> = (0..1500).map(|i| b"port lan address 10.0.0.1/24\n"[i % 29]).collect();
        let d = fat12(&text);
        assert_eq!(find_config(reader(&d)).unwrap().as_deref(), Some(&text[..]));
    }

    #[test]
    fn other_disks_and_hostile_volumes_are_refused_without_a_panic() {
        // Not FAT: nothing, no error (a boot disk, say).
        assert_eq!(find_config(reader(&vec![0u8; 4096])).unwrap(), None);
        // No such file.
        let mut d = fat12(b"x");
        d[19 * 512 + 32] = 0;
        assert_eq!(find_config(reader(&d)).unwrap(), None);
        // A size far past the chain; a chain that loops on itself; a
        // first cluster outside the volume; a huge size.
        let mut d = fat12(b"port lan\n");
        d[19 * 512 + 32 + 28..19 * 512 + 32 + 32].copy_from_slice(&5000u32.to_le_bytes());
        assert!(find_config(reader(&d)).is_err());
        let mut d = fat12(&[b'#'; 2000]);
        d[512 + 3] = 0x02; // cluster 2 → 2 (a loop)
        d[512 + 4] &= 0xf0;
        assert!(find_config(reader(&d)).is_err());
        let mut d = fat12(b"x");
        d[19 * 512 + 32 + 26..19 * 512 + 32 + 28].copy_from_slice(&60000u16.to_le_bytes());
        assert!(find_config(reader(&d)).is_err());
        let mut d = fat12(b"x");
        d[19 * 512 + 32 + 28..19 * 512 + 32 + 32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(find_config(reader(&d)).is_err());
        // A truncated disk and random boot-sector fields never panic.
        let d = fat12(b"port lan\n");
        let short = &d[..20 * 512];
        let _ = find_config(reader(short));
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut d = fat12(b"port lan\n");
            for _ in 0..4 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                d[(seed >> 33) as usize % 64] = (seed >> 20) as u8;
            }
            let _ = find_config(reader(&d));
        }
    }
}
