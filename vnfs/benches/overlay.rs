//! VLAN sub-ports and VXLAN tunnels on the host, beside plain forwarding
//! measured in the same run:
//!
//! - VLAN: 802.1Q frames on a trunk's sub-port routed out of an untagged
//!   port, and the way back (tag pushed), against the same packets on an
//!   untagged port.
//! - VXLAN: tenant packets decapsulated, routed and NATed out of the wan
//!   port; the replies NATed, routed into the tunnel and encapsulated —
//!   against the same NAT on a plain port (1k flows, bursts of 32).
//!
//! Every packet is written afresh into its buffer by the harness (both
//! rows pay the same). Cycles are ns × the CPU clock from /proc/cpuinfo.

use std::time::Instant;

use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, Packet, PacketPool};

mod common;
use common::{arp_reply, cpu_mhz};

const A_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const B_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const BATCH: usize = 32;
const FLOWS: usize = 1000;
const PACKETS: usize = 2_000_000;
const SERVER: [u8; 4] = [203, 0, 113, 5];

/// Sends `total` packets in bursts into `inp`, each made by `make(i, p)`,
/// and expects each out of `out`. Returns ns per packet.
fn run(
    dp: &mut Dataplane,
    pool: &mut PacketPool,
    (inp, out): (u8, u8),
    total: usize,
    make: impl Fn(usize, &mut Packet),
    mut seen: impl FnMut(usize, &Packet),
) -> f64 {
    let mut ring: Vec<Packet> = (0..1024).map(|_| pool.alloc().unwrap()).collect();
    let mut i = 0;
    let start = Instant::now();
    while i < total {
        let mut batch = Batch::new();
        for _ in 0..BATCH {
            let mut p = ring.pop().unwrap();
            make(i + batch.len(), &mut p);
            batch.push(p).unwrap();
        }
        dp.receive(inp, &mut batch, pool, 0);
        let q = &mut dp.port_mut(out).tx;
        let mut back = 0;
        while let Some(p) = q.pop_front() {
            seen(i + back, &p);
            ring.push(p);
            back += 1;
        }
        if back != BATCH {
            let mut s = String::new();
            dp.write_stats(&mut s).unwrap();
            panic!("{back} of {BATCH} packets forwarded:\n{s}");
        }
        i += BATCH;
    }
    let ns = start.elapsed().as_nanos() as f64 / i as f64;
    for p in ring {
        pool.free(p);
    }
    ns
}

fn build(text: &str, arps: &[(u8, Vec<u8>)]) -> (Dataplane, PacketPool) {
    let cfg = vnfs::registry::parse(text).unwrap();
    let mut dp = Dataplane::new(&cfg, &[A_MAC, B_MAC], 0, 1);
    let mut pool = PacketPool::new(4096);
    for (port, f) in arps {
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(f);
        b.push(p).unwrap();
        dp.receive(*port, &mut b, &mut pool, 0);
        dp.poll(0, &mut pool);
        for i in 0..2 {
            while let Some(p) = dp.port_mut(i).tx.pop_front() {
                pool.free(p);
            }
        }
    }
    (dp, pool)
}

fn line(what: &str, with: f64, base: f64, mhz: f64) {
    println!(
        "{:<44} {:>8.1} ns {:>4.0} cyc {:>10.1} ns {:>4.0} cyc {:>8.1} ns",
        what,
        with,
        with * mhz / 1e3,
        base,
        base * mhz / 1e3,
        with - base
    );
}

/// Flow `i`'s inside source: 10.0.0.2-10.0.0.251, ports from 1024.
fn inside(i: usize) -> (u32, u16) {
    (0x0a00_0002 + (i % 250) as u32, 1024 + (i % FLOWS) as u16)
}

