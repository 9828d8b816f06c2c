//! A lab: one sluice VM whose ports are taps, each in its own network
//! namespace with a Linux host address on the port's subnet. This is the
//! topology of `make run` and of the qemu-tests.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use crate::ovs::{Ovs, Switch};
use crate::qemu::{Accel, Ending, Machine, NicSpec, Vm, VmSpec};
use crate::topology::{run, sweep_stale, unique_id, Netns, Tap};

/// One appliance port and the Linux host beside it.
#[derive(Clone, Debug)]
pub struct PortSpec {
    pub name: String,
    /// The appliance's address on the port, CIDR.
    pub appliance: String,
    /// The namespace host's address, CIDR.
    pub host: String,
    /// More settings for the `port` statement, e.g. `mtu 1400`.
    pub extra: String,
    /// IPv6 addresses (CIDR) of the namespace host, added without
    /// duplicate address detection before the VM runs.
    pub host6: Vec<String>,
    /// The NIC offers checksum offload and segmentation (its tap carries
    /// virtio-net headers).
    pub offloads: bool,
    /// The QEMU NIC model (`igb`); `None`: the machine's virtio-net.
    pub model: Option<String>,
    /// The NIC sits behind its own PCIe root port (q35).
    pub root_port: bool,
}

impl PortSpec {
    pub fn new(name: &str, appliance: &str, host: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            appliance: appliance.into(),
            host: host.into(),
            extra: String::new(),
            host6: Vec::new(),
            offloads: true,
            model: None,
            root_port: false,
        }
    }

    /// Puts the port's NIC behind a PCIe root port, as libvirt does on q35.
    pub fn behind_root_port(mut self) -> PortSpec {
        self.root_port = true;
        self
    }

    pub fn with(mut self, extra: &str) -> PortSpec {
        self.extra = extra.into();
        self
    }

    /// Gives the namespace host an IPv6 address too.
    pub fn host6(mut self, cidr: &str) -> PortSpec {
        self.host6.push(cidr.into());
        self
    }

    /// The port's NIC is QEMU's `model` (`igb`) instead of virtio-net.
    pub fn model(mut self, model: &str) -> PortSpec {
        self.model = Some(model.into());
        self
    }
}

#[derive(Clone, Debug)]
pub struct LabSpec {
    pub machine: Machine,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub ports: Vec<PortSpec>,
    /// Namespace name per port; default `sluice-t<id>-<port>`.
    pub netns_names: Option<Vec<String>>,
    /// Replaces the generated config entirely (for tests of bad configs).
    pub config_override: Option<String>,
    /// Give the config on the kernel command line (`-- stmt; stmt`)
    /// instead of through fw_cfg.
    pub config_on_cmdline: bool,
    /// Statements appended to the generated config (routes, pipelines...).
    pub extra_config: String,
    pub memory_mb: u32,
    /// Words for the kernel command line ahead of any config (e.g.
    /// `offloads=off`).
    pub kernel_args: String,
    /// The management bearer token, handed to the image through fw_cfg
    /// (`opt/sluice/token`) as `sluice run` does with a `token-file`.
    pub token: Option<String>,
    /// What sits between the namespaces and the VM.
    pub switch: Switch,
    /// Give the config on a config drive (a FAT disk holding SLUICE.CFG,
    /// made with mtools) instead of fw_cfg, as a cloud gives user data.
    pub config_drive: bool,
    /// An initramfs for `kernel` (a Linux baseline booted in the same lab:
    /// then `kernel_args` is its command line and nothing says `sluice
    /// ready`).
    pub initrd: Option<PathBuf>,
}

impl LabSpec {
    /// Two ports, `lan` 10.0.0.0/24 and `wan` 10.1.0.0/24, on `machine`.
    pub fn two_ports(machine: Machine) -> Result<LabSpec, String> {
        Ok(LabSpec {
            machine,
            accel: Accel::from_env()?,
            kernel: crate::image_path(),
            ports: vec![
                PortSpec::new("lan", "10.0.0.1/24", "10.0.0.2/24"),
                PortSpec::new("wan", "10.1.0.1/24", "10.1.0.2/24"),
            ],
            netns_names: None,
            config_override: None,
            config_on_cmdline: false,
            kernel_args: String::new(),
            extra_config: String::new(),
            memory_mb: 64,
            token: None,
            switch: Switch::Tap,
            config_drive: false,
            initrd: None,
        })
    }
}

/// A port of a running lab.
pub struct LabPort {
    pub name: String,
    pub mac: String,
    /// The appliance's address (no prefix).
    pub appliance_ip: String,
    pub host_ip: String,
    /// The namespace host's interface on the port's link: the tap itself
    /// (switch `tap`), or a veth whose other end is an OVS port.
    pub tap: Tap,
    pub ns: Netns,
}

