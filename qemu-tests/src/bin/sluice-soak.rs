//! `make soak`: the real image under mixed traffic for SOAK_SECONDS (600
//! by default) — a TCP stream (iperf3), a UDP flow, pings, fragmented
//! pings, five new connections a second through the load balancer's VIP,
//! malformed frames — through router, NAT and LB on every packet, with a
//! reload every 30 s. `/metrics` is sampled every 5 s (buffer pool, heap,
//! NAT sessions, LB flows) into target/soak/soak.csv and plotted to
//! target/soak/soak.png. Fails if the pool leaks (fewer free buffers at
//! rest after than before), or any established flow breaks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::lab::{Lab, LabSpec, PortSpec};
use sluice::qemu::Machine;

const TOKEN: &str = "soak-token-5e0b81";

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn config(extra: &str, weight: u32) -> String {
    format!(
        "nat {{\n  inside 10.0.0.0/24\n  outside wan\n}}\n\
         service web {{\n  vip 10.1.0.100:80\n  mode dnat\n  check http /\n  interval 1\n  backend 10.1.0.2:8000\n  backend 10.1.0.2:8001 weight {weight}\n}}\n\
         pipeline lan lb router nat\npipeline wan nat lb router\n\
         management mgmt listen 8080 token-file token metrics open\n{extra}"
    )
}

