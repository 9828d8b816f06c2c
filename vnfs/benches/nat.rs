//! NAT cost per packet on the host: the receive path of a burst (1, 8 or
//! 32 packets) on the inside port (ingress check, router, NAT, egress), with 1k and 1M
//! sessions, for packets of established sessions and for packets that open
//! new ones. Beside each, in the same run, the baseline: the same packets
//! through a router-only pipeline, so the difference is what NAT costs.
//!
//! Cycles are ns × the CPU clock from /proc/cpuinfo.

use vnfs::dataplane::Dataplane;
use vnfs::packet::PacketPool;

mod common;
use common::{arp_reply, cpu_mhz, Rng};

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const BATCH: usize = 32;
const POOL_ADDRS: u8 = 32;

fn dataplane(nat: bool, sessions: usize) -> (Dataplane, PacketPool) {
    let mut text =
        String::from("port lan address 10.0.0.1/8\nport wan address 172.16.0.1/16\nroute 0.0.0.0/0 via 172.16.0.254\n");
    if nat {
        text += &format!(
            "nat {{\n inside 10.0.0.0/8\n outside wan\n sessions {sessions}\n filtering endpoint-independent\n"
        );
        for i in 0..POOL_ADDRS {
            text += &format!(" pool 172.16.1.{}\n", i + 1);
        }
        text += "}\n";
    } else {
        text += "pipeline lan router\npipeline wan router\n";
    }
    // The gateway answers ARP.
    common::build(
        &text,
        [LAN_MAC, WAN_MAC],
        &[arp_reply([2, 0, 0, 0, 0, 0xfe], [172, 16, 0, 254], WAN_MAC, [172, 16, 0, 1])],
    )
}

fn flow(rng: &mut Rng) -> (u32, u16) {
    (0x0a00_0000 | (rng.next() & 0x00ff_fffe) | 2, 1024 + (rng.next() % 60000) as u16)
}

/// Sends `total` packets in bursts of `batch`; `next` picks each packet's
/// flow. Returns ns per packet.
fn run(dp: &mut Dataplane, pool: &mut PacketPool, total: usize, batch: usize, next: impl FnMut() -> (u32, u16)) -> f64 {
    common::run_udp(dp, pool, total, batch, LAN_MAC, [198, 51, 100, 1], next)
}

/// `cargo bench --bench nat -- profile [SESSIONS] [router]`: only the
/// established case (1M sessions unless given; `router`: the router-only
/// baseline), 4M packets, for perf or callgrind (README: what stands in
/// the way).
fn profile(n: usize, nat: bool) {
    let mut rng = Rng(0x1234_5678 ^ n as u64);
    let flows = common::unique_flows(n, || flow(&mut rng));
    let (mut dp, mut pool) = dataplane(nat, n + 4096);
    let mut i = 0;
    run(&mut dp, &mut pool, n / BATCH * BATCH, BATCH, || {
        let f = flows[i % flows.len()];
        i += 1;
        f
    });
    // Four million: the established packets outweigh making the sessions.
    let picks = common::picks(&flows, 4_000_000, 99);
    let ns = run(&mut dp, &mut pool, 4_000_000, BATCH, common::in_order(&picks));
    println!("profile: {n} sessions (nat: {nat}), 4M established packets, {ns:.0} ns/packet");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "profile") {
        // `profile [SESSIONS] [router]`
        let n = args.get(i + 1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
        return profile(n, !args.iter().any(|a| a == "router"));
    }
    if args.iter().any(|a| a == "churn") {
        return churn();
    }
    let mhz = cpu_mhz();
    if args.iter().any(|a| a == "nat64") {
        return nat64(mhz);
    }
    println!("NAT, host, one core ({mhz:.0} MHz; cycles = ns x clock; established: best of {REPEAT} runs)\n");
    println!(
        "{:<10} {:<12} {:>5} {:>16} {:>24} {:>18}",
        "sessions", "packets", "batch", "router+nat", "baseline: router only", "nat's share"
    );
    for n in [1_000usize, 1_000_000] {
        let mut rng = Rng(0x1234_5678 ^ n as u64);
        let flows = common::unique_flows(n, || flow(&mut rng));
        // New flows: every packet opens a session, until n exist.
        let total = n / BATCH * BATCH;
        let (mut dp, mut pool) = dataplane(true, n + 4096);
        let (mut base, mut bpool) = dataplane(false, 0);
        let mut i = 0;
        let new_ns = run(&mut dp, &mut pool, total, BATCH, || {
            i += 1;
            flows[(i - 1) % flows.len()]
        });
        let mut j = 0;
        let base_new = run(&mut base, &mut bpool, total, BATCH, || {
            j += 1;
            flows[(j - 1) % flows.len()]
        });
        common::row(n, "new flows", BATCH, new_ns, base_new, mhz);
        // Established: random packets of the n sessions now open.
        let picks = common::picks(&flows, 1_000_000, 99);
        for batch in [1, 8, 32] {
            let est = common::best_of(REPEAT, || run(&mut dp, &mut pool, 1_000_000, batch, common::in_order(&picks)));
            let base_est =
                common::best_of(REPEAT, || run(&mut base, &mut bpool, 1_000_000, batch, common::in_order(&picks)));
            common::row(n, "established", batch, est, base_est, mhz);
        }
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        let nat = s.lines().find(|l| l.starts_with("stage name=nat")).unwrap_or("");
        let field = |k: &str| nat.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("?").to_string();
        println!(
            "{:<10} sessions={} refused={} table={} KiB",
            "",
            field("sessions="),
            field("refused_table_full="),
            field("table_bytes=").parse::<u64>().map(|b| b / 1024).unwrap_or(0)
        );
    }
    nat64(mhz);
    churn();
}

