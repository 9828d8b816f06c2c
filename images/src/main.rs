//! `sluice`: the host tool.
//!
//! - `sluice check FILE...` validates configs exactly as the image does and
//!   prints `file:line:column: reason` for every error.
//! - `sluice run [--machine M] [--config FILE]` boots the image with its
//!   ports on taps in network namespaces, shows the console, and removes
//!   everything when stopped (Ctrl-C or `quit`).
//! - `sluice metrics ADDRESS:PORT` prints a management endpoint's /metrics.
//! - `sluice reload ADDRESS:PORT FILE` checks FILE, then applies it with
//!   `PUT /config`.
//!
//! The management token comes from `--token-file F`, else `$SLUICE_TOKEN`.
//! - `sluice logs [--follow] CAPTURE` decodes the defmt stream from COM2.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::lab::{Lab, LabSpec};
use sluice::qemu::Machine;

const USAGE: &str = "usage:
  sluice --version                  the tool's version and git commit
  sluice check FILE...              validate config files
  sluice metrics ADDRESS:PORT [--token-file F]
                                    fetch /metrics from a management endpoint
  sluice show ADDRESS:PORT VIEW [QUERY] [--token-file F]
                                    GET /show/VIEW?QUERY: ports, neighbors, routes, tunnels,
                                    stages, sessions (addr=, port=, proto=, offset=,
                                    limit=), backends, flows (service=, addr=)
  sluice capture ADDRESS:PORT PORTNAME [QUERY] [--token-file F]
                                    a pcap of what the port receives and sends, to
                                    stdout (| tcpdump -nr -); QUERY: count=N (100,
                                    at most 1000), seconds=S (10, at most 60),
                                    filter=host A and port N and tcp|udp|icmp|arp
  sluice trace ADDRESS:PORT [QUERY] [--token-file F]
                                    POST /trace?QUERY (count=N: 10, at most 100;
                                    port=NAME: only what arrives there; filter= as
                                    for capture), then print the packets' paths
  sluice reload ADDRESS:PORT FILE [--token-file F]
                                    check FILE, then apply it (PUT /config); the
                                    token may also come from $SLUICE_TOKEN
  sluice logs [--follow] [--elf ELF] CAPTURE
                                    decode the defmt log stream (COM2) captured
                                    in CAPTURE, with the image's unstripped ELF
                                    (default target/images/sluice.debug.elf)
  sluice run [--machine M] [--config FILE] [--switch tap|ovs|ovs-dpdk]
                                    boot the appliance on taps in namespaces
                                    M: microvm (default), q35-qboot, q35, pc-qboot, pc,
                                       pc-disk, q35-uefi-disk (the qcow2 from make disk)
                                    --switch: what joins the namespaces to the VM:
                                       tap (default: each tap in its namespace),
                                       ovs (OVS userspace datapath, taps),
                                       ovs-dpdk (OVS-DPDK, vhost-user ports)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = |a: &String| a == "--help" || a == "-h";
    match args.first().map(String::as_str) {
        Some("--version" | "-V" | "version") => {
            println!("sluice {} (git {})", env!("CARGO_PKG_VERSION"), env!("SLUICE_GIT"));
            ExitCode::SUCCESS
        }
        // Asked for, the usage goes to stdout and is no error.
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(_) if args[1..].iter().any(help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("check") if args.len() > 1 => check(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("metrics") if args.len() >= 2 => metrics(&args[1], &args[2..]),
        Some("show") if args.len() >= 3 => show(&args[1], &args[2], &args[3..]),
        Some("capture") if args.len() >= 3 => capture(&args[1], &args[2], &args[3..]),
        Some("trace") if args.len() >= 2 => trace(&args[1], &args[2..]),
        Some("reload") if args.len() >= 3 => reload(&args[1], &args[2], &args[3..]),
        Some("logs") => logs(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check(files: &[String]) -> ExitCode {
    if let Some(opt) = files.iter().find(|f| f.starts_with('-')) {
        return usage(&format!("check: unknown option `{opt}`"));
    }
    let mut ok = true;
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                ok = false;
                continue;
            }
        };
        match vnfs::registry::parse(&text) {
            Ok(c) => {
                for (line, w) in c.warnings() {
                    eprintln!("{file}:{line}:1: warning: {w}");
                }
                println!("{file}: ok ({} port(s))", c.ports.len());
                print!("{}", pipelines(&c));
            }
            Err(errors) => {
                ok = false;
                for e in errors {
                    eprintln!("{}", e.display(file));
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `check` prints after `ok`: per input port, the stage instances in
/// the order packets meet them (a stage named apart from its kind says
/// its kind too), as the image will build them.
fn pipelines(c: &vnfs::config::Config) -> String {
    let mut out = String::new();
    for (i, p) in c.ports.iter().enumerate() {
        let stages: Vec<String> = c.pipelines[i]
            .iter()
            .map(|&k| {
                let s = &c.stages[k];
                if s.name == s.def.kind {
                    s.name.clone()
                } else {
                    format!("{}({})", s.name, s.def.kind)
                }
            })
            .collect();
        let what = if c.management.as_ref().is_some_and(|m| m.port == i) {
            "(management: forwards nothing)".to_string()
        } else if stages.is_empty() {
            "(none)".to_string()
        } else {
            stages.join(" ")
        };
        out.push_str(&format!("  pipeline {}: {what}\n", p.name));
    }
    out
}

fn run(args: &[String]) -> ExitCode {
    let mut machine = Machine::Microvm;
    let mut config: Option<String> = None;
    let mut switch = sluice::ovs::Switch::Tap;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--machine", Some(m)) => match Machine::parse(m) {
                Some(m) => machine = m,
                None => return usage(&format!("unknown machine `{m}`")),
            },
            ("--config", Some(f)) => config = Some(f.clone()),
            ("--switch", Some(w)) => match sluice::ovs::Switch::parse(w) {
                Some(w) => switch = w,
                None => return usage(&format!("unknown switch `{w}`: expected tap, ovs or ovs-dpdk")),
            },
            _ => return usage(&format!("unexpected argument `{a}`")),
        }
    }
    let mut spec = match LabSpec::two_ports(machine) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    spec.switch = switch;
    let mut parsed: Option<vnfs::config::Config> = None;
    if let Some(file) = &config {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                match vnfs::registry::parse(&text) {
                    Err(errors) => {
                        for e in errors {
                            eprintln!("{}", e.display(file));
                        }
                        return ExitCode::FAILURE;
                    }
                    Ok(c) => {
                        // The token file is read here, on the host, and
                        // reaches the image through fw_cfg.
                        if let Some(t) = c.management.as_ref().and_then(|m| m.token_file.as_ref()) {
                            let path = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new(".")).join(t);
                            match std::fs::read_to_string(&path) {
                                Ok(token) => {
                                    let token = token.trim().to_string();
                                    if let Err(why) = vnfs::mgmt::check_token(token.as_bytes()) {
                                        let line = c.management.as_ref().map_or(0, |m| m.line.0);
                                        eprintln!("{file}:{line}:1: {why} (token-file {})", path.display());
                                        return ExitCode::FAILURE;
                                    }
                                    spec.token = Some(token)
                                }
                                Err(e) => return usage(&format!("{}: token-file: {e}", path.display())),
                            }
                        }
                        // The lab follows the config: a namespace per port.
                        spec.ports = sluice::lab::ports_for(&c);
                        parsed = Some(c);
                    }
                }
                spec.config_override = Some(text);
            }
            Err(e) => return usage(&format!("{file}: {e}")),
        }
    }
    let names: Vec<String> = spec.ports.iter().map(|p| format!("sluice-{}", p.name)).collect();
    for ns in &names {
        // A previous run killed hard leaves these behind.
        if std::path::Path::new("/run/netns").join(ns).exists() {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
    spec.netns_names = Some(names);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    eprintln!(
        "booting {} ({:?}, {}, switch {}) ...",
        spec.kernel.display(),
        spec.machine,
        spec.accel.name(),
        spec.switch.name()
    );
    let mut lab = match Lab::start(&spec) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sluice run: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", lab.vm.console());
    let mut shown = lab.vm.mark();
    // Each namespace routes through the appliance, as a host on that
    // subnet would, so forwarding can be tried at once.
    for p in lab.ports.iter().filter(|p| !p.appliance_ip.is_empty()) {
        let _ = p.ns.exec(&["ip", "route", "replace", "default", "via", &p.appliance_ip]);
    }
    let me = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sluice".into());
    let servers = start_servers(&lab, parsed.as_ref());
    println!("\nsluice is up. Try, in another terminal:");
    for p in lab.ports.iter().filter(|p| !p.appliance_ip.is_empty()) {
        println!("  ip netns exec {} ping -c 3 {}        # port {}", p.ns.name, p.appliance_ip, p.name);
        println!("  ip netns exec {} arping -c 2 -I {} {}", p.ns.name, p.tap.name, p.appliance_ip);
    }
    // Through sluice: from an inside host out (when there is a NAT), else
    // between the first two ports with hosts.
    let mut addressed: Vec<&sluice::lab::LabPort> = lab.ports.iter().filter(|p| !p.host_ip.is_empty()).collect();
    if let Some(nat) = parsed.as_ref().and_then(|c| c.first::<vnfs::nat::NatConfig>()) {
        let outside = &lab.ports[nat.outside].name;
        addressed.sort_by_key(|p| {
            (
                &p.name == outside,
                !nat.inside.iter().any(|n| p.host_ip.parse::<std::net::Ipv4Addr>().is_ok_and(|a| n.contains(&a))),
            )
        });
        if let Some(i) = addressed.iter().position(|p| &p.name == outside) {
            let o = addressed.remove(i);
            addressed.insert(1.min(addressed.len()), o);
        }
    }
    if let [a, b, ..] = &addressed[..] {
        println!(
            "  ip netns exec {} ping -c 3 {}        # through sluice, {} to {}",
            a.ns.name, b.host_ip, a.name, b.name
        );
        println!("  ip netns exec {} tracepath -n {}      # sluice is the first hop", a.ns.name, b.host_ip);
    }
    for hint in &servers {
        println!("  {hint}");
    }
    if let Some(m) = parsed.as_ref().and_then(|c| c.management.as_ref()) {
        if let (Some(p), Some(ip)) = (lab.ports.get(m.port), parsed.as_ref().and_then(|c| c.ports[m.port].ip())) {
            let tf = if m.token_file.is_some() { " --token-file TOKENFILE" } else { "" };
            println!("  ip netns exec {} {me} show {ip}:{} sessions{tf}", p.ns.name, m.listen);
            println!("  ip netns exec {} {me} trace {ip}:{} 'count=5'{tf}", p.ns.name, m.listen);
        }
    }
    println!("  {me} logs --follow {}        # the defmt log (COM2)", lab.log_path.display());
    println!("Type console commands here (stats, help, quit); Ctrl-C stops and cleans up.\n");

    // Forward stdin lines to the console.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let code = loop {
        if stop.load(Ordering::SeqCst) {
            let _ = lab.vm.quit();
            break ExitCode::SUCCESS;
        }
        while let Ok(line) = rx.try_recv() {
            let _ = lab.vm.send(&line);
        }
        let text = lab.vm.console();
        if text.len() > shown {
            print!("{}", &text[shown..]);
            shown = text.len();
        }
        if let Some(status) = lab.vm.wait_exit(Duration::from_millis(100)) {
            // Give the console reader a moment, then show what is left.
            std::thread::sleep(Duration::from_millis(200));
            let text = lab.vm.console();
            print!("{}", &text[shown.min(text.len())..]);
            eprintln!("sluice exited: {status}");
            break if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
    };
    drop(lab);
    eprintln!("removed namespaces sluice-lan, sluice-wan and their taps");
    code
}

/// The token from `--token-file F` in `rest`, else `$SLUICE_TOKEN`.
/// What the config's services need on the hosts: an HTTP server at each
/// load-balancer backend (its address added to the namespace of the port
/// that reaches it) and one at the NAT's outside host; returns the hints.
fn start_servers(lab: &sluice::lab::Lab, config: Option<&vnfs::config::Config>) -> Vec<String> {
    let mut hints = Vec::new();
    let Some(c) = config else { return hints };
    let script = sluice::workspace_root().join("qemu-tests/scripts/whoami_http.py");
    let script = script.to_str().unwrap_or("whoami_http.py");
    let host_of = |port: usize| lab.ports.get(port).filter(|p| !p.host_ip.is_empty());
    if let Some(lb) = c.first::<vnfs::lb::LbConfig>() {
        // IPv4 services (the lab gives its hosts IPv4 addresses only).
        for svc in lb.services.iter().filter(|s| s.vip.is_ipv4()) {
            for (i, b) in svc.backends.iter().enumerate() {
                let Some(p) = host_of(b.via_port) else { continue };
                let prefix = c.ports[b.via_port].address.map_or(32, |a| a.prefix_len());
                let _ = p.ns.exec(&["ip", "addr", "add", &format!("{}/{prefix}", b.addr), "dev", &p.tap.name]);
                let name = format!("{}-backend{i}", svc.name);
                let _ = p.ns.spawn(&["python3", script, &b.addr.to_string(), &b.port.to_string(), &name]);
            }
            // A client on the VIP's side.
            if let Some(p) = c
                .ports
                .iter()
                .position(|p| p.address.is_some_and(|a| matches!(svc.vip, std::net::IpAddr::V4(v) if a.contains(&v))))
                .and_then(host_of)
            {
                hints.push(format!(
                    "ip netns exec {} curl -s http://{}:{}/        # service {}: a backend answers",
                    p.ns.name, svc.vip, svc.port, svc.name
                ));
            }
        }
    }
    if let Some(nat) = c.first::<vnfs::nat::NatConfig>() {
        if let Some(out) = host_of(nat.outside) {
            let _ = out.ns.spawn(&["python3", script, &out.host_ip, "8000", "outside"]);
            let inside = c
                .ports
                .iter()
                .position(|p| p.address.is_some_and(|a| nat.inside.iter().any(|n| n.contains(&a.addr()))));
            if let Some(p) = inside.and_then(host_of) {
                hints.push(format!(
                    "ip netns exec {} curl -s http://{}:8000/        # through the NAT: the server sees the pool address",
                    p.ns.name, out.host_ip
                ));
            }
        }
    }
    hints
}

/// An optional QUERY word (else `default`), then the token options.
fn query_and_token<'a>(rest: &'a [String], default: &'a str) -> Result<(&'a str, Option<String>), String> {
    let (query, rest) = match rest.first() {
        Some(q) if !q.starts_with("--") => (q.as_str(), &rest[1..]),
        _ => (default, rest),
    };
    Ok((query, token_from(rest)?))
}

fn token_from(rest: &[String]) -> Result<Option<String>, String> {
    match rest {
        [] => Ok(std::env::var("SLUICE_TOKEN").ok().filter(|t| !t.is_empty())),
        [flag, file] if flag == "--token-file" => {
            std::fs::read_to_string(file).map(|t| Some(t.trim().to_string())).map_err(|e| format!("{file}: {e}"))
        }
        _ => Err(format!("unexpected arguments: {}", rest.join(" "))),
    }
}

/// One HTTP/1.1 request to a management endpoint: (status, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8], token: Option<&str>) -> std::io::Result<(u16, String)> {
    http_bytes(addr, method, path, body, token, Duration::from_secs(30))
        .map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
}

