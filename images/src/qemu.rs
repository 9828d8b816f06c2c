//! Booting the sluice image under QEMU and talking to its console.
//!
//! The console (COM1) is QEMU's stdio: a reader thread collects everything
//! the appliance prints, and commands (`stats`, `quit`, …) are written to its
//! stdin. QMP on a private socket lets a VM be started paused (so taps can be
//! moved into namespaces before the guest sends its first frame) and resumed.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which accelerator QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    /// `SLUICE_ACCEL=tcg|kvm|auto` (default auto). `auto` picks KVM only
    /// with real hardware virtualisation: on a nested kvm_pvm host, guest
    /// ring-0 code is emulated and TCG is much faster (FACTS.md).
    pub fn from_env() -> Result<Accel, String> {
        match std::env::var("SLUICE_ACCEL").as_deref().unwrap_or("auto") {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            "auto" | "" => Ok(Self::auto()),
            other => Err(format!("SLUICE_ACCEL={other}: expected tcg, kvm or auto")),
        }
    }

    pub fn auto() -> Accel {
        let kvm_usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
        let nested_pvm = Path::new("/sys/module/kvm_pvm").exists();
        if kvm_usable && !nested_pvm {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Machine type and firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// microvm, no firmware, virtio-mmio NICs.
    Microvm,
    /// q35 with qboot, virtio-net-pci NICs.
    Q35Qboot,
    /// q35 with SeaBIOS.
    Q35,
    /// i440fx with qboot.
    PcQboot,
    /// i440fx with SeaBIOS, booting the disk image (GRUB, multiboot2).
    PcDisk,
    /// q35 with OVMF (UEFI), booting the disk image.
    Q35UefiDisk,
    /// i440fx with SeaBIOS.
    Pc,
}

impl Machine {
    pub fn parse(s: &str) -> Option<Machine> {
        Some(match s {
            "microvm" => Machine::Microvm,
            "q35-qboot" => Machine::Q35Qboot,
            "q35" => Machine::Q35,
            "pc-qboot" => Machine::PcQboot,
            "pc" => Machine::Pc,
            "pc-disk" => Machine::PcDisk,
            "q35-uefi-disk" => Machine::Q35UefiDisk,
            _ => return None,
        })
    }

    fn args(self) -> Vec<String> {
        let v: &[&str] = match self {
            Machine::Microvm => &["-M", "microvm", "-global", "virtio-mmio.force-legacy=false"],
            Machine::Q35Qboot => &["-M", "q35", "-bios", "/usr/share/qemu/qboot.rom"],
            Machine::Q35 => &["-M", "q35"],
            Machine::PcQboot => &["-M", "pc", "-bios", "/usr/share/qemu/qboot.rom"],
            Machine::Pc | Machine::PcDisk => &["-M", "pc"],
            Machine::Q35UefiDisk => {
                &["-M", "q35", "-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"]
            }
        };
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Whether the machine boots the disk image rather than `-kernel`.
    pub fn boots_disk(self) -> bool {
        matches!(self, Machine::PcDisk | Machine::Q35UefiDisk)
    }

    fn nic_device(self) -> &'static str {
        match self {
            Machine::Microvm => "virtio-net-device",
            // No option ROM: sluice boots by -kernel, iPXE would only slow SeaBIOS.
            _ => "virtio-net-pci,romfile=",
        }
    }
}

/// One NIC: the tap QEMU opens and the MAC it gives the guest.
#[derive(Clone, Debug)]
pub struct NicSpec {
    pub tap: String,
    pub mac: String,
    /// `false`: the tap gets no virtio-net header (`vnet_hdr=off`), so the
    /// NIC offers no checksum offload or segmentation.
    pub offloads: bool,
    /// The QEMU device model (`igb`); `None`: the machine's virtio-net.
    pub model: Option<String>,
    /// Behind its own PCIe root port (as libvirt puts q35 NICs), not on bus 0.
    pub root_port: bool,
    /// A vhost-user socket QEMU serves (the backend, OVS-DPDK or testpmd,
    /// connects as the client) instead of the tap; the guest RAM is then
    /// shared memory the backend maps.
    pub vhost_user: Option<PathBuf>,
    /// Entries of the virtio rings (`rx_queue_size`/`tx_queue_size`);
    /// `None`: QEMU's default (256 on virtio-pci; virtio-mmio offers 1024
    /// anyway). A transmit ring above 256 needs vhost-user.
    pub ring: Option<u16>,
}

impl NicSpec {
    pub fn new(tap: &str, mac: &str) -> NicSpec {
        NicSpec {
            tap: tap.into(),
            mac: mac.into(),
            offloads: true,
            model: None,
            root_port: false,
            vhost_user: None,
            ring: None,
        }
    }

    /// A virtio-net NIC on vhost-user socket `socket` (`name` only names it).
    pub fn vhost_user(name: &str, mac: &str, socket: &Path) -> NicSpec {
        // 1024-entry rings, as OpenStack gives vhost-user ports: a burst
        // the vCPU is late for waits in the ring instead of being refused.
        NicSpec { vhost_user: Some(socket.to_path_buf()), ring: Some(1024), ..NicSpec::new(name, mac) }
    }
}

/// Everything needed to start one appliance VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mb: u32,
    pub nics: Vec<NicSpec>,
    /// Config file given through fw_cfg, with the name errors should show.
    pub config: Option<(PathBuf, String)>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// Start with the CPU stopped; [`Vm::resume`] starts it.
    pub paused: bool,
    /// Where COM2 (the defmt log stream) is written.
    pub log_file: Option<PathBuf>,
    /// An initramfs (for booting a Linux baseline with the same harness).
    pub initrd: Option<PathBuf>,
    /// `isa-debug-exit` (sluice's failures become QEMU's exit status); off
    /// to see what a machine without it (libvirt's) gets.
    pub debug_exit: bool,
    /// More QEMU arguments, as they are.
    pub extra_args: Vec<String>,
    /// A file holding the management token, given as fw_cfg
    /// `opt/sluice/token` (never on the command line, where `ps` shows it).
    pub token_file: Option<PathBuf>,
}

