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

use crate::flow::{idle_timeout, is_closed, is_closing, is_established, tcp_flags, Endpoint, Timeouts, TCP, UDP};
use crate::table::{hash_words, xorshift, IndexTable};
use crate::Micros;

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

/// Per-host and per-forward session quotas (`nat { host-sessions N;
/// forward-sessions N }`), so one inside host or a flood through one port
/// forward cannot take the whole table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub host: u32,
    pub forward: u32,
}

impl Quotas {
    /// The defaults: an eighth of the table per inside host (at least 64),
    /// half of it per port forward.
    pub fn default_for(capacity: usize) -> Quotas {
        let c = capacity.min(u32::MAX as usize) as u32;
        Quotas { host: (c / 8).max(64).min(c), forward: (c / 2).max(1) }
    }
}

const NONE: u32 = u32::MAX;
/// Records a full table looks at for one to evict.
const EVICT_SCAN: usize = 64;

/// Session timers count in ticks of 1024 µs, in 32 bits: they wrap after
/// 50 days, and compare correctly while deadlines are less than 25 days
/// away (the longest configurable timeout is 12 days).
type Tick = u32;

#[inline]
fn tick(now: Micros) -> Tick {
    (now >> 10) as Tick
}

/// Whether deadline `at` has passed at `now`.
#[inline]
fn passed(at: Tick, now: Tick) -> bool {
    (at.wrapping_sub(now) as i32) <= 0
}

/// An endpoint-independent binding (proto 0: a free slot).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Mapping {
    first_session: u32,
    inside: Endpoint,
    outside: Endpoint,
    proto: u8,
    /// A static port forward: never expires.
    fixed: bool,
}

/// One mapping talking to one remote endpoint (proto 0: a free slot).
///
/// The record carries copies of its mapping's endpoints, so a packet of an
/// established flow, either way, costs one index slot and this one record:
/// 32 bytes, aligned so it never straddles two cache lines.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Session {
    proto: u8,
    tcp: u8,
    inside: Endpoint,
    outside: Endpoint,
    remote: Endpoint,
    expires: Tick,
    mapping: u32,
    next_in_mapping: u32,
}

const _: () = assert!(core::mem::size_of::<Session>() == 32 && core::mem::size_of::<Mapping>() == 20);

/// One session as `show sessions` lists it: protocol, inside, outside and
/// remote endpoints, TCP state bits (`flow::tcp_state_name`), µs until it expires.
pub type SessionView = (u8, Endpoint, Endpoint, Endpoint, u8, Micros);

/// Which way a packet crosses the NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From an inside endpoint to a remote one: keyed on (inside, remote).
    Out,
    /// From a remote endpoint to an outside one: keyed on (outside, remote).
    In,
}

/// What a burst's first passes learned about one packet's flow: the
/// session the index pointed at then (re-checked before use).
#[derive(Clone, Copy, Debug)]
pub struct Hint {
    dir: Dir,
    session: u32,
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
    /// The inside host, or the port forward, has all the sessions its
    /// quota allows (and none of them could make room).
    Quota,
}

#[derive(Clone, Debug, Default)]
pub struct TableCounters {
    pub sessions_created: u64,
    pub sessions_expired: u64,
    pub mappings_created: u64,
    pub refused_table_full: u64,
    /// Transitory TCP sessions (handshake not complete, or closing) that
    /// made room for a new session when the table was full.
    pub evicted_transitory: u64,
    /// New sessions refused by a per-host or per-forward quota.
    pub refused_quota: u64,
    /// TCP sessions a SYN on their closed tuple (RST seen, or a FIN each
    /// way) started over as a new connection.
    pub sessions_restarted: u64,
    pub refused_ports: u64,
    pub filtered: u64,
}

/// The translation state of one NAT.
pub struct NatTable {
    mappings: Vec<Mapping>,
    /// Free mappings, linked through `first_session`.
    free_mappings: u32,
    live_mappings: usize,
    sessions: Vec<Session>,
    /// Each session's predecessor in its mapping's list (cold: only
    /// touched when a session comes or goes, so the hot record stays 32
    /// bytes), making removal O(1).
    prev_in_mapping: Vec<u32>,
    /// Sessions by (mapping, remote address): address-dependent filtering
    /// asks whether a mapping has talked to an address, in O(1).
    by_remote_addr: IndexTable,
    /// One bit per (pool address, protocol, port): used outside ports,
    /// and how many of the allocation range's per (address, protocol), so
    /// allocation is bounded and an exhausted range is refused at once.
    ports_used: Vec<u64>,
    ports_count: Vec<u32>,
    /// Live sessions per mapping (a port forward's quota).
    mapping_sessions: Vec<u32>,
    /// Live sessions of dynamic mappings per inside host: slab of
    /// (address, count) found through `by_host`, with its free slots.
    hosts: Vec<(Ipv4Addr, u32)>,
    free_hosts: Vec<u32>,
    by_host: IndexTable,
    /// With [`NatTable::track_hosts`]: inside hosts that got their first
    /// session (`true`) or lost their last (`false`) since the owner last
    /// took them (NAT64's stand-in addresses live exactly that long).
    host_events: Option<Vec<(Ipv4Addr, bool)>>,
    /// Most sessions one inside host (dynamic mappings) or one port forward
    /// may hold.
    quotas: Quotas,
    /// Free sessions, linked through `next_in_mapping`.
    free_sessions: u32,
    /// Mappings by (proto, inside endpoint): new outbound sessions.
    by_inside: IndexTable,
    /// Mappings by (proto, outside endpoint): new inbound sessions, port allocation.
    by_outside: IndexTable,
    /// Sessions by (proto, inside, remote): outbound packets.
    flows_out: IndexTable,
    /// Sessions by (proto, outside, remote): inbound packets.
    flows_in: IndexTable,
    pool: Vec<Ipv4Addr>,
    /// The pool as sorted integers, for the per-packet membership test.
    pool_sorted: Vec<u32>,
    ports: (u16, u16),
    pub filtering: Filtering,
    pub timeouts: Timeouts,
    rng: u64,
    /// The secret the index hashes are keyed with (drawn at boot), so
    /// nobody can choose flows that collide in the indexes.
    key: u64,
    sweep_at: usize,
    live_sessions: usize,
    pub counters: TableCounters,
}