fn vlan(mhz: f64) {
    let base_cfg = "port lan address 10.0.0.1/16\nport wan address 172.16.0.1/16\nroute 0.0.0.0/0 via 172.16.0.254\n";
    let vlan_cfg = "port trunk address 10.9.0.1/24\nport wan address 172.16.0.1/16\nport lan on trunk vlan 100 address 10.0.0.1/16\nroute 0.0.0.0/0 via 172.16.0.254\n";
    let arps = [
        (1, arp_reply([2, 0, 0, 0, 0, 0xfe], [172, 16, 0, 254], B_MAC, [172, 16, 0, 1])),
        (0, vlan_arp([2, 0, 0, 0, 0, 2], [10, 0, 0, 2], [10, 0, 0, 1])),
    ];
    let (mut base, mut bpool) = build(base_cfg, &arps[..1]);
    let (mut dp, mut pool) = build(vlan_cfg, &arps);
    let plain_f = frames(|i| {
        let (src, sport) = inside(i);
        common::udp_frame(A_MAC, src, sport, SERVER, 53)
    });
    let tagged_f = frames(|i| tag(&plain_f[i], 100));
    let plain = fill(&plain_f);
    let tagged = fill(&tagged_f);
    let b = common::best_of(3, || run(&mut base, &mut bpool, (0, 1), PACKETS, &plain, |_, _| {}));
    let v = common::best_of(3, || run(&mut dp, &mut pool, (0, 1), PACKETS, &tagged, |_, _| {}));
    line("VLAN 100 in, routed out untagged", v, b, mhz);
    // The way back: untagged in, routed onto the sub-port (tag pushed).
    // Replies all to the one inside host whose MAC the sub-port knows.
    let reply_f = frames(|i| {
        let mut f = common::udp_frame(B_MAC, u32::from_be_bytes(SERVER), 53, [10, 0, 0, 2], 1024 + i as u16);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f
    });
    let reply = fill(&reply_f);
    let (mut base, mut bpool) = build(
        base_cfg,
        &[arps[0].clone(), (0, common::arp_reply([2, 0, 0, 0, 0, 2], [10, 0, 0, 2], A_MAC, [10, 0, 0, 1]))],
    );
    let b = common::best_of(3, || run(&mut base, &mut bpool, (1, 0), PACKETS, &reply, |_, _| {}));
    let v = common::best_of(3, || run(&mut dp, &mut pool, (1, 0), PACKETS, &reply, |_, _| {}));
    line("untagged in, routed out on VLAN 100", v, b, mhz);
}

/// One frame per flow, made once (the timed loop only copies them).
fn frames(make: impl FnMut(usize) -> Vec<u8>) -> Vec<Vec<u8>> {
    (0..FLOWS).map(make).collect()
}

/// Writes flow `i % FLOWS`'s frame into the buffer.
fn fill(frames: &[Vec<u8>]) -> impl Fn(usize, &mut Packet) + '_ {
    move |i, p| {
        p.fill(&frames[i % FLOWS]);
    }
}

fn tag(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&[0x81, 0x00]);
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

fn vlan_arp(mac: [u8; 6], ip: [u8; 4], to: [u8; 4]) -> Vec<u8> {
    tag(&arp_reply(mac, ip, A_MAC, to), 100)
}

