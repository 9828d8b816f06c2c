//! The neighbour cache under a scan: an outside host sends to every
//! address of a connected prefix (none of which answers ARP), as a scan of
//! a /64 or a /24 does. The packets held for unresolved next hops must stay
//! within their share of the pool, so receive refill and forwarding go on.

use sluice_qemu_tests::*;

/// Sends 4 UDP datagrams to each of 10.0.0.3..=10.0.0.254, again and again
/// for `secs` seconds.
const SCAN: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for i in range(3, 255):
        for _ in range(4):
            s.sendto(b"scan", ("10.0.0.%d" % i, 9))
    time.sleep(0.05)
"#;

#[test]
fn a_scan_of_a_connected_prefix_holds_only_a_share_of_the_pool() {
    let mut lab = two_port_lab(Machine::Microvm);
    for p in &lab.ports {
        route_via_appliance(p);
    }
    let (ok, out) = ns_retry(lab.port("lan"), &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.1.0.2"], 20);
    assert!(ok, "{out}");
    let capacity = lab.vm.stats().unwrap().pool["capacity"];
    let cap = (capacity / 16 / 2).max(4);
    lab.port("wan").ns.spawn(&["python3", "-c", SCAN, "8"]).unwrap();
    // Held buffers: neither free nor posted to a receive ring.
    let mut most = 0;
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let s = lab.vm.stats().unwrap();
        most = most.max(s.pool["capacity"] - s.pool["available"] - s.pool["held_by_nics"]);
    }
    // Forwarding goes on during the scan.
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    assert!(ok && out.contains(" 0% packet loss"), "{out}");
    let stats = lab.vm.stats().unwrap();
    eprintln!("pool {capacity} buffers, neighbour share {cap}: at most {most} held during the scan");
    // A few more may be in flight between the rings and the stages.
    assert!(most <= cap + 64, "{most} buffers held, the share is {cap}: {stats:?}");
    assert!(stats.get("wan", "drop_neighbor_hold_full") > 0, "{stats:?}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