#[inline]
fn h_ep(proto: u8, e: Endpoint, salt: u64) -> u64 {
    hash_words(salt, &[(proto as u64) << 48 | (e.port as u64) << 32 | u32::from(e.addr) as u64])
}

#[inline]
fn h_host(key: u64, addr: Ipv4Addr) -> u64 {
    hash_words(key ^ 8, &[u32::from(addr) as u64])
}

#[inline]
fn h_remote(key: u64, mapping: u32, addr: Ipv4Addr) -> u64 {
    hash_words(key ^ 3, &[(mapping as u64) << 32 | u32::from(addr) as u64])
}

/// The hash of a flow key: `local` is the inside endpoint (`Dir::Out`) or
/// the outside one (`Dir::In`).
#[inline]
pub fn flow_hash(key: u64, dir: Dir, proto: u8, local: Endpoint, remote: Endpoint) -> u64 {
    let salt = key ^ if dir == Dir::Out { 4 } else { 5 };
    hash_words(
        salt,
        &[
            (proto as u64) << 48 | (local.port as u64) << 32 | u32::from(local.addr) as u64,
            (remote.port as u64) << 32 | u32::from(remote.addr) as u64,
        ],
    )
}

impl Session {
    #[inline]
    fn local(&self, dir: Dir) -> Endpoint {
        if dir == Dir::Out {
            self.inside
        } else {
            self.outside
        }
    }

    #[inline]
    fn is(&self, dir: Dir, proto: u8, local: Endpoint, remote: Endpoint) -> bool {
        self.proto == proto && self.remote == remote && self.local(dir) == local
    }
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
        let nowhere = Endpoint::new(Ipv4Addr::UNSPECIFIED, 0);
        let blank_m = Mapping { first_session: NONE, inside: nowhere, outside: nowhere, proto: 0, fixed: false };
        let blank_s = Session {
            proto: 0,
            tcp: 0,
            inside: nowhere,
            outside: nowhere,
            remote: nowhere,
            expires: 0,
            mapping: NONE,
            next_in_mapping: NONE,
        };
        // Every slot starts on its free list, in index order.
        let link = |i: usize| if i + 1 < capacity { i as u32 + 1 } else { NONE };
        NatTable {
            mappings: (0..capacity).map(|i| Mapping { first_session: link(i), ..blank_m }).collect(),
            free_mappings: 0,
            live_mappings: 0,
            sessions: (0..capacity).map(|i| Session { next_in_mapping: link(i), ..blank_s }).collect(),
            prev_in_mapping: alloc::vec![NONE; capacity],
            mapping_sessions: alloc::vec![0; capacity],
            hosts: alloc::vec![(Ipv4Addr::UNSPECIFIED, 0); capacity],
            free_hosts: (0..capacity as u32).rev().collect(),
            by_host: IndexTable::new(capacity),
            host_events: None,
            quotas: Quotas::default_for(capacity),
            by_remote_addr: IndexTable::new(capacity),
            ports_used: alloc::vec![0; pool.len() * 3 * 1024],
            ports_count: alloc::vec![0; pool.len() * 3],
            free_sessions: 0,
            by_inside: IndexTable::new(capacity),
            by_outside: IndexTable::new(capacity),
            flows_out: IndexTable::new(capacity),
            flows_in: IndexTable::new(capacity),
            pool_sorted: {
                let mut p: Vec<u32> = pool.iter().map(|&a| u32::from(a)).collect();
                p.sort_unstable();
                p
            },
            pool,
            ports,
            filtering,
            timeouts,
            rng: seed | 1,
            key: hash_words(seed, &[0x006b_6579_5f6e_6174]),
            sweep_at: 0,
            live_sessions: 0,
            counters: TableCounters::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sessions.len()
    }

    /// The hash key (for callers that hash a flow before looking it up).
    #[inline]
    pub fn key(&self) -> u64 {
        self.key
    }

    pub fn sessions(&self) -> usize {
        self.live_sessions
    }

    pub fn mappings(&self) -> usize {
        self.live_mappings
    }

    /// Bytes a table for `capacity` sessions takes (what [`memory`](Self::memory)
    /// will say once it is built).
    pub fn memory_for(capacity: usize, pool: usize) -> usize {
        capacity * (core::mem::size_of::<Mapping>() + core::mem::size_of::<Session>() + 4 + 4 + 8 + 4)
            + 6 * IndexTable::memory_for(capacity)
            + pool * 3 * (1024 * 8 + 4)
    }

    /// Bytes the table uses.
    pub fn memory(&self) -> usize {
        self.mappings.len() * core::mem::size_of::<Mapping>()
            + self.sessions.len() * core::mem::size_of::<Session>()
            + self.by_inside.memory()
            + self.by_outside.memory()
            + self.flows_out.memory()
            + self.flows_in.memory()
            + self.prev_in_mapping.len() * 4
            + self.mapping_sessions.len() * 4
            + self.hosts.len() * 8
            + self.free_hosts.capacity() * 4
            + self.by_host.memory()
            + self.by_remote_addr.memory()
            + self.ports_used.len() * 8
            + self.ports_count.len() * 4
    }

