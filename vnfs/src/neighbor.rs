//! The neighbour caches of the egress: next hop → MAC, per port. One for
//! IPv4 (ARP) and one for IPv6 (neighbour discovery), the same code over
//! the address type.
//!
//! The IPv6 cache runs the neighbour unreachability detection of RFC 4861
//! §7.3: REACHABLE for the reachable time after a confirmation (a
//! solicited advertisement), then STALE (still used); the first use of a
//! stale entry makes it DELAY, which after 5 s becomes PROBE (unicast
//! solicitations, one a second, three at most) and then is deleted unless
//! confirmed. An unsolicited advertisement or a solicitation with a
//! link-layer option makes an entry STALE. The IPv4 cache keeps the
//! simpler ARP life: reachable, a refresh request in the last quarter.
//!
//! Fixed capacity, set from the config at start: a slot is found by hashing
//! (port, address) and scanning a short window, so lookups never allocate and
//! never walk the table. Entries age out after the reachable time; a little
//! before that, a use triggers a refresh request while the old MAC keeps
//! working. An unresolved neighbour holds a few packets (sent as soon as the
//! reply arrives); after `RETRIES` unanswered requests its packets are
//! dropped and new ones are refused for a hold-down period, so a dead next
//! hop costs one request a second, not one per packet.
//!
//! Scanning a connected prefix makes one unresolved entry per address, so
//! the cache counts the buffers its entries hold per port (the egress caps
//! them at a share of the pool), the slot hash is keyed with the boot
//! secret (chosen addresses cannot all land in one window), and an entry
//! that is still unresolved never evicts one that answered.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::packet::{Packet, PortId};
use crate::table::hash_words;
use crate::Micros;

/// Packets that may wait for one unresolved neighbour.
pub const QUEUE: usize = 4;
/// Requests sent for an unresolved neighbour before giving up.
pub const RETRIES: u8 = 3;
/// Time between requests for an unresolved neighbour.
pub const RETRY_INTERVAL: Micros = 1_000_000;
/// How long a neighbour that never answered is refused.
pub const HOLD_DOWN: Micros = 3_000_000;
/// Slots scanned per lookup.
const WINDOW: usize = 16;
/// RFC 4861 §10: DELAY_FIRST_PROBE_TIME, RETRANS_TIMER, MAX_UNICAST_SOLICIT.
pub const DELAY_FIRST_PROBE: Micros = 5_000_000;
pub const RETRANS_TIMER: Micros = 1_000_000;
pub const MAX_UNICAST_SOLICIT: u8 = 3;

/// An address the cache is keyed by.
pub trait NeighborAddr: Copy + Eq + core::fmt::Debug + core::fmt::Display {
    const UNSPECIFIED: Self;
    /// 64 bits of the address for the slot hash.
    fn fold(&self) -> u64;
}

impl NeighborAddr for Ipv4Addr {
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    fn fold(&self) -> u64 {
        u32::from(*self) as u64
    }
}

impl NeighborAddr for Ipv6Addr {
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    fn fold(&self) -> u64 {
        let b = u128::from(*self);
        (b as u64) ^ ((b >> 64) as u64).rotate_left(29)
    }
}

/// How a neighbour was heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A reply to our request (ARP reply, solicited NA): reachable.
    Confirmed,
    /// Its link-layer address without proof of reachability (a
    /// solicitation, an unsolicited advertisement): stale (IPv6).
    Unconfirmed,
}

#[derive(Debug)]
enum State {
    Free,
    /// Requests sent, no reply yet.
    Incomplete {
        sent: u8,
        next_retry: Micros,
        queue: heapless::Vec<Packet, QUEUE>,
    },
    Reachable {
        mac: [u8; 6],
        expires: Micros,
        refresh_sent: bool,
    },
    /// IPv6: the reachable time is over; still used.
    Stale {
        mac: [u8; 6],
    },
    /// IPv6: used while stale; probed at `until` unless confirmed first.
    Delay {
        mac: [u8; 6],
        until: Micros,
    },
    /// IPv6: unicast solicitations sent, the MAC still used.
    Probe {
        mac: [u8; 6],
        sent: u8,
        next: Micros,
    },
    /// Never answered; refused until `until`.
    Failed {
        until: Micros,
    },
    /// From the config (`neighbor IP mac MAC`): never expires, never
    /// evicted, not changed by ARP.
    Static {
        mac: [u8; 6],
    },
}

