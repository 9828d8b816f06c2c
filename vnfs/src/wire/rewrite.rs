//! Header rewriting shared by the translating stages (NAT, load balancer):
//! reading the fields they key on, and changing addresses and ports with
//! incremental checksum updates (RFC 1624).

use core::net::Ipv4Addr;

use crate::csum;
use crate::flow::{ICMP, TCP, UDP};

/// The parts of an IPv4 packet a translator looks at.
pub struct Parsed {
    pub ihl: usize,
    pub total: usize,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
    pub first: bool,
    pub more: bool,
}

pub fn parse(ip: &[u8]) -> Parsed {
    // One bounds check for the fixed header (the ingress checked its length).
    let h: &[u8; 20] = ip[..20].try_into().expect("20 bytes");
    let flags_off = u16::from_be_bytes([h[6], h[7]]);
    Parsed {
        ihl: (h[0] & 0x0f) as usize * 4,
        total: (u16::from_be_bytes([h[2], h[3]]) as usize).min(ip.len()),
        proto: h[9],
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        ident: u16::from_be_bytes([h[4], h[5]]),
        first: flags_off & 0x1fff == 0,
        more: flags_off & 0x2000 != 0,
    }
}

/// Where a transport's checksum sits (offset from the L4 start), and
/// whether it covers the pseudo-header.
pub fn l4_checksum(proto: u8) -> Option<(usize, bool)> {
    match proto {
        TCP => Some((16, true)),
        UDP => Some((6, true)),
        ICMP => Some((2, false)),
        _ => None,
    }
}

/// Rewrites the IPv4 address at `field` (12: source, 16: destination) of
/// the datagram at `ip`, fixing its header checksum and, if the transport
/// header `l4` (offset) is present, the transport checksum.
pub fn set_addr(ip: &mut [u8], field: usize, new: Ipv4Addr, l4: Option<usize>, proto: u8) {
    let old = u32::from_be_bytes(ip[field..field + 4].try_into().unwrap());
    let new = u32::from(new);
    ip[field..field + 4].copy_from_slice(&new.to_be_bytes());
    csum::set(ip, 10, csum::update32(csum::get(ip, 10), old, new));
    if let (Some(l4), Some((at, true))) = (l4, l4_checksum(proto)) {
        fix_l4(ip, l4 + at, proto, |c| csum::update32(c, old, new));
    }
}

/// Rewrites the source (`src`) or destination endpoint of a whole TCP or
/// UDP datagram or ICMP echo at `ip` (transport header at `l4`, complete:
/// the caller checked its length) in one pass: address, port (or echo
/// identifier), IPv4 header checksum and transport checksum. The fast path
/// of the translators.
#[inline]
pub fn set_endpoint(ip: &mut [u8], src: bool, new: Ipv4Addr, new_port: u16, l4: usize, proto: u8) {
    let field = if src { 12 } else { 16 };
    let (port_at, sum_at) = match proto {
        TCP => (l4 + if src { 0 } else { 2 }, l4 + 16),
        UDP => (l4 + if src { 0 } else { 2 }, l4 + 6),
        _ => (l4 + 4, l4 + 2),
    };
    let old = u32::from_be_bytes([ip[field], ip[field + 1], ip[field + 2], ip[field + 3]]);
    let new = u32::from(new);
    let old_port = csum::get(ip, port_at);
    ip[field..field + 4].copy_from_slice(&new.to_be_bytes());
    csum::set(ip, port_at, new_port);
    csum::set(ip, 10, csum::update32(csum::get(ip, 10), old, new));
    let c = csum::get(ip, sum_at);
    let c = match proto {
        // No checksum: stays none (RFC 768); a computed zero is sent as all ones.
        UDP if c == 0 => return,
        UDP => match csum::apply(c, csum::delta(old, new, old_port, new_port)) {
            0 => 0xffff,
            n => n,
        },
        TCP => csum::apply(c, csum::delta(old, new, old_port, new_port)),
        // ICMP covers no pseudo-header: only the identifier changed.
        _ => csum::update16(c, old_port, new_port),
    };
    csum::set(ip, sum_at, c);
}

/// Rewrites the 16-bit port (or ICMP identifier) at `at`, fixing the
/// transport checksum at `l4`.
pub fn set_port(ip: &mut [u8], at: usize, new: u16, l4: usize, proto: u8) {
    let old = csum::get(ip, at);
    csum::set(ip, at, new);
    if let Some((c, _)) = l4_checksum(proto) {
        fix_l4(ip, l4 + c, proto, |v| csum::update16(v, old, new));
    }
}

pub fn fix_l4(ip: &mut [u8], at: usize, proto: u8, f: impl Fn(u16) -> u16) {
    if at + 2 > ip.len() {
        // Not in this packet (a truncated quote in an ICMP error).
        return;
    }
    let c = csum::get(ip, at);
    if proto == UDP && c == 0 {
        // No checksum: stays none (RFC 768).
        return;
    }
    let mut n = f(c);
    if proto == UDP && n == 0 {
        n = 0xffff;
    }
    csum::set(ip, at, n);
}

/// Ports (or the ICMP query identifier) of a transport header at `l4`:
/// (source, destination, TCP flags). `None` if too short.
pub fn ports(ip: &[u8], l4: usize, proto: u8) -> Option<(u16, u16, u8)> {
    match proto {
        TCP if ip.len() >= l4 + 14 => Some((csum::get(ip, l4), csum::get(ip, l4 + 2), ip[l4 + 13])),
        UDP if ip.len() >= l4 + 8 => Some((csum::get(ip, l4), csum::get(ip, l4 + 2), 0)),
        ICMP if ip.len() >= l4 + 8 => {
            // Echo request/reply: the identifier is the "port" both ways.
            let id = csum::get(ip, l4 + 4);
            Some((id, id, 0))
        }
        _ => None,
    }
}

pub fn is_icmp_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}