    #[inline]
    /// Live sessions from slab index `from` on, at most `limit`, that
    /// `keep` accepts: (protocol, inside, outside, remote, TCP state bits,
    /// µs until expiry), and the index to continue from (`None`: the end).
    /// Bounded work: at most `limit` matches and 65536 slots looked at per
    /// call, so a million sessions never stall forwarding.
    pub fn list(
        &self,
        from: usize,
        limit: usize,
        now: Micros,
        mut keep: impl FnMut(u8, Endpoint, Endpoint, Endpoint) -> bool,
    ) -> (alloc::vec::Vec<SessionView>, Option<usize>) {
        let mut out = alloc::vec::Vec::new();
        let now_t = tick(now);
        let end = from.saturating_add(65_536).min(self.sessions.len());
        let mut i = from.min(self.sessions.len());
        while i < end && out.len() < limit {
            let s = &self.sessions[i];
            i += 1;
            if s.proto == 0 || passed(s.expires, now_t) || !keep(s.proto, s.inside, s.outside, s.remote) {
                continue;
            }
            let left = (s.expires.wrapping_sub(now_t) as Micros) << 10;
            out.push((s.proto, s.inside, s.outside, s.remote, s.tcp, left));
        }
        (out, (i < self.sessions.len()).then_some(i))
    }

    pub fn is_pool_address(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        match self.pool_sorted.as_slice() {
            [only] => *only == a,
            all => all.binary_search(&a).is_ok(),
        }
    }

    fn flows(&self, dir: Dir) -> &IndexTable {
        if dir == Dir::Out {
            &self.flows_out
        } else {
            &self.flows_in
        }
    }

    fn session_hash(&self, s: u32, dir: Dir) -> u64 {
        let key = self.key;
        let s = &self.sessions[s as usize];
        flow_hash(key, dir, s.proto, s.local(dir), s.remote)
    }

    /// First pass over a burst: reads the index slot of each packet's flow.
    #[inline]
    pub fn prefetch(&self, dir: Dir, h: u64) {
        self.flows(dir).prefetch(h);
    }

    /// Second pass: reads the (prefetched) index slot for the candidate
    /// session and prefetches its record, so the third pass finds it cached.
    /// The answer is a hint: the third pass verifies the key, and earlier
    /// packets of the burst may change the table before this one is
    /// translated.
    #[inline]
    pub fn hint(&self, dir: Dir, h: u64) -> Hint {
        let session = self.flows(dir).candidate(h).unwrap_or(NONE);
        if let Some(s) = self.sessions.get(session as usize) {
            prefetch::prefetch(s);
        }
        Hint { dir, session }
    }

    /// The fast path: if `hint` still names this flow's session and it has
    /// not expired, updates its timer and returns the endpoint to translate
    /// to (the outside one for `Dir::Out`, the inside one for `Dir::In`).
    /// `None`: take the general way.
    #[inline]
    pub fn established(
        &mut self,
        hint: Hint,
        proto: u8,
        local: Endpoint,
        remote: Endpoint,
        flags: u8,
        now: Micros,
    ) -> Option<Endpoint> {
        let dir = hint.dir;
        let s = self.sessions.get(hint.session as usize)?;
        if !s.is(dir, proto, local, remote) || passed(s.expires, tick(now)) {
            return None;
        }
        self.touch(hint.session, flags, dir == Dir::Out, now);
        let s = &self.sessions[hint.session as usize];
        Some(if dir == Dir::Out { s.outside } else { s.inside })
    }

    /// The session of a flow, live and unexpired (an expired one is removed).
    fn find_flow(&mut self, dir: Dir, proto: u8, local: Endpoint, remote: Endpoint, now: Micros) -> Option<u32> {
        let key = self.key;
        let s = &self.sessions;
        let found = self
            .flows(dir)
            .find(flow_hash(key, dir, proto, local, remote), |i| s[i as usize].is(dir, proto, local, remote))?;
        if passed(self.sessions[found as usize].expires, tick(now)) {
            self.remove_session(found);
            return None;
        }
        Some(found)
    }

    fn find_inside(&self, proto: u8, inside: Endpoint) -> Option<u32> {
        let key = self.key;
        let m = &self.mappings;
        self.by_inside
            .find(h_ep(proto, inside, key ^ 1), |i| m[i as usize].proto == proto && m[i as usize].inside == inside)
    }

    fn find_outside(&self, proto: u8, outside: Endpoint) -> Option<u32> {
        let key = self.key;
        let m = &self.mappings;
        self.by_outside
            .find(h_ep(proto, outside, key ^ 2), |i| m[i as usize].proto == proto && m[i as usize].outside == outside)
    }

    fn next_rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// Where `(proto, outside)`'s bit lives: (word, bit, counter), or
    /// `None` for an address outside the pool (never allocated).
    fn port_slot(&self, proto: u8, outside: Endpoint) -> Option<(usize, u64, usize)> {
        let a = self.pool_sorted.binary_search(&u32::from(outside.addr)).ok()?;
        let p = match proto {
            TCP => 0,
            UDP => 1,
            _ => 2,
        };
        let c = a * 3 + p;
        Some((c * 1024 + outside.port as usize / 64, 1 << (outside.port % 64), c))
    }

    fn mark_port(&mut self, proto: u8, outside: Endpoint, used: bool) {
        if let Some((w, bit, c)) = self.port_slot(proto, outside) {
            if (self.ports_used[w] & bit != 0) != used {
                self.ports_used[w] ^= bit;
                // Counted only inside the allocation range.
                if (self.ports.0..=self.ports.1).contains(&outside.port) {
                    if used {
                        self.ports_count[c] += 1;
                    } else {
                        self.ports_count[c] -= 1;
                    }
                }
            }
        }
    }

    fn port_free(&self, proto: u8, outside: Endpoint) -> bool {
        self.port_slot(proto, outside).is_some_and(|(w, bit, _)| self.ports_used[w] & bit == 0)
    }

