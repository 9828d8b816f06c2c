//! Flows as several stages see them: endpoints, protocol numbers, TCP
//! state tracking and idle timeouts. The NAT's sessions, the load
//! balancer's flows and the ACL's connection table all use these, so they
//! live here rather than inside one feature.

use core::net::Ipv4Addr;

use crate::Micros;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// An address and a port (or ICMP query identifier); IPv4 unless said
/// (the ACL's IPv6 connection table uses `Endpoint<Ipv6Addr>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint<A = Ipv4Addr> {
    pub addr: A,
    pub port: u16,
}

impl<A> Endpoint<A> {
    pub fn new(addr: A, port: u16) -> Self {
        Endpoint { addr, port }
    }
}

/// Idle timeouts, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: Micros,
    pub tcp_established: Micros,
    pub tcp_transitory: Micros,
    pub icmp: Micros,
}

impl Default for Timeouts {
    /// The RFC minimums: UDP 5 min (RFC 4787 REQ-5), TCP established
    /// 2 h 4 min and transitory 4 min (RFC 5382 REQ-5), ICMP query 60 s
    /// (RFC 5508 REQ-1).
    fn default() -> Self {
        Timeouts { udp: 300_000_000, tcp_established: 7_440_000_000, tcp_transitory: 240_000_000, icmp: 60_000_000 }
    }
}

/// TCP flags the state tracking looks at.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Advances the TCP state bits `state` for a packet with `flags` (sent from
/// the inside/client side if `outbound`) and returns the idle timeout that
/// applies now. A connection is established only once the three-way
/// handshake is complete: a SYN each way, then an ACK from the side that
/// sent the first SYN (RFC 7857 §2.2 counts only the two SYNs; that let a
/// spoofed SYN answered by an inside server hold a session for the 2 h
/// established timeout). It is transitory again after both FINs or an RST.
/// Shared by the NAT and the load balancer.
pub fn idle_timeout(t: &Timeouts, state: &mut u8, proto: u8, flags: u8, outbound: bool) -> Micros {
    match proto {
        TCP => {
            let syn = flags & tcp_flags::SYN != 0;
            if syn {
                if *state & (SYN_OUT | SYN_IN) == 0 && !outbound {
                    *state |= INIT_IN;
                }
                *state |= if outbound { SYN_OUT } else { SYN_IN };
            }
            let both_syns = *state & (SYN_OUT | SYN_IN) == SYN_OUT | SYN_IN;
            let from_initiator = outbound == (*state & INIT_IN == 0);
            if both_syns && !syn && flags & tcp_flags::ACK != 0 && from_initiator {
                *state |= ACKED;
            }
            if flags & tcp_flags::FIN != 0 {
                *state |= if outbound { FIN_OUT } else { FIN_IN };
            }
            if flags & tcp_flags::RST != 0 {
                *state |= RST_SEEN;
            }
            let closing = *state & RST_SEEN != 0 || *state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN;
            if is_established(*state) && !closing {
                t.tcp_established
            } else {
                t.tcp_transitory
            }
        }
        UDP => t.udp,
        _ => t.icmp,
    }
}

/// The TCP state bits as `show` names them: `rst`, `closed` (a FIN each
/// way), `fin-wait` (one FIN), `established`, `syn-received` (a SYN each
/// way, the handshake's last ACK not yet seen), `syn-sent`, else
/// `transitory` (no SYN seen: a session picked up mid-stream).
pub fn tcp_state_name(state: u8) -> &'static str {
    if state & RST_SEEN != 0 {
        "rst"
    } else if state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN {
        "closed"
    } else if state & (FIN_OUT | FIN_IN) != 0 {
        "fin-wait"
    } else if is_established(state) {
        "established"
    } else if state & (SYN_OUT | SYN_IN) == SYN_OUT | SYN_IN {
        "syn-received"
    } else if state & (SYN_OUT | SYN_IN) != 0 {
        "syn-sent"
    } else {
        "transitory"
    }
}

/// Whether TCP state bits say the connection is closing (a FIN or RST seen).
pub fn is_closing(state: u8) -> bool {
    state & (RST_SEEN | FIN_OUT | FIN_IN) != 0
}

/// Whether TCP state bits say the connection is over: an RST seen, or a
/// FIN each way (TIME-WAIT from here on). A SYN on such a tuple opens a new
/// connection (Linux conntrack starts a new entry for a SYN in CLOSE or
/// TIME_WAIT; RFC 5382 REQ-5 and RFC 7857 §3.2 let a NAT reuse it).
pub fn is_closed(state: u8) -> bool {
    state & RST_SEEN != 0 || state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN
}

/// Whether TCP state bits say the handshake completed.
pub fn is_established(state: u8) -> bool {
    state & (SYN_OUT | SYN_IN | ACKED) == SYN_OUT | SYN_IN | ACKED
}

// Session TCP state bits.
const SYN_OUT: u8 = 1;
const SYN_IN: u8 = 2;
const FIN_OUT: u8 = 4;
const FIN_IN: u8 = 8;
const RST_SEEN: u8 = 16;
/// The initiator's ACK of the SYN-ACK was seen.
const ACKED: u8 = 32;
/// The first SYN came from the outside (a port forward, or a backend's
/// client for the LB's reverse direction).
const INIT_IN: u8 = 64;
