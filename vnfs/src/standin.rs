//! Stand-in IPv4 addresses for IPv6 hosts. The NAT's session table and
//! the load balancer's flow table key their endpoints by IPv4 address;
//! NAT64 and the IPv6 load balancer give each IPv6 host they track a
//! stand-in from 240.0.0.0/4 (reserved: never routed, never seen on a
//! wire), the index of the host's slot here, so the way back finds the
//! host in one read.
//!
//! A slot is counted, not timed: its owner [`Hosts::claim`]s it for each
//! session or flow it makes and [`Hosts::release`]s it when that one ends,
//! and the slot is free again the moment its count falls to zero. So a
//! packet that makes no session takes nothing, and a flood of spoofed
//! sources holds no more slots than it holds sessions (which the table
//! bounds and evicts). The hosts of one /64 (one link, one subscriber, or
//! one attacker's whole address space) hold at most `per_64` slots.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::table::{hash_words, IndexTable};

/// Stand-ins are 240.0.0.0 + slot index (at most 2^25 slots: 240.0.0.0/7).
const STAND_IN: u32 = 0xf000_0000;
/// Slots a host's address may take from its hash.
const WINDOW: usize = 32;

/// Why a host got no stand-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot of its window is held (the table is at most half full
    /// while every session is another host's: rare, and not choosable
    /// from outside, the hash being keyed).
    Full,
    /// Its /64 holds all the slots it may.
    Per64,
}

/// Inside IPv6 hosts and their stand-in IPv4 addresses.
pub struct Hosts {
    slots: Vec<HostSlot>,
    mask: usize,
    key: u64,
    /// Slots held per /64: the prefixes and their counts in a slab found
    /// through `by_net`, with its free entries.
    net_prefix: Vec<u64>,
    net_held: Vec<u32>,
    free_nets: Vec<u32>,
    by_net: IndexTable,
    per_64: u32,
    held: usize,
}

/// `refs` 0: free.
#[derive(Clone, Copy)]
struct HostSlot {
    addr: Ipv6Addr,
    refs: u32,
}

/// The default of `hosts-per-64` / `clients-per-64` for a table of
/// `entries` sessions or flows: an eighth of it, at least 16.
pub fn default_per_64(entries: usize) -> u32 {
    (entries / 8).clamp(16, u32::MAX as usize) as u32
}

impl Hosts {
    /// Two slots per session or flow (every held slot has one at least),
    /// rounded up: at most half full.
    fn capacity(entries: usize) -> usize {
        (entries * 2).clamp(64, 1 << 25).next_power_of_two()
    }

    /// /64 entries: never more than the slots held, which the sessions or
    /// flows bound (plus the one a packet holds while its session is made).
    fn nets(entries: usize) -> usize {
        (entries + 1).min(crate::table::MAX_ENTRIES - 1)
    }

    /// Bytes the host table for `entries` sessions or flows takes.
    pub fn memory_for(entries: usize) -> usize {
        let nets = Self::nets(entries);
        Self::capacity(entries) * core::mem::size_of::<HostSlot>() + nets * (8 + 4 + 4) + IndexTable::memory_for(nets)
    }

    /// A table for `entries` sessions or flows; each /64 holds at most
    /// `per_64` slots.
    pub fn new(entries: usize, per_64: u32, key: u64) -> Self {
        let n = Self::capacity(entries);
        let nets = Self::nets(entries);
        Hosts {
            slots: alloc::vec![HostSlot { addr: Ipv6Addr::UNSPECIFIED, refs: 0 }; n],
            mask: n - 1,
            key,
            net_prefix: alloc::vec![0; nets],
            net_held: alloc::vec![0; nets],
            free_nets: (0..nets as u32).rev().collect(),
            by_net: IndexTable::new(nets),
            per_64,
            held: 0,
        }
    }

    /// Sets the per-/64 bound (a reload keeps the slots held over a
    /// lowered bound; only new hosts are refused).
    pub fn set_per_64(&mut self, per_64: u32) {
        self.per_64 = per_64;
    }

    fn home(&self, a: &Ipv6Addr) -> usize {
        let b = u128::from(*a);
        hash_words(self.key, &[(b >> 64) as u64, b as u64]) as usize & self.mask
    }

    fn h_net(&self, prefix: u64) -> u64 {
        hash_words(self.key ^ 0x64, &[prefix])
    }

    fn net_of(&self, prefix: u64) -> Option<u32> {
        let p = &self.net_prefix;
        let h = &self.net_held;
        self.by_net.find(self.h_net(prefix), |i| h[i as usize] != 0 && p[i as usize] == prefix)
    }

    fn slot_of(&self, a: &Ipv6Addr) -> Option<usize> {
        let home = self.home(a);
        (0..WINDOW).map(|i| (home + i) & self.mask).find(|&s| self.slots[s].refs != 0 && self.slots[s].addr == *a)
    }

