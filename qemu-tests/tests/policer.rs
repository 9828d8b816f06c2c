//! The policer on the real image: iperf3 between namespaces through a
//! port policed at 10 Mbit/s.

use sluice_qemu_tests::*;

const RATE_BPS: f64 = 10_000_000.0;

fn policed_lab() -> Lab {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = "policer up {\n port lan\n rate 10mbit\n burst 128k\n}\n".into();
    let lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    lab
}

/// Runs an iperf3 client in lan against a one-shot server in wan and
/// returns the server's (receiver's) JSON summary fields.
fn iperf(lab: &Lab, client_args: &[&str]) -> (f64, u64) {
    let log = lab.config_path.parent().unwrap().join(format!("iperf-{}.json", client_args.len()));
    let _ = std::fs::remove_file(&log);
    let log_s = log.to_str().unwrap().to_string();
    lab.port("wan").ns.spawn(&["iperf3", "-s", "-1", "-B", "10.1.0.2", "-J", "--logfile", &log_s]).unwrap();
    wait_listening(lab.port("wan"), 5201);
    let mut args = vec!["iperf3", "-c", "10.1.0.2", "-t", "5"];
    args.extend_from_slice(client_args);
    let (ok, out) = ns_run(lab.port("lan"), &args);
    assert!(ok, "iperf3 client: {out}\n{}", lab.vm.console());
    // The one-shot server writes its JSON when the test ends.
    let mut json = String::new();
    for _ in 0..40 {
        json = std::fs::read_to_string(&log).unwrap_or_default();
        if json.trim_end().ends_with('}') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let py = "import json,sys; e=json.load(sys.stdin)['end']; \
              print(e['sum_received']['bits_per_second'], e.get('sum', {}).get('lost_packets', 0))";
    let out = std::process::Command::new("python3")
        .args(["-c", py])
        .stdin(std::fs::File::open(&log).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    let bps: f64 = w.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("iperf3 server JSON: {json}"));
    let lost: u64 = w.next().and_then(|v| v.parse::<f64>().ok()).map(|v| v as u64).unwrap_or(0);
    (bps, lost)
}

#[test]
fn udp_at_three_times_the_rate_is_cut_to_the_rate_and_tcp_adapts() {
    let mut lab = policed_lab();
    let (bps, lost) = iperf(&lab, &["-u", "-b", "30M", "-l", "1200"]);
    eprintln!("udp offered 30 Mbit/s, received {:.2} Mbit/s, {lost} lost", bps / 1e6);
    assert!((bps - RATE_BPS).abs() <= RATE_BPS * 0.10, "received {bps} bit/s, policed at {RATE_BPS}");
    let stats = lab.vm.stats().unwrap();
    let dropped = stats.get("up", "dropped");
    assert_eq!(stats.get("lan", "drop_policy"), dropped, "{stats:?}");
    assert_eq!(stats.get("up", "red_packets"), dropped, "violate drop: every red packet is dropped");
    // What iperf3 saw lost is what the policer dropped (give or take a few
    // lost elsewhere on a loaded machine).
    assert!(
        dropped > 0 && lost >= dropped * 95 / 100 && lost <= dropped + dropped / 20 + 20,
        "lost {lost}, dropped {dropped}"
    );
    // TCP backs off to the rate instead of collapsing.
    let (tcp, _) = iperf(&lab, &[]);
    eprintln!("tcp through the policer: {:.2} Mbit/s", tcp / 1e6);
    assert!(tcp <= RATE_BPS * 1.10 && tcp >= RATE_BPS * 0.3, "tcp {tcp} bit/s");
    // The other way is not policed.
    let stats = lab.vm.stats().unwrap();
    assert_eq!(stats.get("wan", "drop_policy"), 0);
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
