//! Rate limits per source address: a token bucket for each of a bounded
//! set of recent sources, so one source that draws errors (ICMP errors,
//! the LB's refusals) as fast as it can uses up only its own allowance and
//! never starves anyone else's (with one global bucket, a single flooding
//! host silenced the PMTU messages of every other host).
//!
//! A source's slot is found by a keyed hash; a new source takes the slot
//! over (a fresh bucket). Memory is fixed; cost per packet is one slot.
//! Since every new source starts with a full bucket, a sender rotating
//! through more sources than there are slots would get a burst per
//! packet: a global bucket beside them caps what all sources together get
//! at [`GLOBAL_SOURCES`] sources' allowance (as Linux's `icmp_msgs_per_sec`
//! caps its per-destination limits).

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::table::hash_words;
use crate::Micros;

/// Sources tracked at once.
pub const SLOTS: usize = 1024;
/// All sources together get this many sources' rate and burst.
pub const GLOBAL_SOURCES: u32 = 10;

/// A token bucket: `rate` per second, bursts of `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens scaled by 1e6 so refills need no division per packet.
    micro_tokens: u64,
    last: Micros,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket { rate: rate as u64, burst: burst as u64, micro_tokens: burst as u64 * 1_000_000, last: 0 }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Micros) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.last = now;
        self.micro_tokens = (self.micro_tokens + elapsed.saturating_mul(self.rate)).min(self.burst * 1_000_000);
        if self.micro_tokens >= 1_000_000 {
            self.micro_tokens -= 1_000_000;
            true
        } else {
            false
        }
    }
}

/// Per-source token buckets.
pub struct PerSource {
    /// (the source's key, its bucket)
    slots: Vec<(u64, TokenBucket)>,
    rate: u32,
    burst: u32,
    key: u64,
    /// What all sources together may have.
    global: TokenBucket,
    /// Refused by the global bucket though the source had a token.
    pub global_limited: u64,
}

impl PerSource {
    /// `rate` per second and `burst` for each source; `key` keeps the slot
    /// of a source unpredictable.
    pub fn new(rate: u32, burst: u32, key: u64) -> Self {
        PerSource {
            slots: alloc::vec![(u64::MAX, TokenBucket::new(rate, burst)); SLOTS],
            rate,
            burst,
            key,
            global: TokenBucket::new(rate.saturating_mul(GLOBAL_SOURCES), burst.saturating_mul(GLOBAL_SOURCES)),
            global_limited: 0,
        }
    }

    /// Whether `src` may have one more now.
    pub fn take(&mut self, src: Ipv4Addr, now: Micros) -> bool {
        self.take_key(u32::from(src) as u64, now)
    }

    /// The same for an IPv6 source (its 128 bits folded to a key).
    pub fn take6(&mut self, src: core::net::Ipv6Addr, now: Micros) -> bool {
        let b = u128::from(src);
        self.take_key(((b >> 64) as u64 ^ (b as u64).rotate_left(32)) | 1 << 63, now)
    }

    fn take_key(&mut self, src: u64, now: Micros) -> bool {
        let i = (hash_words(self.key, &[src]) >> 32) as usize % SLOTS;
        let (owner, bucket) = &mut self.slots[i];
        if *owner != src {
            *owner = src;
            *bucket = TokenBucket::new(self.rate, self.burst);
            bucket.last = now;
        }
        if !bucket.take(now) {
            return false;
        }
        let ok = self.global.take(now);
        self.global_limited += !ok as u64;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_limits_rate() {
        let mut b = TokenBucket::new(10, 2);
        assert!(b.take(0));
        assert!(b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(50_000), "half a token");
        assert!(b.take(100_000));
        assert!(b.take(10_000_000));
        assert!(b.take(10_000_000));
        assert!(!b.take(10_000_000), "burst caps the refill");
    }

    #[test]
    fn one_source_cannot_use_up_another_ones_allowance() {
        let mut l = PerSource::new(10, 5, 7);
        let (flood, victim) = (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(198, 51, 100, 2));
        let allowed = (0..1000).filter(|i| l.take(flood, *i)).count();
        assert_eq!(allowed, 5, "the flooding source gets its burst, no more");
        assert!((0..5).all(|_| l.take(victim, 1000)), "the other source still gets its own");
    }

    #[test]
    fn rotating_sources_get_no_more_than_the_global_rate() {
        let (rate, burst) = (10, 5);
        let mut l = PerSource::new(rate, burst, 7);
        // 5000 sources, one packet each, spread over one second.
        let allowed = (0..5000u32).filter(|i| l.take(Ipv4Addr::from(0xc633_6400 + i), *i as u64 * 200)).count();
        let cap = (GLOBAL_SOURCES * (burst + rate)) as usize;
        assert!(allowed <= cap, "{allowed} allowed, the global bucket gives {cap}");
        assert!(allowed >= cap - 1, "{allowed}: the global allowance is used");
        assert_eq!(l.global_limited, 5000 - allowed as u64);
    }
}
