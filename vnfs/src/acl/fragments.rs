//! The ACL's shallow virtual reassembly (RFC 1858 §3, as VPP's ACL plugin
//! does): only a first fragment carries ports, flags and ICMP type, so the
//! verdict the rules gave it is remembered by (source, destination,
//! protocol, IP identifier) and the later fragments of that datagram take
//! the same verdict. Nothing is buffered: a later fragment that arrives
//! before its first has no verdict to follow and is dropped (fail closed;
//! the sender's reassembly times out and it resends).
//!
//! The cache is small and fixed: [`CAPACITY`] entries, [`PER_SOURCE`] per
//! source address (a source over its share replaces its own oldest, so one
//! host's first fragments cannot flush everyone else's), entries live
//! [`LIFETIME`], and a full cache replaces an expired entry, else the
//! oldest (counted).

use alloc::vec::Vec;

use crate::Micros;

/// Datagrams whose first fragment's verdict is remembered.
pub const CAPACITY: usize = 256;
/// Of those, how many one source address may hold.
pub const PER_SOURCE: usize = 16;
/// How long a verdict is kept after its first fragment (the fragments of
/// one datagram leave the sender back to back).
pub const LIFETIME: Micros = 5_000_000;

/// What identifies the fragments of one datagram (RFC 791; RFC 8200
/// §4.5 for IPv6, whose identification is 32 bits and whose fragments
/// carry no protocol until the first: `proto` is 0 there). IPv4
/// addresses are held in the low 32 bits, told apart by `v6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragKey {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub ident: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FragKey,
    permit: bool,
    expires: Micros,
}

#[derive(Default)]
pub struct Fragments {
    entries: Vec<Entry>,
    /// Live entries replaced because the cache was full.
    pub evicted: u64,
    /// Entries a source over its share replaced.
    pub evicted_own: u64,
}

impl Fragments {
    pub fn new() -> Fragments {
        Fragments { entries: Vec::with_capacity(CAPACITY), evicted: 0, evicted_own: 0 }
    }

    /// Remembers the verdict of a first fragment. A second first fragment
    /// of the same datagram (a duplicate, or an overlap) can only make the
    /// verdict stricter: a deny sticks.
    pub fn remember(&mut self, key: FragKey, permit: bool, now: Micros) {
        let live = |e: &Entry| e.expires > now;
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key && live(e)) {
            e.permit &= permit;
            return;
        }
        let entry = Entry { key, permit, expires: now + LIFETIME };
        // One pass each: bounded by CAPACITY.
        let own = self.entries.iter().filter(|e| e.key.src == key.src && live(e)).count();
        let oldest = |entries: &[Entry], f: &dyn Fn(&Entry) -> bool| {
            entries.iter().enumerate().filter(|(_, e)| f(e)).min_by_key(|(_, e)| e.expires).map(|(i, _)| i)
        };
        let slot = if own >= PER_SOURCE {
            self.evicted_own += 1;
            oldest(&self.entries, &|e| e.key.src == key.src && live(e))
        } else if self.entries.len() < CAPACITY {
            None
        } else {
            oldest(&self.entries, &|e| !live(e)).or_else(|| {
                self.evicted += 1;
                oldest(&self.entries, &|_| true)
            })
        };
        match slot {
            Some(i) => self.entries[i] = entry,
            None => self.entries.push(entry),
        }
    }

    /// The verdict of the datagram a later fragment belongs to (`true`:
    /// permitted), if its first fragment was judged within [`LIFETIME`].
    pub fn verdict(&self, key: FragKey, now: Micros) -> Option<bool> {
        self.entries.iter().find(|e| e.key == key && e.expires > now).map(|e| e.permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u128, ident: u32) -> FragKey {
        FragKey { v6: false, src, dst: 9, proto: 17, ident }
    }

    #[test]
    fn verdicts_expire_deny_sticks_and_one_source_cannot_flush_the_others() {
        let mut f = Fragments::new();
        f.remember(key(1, 1), true, 0);
        assert_eq!(f.verdict(key(1, 1), 10), Some(true));
        assert_eq!(f.verdict(key(1, 2), 10), None);
        assert_eq!(f.verdict(key(1, 1), LIFETIME), None, "expired");
        f.remember(key(1, 3), true, 0);
        f.remember(key(1, 3), false, 1);
        f.remember(key(1, 3), true, 2);
        assert_eq!(f.verdict(key(1, 3), 3), Some(false));
        // Source 2 floods: it replaces its own entries, not source 1's.
        for i in 0..1000 {
            f.remember(key(2, i), true, 10 + i as Micros);
        }
        assert_eq!(f.verdict(key(1, 3), 2000), Some(false));
        assert_eq!(f.verdict(key(2, 999), 2000), Some(true));
        assert_eq!(f.verdict(key(2, 0), 2000), None);
        assert!(f.evicted_own > 900);
        // Many sources: the cache stays at its capacity.
        for s in 0..1000u128 {
            f.remember(key(100 + s, 0), true, 3000);
        }
        assert_eq!(f.entries.len(), CAPACITY);
        assert!(f.evicted > 0);
    }
}
