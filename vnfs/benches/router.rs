//! Router cost per packet on the host, through the whole dataplane path a
//! received burst takes (ingress check, router stage, transmit queue), at
//! batch 1 and 32, with 1k and 1M routes. Beside it, in the same run, the
//! baseline: the same route lookups done the common naive way, one hash
//! table per prefix length probed from /32 down.
//!
//! Cycles are ns × the CPU clock from /proc/cpuinfo (no TSC access outside
//! kernel/ and drivers/).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, PacketPool};
use vnfs::registry as config;

mod common;
use common::{arp_reply, cpu_mhz, Rng};

/// A UDP frame from 10.0.0.2 to `dst`.
fn frame(dst: Ipv4Addr) -> Vec<u8> {
    common::udp_frame(LAN_MAC, 0x0a00_0002, 4000, dst.octets(), 9)
}

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

/// Random distinct /24 prefixes in 1.0.0.0–223.255.255.0, minus 10/8 and 127/8.
fn prefixes(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = (rng.next() % (223 << 16) + (1 << 16)) << 8;
        if !matches!(p >> 24, 10 | 127) && seen.insert(p) {
            out.push(p);
        }
    }
    out
}

/// Puts the TTL back to 255 with the RFC 1624 update, as the router took it.
fn restore_ttl(ip: &mut [u8]) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = 255;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let hc = u16::from_be_bytes([ip[10], ip[11]]);
    let mut sum = (!hc) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn bench_dataplane(routes: usize, batch_size: usize, mhz: f64) -> (f64, f64, f64) {
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ routes as u64);
    let pfx = prefixes(routes, &mut rng);
    let mut text = String::from("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n");
    for p in &pfx {
        text += &format!("route {}/24 via 10.1.0.254\n", Ipv4Addr::from(*p));
    }
    let t = Instant::now();
    let cfg = config::parse(&text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[LAN_MAC, WAN_MAC], 0, 1);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut pool = PacketPool::new(4096);
    // Resolve the gateway as ARP would.
    common::prime(&mut dp, &mut pool, &[arp_reply([2, 0, 0, 0, 0, 0xfe], [10, 1, 0, 254], WAN_MAC, [10, 1, 0, 1])]);

    // A ring of packets to random destinations, reused: taken from the
    // front, received, and put back at the end once forwarded.
    let n = 4096 - 64;
    let ring: std::collections::VecDeque<_> = (0..n)
        .map(|_| {
            let p = pfx[rng.next() as usize % pfx.len()] | (rng.next() & 0xff);
            let mut pkt = pool.alloc().unwrap();
            pkt.fill(&frame(Ipv4Addr::from(p)));
            pkt
        })
        .collect();
    let ns = drive(&mut dp, &mut pool, ring, batch_size, 0, |d| restore_ttl(&mut d[14..]));
    (ns, ns * mhz / 1e3, build_ms)
}

