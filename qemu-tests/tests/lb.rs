//! sluice as an L4 load balancer: a client namespace, and three (or four)
//! backend namespaces behind a bridge on the servers port, each running a
//! Python HTTP server that answers with its own name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice::topology::Netns;
use sluice_qemu_tests::*;

struct LbLab {
    lab: Lab,
    backends: Vec<Netns>,
    servers: Vec<Option<u32>>,
}

const TOKEN: &str = "lb-lab-token-90c3";
const INTERVAL: u64 = 1;
const FALL: u64 = 2;
const TIMEOUT: u64 = 1;

/// Backend i is 10.2.0.(11+i) with the given weight; `running` says whose
/// HTTP server starts now.
fn lb_lab(mode: &str, weights: &[u32], running: &[bool]) -> LbLab {
    let mut svc = format!(
        "service web {{\n  vip 10.1.0.1:80\n  mode {mode}\n  check http /healthz\n  interval {INTERVAL}\n  timeout {TIMEOUT}\n  rise 2\n  fall {FALL}\n"
    );
    for (i, w) in weights.iter().enumerate() {
        svc += &format!("  backend 10.2.0.{}:8000 weight {w}\n", 11 + i);
    }
    lab_with(svc, running)
}

/// The lab with service block `svc` (open: the lab closes it); backend i
/// is 10.2.0.(11+i), with its HTTP server on :8000 if `running[i]`.
fn lab_with(svc: String, running: &[bool]) -> LbLab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports = vec![
        PortSpec::new("client", "10.1.0.1/24", "10.1.0.2/24"),
        PortSpec::new("servers", "10.2.0.1/24", "10.2.0.2/24"),
        PortSpec::new("mgmt", "10.9.0.1/24", "10.9.0.2/24"),
    ];
    spec.token = Some(TOKEN.into());
    spec.extra_config = svc + "}\nmanagement mgmt listen 8080 token-file token\n";
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let servers = lab.port("servers");
    // A bridge in the servers namespace joins the tap and one veth per backend.
    let sns = &servers.ns;
    sns.exec(&["ip", "link", "add", "br0", "type", "bridge"]).unwrap();
    sns.exec(&["ip", "addr", "del", "10.2.0.2/24", "dev", &servers.tap.name]).unwrap();
    sns.exec(&["ip", "link", "set", &servers.tap.name, "master", "br0"]).unwrap();
    sns.exec(&["ip", "addr", "add", "10.2.0.2/24", "dev", "br0"]).unwrap();
    sns.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
    let mut backends = Vec::new();
    let mut pids = Vec::new();
    for (i, up) in running.iter().enumerate() {
        let (a, b) = (format!("{}b{i}", servers.tap.name), format!("{}c{i}", servers.tap.name));
        let addr = format!("10.2.0.{}", 11 + i);
        let ns = sns.veth_host(&format!("{}-b{i}", sns.name), &a, &b, &format!("{addr}/24"), true).unwrap();
        // DNAT mode: backends answer clients through the appliance.
        ns.exec(&["ip", "route", "add", "default", "via", "10.2.0.1"]).unwrap();
        pids.push(if *up { Some(serve(&ns, &addr, i)) } else { None });
        backends.push(ns);
    }
    route_via_appliance(lab.port("client"));
    LbLab { lab, backends, servers: pids }
}

fn serve(ns: &Netns, addr: &str, i: usize) -> u32 {
    ns.spawn(&["python3", &script("whoami_http.py"), addr, "8000", &format!("b{i}")]).unwrap()
}

