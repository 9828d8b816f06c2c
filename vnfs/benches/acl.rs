//! ACL lookup cost on the host at 10, 1k and 10k rules: tuple space search
//! beside the linear scan it replaces (the baseline, same rules, same
//! packets, same run). Rules look like a firewall's: sources and
//! destinations in a few prefix lengths, TCP/UDP port ranges, ICMP types,
//! a final catch-all. Packets are drawn so that most match a rule deep in
//! the list or none but the last.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;
use vnfs::acl::classifier::{first_match_linear, Classifier, Fields};
use vnfs::acl::{AclAction, Rule};

mod common;
use common::{best_of, cpu_mhz, Rng};

fn rules(n: usize, rng: &mut Rng) -> Vec<Rule> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n.saturating_sub(1) {
        let slen = [16u8, 24, 32][rng.next() as usize % 3];
        let dlen = [0u8, 16, 24][rng.next() as usize % 3];
        let src = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (rng.next() & 0x00ff_ffff)), slen).unwrap().trunc();
        let dst = Ipv4Net::new(Ipv4Addr::from(0xc0a8_0000 | (rng.next() & 0xffff)), dlen).unwrap().trunc();
        let proto = [6u8, 17, 1][i % 3];
        let lo = (rng.next() % 60000) as u16;
        out.push(Rule {
            action: if i % 2 == 0 { AclAction::Permit } else { AclAction::Deny },
            proto: Some(proto),
            src,
            dst,
            sport: (0, 65535),
            dport: if proto == 1 { (0, 65535) } else { (lo, lo + (rng.next() % 100) as u16) },
            icmp_type: (proto == 1).then_some(8),
            icmp_code: None,
            v6: None,
            line: vnfs::config::Line(i as u32),
        });
    }
    out.push(Rule {
        action: AclAction::Deny,
        proto: None,
        src: Ipv4Net::default(),
        dst: Ipv4Net::default(),
        sport: (0, 65535),
        dport: (0, 65535),
        icmp_type: None,
        icmp_code: None,
        v6: None,
        line: vnfs::config::Line(n as u32),
    });
    out
}

/// Packets: half aimed at a rule's addresses and port, half random.
fn packets(rules: &[Rule], rng: &mut Rng, n: usize) -> Vec<Fields> {
    (0..n)
        .map(|i| {
            let r = &rules[rng.next() as usize % rules.len()];
            let aimed = i % 2 == 0;
            let src = if aimed {
                u32::from(r.src.network()) | (rng.next() & !u32::from(r.src.netmask()))
            } else {
                0x0a00_0000 | rng.next() & 0xffffff
            };
            let dst = if aimed {
                u32::from(r.dst.network()) | (rng.next() & !u32::from(r.dst.netmask()))
            } else {
                0xc0a8_0000 | rng.next() & 0xffff
            };
            let proto = r.proto.unwrap_or(6);
            Fields {
                proto,
                src,
                dst,
                ports: (proto != 1).then_some((40000, if aimed { r.dport.0 } else { rng.next() as u16 })),
                icmp: (proto == 1).then_some((8, 0)),
                v6: None,
            }
        })
        .collect()
}

fn main() {
    let mhz = cpu_mhz();
    println!("ACL lookup, host, one core ({mhz:.0} MHz; best of 3)\n");
    println!(
        "{:>7} {:>7} {:>22} {:>28} {:>9}",
        "rules", "tuples", "classifier (TSS)", "baseline: linear scan", "speed-up"
    );
    for n in [10usize, 1_000, 10_000] {
        let mut rng = Rng(0xac1 ^ n as u64);
        let rules = rules(n, &mut rng);
        let c = Classifier::new(&rules);
        let pkts = packets(&rules, &mut rng, 4096);
        // Same answers, or the comparison means nothing.
        for f in &pkts {
            assert_eq!(c.first_match(f), first_match_linear(&rules, f));
        }
        let rounds = (2_000_000 / n).clamp(20, 2000);
        let time = |f: &dyn Fn(&Fields) -> Option<usize>| {
            best_of(3, || {
                let t = Instant::now();
                let mut sum = 0usize;
                for _ in 0..rounds.min(200) {
                    for p in &pkts {
                        sum = sum.wrapping_add(f(p).unwrap_or(0));
                    }
                }
                std::hint::black_box(sum);
                t.elapsed().as_nanos() as f64 / (rounds.min(200) * pkts.len()) as f64
            })
        };
        let tss = time(&|f| c.first_match(f));
        let lin = time(&|f| first_match_linear(&rules, f));
        println!(
            "{:>7} {:>7} {:>12.1} ns/pkt {:>5.0} cyc {:>14.1} ns/pkt {:>7.0} cyc {:>8.1}x",
            n,
            c.tuples(),
            tss,
            tss * mhz / 1000.0,
            lin,
            lin * mhz / 1000.0,
            lin / tss
        );
    }
}
