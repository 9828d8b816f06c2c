//! A connection table any stage may keep (the ACL's stateful mode uses
//! one): flows by their 5-tuple as the initiator sent them, with the TCP
//! state and idle timeouts of [`crate::flow`]. Fixed capacity, keyed
//! hashes; expired connections are removed lazily and by a bounded sweep.
//! A packet the reply way is a reply only if it came in on another port
//! than the connection's first packet, so an outsider who spoofs a source
//! cannot also answer for the inside and complete the handshake itself.
//! A table holds one address family: `ConnTable` (IPv4, 32-byte entries)
//! or `ConnTable<Ipv6Addr>` (56-byte entries), so IPv4 pays nothing for
//! IPv6's width.
//!
//! No one source fills it (as the NAT's session table, and Linux
//! conntrack's early drop): each initiating address (IPv6: /64) holds at most its
//! quota of connections, and a new connection that finds the table full
//! (or its source at its quota) takes the place of a *transitory* one —
//! TCP whose handshake has not completed or that is closing, UDP or ICMP
//! that has had no reply — found near the sweep cursor (at its quota: the
//! source's own oldest, from a per-source ring). Only when none is
//! found is it refused (counted). Established connections are never
//! evicted, so a flood of spoofed SYNs or one-way datagrams cannot lock
//! out the connections that work.

use alloc::vec::Vec;

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::{idle_timeout, is_closing, is_established, Endpoint, Timeouts, TCP};
use crate::packet::PortId;
use crate::table::{hash_words, IndexTable};
use crate::Micros;

/// An address family a table can key on: IPv4 (the default) or IPv6, one
/// table per family, so an IPv4 table pays nothing for IPv6's width.
pub trait ConnAddr: Copy + Eq + core::fmt::Debug {
    const ZERO: Self;
    /// The address as hash input.
    fn words(self) -> [u64; 2];
    /// What the per-source quota counts by: the address itself (IPv4), or
    /// its /64 (IPv6), since one host may take any address of its /64 and
    /// would otherwise hold a quota per address it rotates through.
    fn source(self) -> Self;
}

impl ConnAddr for Ipv4Addr {
    const ZERO: Self = Ipv4Addr::UNSPECIFIED;
    fn words(self) -> [u64; 2] {
        [u32::from(self) as u64, 0]
    }
    fn source(self) -> Self {
        self
    }
}

