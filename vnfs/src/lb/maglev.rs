//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4), with
//! weights.
//!
//! Each backend walks its own permutation of the `M` table slots (an offset
//! and a skip derived from the backend's identity) and claims the first free
//! slot on each of its turns. A backend of weight `w` takes a turn in a
//! round when `floor((r+1)·w/wmax) > floor(r·w/wmax)`, so slots end up in
//! proportion to the weights. The table depends only on the backend list
//! (identities and weights) and `M`: two instances with the same config
//! build the same table and pick the same backend for a flow, which is what
//! lets several load balancers share traffic behind ECMP. Removing a backend
//! moves its slots and only a few others.

use alloc::vec;
use alloc::vec::Vec;

use crate::table::hash_words;

/// The default table size: a prime well above any backend count.
pub const DEFAULT_SIZE: usize = 65537;
const EMPTY: u16 = u16::MAX;

/// A backend as Maglev sees it: a stable identity and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub weight: u32,
}

/// The lookup table: slot → index into the member list it was built from.
#[derive(Clone, Debug)]
pub struct MaglevTable {
    slots: Vec<u16>,
}

/// Whether `n` is prime (table sizes are checked at config time).
pub fn is_prime(n: usize) -> bool {
    // `d <= n / d`, not `d * d <= n`: no overflow near usize::MAX.
    n >= 2 && (2..).take_while(|d| *d <= n / d).all(|d| !n.is_multiple_of(d))
}

impl MaglevTable {
    /// Builds the table for `members` (at most 65535; weight 0 members get
    /// no slots). `size` must be prime and larger than the member count.
    pub fn build(members: &[Member], size: usize) -> MaglevTable {
        let mut slots = vec![EMPTY; size];
        let live: Vec<(usize, &Member)> = members.iter().enumerate().filter(|(_, m)| m.weight > 0).collect();
        if live.is_empty() || size == 0 {
            return MaglevTable { slots };
        }
        let m = size as u64;
        let perm: Vec<(u64, u64)> = live
            .iter()
            .map(|(_, b)| (hash_words(0xfeed, &[b.id]) % m, hash_words(0xbeef, &[b.id]) % (m - 1) + 1))
            .collect();
        let wmax = live.iter().map(|(_, b)| b.weight as u64).max().unwrap();
        let mut next = vec![0u64; live.len()];
        let mut filled = 0;
        let mut round = 0u64;
        while filled < size {
            for (k, (idx, b)) in live.iter().enumerate() {
                let w = b.weight as u64;
                if (round + 1) * w / wmax == round * w / wmax {
                    continue;
                }
                let (offset, skip) = perm[k];
                loop {
                    let c = ((offset + next[k] * skip) % m) as usize;
                    next[k] += 1;
                    if slots[c] == EMPTY {
                        slots[c] = *idx as u16;
                        filled += 1;
                        break;
                    }
                }
                if filled == size {
                    break;
                }
            }
            round += 1;
        }
        MaglevTable { slots }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.first().is_none_or(|s| *s == EMPTY)
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The member for a flow hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let s = *self.slots.get((hash % self.slots.len() as u64) as usize)?;
        (s != EMPTY).then_some(s as usize)
    }

    /// Slots per member (for tests and counters).
    pub fn shares(&self, members: usize) -> Vec<usize> {
        let mut v = vec![0; members];
        for s in &self.slots {
            if *s != EMPTY {
                v[*s as usize] += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Member { id: 0x0a01_0000_0050 + i as u64 * 0x1_0000_0000, weight: *w })
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(251));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
    }

    #[test]
    fn equal_weights_within_one_percent() {
        let t = MaglevTable::build(&members(&[1; 10]), DEFAULT_SIZE);
        let ideal = DEFAULT_SIZE as f64 / 10.0;
        for s in t.shares(10) {
            assert!((s as f64 - ideal).abs() / ideal < 0.01, "{s} vs {ideal}");
        }
    }

    #[test]
    fn weights_are_honoured_within_one_percent() {
        let w = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];
        let t = MaglevTable::build(&members(&w), DEFAULT_SIZE);
        let total: u32 = w.iter().sum();
        for (i, s) in t.shares(10).into_iter().enumerate() {
            let ideal = DEFAULT_SIZE as f64 * w[i] as f64 / total as f64;
            assert!((s as f64 - ideal).abs() / ideal < 0.01, "backend {i}: {s} vs {ideal}");
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let n = 10;
        let all = members(&[1; 10]);
        let before = MaglevTable::build(&all, DEFAULT_SIZE);
        // Backend 3 goes down: weight 0 keeps the indices stable.
        let mut less = all.clone();
        less[3].weight = 0;
        let after = MaglevTable::build(&less, DEFAULT_SIZE);
        let mut moved_other = 0;
        let mut moved_from_3 = 0;
        for h in 0..DEFAULT_SIZE as u64 {
            let (a, b) = (before.lookup(h).unwrap(), after.lookup(h).unwrap());
            if a == 3 {
                moved_from_3 += 1;
                assert_ne!(b, 3);
            } else if a != b {
                moved_other += 1;
            }
        }
        let share = DEFAULT_SIZE / n;
        assert!((moved_from_3 as f64 - share as f64).abs() < share as f64 * 0.02);
        // Slots that did not belong to the removed backend: the paper reports
        // a small disruption; we bound it at 2% of the table.
        assert!(moved_other < DEFAULT_SIZE / 50, "{moved_other} other slots moved");
    }

    #[test]
    fn same_members_same_table() {
        let a = MaglevTable::build(&members(&[3, 1, 2]), 251);
        let b = MaglevTable::build(&members(&[3, 1, 2]), 251);
        assert_eq!(a.slots, b.slots);
    }

    #[test]
    fn no_live_members_is_empty() {
        let t = MaglevTable::build(&members(&[0, 0]), 251);
        assert!(t.is_empty());
        assert_eq!(t.lookup(7), None);
    }
}