/// The samples we plot, from one scrape of /metrics.
fn sample(lab: &Lab) -> Option<[f64; 4]> {
    let out = lab.port("mgmt").ns.output(&["curl", "-sS", "--max-time", "5", "http://10.9.0.1:8080/metrics"]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    Some([
        get("sluice_pool_buffers_available")?,
        get("sluice_loop_heap_used_bytes").unwrap_or(0.0),
        get("sluice_stage_sessions{stage=\"nat\"}").unwrap_or(0.0),
        get("sluice_stage_flows{stage=\"lb\"}").unwrap_or(0.0),
    ])
}

fn reload(lab: &Lab, text: &str, n: usize) -> bool {
    sluice_qemu_tests::mgmt_put(
        lab.port("mgmt"),
        &lab.config_path.with_extension(format!("soak{n}")),
        TOKEN,
        text.as_bytes(),
    )
    .0
}

fn spawn(lab: &Lab, port: &str, cmd: &[&str]) -> Child {
    lab.port(port).ns.command(cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn main() {
    let secs: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports.push(PortSpec::new("mgmt", "10.9.0.1/24", "10.9.0.2/24"));
    spec.token = Some(TOKEN.into());
    spec.memory_mb = 64;
    let base = Lab::config_text(&spec);
    let configs =
        [format!("{base}{}", config("", 1)), format!("{base}{}", config("route 192.168.0.0/16 via 10.1.0.2\n", 2))];
    spec.config_override = Some(configs[0].clone());
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    lan.ns.exec(&["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    for p in ["8000", "8001"] {
        wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", p, &format!("b{p}")]).unwrap();
    }
    wan.ns.spawn(&["python3", &script("udp_echo.py"), "10.1.0.2", "9000", "far"]).unwrap();
    wan.ns.spawn(&["iperf3", "-s", "-B", "10.1.0.2"]).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let dir = std::path::PathBuf::from("target/soak");
    std::fs::create_dir_all(&dir).unwrap();
    let start_sample = sample(&lab).expect("metrics");
    eprintln!("soak: {secs} s; at rest before: {start_sample:?}");

    let t = secs.to_string();
    let iperf = spawn(&lab, "lan", &["iperf3", "-c", "10.1.0.2", "-t", &t, "-b", "20M", "-J"]);
    let udp = spawn(&lab, "lan", &["python3", &script("udp_steady.py"), "5353", "10.1.0.2:9000", &t]);
    let ping = spawn(&lab, "lan", &["ping", "-q", "-i", "0.2", "-w", &t, "10.1.0.2"]);
    let frag = spawn(&lab, "lan", &["ping", "-q", "-s", "3000", "-i", "1", "-w", &t, "10.1.0.2"]);
    let garbage = spawn(&lab, "lan", &["python3", &script("garbage.py"), &lan.tap.name, &lan.mac, &t]);
    let loop_cmd = format!(
        "end=$(($(date +%s)+{secs})); ok=0; bad=0; while [ $(date +%s) -lt $end ]; do \
         if curl -s --max-time 5 http://10.1.0.100/ >/dev/null; then ok=$((ok+1)); else bad=$((bad+1)); fi; sleep 0.2; done; \
         echo \"new connections ok $ok failed $bad\"; [ $bad -eq 0 ]"
    );
    let curls = spawn(&lab, "lan", &["sh", "-c", &loop_cmd]);

    let began = Instant::now();
    let mut rows = Vec::new();
    let (mut reloads, mut refused) = (0usize, 0usize);
    let mut next_reload = 30;
    while began.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        let at = began.elapsed().as_secs();
        if let Some(s) = sample(&lab) {
            rows.push((at, s));
        }
        if at >= next_reload {
            next_reload += 30;
            reloads += 1;
            if !reload(&lab, &configs[reloads % 2], reloads) {
                refused += 1;
            }
        }
    }
    let results = [
        ("iperf3 TCP stream", finish(iperf)),
        ("UDP flow", finish(udp)),
        ("ping", finish(ping)),
        ("fragmented ping", finish(frag)),
        ("malformed frames", finish(garbage)),
        ("new connections to the VIP", finish(curls)),
    ];
    // At rest again: every timer has fired, every buffer should be home.
    std::thread::sleep(Duration::from_secs(8));
    let end_sample = sample(&lab).expect("metrics");

    let mut csv = String::from("seconds,pool_available,heap_used_bytes,nat_sessions,lb_flows\n");
    for (at, s) in &rows {
        csv += &format!("{at},{},{},{},{}\n", s[0], s[1], s[2], s[3]);
    }
    std::fs::write(dir.join("soak.csv"), &csv).unwrap();
    let plot = Command::new("python3")
        .arg("-c")
        .arg(
            "import csv,sys\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\
             r=list(csv.DictReader(open(sys.argv[1])))\nt=[float(x['seconds']) for x in r]\n\
             f,ax=plt.subplots(4,1,sharex=True,figsize=(8,9))\n\
             for a,k,l in zip(ax,['pool_available','heap_used_bytes','nat_sessions','lb_flows'],['free buffers','heap used (bytes)','NAT sessions','LB flows']):\n\
             \ta.plot(t,[float(x[k]) for x in r]); a.set_ylabel(l); a.grid(True)\n\
             ax[-1].set_xlabel('seconds (reload every 30 s)')\nf.suptitle('sluice soak: router + NAT + LB under mixed traffic')\n\
             f.tight_layout(); f.savefig(sys.argv[2])\n",
        )
        .arg(dir.join("soak.csv"))
        .arg(dir.join("soak.png"))
        .status();
    let mut failed = false;
    for (what, (ok, out)) in &results {
        let line = out.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let summary = if *what == "iperf3 TCP stream" {
            out.lines().find(|l| l.contains("\"bits_per_second\"")).unwrap_or("").trim().to_string()
        } else {
            out.lines()
                .filter(|l| l.contains("packet loss") || l.contains("sent") || l.contains("new connections"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        eprintln!(
            "soak: {what}: {} {}",
            if *ok { "ok" } else { "FAILED" },
            if summary.is_empty() { line } else { &summary }
        );
        failed |= !ok && *what != "malformed frames";
    }
    let udp_out = &results[1].1 .1;
    let w: Vec<u64> = udp_out.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    if !(w.len() == 3 && w[1] * 100 >= w[0] * 98 && w[2] == 1) {
        eprintln!("soak: the UDP flow lost answers or changed its mapping: {udp_out}");
        failed = true;
    }
    eprintln!("soak: {reloads} reloads ({refused} refused); at rest after: {end_sample:?}");
    if end_sample[0] < start_sample[0] {
        eprintln!("soak: the buffer pool leaked: {} free before, {} after", start_sample[0], end_sample[0]);
        failed = true;
    }
    if refused > 0 {
        failed = true;
    }
    let heap_growth = end_sample[1] - start_sample[1];
    eprintln!(
        "soak: heap {} -> {} bytes ({heap_growth:+}); plot: {}",
        start_sample[1],
        end_sample[1],
        dir.join("soak.png").display()
    );
    if plot.map(|s| !s.success()).unwrap_or(true) {
        eprintln!("soak: plotting failed");
    }
    drop(lab);
    std::process::exit(if failed { 1 } else { 0 });
}