impl ConnAddr for Ipv6Addr {
    const ZERO: Self = Ipv6Addr::UNSPECIFIED;
    fn words(self) -> [u64; 2] {
        let v = u128::from(self);
        [(v >> 64) as u64, v as u64]
    }
    fn source(self) -> Self {
        Ipv6Addr::from(u128::from(self) & !u64::MAX as u128)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conn<A = Ipv4Addr> {
    /// 0: a free slot.
    proto: u8,
    tcp: u8,
    /// A packet went the reply way (UDP, ICMP: no longer transitory).
    replied: bool,
    /// The port the first packet came in on: a reply is a reply only when
    /// it comes in on another, so an outsider cannot answer for the inside
    /// (forge the SYN-ACK of its own spoofed SYN and establish). It fits
    /// in the padding.
    port: PortId,
    /// The source's other connections, a ring in the order they were
    /// opened (8 bytes: entries are 32 bytes for IPv4, 56 for IPv6), so a
    /// source at its quota finds its own oldest transitory connection
    /// however few of the table's it holds.
    prev: u32,
    next: u32,
    from: Endpoint<A>,
    to: Endpoint<A>,
    expires: Micros,
}

impl<A: ConnAddr> Conn<A> {
    const FREE: Conn<A> = Conn {
        proto: 0,
        tcp: 0,
        replied: false,
        port: 0,
        prev: 0,
        next: 0,
        from: Endpoint { addr: A::ZERO, port: 0 },
        to: Endpoint { addr: A::ZERO, port: 0 },
        expires: 0,
    };
}

/// Which way a packet goes on a tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// As the initiator sent its first packet.
    Original,
    Reply,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCounters {
    pub created: u64,
    pub expired: u64,
    /// New connections refused: the table was full of live ones and none
    /// near the cursor was transitory.
    pub refused_full: u64,
    /// New connections refused: their source held its quota and none of
    /// its oldest was transitory.
    pub refused_quota: u64,
    /// Transitory connections removed to make room for new ones.
    pub evicted: u64,
}

impl<A> Conn<A> {
    /// Whether a new connection may take this one's place: expired, a TCP
    /// handshake not completed or a close begun, or no reply yet.
    fn transitory(&self, now: Micros) -> bool {
        self.expires <= now
            || if self.proto == TCP { !is_established(self.tcp) || is_closing(self.tcp) } else { !self.replied }
    }
}

/// The default quota of connections one source may initiate: an eighth of
/// the table, at least 64 (and at most all of it), as the NAT's per-host
/// quota.
pub fn default_quota(capacity: usize) -> u32 {
    let c = capacity.min(u32::MAX as usize) as u32;
    (c / 8).max(64).min(c)
}

pub struct ConnTable<A = Ipv4Addr> {
    conns: Vec<Conn<A>>,
    free: Vec<u32>,
    index: IndexTable,
    key: u64,
    timeouts: Timeouts,
    sweep_at: usize,
    /// Per initiating address (IPv6: /64), indexed by `by_source`: its
    /// live connections and the oldest of them (its ring's head).
    sources: Vec<(A, u32, u32)>,
    by_source: IndexTable,
    free_sources: Vec<u32>,
    quota: u32,
    pub counters: ConnCounters,
}

/// Connections a sweep looks at per call.
const SWEEP: usize = 8;
/// Connections a full table looks at for a transitory one to evict (a
/// source at its quota looks at 4 times as many for one of its own).
const EVICT_SCAN: usize = 64;

fn hash_conn<A: ConnAddr>(key: u64, proto: u8, from: Endpoint<A>, to: Endpoint<A>) -> u64 {
    let (f, t) = (from.addr.words(), to.addr.words());
    hash_words(key, &[proto as u64, f[0], f[1], from.port as u64, t[0], t[1], to.port as u64])
}

impl<A: ConnAddr> ConnTable<A> {
    pub fn new(capacity: usize, timeouts: Timeouts, seed: u64) -> ConnTable<A> {
        let capacity = capacity.max(1);
        ConnTable {
            conns: alloc::vec![Conn::FREE; capacity],
            free: (0..capacity as u32).rev().collect(),
            index: IndexTable::new(capacity),
            key: hash_words(seed, &[0x636f_6e6e]),
            timeouts,
            sweep_at: 0,
            sources: alloc::vec![(A::ZERO, 0, 0); capacity],
            by_source: IndexTable::new(capacity),
            free_sources: (0..capacity as u32).rev().collect(),
            quota: default_quota(capacity),
            counters: ConnCounters::default(),
        }
    }

    /// Bytes a table of `capacity` connections takes.
    pub fn memory_for(capacity: usize) -> usize {
        capacity * (core::mem::size_of::<Conn<A>>() + 4 + core::mem::size_of::<(A, u32, u32)>() + 4)
            + 2 * IndexTable::memory_for(capacity)
    }

    /// Sets the connections one source may initiate (a reload keeps the
    /// connections over a lowered quota; only new ones are refused).
    pub fn set_quota(&mut self, quota: u32) {
        self.quota = quota.max(1);
    }

    pub fn quota(&self) -> u32 {
        self.quota
    }

    fn h_source(&self, addr: A) -> u64 {
        hash_words(self.key ^ 8, &addr.words())
    }

    fn source_slot(&self, addr: A) -> Option<u32> {
        let sources = &self.sources;
        self.by_source.find(self.h_source(addr), |i| sources[i as usize].0 == addr)
    }

    /// Live connections `addr` initiated (for IPv6, its /64).
    pub fn source_connections(&self, addr: A) -> u32 {
        self.source_slot(addr.source()).map_or(0, |i| self.sources[i as usize].1)
    }

    /// Counts connection `c` (of `addr`) in or out of its source, and
    /// links it at the tail of (or unlinks it from) the source's ring.
    fn source_count(&mut self, addr: A, c: u32, up: bool) {
        let addr = addr.source();
        match self.source_slot(addr) {
            Some(i) if up => {
                let head = self.sources[i as usize].2;
                let tail = self.conns[head as usize].prev;
                (self.conns[c as usize].prev, self.conns[c as usize].next) = (tail, head);
                self.conns[tail as usize].next = c;
                self.conns[head as usize].prev = c;
                self.sources[i as usize].1 += 1;
            }
            Some(i) => {
                let (p, n) = (self.conns[c as usize].prev, self.conns[c as usize].next);
                self.conns[p as usize].next = n;
                self.conns[n as usize].prev = p;
                if self.sources[i as usize].2 == c {
                    self.sources[i as usize].2 = n;
                }
                let n = &mut self.sources[i as usize].1;
                *n = n.saturating_sub(1);
                if *n == 0 {
                    let h = self.h_source(addr);
                    let key = self.key;
                    let sources = &self.sources;
                    self.by_source.remove(h, i, |j| hash_words(key ^ 8, &sources[j as usize].0.words()));
                    self.free_sources.push(i);
                }
            }
            // One slot per live connection at most: never short.
            None if up => {
                if let Some(i) = self.free_sources.pop() {
                    (self.conns[c as usize].prev, self.conns[c as usize].next) = (c, c);
                    self.sources[i as usize] = (addr, 1, c);
                    self.by_source.insert(self.h_source(addr), i);
                }
            }
            None => {}
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.conns.len()
    }

    fn hash(&self, proto: u8, from: Endpoint<A>, to: Endpoint<A>) -> u64 {
        hash_conn(self.key, proto, from, to)
    }

    fn find(&self, proto: u8, from: Endpoint<A>, to: Endpoint<A>) -> Option<u32> {
        let h = self.hash(proto, from, to);
        self.index.find(h, |i| {
            let c = &self.conns[i as usize];
            c.proto == proto && c.from == from && c.to == to
        })
    }

    fn remove(&mut self, i: u32) {
        let c = self.conns[i as usize];
        let h = self.hash(c.proto, c.from, c.to);
        let conns = &self.conns;
        let key = self.key;
        self.index.remove(h, i, |j| {
            let o = &conns[j as usize];
            hash_conn(key, o.proto, o.from, o.to)
        });
        self.source_count(c.from.addr, i, false);
        self.conns[i as usize] = Conn::FREE;
        self.free.push(i);
    }

    /// Removes one transitory connection among the next `scan` from the
    /// sweep cursor, which walks the table in order so the ones it passes
    /// are those longest unvisited.
    fn evict(&mut self, now: Micros, scan: usize) -> bool {
        let n = self.conns.len();
        for _ in 0..scan.min(n) {
            let i = self.sweep_at;
            self.sweep_at = (i + 1) % n;
            let c = &self.conns[i];
            if c.proto != 0 && c.transitory(now) {
                self.evict_at(i as u32, now);
                return true;
            }
        }
        false
    }

    fn evict_at(&mut self, i: u32, now: Micros) {
        if self.conns[i as usize].expires <= now {
            self.counters.expired += 1;
        } else {
            self.counters.evicted += 1;
        }
        self.remove(i);
    }

    /// Removes `source`'s oldest transitory connection among its oldest
    /// `scan` (its ring from the head): a spoofer using the source's
    /// address takes the place of its own earlier SYNs, not of the
    /// source's connection that was opened since. The working ones looked
    /// at go to the ring's end (the head moves past them), so the next
    /// call looks further and a source with more than `scan` of them ahead
    /// of its transitory ones is refused at most once in a while.
    fn evict_own(&mut self, now: Micros, source: A, scan: usize) -> bool {
        let Some(s) = self.source_slot(source.source()) else { return false };
        let head = self.sources[s as usize].2;
        let mut i = head;
        for _ in 0..scan {
            if self.conns[i as usize].transitory(now) {
                self.sources[s as usize].2 = i;
                self.evict_at(i, now);
                return true;
            }
            i = self.conns[i as usize].next;
            if i == head {
                break;
            }
        }
        self.sources[s as usize].2 = i;
        false
    }

    /// The packet `from` → `to`, come in on `port`, on a live connection,
    /// either way: its timer and TCP state advance. `None` if no connection
    /// has it, or it goes the reply way but came in on the port the
    /// connection's first packet did (no reply, whatever its addresses say).
    pub fn seen(
        &mut self,
        proto: u8,
        from: Endpoint<A>,
        to: Endpoint<A>,
        port: PortId,
        flags: u8,
        now: Micros,
    ) -> Option<Way> {
        let (i, way) = match self.find(proto, from, to) {
            Some(i) => (i, Way::Original),
            None => (self.find(proto, to, from)?, Way::Reply),
        };
        let c = &mut self.conns[i as usize];
        if c.expires <= now {
            self.counters.expired += 1;
            self.remove(i);
            return None;
        }
        if way == Way::Reply && c.port == port {
            return None;
        }
        let t = idle_timeout(&self.timeouts, &mut c.tcp, proto, flags, way == Way::Original);
        c.expires = now + t;
        c.replied |= way == Way::Reply;
        Some(way)
    }

    /// Whether a live connection has `from` → `to` either way (no timer
    /// moves: for ICMP errors about a connection, which prove nothing).
    pub fn has(&self, proto: u8, from: Endpoint<A>, to: Endpoint<A>, now: Micros) -> bool {
        self.find(proto, from, to)
            .or_else(|| self.find(proto, to, from))
            .is_some_and(|i| self.conns[i as usize].expires > now)
    }

    /// Starts tracking `from` → `to`, come in on `port`; `false` if neither
    /// the table nor `from`'s quota had room, even after evicting a
    /// transitory connection.
    pub fn open(
        &mut self,
        proto: u8,
        from: Endpoint<A>,
        to: Endpoint<A>,
        port: PortId,
        flags: u8,
        now: Micros,
    ) -> bool {
        if self.seen(proto, from, to, port, flags, now).is_some() {
            return true;
        }
        if self.source_connections(from.addr) >= self.quota && !self.evict_own(now, from.addr, 4 * EVICT_SCAN) {
            self.counters.refused_quota += 1;
            return false;
        }
        if self.free.is_empty() && !self.evict(now, EVICT_SCAN) {
            self.counters.refused_full += 1;
            return false;
        }
        let Some(i) = self.free.pop() else { return false };
        let mut tcp = 0;
        let t = idle_timeout(&self.timeouts, &mut tcp, proto, flags, true);
        self.conns[i as usize] =
            Conn { proto, tcp, replied: false, port, prev: i, next: i, from, to, expires: now + t };
        self.index.insert(self.hash(proto, from, to), i);
        self.source_count(from.addr, i, true);
        self.counters.created += 1;
        true
    }

    /// Removes a few expired connections (bounded work per call).
    pub fn sweep(&mut self, now: Micros) {
        for _ in 0..SWEEP.min(self.conns.len()) {
            let i = self.sweep_at;
            self.sweep_at = (i + 1) % self.conns.len();
            if self.conns[i].proto != 0 && self.conns[i].expires <= now {
                self.counters.expired += 1;
                self.remove(i as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn replies_match_and_connections_expire_and_a_full_table_refuses() {
        let t = Timeouts { udp: 1_000, ..Timeouts::default() };
        let mut c = ConnTable::new(2, t, 1);
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 4000);
        let b = Endpoint::new(Ipv4Addr::new(10, 1, 0, 2), 53);
        assert_eq!(c.seen(17, b, a, 1, 0, 0), None);
        assert!(c.open(17, a, b, 0, 0, 0));
        assert_eq!(c.seen(17, b, a, 1, 0, 10), Some(Way::Reply));
        assert_eq!(c.seen(17, a, b, 1, 0, 20), Some(Way::Original));
        let d = Endpoint::new(Ipv4Addr::new(10, 1, 0, 3), 53);
        assert!(c.open(17, a, d, 0, 0, 20));
        assert!(c.open(17, d, a, 1, 0, 30), "the reply way of a tracked connection is that connection (a reply)");
        assert_eq!(c.len(), 2, "and takes no new slot");
        let e = Endpoint::new(Ipv4Addr::new(10, 1, 0, 4), 53);
        assert!(!c.open(17, e, a, 0, 0, 30));
        assert_eq!(c.counters.refused_full, 1);
        // Past the timeout: gone, and the slot is free again.
        assert_eq!(c.seen(17, b, a, 1, 0, 5_000), None);
        assert!(c.open(17, a, e, 0, 0, 5_000));
        for n in 0..10 {
            c.sweep(10_000 + n);
        }
        assert!(c.is_empty());
    }

    fn ep(a: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 1, 0, a), port)
    }

    #[test]
    fn a_full_table_evicts_transitory_connections_never_established_ones() {
        use crate::flow::tcp_flags::{ACK, SYN};
        let mut c = ConnTable::new(4, Timeouts::default(), 1);
        let (client, server) = (Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 4000), ep(2, 80));
        // An established TCP connection (the whole handshake) and a UDP
        // flow with a reply.
        assert!(c.open(TCP, client, server, 0, SYN, 0));
        c.seen(TCP, server, client, 1, SYN | ACK, 1);
        c.seen(TCP, client, server, 1, ACK, 2);
        let dns = ep(3, 53);
        assert!(c.open(17, client, dns, 0, 0, 3));
        c.seen(17, dns, client, 1, 0, 4);
        // Spoofed SYNs fill the rest, then keep taking each other's place.
        for i in 0..20u8 {
            assert!(c.open(TCP, ep(100 + i, 1000), Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80), 0, SYN, 10));
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.counters.evicted, 18);
        assert!(c.has(TCP, client, server, 11) && c.has(17, client, dns, 11), "the working connections stay");
        // Once only working connections are left, a new one is refused.
        let mut full = ConnTable::new(2, Timeouts::default(), 1);
        for p in [1, 2] {
            assert!(full.open(17, client, ep(4, p), 0, 0, 0));
            full.seen(17, ep(4, p), client, 1, 0, 1);
        }
        assert!(!full.open(17, ep(5, 5), ep(4, 3), 0, 0, 2));
        assert_eq!(full.counters.refused_full, 1);
    }

    #[test]
    fn a_reply_counts_only_from_another_port() {
        use crate::flow::tcp_flags::{ACK, SYN};
        let (s, server) = (ep(100, 1000), Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80));
        let mut c = ConnTable::new(4, Timeouts::default(), 1);
        assert!(c.open(TCP, s, server, 1, SYN, 0));
        assert_eq!(c.seen(TCP, server, s, 1, SYN | ACK, 1), None, "a SYN-ACK from where the SYN came");
        c.seen(TCP, s, server, 1, ACK, 2);
        c.open(17, ep(5, 5), ep(4, 3), 0, 0, 3);
        assert!(c.evict(3, 4), "the forged handshake left it transitory");
        assert_eq!(c.seen(TCP, server, s, 0, SYN | ACK, 1), None, "evicted");
        assert!(c.open(TCP, s, server, 1, SYN, 4));
        assert_eq!(c.seen(TCP, server, s, 0, SYN | ACK, 5), Some(Way::Reply));
        assert_eq!((core::mem::size_of::<Conn>(), core::mem::size_of::<Conn<Ipv6Addr>>()), (32, 56));
    }

    #[test]
    fn a_source_at_its_quota_replaces_its_oldest_transitory_connection_wherever_it_is() {
        use crate::flow::tcp_flags::{ACK, SYN};
        let mut c = ConnTable::new(65536, Timeouts::default(), 1);
        c.set_quota(16);
        let (victim, server) = (Ipv4Addr::new(10, 1, 0, 7), ep(2, 80));
        // A spoofer fills the victim's quota with SYNs, far from the cursor.
        for p in 0..16 {
            assert!(c.open(TCP, Endpoint::new(victim, 1000 + p), server, 1, SYN, 0));
        }
        c.sweep_at = 30_000;
        // The victim's own SYN takes the oldest spoofed one's place, and
        // lives through 15 more spoofed SYNs to see its SYN-ACK.
        let own = Endpoint::new(victim, 5000);
        assert!(c.open(TCP, own, server, 1, SYN, 1));
        for p in 0..15 {
            assert!(c.open(TCP, Endpoint::new(victim, 2000 + p), server, 1, SYN, 2));
        }
        assert_eq!(c.seen(TCP, server, own, 0, SYN | ACK, 3), Some(Way::Reply));
        c.seen(TCP, own, server, 1, ACK, 4);
        assert_eq!((c.counters.evicted, c.counters.refused_quota, c.source_connections(victim)), (16, 0, 16));
        // Established, it is passed over: the spoofed SYNs replace each other.
        for p in 0..40 {
            assert!(c.open(TCP, Endpoint::new(victim, 3000 + p), server, 1, SYN, 5));
        }
        assert!(c.has(TCP, own, server, 6));
        // More working connections ahead than one call looks at: refused
        // once, then the next call looks past them.
        let mut d = ConnTable::new(1024, Timeouts::default(), 1);
        d.set_quota(300);
        for p in 0..290 {
            let e = Endpoint::new(victim, 1000 + p);
            assert!(d.open(17, e, server, 1, 0, 0));
            d.seen(17, server, e, 0, 0, 0);
        }
        for p in 0..10 {
            assert!(d.open(TCP, Endpoint::new(victim, 2000 + p), server, 1, SYN, 1));
        }
        d.sweep_at = 600;
        assert!(!d.open(TCP, own, server, 1, SYN, 2));
        assert!(d.open(TCP, own, server, 1, SYN, 2));
        assert_eq!((d.counters.refused_quota, d.counters.evicted, d.len()), (1, 1, 300));
        for n in 0..20_000 {
            c.sweep(Timeouts::default().tcp_established * 2 + n);
        }
        assert!(c.is_empty() && c.source_connections(victim) == 0);
    }

    #[test]
    fn one_source_holds_at_most_its_quota() {
        let mut c = ConnTable::new(64, Timeouts::default(), 1);
        c.set_quota(4);
        let flooder = |p: u16| Endpoint::new(Ipv4Addr::new(10, 1, 0, 66), p);
        // Replied UDP flows up to the quota: the fifth is refused.
        for p in 0..4 {
            assert!(c.open(17, flooder(p), ep(2, 53), 0, 0, 0));
            c.seen(17, ep(2, 53), flooder(p), 1, 0, 1);
        }
        assert!(!c.open(17, flooder(9), ep(2, 53), 0, 0, 2));
        assert_eq!((c.counters.refused_quota, c.source_connections(Ipv4Addr::new(10, 1, 0, 66))), (1, 4));
        // Its transitory ones make room for its own new ones only.
        let mut d = ConnTable::new(64, Timeouts::default(), 1);
        d.set_quota(4);
        for p in 0..100 {
            assert!(d.open(TCP, flooder(p), ep(2, 80), 0, crate::flow::tcp_flags::SYN, 0));
        }
        assert_eq!(d.len(), 4);
        assert!(d.open(17, Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 5), ep(2, 53), 0, 0, 1), "another source gets in");
        // Every removal gives the source's count back.
        for n in 0..200 {
            d.sweep(Timeouts::default().tcp_established * 2 + n);
        }
        assert!(d.is_empty());
        assert_eq!(d.source_connections(Ipv4Addr::new(10, 1, 0, 66)), 0);
    }

    #[test]
    fn an_ipv6_table_tells_addresses_apart_by_all_128_bits_and_keeps_the_quota() {
        let six = |s: &str, p| Endpoint::new(s.parse::<Ipv6Addr>().unwrap(), p);
        let mut c: ConnTable<Ipv6Addr> = ConnTable::new(64, Timeouts::default(), 1);
        c.set_quota(2);
        let (a, b) = (six("2001:db8:0:1::2", 4000), six("2001:db8:0:2::5", 80));
        assert!(c.open(17, a, b, 0, 0, 0));
        assert_eq!(c.seen(17, b, a, 1, 0, 1), Some(Way::Reply));
        // The same low 64 bits on another /64 is another host.
        assert_eq!(c.seen(17, six("2001:db8:0:3::5", 80), a, 1, 0, 1), None);
        assert!(c.open(17, a, six("2001:db8:0:2::6", 80), 0, 0, 2));
        c.seen(17, six("2001:db8:0:2::6", 80), a, 1, 0, 3);
        assert!(!c.open(17, a, six("2001:db8:0:2::7", 80), 0, 0, 4), "its quota of 2");
        assert_eq!(c.source_connections(a.addr), 2);
    }
}