/// A running lab. Dropping it stops the VM, then removes taps and namespaces.
pub struct Lab {
    pub vm: Vm,
    pub ports: Vec<LabPort>,
    /// The OVS the ports go through (switch `ovs`, `ovs-dpdk`); dropped
    /// after the VM.
    pub ovs: Option<Ovs>,
    /// The VM's taps when OVS, not a namespace, holds them (deleted last).
    _switch_taps: Vec<Tap>,
    /// How the VM was started (for [`Lab::restart_vm`]).
    vm_spec: VmSpec,
    pub config_path: PathBuf,
    /// COM2 capture: the defmt log stream.
    pub log_path: PathBuf,
    /// The `sluice ready in N us` line.
    pub ready_line: String,
    dir: PathBuf,
}

/// How long boot may take before a test gives up (generous: TCG on a busy
/// 2-core machine, several VMs in parallel).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

impl Lab {
    /// The config sluice gets: one `port` per spec, bound by MAC.
    pub fn config_text(spec: &LabSpec) -> String {
        let mut s = String::from("# generated by the sluice lab\n");
        for (i, p) in spec.ports.iter().enumerate() {
            s += &format!("port {} mac {} address {} {}\n", p.name, mac(i), p.appliance, p.extra);
        }
        s += &spec.extra_config;
        s
    }

    /// Creates taps, boots the VM paused, moves each tap into its namespace,
    /// resumes the VM and waits for `sluice ready`.
    pub fn start(spec: &LabSpec) -> Result<Lab, Box<dyn Error>> {
        let lab = Self::boot(spec)?;
        Self::wait_ready(lab)
    }