    /// One more reference to `a`'s stand-in, which it is given now if it
    /// has none (within its /64's bound). Each claim is undone by one
    /// [`release`](Self::release).
    pub fn claim(&mut self, a: Ipv6Addr) -> Result<Ipv4Addr, Refused> {
        if let Some(s) = self.slot_of(&a) {
            self.slots[s].refs += 1;
            return Ok(Ipv4Addr::from(STAND_IN + s as u32));
        }
        let home = self.home(&a);
        let s = (0..WINDOW).map(|i| (home + i) & self.mask).find(|&s| self.slots[s].refs == 0).ok_or(Refused::Full)?;
        let prefix = (u128::from(a) >> 64) as u64;
        match self.net_of(prefix) {
            Some(n) if self.net_held[n as usize] >= self.per_64 => return Err(Refused::Per64),
            Some(n) => self.net_held[n as usize] += 1,
            None if self.per_64 == 0 => return Err(Refused::Per64),
            None => {
                let n = self.free_nets.pop().ok_or(Refused::Full)?;
                self.net_prefix[n as usize] = prefix;
                self.net_held[n as usize] = 1;
                let h = self.h_net(prefix);
                self.by_net.insert(h, n);
            }
        }
        self.slots[s] = HostSlot { addr: a, refs: 1 };
        self.held += 1;
        Ok(Ipv4Addr::from(STAND_IN + s as u32))
    }

    /// One more reference to a stand-in that is held (a session made for
    /// a host that has one); nothing for one that is not.
    pub fn retain(&mut self, stand_in: Ipv4Addr) {
        if let Some(slot) = self.index(stand_in).and_then(|i| self.slots.get_mut(i)).filter(|s| s.refs != 0) {
            slot.refs += 1;
        }
    }

    /// Undoes one claim: the last frees the slot.
    pub fn release(&mut self, stand_in: Ipv4Addr) {
        let Some(i) = self.index(stand_in).filter(|&i| self.slots.get(i).is_some_and(|s| s.refs != 0)) else {
            return;
        };
        self.slots[i].refs -= 1;
        if self.slots[i].refs != 0 {
            return;
        }
        self.held -= 1;
        let prefix = (u128::from(self.slots[i].addr) >> 64) as u64;
        if let Some(n) = self.net_of(prefix) {
            self.net_held[n as usize] -= 1;
            if self.net_held[n as usize] == 0 {
                let (key, p) = (self.key ^ 0x64, &self.net_prefix);
                self.by_net.remove(hash_words(key, &[prefix]), n, |j| hash_words(key, &[p[j as usize]]));
                self.free_nets.push(n);
            }
        }
    }

    fn index(&self, stand_in: Ipv4Addr) -> Option<usize> {
        u32::from(stand_in).checked_sub(STAND_IN).map(|i| i as usize)
    }

    /// The host behind a stand-in address (a held one).
    pub fn host(&self, stand_in: Ipv4Addr) -> Option<Ipv6Addr> {
        self.slots.get(self.index(stand_in)?).filter(|s| s.refs != 0).map(|s| s.addr)
    }

    /// Reads the first slot `a` may be in (a burst's first pass).
    #[inline]
    pub fn prefetch(&self, a: &Ipv6Addr) {
        prefetch::prefetch(&self.slots[self.home(a)]);
    }

    /// The stand-in `a` holds, if it holds one (nothing changes).
    pub fn find(&self, a: &Ipv6Addr) -> Option<Ipv4Addr> {
        self.slot_of(a).map(|s| Ipv4Addr::from(STAND_IN + s as u32))
    }

    /// Hosts holding a stand-in.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(net: u64, i: u64) -> Ipv6Addr {
        Ipv6Addr::from((0x2001_0db8_0000_0000u128 + net as u128) << 64 | i as u128)
    }

    #[test]
    fn a_slot_is_held_while_it_has_claims_and_a_64_is_bounded() {
        let mut h = Hosts::new(64, 3, 7);
        let a = h.claim(host(1, 1)).unwrap();
        assert_eq!(h.claim(host(1, 1)), Ok(a), "the same host, the same stand-in");
        assert_eq!(h.host(a), Some(host(1, 1)));
        h.retain(a);
        h.release(a);
        h.release(a);
        assert_eq!(h.find(&host(1, 1)), Some(a), "one claim left");
        h.claim(host(1, 2)).unwrap();
        h.claim(host(1, 3)).unwrap();
        assert_eq!(h.claim(host(1, 4)), Err(Refused::Per64));
        assert!(h.claim(host(2, 4)).is_ok(), "another /64");
        assert_eq!(h.held(), 4);
        h.release(a);
        assert_eq!((h.find(&host(1, 1)), h.host(a), h.held()), (None, None, 3), "the last claim frees it");
        assert!(h.claim(host(1, 4)).is_ok(), "its /64 has room again");
        // A stand-in that is not held, or no stand-in at all: nothing.
        h.release(a);
        h.retain(a);
        h.release(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(h.held(), 4);
    }

    #[test]
    fn churn_never_leaks_a_slot_or_a_64() {
        let mut h = Hosts::new(64, 1000, 9);
        let mut live = std::vec::Vec::new();
        for i in 0..100_000u64 {
            if live.len() < 60 {
                live.push(h.claim(host(i % 37, i % 101)).unwrap());
            } else {
                let x = live.swap_remove((i * 7919) as usize % live.len());
                h.release(x);
            }
        }
        for x in live.drain(..) {
            h.release(x);
        }
        assert_eq!((h.held(), h.by_net.len(), h.free_nets.len()), (0, 0, h.net_prefix.len()));
    }
}
