//! Refusals any stage may send: ICMP errors (RFC 792, RFC 1812 §4.3.2) —
//! which packets may get one, and building one in place — and the TCP
//! reset that refuses a segment (the router, the load balancer and the ACL
//! use them).
//!
//! The error is built in the offending packet's own buffer: the original IP
//! header and data stay where they are and become the quoted part; the new
//! Ethernet, IP and ICMP headers are written into the headroom in front.

use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetFrame, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, Ipv4Repr};

use crate::packet::Packet;

/// The errors the router sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 11 code 0.
    TtlExceeded,
    /// Type 3 code 0.
    NetUnreachable,
    /// Type 3 code 1.
    HostUnreachable,
    /// Type 3 code 4, with the next-hop MTU (RFC 1191).
    FragNeeded { mtu: u16 },
    /// Type 3 code 3 (a load-balanced UDP service with no backend up).
    PortUnreachable,
    /// Type 3 code 13: communication administratively prohibited
    /// (RFC 1812 §5.2.7.1), for a filter's `reject`.
    AdminProhibited,
}

impl IcmpError {
    fn type_code(self) -> (Icmpv4Message, u8) {
        match self {
            IcmpError::TtlExceeded => (Icmpv4Message::TimeExceeded, 0),
            IcmpError::NetUnreachable => (Icmpv4Message::DstUnreachable, 0),
            IcmpError::HostUnreachable => (Icmpv4Message::DstUnreachable, 1),
            IcmpError::FragNeeded { .. } => (Icmpv4Message::DstUnreachable, 4),
            IcmpError::PortUnreachable => (Icmpv4Message::DstUnreachable, 3),
            IcmpError::AdminProhibited => (Icmpv4Message::DstUnreachable, 13),
        }
    }
}

/// RFC 1812 §4.3.2.3: the error may quote as much of the original as fits
/// in a 576-byte datagram.
pub const MAX_ERROR_LEN: usize = 576;
use crate::wire::ETH_HLEN;
const NEW_HEADERS: usize = 20 + 8;
/// Headroom needed in front of the original IP header: new IP + ICMP
/// headers, Ethernet, and the NIC's own header.
pub const HEADROOM_NEEDED: usize = NEW_HEADERS + ETH_HLEN + 12;

pub(crate) fn is_unique_host(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() || u32::from(a) >> 28 == 0xf)
}

/// RFC 1812 §4.3.2.7: whether the router may send an error about this frame
/// (Ethernet, its IPv4 header at `l3` and valid). `subnet_broadcasts` are
/// the directed broadcast addresses of the appliance's own subnets.
pub fn may_send_error(frame: &[u8], l3: usize, subnet_broadcasts: &[Ipv4Addr]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    if !eth.dst_addr().is_unicast() {
        return false;
    }
    // The header only: a frame in several buffers holds its payload
    // elsewhere (ingress checked the datagram's length).
    let Some(header) = frame.get(l3..).filter(|h| h.len() >= 20) else {
        return false;
    };
    let ip = Ipv4Packet::new_unchecked(header);
    let dst = ip.dst_addr();
    if dst.is_broadcast() || dst.is_multicast() || subnet_broadcasts.contains(&dst) {
        return false;
    }
    if !is_unique_host(ip.src_addr()) {
        return false;
    }
    if ip.frag_offset() != 0 {
        return false;
    }
    if ip.next_header() == IpProtocol::Icmp {
        let hl = ip.header_len() as usize;
        let icmp_type = ip.into_inner().get(hl).copied();
        // Only queries (echo, timestamp, info, address mask) may get errors.
        if !matches!(icmp_type, Some(0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)) {
            return false;
        }
    }
    true
}

