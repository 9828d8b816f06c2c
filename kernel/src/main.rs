//! sluice: the appliance image.
//!
//! This file is the board: it says which platform pieces start, where the
//! config comes from, which NICs become which ports, and then runs the poll
//! loop forever. Everything that touches packets lives in `vnfs`; everything
//! that touches a device lives in `drivers`.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod boot;
mod clock;
mod configdrive;
mod console;
mod entropy;
mod fwcfg;
mod guard;
mod hal;
mod heap;
mod idt;
mod log;
mod mmio;
mod nics;
mod paging;
mod pci;
mod serial;
mod x86;

use alloc::string::String;
use alloc::vec::Vec;

use drivers::igb::sriov::VfService;
use drivers::igb::vf::Igbvf;
use drivers::poll::poll_once_timed;
use drivers::virtio::VirtioNet;
use drivers::Nic;
use virtio_drivers::transport::{SomeTransport, Transport};
use vnfs::config::{fmt_mac, Config};
use vnfs::dataplane::Dataplane;
use vnfs::packet::{sizing, PacketPool};

use crate::x86::{fail, Failure};

use nics::Port;

/// The config compiled into the image, used when none is given.
const EMBEDDED_CONFIG: &str = include_str!("../../images/configs/default.conf");
const FWCFG_CONFIG: &str = "opt/sluice/config";
/// Optional: the host file name, so errors name the file the user edited.
const FWCFG_CONFIG_NAME: &str = "opt/sluice/config-name";
/// Optional: the management bearer token (`token-file` in the config names
/// the host file the host tools put here). Never printed.
const FWCFG_TOKEN: &str = "opt/sluice/token";

/// The management token from fw_cfg, trimmed; `None` if absent or empty.
fn management_token() -> Option<String> {
    let text = fwcfg::FwCfg::probe()?.text(FWCFG_TOKEN)?;
    let t = text.trim();
    (!t.is_empty()).then(|| String::from(t))
}

/// Where the config came from: a name for error messages, and the text.
struct ConfigSource {
    name: String,
    text: String,
}

/// fw_cfg first, then a config drive (a FAT disk with SLUICE.CFG), then
/// the kernel command line after `--` (statements separated by `;`), then
/// the embedded default.
fn config_source(cmdline: &str) -> ConfigSource {
    if let Some(mut fw) = fwcfg::FwCfg::probe() {
        if let Some(text) = fw.text(FWCFG_CONFIG) {
            let name = fw
                .text(FWCFG_CONFIG_NAME)
                .map(|n| String::from(n.trim()))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| alloc::format!("fw_cfg:{FWCFG_CONFIG}"));
            return ConfigSource { name, text };
        }
    }
    if let Some((name, text)) = configdrive::read() {
        return ConfigSource { name, text };
    }
    if let Some((_, inline)) = cmdline.split_once("-- ") {
        return ConfigSource { name: "cmdline".into(), text: inline.into() };
    }
    ConfigSource { name: "embedded:default.conf".into(), text: EMBEDDED_CONFIG.into() }
}

