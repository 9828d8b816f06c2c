//! IPv6 longest-prefix match: one hash table keyed by (prefix length,
//! masked address), probed from the longest length present down to the
//! shortest (binary search on lengths is the textbook refinement; real
//! tables hold a handful of distinct lengths — /32, /48, /56, /64, /128 —
//! so a lookup costs that many probes, whatever the number of prefixes).
//! Memory is linear in the prefixes: 24 bytes a slot at most half full.

use alloc::vec::Vec;
use core::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// What a prefix maps to.
pub type NextHopId = u32;

const EMPTY: u8 = 0xff;

#[derive(Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u64,
    len: u8,
    nh: NextHopId,
}

const FREE: Slot = Slot { hi: 0, lo: 0, len: EMPTY, nh: 0 };

pub struct Lpm6 {
    slots: Vec<Slot>,
    mask: usize,
    count: usize,
    /// Distinct prefix lengths present, longest first.
    lengths: Vec<u8>,
}

#[inline]
fn masked(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - len as u32))
    }
}

#[inline]
fn home(key: u128, len: u8, mask: usize) -> usize {
    let h = ((key >> 64) as u64 ^ (key as u64).rotate_left(23) ^ len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 29) as usize & mask
}

impl Default for Lpm6 {
    fn default() -> Self {
        Self::new()
    }
}

impl Lpm6 {
    pub fn new() -> Self {
        Lpm6 { slots: alloc::vec![FREE; 16], mask: 15, count: 0, lengths: Vec::new() }
    }

    /// Bytes a table of `prefixes` prefixes takes.
    pub fn memory_for(prefixes: usize) -> usize {
        (prefixes * 2).max(16).next_power_of_two() * core::mem::size_of::<Slot>()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn memory(&self) -> usize {
        self.slots.len() * core::mem::size_of::<Slot>()
    }

    /// Adds or replaces `net`.
    pub fn insert(&mut self, net: Ipv6Net, nh: NextHopId) {
        if (self.count + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let len = net.prefix_len();
        let key = masked(u128::from(net.addr()), len);
        if self.put(key, len, nh) {
            self.count += 1;
            if let Err(at) = self.lengths.binary_search_by(|l| len.cmp(l)) {
                self.lengths.insert(at, len);
            }
        }
    }

    /// Places a key; `true` if it was new.
    fn put(&mut self, key: u128, len: u8, nh: NextHopId) -> bool {
        let (hi, lo) = ((key >> 64) as u64, key as u64);
        let mut i = home(key, len, self.mask);
        loop {
            let s = &mut self.slots[i];
            if s.len == EMPTY {
                *s = Slot { hi, lo, len, nh };
                return true;
            }
            if s.len == len && s.hi == hi && s.lo == lo {
                s.nh = nh;
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(16);
        let old = core::mem::replace(&mut self.slots, alloc::vec![FREE; n]);
        self.mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.len != EMPTY) {
            self.put((s.hi as u128) << 64 | s.lo as u128, s.len, s.nh);
        }
    }

    /// The next hop of the longest prefix holding `a`.
    #[inline]
    pub fn lookup(&self, a: Ipv6Addr) -> Option<NextHopId> {
        let a = u128::from(a);
        for &len in &self.lengths {
            let key = masked(a, len);
            let (hi, lo) = ((key >> 64) as u64, key as u64);
            let mut i = home(key, len, self.mask);
            // The table is at most half full: every probe run ends at a free slot.
            loop {
                let s = &self.slots[i];
                if s.len == EMPTY {
                    break;
                }
                if s.len == len && s.hi == hi && s.lo == lo {
                    return Some(s.nh);
                }
                i = (i + 1) & self.mask;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_replace_keeps_count() {
        let mut t = Lpm6::new();
        t.insert(net("::/0"), 0);
        t.insert(net("2001:db8::/32"), 1);
        t.insert(net("2001:db8:1::/48"), 2);
        t.insert(net("2001:db8:1:2::5/128"), 3);
        let at = |s: &str| t.lookup(s.parse().unwrap());
        assert_eq!(at("2001:db8:1:2::5"), Some(3));
        assert_eq!(at("2001:db8:1:2::6"), Some(2));
        assert_eq!(at("2001:db8:2::1"), Some(1));
        assert_eq!(at("2001:db9::1"), Some(0));
        t.insert(net("2001:db8::/32"), 9);
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup("2001:db8:2::1".parse().unwrap()), Some(9));
    }

    proptest! {
        /// The table agrees with a scan of every prefix, through growth.
        #[test]
        fn matches_a_linear_scan(prefixes in proptest::collection::vec((any::<u128>(), 0u8..=128), 1..300), probes in proptest::collection::vec(any::<u128>(), 1..50)) {
            let mut t = Lpm6::new();
            let mut all: Vec<(Ipv6Net, u32)> = Vec::new();
            for (i, (a, l)) in prefixes.iter().enumerate() {
                let n = Ipv6Net::new(Ipv6Addr::from(*a), *l).unwrap().trunc();
                t.insert(n, i as u32);
                all.retain(|(m, _)| *m != n);
                all.push((n, i as u32));
            }
            // Probe inside the prefixes as well as at random.
            for a in probes.iter().copied().chain(prefixes.iter().map(|(a, _)| *a)) {
                let a = Ipv6Addr::from(a);
                let want = all.iter().filter(|(n, _)| n.contains(&a)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, v)| *v);
                prop_assert_eq!(t.lookup(a), want);
            }
        }
    }
}
