//! Host side of sluice: everything needed to boot the appliance image under
//! QEMU on a topology of taps and network namespaces, and to talk to it.
//!
//! `sluice run` (and `make run`) and the qemu-tests use the same code, so the
//! demo a user runs is the setup the tests prove.

pub mod lab;
pub mod logs;
pub mod ovs;
pub mod qemu;
pub mod topology;

use std::path::PathBuf;

/// The workspace root (this crate lives in `images/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The bootable image: `$SLUICE_IMAGE`, else what `make image` writes.
pub fn image_path() -> PathBuf {
    std::env::var_os("SLUICE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images/sluice.elf"))
}

/// The disk image (GRUB + the ELF, BIOS and UEFI) that `make disk` writes.
pub fn disk_path() -> PathBuf {
    std::env::var_os("SLUICE_DISK")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images/sluice.qcow2"))
}

/// The unstripped image: what the log decoder and debuggers want.
pub fn debug_image_path() -> PathBuf {
    workspace_root().join("target/images/sluice.debug.elf")
}

/// A management query (`filter=tcp and port 80&count=5`) made fit for a
/// request line: a space becomes `+` (the endpoint splits filters on both),
/// `#` and anything else that is not visible ASCII becomes `%XX`, so the
/// line is never cut short and the endpoint answers for the words
/// themselves. `%` stays: a query the user encoded already passes as is.
pub fn encode_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for b in query.bytes() {
        match b {
            b' ' => out.push('+'),
            b'#' | 0..=0x20 | 0x7f..=0xff => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}
