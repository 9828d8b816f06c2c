//! Checksum offload and TCP segmentation: bulk TCP through the NAT as 64 KiB
//! super-packets (Linux's TSO on the taps), with the bytes checked end to end,
//! and the software fallback where one NIC has no offloads: the egress cuts
//! the segments and completes the checksums, which the receiving Linux then
//! verifies.

use sluice_qemu_tests::*;

/// lan (inside) + wan (outside) through a NAT; `wan_offloads: false` gives
/// the wan NIC a tap without virtio-net headers.
fn nat_lab(wan_offloads: bool) -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.ports[1].offloads = wan_offloads;
    spec.extra_config = "nat {\n  inside 10.0.0.0/24\n  outside wan\n}\n".into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    route_via_appliance(lab.port("lan"));
    lab
}

/// Writes `mb` MiB of random bytes to `path`.
fn random_file(path: &std::path::Path, mb: usize) -> std::path::PathBuf {
    let ok = std::process::Command::new("dd")
        .args(["if=/dev/urandom", &format!("of={}", path.display()), "bs=1M", &format!("count={mb}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "dd");
    path.to_path_buf()
}

/// A file of `mb` MiB of random bytes served over HTTP from the wan host;
/// returns its SHA-256.
fn serve_file(lab: &Lab, mb: usize) -> String {
    let dir = lab.config_path.parent().unwrap().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    let file = random_file(&dir.join("blob"), mb);
    let wan = lab.port("wan");
    let d = dir.display().to_string();
    wan.ns.spawn(&["python3", "-m", "http.server", "8000", "--bind", "10.1.0.2", "--directory", &d]).unwrap();
    sha256(&file.display().to_string())
}

fn sha256(path: &str) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// Downloads the served file from the lan host through the NAT; returns
/// its SHA-256.
fn download(lab: &Lab) -> String {
    let out = lab.config_path.parent().unwrap().join("downloaded");
    let o = out.display().to_string();
    let lan = lab.port("lan");
    let (ok, text) = ns_retry(lan, &["curl", "-sS", "--max-time", "60", "-o", &o, "http://10.1.0.2:8000/blob"], 3);
    assert!(ok, "curl: {text}");
    sha256(&o)
}

/// Sends `mb` MiB of random bytes from the lan host to a sink on the wan
/// host through the NAT; asserts the sink got exactly those bytes.
fn upload(lab: &Lab, mb: usize) {
    let dir = lab.config_path.parent().unwrap();
    let file = random_file(&dir.join("upload"), mb);
    let f = file.display().to_string();
    let want = format!("{} {}", mb << 20, sha256(&f));
    lab.port("wan").ns.spawn(&["python3", &script("tcp_sink.py"), "10.1.0.2", "9000"]).unwrap();
    let (ok, out) = ns_run(lab.port("lan"), &["python3", &script("tcp_send.py"), "10.1.0.2", "9000", &f]);
    assert!(ok, "tcp_send: {out}");
    assert_eq!(out.trim(), want, "the sink got other bytes");
}

/// TCP segments the wan host's kernel refused for a bad checksum.
fn tcp_checksum_errors(lab: &Lab) -> u64 {
    let (_, snmp) = ns_run(lab.port("wan"), &["cat", "/proc/net/snmp"]);
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "InCsumErrors").expect("InCsumErrors");
    values[i].parse().unwrap()
}

#[test]
fn bulk_tcp_crosses_the_nat_as_super_packets() {
    let mut lab = nat_lab(true);
    let want = serve_file(&lab, 16);
    assert_eq!(download(&lab), want, "the downloaded file differs");
    upload(&lab, 20);
    let s = lab.vm.stats().unwrap();
    for port in ["lan", "wan"] {
        assert_eq!(s.get(port, "offloads"), 1, "{port}: {s:?}");
    }
    // Both directions carried super-packets in and out.
    assert!(s.get("lan", "rx_large") > 0 && s.get("wan", "tx_large") > 0, "upload: {s:?}");
    assert!(s.get("wan", "rx_large") > 0 && s.get("lan", "tx_large") > 0, "download: {s:?}");
    assert!(s.get("egress", "large_sent") > 0, "{s:?}");
    assert_eq!(s.get("egress", "segments_cut"), 0, "{s:?}");
    assert!(s.get("nat", "translated_out") > 0, "{s:?}");
}

#[test]
fn super_packets_are_cut_in_software_for_a_nic_without_offloads() {
    let mut lab = nat_lab(false);
    let want = serve_file(&lab, 4);
    upload(&lab, 20);
    assert_eq!(download(&lab), want, "the downloaded file differs");
    let s = lab.vm.stats().unwrap();
    assert_eq!((s.get("lan", "offloads"), s.get("wan", "offloads")), (1, 0), "{s:?}");
    assert!(s.get("lan", "rx_large") > 0, "{s:?}");
    // Cut here, with checksums completed here: the wan kernel verified them.
    assert!(s.get("egress", "segments_cut") > 1000, "{s:?}");
    assert_eq!(tcp_checksum_errors(&lab), 0);
    assert_eq!(s.get("wan", "tx_large") + s.get("wan", "tx_bad_offload"), 0, "{s:?}");
}
