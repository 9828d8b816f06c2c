//! What the fuzz targets share: a config built from the input's first
//! bytes (so the fuzzer explores configs too) and the run of a whole
//! dataplane over frames, which must never panic and never leak a buffer.
//!
//! `make fuzz` runs each target under AFL++ (cargo-afl); `make test` runs
//! each for a short bounded time (scripts/fuzz.sh). A target built with
//! `cargo afl build` also reads one input from stdin when run by hand
//! (`target/fuzz/release/fuzz-frames < FILE`): that is how a crash is
//! replayed. What the fuzzers found is kept as a regression test beside
//! the code it hit (so far: `config::tests::a_huge_maglev_size_is_refused_
//! before_any_primality_test`, a hang the config target found).

use vnfs::dataplane::Dataplane;
use vnfs::packet::{Batch, PacketPool, BURST};
use vnfs::registry as config;

pub const MACS: [[u8; 6]; 3] = [[0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]];

/// A config with every stage, VLAN sub-ports (QinQ too), VXLAN and Geneve
/// tunnels (one for service insertion) and a VRF with its own NAT, varied
/// by `sel`: NAT filtering, LB mode, pipeline order, MTU, reverse-path mode.
pub fn config_text(sel: u8) -> String {
    let filtering = ["endpoint-independent", "address-dependent", "address-and-port-dependent"][sel as usize % 3];
    let mode = if sel & 4 != 0 { "dnat" } else { "full-nat" };
    let pipeline = match (sel >> 3) & 3 {
        0 => "",
        1 => "pipeline lan lb router nat\npipeline wan nat lb router\n",
        2 => "pipeline lan router nat lb\npipeline wan lb nat router\n",
        _ => "pipeline lan nat\npipeline wan router\n",
    };
    // IPv6 ports need 1280 at least.
    let mtu6 = if sel & 32 != 0 { 1280 } else { 1500 };
    let rpf = ["strict", "loose", "off", "loose"][(sel >> 6) as usize];
    format!(
        "port lan address 10.0.0.1/24 address 2001:db8:0:1::1/64 rpf {rpf}\nport wan address 10.1.0.1/24 address 2001:db8:0:2::1/64 mtu {mtu6}\nport mgmt address 10.9.0.1/24\n\
         vrf blue\nport lan7 on lan vlan 7 address 10.7.0.1/24\nport qq on lan vlan 8 outer-vlan 20 address 10.8.0.1/24 priority 3\n\
         tunnel vx vxlan vni 5001 local 10.1.0.1 remote 10.1.0.2 remote 10.1.0.3 address 10.0.0.1/24 vrf blue\n\
         tunnel gv geneve vni 77 local 10.1.0.1 remote 10.1.0.4 address 10.6.0.1/24\ntunnel gi geneve vni 78 local 10.1.0.1 mode insertion\n\
         route 0.0.0.0/0 via 10.1.0.254 port wan vrf blue\n\
         nat blue {{\n inside 10.0.0.0/24\n outside wan\n pool 10.1.0.6\n vrf blue\n sessions 64\n}}\n\
         management mgmt listen 8080\nroute 0.0.0.0/0 via 10.1.0.254\nroute 10.2.0.0/16 via 10.0.0.254\n\
         route ::/0 via 2001:db8:0:2::fe\nroute 2001:db8:5::/48 via fe80::1 port lan\nra lan interval 4\n\
         nat {{\n inside 10.0.0.0/24\n outside wan\n pool 10.1.0.1\n pool 10.1.0.5\n filtering {filtering}\n sessions 64\n ports 1024-1100\n\
         forward tcp 10.1.0.1:8080 10.0.0.3:80\n forward udp 10.1.0.5:53 10.0.0.4:53\n}}\n\
         nat64 {{\n prefix 64:ff9b:1::/96\n inside 2001:db8:0:1::/64\n outside wan\n ports 2000-2100\n sessions 64\n}}\n\
         service web6 {{\n vip [2001:db8:0:1::80]:80\n mode {mode}\n check none\n backend [2001:db8:0:2::11]:8000\n backend [2001:db8:0:2::12]:8000 weight 2\n}}\n\
         service web {{\n vip 10.1.0.9:80\n mode {mode}\n check none\n backend 10.0.0.11:8000\n backend 10.0.0.12:8000 weight 0\n backend 10.2.0.13:8000 weight 3\n}}\n\
         service dns {{\n vip 10.1.0.9:53 udp\n check tcp\n interval 10ms\n backend 10.0.0.11:53\n}}\n\
         lb table-size 251 flows 64\nrouter icmp-rate 1000\narp entries 16\n{pipeline}"
    )
}

/// A dataplane per config selector, built once per process: building one
/// costs ~250 µs (tables, host stacks), far more than a run, so AFL's
/// persistent mode reuses it. Every run ends with all timers fired far in
/// the future, so little state carries from one input to the next; a crash
/// that needs earlier inputs still shows, and is replayed from AFL's queue.
struct Rig {
    sel: u8,
    dp: Dataplane,
    pool: PacketPool,
    now: u64,
}

