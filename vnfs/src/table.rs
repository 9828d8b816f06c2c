//! A fixed-capacity hash index: open addressing over `u32` entry indices.
//!
//! The table stores only indices into a slab the owner keeps (sessions,
//! mappings, flows); the owner supplies the hash and the key comparison.
//! That keeps a million-entry index at 8 MiB (two slots per entry, 4 bytes
//! each), allocated once at start-up and never grown. Deletion shifts later
//! entries back (no tombstones), so lookups stay short however much churn
//! there is.

use alloc::vec;
use alloc::vec::Vec;

const EMPTY: u32 = u32::MAX;

pub struct IndexTable {
    slots: Vec<u32>,
    mask: usize,
    len: usize,
}

/// FxHash-style mixing of a few words: fast, good enough for addresses and
/// ports. `seed` keeps tables of different instances from colliding alike.
#[inline]
pub fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed;
    for w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h ^ (h >> 29)
}

impl IndexTable {
    /// An index for up to `entries` entries (load factor at most 1/2).
    pub fn new(entries: usize) -> Self {
        let n = (entries.max(1) * 2).next_power_of_two();
        IndexTable { slots: vec![EMPTY; n], mask: n - 1, len: 0 }
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

    /// The entry with hash `h` for which `is` holds.
    #[inline]
    pub fn find(&self, h: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut i = h as usize & self.mask;
        loop {
            let e = self.slots[i];
            if e == EMPTY {
                return None;
            }
            if is(e) {
                return Some(e);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds entry `e` with hash `h`. The caller checks for duplicates and
    /// never inserts more than the capacity it asked for.
    pub fn insert(&mut self, h: u64, e: u32) {
        debug_assert!(self.len < self.slots.len() / 2 + 1, "IndexTable over capacity");
        let mut i = h as usize & self.mask;
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = e;
        self.len += 1;
    }

    /// Removes entry `e` (hash `h`); `hash_of` gives the hash of any other
    /// entry, for the backward shift.
    pub fn remove(&mut self, h: u64, e: u32, hash_of: impl Fn(u32) -> u64) -> bool {
        let mut i = h as usize & self.mask;
        loop {
            match self.slots[i] {
                EMPTY => return false,
                x if x == e => break,
                _ => i = (i + 1) & self.mask,
            }
        }
        // Backward-shift deletion: move later entries of the run into the
        // hole when their home slot allows it.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let x = self.slots[j];
            if x == EMPTY {
                break;
            }
            let home = hash_of(x) as usize & self.mask;
            // Can x move to `hole`? Only if hole lies cyclically in [home, j).
            let dist_hole = hole.wrapping_sub(home) & self.mask;
            let dist_j = j.wrapping_sub(home) & self.mask;
            if dist_hole < dist_j {
                self.slots[hole] = x;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn h(k: u32) -> u64 {
        // A deliberately poor hash makes long runs and wrap-around likely.
        (k % 7) as u64 * 3
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
}
