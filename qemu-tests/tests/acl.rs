//! The ACL on the real image: a stateful filter on both ports, with curl,
//! ping and a Python HTTP server in namespaces on either side.

use sluice_qemu_tests::*;

#[test]
fn a_stateful_acl_admits_what_its_rules_permit_and_the_replies_only() {
    let mut spec = LabSpec::two_ports(Machine::Microvm).unwrap();
    spec.extra_config = "acl fw {\n port lan wan\n stateful\n rule permit tcp src 10.0.0.0/24 dport 8080\n \
                         rule reject tcp dport 8081\n rule permit icmp src 10.0.0.0/24 type 8\n default deny\n}\n"
        .into();
    let mut lab = Lab::start(&spec).unwrap_or_else(|e| panic!("lab did not start: {e}"));
    for p in &lab.ports {
        route_via_appliance(p);
    }
    let www = lab.config_path.parent().unwrap().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hi.txt"), "past the acl\n").unwrap();
    // A server on 8081 too: its port is rejected, so any refusal is sluice's.
    for (port, ns) in [("8080", "wan"), ("8081", "wan"), ("8080", "lan")] {
        let bind = if ns == "wan" { "10.1.0.2" } else { "10.0.0.2" };
        lab.port(ns)
            .ns
            .spawn(&["python3", "-m", "http.server", port, "--bind", bind, "--directory", www.to_str().unwrap()])
            .unwrap();
    }
    // Both servers listen before anything is sent (python starts slowly
    // beside a busy TCG guest); a SYN to a closed port would only test RSTs.
    for (ns, port) in [("wan", 8080), ("wan", 8081), ("lan", 8080)] {
        let (ok, out) = ns_retry(lab.port(ns), &["sh", "-c", &format!("ss -ltn | grep -q ':{port} '")], 120);
        assert!(ok, "no HTTP server in {ns}: {out}");
    }
    // Permitted, and its replies come back through the connection table.
    let (ok, out) = ns_run(lab.port("lan"), &["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8080/hi.txt"]);
    assert!(ok && out.contains("past the acl"), "curl lan -> wan:8080:\n{out}\n{}", lab.vm.console());
    let (ok, out) = ns_run(lab.port("lan"), &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.1.0.2"]);
    assert!(ok && out.contains(" 0% packet loss"), "ping lan -> wan:\n{out}");
    // Rejected: sluice's reset, so curl fails at once (the server listens).
    let (ok, out) = ns_run(lab.port("lan"), &["curl", "-sS", "--max-time", "5", "http://10.1.0.2:8081/hi.txt"]);
    assert!(
        !ok && out.contains("Couldn't connect") && !out.contains("past the acl"),
        "curl to the rejected port:\n{out}"
    );
    // The other way nothing is permitted: no ping, no HTTP.
    let (ok, _) = ns_run(lab.port("wan"), &["ping", "-c", "1", "-W", "2", "10.0.0.2"]);
    assert!(!ok, "ping wan -> lan passed the acl");
    let (ok, out) = ns_run(lab.port("wan"), &["curl", "-sS", "--max-time", "3", "http://10.0.0.2:8080/hi.txt"]);
    assert!(!ok && !out.contains("past the acl"), "curl wan -> lan:\n{out}");
    let stats = lab.vm.stats().unwrap();
    assert!(stats.get("fw", "established") > 0, "{stats:?}");
    assert!(stats.get("fw", "rejected") >= 1, "{stats:?}");
    assert!(stats.get("fw", "denied") >= 2, "{stats:?}");
    assert_eq!(
        stats.get("lan", "drop_policy") + stats.get("wan", "drop_policy"),
        stats.get("fw", "denied") + stats.get("fw", "rejected"),
        "{stats:?}"
    );
    assert_eq!(lab.vm.quit().unwrap(), Ending::Clean);
}