impl VmSpec {
    pub fn new(kernel: PathBuf, machine: Machine, accel: Accel) -> VmSpec {
        VmSpec {
            kernel,
            machine,
            accel,
            memory_mb: 64,
            nics: Vec::new(),
            config: None,
            cmdline: None,
            paused: false,
            log_file: None,
            initrd: None,
            debug_exit: true,
            extra_args: Vec::new(),
            token_file: None,
        }
    }

    /// The QEMU command line (also printed by `sluice run --dry-run`).
    pub fn command(&self, qmp: &Path) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let name = self.nics.first().map(|n| n.tap.as_str()).unwrap_or("sluice");
        c.args(self.machine.args());
        c.args(["-accel", self.accel.name(), "-m", &self.memory_mb.to_string()]);
        c.args(["-name", &format!("sluice-{name},debug-threads=on")]);
        c.args(["-nodefaults", "-no-reboot", "-display", "none", "-vga", "none"]);
        c.args(["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]);
        if self.debug_exit {
            c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        }
        c.args(&self.extra_args);
        if let Some(log) = &self.log_file {
            // COM2: the defmt stream (`sluice logs`).
            c.arg("-chardev").arg(format!("file,id=log,path={}", log.display()));
            c.args(["-device", "isa-serial,chardev=log,iobase=0x2f8,irq=3"]);
        }
        c.arg("-qmp").arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if self.machine.boots_disk() {
            // `snapshot=on`: the image file is never written.
            c.arg("-drive").arg(format!("file={},format=qcow2,if=virtio,snapshot=on", crate::disk_path().display()));
        } else {
            c.arg("-kernel").arg(&self.kernel);
            if let Some(initrd) = &self.initrd {
                c.arg("-initrd").arg(initrd);
            }
            if let Some(cmdline) = &self.cmdline {
                c.args(["-append", cmdline]);
            }
        }
        if let Some((file, name)) = &self.config {
            c.arg("-fw_cfg").arg(format!("name=opt/sluice/config,file={}", file.display()));
            c.arg("-fw_cfg").arg(format!("name=opt/sluice/config-name,string={}", name.replace(',', ",,")));
        }
        if let Some(token) = &self.token_file {
            c.arg("-fw_cfg")
                .arg(format!("name=opt/sluice/token,file={}", token.display().to_string().replace(',', ",,")));
        }
        if self.nics.iter().any(|n| n.vhost_user.is_some()) {
            // vhost-user backends read and write guest memory themselves.
            c.arg("-object").arg(format!("memory-backend-memfd,id=mem,size={}M,share=on", self.memory_mb));
            c.args(["-machine", "memory-backend=mem"]);
        }
        let mut igbs = 0;
        for (i, nic) in self.nics.iter().enumerate() {
            match &nic.vhost_user {
                Some(sock) => {
                    c.arg("-chardev").arg(format!("socket,id=vu{i},path={},server=on,wait=off", sock.display()));
                    c.arg("-netdev").arg(format!("vhost-user,id=n{i},chardev=vu{i}"));
                }
                None => {
                    let vnet_hdr = if nic.offloads { "" } else { ",vnet_hdr=off" };
                    c.arg("-netdev").arg(format!("tap,id=n{i},ifname={},script=no,downscript=no{vnet_hdr}", nic.tap));
                }
            }
            let device = match nic.model.as_deref() {
                // An igb PF reserves the slots 16 and 17 after its own for
                // its VFs (devfn + 0x80, stride 2): PFs at slots 8, 11, 14.
                Some("igb") => {
                    igbs += 1;
                    format!("igb,romfile=,addr=0x{:x}", 8 + 3 * (igbs - 1))
                }
                Some(m) => format!("{m},romfile="),
                None => self.machine.nic_device().to_string(),
            };
            let bus = if nic.root_port {
                c.arg("-device").arg(format!("pcie-root-port,id=rp{i},chassis={},slot={}", i + 1, i + 1));
                format!(",bus=rp{i}")
            } else {
                String::new()
            };
            let rings = nic.ring.map(|n| format!(",rx_queue_size={n},tx_queue_size={n}")).unwrap_or_default();
            c.arg("-device").arg(format!("{device},netdev=n{i},mac={}{bus}{rings}", nic.mac));
        }
        if self.paused {
            c.arg("-S");
        }
        c
    }
}

/// How a VM ended, in sluice's terms (isa-debug-exit status = code*2+1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// `quit` on the console: reset with -no-reboot, status 0.
    Clean,
    /// A panic or CPU exception: status 3.
    Panic,
    /// Config or platform refused at start: status 5.
    StartupRefused,
    /// Anything else (killed, QEMU error).
    Other(Option<i32>),
}

