//! IPv6 as the framework sees it (RFC 8200, RFC 4291, RFC 4443): header
//! checks at ingress, the bounded walk over extension headers, addresses
//! derived from a MAC, and ICMPv6 errors built in the offending packet's
//! own buffer. The per-port neighbour discovery, duplicate address
//! detection and router advertisements are in [`host`]; forwarding is the
//! router stage's.

pub mod host;
#[cfg(test)]
mod tests;

use core::net::Ipv6Addr;

use smoltcp::wire::Icmpv6Packet;

use crate::counters::DropReason;
use crate::packet::Packet;
use crate::wire::ETH_HLEN;

/// The fixed header.
pub const HLEN: usize = 40;
pub const ICMPV6: u8 = 58;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
/// Extension headers walked before a packet is refused as
/// `ipv6_bad_ext_header` (a chain longer than this is an attack or a bug).
pub const MAX_EXT_HEADERS: usize = 8;
/// An ICMPv6 error carries as much of the offending packet as keeps it
/// within the minimum MTU (RFC 4443 §2.4 c).
pub const MIN_MTU: usize = 1280;
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
pub const ETHERTYPE: [u8; 2] = [0x86, 0xdd];

/// Whether `frame`'s L3 header (at `l3`) is IPv6.
#[inline]
pub fn is_ipv6(l3: &[u8]) -> bool {
    l3.first().is_some_and(|b| b >> 4 == 6)
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291 App. A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let b = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    Ipv6Addr::from(b)
}

/// A port's IPv6 addresses as the appliance uses them: its link-local
/// address first, then the config's; none if the config gives it none
/// (IPv6 is off there).
pub fn port_nets(mac: [u8; 6], configured: &[ipnet::Ipv6Net]) -> alloc::vec::Vec<ipnet::Ipv6Net> {
    if configured.is_empty() {
        return alloc::vec::Vec::new();
    }
    let ll = ipnet::Ipv6Net::new(link_local(mac), 64).expect("/64 is valid");
    core::iter::once(ll).chain(configured.iter().copied()).collect()
}

pub fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

pub fn is_solicited_node(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    o[..13] == [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7).
pub fn multicast_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A source a host can have: not multicast, not unspecified, not loopback.
pub fn is_unicast_source(a: &Ipv6Addr) -> bool {
    !a.is_multicast() && !a.is_unspecified() && !a.is_loopback()
}

pub fn src(ip: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"))
}

pub fn dst(ip: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"))
}

/// The source the appliance uses toward `to` among a port's usable
/// addresses `addrs` (link-local ones included): link-local toward a
/// link-local peer, else the global address on `to`'s prefix, else the
/// first global one, else link-local.
pub fn pick_source<'a>(addrs: impl Iterator<Item = &'a ipnet::Ipv6Net> + Clone, to: &Ipv6Addr) -> Option<Ipv6Addr> {
    let link_local = addrs.clone().map(|n| n.addr()).find(is_link_local);
    if is_link_local(to) {
        return link_local;
    }
    let mut globals = addrs.filter(|n| !is_link_local(&n.addr()));
    let first = globals.clone().next();
    globals.find(|n| n.contains(to)).or(first).map(|n| n.addr()).or(link_local)
}

/// Validates an IPv6 header against the frame it came in and returns the
/// destination. `bytes` starts at the header; `available` counts the
/// packet's bytes in the whole frame.
pub fn check_ipv6(bytes: &[u8], available: usize) -> Result<Ipv6Addr, DropReason> {
    if bytes.len() < HLEN {
        return Err(DropReason::Ipv6Truncated);
    }
    if bytes[0] >> 4 != 6 {
        return Err(DropReason::Ipv6BadVersion);
    }
    let payload = u16::from_be_bytes([bytes[4], bytes[5]]) as usize;
    if HLEN + payload > available.max(bytes.len()) {
        return Err(DropReason::Ipv6Truncated);
    }
    Ok(dst(bytes))
}

/// Where the upper-layer header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upper {
    /// Its protocol number (59: none).
    pub proto: u8,
    /// Its offset from the IPv6 header's start.
    pub offset: usize,
    /// Not a later fragment (a later fragment has no upper-layer header).
    pub first: bool,
    /// Of a fragment: its identification, offset (8-byte units) and
    /// whether more follow (the ACL remembers a first fragment's verdict
    /// for the later ones).
    pub frag: Option<(u32, u16, bool)>,
}