thread_local! {
    static RIG: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    static BASE: std::cell::RefCell<(Dataplane, PacketPool)> = std::cell::RefCell::new((
        Dataplane::new(&config::parse(&config_text(0)).expect("valid"), &MACS, 0, 1),
        PacketPool::new(BASE_BUFFERS),
    ));
}

/// Buffers of the pool [`with_base`] lends.
pub const BASE_BUFFERS: usize = 16;

/// Runs `f` on one dataplane of `config_text(0)` and its pool, built once
/// per process (the config and mgmt targets share this).
pub fn with_base<R>(f: impl FnOnce(&mut Dataplane, &mut PacketPool) -> R) -> R {
    BASE.with(|b| {
        let (dp, pool) = &mut *b.borrow_mut();
        f(dp, pool)
    })
}

/// Runs `data` through a dataplane: byte 0 picks the config, then records
/// of (port, time step, count, then per frame length/7 and bytes) are
/// bursts of frames.
pub fn run_frames(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    RIG.with(|rig| {
        let mut rig = rig.borrow_mut();
        if rig.as_ref().is_none_or(|r| r.sel != sel) {
            let cfg = config::parse(&config_text(sel)).expect("the fuzz configs are valid");
            let mut dp = Dataplane::new(&cfg, &MACS, 0, 0x5eed);
            for (i, offloads) in [sel & 1 != 0, sel & 2 != 0, false].into_iter().enumerate() {
                dp.port_mut(i as u8).offloads = offloads;
            }
            *rig = Some(Rig { sel, dp, pool: PacketPool::with_tails(256, 8), now: 1 });
        }
        let r = rig.as_mut().expect("built above");
        run_on(&mut r.dp, &mut r.pool, &mut r.now, rest);
    });
}

fn run_on(dp: &mut Dataplane, pool: &mut PacketPool, now: &mut u64, mut rest: &[u8]) {
    let capacity = pool.capacity();
    while rest.len() >= 4 {
        let port = rest[0] % 3;
        *now += rest[1] as u64 * 4096;
        let count = (rest[2] as usize % BURST) + 1;
        rest = &rest[3..];
        let mut batch = Batch::new();
        for _ in 0..count {
            let Some((&len_byte, tail)) = rest.split_first() else { break };
            let len = (len_byte as usize * 7).min(tail.len());
            let (frame, tail) = tail.split_at(len);
            rest = tail;
            let Some(mut p) = pool.alloc() else { break };
            p.fill(frame);
            if batch.push(p).is_err() {
                break;
            }
        }
        dp.receive(port, &mut batch, pool, *now);
        dp.poll(*now, pool);
        // Whatever the ports would transmit goes back to the pool.
        for i in 0..3u8 {
            while let Some(p) = dp.port_mut(i).tx.pop_front() {
                pool.free(p);
            }
        }
    }
    // Time passes: every timer fires, every held packet is let go.
    for _ in 0..4 {
        *now += 8_000_000_000;
        dp.poll(*now, pool);
        for i in 0..3u8 {
            while let Some(p) = dp.port_mut(i).tx.pop_front() {
                pool.free(p);
            }
        }
    }
    dp.drain(pool);
    assert_eq!(pool.available(), capacity, "a buffer leaked");
}

/// The ACL target's config: a stateful (or stateless) ACL on both ports
/// with port, ICMP and protocol rules, a connection table small enough for
/// the fuzzer to fill (eviction, quotas), varied by `sel`; IPv6 addresses
/// on the ports (bit 4) and IPv6 rules (bit 5), so IPv6 frames reach the
/// ACL's IPv6 parser, rules and connection table.
pub fn acl_config_text(sel: u8) -> String {
    let stateful = if sel & 1 != 0 { " stateful\n" } else { "" };
    let quota = [4, 16][(sel >> 1) as usize & 1];
    let default = ["deny", "permit", "reject", "deny"][(sel >> 2) as usize & 3];
    let (lan6, wan6) =
        if sel & 16 != 0 { (" address 2001:db8:0:1::1/64", " address 2001:db8:0:2::1/64") } else { ("", "") };
    let rules6 = if sel & 32 != 0 {
        " rule permit tcp6 src 2001:db8:0:1::/64 dport 80-443\n rule reject udp6 dport 7\n\
         rule permit icmp6 type 128\n rule deny ip6 src 2001:db8:0:2::/64\n"
    } else {
        ""
    };
    format!(
        "port lan address 10.0.0.1/24{lan6}\nport wan address 10.1.0.1/24{wan6}\nroute 0.0.0.0/0 via 10.1.0.254\n\
         acl fw {{\n port lan wan\n{stateful} connections 16\n source-connections {quota}\n\
         rule deny tcp dport 22\n rule reject tcp dport 23\n rule permit tcp dport 80-443\n\
         rule permit udp src 10.0.0.0/24 dport 53\n rule deny udp dst 10.1.0.0/16 sport 1-1023\n\
         rule permit icmp type 8\n rule reject udp dport 7\n rule permit 47 src 10.0.0.0/25\n{rules6} default {default}\n}}\n"
    )
}