    /// Like `start` but returns as soon as the VM runs, without waiting.
    pub fn boot(spec: &LabSpec) -> Result<Lab, Box<dyn Error>> {
        sweep_stale();
        let id = unique_id();
        let dir = std::env::temp_dir().join(format!("sluice-lab-{id}"));
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("sluice.conf");
        let text = spec.config_override.clone().unwrap_or_else(|| Self::config_text(spec));
        std::fs::write(&config_path, &text)?;

        let n = spec.ports.len();
        // The VM's side of each port: a tap (QEMU opens it), or a vhost-user
        // socket OVS-DPDK connects to.
        let mut taps = Vec::new();
        if spec.switch != Switch::OvsDpdk {
            for i in 0..n {
                taps.push(Tap::create(&format!("st{id}p{i}"))?);
            }
        }
        let sockets: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("vu{i}.sock"))).collect();
        let mut vm_spec = VmSpec::new(spec.kernel.clone(), spec.machine, spec.accel);
        vm_spec.memory_mb = spec.memory_mb;
        vm_spec.initrd = spec.initrd.clone();
        vm_spec.log_file = Some(dir.join("defmt.log"));
        if let Some(token) = &spec.token {
            let file = dir.join("token");
            std::fs::write(&file, token)?;
            vm_spec.token_file = Some(file);
        }
        if spec.config_drive {
            let img = dir.join("config-drive.img");
            run(&["mformat", "-C", "-f", "1440", "-v", "SLUICECFG", "-i", img.to_str().unwrap(), "::"])?;
            run(&["mcopy", "-i", img.to_str().unwrap(), config_path.to_str().unwrap(), "::SLUICE.CFG"])?;
            let device = if spec.machine == Machine::Microvm { "virtio-blk-device" } else { "virtio-blk-pci" };
            vm_spec.extra_args.extend([
                "-drive".into(),
                format!("file={},if=none,format=raw,id=cfgdrive,readonly=on", img.display()),
                "-device".into(),
                format!("{device},drive=cfgdrive"),
            ]);
            if !spec.kernel_args.is_empty() {
                vm_spec.cmdline = Some(spec.kernel_args.clone());
            }
        } else if spec.config_on_cmdline {
            let stmts: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
            vm_spec.cmdline = Some(format!("{} -- {}", spec.kernel_args, stmts.join("; ")));
        } else {
            vm_spec.config = Some((config_path.clone(), config_path.display().to_string()));
            if !spec.kernel_args.is_empty() {
                vm_spec.cmdline = Some(spec.kernel_args.clone());
            }
        }
        vm_spec.nics = spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let base = match taps.get(i) {
                    Some(t) => NicSpec::new(&t.name, &mac(i)),
                    None => NicSpec::vhost_user(&format!("vu{i}"), &mac(i), &sockets[i]),
                };
                NicSpec { offloads: p.offloads, model: p.model.clone(), root_port: p.root_port, ..base }
            })
            .collect();
        // OVS: one userspace-datapath bridge per port, holding the VM's
        // tap or vhost-user port and a veth to the port's namespace. Up
        // before QEMU: QEMU waits at start for its vhost-user backends.
        let mut ovs = match spec.switch {
            Switch::Tap => None,
            Switch::Ovs => Some(Ovs::start(&dir.join("ovs"), false)?),
            Switch::OvsDpdk => Some(Ovs::start(&dir.join("ovs"), true)?),
        };
        if let Some(o) = &mut ovs {
            for (i, socket) in sockets.iter().enumerate() {
                let bridge = format!("sb{id}{i}");
                o.add_bridge(&bridge)?;
                match taps.get(i) {
                    Some(t) => {
                        run(&["ip", "link", "set", &t.name, "up"])?;
                        o.add_port(&bridge, &t.name)?;
                    }
                    None => o.add_vhost_user(&bridge, &format!("vu{id}{i}"), socket)?,
                }
            }
        }
        let vm = Vm::start_paused(&vm_spec)?;

        let mut ports = Vec::new();
        let mut taps = taps.into_iter();
        let mut switch_taps = Vec::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let ns_name = match &spec.netns_names {
                Some(names) => names[i].clone(),
                None => format!("sluice-t{id}-{}", p.name),
            };
            let ns = Netns::create(&ns_name)?;
            let tap = match &mut ovs {
                None => {
                    // QEMU has the tap open (it opens netdevs before -S stops the CPU).
                    let mut tap = taps.next().expect("a tap per port");
                    tap.move_to(&ns, &p.host)?;
                    tap
                }
                Some(o) => {
                    let bridge = format!("sb{id}{i}");
                    switch_taps.extend(taps.next());
                    let (here, there) = (format!("st{id}o{i}"), format!("st{id}n{i}"));
                    run(&["ip", "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns.name])?;
                    run(&["ip", "link", "set", &here, "up"])?;
                    o.add_port(&bridge, &here)?;
                    if !p.host.is_empty() {
                        ns.exec(&["ip", "addr", "add", &p.host, "dev", &there])?;
                    }
                    ns.exec(&["ip", "link", "set", &there, "up"])?;
                    // OVS's userspace datapath does not complete partial
                    // checksums (FACTS.md): the host must not leave any.
                    ns.exec(&["ethtool", "-K", &there, "tx", "off"])?;
                    Tap::adopt(&there, &ns)
                }
            };
            for a in &p.host6 {
                ns.exec(&["ip", "-6", "addr", "add", a, "dev", &tap.name, "nodad"])?;
            }
            ports.push(LabPort {
                name: p.name.clone(),
                mac: mac(i),
                appliance_ip: p.appliance.split('/').next().unwrap().to_string(),
                host_ip: p.host.split('/').next().unwrap().to_string(),
                tap,
                ns,
            });
        }
        let log_path = dir.join("defmt.log");
        let lab = Lab {
            vm,
            ports,
            ovs,
            _switch_taps: switch_taps,
            vm_spec,
            config_path,
            log_path,
            ready_line: String::new(),
            dir,
        };
        lab.vm.resume()?;
        Ok(lab)
    }

    fn wait_ready(mut lab: Lab) -> Result<Lab, Box<dyn Error>> {
        lab.ready_line = lab.vm.wait_for("sluice ready", BOOT_TIMEOUT)?;
        Ok(lab)
    }

    /// Stops the VM and boots a new one on the same NICs (taps or
    /// vhost-user sockets) while the switch keeps running; waits for
    /// `sluice ready`. Returns how the old VM ended.
    pub fn restart_vm(&mut self) -> Result<Ending, Box<dyn Error>> {
        if self.ovs.is_none() {
            return Err("restart_vm needs an OVS switch (with `tap` the taps went into the namespaces)".into());
        }
        let ended = self.vm.quit()?;
        self.vm = Vm::start(&self.vm_spec)?;
        self.ready_line = self.vm.wait_for("sluice ready", BOOT_TIMEOUT)?;
        Ok(ended)
    }

    pub fn port(&self, name: &str) -> &LabPort {
        self.ports.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no lab port `{name}`"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // OVS keeps its database and sockets in the lab's directory.
        drop(self.ovs.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The MAC of NIC `i` in a lab.
pub fn mac(i: usize) -> String {
    format!("52:54:00:5c:00:{:02x}", i + 1)
}

/// The lab a config asks for: one port (and namespace) per config port, in
/// the config's order, each host on its port's subnet — at the address a
/// route names as its next hop when one does (so that namespace is the
/// upstream router), else the first free address. A port without an
/// address gets a host without one. VLAN sub-ports and tunnels get no
/// namespace of their own (their hosts sit behind a trunk or a VTEP).
pub fn ports_for(config: &vnfs::config::Config) -> Vec<PortSpec> {
    let taken: Vec<std::net::Ipv4Addr> = config.local_addresses();
    // NIC ports only: VLAN sub-ports and tunnels ride on them.
    config.ports[..config.nic_count()]
        .iter()
        .map(|p| {
            let Some(net) = p.address else {
                return PortSpec::new(&p.name, "", "");
            };
            let via = config.routes.iter().filter_map(|r| r.via).find(|v| net.contains(v) && *v != net.addr());
            let host = via.unwrap_or_else(|| {
                let base = u32::from(net.network());
                // The first 64k host addresses are plenty to find a free one.
                let hosts = (1u64 << (32 - net.prefix_len())).saturating_sub(2).clamp(1, 1 << 16) as u32;
                (1..hosts + 1)
                    .map(|i| std::net::Ipv4Addr::from(base + i))
                    .find(|a| *a != net.addr() && !taken.contains(a))
                    .unwrap_or(net.addr())
            });
            PortSpec::new(&p.name, &net.to_string(), &format!("{host}/{}", net.prefix_len()))
        })
        .collect()
}
