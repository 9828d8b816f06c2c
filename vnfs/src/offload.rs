//! The work a NIC with offloads leaves undone, and doing it in software
//! where the next NIC (or the host stack) cannot.
//!
//! A NIC that negotiated checksum offload and TCP segmentation (virtio-net's
//! `CSUM`, `GUEST_TSO4`, …) hands over TCP super-packets of up to 64 KiB
//! whose transport checksum is *partial* (its field holds only the
//! pseudo-header sum) and which the transmitting NIC will cut into segments
//! of `gso_size` payload bytes (see [`Offload`]). Stages carry them through
//! like any packet: they rewrite only headers. Two things remain:
//!
//! - A stage that changes an address changes the pseudo-header, so before
//!   transmit the partial sum is recomputed from the final header
//!   ([`refresh_partial`]; a handful of additions, no payload touched).
//! - Where the packet goes to a NIC without offloads, or to the appliance's
//!   own host stack, the segments are cut here ([`segment`]) and checksums
//!   completed here ([`complete_checksum`]), as Linux's software GSO does.

use crate::counters::DropReason;
use crate::csum;
use crate::packet::{Offload, Packet, PacketPool, MAX_FRAME};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The smallest segment size a received super-packet may ask for: Linux's
/// `TCP_MIN_MSS`, below which no real TCP sender goes. A device (a hostile
/// vhost-user backend, a buggy one) that says less would have the software
/// segmenter cut hundreds of segments per kilobyte.
pub const MIN_GSO_SIZE: u16 = 88;

/// The smallest IPv4 and TCP headers: what a segment carries besides its
/// payload at least.
const MIN_TCP_IPV4_HEADERS: u16 = 40;

/// Whether a received packet's segment size is one a sender on a link of
/// `mtu` could have used: 0 (no super-packet), or from [`MIN_GSO_SIZE`] to
/// the payload one segment of that MTU carries. The dataplane drops the
/// rest at ingress (`gso_size_invalid`), before any stage or the
/// segmenter trusts the number.
pub fn gso_size_acceptable(gso_size: u16, mtu: u16) -> bool {
    gso_size == 0 || (MIN_GSO_SIZE..=mtu.saturating_sub(MIN_TCP_IPV4_HEADERS)).contains(&gso_size)
}

/// The IPv4 and TCP header lengths of a TCP/IPv4 frame (`None` if it is not
/// one or its headers are not all in the first buffer).
fn tcp_headers(pkt: &Packet) -> Option<(usize, usize)> {
    let d = pkt.data();
    let l3 = pkt.meta.l3 as usize;
    let ip = d.get(l3..l3 + 20)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ip[9] != TCP || ihl < 20 {
        return None;
    }
    let doff = (*d.get(l3 + ihl + 12)? >> 4) as usize * 4;
    (doff >= 20 && d.len() >= l3 + ihl + doff).then_some((ihl, doff))
}

/// The IPv4 datagram length of one segment `pkt` will be cut into, with
/// `mss` payload bytes (for the MTU check). `None` if it is not TCP/IPv4.
pub fn segment_len(pkt: &Packet, mss: u16) -> Option<usize> {
    let (ihl, doff) = tcp_headers(pkt)?;
    Some(ihl + doff + mss as usize)
}

/// The transport checksum field of a partial-checksum packet, if it is
/// TCP or UDP over IPv4 with the checksum where those keep it.
fn partial_field(pkt: &Packet) -> Option<(usize, u8)> {
    let o = &pkt.meta.offload;
    let d = pkt.data();
    let l3 = pkt.meta.l3 as usize;
    let ip = d.get(l3..l3 + 20)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let proto = ip[9];
    let at = match proto {
        TCP => 16,
        UDP => 6,
        _ => return None,
    };
    (o.csum_start as usize == l3 + ihl && o.csum_offset as usize == at && d.len() >= l3 + ihl + at + 2)
        .then_some((l3 + ihl + at, proto))
}

/// The pseudo-header sum (RFC 793 §3.1, RFC 768) of the IPv4 datagram in
/// `ip`, folded but not complemented: what a partial checksum holds.
fn pseudo_sum(ip: &[u8], proto: u8) -> u16 {
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let l4_len = (csum::get(ip, 2) as u32).saturating_sub(ihl as u32);
    let mut sum = proto as u32 + l4_len;
    for at in [12, 14, 16, 18] {
        sum += csum::get(ip, at) as u32;
    }
    csum::fold(sum)
}