impl From<ExitStatus> for Ending {
    fn from(s: ExitStatus) -> Ending {
        match s.code() {
            Some(0) => Ending::Clean,
            Some(3) => Ending::Panic,
            Some(5) => Ending::StartupRefused,
            c => Ending::Other(c),
        }
    }
}

/// A failure while driving a VM, with the console so far.
#[derive(Debug)]
pub struct VmError {
    pub what: String,
    pub console: String,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n--- sluice console ---\n{}--- end of console ---", self.what, self.console)
    }
}

impl std::error::Error for VmError {}

#[derive(Default)]
struct ConsoleBuf {
    text: String,
    /// Streams (stdout, stderr) that reached end of file; the console is
    /// complete when both have.
    closed: u8,
}

/// A running appliance VM. Dropping it kills QEMU (by PID) and waits for it.
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<(Mutex<ConsoleBuf>, Condvar)>,
    qmp: PathBuf,
    dir: PathBuf,
    started: Instant,
    exit: Option<ExitStatus>,
}

impl Vm {
    /// Starts QEMU with the CPU stopped (`-S`) and returns once QMP answers:
    /// QEMU then has every tap open, so the caller may move them into
    /// namespaces (moved earlier, QEMU would create fresh ones in the root
    /// namespace) and then [`resume`](Self::resume).
    pub fn start_paused(spec: &VmSpec) -> Result<Vm, Box<dyn std::error::Error>> {
        let mut spec = spec.clone();
        spec.paused = true;
        let vm = Vm::start(&spec)?;
        vm.qmp("query-status")?;
        Ok(vm)
    }

