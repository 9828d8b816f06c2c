//! Stand-in IPv4 addresses for IPv6 hosts. The NAT's session table and
//! the load balancer's flow table key their endpoints by IPv4 address;
//! NAT64 and the IPv6 load balancer give each IPv6 host they track a
//! stand-in from 240.0.0.0/4 (reserved: never routed, never seen on a
//! wire), the index of the host's slot here, so the way back finds the
//! host in one read.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::Micros;

/// Stand-ins are 240.0.0.0 + slot index (at most 2^25 slots: 240.0.0.0/7).
const STAND_IN: u32 = 0xf000_0000;
/// Slots a host's address may take from its hash.
const WINDOW: usize = 32;

/// Inside IPv6 hosts and their stand-in IPv4 addresses.
pub struct Hosts {
    slots: Vec<HostSlot>,
    mask: usize,
    /// A slot idle this long has no session left (the longest timeout,
    /// twice): it may be given to another host.
    reuse_after: Micros,
    key: u64,
}

#[derive(Clone, Copy)]
struct HostSlot {
    addr: Ipv6Addr,
    last: Micros,
    used: bool,
}

impl Hosts {
    /// A slot per session (every active host holds one at least), rounded
    /// up: at most half full when every session is another host's.
    fn capacity(sessions: usize) -> usize {
        (sessions * 2).clamp(64, 1 << 25).next_power_of_two()
    }

    /// Bytes the host table of a NAT64 with `sessions` sessions takes.
    pub fn memory_for(sessions: usize) -> usize {
        Self::capacity(sessions) * core::mem::size_of::<HostSlot>()
    }

    pub fn new(sessions: usize, reuse_after: Micros, key: u64) -> Self {
        let n = Self::capacity(sessions);
        let free = HostSlot { addr: Ipv6Addr::UNSPECIFIED, last: 0, used: false };
        Hosts { slots: alloc::vec![free; n], mask: n - 1, reuse_after, key }
    }

    fn home(&self, a: &Ipv6Addr) -> usize {
        let b = u128::from(*a);
        crate::table::hash_words(self.key, &[(b >> 64) as u64, b as u64]) as usize & self.mask
    }

    /// The stand-in of `a`, given one if it has none; `None` if every slot
    /// of its window belongs to an active host.
    pub fn stand_in(&mut self, a: Ipv6Addr, now: Micros) -> Option<Ipv4Addr> {
        let home = self.home(&a);
        let mut spare = None;
        for i in 0..WINDOW {
            let s = (home + i) & self.mask;
            let slot = &mut self.slots[s];
            if slot.used && slot.addr == a {
                slot.last = now;
                return Some(Ipv4Addr::from(STAND_IN + s as u32));
            }
            let idle = !slot.used || now.saturating_sub(slot.last) > self.reuse_after;
            if idle && spare.is_none() {
                spare = Some(s);
            }
        }
        let s = spare?;
        self.slots[s] = HostSlot { addr: a, last: now, used: true };
        Some(Ipv4Addr::from(STAND_IN + s as u32))
    }

    /// The host behind a stand-in address.
    pub fn host(&mut self, stand_in: Ipv4Addr, now: Micros) -> Option<Ipv6Addr> {
        let i = u32::from(stand_in).checked_sub(STAND_IN)? as usize;
        let slot = self.slots.get_mut(i).filter(|s| s.used)?;
        slot.last = now;
        Some(slot.addr)
    }

    /// Reads the first slot `a` may be in (a burst's first pass).
    #[inline]
    pub fn prefetch(&self, a: &Ipv6Addr) {
        prefetch::prefetch(&self.slots[self.home(a)]);
    }

    /// The stand-in `a` has, if it has one (nothing changes).
    pub fn find(&self, a: &Ipv6Addr) -> Option<Ipv4Addr> {
        let home = self.home(a);
        (0..WINDOW)
            .map(|i| (home + i) & self.mask)
            .find(|&s| self.slots[s].used && self.slots[s].addr == *a)
            .map(|s| Ipv4Addr::from(STAND_IN + s as u32))
    }

    /// The host behind a stand-in address, without marking it used.
    pub fn peek(&self, stand_in: Ipv4Addr) -> Option<Ipv6Addr> {
        let i = u32::from(stand_in).checked_sub(STAND_IN)? as usize;
        self.slots.get(i).filter(|s| s.used).map(|s| s.addr)
    }

    pub fn active(&self, now: Micros) -> usize {
        self.slots.iter().filter(|s| s.used && now.saturating_sub(s.last) <= self.reuse_after).count()
    }
}