    /// Paired pooling (RFC 4787 REQ-2): an inside address always gets the
    /// same outside address. Port: the inside port if free (port
    /// preservation), else random probes in the range (RFC 6056 §3.3.1),
    /// else the first free port after a random start, found a 64-port word
    /// at a time: at most 1024 word reads, and none at all when the
    /// address's ports are all taken (refused at once).
    fn allocate(&mut self, proto: u8, inside: Endpoint) -> Option<Endpoint> {
        let addr = self.pool[(hash_words(7, &[u32::from(inside.addr) as u64]) % self.pool.len() as u64) as usize];
        let (lo, hi) = self.ports;
        let span = (hi - lo) as u32 + 1;
        let (_, _, c) = self.port_slot(proto, Endpoint::new(addr, lo))?;
        if self.ports_count[c] >= span {
            return None;
        }
        if (lo..=hi).contains(&inside.port) && self.port_free(proto, Endpoint::new(addr, inside.port)) {
            return Some(Endpoint::new(addr, inside.port));
        }
        for _ in 0..16 {
            let port = lo + (self.next_rand() % span as u64) as u16;
            if self.port_free(proto, Endpoint::new(addr, port)) {
                return Some(Endpoint::new(addr, port));
            }
        }
        let start = lo as u32 + (self.next_rand() % span as u64) as u32;
        let base = c * 1024;
        let (first_word, last_word) = (lo as usize / 64, hi as usize / 64);
        let words = last_word - first_word + 1;
        let start_word = start as usize / 64;
        for k in 0..=words {
            let w = first_word + (start_word - first_word + k) % words;
            let mut free = !self.ports_used[base + w];
            // Only ports inside the range.
            if w == first_word {
                free &= u64::MAX << (lo % 64);
            }
            if w == last_word && hi % 64 != 63 {
                free &= (1u64 << (hi % 64 + 1)) - 1;
            }
            if k == 0 {
                // The start word from the start bit; its lower bits come last.
                free &= u64::MAX << (start % 64);
            }
            if free != 0 {
                return Some(Endpoint::new(addr, (w * 64) as u16 + free.trailing_zeros() as u16));
            }
        }
        None
    }

    fn new_mapping(&mut self, proto: u8, inside: Endpoint, outside: Endpoint, fixed: bool) -> Option<u32> {
        let key = self.key;
        let m = self.free_mappings;
        self.free_mappings = self.mappings.get(m as usize)?.first_session;
        self.live_mappings += 1;
        self.mappings[m as usize] = Mapping { first_session: NONE, inside, outside, proto, fixed };
        self.by_inside.insert(h_ep(proto, inside, key ^ 1), m);
        self.by_outside.insert(h_ep(proto, outside, key ^ 2), m);
        self.mark_port(proto, outside, true);
        self.counters.mappings_created += 1;
        Some(m)
    }

    fn remove_mapping(&mut self, m: u32) {
        let key = self.key;
        let Mapping { proto, inside, outside, .. } = self.mappings[m as usize];
        let maps = &self.mappings;
        let hash_in = |i: u32| h_ep(maps[i as usize].proto, maps[i as usize].inside, key ^ 1);
        let hash_out = |i: u32| h_ep(maps[i as usize].proto, maps[i as usize].outside, key ^ 2);
        self.by_inside.remove(h_ep(proto, inside, key ^ 1), m, hash_in);
        self.by_outside.remove(h_ep(proto, outside, key ^ 2), m, hash_out);
        self.mark_port(proto, outside, false);
        self.mappings[m as usize].proto = 0;
        self.mappings[m as usize].first_session = self.free_mappings;
        self.free_mappings = m;
        self.live_mappings -= 1;
    }

    fn new_session(&mut self, mapping: u32, remote: Endpoint) -> Option<u32> {
        let key = self.key;
        let s = self.free_sessions;
        self.free_sessions = self.sessions.get(s as usize)?.next_in_mapping;
        let m = self.mappings[mapping as usize];
        self.sessions[s as usize] = Session {
            proto: m.proto,
            tcp: 0,
            inside: m.inside,
            outside: m.outside,
            remote,
            expires: 0,
            mapping,
            next_in_mapping: m.first_session,
        };
        if m.first_session != NONE {
            self.prev_in_mapping[m.first_session as usize] = s;
        }
        self.prev_in_mapping[s as usize] = NONE;
        self.mappings[mapping as usize].first_session = s;
        self.by_remote_addr.insert(h_remote(key, mapping, remote.addr), s);
        self.mapping_sessions[mapping as usize] += 1;
        if !m.fixed {
            self.host_count(m.inside.addr, true);
        }
        self.flows_out.insert(flow_hash(key, Dir::Out, m.proto, m.inside, remote), s);
        self.flows_in.insert(flow_hash(key, Dir::In, m.proto, m.outside, remote), s);
        self.live_sessions += 1;
        self.counters.sessions_created += 1;
        Some(s)
    }

    fn remove_session(&mut self, s: u32) {
        let key = self.key;
        let (h_out, h_in) = (self.session_hash(s, Dir::Out), self.session_hash(s, Dir::In));
        let sess = &self.sessions;
        let rehash = |dir: Dir| {
            move |i: u32| {
                let x = &sess[i as usize];
                flow_hash(key, dir, x.proto, x.local(dir), x.remote)
            }
        };
        self.flows_out.remove(h_out, s, rehash(Dir::Out));
        self.flows_in.remove(h_in, s, rehash(Dir::In));
        let rehash_remote = |i: u32| h_remote(key, sess[i as usize].mapping, sess[i as usize].remote.addr);
        let Session { mapping, next_in_mapping, remote, .. } = self.sessions[s as usize];
        self.by_remote_addr.remove(h_remote(key, mapping, remote.addr), s, rehash_remote);
        // Unlink from the mapping's list: O(1), both ways.
        let prev = self.prev_in_mapping[s as usize];
        if prev == NONE {
            self.mappings[mapping as usize].first_session = next_in_mapping;
        } else {
            self.sessions[prev as usize].next_in_mapping = next_in_mapping;
        }
        if next_in_mapping != NONE {
            self.prev_in_mapping[next_in_mapping as usize] = prev;
        }
        self.mapping_sessions[mapping as usize] -= 1;
        let map = self.mappings[mapping as usize];
        if !map.fixed {
            self.host_count(map.inside.addr, false);
        }
        self.sessions[s as usize].proto = 0;
        self.sessions[s as usize].next_in_mapping = self.free_sessions;
        self.free_sessions = s;
        self.live_sessions -= 1;
        self.counters.sessions_expired += 1;
        let m = &self.mappings[mapping as usize];
        if m.first_session == NONE && !m.fixed {
            self.remove_mapping(mapping);
        }
    }