/// Walks the extension headers of the IPv6 packet `ip` (the bytes from
/// its header on, in one buffer): at most [`MAX_EXT_HEADERS`], each
/// inside the packet, hop-by-hop options only first (RFC 8200 §4.1).
pub fn upper_layer(ip: &[u8]) -> Result<Upper, DropReason> {
    let end = (HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize).min(ip.len());
    let mut next = ip[6];
    let mut at = HLEN;
    let mut first = true;
    let mut frag = None;
    for n in 0..=MAX_EXT_HEADERS {
        let len = match next {
            0 if n > 0 => return Err(DropReason::Ipv6BadExtHeader),
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => (*ip.get(at + 1).ok_or(DropReason::Ipv6BadExtHeader)? as usize + 1) * 8,
            44 => {
                let fh = ip.get(at..at + 8).ok_or(DropReason::Ipv6BadExtHeader)?;
                let off = u16::from_be_bytes([fh[2], fh[3]]);
                if off & 0xfff8 != 0 {
                    first = false;
                }
                let ident = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                frag = Some((ident, off >> 3, off & 1 != 0));
                8
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => (*ip.get(at + 1).ok_or(DropReason::Ipv6BadExtHeader)? as usize + 2) * 4,
            proto => return Ok(Upper { proto, offset: at, first, frag }),
        };
        if n == MAX_EXT_HEADERS || at + len > end {
            return Err(DropReason::Ipv6BadExtHeader);
        }
        next = ip[at];
        at += len;
        if !first {
            // A later fragment: what follows is payload, not a header.
            return Ok(Upper { proto: next, offset: at, first, frag });
        }
    }
    Err(DropReason::Ipv6BadExtHeader)
}

/// An ICMPv6 error (RFC 4443 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp6Error {
    /// Destination unreachable, code 0.
    NoRoute,
    /// Code 1 (an ACL's reject).
    AdminProhibited,
    /// Code 2: a link-local source would leave its link.
    BeyondScope,
    /// Code 3: the next hop never answered neighbour solicitations.
    AddressUnreachable,
    /// Code 4.
    PortUnreachable,
    /// Time exceeded, code 0.
    HopLimit,
    PacketTooBig {
        mtu: u32,
    },
}

impl Icmp6Error {
    /// (type, code, the 32-bit field after the checksum)
    pub fn fields(self) -> (u8, u8, u32) {
        match self {
            Icmp6Error::NoRoute => (1, 0, 0),
            Icmp6Error::AdminProhibited => (1, 1, 0),
            Icmp6Error::BeyondScope => (1, 2, 0),
            Icmp6Error::AddressUnreachable => (1, 3, 0),
            Icmp6Error::PortUnreachable => (1, 4, 0),
            Icmp6Error::HopLimit => (3, 0, 0),
            Icmp6Error::PacketTooBig { mtu } => (2, 0, mtu),
        }
    }
}

