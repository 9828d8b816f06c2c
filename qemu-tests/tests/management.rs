//! The management endpoint on a dedicated port: Prometheus metrics that a
//! real parser accepts and that count what a test sent, health, config
//! reload under traffic (refused when bad, atomic when good), and no access
//! from data ports.

use std::time::Duration;

use sluice_qemu_tests::*;

/// The bearer token the management lab's endpoint requires.
const TOKEN: &str = "lab-token-4f1c9a";

fn mgmt_lab() -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports.push(PortSpec::new("mgmt", "10.9.0.1/24", "10.9.0.2/24"));
    spec.extra_config =
        "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\nmanagement mgmt listen 8080 token-file token\n".into();
    spec.token = Some(TOKEN.into());
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    route_via_appliance(lab.port("lan"));
    lab
}

fn get(lab: &Lab, path: &str) -> String {
    let mut last = (false, String::new());
    for _ in 0..20 {
        last = mgmt_curl(lab.port("mgmt"), Some(TOKEN), &["--fail-with-body"], path);
        if last.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(last.0, "GET {path}: {}", last.1);
    last.1
}

fn put_config(lab: &Lab, text: &str) -> (bool, String) {
    mgmt_put(lab.port("mgmt"), &lab.config_path.with_extension("new"), TOKEN, text.as_bytes())
}

/// Samples as the reference parser reads them: `name{labels} value` lines.
fn parsed_metrics(lab: &Lab) -> String {
    let text = get(lab, "/metrics");
    let mut child = std::process::Command::new("python3")
        .arg(script("prom_check.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn metrics_parse_and_count_what_was_sent() {
    let lab = mgmt_lab();
    let lan = lab.port("lan");
    // Exactly 4 frames of an unknown EtherType into lan.
    let dst = lan.mac.replace(':', "");
    let frame = format!("{dst}020000000001{}{}", "88b5", "00".repeat(46));
    let script_text = format!(
        "import socket,binascii\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\nfor _ in range(4):\n    s.send(binascii.unhexlify('{frame}'))\n",
        lan.tap.name
    );
    assert!(ns_run(lan, &["python3", "-c", &script_text]).0);
    let (ok, _) = ns_run(lan, &["ping", "-c", "3", "-i", "0.2", "10.0.0.1"]);
    assert!(ok);
    let m = parsed_metrics(&lab);
    assert!(m.contains("sluice_port_drops_total{port=\"lan\",reason=\"unknown_ethertype\"} 4\n"), "{m}");
    assert!(m.lines().any(|l| l.starts_with("sluice_port_local_packets_total{port=\"lan\"}")), "{m}");
    assert!(m.contains("sluice_stage_sessions{stage=\"nat\"} 0\n"), "{m}");
    assert!(get(&lab, "/health").starts_with("ok\nconfig: boot ("), "{}", get(&lab, "/health"));
    assert!(get(&lab, "/config").contains("management mgmt listen 8080"));
}

#[test]
fn metrics_pass_promtool() {
    let lab = mgmt_lab();
    let (ok, _) = ns_run(lab.port("lan"), &["ping", "-c", "2", "-i", "0.2", "10.0.0.1"]);
    assert!(ok);
    let text = get(&lab, "/metrics");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs prometheus)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");
    assert!(text.contains("\nsluice_build_info{version=\"0.1.0\",git=\""), "{text}");
    assert!(text.contains("\nsluice_uptime_seconds "), "{text}");
}

#[test]
fn management_is_not_reachable_from_data_ports() {
    let lab = mgmt_lab();
    for target in ["10.0.0.1", "10.9.0.1"] {
        let (ok, out) =
            ns_run(lab.port("lan"), &["curl", "-sS", "--max-time", "3", &format!("http://{target}:8080/metrics")]);
        assert!(!ok, "reached management at {target} from lan: {out}");
    }
    // It still works from the management port.
    get(&lab, "/health");
}

#[test]
fn reload_under_traffic_keeps_sessions_and_bad_reloads_change_nothing() {
    let lab = mgmt_lab();
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    let (ok, out) = ns_retry(lab.port("lan"), &["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8000/"], 40);
    assert!(ok, "{out}");
    // A long download through the NAT while the config changes twice.
    let stream = lab.port("lan").ns.command(&["curl", "-sS", "--max-time", "20", "http://10.1.0.2:8000/slow"]).output();
    let handle = std::thread::spawn(move || stream);
    std::thread::sleep(Duration::from_millis(600));
    let good = format!("{}route 192.168.0.0/16 via 10.1.0.2\n", std::fs::read_to_string(&lab.config_path).unwrap());
    let (ok, out) = put_config(&lab, &good);
    assert!(ok && out.contains("config applied"), "{out}");
    let (ok, out) = put_config(&lab, "port lan address 10.0.0.1/24\nroute 10.0.0.0/8 via 300.1.1.1\n");
    assert!(!ok, "{out}");
    assert!(out.contains("PUT /config:2:"), "the error names the line: {out}");
    let out = handle.join().unwrap().unwrap();
    assert!(out.status.success(), "the stream broke: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
    // The good config is the running one; the bad one changed nothing.
    assert!(get(&lab, "/config").contains("route 192.168.0.0/16 via 10.1.0.2"));
    let m = parsed_metrics(&lab);
    assert!(m.contains("sluice_config_reloads_total{} 1\n"), "{m}");
    // The defmt log on COM2, decoded with the image's ELF, tells the story.
    let log = sluice::logs::decode_file(&sluice::debug_image_path(), &lab.log_path).unwrap();
    let text = log.join("\n");
    assert!(text.contains("sluice ready in"), "{text}");
    assert!(text.contains("port lan up: 10.0.0.1/24"), "{text}");
    assert!(text.contains("config reloaded"), "{text}");
    assert!(text.contains("config reload refused"), "{text}");
}

#[test]
fn sluice_metrics_command_reads_the_endpoint() {
    let lab = mgmt_lab();
    get(&lab, "/health");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let out = lab.port("mgmt").ns.output(&[bin.to_str().unwrap(), "metrics", "10.9.0.1:8080"]).unwrap();
    assert!(!out.status.success(), "no token, no metrics");
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 401"), "{}", String::from_utf8_lossy(&out.stderr));
    let token = lab.config_path.with_extension("token");
    std::fs::write(&token, TOKEN).unwrap();
    let t = token.to_str().unwrap();
    let out =
        lab.port("mgmt").ns.output(&[bin.to_str().unwrap(), "metrics", "10.9.0.1:8080", "--token-file", t]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("# TYPE sluice_port_rx_packets_total counter"));
}

#[test]
fn show_views_from_the_endpoint_the_cli_and_the_console() {
    let mut lab = mgmt_lab();
    let wan = lab.port("wan");
    wan.ns.spawn(&["python3", &script("whoami_http.py"), "10.1.0.2", "8000", "far"]).unwrap();
    let (ok, out) = ns_retry(lab.port("lan"), &["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8000/"], 40);
    assert!(ok, "{out}");
    // The NAT's sessions, filtered by the server's address: the curl's.
    let s = get(&lab, "/show/sessions?addr=10.1.0.2&proto=tcp");
    assert!(s.lines().any(|l| l.starts_with("tcp ") && l.contains("10.0.0.2:") && l.contains("10.1.0.2:8000")), "{s}");
    let n = get(&lab, "/show/neighbors");
    assert!(n.contains("10.1.0.2") && n.contains("reachable"), "{n}");
    assert!(get(&lab, "/show/routes").contains("10.0.0.0/24"));
    assert!(get(&lab, "/show/ports").contains("wan"));
    // The same views as JSON, read by Python's parser.
    let check =
        "import json,sys\nd=json.load(sys.stdin)\nv=d['view']\nrows=[r for t in d['tables'] for r in t['rows']]\n\
                 assert (v!='ports') or any(r['port']=='wan' and isinstance(r['rx_packets'],int) for r in rows), d\n\
                 assert (v!='sessions') or any(r['proto']=='tcp' for r in rows), d\nprint(v, len(rows))";
    for view in ["ports", "neighbors", "routes", "stages", "sessions?proto=tcp&format=json"] {
        let path = if view.contains('?') { format!("/show/{view}") } else { format!("/show/{view}?format=json") };
        let body = get(&lab, &path);
        let out = std::process::Command::new("python3")
            .args(["-c", check])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "{path}: {}\n{body}", String::from_utf8_lossy(&out.stderr));
    }
    // `sluice show` on the host.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let token = lab.config_path.with_extension("token");
    std::fs::write(&token, TOKEN).unwrap();
    let out = lab
        .port("mgmt")
        .ns
        .output(&[
            bin.to_str().unwrap(),
            "show",
            "10.9.0.1:8080",
            "sessions",
            "proto=tcp",
            "--token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("10.1.0.2:8000"), "{out:?}");
    // The console has the same views.
    let mark = lab.vm.mark();
    lab.vm.send("show stages").unwrap();
    let line = lab.vm.wait_for("pipeline lan:", std::time::Duration::from_secs(10)).unwrap();
    assert!(line.contains("router nat"), "{line}\n{}", &lab.vm.console()[mark..]);
}

#[test]
fn oversized_and_malformed_requests_are_refused() {
    let lab = mgmt_lab();
    let mgmt = lab.port("mgmt");
    let (_, out) = ns_retry(
        mgmt,
        &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://10.9.0.1:8080/nope"],
        20,
    );
    assert_eq!(out, "401", "no token");
    let (_, out) = mgmt_curl(mgmt, Some(TOKEN), &["-o", "/dev/null", "-w", "%{http_code}"], "/nope");
    assert_eq!(out, "404");
    let big = lab.config_path.with_extension("big");
    std::fs::write(&big, vec![b'#'; 300 * 1024]).unwrap();
    // With the token (without it, the answer is a 401 before the size).
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (_, out) = ns_run(
        mgmt,
        &[
            "curl",
            "-H",
            &bearer,
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", big.display()),
            "http://10.9.0.1:8080/config",
        ],
    );
    assert_eq!(out, "413", "{out}");
    get(&lab, "/health");
}

#[test]
fn a_capture_of_the_wan_port_reads_in_tcpdump() {
    let lab = mgmt_lab();
    get(&lab, "/health");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let token = lab.config_path.with_extension("token");
    std::fs::write(&token, TOKEN).unwrap();
    // Start the capture (5 ICMP frames of wan, at most 20 s), then ping
    // through the NAT while it runs: `sluice capture … | tcpdump -nr -`.
    let pcap = lab.config_path.with_extension("pcap");
    let cmd = format!(
        "{} capture 10.9.0.1:8080 wan 'count=5&seconds=20&filter=icmp' --token-file {} > {}",
        bin.display(),
        token.display(),
        pcap.display()
    );
    let mgmt = lab.port("mgmt");
    let mut child = mgmt.ns.command(&["sh", "-c", &cmd]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "4", "-i", "0.3", "-W", "2", "10.1.0.2"]);
    assert!(ok, "{out}");
    let status = child.wait().unwrap();
    assert!(status.success(), "sluice capture failed");
    let out = std::process::Command::new("tcpdump").args(["-nr", pcap.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
    // On wan the NAT's address speaks to the far host, both ways.
    assert!(text.contains("10.1.0.1 > 10.1.0.2: ICMP echo request"), "{text}");
    assert!(text.contains("10.1.0.2 > 10.1.0.1: ICMP echo reply"), "{text}");
    assert_eq!(text.lines().count(), 5, "count=5: {text}");
    // A bad request is refused with the reason, and nothing keeps running.
    let (ok, body) = mgmt_curl(mgmt, Some(TOKEN), &["--fail-with-body"], "/capture?port=dmz");
    assert!(!ok && body.contains("capture needs `port=NAME`, one of: lan, wan, mgmt"), "{body}");
}

#[test]
fn sluice_trace_shows_a_ping_through_router_and_nat() {
    let lab = mgmt_lab();
    get(&lab, "/health");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let token = lab.config_path.with_extension("token");
    std::fs::write(&token, TOKEN).unwrap();
    // Resolve the far host first, so the traced packets are the pings.
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "1", "-W", "2", "10.1.0.2"], 20);
    assert!(ok, "{out}");
    let cmd = format!(
        "{} trace 10.9.0.1:8080 'count=2&port=lan&filter=icmp' --token-file {}",
        bin.display(),
        token.display()
    );
    let child = lab.port("mgmt").ns.command(&["sh", "-c", &cmd]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "2", "-i", "0.3", "-W", "2", "10.1.0.2"]);
    assert!(ok, "{out}");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("trace: 2 of 2 packets"), "{text}");
    // A ping out: routed to wan, then translated by the NAT; or its reply
    // coming back in through the NAT. Either way both stages show.
    assert!(text.contains("  router: ") && text.contains("  nat: "), "{text}");
    assert!(text.contains("10.1.0.1 > 10.1.0.2 icmp") || text.contains("10.1.0.2 > 10.0.0.2 icmp"), "{text}");
}