/// Every NIC on the machine: virtio-net on PCI (bus order) then MMIO (slot
/// order). Each negotiates checksum offload and TCP segmentation if it
/// offers them and the command line does not say `offloads=off`; where a
/// super-packet from one goes out of a NIC without them, the egress cuts
/// it and completes its checksums in software. Then the Intel 82576 (igb)
/// physical functions on PCI (checksum offload and TSO on transmit), then
/// their virtual functions: those passed through, and those the config's
/// `nic PCI vfs N` enables here (their PF's mailbox is served from
/// `services`, which the poll loop keeps polling).
fn discover_nics(cmdline: &str, config: &Config, services: &mut Vec<VfService>) -> Vec<Port> {
    let mut nics = Vec::new();
    let sriov: Vec<((u8, u8, u8), u16)> = config
        .nics
        .iter()
        .filter(|n| n.vfs > 0)
        .map(|n| ((n.pci.bus, n.pci.device, n.pci.function), n.vfs as u16))
        .collect();
    let scan = pci::scan(&sriov);
    match scan.mechanism {
        "none" => println!("pci: no PCI bus here (microvm): NICs come from virtio-mmio"),
        m => println!(
            "pci: {} virtio-net, {} igb and {} igbvf function(s) found ({m} configuration access)",
            scan.transports.len(),
            scan.igb.len(),
            scan.igbvf.len()
        ),
    }
    for (df, err) in &scan.errors {
        println!("pci: {df}: {err}");
    }
    for n in &config.nics {
        let at = |df: &virtio_drivers::transport::pci::bus::DeviceFunction| {
            (df.bus, df.device, df.function) == (n.pci.bus, n.pci.device, n.pci.function)
        };
        let there = scan.igb.iter().any(|(df, _)| at(df)) || scan.igbvf.iter().any(|(df, _, _)| at(df));
        if !there {
            println!("config line {}: nic {}: no 82576 function at that address", n.line, n.pci);
        }
    }
    let transports: Vec<(String, SomeTransport<'static>)> = scan
        .transports
        .into_iter()
        .map(|(df, t)| (alloc::format!("pci {df}"), SomeTransport::from(t)))
        .chain(mmio::scan().into_iter().map(|(slot, t)| (alloc::format!("mmio slot {slot}"), SomeTransport::from(t))))
        .filter(|(_, t)| t.device_type() == virtio_drivers::transport::DeviceType::Network)
        .collect();
    // `offloads=off` on the command line or `options offloads off` in the
    // config (for images whose command line is fixed).
    let offloads = !cmdline.split_whitespace().any(|w| w == "offloads=off") && config.options.offloads;
    for (what, t) in transports {
        match VirtioNet::new(t, offloads) {
            Ok(nic) => {
                let (rx, tx) = nic.ring_sizes();
                println!(
                    "nic{}: virtio-net at {what}, mac {}, rings {rx}/{tx}, offloads {}",
                    nics.len(),
                    fmt_mac(&nic.mac()),
                    if nic.offloads() { "on" } else { "off" }
                );
                nics.push(Port::Virtio(nic));
            }
            Err(e) => println!("{what}: virtio-net not usable: {e}"),
        }
    }
    let setup = |df: &virtio_drivers::transport::pci::bus::DeviceFunction| {
        config.nics.iter().find(|n| (n.pci.bus, n.pci.device, n.pci.function) == (df.bus, df.device, df.function))
    };
    let vfs_of = |pf| scan.igbvf.iter().filter(move |(_, _, on)| *on == Some(pf)).count();
    for (df, bar0) in &scan.igb {
        let vfs = vfs_of(*df);
        // With VFs the PF's own queue is the pool after theirs.
        match drivers::igb::Igb::<hal::KernelHal>::new(*bar0, offloads, vfs, setup(df).and_then(|n| n.mac)) {
            Ok(nic) => {
                let (rx, tx) = nic.ring_sizes();
                println!(
                    "nic{}: igb (82576) at pci {df}, mac {}, rings {rx}/{tx}, offloads {}{}",
                    nics.len(),
                    fmt_mac(&nic.mac()),
                    if nic.offloads() { "on (transmit)" } else { "off" },
                    if vfs > 0 {
                        alloc::format!(", {vfs} VFs (pools 0-{}, its own {vfs})", vfs - 1)
                    } else {
                        "".into()
                    }
                );
                if vfs > 0 {
                    let serve = setup(df).is_none_or(|n| n.mailbox);
                    let macs: Vec<([u8; 6], bool)> = scan
                        .igbvf
                        .iter()
                        .filter(|(_, _, on)| *on == Some(*df))
                        .enumerate()
                        .map(|(i, (vf, _, _))| match setup(vf).and_then(|n| n.mac) {
                            Some(m) => (m, true),
                            None => (drivers::igb::sriov::default_vf_mac(nic.mac(), i), false),
                        })
                        .collect();
                    services.push(VfService::new(nic.regs(), &macs, serve));
                    if !serve {
                        println!("pci {df}: `mailbox off`: the VFs' reset will not be answered");
                    }
                }
                nics.push(Port::Igb(nic));
            }
            Err(e) => println!("pci {df}: igb not usable: {e}"),
        }
    }
    for (df, bar0, pf) in &scan.igbvf {
        let want = setup(df).and_then(|n| n.mac);
        let mut serve = || services.iter_mut().for_each(VfService::poll);
        match Igbvf::<hal::KernelHal>::new(*bar0, offloads, want, &clock::now_us, &mut serve) {
            Ok(nic) => {
                let (rx, tx) = nic.ring_sizes();
                let whose = match pf {
                    Some(pf) => alloc::format!("VF of pci {pf}"),
                    None => "passed through".into(),
                };
                println!(
                    "nic{}: igbvf (82576 VF) at pci {df} ({whose}), mac {}, rings {rx}/{tx}, offloads {}",
                    nics.len(),
                    fmt_mac(&nic.mac()),
                    if nic.offloads() { "on (transmit)" } else { "off" },
                );
                if nic.lpe_refused {
                    println!("pci {df}: the PF refused the VF's frame size (SET_LPE): it keeps the PF's limit");
                }
                nics.push(Port::Igbvf(nic));
            }
            Err(e) => println!("pci {df}: igbvf not usable: {e}"),
        }
    }
    nics
}

/// Matches config ports to NICs: a port with a MAC takes the NIC with that
/// MAC, the others take the remaining NICs in discovery order. Only NIC
/// ports bind (they come first); VLAN sub-ports and tunnels ride on them.
fn bind_ports(config: &Config, mut nics: Vec<Port>) -> Result<Vec<Port>, (u32, String)> {
    let found = nics.len();
    let nic_ports = &config.ports[..config.nic_count()];
    let mut slots: Vec<Option<Port>> = nic_ports.iter().map(|_| None).collect();
    for (i, p) in nic_ports.iter().enumerate() {
        if let Some(mac) = p.mac {
            let at = nics.iter().position(|n| n.mac() == mac).ok_or_else(|| {
                (p.line.0, alloc::format!("port `{}`: no NIC has MAC {} ({found} NIC(s) found)", p.name, fmt_mac(&mac)))
            })?;
            slots[i] = Some(nics.remove(at));
        }
    }
    let mut rest = nics.into_iter();
    for (i, p) in nic_ports.iter().enumerate() {
        if slots[i].is_none() {
            slots[i] = Some(rest.next().ok_or_else(|| {
                (p.line.0, alloc::format!("port `{}`: no NIC left for it ({found} NIC(s) found)", p.name))
            })?);
        }
    }
    Ok(slots.into_iter().map(|s| s.expect("every port bound above")).collect())
}

#[no_mangle]
extern "C" fn kmain(start_info: usize) -> ! {
    guard::init();
    serial::init();
    log::init();
    idt::init();
    let boot = boot::BootInfo::parse(start_info).unwrap_or_else(|e| {
        println!("sluice: {e}");
        fail(Failure::Startup)
    });
    let heap = heap::init(&boot.ram, boot.info).unwrap_or_else(|e| {
        println!("sluice: {e}");
        fail(Failure::Startup)
    });
    let (tsc_hz, pit_ok) = clock::calibrate();
    println!(
        "sluice {} ({}): heap {} KiB, TSC {} MHz{}",
        env!("CARGO_PKG_VERSION"),
        boot.protocol,
        heap / 1024,
        tsc_hz / 1_000_000,
        if pit_ok { "" } else { " (no PIT: assumed)" }
    );
    if !boot.cmdline.is_empty() {
        println!("cmdline: {}", boot.cmdline);
    }

    if boot.cmdline.split_whitespace().any(|w| w == "selftest=stack-overflow") {
        // Proves the guard page: this must end in a reported fault.
        println!("selftest: overflowing the kernel stack");
        println!("selftest: depth {}", overflow(0, &[0; 512]));
    }

    let t_platform = clock::now_us();
    let source = config_source(boot.cmdline);
    let config = match vnfs::registry::parse(&source.text) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                println!("{}", e.display(&source.name));
            }
            println!("sluice: config refused ({} error(s)); not starting", errors.len());
            fail(Failure::Startup)
        }
    };
    println!("config: {} ({} port(s))", source.name, config.ports.len());
    defmt::info!(
        "config {=str}: {=usize} ports, {=usize} routes, {=usize} stages",
        source.name.as_str(),
        config.ports.len(),
        config.routes.len(),
        config.stages.len()
    );

    let t_config = clock::now_us();
    let mut services = Vec::new();
    let mut nics =
        bind_ports(&config, discover_nics(boot.cmdline, &config, &mut services)).unwrap_or_else(|(line, msg)| {
            println!("{}:{line}:1: {msg}", source.name);
            fail(Failure::Startup)
        });

    // The tables the config asks for are allocated whole at start: refuse
    // clearly, before allocating, if the RAM cannot hold them.
    let tables = config.table_bytes();
    if !sizing::tables_fit(tables, heap::free()) {
        let mut parts = alloc::string::String::new();
        for s in &config.stages {
            let _ = core::fmt::Write::write_fmt(
                &mut parts,
                format_args!("{} {} KiB, ", s.name, s.config.table_bytes(&config) / 1024),
            );
        }
        println!(
            "{}: the tables this config asks for need {} KiB ({}neighbours {} KiB) but {} KiB of RAM is free: give the VM more memory (-m) or lower `sessions` / `flows` / `arp entries`",
            source.name,
            tables / 1024,
            parts,
            config.neighbor_table_bytes() / 1024,
            sizing::room_for_tables(heap::free()) / 1024
        );
        fail(Failure::Startup)
    }
    let t_nics = clock::now_us();
    let macs: Vec<[u8; 6]> = nics.iter().map(|n| n.mac()).collect();
    let token = management_token();
    if let (Some(m), None) = (&config.management, &token) {
        if m.token_file.is_some() {
            println!(
                "{}:{}:1: management asks for a token (token-file) but fw_cfg has no {FWCFG_TOKEN}: not starting without one",
                source.name, m.line
            );
            fail(Failure::Startup)
        }
    }
    if let (Some(m), Some(t)) = (&config.management, &token) {
        if let Err(why) = vnfs::mgmt::check_token(t.as_bytes()) {
            println!("{}:{}:1: {why}", source.name, m.line);
            fail(Failure::Startup)
        }
    }
    let (secret, entropy) = entropy::boot_secret(&source.text);
    println!("hash key: from {entropy}");
    let mut dp = Dataplane::new(&config, &macs, clock::now_us(), secret);
    dp.set_config_text(&source.text);
    dp.set_config_origin(&source.name);
    dp.set_management_token(token.as_deref().map(str::as_bytes));
    dp.set_clock(clock::now_us);
    dp.set_build_info(env!("CARGO_PKG_VERSION"), env!("SLUICE_GIT"));
    if config.management.is_some() {
        println!("management: {}", if token.is_some() { "token required" } else { "no token: reloads refused" });
    }
    dp.set_free_memory_probe(heap::free);
    for (i, nic) in nics.iter().enumerate() {
        dp.port_mut(i as u8).offloads = nic.offloads();
    }
    // Buffers: what the rings need, or what the RAM left after the tables
    // holds, each receive ring posting only its share of a small pool; a
    // pool too small for every ring is refused (vnfs::packet::sizing has
    // the rules).
    let t_pool = clock::now_us();
    // The management endpoint's buffers come out of a budget set aside
    // before the pool takes what is left: no request can take the heap
    // the data path needs.
    let mgmt_budget = if config.management.is_some() { vnfs::mgmt::budget_for(heap::free()) } else { 0 };
    dp.set_management_budget(mgmt_budget);
    let rings: Vec<sizing::Rings> = nics
        .iter()
        .map(|n| sizing::Rings { rx: n.rx_ring_entries(), total: n.ring_entries(), offloads: n.offloads() })
        .collect();
    let plan = sizing::plan(&rings, heap::free().saturating_sub(mgmt_budget)).unwrap_or_else(|e| {
        println!("{}: {e}", source.name);
        fail(Failure::Startup)
    });
    for (nic, &fill) in nics.iter_mut().zip(&plan.rx_fill) {
        nic.set_rx_fill(fill);
    }
    if plan.rx_fill.iter().zip(&rings).any(|(&f, r)| f < r.rx) {
        println!(
            "pool: {} buffers, fewer than the rings offer: receive rings get {:?}, {} kept for transmit, host stacks and chains",
            plan.buffers, plan.rx_fill, plan.kept
        );
    }
    let buffers = plan.buffers;
    let mut pool = PacketPool::with_tails(buffers, plan.tails);
    for (p, nic) in dp.ports().iter().zip(&nics) {
        let addr = p.address.map(|a| alloc::format!("{a}")).unwrap_or_else(|| "no address".into());
        println!("port {}: {} mac {} mtu {}", p.name, addr, fmt_mac(&nic.mac()), p.mtu);
        defmt::info!(
            "port {=str} up: {=str} mac {=[u8]:02x} mtu {=u16}",
            p.name.as_str(),
            addr.as_str(),
            nic.mac()[..],
            p.mtu
        );
    }
    for (p, pc) in dp.ports().iter().zip(&config.ports).skip(nics.len()) {
        let addr = p.address.map(|a| alloc::format!("{a}")).unwrap_or_else(|| "no address".into());
        let what = match &pc.kind {
            vnfs::config::PortKind::Vlan(v) if v.outer != 0 && v.outer_tpid != vnfs::vlan::TPID_8021AD => {
                alloc::format!("on {} vlan {} outer-vlan {} tpid {:#06x}", v.parent_name, v.vid, v.outer, v.outer_tpid)
            }
            vnfs::config::PortKind::Vlan(v) if v.outer != 0 => {
                alloc::format!("on {} vlan {} outer-vlan {}", v.parent_name, v.vid, v.outer)
            }
            vnfs::config::PortKind::Vlan(v) => alloc::format!("on {} vlan {}", v.parent_name, v.vid),
            vnfs::config::PortKind::Tunnel(t) => alloc::format!(
                "{} vni {} local {} remotes {}{}",
                t.proto.name(),
                t.vni,
                t.local,
                t.remotes.len(),
                if t.insertion { " (service insertion)" } else { "" }
            ),
            vnfs::config::PortKind::Nic => alloc::string::String::new(),
        };
        println!("port {}: {} {} mac {} mtu {}", p.name, addr, what, fmt_mac(&p.mac), p.mtu);
        defmt::info!("port {=str} up: {=str} {=str}", p.name.as_str(), addr.as_str(), what.as_str());
    }
    // Host stacks take their few buffers (and queue their announcements)
    // before the rings take every free one.
    dp.announce(&mut pool);
    for nic in &mut nics {
        nic.refill(&mut pool);
    }
    let t_ready = clock::now_us();
    println!(
        "sluice ready in {t_ready} us (platform {t_platform}, config {}, nics {}, tables {}, pool {}; {buffers} buffers, heap used {} KiB)",
        t_config - t_platform,
        t_nics - t_config,
        t_pool - t_nics,
        t_ready - t_pool,
        heap::used() / 1024
    );

    defmt::info!("sluice ready in {=u64} us", t_ready);
    // `virsh shutdown` and QMP system_powerdown press the ACPI power button.
    let power = match acpi::PowerButton::init(boot.rsdp) {
        Ok(pb) => {
            println!("acpi: power button handled (S5 on press)");
            Some(pb)
        }
        Err(why) => {
            println!("acpi: {why}: the power button is not handled");
            None
        }
    };
    let mut console = console::Console::new();
    let mut next_console = 0;
    let mut lp = console::LoopStats::default();
    loop {
        let t0 = x86::rdtsc();
        let now = clock::us_at(t0);
        let n = poll_once_timed(&mut nics, &mut dp, &mut pool, now, Some((x86::rdtsc, &mut lp.phases)));
        if n > 0 {
            lp.busy_turns += 1;
            lp.packets += n as u64;
            lp.busy_cycles += x86::rdtsc().wrapping_sub(t0);
        } else {
            lp.idle_turns += 1;
        }
        if now >= next_console {
            next_console = now + 1000;
            console::publish(&mut dp, &nics, &lp, &services);
            console.poll(&dp, &nics, &pool);
            // VFs' mailbox requests (resets, MAC and filter changes).
            for s in &mut services {
                s.poll();
            }
            while let Some(e) = dp.pop_event() {
                log_event(&e);
            }
            if power.as_ref().is_some_and(|p| p.pressed()) {
                println!("sluice: ACPI power button: powering off");
                defmt::info!("ACPI power button: powering off");
                if let Some(p) = &power {
                    p.power_off();
                }
            }
        }
    }
}

/// Dataplane events, to the defmt log.
fn log_event(e: &vnfs::dataplane::Event) {
    use vnfs::dataplane::Event;
    match e {
        Event::Reloaded { ok: true, .. } => defmt::info!("config reloaded"),
        Event::Reloaded { ok: false, why } => {
            println!("config reload refused: {why}");
            defmt::warn!("config reload refused: {=str}", why.as_str())
        }
        Event::Stage { stage, text } if stage == "ipv6" && text.contains("another node") => {
            // An address the operator gave is not in use: worth the console.
            println!("ipv6: {text}");
            defmt::warn!("{=str}: {=str}", stage.as_str(), text.as_str())
        }
        Event::Stage { stage, text } => defmt::info!("{=str}: {=str}", stage.as_str(), text.as_str()),
    }
}

/// Recurses until the stack runs out (for `selftest=stack-overflow`).
#[allow(unconditional_recursion)]
#[inline(never)]
fn overflow(depth: u64, pad: &[u8; 512]) -> u64 {
    let mine = core::hint::black_box([depth as u8; 512]);
    overflow(depth + 1, &mine) + pad[0] as u64
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("\nsluice: panic: {info}");
    fail(Failure::Panic)
}