    pub fn start(spec: &VmSpec) -> io::Result<Vm> {
        let (file, make) = if spec.machine.boots_disk() {
            (crate::disk_path(), "make disk")
        } else {
            (spec.kernel.clone(), "make image")
        };
        if !file.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no image at {} (run `{make}`)", file.display()),
            ));
        }
        let dir = std::env::temp_dir().join(format!("sluice-vm-{}", crate::topology::unique_id()));
        std::fs::create_dir_all(&dir)?;
        let qmp = dir.join("qmp.sock");
        let started = Instant::now();
        let mut child = spec
            .command(&qmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start qemu-system-x86_64: {e}")))?;
        let console = Arc::new((Mutex::new(ConsoleBuf::default()), Condvar::new()));
        for stream in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let console = console.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let s = String::from_utf8_lossy(&line).replace('\r', "");
                            let (m, cv) = &*console;
                            m.lock().unwrap().text.push_str(&s);
                            cv.notify_all();
                        }
                    }
                }
                let (m, cv) = &*console;
                m.lock().unwrap().closed += 1;
                cv.notify_all();
            });
        }
        let stdin = child.stdin.take();
        Ok(Vm { child, stdin, console, qmp, dir, started, exit: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the appliance printed so far.
    pub fn console(&self) -> String {
        self.console.0.lock().unwrap().text.clone()
    }

    fn error(&self, what: impl Into<String>) -> VmError {
        VmError { what: what.into(), console: self.console() }
    }

    /// Sends a QMP command (after the capabilities handshake).
    pub fn qmp(&self, command: &str) -> Result<String, VmError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match UnixStream::connect(&self.qmp) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(self.error(format!("QMP socket {}: {e}", self.qmp.display()))),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = BufReader::new(s.try_clone().map_err(|e| self.error(e.to_string()))?);
        let mut line = String::new();
        let mut read_reply = |r: &mut BufReader<UnixStream>| -> Result<String, VmError> {
            loop {
                line.clear();
                if r.read_line(&mut line).map_err(|e| self.error(format!("QMP: {e}")))? == 0 {
                    return Err(self.error("QMP closed"));
                }
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    return Ok(line.clone());
                }
            }
        };
        read_reply_greeting(&mut r).map_err(|e| self.error(format!("QMP: {e}")))?;
        writeln!(s, r#"{{"execute":"qmp_capabilities"}}"#).map_err(|e| self.error(e.to_string()))?;
        read_reply(&mut r)?;
        writeln!(s, r#"{{"execute":"{command}"}}"#).map_err(|e| self.error(e.to_string()))?;
        read_reply(&mut r)
    }

    /// Starts the CPU of a VM created paused.
    pub fn resume(&self) -> Result<(), VmError> {
        self.qmp("cont").map(|_| ())
    }

    /// Waits until the console shows `needle` at or after byte `from`;
    /// returns the line holding it. Fails if QEMU exits first.
    pub fn wait_for_from(&mut self, from: usize, needle: &str, timeout: Duration) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(i) = g.text.get(from..).and_then(|t| t.find(needle)) {
                let at = from + i;
                let start = g.text[..at].rfind('\n').map_or(0, |p| p + 1);
                let end = g.text[at..].find('\n').map_or(g.text.len(), |p| at + p);
                return Ok(g.text[start..end].to_string());
            }
            if g.closed == 2 {
                drop(g);
                let status = self.wait_exit(Duration::from_secs(5));
                return Err(
                    self.error(format!("QEMU exited ({}) before the console showed `{needle}`", describe(status)))
                );
            }
            let now = Instant::now();
            if now >= deadline {
                drop(g);
                return Err(self.error(format!("timed out after {timeout:?} waiting for `{needle}`")));
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, VmError> {
        self.wait_for_from(0, needle, timeout)
    }

    /// Length of the console text so far (a mark for `wait_for_from`).
    pub fn mark(&self) -> usize {
        self.console.0.lock().unwrap().text.len()
    }

    /// Writes one line to the appliance's console.
    pub fn send(&mut self, line: &str) -> Result<(), VmError> {
        let r = match &mut self.stdin {
            Some(s) => s.write_all(format!("{line}\n").as_bytes()).and_then(|_| s.flush()),
            None => Err(io::Error::other("console closed")),
        };
        r.map_err(|e| self.error(format!("writing `{line}` to the console: {e}")))
    }

    /// Asks for the counters and parses them.
    pub fn stats(&mut self) -> Result<Stats, VmError> {
        let mark = self.mark();
        self.send("stats")?;
        self.wait_for_from(mark, "stats end", Duration::from_secs(20))?;
        let text = self.console()[mark..].to_string();
        Ok(Stats::parse(&text))
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `quit` on the console; returns how the VM ended.
    pub fn quit(&mut self) -> Result<Ending, VmError> {
        self.send("quit")?;
        match self.wait_exit(Duration::from_secs(30)) {
            Some(s) => Ok(s.into()),
            None => Err(self.error("the VM did not exit after `quit`")),
        }
    }
}

fn read_reply_greeting(r: &mut BufReader<UnixStream>) -> io::Result<()> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.contains("QMP") {
        Ok(())
    } else {
        Err(io::Error::other(format!("unexpected QMP greeting: {line}")))
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "status unknown".into(),
        Some(s) => match Ending::from(s) {
            Ending::Clean => "clean shutdown".into(),
            Ending::Panic => "status 3: sluice panicked".into(),
            Ending::StartupRefused => "status 5: sluice refused to start".into(),
            Ending::Other(c) => format!("status {c:?}"),
        },
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Counters parsed from a `stats` dump: `stats port=NAME key=value ...`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ports: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    pub pool: std::collections::BTreeMap<String, u64>,
}

impl Stats {
    pub fn parse(text: &str) -> Stats {
        let mut s = Stats::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let kind = words.next();
            let kv: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
            match kind {
                // Ports by `port=`, stages by `name=`: one map of counter sets.
                Some("stats") | Some("nic") | Some("loop") | Some("stage") | Some("egress") | Some("lb-service")
                | Some("lb-backend") | Some("nd") | Some("tunnel") => {
                    let Some((_, port)) = kv.iter().find(|(k, _)| *k == "port" || *k == "name") else {
                        continue;
                    };
                    let entry = s.ports.entry(port.to_string()).or_default();
                    for (k, v) in &kv {
                        if let Ok(v) = v.parse() {
                            entry.insert(k.to_string(), v);
                        }
                    }
                }
                Some("pool") => {
                    for (k, v) in &kv {
                        if let Ok(v) = v.parse() {
                            s.pool.insert(k.to_string(), v);
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// A port's or a stage's counter (0 if absent: drop counters are printed
    /// when non-zero).
    pub fn get(&self, port: &str, key: &str) -> u64 {
        self.ports.get(port).and_then(|p| p.get(key)).copied().unwrap_or(0)
    }
}

/// CPU time (user + system, seconds) of each thread of process `pid`, with
/// the thread's name, from /proc (for the benches' host-CPU columns).
pub fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        // pid (comm) state ... field 14 utime, 15 stime (clock ticks, 100/s).
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.push((name, (ticks(11) + ticks(12)) / 100.0));
    }
    out
}
