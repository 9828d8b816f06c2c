//! Hostile input on the real image: the management endpoint and the config
//! text, as an attacker or a careless operator would send them. Each test
//! failed (a crash, a stall, a lock-out) before the hardening it proves.

use std::time::Duration;

use sluice_qemu_tests::*;

const TOKEN: &str = "hardening-token-77d2";

fn mgmt_spec() -> LabSpec {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports.push(PortSpec::new("mgmt", "10.9.0.1/24", "10.9.0.2/24"));
    spec.extra_config = "management mgmt listen 8080 token-file token\n".into();
    spec.token = Some(TOKEN.into());
    spec
}

fn mgmt_lab() -> Lab {
    mgmt_lab_of(&mgmt_spec())
}

fn mgmt_lab_of(spec: &LabSpec) -> Lab {
    let lab = Lab::start(spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    route_via_appliance(lab.port("lan"));
    route_via_appliance(lab.port("wan"));
    // The endpoint answers before the tests start.
    let (ok, out) = ns_retry(lab.port("mgmt"), &["curl", "-sS", "--max-time", "3", "http://10.9.0.1:8080/health"], 40);
    assert!(ok, "{out}");
    lab
}

fn raw(lab: &Lab, request: &str) -> String {
    let (ok, out) = ns_run(lab.port("mgmt"), &["python3", &script("mgmt_raw.py"), "send", "10.9.0.1", "8080", request]);
    assert!(ok, "{out}");
    out
}

/// PUTs `body` with the token; (HTTP status, body).
fn put(lab: &Lab, body: &[u8]) -> (String, String) {
    let file = lab.config_path.with_extension(format!("put{}", body.len()));
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let (_, text) = mgmt_curl(
        lab.port("mgmt"),
        Some(TOKEN),
        &["-w", "\n%{http_code}", "-X", "PUT", "--data-binary", &data],
        "/config",
    );
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (status.to_string(), body.to_string())
}

fn health(lab: &Lab) -> String {
    let (ok, out) = ns_retry(lab.port("mgmt"), &["curl", "-sS", "--max-time", "5", "http://10.9.0.1:8080/health"], 20);
    assert!(ok, "{out}");
    out
}

fn still_forwards(lab: &Lab) {
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    assert!(ok, "forwarding stopped: {out}\n{}", lab.vm.console());
}

#[test]
fn content_length_cannot_crash_the_appliance() {
    let lab = mgmt_lab();
    // This request once wrapped the size check and halted the image.
    let out = raw(&lab, "GET /health HTTP/1.1\\r\\nContent-Length: 18446744073709551615\\r\\n\\r\\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw(&lab, "PUT /config HTTP/1.1\\r\\nContent-Length: 3\\r\\nContent-Length: 300\\r\\n\\r\\nabc");
    assert!(out.starts_with("HTTP/1.1 400"), "duplicate Content-Length: {out}");
    let out = raw(&lab, "PUT /config HTTP/1.1\\r\\nContent-Length: 999999999999\\r\\n\\r\\n");
    // Without the token: refused for that first, whatever the size.
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    let with_token = format!(
        "PUT /config HTTP/1.1\\r\\nAuthorization: Bearer {TOKEN}\\r\\nContent-Length: 999999999999\\r\\n\\r\\n"
    );
    let out = raw(&lab, &with_token);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(health(&lab).starts_with("ok\n"));
    still_forwards(&lab);
}

#[test]
fn hostile_config_bodies_are_refused_quickly_and_forwarding_goes_on() {
    let lab = mgmt_lab();
    // 20,000 nested blocks once overflowed the stack (recursive drop) and
    // triple-faulted the VM.
    let (status, body) = put(&lab, "port lan {\n".repeat(20_000).as_bytes());
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("blocks nest at most 4 deep"), "{body}");
    let (status, body) = put(&lab, "port lan {".repeat(20_000).as_bytes());
    assert_eq!(status, "400", "{body}");
    // 130k error lines (like the 131k that once made) an 18 MB answer after minutes of parsing.
    let (status, body) = put(&lab, &b"a\n".repeat(130_000));
    assert_eq!(status, "400", "{body}");
    assert!(body.contains("and 129900 more error(s)"), "{}", &body[body.len().saturating_sub(300)..]);
    // 100 errors of a few hundred bytes each, then a count: bounded.
    assert!(body.len() < 32 * 1024, "{} bytes of errors", body.len());
    let h = health(&lab);
    eprintln!("after 256 KiB of error lines: {}", h.trim().replace('\n', "; "));
    // The largest accepted body: ~250 KiB of /32 routes.
    let base = std::fs::read_to_string(&lab.config_path).unwrap();
    let mut text = base.clone();
    let mut i = 0u32;
    while text.len() < 250 * 1024 {
        text += &format!("route 172.16.{}.{}/32 via 10.1.0.2\n", i >> 8, i & 255);
        i += 1;
    }
    let (status, body) = put(&lab, text.as_bytes());
    assert_eq!(status, "200", "{body}");
    let h = health(&lab);
    eprintln!("after {} routes ({} bytes): {}", i, text.len(), h.trim().replace('\n', "; "));
    assert!(h.contains("last reload: "), "{h}");
    still_forwards(&lab);
}

#[test]
fn a_deeply_nested_boot_config_is_refused_not_a_reset() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.config_override = Some(format!("{}{}", Lab::config_text(&spec), "service x {\n".repeat(20_000)));
    let mut lab = Lab::boot(&spec).unwrap();
    let status = lab.vm.wait_exit(Duration::from_secs(120)).expect("VM did not exit");
    let console = lab.vm.console();
    assert_eq!(Ending::from(status), Ending::StartupRefused, "{console}");
    assert!(console.contains("blocks nest at most 4 deep"), "{console}");
}