/// The NAT64's dataplane (nat64 + router) or the baseline: the same IPv6
/// packets routed by the IPv6 router alone (`route 64:ff9b:1::/96` to a wan
/// gateway resolved by ND). The prefix is a network-specific one (RFC
/// 8215's local-use range): the well-known one may not carry 198.51.100.1.
fn dataplane64(nat64: bool, sessions: usize) -> (Dataplane, PacketPool) {
    let mut text = String::from(
        "port lan address 2001:db8::1/32\nport wan address 172.16.0.1/16 address fd00:ffff::1/64\n\
         route 0.0.0.0/0 via 172.16.0.254\nroute 64:ff9b:1::/96 via fd00:ffff::fe\n",
    );
    if nat64 {
        text += &format!(
            "nat64 {{\n prefix 64:ff9b:1::/96\n inside 2001:db8::/32\n outside wan\n sessions {sessions}\n filtering endpoint-independent\n"
        );
        for i in 0..POOL_ADDRS {
            text += &format!(" pool 172.16.1.{}\n", i + 1);
        }
        text += "}\n";
    } else {
        text += "pipeline lan router\npipeline wan router\n";
    }
    let cfg = vnfs::registry::parse(&text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[LAN_MAC, WAN_MAC], 0, 1);
    let mut pool = PacketPool::new(4096);
    // Addresses through DAD; the gateways known (ARP reply; a solicitation
    // from the IPv6 one carries its MAC).
    dp.poll(1_200_000, &mut pool);
    let gw6: std::net::Ipv6Addr = "fd00:ffff::fe".parse().unwrap();
    let ours6: std::net::Ipv6Addr = "fd00:ffff::1".parse().unwrap();
    common::prime(
        &mut dp,
        &mut pool,
        &[
            arp_reply([2, 0, 0, 0, 0, 0xfe], [172, 16, 0, 254], WAN_MAC, [172, 16, 0, 1]),
            common::neighbor_solicit([2, 0, 0, 0, 0, 0xfe], gw6, ours6),
        ],
    );
    (dp, pool)
}

/// A 62-byte UDP/IPv6 frame from inside host `id` (2001:db8:ID::1, each
/// host in a /64 of its own, as `hosts-per-64` wants) port `sport` to
/// 64:ff9b:1::198.51.100.1:53.
fn frame64(id: u32, sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 8 + 4];
    f[0..6].copy_from_slice(&LAN_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&12u16.to_be_bytes());
    f[20] = 17;
    f[21] = 64;
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[4..8].copy_from_slice(&id.to_be_bytes());
    src[15] = 1;
    f[22..38].copy_from_slice(&src);
    f[38..54].copy_from_slice(&"64:ff9b:1::c633:6401".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f[54..56].copy_from_slice(&sport.to_be_bytes());
    f[56..58].copy_from_slice(&53u16.to_be_bytes());
    f[58..60].copy_from_slice(&12u16.to_be_bytes());
    // Any checksum but zero (IPv6 UDP must have one; the translator
    // updates it incrementally).
    f[60..62].copy_from_slice(&0x1234u16.to_be_bytes());
    f
}

fn run64(
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    total: usize,
    batch: usize,
    mut next: impl FnMut() -> (u32, u16),
) -> f64 {
    common::run_ring(dp, pool, total, batch, &frame64(1, 1024), |p| {
        let (id, sport) = next();
        // Translated packets left as IPv4: rebuilt whole.
        p.fill(&frame64(id, sport));
    })
}