/// Recomputes a partial checksum from the packet's final IPv4 header
/// (stages may have changed its addresses). Returns `false` if the packet
/// is partial but not TCP/UDP over IPv4 with the usual offsets: nothing
/// here can fix such a packet, and it should be dropped.
pub fn refresh_partial(pkt: &mut Packet) -> bool {
    if !pkt.meta.offload.csum_partial {
        return true;
    }
    let Some((field, proto)) = partial_field(pkt) else { return false };
    let sum = pseudo_sum(pkt.l3(), proto);
    csum::set(pkt.data_mut(), field, sum);
    true
}

/// Completes a partial checksum in software: sums the bytes from
/// `csum_start` to the end of the frame (across the chain; the field holds
/// the pseudo-header sum) and stores the result. Returns `false` if the
/// packet is not one [`refresh_partial`] accepts.
pub fn complete_checksum(pkt: &mut Packet) -> bool {
    if !pkt.meta.offload.csum_partial {
        return true;
    }
    if crate::ipv6::is_ipv6(pkt.l3()) {
        return crate::ipv6::complete_checksum(pkt);
    }
    if !refresh_partial(pkt) {
        return false;
    }
    let Some((field, proto)) = partial_field(pkt) else { return false };
    let start = pkt.meta.offload.csum_start as usize;
    let ip_end = pkt.meta.l3 as usize + csum::get(pkt.l3(), 2) as usize;
    let mut sum = 0u32;
    // Sum whole 16-bit words; a buffer may end on an odd byte.
    let mut odd: Option<u8> = None;
    let mut at = 0;
    for seg in core::iter::once(&*pkt).chain(pkt.tail()) {
        let d = seg.data();
        let from = start.saturating_sub(at).min(d.len());
        let to = ip_end.saturating_sub(at).min(d.len()).max(from);
        at += d.len();
        let mut bytes = &d[from..to];
        if let Some(hi) = odd.take() {
            if let Some((&lo, rest)) = bytes.split_first() {
                sum += u16::from_be_bytes([hi, lo]) as u32;
                bytes = rest;
            } else {
                odd = Some(hi);
            }
        }
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        if let [b] = words.remainder() {
            odd = Some(*b);
        }
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let Some(hi) = odd {
        sum += (hi as u32) << 8;
    }
    let mut c = !csum::fold(sum);
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    csum::set(pkt.data_mut(), field, c);
    let o = &mut pkt.meta.offload;
    (o.csum_partial, o.csum_start, o.csum_offset) = (false, 0, 0);
    true
}

/// Cuts a TCP/IPv4 super-packet into segments of at most `mss` payload
/// bytes (software TSO, as Linux's `tcp_gso_segment`): each with its own
/// IPv4 length, identification and checksum, TCP sequence number and
/// complete checksum; FIN and PSH only on the last segment, CWR only on
/// the first. One segment per [`next`](Self::next), so the caller can send
/// each on while holding the pool.
pub struct Segmenter {
    pkt: Packet,
    /// Where the IPv4 header starts.
    l3: usize,
    ihl: usize,
    doff: usize,
    mss: usize,
    offset: usize,
    end: usize,
    n: u16,
}

impl Segmenter {
    /// Gives the packet back if it is not TCP/IPv4 with its headers in the
    /// first buffer.
    pub fn new(pkt: Packet, mss: u16) -> Result<Segmenter, Packet> {
        let Some((ihl, doff)) = tcp_headers(&pkt) else { return Err(pkt) };
        let l3 = pkt.meta.l3 as usize;
        let hdrs = l3 + ihl + doff;
        let end = (l3 + csum::get(pkt.l3(), 2) as usize).min(pkt.total_len());
        let mss = (mss as usize).clamp(1, MAX_FRAME - hdrs);
        Ok(Segmenter { pkt, l3, ihl, doff, mss, offset: hdrs, end, n: 0 })
    }

    /// The next segment; `None` when all are out; `Some(None)` when the pool
    /// had no buffer (the caller stops and calls [`finish`](Self::finish)).
    pub fn next(&mut self, pool: &mut PacketPool) -> Option<Option<Packet>> {
        let (l3, ihl, doff) = (self.l3, self.ihl, self.doff);
        let hdrs = l3 + ihl + doff;
        if self.offset >= self.end && self.n > 0 {
            return None;
        }
        let Some(mut s) = pool.alloc() else { return Some(None) };
        let len = (self.end.saturating_sub(self.offset)).min(self.mss);
        let last = self.offset + len >= self.end;
        s.meta = self.pkt.meta;
        // A fresh buffer holds headers plus at most MAX_FRAME - hdrs bytes.
        let _ = s.set_len(hdrs + len);
        let src = self.pkt.data();
        let f = s.data_mut();
        f[..hdrs].copy_from_slice(&src[..hdrs]);
        let _ = self.pkt.copy_out(self.offset, &mut f[hdrs..]);
        let ip = &mut f[l3..];
        let id = csum::get(ip, 4).wrapping_add(self.n);
        csum::set(ip, 2, (ihl + doff + len) as u16);
        csum::set(ip, 4, id);
        csum::set(ip, 10, 0);
        let c = csum::checksum(&ip[..ihl]);
        csum::set(ip, 10, c);
        let tcp = &mut ip[ihl..];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        tcp[4..8].copy_from_slice(&seq.wrapping_add((self.offset - hdrs) as u32).to_be_bytes());
        if !last {
            tcp[13] &= !(0x01 | 0x08); // FIN, PSH
        }
        if self.n > 0 {
            tcp[13] &= !0x80; // CWR
        }
        s.meta.offload = Offload { csum_partial: true, csum_start: (l3 + ihl) as u16, csum_offset: 16, gso_size: 0 };
        complete_checksum(&mut s);
        self.offset += len;
        self.n += 1;
        Some(Some(s))
    }

    /// Returns the original packet to the pool.
    pub fn finish(self, pool: &mut PacketPool) {
        pool.free(self.pkt);
    }
}

/// Makes a packet what a receiver that does no offload work can take —
/// the one place that decides it, for the host stacks, wires and the
/// egress: a segmentation super-packet is cut into segments of at most
/// `mss` payload bytes, a partial checksum is completed, and (with
/// `single_buffer`) a frame spread over several buffers is refused. Every
/// packet that results goes to `out`, which gets the pool back. On failure
/// the packet is freed (after the segments already made went out) and the
/// drop reason returned for the caller to count; on success, the number of
/// segments cut (0: the packet went on whole).
pub fn normalize(
    mut pkt: Packet,
    mss: u16,
    single_buffer: bool,
    pool: &mut PacketPool,
    mut out: impl FnMut(Packet, &mut PacketPool),
) -> Result<u64, DropReason> {
    if pkt.meta.offload.is_gso() {
        let mut cut = match Segmenter::new(pkt, mss) {
            Ok(c) => c,
            Err(pkt) => {
                pool.free(pkt);
                return Err(DropReason::OffloadUnsupported);
            }
        };
        let mut n = 0;
        while let Some(seg) = cut.next(pool) {
            let Some(seg) = seg else {
                cut.finish(pool);
                return Err(DropReason::SegmentNoBuffer);
            };
            n += 1;
            out(seg, pool);
        }
        cut.finish(pool);
        return Ok(n);
    }
    if single_buffer && pkt.is_chained() || !complete_checksum(&mut pkt) {
        pool.free(pkt);
        return Err(DropReason::OffloadUnsupported);
    }
    out(pkt, pool);
    Ok(0)
}

/// Why [`segment`] could not cut a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// Not a TCP/IPv4 super-packet this code can cut.
    NotTcp,
    /// The pool ran out of buffers part way (the segments made so far were
    /// handed on).
    NoBuffer,
}