fn vxlan(mhz: f64) {
    let nat = "nat {\n inside 10.0.0.0/24\n outside wan\n sessions 65536\n filtering endpoint-independent\n}\nroute 0.0.0.0/0 via 172.16.0.254\n";
    let base_cfg = format!("port lan address 10.0.0.1/24\nport wan address 172.16.0.1/16\n{nat}");
    let tun_cfg = format!(
        "port under address 10.1.0.1/24\nport wan address 172.16.0.1/16\ntunnel tb vxlan vni 5001 local 10.1.0.1 remote 10.1.0.2 address 10.0.0.1/24\nneighbor 10.1.0.2 mac 02:00:00:00:ee:01\n{nat}"
    );
    let gw = (1, arp_reply([2, 0, 0, 0, 0, 0xfe], [172, 16, 0, 254], B_MAC, [172, 16, 0, 1]));
    let (mut base, mut bpool) = build(&base_cfg, &[gw.clone()]);
    let (mut dp, mut pool) = build(&tun_cfg, &[gw]);
    let tmac = dp.ports()[2].mac;
    // Every inside host's MAC, as ARP would have taught (plain port and tunnel).
    for h in 2..252u8 {
        let f = common::arp_reply([2, 0, 0, 0, 1, h], [10, 0, 0, h], A_MAC, [10, 0, 0, 1]);
        prime_one(&mut base, &mut bpool, 0, &f);
        let mut inner = common::arp_reply([2, 0, 0, 0, 1, h], [10, 0, 0, h], tmac, [10, 0, 0, 1]);
        inner[6..12].copy_from_slice(&[2, 0, 0, 0, 1, h]);
        prime_one(&mut dp, &mut pool, 0, &wrap(&inner));
    }
    let plain_f = frames(|i| {
        let (src, sport) = inside(i);
        common::udp_frame(A_MAC, src, sport, SERVER, 53)
    });
    let tun_f = frames(|i| {
        let (src, sport) = inside(i);
        wrap(&common::udp_frame(tmac, src, sport, SERVER, 53))
    });
    let out_plain = fill(&plain_f);
    let out_tun = fill(&tun_f);
    // First pass: each flow's session, and the port the NAT gave it.
    let mut ports_plain = vec![0u16; FLOWS];
    let mut ports_tun = vec![0u16; FLOWS];
    run(&mut base, &mut bpool, (0, 1), FLOWS / BATCH * BATCH + BATCH, &out_plain, |i, p| {
        ports_plain[i % FLOWS] = u16::from_be_bytes([p.data()[34], p.data()[35]])
    });
    run(&mut dp, &mut pool, (0, 1), FLOWS / BATCH * BATCH + BATCH, &out_tun, |i, p| {
        ports_tun[i % FLOWS] = u16::from_be_bytes([p.data()[34], p.data()[35]])
    });
    let b = common::best_of(3, || run(&mut base, &mut bpool, (0, 1), PACKETS, &out_plain, |_, _| {}));
    let t = common::best_of(3, || run(&mut dp, &mut pool, (0, 1), PACKETS, &out_tun, |_, _| {}));
    line("VXLAN decap -> router -> NAT -> wan", t, b, mhz);
    let back = |ports: &[u16]| {
        frames(|i| {
            let mut f = common::udp_frame(B_MAC, u32::from_be_bytes(SERVER), 53, [172, 16, 0, 1], ports[i]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
            f
        })
    };
    let (back_plain, back_tun) = (back(&ports_plain), back(&ports_tun));
    let b = common::best_of(3, || run(&mut base, &mut bpool, (1, 0), PACKETS, fill(&back_plain), |_, _| {}));
    let t = common::best_of(3, || run(&mut dp, &mut pool, (1, 0), PACKETS, fill(&back_tun), |_, _| {}));
    line("wan -> NAT -> router -> VXLAN encap", t, b, mhz);
}

fn prime_one(dp: &mut Dataplane, pool: &mut PacketPool, port: u8, f: &[u8]) {
    let mut b = Batch::new();
    let mut p = pool.alloc().unwrap();
    p.fill(f);
    b.push(p).unwrap();
    dp.receive(port, &mut b, pool, 0);
    dp.poll(0, pool);
    for i in 0..2 {
        while let Some(p) = dp.port_mut(i).tx.pop_front() {
            pool.free(p);
        }
    }
}

/// `inner` in VXLAN (VNI 5001) from the VTEP 10.1.0.2 to 10.1.0.1.
fn wrap(inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + 8];
    f[0..6].copy_from_slice(&A_MAC);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0xee, 1]);
    f[12..14].copy_from_slice(&[8, 0]);
    let total = (20 + 8 + 8 + inner.len()) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 1, 0, 2]);
    ip[16..20].copy_from_slice(&[10, 1, 0, 1]);
    let c = vnfs::csum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&50000u16.to_be_bytes());
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    f[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    f[42] = 0x08;
    f[46..49].copy_from_slice(&[0x00, 0x13, 0x89]);
    f.extend_from_slice(inner);
    f
}

fn main() {
    let mhz = cpu_mhz();
    println!("VLAN sub-ports and VXLAN tunnels, host, one core ({mhz:.0} MHz; best of 3, bursts of {BATCH}, {FLOWS} flows)\n");
    println!("{:<44} {:>16} {:>22} {:>11}", "path", "this", "baseline: plain port", "overhead");
    vlan(mhz);
    vxlan(mhz);
}
