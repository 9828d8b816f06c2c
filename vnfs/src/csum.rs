//! Internet checksum updates (RFC 1624): when a field of a checksummed
//! header changes, the checksum is adjusted from the old and new values
//! instead of summing the whole packet again.

/// HC' = ~(~HC + ~m + m') for one 16-bit word `m` changing to `m'`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!hc) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The same for a 32-bit field (an IPv4 address).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let hc = update16(hc, (old >> 16) as u16, (new >> 16) as u16);
    update16(hc, old as u16, new as u16)
}

/// The ones'-complement difference that adds to a checksum when an
/// address (32 bits) and a port (16 bits) change: fold it in with [`apply`].
#[inline]
pub fn delta(old_addr: u32, new_addr: u32, old_port: u16, new_port: u16) -> u32 {
    (!old_addr >> 16)
        + (!old_addr & 0xffff)
        + (new_addr >> 16)
        + (new_addr & 0xffff)
        + (!old_port) as u32
        + new_port as u32
}

/// HC' = ~(~HC + delta), for a `delta` from [`delta`].
#[inline]
pub fn apply(hc: u16, delta: u32) -> u16 {
    let mut sum = (!hc) as u32 + delta;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// HC' for a checksummed run of bytes `old` (even length) that became
/// `new` (even length): addresses of a pseudo-header that changed family
/// or value (NAT64, the IPv6 load balancer).
pub fn replace(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let sum = |b: &[u8]| b.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum::<u32>();
    // ~old added is the ones'-complement subtraction of old.
    let mut d = sum(new) as u64 + (old.len() as u64 / 2) * 0xffff - sum(old) as u64;
    while d > 0xffff_ffff {
        d = (d & 0xffff_ffff) + (d >> 32);
    }
    let mut d = d as u32;
    d = (d & 0xffff) + (d >> 16);
    d = (d & 0xffff) + (d >> 16);
    apply(hc, d)
}

/// Reads the 16-bit big-endian checksum at `at`.
#[inline]
pub fn get(b: &[u8], at: usize) -> u16 {
    let w: [u8; 2] = b[at..at + 2].try_into().expect("2 bytes");
    u16::from_be_bytes(w)
}

/// Writes the 16-bit big-endian checksum at `at`.
#[inline]
pub fn set(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The ones'-complement sum of `data` as 16-bit big-endian words (an odd
/// last byte padded with zero), not folded: sums of several parts (a
/// pseudo-header and a datagram) add up before one [`fold`].
pub fn sum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        sum += (*b as u32) << 8;
    }
    sum
}

/// Folds a [`sum`] into 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (for the slow path and for tests).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn incremental_equals_recomputed(mut data in proptest::collection::vec(any::<u8>(), 10..64), at in 0usize..3, new in any::<u32>()) {
            data.truncate(data.len() & !1);
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            set(&mut data, 0, c);
            let off = 2 + at * 2;
            let old = u32::from_be_bytes(data[off..off + 4].try_into().unwrap());
            data[off..off + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update32(c, old, new);
            set(&mut data, 0, 0);
            let fresh = checksum(&data);
            // 0x0000 and 0xffff are the same number in ones' complement.
            prop_assert!(inc == fresh || inc ^ fresh == 0xffff && (inc == 0 || fresh == 0), "{inc:#x} {fresh:#x}");
        }

        #[test]
        fn replacing_a_run_equals_recomputing(mut data in proptest::collection::vec(any::<u8>(), 40..80), new in proptest::collection::vec(any::<u8>(), 32..33)) {
            data.truncate(data.len() & !1);
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            let old = data[2..34].to_vec();
            let inc = replace(c, &old, &new);
            data[2..34].copy_from_slice(&new);
            let fresh = checksum(&data);
            prop_assert!(inc == fresh || inc ^ fresh == 0xffff && (inc == 0 || fresh == 0), "{inc:#x} {fresh:#x}");
        }

        #[test]
        fn one_delta_equals_two_updates(hc in any::<u16>(), a in any::<u32>(), b in any::<u32>(), p in any::<u16>(), q in any::<u16>()) {
            let two = update16(update32(hc, a, b), p, q);
            let one = apply(hc, delta(a, b, p, q));
            prop_assert!(one == two || one ^ two == 0xffff && (one == 0 || two == 0), "{one:#x} {two:#x}");
        }
    }
}