#[test]
fn a_stack_overflow_is_a_reported_fault() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.kernel_args = "selftest=stack-overflow".into();
    let mut lab = Lab::boot(&spec).unwrap();
    let status = lab.vm.wait_exit(Duration::from_secs(60)).expect("VM did not exit");
    let console = lab.vm.console();
    assert!(console.contains("kernel stack overflow (the guard page below the stack was hit"), "{console}");
    assert_eq!(Ending::from(status), Ending::Panic, "a reported failure, not a reset: {console}");
}

#[test]
fn slow_clients_cannot_lock_the_endpoint_out() {
    let lab = mgmt_lab();
    let mgmt = lab.port("mgmt");
    // Six connections trickling a header byte a second: more than the
    // endpoint serves at once.
    let slow = mgmt.ns.command(&["python3", &script("mgmt_raw.py"), "trickle", "10.9.0.1", "8080", "6", "25"]).output();
    let slow = std::thread::spawn(move || slow);
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..3 {
        let (ok, out) = ns_run(mgmt, &["curl", "-sS", "--max-time", "5", "http://10.9.0.1:8080/health"]);
        assert!(ok && out.starts_with("ok\n"), "a new client was locked out: {out}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = slow.join().unwrap().unwrap();
    eprintln!("slow clients: {}", String::from_utf8_lossy(&out.stdout).trim());
    let (ok, m) = mgmt_curl(mgmt, Some(TOKEN), &[], "/metrics");
    assert!(ok, "{m}");
    let evicted = m.lines().find(|l| l.starts_with("sluice_mgmt_evicted_total")).unwrap_or("");
    assert!(!evicted.ends_with(" 0") && !evicted.is_empty(), "slow connections were closed for new ones: {evicted}");
}

#[test]
fn the_management_token_is_required_and_never_shown() {
    let lab = mgmt_lab();
    let mgmt = lab.port("mgmt");
    let code = |args: &[&str]| {
        let mut cmd = vec!["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"];
        cmd.extend_from_slice(args);
        ns_run(mgmt, &cmd).1
    };
    assert_eq!(code(&["http://10.9.0.1:8080/metrics"]), "401");
    assert_eq!(code(&["-H", "Authorization: Bearer wrong", "http://10.9.0.1:8080/config"]), "401");
    assert_eq!(code(&["-X", "PUT", "--data-binary", "port x", "http://10.9.0.1:8080/config"]), "401");
    assert_eq!(code(&["http://10.9.0.1:8080/health"]), "200");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(code(&["-H", &bearer, "http://10.9.0.1:8080/metrics"]), "200");
    let (_, config) = ns_run(mgmt, &["curl", "-s", "-H", &bearer, "http://10.9.0.1:8080/config"]);
    assert!(config.contains("token-file token") && !config.contains(TOKEN), "{config}");
    assert!(!lab.vm.console().contains(TOKEN), "the token is never printed");
    // `sluice reload` checks the file, then applies it with the token.
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("sluice");
    let file = lab.config_path.with_extension("reload");
    std::fs::write(
        &file,
        format!("{}route 192.168.0.0/16 via 10.1.0.2\n", std::fs::read_to_string(&lab.config_path).unwrap()),
    )
    .unwrap();
    let token = lab.config_path.with_extension("tok");
    std::fs::write(&token, TOKEN).unwrap();
    let (f, t) = (file.to_str().unwrap().to_string(), token.to_str().unwrap().to_string());
    let sluice_reload =
        || mgmt.ns.output(&[bin.to_str().unwrap(), "reload", "10.9.0.1:8080", &f, "--token-file", &t]).unwrap();
    let out = sluice_reload();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("lasts until the appliance restarts"));
    assert!(health(&lab).contains("config: PUT /config, reload 1"));
    // A reload may not open the management port to forwarding.
    std::fs::write(&file, format!("{}pipeline mgmt router\n", std::fs::read_to_string(&lab.config_path).unwrap()))
        .unwrap();
    let out = sluice_reload();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the management port: it forwards nothing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_reload_whose_tables_do_not_fit_is_refused_with_the_sizes() {
    let lab = mgmt_lab();
    let base = std::fs::read_to_string(&lab.config_path).unwrap();
    // A million neighbours once passed the check and exhausted the RAM.
    let (status, body) = put(&lab, format!("{base}arp entries 1048576\n").as_bytes());
    assert_eq!(status, "400", "{body}");
    assert!(
        body.contains("the new tables need") && body.contains("neighbours") && body.contains("running config stays"),
        "{body}"
    );
    still_forwards(&lab);
    // A comment above everything changes nothing that matters: accepted.
    let (status, body) = put(&lab, format!("# moved down a line\n{base}").as_bytes());
    assert_eq!(status, "200", "{body}");
}

#[test]
fn data_ports_cannot_reach_or_spoof_the_management_network() {
    let lab = mgmt_lab();
    let lan = lab.port("lan");
    let mgmt = lab.port("mgmt");
    route_via_appliance(mgmt);
    mgmt.ns.spawn(&["python3", "-m", "http.server", "9000", "--bind", "10.9.0.2"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = ns_run(lan, &["curl", "-sS", "--max-time", "3", "http://10.9.0.2:9000/"]);
    assert!(!ok, "a data port reached a host on the management network: {out}");
    // A packet from lan claiming the management address as its source.
    lan.ns.exec(&["ip", "addr", "add", "10.9.0.1/32", "dev", &lan.tap.name]).unwrap();
    let _ = ns_run(lan, &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "10.9.0.1", "10.1.0.2"]);
    let (ok, m) = mgmt_curl(mgmt, Some(TOKEN), &[], "/metrics");
    assert!(ok, "{m}");
    assert!(m.contains("sluice_port_drops_total{port=\"lan\",reason=\"source_wrong_port\"} 3"), "{m}");
}

#[test]
fn a_host_whose_source_address_is_on_its_loopback_can_reach_the_router() {
    // Linux asks ARP with the packet's source address (here one on `lo`,
    // outside the port's subnet); sluice once ignored such requests.
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = "route 192.168.77.0/24 via 10.0.0.2\n".into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let (lan, wan) = (lab.port("lan"), lab.port("wan"));
    route_via_appliance(wan);
    lan.ns.exec(&["ip", "addr", "add", "192.168.77.1/32", "dev", "lo"]).unwrap();
    lan.ns.exec(&["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.1", "src", "192.168.77.1"]).unwrap();
    let (ok, out) = ns_run(lan, &["ping", "-c", "3", "-i", "0.3", "-W", "2", "10.1.0.2"]);
    assert!(ok, "no answer through sluice from a loopback source: {out}\n{}", lab.vm.console());
    let (_, neigh) = ns_run(lan, &["ip", "neigh", "show", "10.0.0.1"]);
    assert!(neigh.contains(&lan.mac), "the host learned sluice's MAC: {neigh}");
}

#[test]
fn an_unauthenticated_flood_cannot_take_the_management_plane_away() {
    // The shape it was found in: a small VM, three virtio-mmio NICs, a NAT.
    let mut spec = mgmt_spec();
    spec.memory_mb = 16;
    spec.extra_config = format!("nat {{\n  inside 10.0.0.0/24\n  outside wan\n}}\n{}", spec.extra_config);
    let mut lab = mgmt_lab_of(&spec);
    // Pings through the NAT for the whole flood.
    let mut ping = lab.port("lan").ns.command(&["ping", "-c", "60", "-i", "0.5", "-W", "2", "10.1.0.2"]);
    let pinger = std::thread::spawn(move || ping.output());
    // And a capture of the most frames a capture takes, meanwhile.
    let pcap = lab.config_path.with_extension("pcap");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let mut capture = lab.port("mgmt").ns.command(&[
        "curl",
        "-sS",
        "--max-time",
        "40",
        "-o",
        pcap.to_str().unwrap(),
        "-w",
        "%{http_code}",
        "-H",
        &bearer,
        "http://10.9.0.1:8080/capture?port=lan&count=1000&seconds=15",
    ]);
    let capture = std::thread::spawn(move || capture.output());
    std::thread::sleep(Duration::from_secs(1));
    // Five clients at a time, three rounds, 256 KiB bodies, no token.
    let flood = ["python3", &script("mgmt_raw.py"), "flood", "10.9.0.1", "8080", "5", "3", "256"];
    let (ok, out) = ns_run(lab.port("mgmt"), &flood);
    assert!(ok, "{out}");
    eprintln!("flood answers: {}", out.trim().replace('\n', "; "));
    let health = ["curl", "-sS", "--max-time", "5", "http://10.9.0.1:8080/health"];
    let (ok, out) = ns_run(lab.port("mgmt"), &health);
    if !(ok && out.starts_with("ok\n")) {
        // What the appliance says of itself (pool, host stacks, drops).
        let _ = lab.vm.send("stats");
        std::thread::sleep(Duration::from_secs(2));
        panic!("/health after the flood: {out}\n{}", lab.vm.console());
    }
    let mgmt = lab.port("mgmt");
    let (ok, out) = ns_run(mgmt, &["ping", "-c", "3", "-i", "0.3", "-W", "2", "10.9.0.1"]);
    assert!(ok, "the management address does not answer ping after the flood: {out}");
    let cap = capture.join().unwrap().unwrap();
    let code = String::from_utf8_lossy(&cap.stdout).to_string();
    let frames = std::fs::read(&pcap).map(|b| b.len()).unwrap_or(0);
    eprintln!("capture during the flood: HTTP {code}, {frames} bytes");
    assert_eq!(code, "200", "{}", String::from_utf8_lossy(&cap.stderr));
    let ping = pinger.join().unwrap().unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.contains(" 0% packet loss"), "forwarding through the NAT stopped: {ping}");
    // An answer of many segments (it stalled when the host stack had no
    // buffers of its own).
    let (ok, m) = mgmt_curl(mgmt, Some(TOKEN), &[], "/metrics");
    if !ok {
        let _ = lab.vm.send("stats");
        std::thread::sleep(Duration::from_secs(2));
        panic!("/metrics after the flood: {m}\n{}", lab.vm.console());
    }
    for name in ["sluice_mgmt_unauthorized_total", "sluice_mgmt_rate_limited_total", "sluice_mgmt_over_budget_total"] {
        eprintln!("{}", m.lines().find(|l| l.starts_with(name)).unwrap_or(name));
    }
    // Refused for the token (before their size), and one source's 401s
    // are limited.
    let refused = m.lines().find(|l| l.starts_with("sluice_mgmt_unauthorized_total")).unwrap_or("");
    assert!(!refused.ends_with(" 0") && !refused.is_empty(), "{refused}");
}

#[test]
fn a_request_without_the_token_is_refused_before_its_body_arrives() {
    let lab = mgmt_lab();
    // A 200 KiB body announced, none sent: the 401 comes at once (it once
    // came only after the whole body had been read and held).
    let out = raw(&lab, "PUT /config HTTP/1.1\\r\\nContent-Length: 204800\\r\\n\\r\\n");
    assert!(out.starts_with("HTTP/1.1 401"), "{out:?}");
    assert!(health(&lab).starts_with("ok\n"));
}

#[test]
fn a_short_management_token_is_refused_at_start_with_its_length() {
    let mut spec = mgmt_spec();
    spec.token = Some("short-token".into());
    let mut lab = Lab::boot(&spec).unwrap();
    let status = lab.vm.wait_exit(Duration::from_secs(120)).expect("VM did not exit");
    let console = lab.vm.console();
    assert_eq!(Ending::from(status), Ending::StartupRefused, "{console}");
    assert!(console.contains("the management token is 11 bytes: at least 16 are needed"), "{console}");
    assert!(!console.contains("short-token"), "the token is never printed");
}