/// Turns `pkt` (Ethernet + IPv4) into an ICMP error from `src` to the
/// original source, quoting as much as RFC 1812 allows. The Ethernet header
/// is left for the caller to fill when it knows the next hop. Returns the
/// destination, or `None` (packet unchanged) if the headroom is too small.
pub fn build_error(pkt: &mut Packet, kind: IcmpError, src: Ipv4Addr, ident: u16) -> Option<Ipv4Addr> {
    let l3 = pkt.meta.l3 as usize;
    let ip_start = pkt.head() + l3;
    if ip_start < HEADROOM_NEEDED || pkt.len() < l3 + 20 {
        return None;
    }
    let (orig_src, orig_len) = {
        let ip = Ipv4Packet::new_unchecked(pkt.l3());
        (ip.src_addr(), (ip.total_len() as usize).min(pkt.len() - l3))
    };
    let quote = orig_len.min(MAX_ERROR_LEN - NEW_HEADERS);
    // The error leaves with a plain Ethernet header (the egress fills it).
    let new_head = ip_start - NEW_HEADERS - ETH_HLEN;
    // Refused for a chained packet (the caller releases its tail first).
    if !pkt.set_window(new_head, ETH_HLEN + NEW_HEADERS + quote) {
        return None;
    }
    pkt.meta.l3 = ETH_HLEN as u8;
    // A new packet with a complete checksum: no offload work left.
    pkt.meta.offload = Default::default();
    let data = pkt.data_mut();
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: orig_src,
        next_header: IpProtocol::Icmp,
        payload_len: 8 + quote,
        hop_limit: 64,
    };
    let mut ip = Ipv4Packet::new_unchecked(&mut data[ETH_HLEN..]);
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    ip.set_ident(ident);
    ip.fill_checksum();
    let mut icmp = Icmpv4Packet::new_unchecked(&mut data[ETH_HLEN + 20..]);
    let (ty, code) = kind.type_code();
    icmp.set_msg_type(ty);
    icmp.set_msg_code(code);
    // Bytes 4..8: unused (zero), or for frag-needed the next-hop MTU in 6..8
    // (RFC 1191). smoltcp names those bytes after echo's fields.
    icmp.set_echo_ident(0);
    icmp.set_echo_seq_no(match kind {
        IcmpError::FragNeeded { mtu } => mtu,
        _ => 0,
    });
    icmp.fill_checksum();
    Some(orig_src)
}

/// Turns a TCP segment into the RST that refuses it (RFC 9293 §3.10.7.1),
/// in place: addresses and ports swapped, no payload. Turns a TCP segment (its whole frame `frame_len` bytes, of which the
/// buffer may hold only the head) into the reset that answers it.
pub fn tcp_reset(pkt: &mut Packet, frame_len: usize) -> bool {
    let l3 = pkt.meta.l3 as usize;
    if pkt.len() < l3 + 20 {
        return false;
    }
    let p = crate::wire::rewrite::parse(pkt.l3());
    let ip_total = (crate::csum::get(pkt.l3(), 2) as usize).min(frame_len.saturating_sub(l3));
    let l4 = p.ihl;
    if pkt.len() < l3 + l4 + 20 || p.total < l4 + 20 {
        return false;
    }
    let d = pkt.l3_mut();
    let seq = u32::from_be_bytes(d[l4 + 4..l4 + 8].try_into().unwrap());
    let ack = u32::from_be_bytes(d[l4 + 8..l4 + 12].try_into().unwrap());
    let flags = d[l4 + 13];
    if flags & 0x04 != 0 {
        // Never answer a reset.
        return false;
    }
    let doff = ((d[l4 + 12] >> 4) as usize * 4).max(20);
    let payload = ip_total.saturating_sub(l4 + doff) as u32;
    let (new_seq, new_ack, new_flags) = if flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        (0, seq.wrapping_add(payload + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32), 0x14)
    };
    // Move the TCP header right after a plain 20-byte IP header.
    let (sport, dport) = (crate::csum::get(d, l4), crate::csum::get(d, l4 + 2));
    d[0] = 0x45;
    d[1] = 0;
    d[2..4].copy_from_slice(&40u16.to_be_bytes());
    d[4..6].copy_from_slice(&[0, 0]);
    d[6..8].copy_from_slice(&[0x40, 0]);
    d[8] = 64;
    let (src, dst) = (p.src, p.dst);
    d[12..16].copy_from_slice(&dst.octets());
    d[16..20].copy_from_slice(&src.octets());
    d[10..12].copy_from_slice(&[0, 0]);
    let c = crate::csum::checksum(&d[..20]);
    crate::csum::set(d, 10, c);
    let t = &mut d[20..40];
    t[0..2].copy_from_slice(&dport.to_be_bytes());
    t[2..4].copy_from_slice(&sport.to_be_bytes());
    t[4..8].copy_from_slice(&new_seq.to_be_bytes());
    t[8..12].copy_from_slice(&new_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = new_flags;
    t[14..20].fill(0);
    let mut pseudo = [0u8; 32];
    pseudo[0..4].copy_from_slice(&dst.octets());
    pseudo[4..8].copy_from_slice(&src.octets());
    pseudo[9] = crate::flow::TCP;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    pseudo[12..32].copy_from_slice(t);
    let c = crate::csum::checksum(&pseudo);
    crate::csum::set(t, 16, c);
    pkt.set_len(l3 + 40)
}

