//! A fixed-capacity hash index: open addressing over entry indices.
//!
//! The table stores only indices into a slab the owner keeps (sessions,
//! mappings, flows); the owner supplies the hash and the key comparison.
//! Each slot is 4 bytes: the entry's index (24 bits) and a tag of 8 more
//! bits of its hash, so a probe compares the owner's key (a cache miss into
//! the slab) only for 1 in 256 of the entries it passes. Slots are sized
//! exactly for a load of at most 3/4 (a million entries: 5.3 MiB),
//! allocated once and never grown. Deletion shifts later entries back (no
//! tombstones), so lookups stay short however much churn there is.

use alloc::vec;
use alloc::vec::Vec;

const EMPTY: u32 = u32::MAX;
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
/// The most entries an index holds (entry indices must stay below the
/// all-ones value that marks an empty slot).
pub const MAX_ENTRIES: usize = INDEX_MASK as usize;

pub struct IndexTable {
    slots: Vec<u32>,
    len: usize,
}

/// FxHash-style mixing of a few words, then a full avalanche (every output
/// bit depends on every input bit). The NAT and LB indexes key it with a
/// secret drawn at boot, so an outsider cannot choose addresses and ports
/// that pile up on one slot (with public salts, 20,000 chosen remotes made
/// inserts 700× slower). Maglev's lookup hash keeps a fixed key on purpose:
/// every instance must pick the same backend.
#[inline]
pub fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed;
    for w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    let h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

/// xorshift64: the tables' own random numbers (port choice), seeded per
/// instance; never zero if the seed is not.
#[inline]
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[inline]
fn tag(h: u64) -> u32 {
    // Bits the home slot (the high 32) does not use.
    ((h as u32) << INDEX_BITS) & !INDEX_MASK
}

impl IndexTable {
    /// An index for up to `entries` entries (at most [`MAX_ENTRIES`]).
    pub fn new(entries: usize) -> Self {
        assert!(entries <= MAX_ENTRIES, "IndexTable of {entries} entries");
        IndexTable { slots: vec![EMPTY; Self::slots_for(entries)], len: 0 }
    }

    /// Load at most 3/4, and always one empty slot so probes end.
    fn slots_for(entries: usize) -> usize {
        entries.max(1) * 4 / 3 + 2
    }

    /// Bytes an index for `entries` entries takes.
    pub fn memory_for(entries: usize) -> usize {
        Self::slots_for(entries) * 4
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes used.
    pub fn memory(&self) -> usize {
        self.slots.len() * 4
    }

    /// The home slot of hash `h` (Lemire's multiply-shift range reduction).
    #[inline]
    fn home(&self, h: u64) -> usize {
        (((h >> 32) * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// Prefetches the home slot of `h` so that a lookup soon after finds it
    /// in the cache. A burst prefetches all its packets' slots first: the
    /// misses then overlap instead of following one another.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        prefetch::prefetch(&self.slots[self.home(h)]);
    }

    /// The first entry whose tag matches `h`: a candidate the caller still
    /// verifies (1 in 256 entries it passes has the same tag).
    #[inline]
    pub fn candidate(&self, h: u64) -> Option<u32> {
        self.find(h, |_| true)
    }

    /// The entry with hash `h` for which `is` holds.
    #[inline]
    pub fn find(&self, h: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(h);
        let mut i = self.home(h);
        loop {
            let e = self.slots[i];
            if e == EMPTY {
                return None;
            }
            if e & !INDEX_MASK == t && is(e & INDEX_MASK) {
                return Some(e & INDEX_MASK);
            }
            i = self.next(i);
        }
    }

    /// Adds entry `e` with hash `h`. The caller checks for duplicates and
    /// never inserts more than the capacity it asked for.
    pub fn insert(&mut self, h: u64, e: u32) {
        debug_assert!(e < INDEX_MASK && self.len + 1 < self.slots.len(), "IndexTable over capacity");
        let mut i = self.home(h);
        while self.slots[i] != EMPTY {
            i = self.next(i);
        }
        self.slots[i] = tag(h) | e;
        self.len += 1;
    }

    /// Removes entry `e` (hash `h`); `hash_of` gives the hash of any other
    /// entry, for the backward shift.
    pub fn remove(&mut self, h: u64, e: u32, hash_of: impl Fn(u32) -> u64) -> bool {
        let n = self.slots.len();
        let want = tag(h) | e;
        let mut i = self.home(h);
        loop {
            match self.slots[i] {
                EMPTY => return false,
                x if x == want => break,
                _ => i = self.next(i),
            }
        }
        // Backward-shift deletion: move later entries of the run into the
        // hole when their home slot allows it.
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let x = self.slots[j];
            if x == EMPTY {
                break;
            }
            let home = self.home(hash_of(x & INDEX_MASK));
            // Can x move to `hole`? Only if hole lies cyclically in [home, j).
            let dist_hole = (hole + n - home) % n;
            let dist_j = (j + n - home) % n;
            if dist_hole < dist_j {
                self.slots[hole] = x;
                hole = j;
            }
            j = self.next(j);
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_chosen_for_one_key_do_not_carry_over_to_another() {
        // An attacker who knows the key (as with the old public salts)
        // picks 2,000 remotes that share a home bucket...
        let known = 0x1234_5678_9abc_def0u64;
        let bucket = |key: u64, w: u64| hash_words(key, &[w]) >> 56;
        let chosen: Vec<u64> = (0u64..).filter(|w| bucket(known, *w) == 0x42).take(2000).collect();
        // ...but the appliance's key is a secret drawn at boot.
        for secret in [0x0f0e_0d0c_0b0a_0908u64, 7, u64::MAX] {
            let mut counts = [0u32; 256];
            for w in &chosen {
                counts[bucket(secret, *w) as usize] += 1;
            }
            let most = *counts.iter().max().unwrap();
            assert!(most < 40, "key {secret:#x}: {most} of 2000 in one bucket");
        }
    }
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn h(k: u32) -> u64 {
        // A deliberately poor hash makes long runs and wrap-around likely;
        // equal tags for many keys make the key comparison matter.
        ((k % 7) as u64) << 61 | ((k % 3) as u64) << 32
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 0..400)) {
            let mut t = IndexTable::new(40);
            let mut model = HashSet::new();
            for (insert, k) in ops {
                if insert && !model.contains(&k) {
                    t.insert(h(k), k);
                    model.insert(k);
                } else if !insert {
                    prop_assert_eq!(t.remove(h(k), k, h), model.remove(&k));
                }
                for probe in 0..40u32 {
                    prop_assert_eq!(t.find(h(probe), |e| e == probe).is_some(), model.contains(&probe));
                }
                prop_assert_eq!(t.len(), model.len());
            }
        }
    }

    #[test]
    fn tags_spare_key_comparisons() {
        let mut t = IndexTable::new(1000);
        for k in 0..1000u32 {
            t.insert(hash_words(1, &[k as u64]), k);
        }
        let mut compared = 0;
        for k in 0..1000u32 {
            let found = t.find(hash_words(1, &[k as u64]), |e| {
                compared += 1;
                e == k
            });
            assert_eq!(found, Some(k));
        }
        assert!(compared < 1010, "{compared} key comparisons for 1000 lookups");
    }
}
