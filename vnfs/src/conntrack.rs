//! A connection table any stage may keep (the ACL's stateful mode uses
//! one): flows by their 5-tuple as the initiator sent them, with the TCP
//! state and idle timeouts of [`crate::flow`]. Fixed capacity, keyed
//! hashes, a full table refuses new connections (counted) and expired
//! ones are removed lazily and by a bounded sweep.

use alloc::vec::Vec;

use crate::flow::{idle_timeout, Endpoint, Timeouts};
use crate::table::{hash_words, IndexTable};
use crate::Micros;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conn {
    /// 0: a free slot.
    proto: u8,
    tcp: u8,
    from: Endpoint,
    to: Endpoint,
    expires: Micros,
}

const FREE: Conn = Conn {
    proto: 0,
    tcp: 0,
    from: Endpoint { addr: core::net::Ipv4Addr::UNSPECIFIED, port: 0 },
    to: Endpoint { addr: core::net::Ipv4Addr::UNSPECIFIED, port: 0 },
    expires: 0,
};

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
    /// New connections refused: the table was full of live ones.
    pub refused_full: u64,
}

pub struct ConnTable {
    conns: Vec<Conn>,
    free: Vec<u32>,
    index: IndexTable,
    key: u64,
    timeouts: Timeouts,
    sweep_at: usize,
    pub counters: ConnCounters,
}

/// Connections a sweep looks at per call.
const SWEEP: usize = 8;

impl ConnTable {
    pub fn new(capacity: usize, timeouts: Timeouts, seed: u64) -> ConnTable {
        let capacity = capacity.max(1);
        ConnTable {
            conns: alloc::vec![FREE; capacity],
            free: (0..capacity as u32).rev().collect(),
            index: IndexTable::new(capacity),
            key: hash_words(seed, &[0x636f_6e6e]),
            timeouts,
            sweep_at: 0,
            counters: ConnCounters::default(),
        }
    }

    /// Bytes a table of `capacity` connections takes.
    pub fn memory_for(capacity: usize) -> usize {
        capacity * (core::mem::size_of::<Conn>() + 4) + IndexTable::memory_for(capacity)
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

    fn hash(&self, proto: u8, from: Endpoint, to: Endpoint) -> u64 {
        hash_words(
            self.key,
            &[proto as u64, u32::from(from.addr) as u64, from.port as u64, u32::from(to.addr) as u64, to.port as u64],
        )
    }

    fn find(&self, proto: u8, from: Endpoint, to: Endpoint) -> Option<u32> {
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
            hash_words(
                key,
                &[
                    o.proto as u64,
                    u32::from(o.from.addr) as u64,
                    o.from.port as u64,
                    u32::from(o.to.addr) as u64,
                    o.to.port as u64,
                ],
            )
        });
        self.conns[i as usize] = FREE;
        self.free.push(i);
    }

    /// The packet `from` → `to` on a live connection, either way: its timer
    /// and TCP state advance. `None` if no connection has it.
    pub fn seen(&mut self, proto: u8, from: Endpoint, to: Endpoint, flags: u8, now: Micros) -> Option<Way> {
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
        let t = idle_timeout(&self.timeouts, &mut c.tcp, proto, flags, way == Way::Original);
        c.expires = now + t;
        Some(way)
    }

    /// Whether a live connection has `from` → `to` either way (no timer
    /// moves: for ICMP errors about a connection, which prove nothing).
    pub fn has(&self, proto: u8, from: Endpoint, to: Endpoint, now: Micros) -> bool {
        self.find(proto, from, to)
            .or_else(|| self.find(proto, to, from))
            .is_some_and(|i| self.conns[i as usize].expires > now)
    }

    /// Starts tracking `from` → `to`; `false` if the table is full.
    pub fn open(&mut self, proto: u8, from: Endpoint, to: Endpoint, flags: u8, now: Micros) -> bool {
        if self.seen(proto, from, to, flags, now).is_some() {
            return true;
        }
        let Some(i) = self.free.pop() else {
            self.counters.refused_full += 1;
            return false;
        };
        let mut tcp = 0;
        let t = idle_timeout(&self.timeouts, &mut tcp, proto, flags, true);
        self.conns[i as usize] = Conn { proto, tcp, from, to, expires: now + t };
        self.index.insert(self.hash(proto, from, to), i);
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
        assert_eq!(c.seen(17, b, a, 0, 0), None);
        assert!(c.open(17, a, b, 0, 0));
        assert_eq!(c.seen(17, b, a, 0, 10), Some(Way::Reply));
        assert_eq!(c.seen(17, a, b, 0, 20), Some(Way::Original));
        let d = Endpoint::new(Ipv4Addr::new(10, 1, 0, 3), 53);
        assert!(c.open(17, a, d, 0, 20));
        assert!(c.open(17, d, a, 0, 30), "the reply way of a tracked connection is that connection");
        assert_eq!(c.len(), 2, "and takes no new slot");
        let e = Endpoint::new(Ipv4Addr::new(10, 1, 0, 4), 53);
        assert!(!c.open(17, a, e, 0, 30));
        assert_eq!(c.counters.refused_full, 1);
        // Past the timeout: gone, and the slot is free again.
        assert_eq!(c.seen(17, b, a, 0, 5_000), None);
        assert!(c.open(17, a, e, 0, 5_000));
        for n in 0..10 {
            c.sweep(10_000 + n);
        }
        assert!(c.is_empty());
    }
}