    /// Updates a session's TCP state and timer for a packet (`outbound`
    /// from inside) with `flags`.
    #[inline]
    fn touch(&mut self, s: u32, flags: u8, outbound: bool, now: Micros) {
        let sess = &mut self.sessions[s as usize];
        if sess.proto == TCP && flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN && is_closed(sess.tcp) {
            // A new connection on a closed tuple (TIME-WAIT reuse, RFC
            // 5382 REQ-5): its state starts afresh, or the old RST would
            // keep it transitory, and evictable, for its whole life.
            sess.tcp = 0;
            self.counters.sessions_restarted += 1;
        }
        let timeout = idle_timeout(&self.timeouts, &mut sess.tcp, sess.proto, flags, outbound);
        // Rounded up: a session never expires early, at most a tick late.
        sess.expires = tick(now + timeout + 1023);
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
        if let Some(s) = self.find_flow(Dir::Out, proto, inside, remote, now) {
            self.touch(s, flags, true, now);
            return Ok(self.sessions[s as usize].outside);
        }
        if self.free_sessions == NONE {
            self.evict_transitory(now);
        }
        let m = match self.find_inside(proto, inside) {
            Some(m) => m,
            None => {
                if self.free_sessions == NONE || self.free_mappings == NONE {
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
        if self.free_sessions != NONE && !self.within_quota(m, now) {
            if self.mappings[m as usize].first_session == NONE && !self.mappings[m as usize].fixed {
                self.remove_mapping(m);
            }
            return Err(Refusal::Quota);
        }
        let Some(s) = self.new_session(m, remote) else {
            self.counters.refused_table_full += 1;
            if self.mappings[m as usize].first_session == NONE && !self.mappings[m as usize].fixed {
                self.remove_mapping(m);
            }
            return Err(Refusal::TableFull);
        };
        self.touch(s, flags, true, now);
        Ok(self.sessions[s as usize].outside)
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
        if let Some(s) = self.find_flow(Dir::In, proto, outside, remote, now) {
            self.touch(s, flags, false, now);
            return Ok(self.sessions[s as usize].inside);
        }
        if self.free_sessions == NONE && self.has_mapping_at(proto, outside) {
            self.evict_transitory(now);
        }
        let Some(m) = self.find_outside(proto, outside) else {
            return Err(Refusal::NoMapping);
        };
        let allowed = self.mappings[m as usize].fixed
            || match self.filtering {
                Filtering::EndpointIndependent => true,
                Filtering::AddressDependent => self.has_session_with(m, remote.addr, now),
                Filtering::AddressAndPortDependent => false,
            };
        if !allowed {
            self.counters.filtered += 1;
            return Err(Refusal::Filtered);
        }
        if self.free_sessions != NONE && !self.within_quota(m, now) {
            return Err(Refusal::Quota);
        }
        let Some(s) = self.new_session(m, remote) else {
            self.counters.refused_table_full += 1;
            return Err(Refusal::TableFull);
        };
        self.touch(s, flags, false, now);
        Ok(self.sessions[s as usize].inside)
    }

    /// Whether some mapping owns `outside` (no state change).
    pub fn has_mapping_at(&self, proto: u8, outside: Endpoint) -> bool {
        self.find_outside(proto, outside).is_some()
    }

    /// For translating ICMP errors: the inside endpoint behind `outside`
    /// if a live session with `remote` exists (no state change).
    pub fn peek_inbound(&mut self, proto: u8, outside: Endpoint, remote: Endpoint, now: Micros) -> Option<Endpoint> {
        let s = self.find_flow(Dir::In, proto, outside, remote, now)?;
        Some(self.sessions[s as usize].inside)
    }

    /// The outside endpoint of `inside` if a live session with `remote` exists.
    pub fn peek_outbound(&mut self, proto: u8, inside: Endpoint, remote: Endpoint, now: Micros) -> Option<Endpoint> {
        let s = self.find_flow(Dir::Out, proto, inside, remote, now)?;
        Some(self.sessions[s as usize].outside)
    }

    fn has_session_with(&self, m: u32, addr: Ipv4Addr, now: Micros) -> bool {
        let sess = &self.sessions;
        self.by_remote_addr
            .find(h_remote(self.key, m, addr), |i| {
                let x = &sess[i as usize];
                x.proto != 0 && x.mapping == m && x.remote.addr == addr && !passed(x.expires, tick(now))
            })
            .is_some()
    }

    /// Removes expired sessions among the next `budget` slots.
    /// Sets the quotas (a reload keeps sessions over a lowered quota; only
    /// new ones are refused).
    pub fn set_quotas(&mut self, q: Quotas) {
        self.quotas = q;
    }

    fn host_slot(&self, addr: Ipv4Addr) -> Option<u32> {
        let hosts = &self.hosts;
        self.by_host.find(h_host(self.key, addr), |i| hosts[i as usize].0 == addr)
    }

    fn host_sessions(&self, addr: Ipv4Addr) -> u32 {
        self.host_slot(addr).map_or(0, |i| self.hosts[i as usize].1)
    }

    fn host_count(&mut self, addr: Ipv4Addr, up: bool) {
        match self.host_slot(addr) {
            Some(i) => {
                let h = &mut self.hosts[i as usize];
                if up {
                    h.1 += 1;
                } else {
                    h.1 -= 1;
                    if h.1 == 0 {
                        let (key, hosts) = (self.key, &self.hosts);
                        self.by_host.remove(h_host(key, addr), i, |j| h_host(key, hosts[j as usize].0));
                        self.free_hosts.push(i);
                        if let Some(e) = &mut self.host_events {
                            e.push((addr, false));
                        }
                    }
                }
            }
            None if up => {
                if let Some(i) = self.free_hosts.pop() {
                    self.hosts[i as usize] = (addr, 1);
                    self.by_host.insert(h_host(self.key, addr), i);
                    if let Some(e) = &mut self.host_events {
                        e.push((addr, true));
                    }
                }
            }
            None => {}
        }
    }

    /// Records from now on when an inside host gets its first session and
    /// loses its last, for [`NatTable::host_events`]. The owner takes them
    /// after every call (one call makes a few: a sweep at most its
    /// budget), so the list never grows past what it is given here.
    pub fn track_hosts(&mut self, room: usize) {
        self.host_events = Some(Vec::with_capacity(room));
    }

    /// The hosts that got their first session (`true`) or lost their last
    /// (`false`) since the last call, in order.
    pub fn host_events(&mut self) -> impl Iterator<Item = (Ipv4Addr, bool)> + '_ {
        self.host_events.iter_mut().flat_map(|e| e.drain(..))
    }

    /// Whether mapping `m` may take one more session: under its quota, or
    /// one of its own transitory sessions makes room.
    fn within_quota(&mut self, m: u32, now: Micros) -> bool {
        let map = self.mappings[m as usize];
        if map.fixed {
            if self.mapping_sessions[m as usize] < self.quotas.forward || self.evict_transitory_of(m, now) {
                return true;
            }
        } else if self.host_sessions(map.inside.addr) < self.quotas.host {
            return true;
        }
        self.counters.refused_quota += 1;
        false
    }

    /// With the table full, makes room by removing one transitory TCP
    /// session (handshake incomplete or closing) or an expired one, found
    /// within [`EVICT_SCAN`] records of the sweep cursor, which walks the
    /// table in order so the entries it passes are the ones longest
    /// unvisited. Established sessions, UDP and ICMP are never evicted for
    /// new ones: those are refused instead (`nat_table_full`).
    fn evict_transitory(&mut self, now: Micros) -> bool {
        self.evict_one(now, None, EVICT_SCAN)
    }

    /// The same for one mapping (a port forward at its quota), looking
    /// further: 4 × [`EVICT_SCAN`] records.
    fn evict_transitory_of(&mut self, m: u32, now: Micros) -> bool {
        self.evict_one(now, Some(m), 4 * EVICT_SCAN)
    }

    fn evict_one(&mut self, now: Micros, of: Option<u32>, scan: usize) -> bool {
        let n = self.sessions.len();
        for _ in 0..scan.min(n) {
            let s = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % n;
            let x = &self.sessions[s];
            if x.proto == 0 || of.is_some_and(|m| x.mapping != m) {
                continue;
            }
            let expired = passed(x.expires, tick(now));
            if expired || x.proto == TCP && (!is_established(x.tcp) || is_closing(x.tcp)) {
                self.remove_session(s as u32);
                if !expired {
                    self.counters.evicted_transitory += 1;
                }
                return true;
            }
        }
        false
    }

    pub fn sweep(&mut self, now: Micros, budget: usize) {
        for _ in 0..budget.min(self.sessions.len()) {
            let s = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % self.sessions.len();
            if self.sessions[s].proto != 0 && passed(self.sessions[s].expires, tick(now)) {
                self.remove_session(s as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{tcp_flags, ICMP};

    /// Timers are exact to one tick: a deadline passes at most this late.
    const TICK_US: Micros = 1024;
    const IN_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IN_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const OUT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const R1: Endpoint = Endpoint { addr: Ipv4Addr::new(198, 51, 100, 1), port: 53 };
    const R2: Endpoint = Endpoint { addr: Ipv4Addr::new(198, 51, 100, 2), port: 53 };

    fn table(cap: usize, f: Filtering) -> NatTable {
        NatTable::new(cap, alloc::vec![OUT], (1024, 65535), f, Timeouts::default(), 42)
    }

    #[test]
    fn an_exhausted_port_range_is_refused_at_once_and_freed_ports_return() {
        let mut t =
            NatTable::new(64, alloc::vec![OUT], (1024, 1030), Filtering::EndpointIndependent, Timeouts::default(), 9);
        let mut got = std::collections::BTreeSet::new();
        for p in 0..7 {
            let o = t.outbound(UDP, ep(IN_A, 40000 + p), R1, 0, 0).unwrap();
            assert!((1024..=1030).contains(&o.port));
            assert!(got.insert(o.port), "port {} given twice", o.port);
        }
        assert_eq!(t.outbound(UDP, ep(IN_A, 41000), R1, 0, 0), Err(Refusal::PortsExhausted));
        assert_eq!(t.counters.refused_ports, 1);
        // Other protocols have their own ports.
        assert!(t.outbound(TCP, ep(IN_A, 41000), R1, tcp_flags::SYN, 0).is_ok());
        // Expired mappings give their ports back.
        t.sweep(Timeouts::default().udp * 2, 64);
        assert!(t.outbound(UDP, ep(IN_A, 41000), R1, 0, Timeouts::default().udp * 2).is_ok());
    }

    proptest::proptest! {
        // Sessions of one mapping come and go in any order: the mapping's
        // list (walked both ways) and the by-address index always agree
        // with a model, and the mapping goes when its last session does.
        #[test]
        fn mapping_lists_and_the_address_index_stay_consistent(
            ops in proptest::collection::vec((0u8..40, proptest::bool::ANY), 1..300)
        ) {
            let mut t = table(64, Filtering::AddressDependent);
            let inside = ep(IN_A, 5000);
            let mut live = std::collections::BTreeSet::new();
            for (r, add) in ops {
                let remote = ep(Ipv4Addr::new(198, 51, 100, r / 4), 1000 + r as u16);
                if add {
                    if t.outbound(UDP, inside, remote, 0, 0).is_ok() {
                        live.insert(r);
                    }
                } else if let Some(s) = t.find_flow(Dir::Out, UDP, inside, remote, 0) {
                    t.remove_session(s);
                    live.remove(&r);
                }
                let m = t.find_inside(UDP, inside);
                proptest::prop_assert_eq!(m.is_some(), !live.is_empty());
                if let Some(m) = m {
                    let mut walked = std::collections::BTreeSet::new();
                    let (mut s, mut prev) = (t.mappings[m as usize].first_session, NONE);
                    while s != NONE {
                        proptest::prop_assert_eq!(t.prev_in_mapping[s as usize], prev);
                        let x = t.sessions[s as usize];
                        walked.insert(x.remote.port - 1000);
                        prev = s;
                        s = x.next_in_mapping;
                    }
                    let want: std::collections::BTreeSet<u16> = live.iter().map(|r| *r as u16).collect();
                    proptest::prop_assert_eq!(&walked, &want);
                    for a in 0..10u8 {
                        let has = live.iter().any(|r| r / 4 == a);
                        proptest::prop_assert_eq!(t.has_session_with(m, Ipv4Addr::new(198, 51, 100, a), 0), has);
                    }
                }
            }
        }
    }

    fn ep(a: Ipv4Addr, p: u16) -> Endpoint {
        Endpoint::new(a, p)
    }

    #[test]
    fn a_syn_answered_without_the_final_ack_stays_transitory() {
        let t = Timeouts::default();
        let syn = tcp_flags::SYN;
        let synack = tcp_flags::SYN | tcp_flags::ACK;
        let ack = tcp_flags::ACK;
        // A spoofed SYN from outside through a port forward, answered by
        // the inside server: the spoofer never completes the handshake.
        let mut st = 0;
        assert_eq!(idle_timeout(&t, &mut st, TCP, syn, false), t.tcp_transitory);
        assert_eq!(idle_timeout(&t, &mut st, TCP, synack, true), t.tcp_transitory);
        // The server's retransmitted SYN-ACK or a bare ACK from the inside
        // does not complete it either.
        assert_eq!(idle_timeout(&t, &mut st, TCP, ack, true), t.tcp_transitory);
        assert!(!is_established(st));
        // The real client's ACK does.
        assert_eq!(idle_timeout(&t, &mut st, TCP, ack, false), t.tcp_established);
        // Outbound connections: the inside client's ACK completes it.
        let mut st = 0;
        idle_timeout(&t, &mut st, TCP, syn, true);
        idle_timeout(&t, &mut st, TCP, synack, false);
        assert_eq!(idle_timeout(&t, &mut st, TCP, ack, false), t.tcp_transitory, "the server's ACK is not the one");
        assert_eq!(idle_timeout(&t, &mut st, TCP, ack, true), t.tcp_established);
        assert_eq!(idle_timeout(&t, &mut st, TCP, tcp_flags::RST, false), t.tcp_transitory);
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
        assert_eq!(
            t.inbound(UDP, o, R1, 0, 3 * tm.udp + TICK_US),
            Err(Refusal::NoMapping),
            "expired lazily, mapping gone"
        );
        assert_eq!(t.sessions(), 0);
        assert_eq!(t.mappings(), 0);
        // ICMP query: 60 s.
        let o = t.outbound(ICMP, ep(IN_A, 77), ep(R1.addr, 0), 0, 0).unwrap();
        assert!(t.inbound(ICMP, o, ep(R1.addr, 0), 0, tm.icmp - 1).is_ok());
        t.sweep(2 * tm.icmp + TICK_US, 16);
        assert_eq!(t.sessions(), 0, "the sweep removes expired sessions");
    }

    #[test]
    fn tcp_state_machine_picks_the_timeout() {
        let tm = Timeouts::default();
        let mut t = table(16, Filtering::AddressAndPortDependent);
        let r = ep(R1.addr, 80);
        let o = t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::SYN, 0).unwrap();
        // Only a SYN out: transitory.
        assert!(t.peek_inbound(TCP, o, r, tm.tcp_transitory + TICK_US).is_none());
        let o = t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::SYN, 0).unwrap();
        t.inbound(TCP, o, r, tcp_flags::SYN | tcp_flags::ACK, 1).unwrap();
        // Both SYNs but not yet the client's ACK: still transitory.
        assert!(!is_established(t.sessions[0].tcp) && !is_established(t.sessions[1].tcp));
        t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::ACK, 2).unwrap();
        // Established: survives well past the transitory timeout.
        assert!(t.peek_inbound(TCP, o, r, 2 + tm.tcp_transitory * 10).is_some());
        t.outbound(TCP, ep(IN_A, 40000), r, 0, 1_000_000_000).unwrap();
        // FIN both ways: back to transitory.
        t.outbound(TCP, ep(IN_A, 40000), r, tcp_flags::FIN, 1_000_000_000).unwrap();
        t.inbound(TCP, o, r, tcp_flags::FIN, 1_000_000_000).unwrap();
        assert!(t.peek_inbound(TCP, o, r, 1_000_000_000 + tm.tcp_transitory + TICK_US).is_none());
    }

    #[test]
    fn a_syn_on_a_closed_session_starts_a_new_connection() {
        let tm = Timeouts::default();
        for rst in [true, false] {
            let mut t = table(8, Filtering::EndpointIndependent);
            let (r, inside) = (ep(R1.addr, 80), ep(IN_A, 40000));
            let handshake = |t: &mut NatTable, at: Micros| {
                let o = t.outbound(TCP, inside, r, tcp_flags::SYN, at).unwrap();
                t.inbound(TCP, o, r, tcp_flags::SYN | tcp_flags::ACK, at).unwrap();
                t.outbound(TCP, inside, r, tcp_flags::ACK, at).unwrap();
                o
            };
            let o = handshake(&mut t, 0);
            if rst {
                t.outbound(TCP, inside, r, tcp_flags::RST, 1).unwrap();
            } else {
                t.outbound(TCP, inside, r, tcp_flags::FIN | tcp_flags::ACK, 1).unwrap();
                t.inbound(TCP, o, r, tcp_flags::FIN | tcp_flags::ACK, 1).unwrap();
                t.outbound(TCP, inside, r, tcp_flags::ACK, 1).unwrap();
            }
            // The client reuses its port within the session's TIME-WAIT.
            assert_eq!(handshake(&mut t, 2), o, "the same mapping (endpoint-independent)");
            assert_eq!(t.counters.sessions_restarted, 1);
            // The new connection is established, not closing: it lives
            // past the transitory timeout and a full table keeps it.
            assert!(t.peek_inbound(TCP, o, r, 2 + tm.tcp_transitory * 10).is_some(), "closed by RST: {rst}");
        }
    }

    #[test]
    fn a_full_table_evicts_half_open_tcp_but_never_established_sessions() {
        let mut t = table(8, Filtering::EndpointIndependent);
        let r = ep(R1.addr, 80);
        // Two established TCP connections and a UDP flow.
        for p in [1000, 1001] {
            let o = t.outbound(TCP, ep(IN_A, p), r, tcp_flags::SYN, 0).unwrap();
            t.inbound(TCP, o, r, tcp_flags::SYN | tcp_flags::ACK, 1).unwrap();
            t.outbound(TCP, ep(IN_A, p), r, tcp_flags::ACK, 2).unwrap();
        }
        t.outbound(UDP, ep(IN_A, 5353), R1, 0, 3).unwrap();
        // A SYN flood from one inside host fills the rest.
        for p in 2000..2005 {
            t.outbound(TCP, ep(IN_B, p), ep(R2.addr, 80), tcp_flags::SYN, 4).unwrap();
        }
        assert_eq!(t.sessions(), 8);
        // New flows still get sessions: half-open ones make room.
        for p in 3000..3010 {
            t.outbound(TCP, ep(IN_B, p), ep(R2.addr, 80), tcp_flags::SYN, 5).unwrap();
        }
        assert_eq!(t.counters.evicted_transitory, 10);
        // The established ones and the UDP flow are all still there.
        for p in [1000, 1001] {
            assert!(t.outbound(TCP, ep(IN_A, p), r, tcp_flags::ACK, 6).is_ok());
        }
        assert_eq!(t.counters.sessions_created, 8 + 10);
        t.outbound(UDP, ep(IN_A, 5353), R1, 0, 7).unwrap();
        assert_eq!(t.counters.sessions_created, 8 + 10, "kept, not re-created");
        // With only established sessions and UDP left, a new flow is refused.
        let mut t = table(2, Filtering::EndpointIndependent);
        t.outbound(UDP, ep(IN_A, 1), R1, 0, 0).unwrap();
        t.outbound(UDP, ep(IN_A, 2), R1, 0, 0).unwrap();
        assert_eq!(t.outbound(TCP, ep(IN_A, 3), r, tcp_flags::SYN, 1), Err(Refusal::TableFull));
        assert_eq!(t.counters.evicted_transitory, 0);
    }

    #[test]
    fn quotas_bound_one_host_and_one_forward_and_floods_evict_their_own() {
        let mut t = table(64, Filtering::EndpointIndependent);
        t.set_quotas(Quotas { host: 4, forward: 8 });
        for p in 0..4 {
            t.outbound(UDP, ep(IN_A, 1000 + p), R1, 0, 0).unwrap();
        }
        assert_eq!(t.outbound(UDP, ep(IN_A, 2000), R1, 0, 0), Err(Refusal::Quota));
        assert!(t.outbound(UDP, ep(IN_B, 2000), R1, 0, 0).is_ok(), "another host is not held back");
        // A forward: a real client completes its handshake...
        let fwd = ep(OUT, 8080);
        assert!(t.add_forward(TCP, fwd, ep(IN_B, 80)));
        let client = ep(Ipv4Addr::new(203, 0, 113, 9), 5555);
        t.inbound(TCP, fwd, client, tcp_flags::SYN, 1).unwrap();
        t.outbound(TCP, ep(IN_B, 80), client, tcp_flags::SYN | tcp_flags::ACK, 2).unwrap();
        t.inbound(TCP, fwd, client, tcp_flags::ACK, 3).unwrap();
        // ...then spoofed SYNs from 1000 sources flood it.
        for i in 0..1000u32 {
            let spoofed = ep(Ipv4Addr::from(0xc000_0200 + i), 1024 + i as u16);
            t.inbound(TCP, fwd, spoofed, tcp_flags::SYN, 4).unwrap();
        }
        assert!(t.counters.evicted_transitory >= 990, "{}", t.counters.evicted_transitory);
        // The established connection is still there, and a new real client gets in.
        assert!(t.peek_inbound(TCP, fwd, client, 5).is_some());
        assert!(t.inbound(TCP, fwd, ep(Ipv4Addr::new(203, 0, 113, 10), 6000), tcp_flags::SYN, 5).is_ok());
        assert!(t.sessions() <= 5 + 8);
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
    fn memory_is_known_before_the_table_is_built() {
        for n in [16, 1000, 65536] {
            assert_eq!(NatTable::memory_for(n, 1), table(n, Filtering::EndpointIndependent).memory());
        }
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
            assert_eq!(t.sessions(), t.flows_out.len());
            assert_eq!(t.sessions(), t.flows_in.len());
            assert_eq!(t.mappings(), t.by_inside.len());
            assert_eq!(t.mappings(), t.by_outside.len());
        }
    }
}