thread_local! {
    static ACL_RIG: std::cell::RefCell<Option<Rig>> = const { std::cell::RefCell::new(None) };
}

/// Runs `data` through the ACL's dataplane: byte 0 picks the config, then
/// records of (port, time step, count) are bursts, and each frame is
/// (length/7, chunk, bytes): a chunk of 0 puts the frame in one buffer,
/// else in a chain of buffers of `chunk * 4` bytes (at least 8), as a NIC
/// with mergeable buffers delivers a super-packet. Fragments, tiny
/// fragments, ICMP errors and the connection table's eviction all come
/// from the frames' bytes. Never a panic, never a leaked buffer.
pub fn run_acl(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    ACL_RIG.with(|rig| {
        let mut rig = rig.borrow_mut();
        if rig.as_ref().is_none_or(|r| r.sel != sel) {
            let cfg = config::parse(&acl_config_text(sel)).expect("the fuzz configs are valid");
            let dp = Dataplane::new(&cfg, &MACS[..2], 0, 0x5eed);
            *rig = Some(Rig { sel, dp, pool: PacketPool::with_tails(256, 16), now: 1 });
        }
        let r = rig.as_mut().expect("built above");
        let (dp, pool, now) = (&mut r.dp, &mut r.pool, &mut r.now);
        let capacity = pool.capacity();
        while rest.len() >= 4 {
            let port = rest[0] % 2;
            *now += rest[1] as u64 * 4096;
            let count = (rest[2] as usize % BURST) + 1;
            rest = &rest[3..];
            let mut batch = Batch::new();
            for _ in 0..count {
                let [len_byte, chunk, tail @ ..] = rest else { break };
                let len = (*len_byte as usize * 7).min(tail.len());
                let (frame, tail) = tail.split_at(len);
                rest = tail;
                let Some(p) = chain(pool, frame, *chunk as usize * 4) else { break };
                if batch.push(p).is_err() {
                    break;
                }
            }
            dp.receive(port, &mut batch, pool, *now);
            dp.poll(*now, pool);
            for i in 0..2u8 {
                while let Some(p) = dp.port_mut(i).tx.pop_front() {
                    pool.free(p);
                }
            }
        }
        for _ in 0..4 {
            *now += 8_000_000_000;
            dp.poll(*now, pool);
            for i in 0..2u8 {
                while let Some(p) = dp.port_mut(i).tx.pop_front() {
                    pool.free(p);
                }
            }
        }
        dp.drain(pool);
        assert_eq!(pool.available(), capacity, "a buffer leaked");
    });
}

/// `frame` in one buffer (`chunk` 0), else in buffers of `chunk` bytes
/// (at least 8); `None` when the pool is out of buffers.
fn chain(pool: &mut PacketPool, frame: &[u8], chunk: usize) -> Option<vnfs::packet::Packet> {
    let mut head = pool.alloc()?;
    if chunk == 0 {
        head.fill(frame);
        return Some(head);
    }
    let mut parts = frame.chunks(chunk.max(8));
    head.fill(parts.next().unwrap_or(&[]));
    for part in parts {
        let Some(mut s) = pool.alloc() else { break };
        s.fill(part);
        if let Err(s) = pool.append(&mut head, s) {
            pool.free(s);
            break;
        }
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    /// Every fuzz config is valid and the seeds' shape runs clean twice
    /// (the second time on the kept dataplane).
    #[test]
    fn configs_are_valid_and_a_run_returns_every_buffer() {
        for sel in 0..=255u8 {
            vnfs::registry::parse(&super::config_text(sel)).unwrap_or_else(|e| panic!("selector {sel}: {e:?}"));
        }
        let input = [0u8, 0, 1, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        super::run_frames(&input);
        super::run_frames(&input);
        for sel in 0..=255u8 {
            vnfs::registry::parse(&super::acl_config_text(sel)).unwrap_or_else(|e| panic!("acl selector {sel}: {e:?}"));
        }
        let input = [1u8, 0, 1, 0, 9, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        super::run_acl(&input);
        super::run_acl(&input);
        // An IPv6 UDP frame (to the lan port's MAC) through IPv6 rules.
        let mut f = std::vec![0x52, 0x54, 0, 0, 0, 1, 2, 0, 0, 0, 0, 9, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 12, 17, 64];
        f.extend_from_slice(&"2001:db8:0:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:db8:0:2::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[0x9c, 0x40, 0, 7, 0, 12, 0, 0, 1, 2, 3, 4]);
        let mut input = std::vec![49u8, 0, 1, 0, (f.len() / 7 + 1) as u8, 0];
        input.extend_from_slice(&f);
        super::run_acl(&input);
    }
}