impl LbLab {
    /// Waits until the console counters say `up` backends of `service`
    /// are healthy.
    fn wait_up_of(&mut self, service: &str, up: u64, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let stats = self.lab.vm.stats().unwrap();
            if stats.get(service, "backends_up") == up {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "not {up} backends of {service} up within {within:?}: {stats:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the console counters say `up` backends are healthy.
    fn wait_up(&mut self, up: u64, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let stats = self.lab.vm.stats().unwrap();
            eprintln!(
                "{:?} up={} b1 ok={} failed={}",
                start.elapsed(),
                stats.get("web", "backends_up"),
                stats.get("web/10.2.0.12:8000", "checks_ok"),
                stats.get("web/10.2.0.12:8000", "checks_failed")
            );
            if stats.get("web", "backends_up") == up {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "not {up} backends up within {within:?}: {stats:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `n` requests, each a new connection; counts answers per backend.
    fn spread(&self, n: usize) -> BTreeMap<String, usize> {
        let client = self.lab.port("client");
        let cmd = format!("for i in $(seq {n}); do curl -s --max-time 5 http://10.1.0.1/ || echo FAILED; done");
        let (_, out) = ns_run(client, &["sh", "-c", &cmd]);
        let mut counts = BTreeMap::new();
        for line in out.lines() {
            let who = line.split_whitespace().next().unwrap_or("?").to_string();
            *counts.entry(who).or_insert(0) += 1;
        }
        counts
    }
}

fn assert_weighted(counts: &BTreeMap<String, usize>, weights: &[u32], n: usize) {
    let total: u32 = weights.iter().sum();
    assert!(!counts.contains_key("FAILED"), "failed requests: {counts:?}");
    for (i, w) in weights.iter().enumerate() {
        let expected = n as f64 * *w as f64 / total as f64;
        let got = *counts.get(&format!("b{i}")).unwrap_or(&0) as f64;
        // Tolerance: ±10% of all requests (about 3.5 standard deviations
        // of a binomial count at n = 300).
        assert!((got - expected).abs() <= n as f64 * 0.10, "b{i}: {got} vs {expected:.0} expected; {counts:?}");
    }
}

fn weighted_spread(mode: &str) -> LbLab {
    let weights = [1, 2, 3];
    let mut l = lb_lab(mode, &weights, &[true, true, true]);
    l.wait_up(3, Duration::from_secs(20));
    let counts = l.spread(300);
    assert_weighted(&counts, &weights, 300);
    l
}

#[test]
fn full_nat_spreads_by_weight_and_backends_see_the_appliance() {
    let l = weighted_spread("full-nat");
    let (_, out) = ns_run(l.lab.port("client"), &["curl", "-s", "http://10.1.0.1/"]);
    assert!(out.contains(" saw 10.2.0.1:"), "full-NAT: backends see the appliance: {out}");
}

#[test]
fn dnat_spreads_by_weight_and_backends_see_the_client() {
    let l = weighted_spread("dnat");
    let (_, out) = ns_run(l.lab.port("client"), &["curl", "-s", "http://10.1.0.1/"]);
    assert!(out.contains(" saw 10.1.0.2:"), "DNAT: backends see the client: {out}");
}

#[test]
fn a_stopped_backend_is_marked_down_and_requests_keep_succeeding() {
    let mut l = lb_lab("full-nat", &[1, 1, 1], &[true, true, true]);
    l.wait_up(3, Duration::from_secs(20));
    let pid = l.servers[1].take().unwrap();
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    // Down within interval × fall, plus one check's timeout, plus slack for
    // a loaded CI machine (the time it took is printed).
    let took = l.wait_up(2, Duration::from_secs(INTERVAL * FALL + TIMEOUT + 8));
    eprintln!("backend marked down after {took:?}");
    let counts = l.spread(60);
    assert!(!counts.contains_key("FAILED") && !counts.contains_key("b1"), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 60);
    let stats = l.lab.vm.stats().unwrap();
    assert_eq!(stats.get("web/10.2.0.12:8000", "healthy"), 0, "{stats:?}");
    assert!(stats.get("web/10.2.0.12:8000", "transitions") >= 2, "up, then down: {stats:?}");
}

#[test]
fn a_long_lived_connection_survives_a_fourth_backend_joining() {
    let mut l = lb_lab("full-nat", &[1, 1, 1, 1], &[true, true, true, false]);
    l.wait_up(3, Duration::from_secs(20));
    // A slow streamed response (about 4 s) while backend 3 comes up.
    let client = l.lab.port("client");
    let stream = client.ns.command(&["curl", "-sS", "--max-time", "20", "http://10.1.0.1/slow"]).output();
    let handle = std::thread::spawn(move || stream);
    std::thread::sleep(Duration::from_millis(500));
    l.servers[3] = Some(serve(&l.backends[3], "10.2.0.14", 3));
    l.wait_up(4, Duration::from_secs(15));
    let out = handle.join().unwrap().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stream broke: {body}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(body.lines().count(), 20, "{body}");
    let first = body.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    assert!(body.lines().all(|l| l.starts_with(&first)), "one backend served the whole stream: {body}");
    // And the new backend now takes new flows.
    let counts = l.spread(80);
    assert!(counts.get("b3").copied().unwrap_or(0) > 0, "{counts:?}");
}

#[test]
fn all_backends_down_gets_a_reset() {
    let mut l = lb_lab("full-nat", &[1], &[false]);
    let client = l.lab.port("client");
    let (ok, out) = ns_run(client, &["curl", "-sS", "--max-time", "5", "http://10.1.0.1/"]);
    assert!(!ok);
    // curl reports a RST to its SYN as "Couldn't connect" (ECONNREFUSED),
    // at once rather than after its timeout.
    assert!(out.contains("Couldn't connect") || out.contains("Connection refused"), "{out}");
    let stats = l.lab.vm.stats().unwrap();
    assert!(stats.get("web", "no_backend") >= 1, "{stats:?}");
}

impl LbLab {
    /// PUTs the lab's config with `backends` (address, weight) instead of
    /// the ones it booted with; the response body.
    fn reload(&self, backends: &[(u8, u32)]) -> String {
        let text = std::fs::read_to_string(&self.lab.config_path).unwrap();
        let kept: String =
            text.lines().filter(|l| !l.trim_start().starts_with("backend ")).map(|l| format!("{l}\n")).collect();
        let lines: String = backends.iter().map(|(a, w)| format!("  backend 10.2.0.{a}:8000 weight {w}\n")).collect();
        let new = kept.replacen("  check http /healthz\n", &format!("  check http /healthz\n{lines}"), 1);
        let file = self.lab.config_path.with_extension(format!("reload{}", backends.len()));
        let (ok, out) = mgmt_put(self.lab.port("mgmt"), &file, TOKEN, new.as_bytes());
        assert!(ok, "reload refused: {out}");
        out
    }
}

#[test]
fn reloads_keep_flows_and_health_and_close_their_checks() {
    let mut l = lb_lab("full-nat", &[1, 1, 1], &[true, true, true, true]);
    l.wait_up(3, Duration::from_secs(20));
    let sockets = l.lab.vm.stats().unwrap().get("egress", "host_sockets");
    // A stream of about 8 s through the VIP while the pool changes.
    let client = l.lab.port("client");
    let stream = client.ns.command(&["curl", "-sS", "--max-time", "30", "http://10.1.0.1/slow?n=40"]).output();
    let handle = std::thread::spawn(move || stream);
    std::thread::sleep(Duration::from_millis(500));
    // A fourth backend joins and another is reweighted: the three that were
    // up stay up (they do not restart as down for rise x interval).
    let out = l.reload(&[(11, 1), (12, 2), (13, 1), (14, 1)]);
    assert!(out.contains("config applied"), "{out}");
    let stats = l.lab.vm.stats().unwrap();
    assert_eq!(stats.get("web", "backends_up"), 3, "health kept across the reload: {stats:?}");
    // Backend 14 drains (weight 0), then leaves; the others stay; ten times.
    for i in 0..10 {
        if i % 2 == 0 {
            l.reload(&[(11, 1), (12, 2), (13, 1), (14, 0)]);
        } else {
            l.reload(&[(11, 1), (12, 2), (13, 1)]);
        }
    }
    let out = handle.join().unwrap().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the stream broke across 11 reloads: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(body.lines().count(), 40, "{body}");
    let first = body.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    assert!(body.lines().all(|x| x.starts_with(&first)), "one backend served the whole stream: {body}");
    let stats = l.lab.vm.stats().unwrap();
    assert_eq!(stats.get("web", "backends_up"), 3, "{stats:?}");
    assert!(stats.get("lb", "maglev_rebuilds") <= 11, "{stats:?}");
    // Checks of removed backends were closed: no sockets piled up.
    let after = stats.get("egress", "host_sockets");
    assert!(after <= sockets + 4, "host sockets {sockets} -> {after} after 11 reloads");
    let counts = l.spread(30);
    assert!(!counts.contains_key("FAILED") && !counts.contains_key("b3"), "{counts:?}");
}

#[test]
fn a_udp_service_is_checked_on_an_http_port_of_its_backends() {
    // DNS-like: the VIP's :53 goes to each backend's :5353 (UDP), whose
    // health is its HTTP server's on :8000.
    let svc = format!(
        "service dns {{\n  vip 10.1.0.1:53 udp\n  check http /healthz port 8000\n  interval {INTERVAL}\n  timeout {TIMEOUT}\n  rise 2\n  fall {FALL}\n  backend 10.2.0.11:5353\n  backend 10.2.0.12:5353\n"
    );
    let mut l = lab_with(svc, &[true, true]);
    for (i, ns) in l.backends.iter().enumerate() {
        ns.spawn(&["python3", &script("udp_echo.py"), &format!("10.2.0.{}", 11 + i), "5353", &format!("u{i}")])
            .unwrap();
    }
    l.wait_up_of("dns", 2, Duration::from_secs(20));
    let ask = |l: &LbLab, ports: std::ops::Range<u16>| -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for p in ports {
            let (_, out) =
                ns_run(l.lab.port("client"), &["python3", &script("udp_client.py"), &p.to_string(), "10.1.0.1:53"]);
            let who = out.split_whitespace().next().unwrap_or("?").to_string();
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    };
    let seen = ask(&l, 41000..41020);
    assert_eq!(seen.get("u0").copied().unwrap_or(0) + seen.get("u1").copied().unwrap_or(0), 20, "{seen:?}");
    // Backend 1's health port stops answering: it goes down, its UDP
    // server still runs, and new queries all go to backend 0.
    let pid = l.servers[1].take().unwrap();
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    l.wait_up_of("dns", 1, Duration::from_secs(INTERVAL * FALL + TIMEOUT + 8));
    let seen = ask(&l, 42000..42010);
    assert_eq!(seen.get("u0").copied(), Some(10), "{seen:?}");
    let (_, show) = mgmt_curl(l.lab.port("mgmt"), Some(TOKEN), &[], "/show/backends");
    assert!(show.contains("http:8000"), "{show}");
}
