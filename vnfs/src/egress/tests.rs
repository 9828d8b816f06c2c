//! The egress's neighbour holding on real frames through the dataplane: a
//! scan of a connected prefix from outside keeps the pool for receive, and
//! never pushes out the next hops in use.

use core::net::Ipv4Addr;
use std::vec::Vec;

use crate::counters::DropReason;
use crate::testutil::*;

const LAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const WAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const LAN_ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// lan 10.0.0.0/16, wan 10.1.0.0/24; `extra` adds statements.
fn rig(extra: &str) -> Rig {
    Rig::with_config(
        &std::format!("port lan address 10.0.0.1/16\nport wan address 10.1.0.1/24\n{extra}"),
        &[LAN_MAC, WAN_MAC],
    )
}

/// A UDP datagram from the outside to `dst` on lan.
fn from_wan(r: &mut Rig, dst: Ipv4Addr) {
    r.now += 1;
    r.send(1, &udp_frame(WAN_MAC, (WAN_HOST, 4000), (dst, 22), b"scan"));
}

/// The frames lan sent since the last call: (destination MAC, is ARP).
fn lan_out(r: &mut Rig) -> Vec<([u8; 6], bool)> {
    r.sent(1);
    r.sent(0).into_iter().map(|f| (f[0..6].try_into().unwrap(), f[12..14] == [0x08, 0x06])).collect()
}

fn target(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + i)
}

#[test]
fn a_scan_of_unresolved_addresses_leaves_the_pool_its_buffers() {
    let mut r = rig("");
    let cap = super::held_cap(RIG_BUFFERS, 2);
    for i in 0..63 {
        for _ in 0..4 {
            from_wan(&mut r, target(i));
            lan_out(&mut r);
        }
    }
    assert!(
        r.pool.available() >= RIG_BUFFERS - cap,
        "{} buffers free of {RIG_BUFFERS}: the waiting packets may hold {cap}",
        r.pool.available()
    );
    assert_eq!(r.pool.available() + cap, RIG_BUFFERS, "the share is used, no more");
    assert_eq!(r.drops(1, DropReason::NeighborHoldFull), 63 * 4 - cap as u64);
    // Every target was still asked for: one that answers gets what
    // arrives from then on.
    let late = target(62);
    r.send(0, &arp_reply([2, 0, 0, 0, 0, 62], late, LAN_MAC, LAN_ME));
    lan_out(&mut r);
    from_wan(&mut r, late);
    assert_eq!(lan_out(&mut r), [([2, 0, 0, 0, 0, 62], false)]);
    r.finish();
}

#[test]
fn a_scan_never_evicts_neighbours_that_answered() {
    // One window: every new entry competes with every old one.
    let mut r = rig("arp entries 16");
    let known = |i: u8| (Ipv4Addr::new(10, 0, 0, 10 + i), [2, 0, 0, 0, 0, 10 + i]);
    for i in 0..16 {
        let (ip, mac) = known(i);
        r.now += 1;
        r.send(0, &arp_request(mac, ip, LAN_ME));
    }
    lan_out(&mut r);
    for i in 0..40 {
        from_wan(&mut r, target(i));
        lan_out(&mut r);
    }
    assert_eq!(r.drops(1, DropReason::NeighborTableFull), 40);
    for i in 0..16 {
        let (ip, mac) = known(i);
        from_wan(&mut r, ip);
        assert_eq!(lan_out(&mut r), [(mac, false)], "{ip} still known");
    }
    r.finish();
}

/// The slot the cache's hash before it was keyed gave (port, address) in
/// a table of 1024: public, so addresses can be chosen to share one.
fn unkeyed_home(port: u8, ip: Ipv4Addr) -> u64 {
    let k = (u32::from(ip) as u64) << 8 | port as u64;
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & 1023
}

#[test]
fn chosen_colliding_addresses_do_not_evict_the_gateway() {
    let mut r = rig("arp entries 1024");
    let (gw, gw_mac) = (Ipv4Addr::new(10, 0, 255, 254), [2, 0, 0, 0, 0, 0xfe]);
    r.send(0, &arp_reply(gw_mac, gw, LAN_MAC, LAN_ME));
    let home = unkeyed_home(0, gw);
    let chosen: Vec<Ipv4Addr> =
        (2..0xfff0u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).filter(|&a| unkeyed_home(0, a) == home).collect();
    assert!(chosen.len() >= 32, "{} addresses share the gateway's slot", chosen.len());
    // Each asks for the appliance: an ARP request for us creates an entry.
    for (i, &a) in chosen.iter().take(32).enumerate() {
        r.now += 1;
        r.send(0, &arp_request([2, 0, 1, 0, 0, i as u8], a, LAN_ME));
    }
    lan_out(&mut r);
    from_wan(&mut r, gw);
    assert_eq!(lan_out(&mut r), [(gw_mac, false)], "the gateway is still known");
    r.finish();
}
