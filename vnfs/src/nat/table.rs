//! NAT bindings and sessions (RFC 4787, RFC 5382, RFC 7857).
//!
//! A [`Mapping`] binds one inside endpoint (address, port or ICMP identifier)
//! to one outside endpoint, whatever the destination: endpoint-independent
//! mapping (RFC 4787 REQ-1). A session is one mapping talking to one remote
//! endpoint; sessions carry the timers and the TCP state, and the inbound
//! filter consults them. Both live in slabs sized from the config; the hash
//! indexes over them are fixed-size and never grow. A full table refuses new
//! sessions (counted); established ones keep working.
//!
//! Expiry is lazy (a lookup that finds an expired session removes it) plus a
//! bounded sweep per loop turn; a mapping goes when its last session does,
//! unless it is a static port forward.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::table::{hash_words, IndexTable};
use crate::Micros;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// An address and a port (or ICMP query identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Endpoint {
    pub fn new(addr: Ipv4Addr, port: u16) -> Self {
        Endpoint { addr, port }
    }
}

/// Which inbound packets a mapping lets in (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone who knows the outside endpoint.
    EndpointIndependent,
    /// Remote addresses the inside endpoint has sent to.
    AddressDependent,
    /// Remote address and port pairs the inside endpoint has sent to.
    AddressAndPortDependent,
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
}

/// Advances the TCP state bits `state` for a packet with `flags` (sent from
/// the inside/client side if `outbound`) and returns the idle timeout that
/// applies now (RFC 7857 §2.2: transitory until both SYNs, again after both
/// FINs or an RST). Shared by the NAT and the load balancer.
pub fn idle_timeout(t: &Timeouts, state: &mut u8, proto: u8, flags: u8, outbound: bool) -> Micros {
    match proto {
        TCP => {
            if flags & tcp_flags::SYN != 0 {
                *state |= if outbound { SYN_OUT } else { SYN_IN };
            }
            if flags & tcp_flags::FIN != 0 {
                *state |= if outbound { FIN_OUT } else { FIN_IN };
            }
            if flags & tcp_flags::RST != 0 {
                *state |= RST_SEEN;
            }
            let open = *state & (SYN_OUT | SYN_IN) == SYN_OUT | SYN_IN;
            let closing = *state & RST_SEEN != 0 || *state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN;
            if open && !closing {
                t.tcp_established
            } else {
                t.tcp_transitory
            }
        }
        UDP => t.udp,
        _ => t.icmp,
    }
}

// Session TCP state bits.
const SYN_OUT: u8 = 1;
const SYN_IN: u8 = 2;
const FIN_OUT: u8 = 4;
const FIN_IN: u8 = 8;
const RST_SEEN: u8 = 16;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Mapping {
    proto: u8,
    inside: Endpoint,
    outside: Endpoint,
    first_session: u32,
    /// A static port forward: never expires.
    fixed: bool,
    live: bool,
}

#[derive(Clone, Copy, Debug)]
struct Session {
    mapping: u32,
    remote: Endpoint,
    expires: Micros,
    tcp: u8,
    next_in_mapping: u32,
    live: bool,
}

/// Why a packet found no way through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session table is full.
    TableFull,
    /// No free outside port on the address this inside host is paired with.
    PortsExhausted,
    /// Inbound, and no mapping for the outside endpoint.
    NoMapping,
    /// Inbound, and the filter does not let this remote in.
    Filtered,
}

#[derive(Clone, Debug, Default)]
pub struct TableCounters {
    pub sessions_created: u64,
    pub sessions_expired: u64,
    pub mappings_created: u64,
    pub refused_table_full: u64,
    pub refused_ports: u64,
    pub filtered: u64,
}

/// The translation state of one NAT.
pub struct NatTable {
    mappings: Vec<Mapping>,
    free_mappings: Vec<u32>,
    sessions: Vec<Session>,
    free_sessions: Vec<u32>,
    by_inside: IndexTable,
    by_outside: IndexTable,
    by_remote: IndexTable,
    pool: Vec<Ipv4Addr>,
    /// The pool sorted, for the per-packet membership test.
    pool_sorted: Vec<Ipv4Addr>,
    ports: (u16, u16),
    pub filtering: Filtering,
    pub timeouts: Timeouts,
    rng: u64,
    sweep_at: usize,
    live_sessions: usize,
    pub counters: TableCounters,
}

