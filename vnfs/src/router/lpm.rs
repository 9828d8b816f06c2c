//! Longest-prefix match for IPv4: a 16-8-8 multibit trie with controlled
//! prefix expansion (the DIR-16-8-8 layout).
//!
//! A lookup is at most three dependent array reads, whatever the table size.
//! Every slot remembers the length of the prefix that wrote it, so prefixes
//! can be inserted in any order and a shorter prefix never overwrites a
//! longer one. The table is built from the config at start-up or on reload;
//! there is no delete (a reload builds a new table and swaps it in).

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Index of a next hop in the owner's next-hop table.
pub type NextHopId = u32;

const CHUNK: usize = 256;
/// Slot encoding: bit 31 set = index of a child chunk in bits 0..24;
/// otherwise bits 24..30 = prefix length, bits 0..24 = next hop + 1 (0 = none).
const CHILD: u32 = 1 << 31;
const NH_MASK: u32 = 0x00ff_ffff;
/// The largest next-hop id a slot can hold.
pub const MAX_NEXT_HOPS: u32 = NH_MASK - 1;

#[inline]
fn leaf(len: u8, nh: Option<NextHopId>) -> u32 {
    (len as u32) << 24 | nh.map_or(0, |n| n + 1)
}

#[inline]
fn leaf_len(slot: u32) -> u8 {
    (slot >> 24) as u8 & 0x3f
}

#[inline]
fn leaf_nh(slot: u32) -> Option<NextHopId> {
    (slot & NH_MASK).checked_sub(1)
}

/// The route table's lookup structure.
#[derive(Clone)]
pub struct Lpm {
    top: Vec<u32>,
    chunks: Vec<u32>,
    routes: usize,
}

impl Default for Lpm {
    fn default() -> Self {
        Self::new()
    }
}

impl Lpm {
    pub fn new() -> Self {
        Lpm { top: vec![leaf(0, None); 1 << 16], chunks: Vec::new(), routes: 0 }
    }

    /// Number of prefixes inserted.
    pub fn len(&self) -> usize {
        self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes == 0
    }

    /// Bytes of memory the table uses.
    pub fn memory(&self) -> usize {
        (self.top.len() + self.chunks.len()) * 4
    }