#[derive(Debug)]
struct Entry<A> {
    port: PortId,
    ip: A,
    last_used: Micros,
    state: State,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Use this MAC; if `refresh`, also send a request to confirm it.
    Known {
        mac: [u8; 6],
        refresh: bool,
    },
    Unknown,
}

/// What happened to a packet handed to [`NeighborCache::enqueue`].
#[derive(Debug)]
pub enum Enqueued {
    /// Held; send a request now if `request`.
    Held { request: bool },
    /// Not held: the queue for this neighbour is full.
    QueueFull(Packet),
    /// Not held: the neighbour did not answer recently.
    Unreachable(Packet),
    /// Not held: no slot for another neighbour.
    TableFull(Packet),
    /// Not held: the caller said there is no room for more held buffers;
    /// the neighbour is resolved all the same (ask now if `request`).
    NoRoom { pkt: Packet, request: bool },
}

/// Work that timers produced.
#[derive(Debug)]
pub enum TimerAction<A = Ipv4Addr> {
    /// Send another request for this neighbour (unicast to `known`).
    Request { port: PortId, ip: A, known: Option<[u8; 6]> },
    /// This packet waited for a neighbour that never answered.
    GiveUp(Packet),
}

#[derive(Clone, Debug, Default)]
pub struct NeighborCounters {
    pub learned: u64,
    pub requests: u64,
    pub evicted: u64,
    pub failed: u64,
    /// Permanent entries that found no slot (their window was full of them).
    pub static_refused: u64,
}

pub struct NeighborCache<A: NeighborAddr = Ipv4Addr> {
    slots: Vec<Entry<A>>,
    mask: usize,
    reachable: Micros,
    /// Neighbour unreachability detection (RFC 4861 states): IPv6.
    nud: bool,
    sweep_at: usize,
    /// The secret the slot hash is keyed with.
    key: u64,
    /// Buffers held by unresolved entries, per port.
    held: Vec<u32>,
    pub counters: NeighborCounters,
}

/// Buffers a held packet occupies (a chained frame: all of them).
fn buffers(p: &Packet) -> u32 {
    1 + p.tail().len() as u32
}

impl NeighborCache<Ipv4Addr> {
    /// Bytes an ARP cache of `capacity` entries takes (computed before building it).
    pub fn memory_for(capacity: usize) -> usize {
        capacity.max(WINDOW).next_power_of_two() * core::mem::size_of::<Entry<Ipv4Addr>>()
    }

    /// `capacity` is rounded up to a power of two (at least `WINDOW`).
    pub fn new(capacity: usize, reachable: Micros) -> Self {
        Self::build(capacity, reachable, false)
    }
}

impl NeighborCache<Ipv6Addr> {
    /// Bytes an IPv6 cache of `capacity` entries takes.
    pub fn memory_for(capacity: usize) -> usize {
        capacity.max(WINDOW).next_power_of_two() * core::mem::size_of::<Entry<Ipv6Addr>>()
    }

    /// An IPv6 neighbour cache (RFC 4861 states).
    pub fn new(capacity: usize, reachable: Micros) -> Self {
        Self::build(capacity, reachable, true)
    }
}

impl<A: NeighborAddr> NeighborCache<A> {
    fn build(capacity: usize, reachable: Micros, nud: bool) -> Self {
        let n = capacity.max(WINDOW).next_power_of_two();
        NeighborCache {
            slots: (0..n).map(|_| Entry { port: 0, ip: A::UNSPECIFIED, last_used: 0, state: State::Free }).collect(),
            mask: n - 1,
            reachable,
            nud,
            sweep_at: 0,
            key: 0,
            held: alloc::vec![0; PortId::MAX as usize + 1],
            counters: NeighborCounters::default(),
        }
    }

    /// Keys the slot hash with `key` (the boot secret), so which addresses
    /// share a window cannot be worked out from outside. Call before use.
    pub fn keyed(mut self, key: u64) -> Self {
        self.key = hash_words(key, &[0x006e_6569_6768]);
        self
    }

    /// Buffers the unresolved entries of `port` hold.
    pub fn held(&self, port: PortId) -> usize {
        self.held[port as usize] as usize
    }

