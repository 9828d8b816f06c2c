//! What the host benchmarks share: a fast deterministic RNG, the CPU clock
//! for cycle estimates, and frame builders.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Instant;

use vnfs::csum;
use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, Packet, PacketPool};

/// xorshift64: deterministic, so every run measures the same traffic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

/// The CPU clock from /proc/cpuinfo, to turn ns into cycles (no TSC access
/// outside kernel/ and drivers/).
pub fn cpu_mhz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("cpu MHz")).and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// `n` distinct flows (source address, source port) drawn by `draw`.
pub fn unique_flows(n: usize, mut draw: impl FnMut() -> (u32, u16)) -> Vec<(u32, u16)> {
    let mut seen = std::collections::HashSet::new();
    let mut flows = Vec::with_capacity(n);
    while flows.len() < n {
        let f = draw();
        if seen.insert(f) {
            flows.push(f);
        }
    }
    flows
}

/// `count` flows drawn at random from `flows` (seed `seed`), drawn before
/// the clock starts: the timed loop then reads them in order, which the
/// hardware prefetcher streams, so the harness adds no cache miss of its
/// own per packet. (Drawing in the loop indexed a million-flow table at
/// random: a DRAM access a packet that both columns paid, stage and
/// baseline alike.)
pub fn picks(flows: &[(u32, u16)], count: usize, seed: u64) -> Vec<(u32, u16)> {
    let mut r = Rng(seed);
    (0..count).map(|_| flows[r.next() as usize % flows.len()]).collect()
}

/// A closure handing out `picks` in order, again from the start when they
/// run out.
pub fn in_order(picks: &[(u32, u16)]) -> impl FnMut() -> (u32, u16) + '_ {
    let mut i = 0;
    move || {
        let f = picks[i % picks.len()];
        i += 1;
        f
    }
}

/// One table row: the stage(s) measured beside the baseline, and the
/// difference (the stage's share), in ns and cycles.
pub fn row(n: usize, what: &str, batch: usize, with: f64, base: f64, mhz: f64) {
    println!(
        "{:<10} {:<12} {:>5} {:>8.1} ns {:>4.0} cyc {:>13.1} ns {:>4.0} cyc {:>10.1} ns {:>4.0} cyc",
        n,
        what,
        batch,
        with,
        with * mhz / 1e3,
        base,
        base * mhz / 1e3,
        with - base,
        (with - base) * mhz / 1e3
    );
}

/// The smallest of `k` measurements.
pub fn best_of(k: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..k).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// A neighbour solicitation from `ip` (MAC `mac`) for `target` (ours, at
/// the appliance), with the sender's link-layer address: it makes the sender
/// known to the IPv6 neighbour cache.
pub fn neighbor_solicit(mac: [u8; 6], ip: std::net::Ipv6Addr, target: std::net::Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = std::net::Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]]);
    let mut f = vec![0u8; 14 + 40 + 32];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&group.octets());
    f[54] = 135;
    f[62..78].copy_from_slice(&t);
    f[78..80].copy_from_slice(&[1, 1]);
    f[80..86].copy_from_slice(&mac);
    let mut sum = 0u32;
    let pseudo =
        [&ip.octets()[..], &group.octets()[..], &32u32.to_be_bytes()[..], &[0, 0, 0, 58][..], &f[54..]].concat();
    for w in pseudo.chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[56..58].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f
}

/// An ARP reply from `ip` (MAC `mac`) to `to_mac`/`to_ip`.
pub fn arp_reply(mac: [u8; 6], ip: [u8; 4], to_mac: [u8; 6], to_ip: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0u8; 42];
    arp[0..6].copy_from_slice(&to_mac);
    arp[6..12].copy_from_slice(&mac);
    arp[12..14].copy_from_slice(&[8, 6]);
    arp[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    arp[22..28].copy_from_slice(&mac);
    arp[28..32].copy_from_slice(&ip);
    arp[32..38].copy_from_slice(&to_mac);
    arp[38..42].copy_from_slice(&to_ip);
    arp
}