    /// Bytes a table of `prefixes` will take, computed before building it
    /// (so a config that does not fit the RAM is refused, not fatal): the
    /// top level, one chunk per /16 that holds a longer prefix and one per
    /// /24 that holds a prefix longer than /24.
    pub fn memory_for<'a>(prefixes: impl Iterator<Item = &'a Ipv4Net>) -> usize {
        let mut level2 = alloc::collections::BTreeSet::new();
        let mut level3 = alloc::collections::BTreeSet::new();
        for p in prefixes {
            let a = u32::from(p.trunc().addr());
            if p.prefix_len() > 16 {
                level2.insert(a >> 16);
            }
            if p.prefix_len() > 24 {
                level3.insert(a >> 8);
            }
        }
        ((1 << 16) + (level2.len() + level3.len()) * CHUNK) * 4
    }

    /// Adds `prefix → nh`. A prefix inserted twice keeps the last next hop.
    pub fn insert(&mut self, prefix: Ipv4Net, nh: NextHopId) {
        assert!(nh <= MAX_NEXT_HOPS, "next hop id out of range");
        let prefix = prefix.trunc();
        let addr = u32::from(prefix.addr());
        let len = prefix.prefix_len();
        self.routes += 1;
        let new = leaf(len, Some(nh));
        if len <= 16 {
            let first = (addr >> 16) as usize;
            let count = 1usize << (16 - len);
            for i in first..first + count {
                let slot = self.top[i];
                self.top[i] = self.write(slot, len, new);
            }
            return;
        }
        let c1 = self.child_of_top((addr >> 16) as usize);
        if len <= 24 {
            let first = ((addr >> 8) & 0xff) as usize;
            let count = 1usize << (24 - len);
            for i in first..first + count {
                let at = c1 * CHUNK + i;
                let slot = self.chunks[at];
                self.chunks[at] = self.write(slot, len, new);
            }
            return;
        }
        let c2 = self.child_of_chunk(c1 * CHUNK + ((addr >> 8) & 0xff) as usize);
        let first = (addr & 0xff) as usize;
        let count = 1usize << (32 - len);
        for i in first..first + count {
            let at = c2 * CHUNK + i;
            let slot = self.chunks[at];
            self.chunks[at] = self.write(slot, len, new);
        }
    }

    /// Writes leaf `new` (of length `len`) over `slot`, pushing it down into
    /// child chunks, and keeping longer prefixes already there.
    fn write(&mut self, slot: u32, len: u8, new: u32) -> u32 {
        if slot & CHILD != 0 {
            let c = (slot & NH_MASK) as usize;
            for i in c * CHUNK..(c + 1) * CHUNK {
                let s = self.chunks[i];
                self.chunks[i] = self.write(s, len, new);
            }
            slot
        } else if leaf_len(slot) <= len {
            new
        } else {
            slot
        }
    }

    fn new_chunk(&mut self, fill: u32) -> usize {
        let c = self.chunks.len() / CHUNK;
        self.chunks.extend(core::iter::repeat_n(fill, CHUNK));
        c
    }

    fn child_of_top(&mut self, i: usize) -> usize {
        let slot = self.top[i];
        if slot & CHILD != 0 {
            return (slot & NH_MASK) as usize;
        }
        let c = self.new_chunk(slot);
        self.top[i] = CHILD | c as u32;
        c
    }

    fn child_of_chunk(&mut self, at: usize) -> usize {
        let slot = self.chunks[at];
        if slot & CHILD != 0 {
            return (slot & NH_MASK) as usize;
        }
        let c = self.new_chunk(slot);
        self.chunks[at] = CHILD | c as u32;
        c
    }

    /// The next hop of the longest prefix holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<NextHopId> {
        let a = u32::from(addr);
        let mut slot = self.top[(a >> 16) as usize];
        if slot & CHILD != 0 {
            slot = self.chunks[(slot & NH_MASK) as usize * CHUNK + ((a >> 8) & 0xff) as usize];
            if slot & CHILD != 0 {
                slot = self.chunks[(slot & NH_MASK) as usize * CHUNK + (a & 0xff) as usize];
            }
        }
        leaf_nh(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_in_any_insertion_order() {
        let routes = [
            ("0.0.0.0/0", 0),
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 3),
            ("10.1.2.128/25", 4),
            ("10.1.2.129/32", 5),
        ];
        for order in [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 3, 1, 4]] {
            let mut t = Lpm::new();
            for i in order {
                t.insert(net(routes[i].0), routes[i].1);
            }
            assert_eq!(t.lookup(ip("192.0.2.1")), Some(0));
            assert_eq!(t.lookup(ip("10.200.0.1")), Some(1));
            assert_eq!(t.lookup(ip("10.1.9.9")), Some(2));
            assert_eq!(t.lookup(ip("10.1.2.3")), Some(3));
            assert_eq!(t.lookup(ip("10.1.2.200")), Some(4));
            assert_eq!(t.lookup(ip("10.1.2.129")), Some(5));
            assert_eq!(t.lookup(ip("10.1.2.130")), Some(4));
        }
    }

    #[test]
    fn empty_table_and_host_bits_in_prefix() {
        let mut t = Lpm::new();
        assert_eq!(t.lookup(ip("1.2.3.4")), None);
        t.insert(net("172.16.5.77/20"), 9);
        assert_eq!(t.lookup(ip("172.16.0.1")), Some(9));
        assert_eq!(t.lookup(ip("172.16.15.255")), Some(9));
        assert_eq!(t.lookup(ip("172.16.16.0")), None);
    }

    /// The reference: scan every route, keep the longest match (last wins on ties).
    fn naive(routes: &[(Ipv4Net, u32)], a: Ipv4Addr) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for (p, nh) in routes {
            if p.trunc().contains(&a) && best.is_none_or(|(l, _)| p.prefix_len() >= l) {
                best = Some((p.prefix_len(), *nh));
            }
        }
        best.map(|(_, nh)| nh)
    }

    fn arb_prefix() -> impl Strategy<Value = Ipv4Net> {
        // Cluster addresses so prefixes overlap often.
        (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(hi, lo, len)| {
            let a = (10 << 24) | (hi << 16) | (lo & 0xffff);
            Ipv4Net::new(Ipv4Addr::from(if len < 8 { lo } else { a }), len).unwrap()
        })
    }

    proptest! {
        #[test]
        fn matches_the_naive_reference(
            routes in proptest::collection::vec((arb_prefix(), 0u32..1000), 0..60),
            probes in proptest::collection::vec((0u32..4, any::<u16>(), any::<u32>()), 100),
        ) {
            let mut t = Lpm::new();
            for (p, nh) in &routes {
                t.insert(*p, *nh);
            }
            for (hi, lo, any) in probes {
                for a in [Ipv4Addr::from((10 << 24) | (hi << 16) | lo as u32), Ipv4Addr::from(any)] {
                    prop_assert_eq!(t.lookup(a), naive(&routes, a), "{}", a);
                }
            }
        }
    }
}