/// A stage's refusal answered in the refused packet's own buffer: a TCP
/// reset if `reset`, else the ICMPv6 error `kind` from `from`, where RFC
/// 4443 §2.4 (e) allows one. The answer goes on through the pipeline (the
/// router sends it back); `None` when there is none (the buffer is freed).
pub fn refusal(
    mut pkt: Packet,
    reset: bool,
    kind: Icmp6Error,
    from: Option<Ipv6Addr>,
    pool: &mut crate::packet::PacketPool,
) -> Option<Packet> {
    pool.release_tail(&mut pkt);
    pkt.meta.offload = Default::default();
    let ok = if reset {
        tcp_reset(&mut pkt)
    } else {
        from.is_some_and(|from| {
            pkt.untag()
                && may_send_error(pkt.data(), pkt.meta.l3 as usize, kind)
                && build_error(&mut pkt, kind, from).is_some()
        })
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

/// Whether RFC 4443 §2.4 (e) allows an error about the packet in `frame`
/// (its IPv6 header at `l3`): never about an ICMPv6 error or a redirect,
/// nor about a packet to a multicast address or sent as link-layer
/// multicast (packet too big excepted), nor to a source that is not a
/// single host.
pub fn may_send_error(frame: &[u8], l3: usize, kind: Icmp6Error) -> bool {
    let Some(ip) = frame.get(l3..).filter(|ip| ip.len() >= HLEN) else { return false };
    let too_big = matches!(kind, Icmp6Error::PacketTooBig { .. });
    let l2_multicast = frame.first().is_some_and(|b| b & 1 == 1);
    if !too_big && (l2_multicast || dst(ip).is_multicast()) {
        return false;
    }
    if !is_unicast_source(&src(ip)) {
        return false;
    }
    match upper_layer(ip) {
        Ok(u) if u.first && u.proto == ICMPV6 => match ip.get(u.offset) {
            // Informational messages (128 and up) may draw errors, but not
            // neighbour discovery (133–137: link-local by rule).
            Some(&t) => t >= 128 && !(133..=137).contains(&t),
            None => false,
        },
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Turns `pkt` (an unchained Ethernet + IPv6 frame, the L3 header right
/// after a plain Ethernet header) into the ICMPv6 error `kind` from `src`
/// to the packet's source, in place: the window moves 48 bytes into the
/// headroom so the offending packet becomes the quote, cut to keep the
/// error within 1280 bytes. Returns the error's destination, or `None`
/// (the packet unchanged) if it cannot be built.
pub fn build_error(pkt: &mut Packet, kind: Icmp6Error, from: Ipv6Addr) -> Option<Ipv6Addr> {
    const GROW: usize = HLEN + 8;
    if pkt.meta.l3 as usize != ETH_HLEN || pkt.is_chained() || pkt.len() < ETH_HLEN + HLEN {
        return None;
    }
    let d = pkt.data();
    let ip = &d[ETH_HLEN..];
    let to = src(ip);
    // The quote: the packet as it arrived, without Ethernet padding.
    let datagram = (HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize).min(ip.len());
    let quote = datagram.min(MIN_MTU - GROW);
    let head = pkt.head().checked_sub(GROW)?;
    let (eth_dst, eth_src) = (<[u8; 6]>::try_from(&d[0..6]).ok()?, <[u8; 6]>::try_from(&d[6..12]).ok()?);
    if !pkt.set_window(head, ETH_HLEN + GROW + quote) {
        return None;
    }
    let d = pkt.data_mut();
    // The Ethernet header is rewritten by the egress; keep it well formed.
    d[0..6].copy_from_slice(&eth_src);
    d[6..12].copy_from_slice(&eth_dst);
    d[12..14].copy_from_slice(&ETHERTYPE);
    let ip = &mut d[ETH_HLEN..];
    write_header(ip, (8 + quote) as u16, ICMPV6, 64, from, to);
    let (ty, code, field) = kind.fields();
    let icmp = &mut ip[HLEN..];
    icmp[0] = ty;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&field.to_be_bytes());
    let mut p = Icmpv6Packet::new_unchecked(&mut icmp[..8 + quote]);
    p.fill_checksum(&from, &to);
    pkt.meta.offload = Default::default();
    pkt.meta.local = false;
    Some(to)
}

/// Writes a 40-byte IPv6 header (traffic class and flow label zero).
pub fn write_header(ip: &mut [u8], payload: u16, next: u8, hop_limit: u8, from: Ipv6Addr, to: Ipv6Addr) {
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&payload.to_be_bytes());
    ip[6] = next;
    ip[7] = hop_limit;
    ip[8..24].copy_from_slice(&from.octets());
    ip[24..40].copy_from_slice(&to.octets());
}

/// The checksum of an upper-layer packet `body` (its checksum field
/// zero) under the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn upper_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, next: u8, body: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(body.len() as u32).to_be_bytes());
    pseudo[39] = next;
    let sum = |b: &[u8]| !crate::csum::checksum(b) as u32;
    let mut s = sum(&pseudo) + sum(body);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Turns a TCP segment over IPv6 (no extension headers) into the reset
/// that refuses it (RFC 9293 §3.10.7.1), in place. `false` for a reset
/// (never answered) or a packet that is not one.
pub fn tcp_reset(pkt: &mut Packet) -> bool {
    if !pkt.untag() || pkt.is_chained() {
        return false;
    }
    let ip = pkt.l3();
    if ip.len() < HLEN + 20 || ip[6] != TCP {
        return false;
    }
    let total = (HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize).min(ip.len());
    let t = &ip[HLEN..];
    let (seq, ack) = (u32::from_be_bytes([t[4], t[5], t[6], t[7]]), u32::from_be_bytes([t[8], t[9], t[10], t[11]]));
    let flags = t[13];
    if flags & 0x04 != 0 {
        return false;
    }
    let doff = ((t[12] >> 4) as usize * 4).max(20);
    let payload = total.saturating_sub(HLEN + doff) as u32;
    let (new_seq, new_ack, new_flags) = if flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        (0, seq.wrapping_add(payload + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32), 0x14)
    };
    let (from, to) = (dst(ip), src(ip));
    let (sport, dport) = (crate::csum::get(t, 0), crate::csum::get(t, 2));
    let d = pkt.l3_mut();
    write_header(d, 20, TCP, 64, from, to);
    let t = &mut d[HLEN..HLEN + 20];
    t[0..2].copy_from_slice(&dport.to_be_bytes());
    t[2..4].copy_from_slice(&sport.to_be_bytes());
    t[4..8].copy_from_slice(&new_seq.to_be_bytes());
    t[8..12].copy_from_slice(&new_ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = new_flags;
    t[14..20].fill(0);
    let c = upper_checksum(&from, &to, TCP, t);
    crate::csum::set(t, 16, c);
    let l3 = pkt.meta.l3 as usize;
    pkt.set_len(l3 + HLEN + 20)
}

/// Completes the partial transport checksum of an IPv6 packet in one
/// buffer (the field holds the pseudo-header sum: the NIC's convention).
pub fn complete_checksum(pkt: &mut Packet) -> bool {
    let o = pkt.meta.offload;
    if !o.csum_partial {
        return true;
    }
    let l3 = pkt.meta.l3 as usize;
    let d = pkt.data_mut();
    let Some(ip) = d.get(l3..l3 + HLEN) else { return false };
    let end = l3 + HLEN + u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let start = o.csum_start as usize;
    let field = start + o.csum_offset as usize;
    if start < l3 + HLEN || field + 2 > end || end > d.len() {
        return false;
    }
    let mut sum = 0u32;
    for w in d[start..end].chunks(2) {
        sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 && d[l3 + 6] == UDP {
        c = 0xffff;
    }
    d[field..field + 2].copy_from_slice(&c.to_be_bytes());
    pkt.meta.offload.csum_partial = false;
    true
}