/// Receives the packets of `ring` on lan in bursts of `batch_size` until
/// 4M have been forwarded out of wan, each put back at the ring's end as a
/// fresh arrival (lan's MAC, and `refresh` undoing the router's TTL or
/// hop-limit change); returns ns per packet.
fn drive(
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    mut ring: std::collections::VecDeque<vnfs::packet::Packet>,
    batch_size: usize,
    now: u64,
    refresh: impl Fn(&mut [u8]),
) -> f64 {
    let total = 4_000_000u64;
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < total {
        let mut batch = Batch::new();
        for _ in 0..batch_size {
            batch.push(ring.pop_front().unwrap()).unwrap();
        }
        dp.receive(0, &mut batch, pool, now);
        sent += batch_size as u64;
        let q = &mut dp.port_mut(1).tx;
        let mut back = 0;
        while let Some(mut p) = q.pop_front() {
            p.data_mut()[0..6].copy_from_slice(&LAN_MAC);
            refresh(p.data_mut());
            ring.push_back(p);
            back += 1;
        }
        if back != batch_size {
            let mut s = String::new();
            dp.write_stats(&mut s).unwrap();
            panic!("{back} of {batch_size} forwarded:\n{s}");
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / sent as f64;
    black_box(&ring);
    ns
}

fn bench_lookups(routes: usize) -> (f64, f64) {
    let mut rng = Rng(7 ^ routes as u64);
    let pfx = prefixes(routes, &mut rng);
    let mut lpm = vnfs::router::lpm::Lpm::new();
    let mut by_len: Vec<HashMap<u32, u32>> = vec![HashMap::new(); 33];
    for (i, p) in pfx.iter().enumerate() {
        lpm.insert(format!("{}/24", Ipv4Addr::from(*p)).parse().unwrap(), i as u32);
        by_len[24].insert(*p, i as u32);
    }
    let probes: Vec<u32> = (0..1 << 20).map(|_| pfx[rng.next() as usize % pfx.len()] | (rng.next() & 0xff)).collect();
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..4 {
        for a in &probes {
            acc += lpm.lookup(Ipv4Addr::from(*a)).unwrap_or(0) as u64;
        }
    }
    let sluice = t.elapsed().as_nanos() as f64 / (4 * probes.len()) as f64;
    let t = Instant::now();
    for _ in 0..4 {
        for a in &probes {
            let mut hit = 0;
            for len in (0..=32u32).rev() {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if let Some(v) = by_len[len as usize].get(&(a & mask)) {
                    hit = *v;
                    break;
                }
            }
            acc += hit as u64;
        }
    }
    let naive = t.elapsed().as_nanos() as f64 / (4 * probes.len()) as f64;
    black_box(acc);
    (sluice, naive)
}

/// Random distinct IPv6 prefixes under 2001:db8::/32-like space: a mix
/// of /32, /48, /56 and /64 (four lengths, as real tables have), as
/// (address bits, length).
fn prefixes6(n: usize, rng: &mut Rng) -> Vec<(u128, u8)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = [32u8, 48, 56, 64][rng.next() as usize % 4];
        let hi = ((rng.next() as u64) << 32 | rng.next() as u64) as u128;
        // 2000::/4 global unicast, clear of the ports' 2001:db8:0::/48.
        let a = ((hi | 1 << 61) & !(0xe << 60)) << 64;
        let a = a & (u128::MAX << (128 - len as u32));
        if a >> 80 != 0x2001_0db8_0000 && seen.insert((a, len)) {
            out.push((a, len));
        }
    }
    out
}

/// A UDP/IPv6 frame from 2001:db8:0:1::2 to `dst`.
fn frame6(dst: u128) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 8 + 18];
    f[0..6].copy_from_slice(&LAN_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&26u16.to_be_bytes());
    f[20] = 17;
    f[21] = 255;
    f[22..38].copy_from_slice(&"2001:db8:0:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f[38..54].copy_from_slice(&dst.to_be_bytes());
    f[54..56].copy_from_slice(&4000u16.to_be_bytes());
    f[56..58].copy_from_slice(&9u16.to_be_bytes());
    f[58..60].copy_from_slice(&26u16.to_be_bytes());
    f
}

fn bench_dataplane6(routes: usize, batch_size: usize, mhz: f64) -> (f64, f64, f64) {
    let mut rng = Rng(0x51ce ^ routes as u64);
    let pfx = prefixes6(routes, &mut rng);
    let mut text = String::from(
        "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64\nport wan address 10.1.0.1/24 address 2001:db8:0:2::1/64\n",
    );
    for (a, l) in &pfx {
        text += &format!("route {}/{l} via 2001:db8:0:2::fe\n", std::net::Ipv6Addr::from(*a));
    }
    let t = Instant::now();
    let cfg = config::parse(&text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[LAN_MAC, WAN_MAC], 0, 1);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut pool = PacketPool::new(4096);
    // The addresses pass DAD, then the gateway makes itself known (its
    // solicitation for sluice's wan address, with its MAC).
    let now = 1_200_000;
    dp.poll(now, &mut pool);
    let gw: std::net::Ipv6Addr = "2001:db8:0:2::fe".parse().unwrap();
    let ours: std::net::Ipv6Addr = "2001:db8:0:2::1".parse().unwrap();
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(&common::neighbor_solicit([2, 0, 0, 0, 0, 0xfe], gw, ours));
    b.push(p).unwrap();
    dp.receive(1, &mut b, &mut pool, now);
    while let Some(p) = dp.port_mut(1).tx.pop_front() {
        pool.free(p);
    }
    while let Some(p) = dp.port_mut(0).tx.pop_front() {
        pool.free(p);
    }
    let n = 4096 - 64;
    let ring: std::collections::VecDeque<_> = (0..n)
        .map(|_| {
            let (a, l) = pfx[rng.next() as usize % pfx.len()];
            let host = (rng.next() as u128) & (u128::MAX >> l);
            let mut pkt = pool.alloc().unwrap();
            pkt.fill(&frame6(a | host));
            pkt
        })
        .collect();
    let ns = drive(&mut dp, &mut pool, ring, batch_size, now, |d| d[21] = 255);
    (ns, ns * mhz / 1e3, build_ms)
}