    fn release(&mut self, port: PortId, queue: &[Packet]) {
        let n: u32 = queue.iter().map(buffers).sum();
        let h = &mut self.held[port as usize];
        *h = h.saturating_sub(n);
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|e| !matches!(e.state, State::Free)).count()
    }

    /// Every entry in use: (port, IP, MAC if known, state name, µs since
    /// last use), for `show neighbors`.
    pub fn entries(
        &self,
        now: Micros,
    ) -> impl Iterator<Item = (PortId, A, Option<[u8; 6]>, &'static str, Micros)> + '_ {
        self.slots.iter().filter_map(move |e| {
            let (mac, state) = match &e.state {
                State::Free => return None,
                State::Incomplete { .. } => (None, "incomplete"),
                State::Reachable { mac, expires, .. } if *expires > now => (Some(*mac), "reachable"),
                State::Reachable { mac, .. } => (Some(*mac), "stale"),
                State::Stale { mac } => (Some(*mac), "stale"),
                State::Delay { mac, .. } => (Some(*mac), "delay"),
                State::Probe { mac, .. } => (Some(*mac), "probe"),
                State::Failed { .. } => (None, "failed"),
                State::Static { mac } => (Some(*mac), "permanent"),
            };
            Some((e.port, e.ip, mac, state, now.saturating_sub(e.last_used)))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn home(&self, port: PortId, ip: A) -> usize {
        (hash_words(self.key, &[ip.fold(), port as u64]) >> 32) as usize & self.mask
    }

    fn find(&self, port: PortId, ip: A) -> Option<usize> {
        let home = self.home(port, ip);
        (0..WINDOW).map(|i| (home + i) & self.mask).find(|&s| {
            !matches!(self.slots[s].state, State::Free) && self.slots[s].ip == ip && self.slots[s].port == port
        })
    }

    /// A slot for a new entry: a free one in the window, else the least
    /// recently used entry that is not waiting for a reply. An entry that
    /// has not answered yet (`unresolved`) takes only the slot of one that
    /// no longer counts as answering (failed; stale or expired and unused
    /// for a reachable time): a scan of unresolved addresses never pushes
    /// out a next hop in use.
    fn claim(&mut self, port: PortId, ip: A, now: Micros, unresolved: bool) -> Option<usize> {
        let home = self.home(port, ip);
        let window = (0..WINDOW).map(|i| (home + i) & self.mask);
        if let Some(s) = window.clone().find(|&s| matches!(self.slots[s].state, State::Free)) {
            return Some(s);
        }
        let reachable = self.reachable;
        let victim = window
            .filter(|&s| {
                let e = &self.slots[s];
                // Stale or lapsed, but used within a reachable time: still a
                // next hop in use (an IPv6 gateway goes STALE between uses).
                let idle = now.saturating_sub(e.last_used) >= reachable;
                match &e.state {
                    State::Incomplete { .. } | State::Static { .. } => false,
                    State::Failed { .. } => true,
                    State::Stale { .. } => !unresolved || idle,
                    State::Reachable { expires, .. } if *expires <= now => !unresolved || idle,
                    _ => !unresolved,
                }
            })
            .min_by_key(|&s| self.slots[s].last_used)?;
        self.counters.evicted += 1;
        self.slots[victim].state = State::Free;
        Some(victim)
    }

    /// The MAC of `ip` on `port`, if known and fresh.
    #[inline]
    pub fn lookup(&mut self, port: PortId, ip: A, now: Micros) -> Lookup {
        let Some(s) = self.find(port, ip) else {
            return Lookup::Unknown;
        };
        let reachable = self.reachable;
        let nud = self.nud;
        let e = &mut self.slots[s];
        e.last_used = now;
        match &mut e.state {
            State::Reachable { mac, expires, .. } if nud && now >= *expires => {
                let mac = *mac;
                e.state = State::Delay { mac, until: now + DELAY_FIRST_PROBE };
                Lookup::Known { mac, refresh: false }
            }
            State::Stale { mac } => {
                let mac = *mac;
                e.state = State::Delay { mac, until: now + DELAY_FIRST_PROBE };
                Lookup::Known { mac, refresh: false }
            }
            State::Delay { mac, .. } | State::Probe { mac, .. } => Lookup::Known { mac: *mac, refresh: false },
            State::Reachable { mac, .. } if nud => Lookup::Known { mac: *mac, refresh: false },
            State::Reachable { mac, expires, refresh_sent } if now < *expires => {
                // In the last quarter of its life, ask once more.
                let refresh = !*refresh_sent && *expires - now < reachable / 4;
                if refresh {
                    *refresh_sent = true;
                }
                Lookup::Known { mac: *mac, refresh }
            }
            State::Static { mac } => Lookup::Known { mac: *mac, refresh: false },
            _ => Lookup::Unknown,
        }
    }

    /// Holds `pkt` until `ip` on `port` answers; `room`: whether the
    /// caller's cap on held buffers lets it be held (if not, the neighbour
    /// is still resolved and the packet handed back).
    pub fn enqueue(&mut self, port: PortId, ip: A, pkt: Packet, now: Micros, room: bool) -> Enqueued {
        let s = match self.find(port, ip) {
            Some(s) => s,
            None => match self.claim(port, ip, now, true) {
                Some(s) => {
                    self.slots[s] = Entry { port, ip, last_used: now, state: State::Free };
                    s
                }
                None => return Enqueued::TableFull(pkt),
            },
        };
        let n = buffers(&pkt);
        let e = &mut self.slots[s];
        e.last_used = now;
        match &mut e.state {
            State::Failed { until } if now < *until => Enqueued::Unreachable(pkt),
            State::Incomplete { .. } if !room => Enqueued::NoRoom { pkt, request: false },
            State::Incomplete { queue, .. } => match queue.push(pkt) {
                Ok(()) => {
                    self.held[port as usize] += n;
                    Enqueued::Held { request: false }
                }
                Err(pkt) => Enqueued::QueueFull(pkt),
            },
            _ => {
                // Free, expired, or hold-down over: start resolving.
                let mut queue = heapless::Vec::new();
                let out = if room {
                    let _ = queue.push(pkt);
                    self.held[port as usize] += n;
                    Enqueued::Held { request: true }
                } else {
                    Enqueued::NoRoom { pkt, request: true }
                };
                e.state = State::Incomplete { sent: 1, next_retry: now + RETRY_INTERVAL, queue };
                self.counters.requests += 1;
                out
            }
        }
    }

    /// Records `ip` on `port` at `mac`. Creates the entry only if `create`
    /// (RFC 826: a request for us, or a reply); otherwise just updates an
    /// existing one. Returns the packets that were waiting for it.
    pub fn learn(
        &mut self,
        port: PortId,
        ip: A,
        mac: [u8; 6],
        now: Micros,
        create: bool,
    ) -> heapless::Vec<Packet, QUEUE> {
        self.heard(port, ip, mac, now, create, Heard::Confirmed)
    }

    /// Records `ip` on `port` at `mac` as [`learn`](Self::learn) does; an
    /// unconfirmed word (IPv6) makes the entry stale, or leaves it as it
    /// is if the MAC is the one it has (RFC 4861 §7.2.3, §7.2.5).
    pub fn heard(
        &mut self,
        port: PortId,
        ip: A,
        mac: [u8; 6],
        now: Micros,
        create: bool,
        how: Heard,
    ) -> heapless::Vec<Packet, QUEUE> {
        let s = match self.find(port, ip) {
            Some(s) => s,
            None if create => match self.claim(port, ip, now, false) {
                Some(s) => {
                    self.slots[s] = Entry { port, ip, last_used: now, state: State::Free };
                    s
                }
                None => return heapless::Vec::new(),
            },
            None => return heapless::Vec::new(),
        };
        let e = &mut self.slots[s];
        if matches!(e.state, State::Static { .. }) {
            // The config's word stands (as a permanent entry does in Linux).
            return heapless::Vec::new();
        }
        let known = match &e.state {
            State::Reachable { mac, .. }
            | State::Stale { mac }
            | State::Delay { mac, .. }
            | State::Probe { mac, .. } => Some(*mac),
            _ => None,
        };
        let new = if how == Heard::Confirmed || !self.nud {
            State::Reachable { mac, expires: now + self.reachable, refresh_sent: false }
        } else if known == Some(mac) {
            // Nothing new: the entry keeps its state.
            return heapless::Vec::new();
        } else {
            State::Stale { mac }
        };
        let old = core::mem::replace(&mut e.state, new);
        self.counters.learned += 1;
        match old {
            State::Incomplete { queue, .. } => {
                self.release(port, &queue);
                queue
            }
            _ => heapless::Vec::new(),
        }
    }

    /// Makes `ip` on `port` a permanent entry at `mac`, replacing what was
    /// there (packets waiting for it go out). False if its window holds
    /// nothing but permanent entries.
    pub fn set_static(&mut self, port: PortId, ip: A, mac: [u8; 6], now: Micros) -> heapless::Vec<Packet, QUEUE> {
        let s = match self.find(port, ip) {
            Some(s) => s,
            None => match self.claim(port, ip, now, false) {
                Some(s) => s,
                None => {
                    self.counters.static_refused += 1;
                    return heapless::Vec::new();
                }
            },
        };
        let old =
            core::mem::replace(&mut self.slots[s], Entry { port, ip, last_used: now, state: State::Static { mac } });
        match old.state {
            State::Incomplete { queue, .. } if old.ip == ip && old.port == port => {
                self.release(port, &queue);
                queue
            }
            _ => heapless::Vec::new(),
        }
    }

    /// Turns every permanent entry back into a free slot (before a reload
    /// installs the new config's).
    pub fn clear_static(&mut self) {
        for e in &mut self.slots {
            if matches!(e.state, State::Static { .. }) {
                e.state = State::Free;
            }
        }
    }

    /// Advances timers on up to `budget` slots (a bounded sweep, resumed
    /// where the last call stopped).
    pub fn tick(&mut self, now: Micros, budget: usize, mut act: impl FnMut(TimerAction<A>)) {
        let (nud, reachable) = (self.nud, self.reachable);
        for _ in 0..budget.min(self.slots.len()) {
            let s = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) & self.mask;
            let e = &mut self.slots[s];
            let (port, ip) = (e.port, e.ip);
            match &mut e.state {
                State::Incomplete { sent, next_retry, queue } if now >= *next_retry => {
                    if *sent >= RETRIES {
                        let n: u32 = queue.iter().map(buffers).sum();
                        self.held[port as usize] = self.held[port as usize].saturating_sub(n);
                        for p in queue.drain(..) {
                            act(TimerAction::GiveUp(p));
                        }
                        e.state = State::Failed { until: now + HOLD_DOWN };
                        self.counters.failed += 1;
                    } else {
                        *sent += 1;
                        *next_retry = now + RETRY_INTERVAL;
                        self.counters.requests += 1;
                        act(TimerAction::Request { port, ip, known: None });
                    }
                }
                State::Reachable { mac, expires, .. } if nud && now >= *expires => {
                    e.state = State::Stale { mac: *mac };
                }
                State::Delay { mac, until } if now >= *until => {
                    let mac = *mac;
                    e.state = State::Probe { mac, sent: 1, next: now + RETRANS_TIMER };
                    self.counters.requests += 1;
                    act(TimerAction::Request { port, ip, known: Some(mac) });
                }
                State::Probe { mac, sent, next } if now >= *next => {
                    if *sent >= MAX_UNICAST_SOLICIT {
                        // Unreachable: deleted (RFC 4861 §7.3.3).
                        e.state = State::Free;
                        self.counters.failed += 1;
                    } else {
                        *sent += 1;
                        *next = now + RETRANS_TIMER;
                        self.counters.requests += 1;
                        act(TimerAction::Request { port, ip, known: Some(*mac) });
                    }
                }
                State::Stale { .. } if now >= e.last_used.saturating_add(8 * reachable) => {
                    // Long unused: give the slot back.
                    e.state = State::Free;
                }
                State::Reachable { expires, .. } if now >= *expires + reachable => {
                    // Long unused after expiry: give the slot back.
                    e.state = State::Free;
                }
                State::Failed { until } if now >= *until + HOLD_DOWN => e.state = State::Free,
                _ => {}
            }
        }
    }

    /// Hands every held packet to `f` (teardown, reload).
    pub fn drain(&mut self, mut f: impl FnMut(Packet)) {
        for e in &mut self.slots {
            if let State::Incomplete { queue, .. } = &mut e.state {
                queue.drain(..).for_each(&mut f);
            }
            e.state = State::Free;
        }
        self.held.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

    #[test]
    fn permanent_entries_never_expire_are_never_evicted_and_ignore_arp() {
        let mut pool = PacketPool::new(8);
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 100);
        assert!(matches!(n.enqueue(0, IP, pool.alloc().unwrap(), 0, true), Enqueued::Held { request: true }));
        // Becoming permanent releases what waited for the reply.
        let held = n.set_static(0, IP, MAC, 1);
        assert_eq!(held.len(), 1);
        held.into_iter().for_each(|p| pool.free(p));
        let later = 1_000_000_000;
        n.tick(later, 64, |_| panic!("no timers for a permanent entry"));
        assert_eq!(n.lookup(0, IP, later), Lookup::Known { mac: MAC, refresh: false });
        // ARP from elsewhere does not move it.
        assert!(n.learn(0, IP, [2, 0, 0, 0, 0, 9], later, true).is_empty());
        assert_eq!(n.lookup(0, IP, later), Lookup::Known { mac: MAC, refresh: false });
        // A full table evicts others, never it.
        for i in 0..64u8 {
            n.learn(0, Ipv4Addr::new(10, 0, 1, i), MAC, later + i as u64, true);
        }
        assert_eq!(n.lookup(0, IP, later), Lookup::Known { mac: MAC, refresh: false });
        assert!(n.entries(later).any(|(_, ip, _, state, _)| ip == IP && state == "permanent"));
        n.clear_static();
        assert_eq!(n.lookup(0, IP, later), Lookup::Unknown);
    }

    #[test]
    fn resolve_then_flush_queue() {
        let mut pool = PacketPool::new(8);
        let mut n = NeighborCache::<Ipv4Addr>::new(64, 300_000_000);
        assert_eq!(n.lookup(0, IP, 0), Lookup::Unknown);
        assert!(matches!(n.enqueue(0, IP, pool.alloc().unwrap(), 0, true), Enqueued::Held { request: true }));
        assert!(matches!(n.enqueue(0, IP, pool.alloc().unwrap(), 1, true), Enqueued::Held { request: false }));
        let waiting = n.learn(0, IP, MAC, 5, false);
        assert_eq!(waiting.len(), 2);
        for p in waiting {
            pool.free(p);
        }
        assert_eq!(n.lookup(0, IP, 6), Lookup::Known { mac: MAC, refresh: false });
        assert_eq!(n.lookup(1, IP, 6), Lookup::Unknown, "per port");
    }

    #[test]
    fn queue_is_bounded() {
        let mut pool = PacketPool::new(QUEUE + 1);
        let mut n = NeighborCache::<Ipv4Addr>::new(64, 300_000_000);
        for _ in 0..QUEUE {
            assert!(matches!(n.enqueue(0, IP, pool.alloc().unwrap(), 0, true), Enqueued::Held { .. }));
        }
        match n.enqueue(0, IP, pool.alloc().unwrap(), 0, true) {
            Enqueued::QueueFull(p) => pool.free(p),
            other => panic!("{other:?}"),
        }
        n.drain(|p| pool.free(p));
        assert_eq!(pool.available(), QUEUE + 1);
    }

    #[test]
    fn unanswered_neighbour_gives_up_then_holds_down() {
        let mut pool = PacketPool::new(4);
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 300_000_000);
        assert!(matches!(n.enqueue(0, IP, pool.alloc().unwrap(), 0, true), Enqueued::Held { request: true }));
        let mut requests = 0;
        let mut gave_up = 0;
        for t in 1..=5 {
            n.tick(t * RETRY_INTERVAL, 16, |a| match a {
                TimerAction::Request { .. } => requests += 1,
                TimerAction::GiveUp(p) => {
                    gave_up += 1;
                    pool.free(p);
                }
            });
        }
        assert_eq!((requests, gave_up), (RETRIES as usize - 1, 1));
        match n.enqueue(0, IP, pool.alloc().unwrap(), 4 * RETRY_INTERVAL, true) {
            Enqueued::Unreachable(p) => pool.free(p),
            other => panic!("{other:?}"),
        }
        // After the hold-down, resolution starts again.
        assert!(matches!(
            n.enqueue(0, IP, pool.alloc().unwrap(), 3 * RETRY_INTERVAL + HOLD_DOWN + 1, true),
            Enqueued::Held { request: true }
        ));
        n.drain(|p| pool.free(p));
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn entries_expire_and_refresh_before() {
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 100);
        n.learn(0, IP, MAC, 0, true);
        assert_eq!(n.lookup(0, IP, 10), Lookup::Known { mac: MAC, refresh: false });
        assert_eq!(n.lookup(0, IP, 80), Lookup::Known { mac: MAC, refresh: true });
        assert_eq!(n.lookup(0, IP, 81), Lookup::Known { mac: MAC, refresh: false }, "asks once");
        assert_eq!(n.lookup(0, IP, 100), Lookup::Unknown);
    }

    #[test]
    fn learn_without_create_only_updates() {
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 100);
        n.learn(0, IP, MAC, 0, false);
        assert_eq!(n.lookup(0, IP, 1), Lookup::Unknown);
    }

    #[test]
    fn full_table_evicts_least_recently_used_but_never_pending() {
        let mut pool = PacketPool::new(64);
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 1_000_000);
        // Fill every slot with resolved neighbours.
        for i in 0..200u32 {
            n.learn(0, Ipv4Addr::from(0x0a00_0000 + i), MAC, i as u64, true);
        }
        assert!(n.len() <= 16);
        assert!(n.counters.evicted > 0);
        // While they are reachable, an unresolved neighbour takes none of
        // their slots.
        match n.enqueue(0, Ipv4Addr::new(11, 0, 0, 1), pool.alloc().unwrap(), 1000, true) {
            Enqueued::TableFull(p) => pool.free(p),
            other => panic!("{other:?}"),
        }
        // Expired, they make room; pending entries then fill the table and
        // new neighbours are refused.
        let later = 2_000_000;
        let mut refused = 0;
        for i in 0..64u32 {
            match n.enqueue(0, Ipv4Addr::from(0x0b00_0000 + i), pool.alloc().unwrap(), later, true) {
                Enqueued::TableFull(p) => {
                    refused += 1;
                    pool.free(p)
                }
                Enqueued::Held { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, 64 - 16);
        assert_eq!(n.held(0), 16, "one buffer each");
        n.drain(|p| pool.free(p));
        assert_eq!(n.held(0), 0);
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn a_scan_does_not_evict_a_stale_next_hop_still_in_use() {
        // An IPv6 next hop goes STALE when its reachable time runs out
        // unconfirmed (RFC 4861 §7.3.3), though it was used a moment ago: a
        // scan of unresolved addresses must not push it out.
        let reachable = 1_000_000;
        let mut pool = PacketPool::new(64);
        let mut n = NeighborCache::<Ipv6Addr>::new(16, reachable);
        let gw = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
        n.heard(0, gw, MAC, 0, true, Heard::Confirmed);
        assert_eq!(n.lookup(0, gw, reachable - 1), Lookup::Known { mac: MAC, refresh: false });
        n.tick(reachable, 64, |_| {});
        assert!(n.entries(reachable).any(|(_, ip, _, state, _)| ip == gw && state == "stale"));
        for i in 0..64u16 {
            let target = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 1, i);
            match n.enqueue(0, target, pool.alloc().unwrap(), reachable + 1, true) {
                Enqueued::Held { .. } => {}
                Enqueued::QueueFull(p)
                | Enqueued::TableFull(p)
                | Enqueued::Unreachable(p)
                | Enqueued::NoRoom { pkt: p, .. } => pool.free(p),
            }
        }
        assert!(n.find(0, gw).is_some(), "the stale next hop in use survives the scan");
        n.drain(|p| pool.free(p));
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn held_buffers_are_counted_until_they_leave() {
        let mut pool = PacketPool::new(8);
        let mut n = NeighborCache::<Ipv4Addr>::new(16, 1_000_000).keyed(9);
        for _ in 0..3 {
            assert!(matches!(n.enqueue(2, IP, pool.alloc().unwrap(), 0, true), Enqueued::Held { .. }));
        }
        // No room: handed back, still resolved.
        match n.enqueue(2, Ipv4Addr::new(10, 0, 0, 8), pool.alloc().unwrap(), 0, false) {
            Enqueued::NoRoom { pkt, request: true } => pool.free(pkt),
            other => panic!("{other:?}"),
        }
        assert_eq!((n.held(2), n.held(0)), (3, 0));
        n.learn(2, IP, MAC, 1, false).into_iter().for_each(|p| pool.free(p));
        assert_eq!(n.held(2), 0, "sent when the reply came");
        assert!(matches!(
            n.enqueue(2, Ipv4Addr::new(10, 0, 0, 8), pool.alloc().unwrap(), 2, true),
            Enqueued::Held { request: false }
        ));
        assert_eq!(n.held(2), 1);
        for t in 1..=5 {
            n.tick(t * RETRY_INTERVAL, 16, |a| {
                if let TimerAction::GiveUp(p) = a {
                    pool.free(p)
                }
            });
        }
        assert_eq!(n.held(2), 0, "given up");
        assert_eq!(pool.available(), 8);
    }
}