/// A 60-byte UDP frame (checksum 0) to `dst_mac`, `src:sport` → `dst:dport`.
pub fn udp_frame(dst_mac: [u8; 6], src: u32, sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 18];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[8, 0]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&dst);
    let c = csum::checksum(&ip[..20]);
    csum::set(ip, 10, c);
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&dport.to_be_bytes());
    ip[24..26].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// Makes a forwarded 60-byte UDP frame a fresh arrival at `mac` from
/// `src:sport` to `dst`:53 again (stages rewrote addresses, ports, TTL and
/// MACs); the IPv4 checksum is computed afresh.
pub fn rearm_udp(p: &mut Packet, mac: [u8; 6], src: u32, sport: u16, dst: [u8; 4]) {
    let d = p.data_mut();
    d[0..6].copy_from_slice(&mac);
    let ip = &mut d[14..];
    ip[8] = 64;
    ip[12..16].copy_from_slice(&src.to_be_bytes());
    ip[16..20].copy_from_slice(&dst);
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = csum::checksum(&ip[..20]);
    csum::set(ip, 10, c);
    ip[20..22].copy_from_slice(&sport.to_be_bytes());
    ip[22..24].copy_from_slice(&53u16.to_be_bytes());
    ip[26] = 0;
    ip[27] = 0;
}

/// Sends `total` packets in bursts of `burst` into port 0 and expects each
/// out of port 1. A ring of 2048 buffers (filled with `template`) is reused;
/// `rearm` makes a buffer a fresh arrival (its flow, MACs, TTL) before it
/// goes in. Returns ns per packet, harness included.
pub fn run_ring(
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    total: usize,
    burst: usize,
    template: &[u8],
    mut rearm: impl FnMut(&mut Packet),
) -> f64 {
    let mut ring: VecDeque<Packet> = (0..2048)
        .map(|_| {
            let mut p = pool.alloc().unwrap();
            p.fill(template);
            p
        })
        .collect();
    let mut sent = 0;
    let start = Instant::now();
    while sent < total {
        let mut batch = Batch::new();
        for _ in 0..burst {
            let mut p = ring.pop_front().unwrap();
            rearm(&mut p);
            batch.push(p).unwrap();
        }
        dp.receive(0, &mut batch, pool, 0);
        sent += burst;
        let q = &mut dp.port_mut(1).tx;
        let mut back = 0;
        while let Some(p) = q.pop_front() {
            ring.push_back(p);
            back += 1;
        }
        if back != burst {
            let mut s = String::new();
            dp.write_stats(&mut s).unwrap();
            panic!("{back} of {burst} packets forwarded:\n{s}");
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / sent as f64;
    for p in ring {
        pool.free(p);
    }
    ns
}

/// A dataplane for `config` with ports at `macs`, a pool of 4096 buffers,
/// and the next hops' ARP replies `arps` already received on port 1.
pub fn build(config: &str, macs: [[u8; 6]; 2], arps: &[Vec<u8>]) -> (Dataplane, PacketPool) {
    let cfg = vnfs::registry::parse(config).unwrap();
    let mut dp = Dataplane::new(&cfg, &macs, 0, 1);
    let mut pool = PacketPool::new(4096);
    prime(&mut dp, &mut pool, arps);
    (dp, pool)
}

/// [`run_ring`] with 60-byte UDP to `dst`:53 arriving at `mac`; `next`
/// picks each packet's source. Returns ns per packet.
pub fn run_udp(
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    total: usize,
    batch: usize,
    mac: [u8; 6],
    dst: [u8; 4],
    mut next: impl FnMut() -> (u32, u16),
) -> f64 {
    run_ring(dp, pool, total, batch, &udp_frame(mac, 0x0a00_0002, 1024, dst, 53), |p| {
        let (src, sport) = next();
        rearm_udp(p, mac, src, sport, dst);
    })
}

/// Receives `frames` (ARP replies from next hops) on port 1 so the egress
/// knows their MACs, and throws away what the dataplane sent meanwhile.
pub fn prime(dp: &mut Dataplane, pool: &mut PacketPool, frames: &[Vec<u8>]) {
    let mut b = Batch::new();
    for f in frames {
        let mut p = pool.alloc().unwrap();
        p.fill(f);
        b.push(p).unwrap();
    }
    dp.receive(1, &mut b, pool, 0);
    dp.poll(0, pool);
    while let Some(p) = dp.port_mut(1).tx.pop_front() {
        pool.free(p);
    }
}