/// NAT64 beside the IPv6 router alone, 1k and 1M sessions.
fn nat64(mhz: f64) {
    println!("\nNAT64, same run: IPv6 inside hosts to 64:ff9b:1::198.51.100.1 (nat64 + router, out as IPv4), beside the IPv6 router alone");
    println!(
        "{:<10} {:<12} {:>5} {:>16} {:>24} {:>18}",
        "sessions", "packets", "batch", "router+nat64", "baseline: router only", "nat64's share"
    );
    for n in [1_000usize, 1_000_000] {
        let mut rng = Rng(0x64 ^ n as u64);
        let flows = common::unique_flows(n, || (2 + rng.next() % 200_000, 1024 + (rng.next() % 60000) as u16));
        let total = n / BATCH * BATCH;
        let (mut dp, mut pool) = dataplane64(true, n + 4096);
        let (mut base, mut bpool) = dataplane64(false, 0);
        let mut i = 0;
        let new_ns = run64(&mut dp, &mut pool, total, BATCH, || {
            i += 1;
            flows[(i - 1) % flows.len()]
        });
        let mut j = 0;
        let base_new = run64(&mut base, &mut bpool, total, BATCH, || {
            j += 1;
            flows[(j - 1) % flows.len()]
        });
        common::row(n, "new flows", BATCH, new_ns, base_new, mhz);
        let picks = common::picks(&flows, 1_000_000, 99);
        for batch in [1, 8, 32] {
            let est = common::best_of(REPEAT, || run64(&mut dp, &mut pool, 1_000_000, batch, common::in_order(&picks)));
            let base_est =
                common::best_of(REPEAT, || run64(&mut base, &mut bpool, 1_000_000, batch, common::in_order(&picks)));
            common::row(n, "established", batch, est, base_est, mhz);
        }
    }
}

/// Expiring 60,000 sessions that all hang off one port forward, beside the
/// same number spread over 60,000 mappings (one session each): equal when
/// removal is O(1) (it once walked the mapping's list: 1.4–2.7 ms per loop
/// turn). Then the cost of refusing a new flow when the port range is full.
fn churn() {
    use std::time::Instant;
    use vnfs::flow::{Endpoint, Timeouts, UDP};
    use vnfs::nat::table::{Filtering, NatTable};
    const N: usize = 60_000;
    let out = std::net::Ipv4Addr::new(192, 0, 2, 1);
    let remote = |i: usize| Endpoint::new(std::net::Ipv4Addr::from(0xc633_0000 + i as u32), 53);
    let expire = |t: &mut NatTable| {
        let later = Timeouts::default().udp * 2;
        let t0 = Instant::now();
        while t.sessions() > 0 {
            t.sweep(later, 4096);
        }
        t0.elapsed().as_nanos() as f64 / N as f64
    };
    let mut one = NatTable::new(N, vec![out], (1024, 65535), Filtering::EndpointIndependent, Timeouts::default(), 1);
    // This measures removal, not the per-forward quota (default: half the
    // table): let one forward hold every session.
    one.set_quotas(vnfs::nat::table::Quotas { host: N as u32, forward: N as u32 });
    let inside = Endpoint::new(std::net::Ipv4Addr::new(10, 0, 0, 3), 80);
    one.add_forward(UDP, Endpoint::new(out, 80), inside);
    for i in 0..N {
        one.inbound(UDP, Endpoint::new(out, 80), remote(i), 0, 0).unwrap();
    }
    let forward_ns = expire(&mut one);
    let mut many = NatTable::new(N, vec![out], (1024, 65535), Filtering::EndpointIndependent, Timeouts::default(), 1);
    for i in 0..N {
        let inside = Endpoint::new(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32), 5000);
        many.outbound(UDP, inside, remote(i), 0, 0).unwrap();
    }
    let spread_ns = expire(&mut many);
    println!("\nexpiring {N} sessions: of one forward {forward_ns:.0} ns each; baseline, one per mapping: {spread_ns:.0} ns each");
    // A full port range (64,512 mappings on one address), then new flows.
    let mut full =
        NatTable::new(70_000, vec![out], (1024, 65535), Filtering::EndpointIndependent, Timeouts::default(), 1);
    let mut i = 0u32;
    while full.outbound(UDP, Endpoint::new(std::net::Ipv4Addr::from(0x0a00_0000 + i), 5000), remote(0), 0, 0).is_ok() {
        i += 1;
    }
    let t0 = Instant::now();
    for k in 0..10_000u32 {
        let _ = full.outbound(UDP, Endpoint::new(std::net::Ipv4Addr::from(0x0b00_0000 + k), 5000), remote(1), 0, 0);
    }
    let refuse_ns = t0.elapsed().as_nanos() as f64 / 10_000.0;
    println!("port range full after {i} mappings: a new flow is refused in {refuse_ns:.0} ns (it once scanned 250 us)");
}

/// Runs of the established case; the best one counts (the host is shared,
/// and slower runs measure its other work, not sluice).
const REPEAT: usize = 3;