fn bench_lookups6(routes: usize) -> (f64, f64) {
    let mut rng = Rng(11 ^ routes as u64);
    let pfx = prefixes6(routes, &mut rng);
    let mut lpm = vnfs::router::lpm6::Lpm6::new();
    let mut by_len: Vec<HashMap<u128, u32>> = vec![HashMap::new(); 129];
    for (i, (a, l)) in pfx.iter().enumerate() {
        lpm.insert(ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(*a), *l).unwrap(), i as u32);
        by_len[*l as usize].insert(*a, i as u32);
    }
    let probes: Vec<u128> = (0..1 << 20)
        .map(|_| {
            let (a, l) = pfx[rng.next() as usize % pfx.len()];
            a | (rng.next() as u128) & (u128::MAX >> l)
        })
        .collect();
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..4 {
        for a in &probes {
            acc += lpm.lookup(std::net::Ipv6Addr::from(*a)).unwrap_or(0) as u64;
        }
    }
    let sluice = t.elapsed().as_nanos() as f64 / (4 * probes.len()) as f64;
    let t = Instant::now();
    for _ in 0..4 {
        for a in &probes {
            let mut hit = 0;
            for len in (0..=128u32).rev() {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                if let Some(v) = by_len[len as usize].get(&(a & mask)) {
                    hit = *v;
                    break;
                }
            }
            acc += hit as u64;
        }
    }
    let naive = t.elapsed().as_nanos() as f64 / (4 * probes.len()) as f64;
    black_box(acc);
    (sluice, naive)
}

fn main() {
    let mhz = cpu_mhz();
    println!("router, host, one core ({:.0} MHz; cycles = ns x clock)\n", mhz);
    println!("{:<10} {:>7} {:>10} {:>12} {:>14}", "routes", "batch", "ns/pkt", "cycles/pkt", "table build");
    for routes in [1_000, 1_000_000] {
        for batch in [1, 8, 32] {
            let (ns, cyc, build) = bench_dataplane(routes, batch, mhz);
            println!("{:<10} {:>7} {:>10.1} {:>12.0} {:>11.0} ms", routes, batch, ns, cyc, build);
        }
    }
    println!("\nroute lookup alone, random destinations");
    println!("{:<10} {:>22} {:>34}", "routes", "sluice 16-8-8 trie", "baseline: hash per prefix length");
    for routes in [1_000, 1_000_000] {
        let (s, n) = bench_lookups(routes);
        println!("{:<10} {:>19.1} ns {:>31.1} ns", routes, s, n);
    }
    println!("\nIPv6 router (same run; /32, /48, /56 and /64 routes via one next hop resolved by ND)");
    println!("{:<10} {:>7} {:>10} {:>12} {:>14}", "routes", "batch", "ns/pkt", "cycles/pkt", "table build");
    for routes in [1_000, 1_000_000] {
        for batch in [1, 8, 32] {
            let (ns, cyc, build) = bench_dataplane6(routes, batch, mhz);
            println!("{:<10} {:>7} {:>10.1} {:>12.0} {:>11.0} ms", routes, batch, ns, cyc, build);
        }
    }
    println!("\nIPv6 route lookup alone, random destinations");
    println!("{:<10} {:>26} {:>34}", "routes", "sluice hash per present len", "baseline: hash per prefix length");
    for routes in [1_000, 1_000_000] {
        let (s, n) = bench_lookups6(routes);
        println!("{:<10} {:>23.1} ns {:>31.1} ns", routes, s, n);
    }
}