/// The same, the body as bytes (a pcap file is not text).
fn http_bytes(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(out.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out[split..].to_vec()))
}

/// `sluice trace ADDR [QUERY]` (`count=N&port=NAME`): traces the next
/// packets through the stages and prints their paths when they have
/// passed (or after 30 s, what has).
fn trace(addr: &str, rest: &[String]) -> ExitCode {
    let (query, token) = match query_and_token(rest, "count=10") {
        Ok(qt) => qt,
        Err(e) => return usage(&e),
    };
    match http(addr, "POST", &format!("/trace?{}", sluice::encode_query(query)), b"", token.as_deref()) {
        Ok((200, _)) => {}
        other => return report("trace", addr, other),
    }
    let t = std::time::Instant::now();
    loop {
        let answer = http(addr, "GET", "/trace", b"", token.as_deref());
        let done = match &answer {
            Ok((200, body)) => body.lines().next().is_some_and(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 4 && w[1] == w[3]
            }),
            _ => true,
        };
        if done || t.elapsed() > Duration::from_secs(30) {
            return report("trace", addr, answer);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `sluice capture ADDR PORT [QUERY]`: a pcap of what port PORT receives
/// and sends, to stdout (`| tcpdump -nr -`).
fn capture(addr: &str, port: &str, rest: &[String]) -> ExitCode {
    let (query, token) = match query_and_token(rest, "") {
        Ok(qt) => qt,
        Err(e) => return usage(&e),
    };
    let q = sluice::encode_query(query);
    let path = if q.is_empty() { format!("/capture?port={port}") } else { format!("/capture?port={port}&{q}") };
    // A capture answers when it has its frames or its time is up (60 s at most).
    match http_bytes(addr, "GET", &path, b"", token.as_deref(), Duration::from_secs(75)) {
        Ok((200, body)) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if out.write_all(&body).and_then(|_| out.flush()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        // Not a pcap: the reason, as for every other command.
        other => report("capture", addr, other.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))),
    }
}

fn metrics(addr: &str, rest: &[String]) -> ExitCode {
    let token = match token_from(rest) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    report("metrics", addr, http(addr, "GET", "/metrics", b"", token.as_deref()))
}

fn show(addr: &str, view: &str, rest: &[String]) -> ExitCode {
    let (query, token) = match query_and_token(rest, "") {
        Ok(qt) => qt,
        Err(e) => return usage(&e),
    };
    let path = if query.is_empty() {
        format!("/show/{view}")
    } else {
        format!("/show/{view}?{}", sluice::encode_query(query))
    };
    report("show", addr, http(addr, "GET", &path, b"", token.as_deref()))
}

/// Prints a 200's body, else what went wrong; the exit code says which.
fn report(cmd: &str, addr: &str, answer: std::io::Result<(u16, String)>) -> ExitCode {
    match answer {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("sluice {cmd}: {addr} answered {status}:\n{body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sluice {cmd}: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reload(addr: &str, file: &str, rest: &[String]) -> ExitCode {
    let token = match token_from(rest) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return usage(&format!("{file}: {e}")),
    };
    // The same parser as the image: a bad file never leaves this machine.
    if let Err(errors) = vnfs::registry::parse(&text) {
        for e in errors {
            eprintln!("{}", e.display(file));
        }
        return ExitCode::FAILURE;
    }
    report("reload", addr, http(addr, "PUT", "/config", text.as_bytes(), token.as_deref()))
}

fn logs(args: &[String]) -> ExitCode {
    let mut follow = false;
    let mut elf = sluice::debug_image_path();
    let mut capture = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--follow" | "-f" => follow = true,
            "--elf" => match it.next() {
                Some(e) => elf = e.into(),
                None => return usage("--elf needs a file"),
            },
            other => capture = Some(std::path::PathBuf::from(other)),
        }
    }
    let Some(capture) = capture else { return usage("logs needs the capture file (COM2)") };
    let mut f = match std::fs::File::open(&capture) {
        Ok(f) => f,
        Err(e) => return usage(&format!("{}: {e}", capture.display())),
    };
    match sluice::logs::decode(&elf, &mut f, follow, &|| false, &mut |line| println!("{line}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice logs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("sluice: {msg}\n{USAGE}");
    ExitCode::from(2)
}