/// Turns a refused packet into its answer, in its own buffer: a TCP reset
/// if `tcp`, else the ICMP error `kind` from `from` (if RFC 1812 allows an
/// error about it). The answer is not routed: the router later in the
/// pipeline sends it back. `None`: no answer, the buffer is back in `pool`.
/// The load balancer (no backend) and the ACL (`reject`) use it.
pub fn refuse(
    mut pkt: Packet,
    pool: &mut crate::packet::PacketPool,
    tcp: bool,
    kind: IcmpError,
    from: Option<Ipv4Addr>,
    ident: u16,
) -> Option<Packet> {
    let total = pkt.total_len();
    pool.release_tail(&mut pkt);
    pkt.meta.offload = Default::default();
    let ok = if tcp {
        tcp_reset(&mut pkt, total)
    } else {
        match from {
            Some(from) if may_send_error(pkt.data(), pkt.meta.l3 as usize, &[]) => {
                build_error(&mut pkt, kind, from, ident).is_some()
            }
            _ => false,
        }
    };
    if ok {
        pkt.meta.local = false;
        pkt.meta.out_port = None;
        Some(pkt)
    } else {
        pool.free(pkt);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const ETH: usize = ETH_HLEN;
    use crate::packet::PacketPool;
    use crate::testutil::*;
    use smoltcp::wire::{Icmpv4DstUnreachable, Icmpv4Repr, Icmpv4TimeExceeded, Ipv4Repr};

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn frame(len: usize) -> std::vec::Vec<u8> {
        echo_request(PEER_MAC, PEER_IP, Ipv4Addr::new(192, 0, 2, 9), 5, &std::vec![0xab; len])
    }

    fn parse(pkt: &Packet) -> (Ipv4Repr, std::vec::Vec<u8>, Icmpv4Packet<std::vec::Vec<u8>>) {
        let ip = Ipv4Packet::new_checked(&pkt.data()[ETH..]).unwrap();
        assert!(ip.verify_checksum());
        let repr = Ipv4Repr::parse(&ip, &ChecksumCapabilities::default()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload().to_vec()).unwrap();
        assert!(icmp.verify_checksum());
        (repr, ip.payload().to_vec(), icmp)
    }

    #[test]
    fn time_exceeded_is_byte_exact_and_quotes_the_original() {
        let mut pool = PacketPool::new(1);
        let mut p = pool.alloc().unwrap();
        let orig = frame(56);
        p.fill(&orig);
        assert_eq!(build_error(&mut p, IcmpError::TtlExceeded, ME, 7), Some(PEER_IP));
        let (ip, _, icmp) = parse(&p);
        assert_eq!((ip.src_addr, ip.dst_addr, ip.hop_limit), (ME, PEER_IP, 64));
        match Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(icmp.as_ref()), &ChecksumCapabilities::default()).unwrap()
        {
            Icmpv4Repr::TimeExceeded { reason, header, data } => {
                assert_eq!(reason, Icmpv4TimeExceeded::TtlExpired);
                assert_eq!(header.dst_addr, Ipv4Addr::new(192, 0, 2, 9));
                assert_eq!(data.len(), 64, "the original's whole ICMP message is quoted");
            }
            r => panic!("{r:?}"),
        }
        // The whole original IP datagram is quoted after the 8-byte ICMP header.
        assert_eq!(&icmp.into_inner()[8..], &orig[ETH..]);
        pool.free(p);
    }

    #[test]
    fn frag_needed_carries_the_mtu_and_quote_is_capped_at_576() {
        let mut pool = PacketPool::new(1);
        let mut p = pool.alloc().unwrap();
        p.fill(&frame(1400));
        build_error(&mut p, IcmpError::FragNeeded { mtu: 1400 }, ME, 1).unwrap();
        let (ip, payload, icmp) = parse(&p);
        assert_eq!(ip.payload_len + 20, MAX_ERROR_LEN);
        assert_eq!(payload.len() + 20, MAX_ERROR_LEN);
        // smoltcp's Repr refuses a truncated quote (the quoted header's
        // total length exceeds it), so read the fields directly.
        assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(Icmpv4DstUnreachable::from(icmp.msg_code()), Icmpv4DstUnreachable::FragRequired);
        assert_eq!(&payload[6..8], &1400u16.to_be_bytes());
        pool.free(p);
    }

    #[test]
    fn no_errors_about_errors_broadcasts_or_fragments() {
        let ok = frame(8);
        assert!(may_send_error(&ok, ETH, &[]));
        let mut bcast = ok.clone();
        bcast[0..6].copy_from_slice(&[0xff; 6]);
        assert!(!may_send_error(&bcast, ETH, &[]));
        assert!(!may_send_error(&ok, ETH, &[Ipv4Addr::new(192, 0, 2, 9)]), "directed broadcast");
        let mut frag = ok.clone();
        frag[ETH + 7] = 8; // offset 64 bytes
        assert!(!may_send_error(&frag, ETH, &[]));
        let mut err = ok.clone();
        err[ETH + 20] = 3; // ICMP type: destination unreachable
        assert!(!may_send_error(&err, ETH, &[]));
        let mut zero_src = ok.clone();
        zero_src[ETH + 12..ETH + 16].copy_from_slice(&[0; 4]);
        assert!(!may_send_error(&zero_src, ETH, &[]));
    }
}
