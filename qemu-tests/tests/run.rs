//! `sluice run` as a new user meets it: with the edge example config (three
//! ports: LB, NAT, router) it builds one namespace per port, starts the
//! backends and the outside host's server, and prints hints; the test runs
//! every hint it printed, then `quit`s, and finds everything removed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sluice run`, interrupted (its Ctrl-C path: VM stopped, namespaces and
/// taps removed) if the test ends without its `quit`, then killed.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn sluice_run_follows_the_config_and_its_hints_work() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let conf = sluice::workspace_root().join("images/configs/edge.conf");
    let mut run = Running(
        Command::new(&bin)
            .args(["run", "--config", conf.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut run.0;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut hints = Vec::new();
    let mut seen = String::new();
    let t = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| panic!("no hints:\n{seen}"));
        seen += &line;
        seen.push('\n');
        if let Some(cmd) = line.trim().strip_prefix("ip netns exec ") {
            hints.push(cmd.split("  #").next().unwrap().trim().to_string());
        }
        if line.contains("Type console commands here") || t.elapsed() > Duration::from_secs(90) {
            break;
        }
    }
    for ns in ["sluice-wan", "sluice-dmz", "sluice-lan"] {
        assert!(seen.contains(ns), "a namespace per port: {ns}\n{seen}");
    }
    assert!(hints.iter().any(|h| h.contains("curl") && h.contains("10.1.0.1:80")), "{hints:?}");
    assert!(hints.iter().any(|h| h.contains("curl") && h.contains(":8000")), "{hints:?}");
    // Every hint, as a user would paste it (servers and health checks may
    // take a moment: a few tries each).
    for h in &hints {
        let mut last = String::new();
        let tries = if h.contains("curl") { 40 } else { 4 };
        let ok = (0..tries).any(|_| {
            let out = Command::new("sh").arg("-c").arg(format!("ip netns exec {h}")).output().unwrap();
            last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let good = out.status.success() && (!h.contains("curl") || last.contains(" saw "));
            if !good {
                std::thread::sleep(Duration::from_millis(500));
            }
            good
        });
        assert!(ok, "hint `ip netns exec {h}` failed:\n{last}\n{seen}");
    }
    writeln!(child.stdin.as_mut().unwrap(), "quit").unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "sluice run did not end after quit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(!ns.contains("sluice-wan") && !ns.contains("sluice-dmz") && !ns.contains("sluice-lan"), "{ns}");
}