/// [`Segmenter`] all at once: every segment goes to `out`; the original
/// returns to `pool`.
pub fn segment(pkt: Packet, mss: u16, pool: &mut PacketPool, mut out: impl FnMut(Packet)) -> Result<(), SegmentError> {
    let mut s = match Segmenter::new(pkt, mss) {
        Ok(s) => s,
        Err(pkt) => {
            pool.free(pkt);
            return Err(SegmentError::NotTcp);
        }
    };
    let mut result = Ok(());
    while let Some(seg) = s.next(pool) {
        match seg {
            Some(seg) => out(seg),
            None => {
                result = Err(SegmentError::NoBuffer);
                break;
            }
        }
    }
    s.finish(pool);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::HEADROOM;
    use crate::wire::ETH_HLEN as ETH;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    use std::vec;
    use std::vec::Vec;

    /// A TCP/IPv4 frame with `payload`, its checksum left partial (the
    /// pseudo-header sum) as a sender with offloads leaves it.
    fn partial_tcp(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 20 + payload.len()];
        f[12..14].copy_from_slice(&[8, 0]);
        let ip = &mut f[ETH..];
        ip[0] = 0x45;
        csum::set(ip, 2, (40 + payload.len()) as u16);
        csum::set(ip, 4, 0x1000);
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = TCP;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&[198, 51, 100, 1]);
        let c = csum::checksum(&ip[..20]);
        csum::set(ip, 10, c);
        let t = &mut ip[20..];
        t[0..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&[0xff, 0xff]);
        t[20..].copy_from_slice(payload);
        let sum = pseudo_sum(&f[ETH..], TCP);
        csum::set(&mut f, ETH + 20 + 16, sum);
        f
    }

    /// `frame` chained as a NIC with offloads delivers it, checksum partial.
    fn chained(pool: &mut PacketPool, frame: &[u8], chunk: usize, gso: u16) -> Packet {
        let mut head = crate::testutil::chained(pool, frame, chunk);
        head.meta.offload = Offload { csum_partial: true, csum_start: 34, csum_offset: 16, gso_size: gso };
        head
    }

    fn verifies(frame: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[ETH..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum() && tcp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr()))
    }

    #[test]
    fn completing_a_chained_partial_checksum_equals_the_sum_from_scratch() {
        let payload: Vec<u8> = (0..5001u32).map(|i| (i * 7 + 3) as u8).collect();
        let frame = partial_tcp(&payload, 0x18);
        // Odd buffer sizes put words across buffer boundaries.
        let mut pool = PacketPool::with_tails(16, 1);
        let mut pkt = chained(&mut pool, &frame, 1001, 0);
        // A NAT rewrote the source after the sender summed the pseudo-header.
        pkt.data_mut()[ETH + 12..ETH + 16].copy_from_slice(&[192, 0, 2, 7]);
        let ip = &mut pkt.data_mut()[ETH..];
        csum::set(ip, 10, 0);
        let c = csum::checksum(&ip[..20]);
        csum::set(ip, 10, c);
        assert!(complete_checksum(&mut pkt));
        let mut whole = vec![0u8; pkt.total_len()];
        assert!(pkt.copy_out(0, &mut whole));
        assert!(verifies(&whole));
        assert!(!pkt.meta.offload.csum_partial);
        pool.free(pkt);
        assert_eq!(pool.available(), 16);
    }

    #[test]
    fn software_segmentation_cuts_a_super_packet_into_valid_segments() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let frame = partial_tcp(&payload, 0x18 | 0x01 | 0x80); // PSH ACK FIN CWR
        let mut pool = PacketPool::with_tails(64, 1);
        let pkt = chained(&mut pool, &frame, 1900 - HEADROOM, 1448);
        let mut segs = Vec::new();
        segment(pkt, 1448, &mut pool, |s| segs.push(s)).unwrap();
        assert_eq!(segs.len(), 7, "10000 bytes in 1448-byte segments");
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(verifies(s.data()), "segment {i} checksums");
            let ip = Ipv4Packet::new_checked(&s.data()[ETH..]).unwrap();
            assert_eq!(ip.ident(), 0x1000 + i as u16);
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(tcp.seq_number().0 as usize, 1000 + i * 1448);
            let last = i == segs.len() - 1;
            assert_eq!(tcp.fin(), last);
            assert_eq!(tcp.psh(), last);
            assert_eq!(ip.payload()[13] & 0x80 != 0, i == 0, "CWR only on the first");
            data.extend_from_slice(tcp.payload());
        }
        assert_eq!(data, payload);
        for s in segs {
            pool.free(s);
        }
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn a_device_that_lies_about_the_segment_size_is_refused_and_counted() {
        use crate::counters::DropReason;
        // A wire to a port without offloads: the super-packet is cut here.
        // gso_size 1 once made 10,000 one-byte segments (until the pool ran
        // dry) out of one 10 KB super-packet from a hostile backend.
        let config = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 mtu 1400\nwire lan wan\n";
        let mut rig = crate::testutil::Rig::with_config(config, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]);
        rig.pool = PacketPool::with_tails(crate::testutil::RIG_BUFFERS, 1);
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let frame = partial_tcp(&payload, 0x18);
        // lan's MTU 1500 carries at most 1460 payload bytes a segment;
        // wan's 1400, 1360.
        for (port, gso, segments) in
            [(0, 1, 0), (0, 87, 0), (0, 1461, 0), (1, 1361, 0), (0, 88, 114), (0, 1460, 7), (1, 1360, 8)]
        {
            let before = rig.drops(port, DropReason::GsoSizeInvalid);
            let mut batch = crate::packet::Batch::new();
            batch.push(chained(&mut rig.pool, &frame, 1800, gso)).unwrap();
            rig.dp.receive(port as u8, &mut batch, &mut rig.pool, 0);
            let out = rig.sent(1 - port as u8);
            assert_eq!(out.len(), segments, "gso_size {gso} on port {port}");
            let refused = rig.drops(port, DropReason::GsoSizeInvalid) - before;
            assert_eq!(refused, u64::from(segments == 0), "gso_size {gso} on port {port}");
            for s in &out {
                assert!(verifies(s), "gso_size {gso}");
            }
        }
        rig.finish();
    }

    #[test]
    fn a_packet_that_is_not_tcp_is_refused_and_returned() {
        let mut pool = PacketPool::new(4);
        let mut p = pool.alloc().unwrap();
        p.fill(&[0u8; 60]);
        assert_eq!(segment(p, 1000, &mut pool, |_| panic!("no segment")), Err(SegmentError::NotTcp));
        assert_eq!(pool.available(), 4);
    }
}