impl NatTable {
    /// A table for `capacity` sessions (and as many mappings), translating
    /// to `pool` addresses and ports in `ports` (inclusive).
    pub fn new(
        capacity: usize,
        pool: Vec<Ipv4Addr>,
        ports: (u16, u16),
        filtering: Filtering,
        timeouts: Timeouts,
        seed: u64,
    ) -> Self {
        assert!(!pool.is_empty() && ports.0 <= ports.1 && capacity > 0);
        let blank_m = Mapping {
            proto: 0,
            inside: Endpoint::new(Ipv4Addr::UNSPECIFIED, 0),
            outside: Endpoint::new(Ipv4Addr::UNSPECIFIED, 0),
            first_session: NONE,
            fixed: false,
            live: false,
        };
        let blank_s = Session {
            mapping: NONE,
            remote: Endpoint::new(Ipv4Addr::UNSPECIFIED, 0),
            expires: 0,
            tcp: 0,
            next_in_mapping: NONE,
            live: false,
        };
        NatTable {
            mappings: alloc::vec![blank_m; capacity],
            free_mappings: (0..capacity as u32).rev().collect(),
            sessions: alloc::vec![blank_s; capacity],
            free_sessions: (0..capacity as u32).rev().collect(),
            by_inside: IndexTable::new(capacity),
            by_outside: IndexTable::new(capacity),
            by_remote: IndexTable::new(capacity),
            pool_sorted: {
                let mut p = pool.clone();
                p.sort_unstable();
                p
            },
            pool,
            ports,
            filtering,
            timeouts,
            rng: seed | 1,
            sweep_at: 0,
            live_sessions: 0,
            counters: TableCounters::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sessions.len()
    }

    pub fn sessions(&self) -> usize {
        self.live_sessions
    }

    pub fn mappings(&self) -> usize {
        self.mappings.len() - self.free_mappings.len()
    }

    /// Bytes the table uses.
    pub fn memory(&self) -> usize {
        self.mappings.len() * core::mem::size_of::<Mapping>()
            + self.sessions.len() * core::mem::size_of::<Session>()
            + self.by_inside.memory()
            + self.by_outside.memory()
            + self.by_remote.memory()
    }

    #[inline]
    pub fn is_pool_address(&self, a: Ipv4Addr) -> bool {
        self.pool_sorted.binary_search(&a).is_ok()
    }

    fn h_ep(proto: u8, e: Endpoint, salt: u64) -> u64 {
        hash_words(salt, &[proto as u64, u32::from(e.addr) as u64, e.port as u64])
    }

    fn h_inside(&self, m: u32) -> u64 {
        let m = &self.mappings[m as usize];
        Self::h_ep(m.proto, m.inside, 1)
    }

    fn h_outside(&self, m: u32) -> u64 {
        let m = &self.mappings[m as usize];
        Self::h_ep(m.proto, m.outside, 2)
    }

    fn h_remote(mapping: u32, r: Endpoint) -> u64 {
        hash_words(3, &[mapping as u64, u32::from(r.addr) as u64, r.port as u64])
    }

    fn h_session(&self, s: u32) -> u64 {
        let s = &self.sessions[s as usize];
        Self::h_remote(s.mapping, s.remote)
    }

    fn find_inside(&self, proto: u8, inside: Endpoint) -> Option<u32> {
        let m = &self.mappings;
        self.by_inside
            .find(Self::h_ep(proto, inside, 1), |i| m[i as usize].proto == proto && m[i as usize].inside == inside)
    }

    fn find_outside(&self, proto: u8, outside: Endpoint) -> Option<u32> {
        let m = &self.mappings;
        self.by_outside
            .find(Self::h_ep(proto, outside, 2), |i| m[i as usize].proto == proto && m[i as usize].outside == outside)
    }

    /// The live, unexpired session of `mapping` with `remote`; removes it
    /// if it expired.
    fn find_session(&mut self, mapping: u32, remote: Endpoint, now: Micros) -> Option<u32> {
        let s = &self.sessions;
        let found = self.by_remote.find(Self::h_remote(mapping, remote), |i| {
            s[i as usize].mapping == mapping && s[i as usize].remote == remote
        })?;
        if self.sessions[found as usize].expires <= now {
            self.remove_session(found);
            return None;
        }
        Some(found)
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Paired pooling (RFC 4787 REQ-2): an inside address always gets the
    /// same outside address. Port: the inside port if free (port
    /// preservation), else random probes in the range (RFC 6056 §3.3.1).
    fn allocate(&mut self, proto: u8, inside: Endpoint) -> Option<Endpoint> {
        let addr = self.pool[(hash_words(7, &[u32::from(inside.addr) as u64]) % self.pool.len() as u64) as usize];
        let (lo, hi) = self.ports;
        let free = |t: &Self, port: u16| t.find_outside(proto, Endpoint::new(addr, port)).is_none();
        if (lo..=hi).contains(&inside.port) && free(self, inside.port) {
            return Some(Endpoint::new(addr, inside.port));
        }
        let span = (hi - lo) as u64 + 1;
        for _ in 0..128 {
            let port = lo + (self.next_rand() % span) as u16;
            if free(self, port) {
                return Some(Endpoint::new(addr, port));
            }
        }
        // Random probes failed: the range is nearly full; one ordered pass
        // from a random start finds the last free ports.
        let start = (self.next_rand() % span) as u16;
        (0..span as u32)
            .map(|i| lo + ((start as u32 + i) % span as u32) as u16)
            .find(|p| free(self, *p))
            .map(|p| Endpoint::new(addr, p))
    }

    fn new_mapping(&mut self, proto: u8, inside: Endpoint, outside: Endpoint, fixed: bool) -> Option<u32> {
        let m = self.free_mappings.pop()?;
        self.mappings[m as usize] = Mapping { proto, inside, outside, first_session: NONE, fixed, live: true };
        self.by_inside.insert(self.h_inside(m), m);
        self.by_outside.insert(self.h_outside(m), m);
        self.counters.mappings_created += 1;
        Some(m)
    }

    fn remove_mapping(&mut self, m: u32) {
        let (hi, ho) = (self.h_inside(m), self.h_outside(m));
        let maps = &self.mappings;
        let hash_in = |i: u32| Self::h_ep(maps[i as usize].proto, maps[i as usize].inside, 1);
        let hash_out = |i: u32| Self::h_ep(maps[i as usize].proto, maps[i as usize].outside, 2);
        self.by_inside.remove(hi, m, hash_in);
        self.by_outside.remove(ho, m, hash_out);
        self.mappings[m as usize].live = false;
        self.free_mappings.push(m);
    }

    fn new_session(&mut self, mapping: u32, remote: Endpoint) -> Option<u32> {
        let s = self.free_sessions.pop()?;
        let next = self.mappings[mapping as usize].first_session;
        self.sessions[s as usize] = Session { mapping, remote, expires: 0, tcp: 0, next_in_mapping: next, live: true };
        self.mappings[mapping as usize].first_session = s;
        self.by_remote.insert(Self::h_remote(mapping, remote), s);
        self.live_sessions += 1;
        self.counters.sessions_created += 1;
        Some(s)
    }

    fn remove_session(&mut self, s: u32) {
        let h = self.h_session(s);
        let sess = &self.sessions;
        self.by_remote.remove(h, s, |i| Self::h_remote(sess[i as usize].mapping, sess[i as usize].remote));
        let Session { mapping, next_in_mapping, .. } = self.sessions[s as usize];
        // Unlink from the mapping's list.
        let mut at = self.mappings[mapping as usize].first_session;
        if at == s {
            self.mappings[mapping as usize].first_session = next_in_mapping;
        } else {
            while at != NONE {
                let next = self.sessions[at as usize].next_in_mapping;
                if next == s {
                    self.sessions[at as usize].next_in_mapping = next_in_mapping;
                    break;
                }
                at = next;
            }
        }
        self.sessions[s as usize].live = false;
        self.free_sessions.push(s);
        self.live_sessions -= 1;
        self.counters.sessions_expired += 1;
        let m = &self.mappings[mapping as usize];
        if m.first_session == NONE && !m.fixed {
            self.remove_mapping(mapping);
        }
    }

    /// Updates a session's TCP state and timer for a packet (`outbound`
    /// from inside) with `flags`.
    fn touch(&mut self, s: u32, proto: u8, flags: u8, outbound: bool, now: Micros) {
        let sess = &mut self.sessions[s as usize];
        sess.expires = now + idle_timeout(&self.timeouts, &mut sess.tcp, proto, flags, outbound);
    }

    /// Adds a static port forward: `outside` (a pool address) to `inside`.
    pub fn add_forward(&mut self, proto: u8, outside: Endpoint, inside: Endpoint) -> bool {
        if self.find_outside(proto, outside).is_some() || self.find_inside(proto, inside).is_some() {
            return false;
        }
        self.new_mapping(proto, inside, outside, true).is_some()
    }

    /// An inside endpoint sends to `remote`: returns its outside endpoint,
    /// creating the mapping and session if needed.
    pub fn outbound(
        &mut self,
        proto: u8,
        inside: Endpoint,
        remote: Endpoint,
        flags: u8,
        now: Micros,
    ) -> Result<Endpoint, Refusal> {
        let m = match self.find_inside(proto, inside) {
            Some(m) => m,
            None => {
                if self.free_sessions.is_empty() || self.free_mappings.is_empty() {
                    self.counters.refused_table_full += 1;
                    return Err(Refusal::TableFull);
                }
                let Some(outside) = self.allocate(proto, inside) else {
                    self.counters.refused_ports += 1;
                    return Err(Refusal::PortsExhausted);
                };
                self.new_mapping(proto, inside, outside, false).ok_or(Refusal::TableFull)?
            }
        };
        let s = match self.find_session(m, remote, now) {
            Some(s) => s,
            None => {
                // Expiry inside find_session may have removed the mapping.
                if !self.mappings[m as usize].live {
                    return self.outbound(proto, inside, remote, flags, now);
                }
                match self.new_session(m, remote) {
                    Some(s) => s,
                    None => {
                        self.counters.refused_table_full += 1;
                        if self.mappings[m as usize].first_session == NONE && !self.mappings[m as usize].fixed {
                            self.remove_mapping(m);
                        }
                        return Err(Refusal::TableFull);
                    }
                }
            }
        };
        self.touch(s, proto, flags, true, now);
        Ok(self.mappings[m as usize].outside)
    }

    /// `remote` sends to an outside endpoint: returns the inside endpoint
    /// if a mapping exists and the filter lets the remote in.
    pub fn inbound(
        &mut self,
        proto: u8,
        outside: Endpoint,
        remote: Endpoint,
        flags: u8,
        now: Micros,
    ) -> Result<Endpoint, Refusal> {
        let Some(m) = self.find_outside(proto, outside) else {
            return Err(Refusal::NoMapping);
        };
        let s = match self.find_session(m, remote, now) {
            Some(s) => s,
            None => {
                if !self.mappings[m as usize].live {
                    return Err(Refusal::NoMapping);
                }
                let fixed = self.mappings[m as usize].fixed;
                let allowed = fixed
                    || match self.filtering {
                        Filtering::EndpointIndependent => true,
                        Filtering::AddressDependent => self.has_session_with(m, remote.addr, now),
                        Filtering::AddressAndPortDependent => false,
                    };
                if !allowed {
                    self.counters.filtered += 1;
                    return Err(Refusal::Filtered);
                }
                match self.new_session(m, remote) {
                    Some(s) => s,
                    None => {
                        self.counters.refused_table_full += 1;
                        return Err(Refusal::TableFull);
                    }
                }
            }
        };
        self.touch(s, proto, flags, false, now);
        Ok(self.mappings[m as usize].inside)
    }

    /// Whether some mapping owns `outside` (no state change).
    pub fn has_mapping_at(&self, proto: u8, outside: Endpoint) -> bool {
        self.find_outside(proto, outside).is_some()
    }

    /// For translating ICMP errors: the inside endpoint behind `outside`
    /// if a live session with `remote` exists (no state change).
    pub fn peek_inbound(&mut self, proto: u8, outside: Endpoint, remote: Endpoint, now: Micros) -> Option<Endpoint> {
        let m = self.find_outside(proto, outside)?;
        self.find_session(m, remote, now)?;
        self.mappings.get(m as usize).filter(|m| m.live).map(|m| m.inside)
    }

    /// The outside endpoint of `inside` if a live session with `remote` exists.
    pub fn peek_outbound(&mut self, proto: u8, inside: Endpoint, remote: Endpoint, now: Micros) -> Option<Endpoint> {
        let m = self.find_inside(proto, inside)?;
        self.find_session(m, remote, now)?;
        self.mappings.get(m as usize).filter(|m| m.live).map(|m| m.outside)
    }

    fn has_session_with(&self, m: u32, addr: Ipv4Addr, now: Micros) -> bool {
        let mut s = self.mappings[m as usize].first_session;
        while s != NONE {
            let sess = &self.sessions[s as usize];
            if sess.remote.addr == addr && sess.expires > now {
                return true;
            }
            s = sess.next_in_mapping;
        }
        false
    }

    /// Removes expired sessions among the next `budget` slots.
    pub fn sweep(&mut self, now: Micros, budget: usize) {
        for _ in 0..budget.min(self.sessions.len()) {
            let s = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % self.sessions.len();
            if self.sessions[s].live && self.sessions[s].expires <= now {
                self.remove_session(s as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IN_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const OUT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const R1: Endpoint = Endpoint { addr: Ipv4Addr::new(198, 51, 100, 1), port: 53 };
    const R2: Endpoint = Endpoint { addr: Ipv4Addr::new(198, 51, 100, 2), port: 53 };

    fn table(cap: usize, f: Filtering) -> NatTable {
        NatTable::new(cap, alloc::vec![OUT], (1024, 65535), f, Timeouts::default(), 42)
    }

    fn ep(a: Ipv4Addr, p: u16) -> Endpoint {
        Endpoint::new(a, p)
    }

    #[test]
    fn endpoint_independent_mapping_and_port_preservation() {
        let mut t = table(16, Filtering::AddressAndPortDependent);
        let o1 = t.outbound(UDP, ep(IN_A, 5000), R1, 0, 0).unwrap();
        let o2 = t.outbound(UDP, ep(IN_A, 5000), R2, 0, 0).unwrap();
        assert_eq!(o1, ep(OUT, 5000), "port preserved");
        assert_eq!(o1, o2, "same mapping for every destination");
        // Another inside host with the same port gets another port, never the same endpoint.
        let o3 = t.outbound(UDP, ep(IN_B, 5000), R1, 0, 0).unwrap();
        assert_ne!(o3, o1);
        assert_eq!(o3.addr, OUT);
        assert!((1024..=65535).contains(&o3.port));
        // Low inside ports are outside the range: mapped into it.
        let o4 = t.outbound(UDP, ep(IN_A, 53), R1, 0, 0).unwrap();
        assert!(o4.port >= 1024);
        assert_eq!(t.mappings(), 3);
        assert_eq!(t.sessions(), 4);
    }

    #[test]
    fn filtering_modes() {
        for (f, same_addr_other_port, other_addr) in [
            (Filtering::EndpointIndependent, true, true),
            (Filtering::AddressDependent, true, false),
            (Filtering::AddressAndPortDependent, false, false),
        ] {
            let mut t = table(16, f);
            let o = t.outbound(UDP, ep(IN_A, 5000), R1, 0, 0).unwrap();
            assert_eq!(t.inbound(UDP, o, R1, 0, 1), Ok(ep(IN_A, 5000)), "{f:?}: the remote we sent to");
            assert_eq!(t.inbound(UDP, o, ep(R1.addr, 9999), 0, 1).is_ok(), same_addr_other_port, "{f:?}");
            assert_eq!(t.inbound(UDP, o, R2, 0, 1).is_ok(), other_addr, "{f:?}");
            assert_eq!(t.inbound(UDP, ep(OUT, 4444), R1, 0, 1), Err(Refusal::NoMapping));
        }
    }

    #[test]
    fn timeouts_with_an_injected_clock() {
        let mut t = table(16, Filtering::AddressAndPortDependent);
        let tm = Timeouts::default();
        let o = t.outbound(UDP, ep(IN_A, 5000), R1, 0, 0).unwrap();
        assert!(t.inbound(UDP, o, R1, 0, tm.udp - 1).is_ok(), "inbound refreshes");
        assert!(t.inbound(UDP, o, R1, 0, 2 * tm.udp - 2).is_ok());
        assert_eq!(t.inbound(UDP, o, R1, 0, 3 * tm.udp), Err(Refusal::NoMapping), "expired lazily, mapping gone");
        assert_eq!(t.sessions(), 0);
        assert_eq!(t.mappings(), 0);
        // ICMP query: 60 s.
        let o = t.outbound(ICMP, ep(IN_A, 77), ep(R1.addr, 0), 0, 0).unwrap();
        assert!(t.inbound(ICMP, o, ep(R1.addr, 0), 0, tm.icmp - 1).is_ok());
        t.sweep(2 * tm.icmp, 16);
        assert_eq!(t.sessions(), 0, "the sweep removes expired sessions");
    }

    #[test]
    fn tcp_state_machine_picks_the_timeout() {
        let tm = Timeouts::default();
        let mut t = table(16, Filtering::AddressAndPortDependent);
        let r = ep(R1.addr, 80);
        let o = t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::SYN, 0).unwrap();
        // Only a SYN out: transitory.
        assert!(t.peek_inbound(TCP, o, r, tm.tcp_transitory + 1).is_none());
        let o = t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::SYN, 0).unwrap();
        t.inbound(TCP, o, r, tcp_flags::SYN, 1).unwrap();
        t.outbound(TCP, ep(IN_A, 40000), r, 0, 2).unwrap();
        // Established: survives well past the transitory timeout.
        assert!(t.peek_inbound(TCP, o, r, 2 + tm.tcp_transitory * 10).is_some());
        t.outbound(TCP, ep(IN_A, 40000), r, 0, 1_000_000_000).unwrap();
        // FIN both ways: back to transitory.
        t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::FIN, 1_000_000_000).unwrap();
        t.inbound(TCP, o, r, tcp_flags::FIN, 1_000_000_000).unwrap();
        assert!(t.peek_inbound(TCP, o, r, 1_000_000_000 + tm.tcp_transitory + 1).is_none());
    }

    #[test]
    fn full_table_refuses_new_sessions_and_keeps_old_ones() {
        let mut t = table(4, Filtering::AddressAndPortDependent);
        let first = t.outbound(UDP, ep(IN_A, 1), R1, 0, 0).unwrap();
        for p in 2..=4 {
            t.outbound(UDP, ep(IN_A, p), R1, 0, 0).unwrap();
        }
        assert_eq!(t.outbound(UDP, ep(IN_A, 9), R1, 0, 0), Err(Refusal::TableFull));
        assert_eq!(
            t.outbound(UDP, ep(IN_A, 1), R2, 0, 0),
            Err(Refusal::TableFull),
            "a new session on an old mapping too"
        );
        assert_eq!(t.counters.refused_table_full, 2);
        assert_eq!(t.inbound(UDP, first, R1, 0, 1), Ok(ep(IN_A, 1)), "established still works");
        assert_eq!(t.outbound(UDP, ep(IN_A, 1), R1, 0, 1), Ok(first));
    }

    #[test]
    fn exhausted_port_range_is_refused() {
        let mut t =
            NatTable::new(64, alloc::vec![OUT], (2000, 2003), Filtering::EndpointIndependent, Timeouts::default(), 1);
        for i in 0..4u8 {
            t.outbound(UDP, ep(Ipv4Addr::new(10, 0, 0, 10 + i), 7), R1, 0, 0).unwrap();
        }
        assert_eq!(t.outbound(UDP, ep(IN_A, 7), R1, 0, 0), Err(Refusal::PortsExhausted));
        assert_eq!(t.counters.refused_ports, 1);
    }

    #[test]
    fn paired_pooling_keeps_an_inside_host_on_one_address() {
        let pool = alloc::vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];
        let mut t = NatTable::new(256, pool, (1024, 65535), Filtering::EndpointIndependent, Timeouts::default(), 1);
        for host in 1..20u8 {
            let inside = Ipv4Addr::new(10, 0, 0, host);
            let addrs: std::collections::BTreeSet<_> =
                (0..5).map(|p| t.outbound(UDP, ep(inside, 3000 + p), R1, 0, 0).unwrap().addr).collect();
            assert_eq!(addrs.len(), 1, "host {inside} spread over {addrs:?}");
        }
    }

    #[test]
    fn static_forward_admits_anyone_and_serves_replies() {
        let mut t = table(16, Filtering::AddressAndPortDependent);
        assert!(t.add_forward(TCP, ep(OUT, 8080), ep(IN_B, 80)));
        assert_eq!(t.inbound(TCP, ep(OUT, 8080), R1, tcp_flags::SYN, 0), Ok(ep(IN_B, 80)));
        assert_eq!(t.outbound(TCP, ep(IN_B, 80), R1, tcp_flags::SYN, 1), Ok(ep(OUT, 8080)));
        // Long after every session expired, the forward remains.
        assert_eq!(t.inbound(TCP, ep(OUT, 8080), R2, tcp_flags::SYN, 1 << 40), Ok(ep(IN_B, 80)));
        assert!(!t.add_forward(TCP, ep(OUT, 8080), ep(IN_A, 80)), "outside endpoint taken");
    }

    #[test]
    fn churn_keeps_indexes_consistent() {
        let mut t = table(32, Filtering::EndpointIndependent);
        let mut now = 0;
        for round in 0..200u32 {
            for i in 0..8u16 {
                let _ = t.outbound(UDP, ep(IN_A, 1000 + (round as u16 * 8 + i) % 64), R1, 0, now);
            }
            now += Timeouts::default().udp / 3;
            t.sweep(now, 8);
            assert!(t.sessions() <= 32);
            assert_eq!(t.sessions(), t.by_remote.len());
            assert_eq!(t.mappings(), t.by_inside.len());
            assert_eq!(t.mappings(), t.by_outside.len());
        }
    }
}
