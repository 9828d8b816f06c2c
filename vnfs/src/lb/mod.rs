//! The L4 load balancer stage: services (VIP:port/protocol) spread over
//! weighted backends by Maglev consistent hashing, a connection table that
//! keeps established flows on their backend when the pool changes, full-NAT
//! and DNAT forwarding, and health checks run from the appliance's own host
//! stack.
//!
//! Where it runs: first in the pipelines (`lb router`): on the client side
//! it claims packets to a VIP and rewrites them towards a backend, which the
//! router then routes; on the backend side it recognises replies by the
//! connection table's reverse index and restores the VIP. Header rewriting
//! and the TCP timers are the NAT's (`vnfs::rewrite`, `nat::table`).

pub mod config;
mod health;
pub mod maglev;
mod v6;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;
use core::net::{IpAddr, Ipv4Addr};

pub use self::config::{BackendConfig, CheckKind, LbConfig, LbMode, ServiceConfig};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::counters::DropReason;
use crate::flow::{idle_timeout, tcp_flags, Endpoint, Timeouts, TCP, UDP};
use crate::icmp::IcmpError;
use crate::packet::{Batch, Packet, PortId, BURST};
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;
use crate::table::{hash_words, xorshift, IndexTable};
use crate::wire::rewrite::{parse, ports, set_addr, set_port};
use crate::Micros;
use health::Health;
use maglev::{MaglevTable, Member};

const NONE: u16 = u16::MAX;
/// No flow: the end of a client's list, or a flow on none.
const NIL: u32 = u32::MAX;
/// Of a client's oldest evictable flows, how many its eviction compares.
const OWN_SCAN: usize = 8;
/// Flows whose timers each loop turn checks.
const SWEEP_PER_POLL: usize = 16;
/// Full-NAT source ports.
const SNAT_PORTS: (u16, u16) = (1024, 32767);
/// Health-check source ports, 256 per backend.
const HEALTH_PORTS: (u16, u16) = (32768, 65535);

#[derive(Clone, Debug, Default)]
pub struct BackendCounters {
    pub new_flows: u64,
    pub active_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub transitions: u64,
}

pub struct Backend {
    /// The flow table's endpoint: the backend's own for IPv4, a stand-in
    /// for IPv6 (see [`v6`]).
    pub ep: Endpoint,
    /// Its real address (health checks, rewriting, views).
    pub real: IpAddr,
    pub weight: u32,
    pub via_port: PortId,
    pub healthy: bool,
    pub counters: BackendCounters,
    health: Health,
}

#[derive(Clone, Debug, Default)]
pub struct ServiceCounters {
    pub new_flows: u64,
    pub active_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub no_backend: u64,
}

pub struct Service {
    pub name: String,
    pub proto: u8,
    pub vip: Endpoint,
    pub mode: LbMode,
    /// Full-NAT source address.
    pub snat: Ipv4Addr,
    /// For an IPv6 service: its real VIP and full-NAT source (`vip` and
    /// `snat` are their stand-ins).
    pub v6: Option<(core::net::Ipv6Addr, core::net::Ipv6Addr)>,
    pub backends: Vec<Backend>,
    table: MaglevTable,
    check: CheckKind,
    /// The port checks connect to (`None`: each backend's own).
    check_port: Option<u16>,
    interval: Micros,
    timeout: Micros,
    rise: u32,
    fall: u32,
    pub counters: ServiceCounters,
}

impl Service {
    /// What the Maglev table is built from: each backend with its weight
    /// (0 while down or draining).
    fn members(&self) -> Vec<Member> {
        self.backends
            .iter()
            .map(|b| Member {
                // The real address: every instance builds the same table.
                id: match b.real {
                    IpAddr::V4(a) => (u32::from(a) as u64) << 16 | b.ep.port as u64,
                    IpAddr::V6(a) => {
                        hash_words(0x6d67_6c76, &[(u128::from(a) >> 64) as u64, u128::from(a) as u64, b.ep.port as u64])
                    }
                },
                weight: if b.healthy { b.weight } else { 0 },
            })
            .collect()
    }

    /// The VIP as clients address it.
    pub fn vip_real(&self) -> IpAddr {
        self.v6.map_or(IpAddr::V4(self.vip.addr), |(v, _)| IpAddr::V6(v))
    }

    fn rebuild(&mut self, size: usize) {
        self.table = MaglevTable::build(&self.members(), size);
    }
}

/// The services of a config, with empty Maglev tables; IPv6 addresses
/// get their stand-ins from `names`.
fn services_of(config: &LbConfig, names: &mut v6::Names) -> Vec<Service> {
    names.keep_only(config);
    config
        .services
        .iter()
        .map(|s| {
            let backends: Vec<Backend> = s
                .backends
                .iter()
                .map(|b| Backend {
                    ep: Endpoint::new(names.v4_of(b.addr), b.port),
                    real: b.addr,
                    weight: b.weight,
                    via_port: b.via_port as PortId,
                    healthy: s.check == CheckKind::None,
                    counters: BackendCounters::default(),
                    health: Health::default(),
                })
                .collect();
            let v6 = match (s.vip, s.snat) {
                (IpAddr::V6(v), IpAddr::V6(n)) => Some((v, n)),
                _ => None,
            };
            Service {
                name: s.name.clone(),
                proto: s.proto,
                vip: Endpoint::new(names.v4_of(s.vip), s.port),
                mode: s.mode,
                snat: names.v4_of(s.snat),
                v6,
                backends,
                table: MaglevTable::build(&[], 0),
                check: s.check.clone(),
                check_port: s.check_port,
                interval: s.interval,
                timeout: s.timeout,
                rise: s.rise,
                fall: s.fall,
                counters: ServiceCounters::default(),
            }
        })
        .collect()
}

fn timeouts_of(config: &LbConfig) -> Timeouts {
    Timeouts {
        udp: config.udp_timeout as Micros * 1_000_000,
        tcp_established: config.tcp_established_timeout as Micros * 1_000_000,
        tcp_transitory: config.tcp_transitory_timeout as Micros * 1_000_000,
        ..Timeouts::default()
    }
}

/// A packet's flow as the tables see it: IPv6 addresses as stand-ins.
#[derive(Clone, Copy, Debug)]
struct Key {
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
    flags: u8,
    /// Where the transport header is, from the L3 header, and the L3
    /// packet's length.
    l4: u16,
    total: u16,
    v6: bool,
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    proto: u8,
    service: u16,
    backend: u16,
    client: Endpoint,
    /// Source the backend sees: the client (DNAT) or the appliance (full-NAT).
    snat: Endpoint,
    expires: Micros,
    tcp: u8,
    /// Next and previous in its client's circular list of evictable flows
    /// (oldest first), `NIL` when on none (established TCP).
    links: (u32, u32),
}

/// A client address's flows: the count its quota holds, and the first
/// (oldest) of those it may lose to its own new ones.
#[derive(Clone, Copy, Debug)]
struct Client {
    addr: Ipv4Addr,
    flows: u32,
    evictable: u32,
}

/// Whether a flow may make room for a new one: UDP has no handshake to
/// tell a flood from a client; TCP whose handshake is incomplete or that is
/// closing. Established TCP never is.
fn evictable(f: &Flow) -> bool {
    f.proto == UDP || f.proto == TCP && (!crate::flow::is_established(f.tcp) || crate::flow::is_closing(f.tcp))
}

#[derive(Clone, Debug, Default)]
pub struct LbCounters {
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_moved: u64,
    pub table_full: u64,
    pub no_backend: u64,
    /// Flows that made room in a full flow table, or for their own
    /// client's new flow at its quota: transitory TCP or the longest-idle UDP.
    pub flows_evicted: u64,
    /// New flows refused: the client held its quota (`client-flows`).
    pub refused_client_quota: u64,
    /// Flows ended because a reload removed their backend.
    pub flows_backend_removed: u64,
    /// Flows ended by a client's SYN on their closed tuple (RST seen, or a
    /// FIN each way): the SYN began a new flow, scheduled afresh.
    pub flows_restarted: u64,
    /// Maglev tables built by reloads (only changed services rebuild).
    pub maglev_rebuilds: u64,
    /// Resets and port unreachables not sent: the client's allowance
    /// (`router icmp-rate`/`icmp-burst`, per source) was used up.
    pub refusals_rate_limited: u64,
}

pub struct Lb {
    pub services: Vec<Service>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    fwd: IndexTable,
    rev: IndexTable,
    table_size: usize,
    timeouts: Timeouts,
    rng: u64,
    /// The secret the flow indexes are keyed with (drawn at boot).
    key: u64,
    sweep_at: usize,
    ident: u16,
    /// Refusals (RST, port unreachable) per client address.
    refusals: crate::ratelimit::PerSource,
    /// Health-check sockets of backends a reload removed, to close.
    orphans: Vec<(PortId, smoltcp::iface::SocketHandle)>,
    /// Stand-ins of IPv6 VIPs, backends and full-NAT sources (kept across
    /// reloads, so unchanged flows and health states keep theirs), and of
    /// IPv6 clients.
    names: v6::Names,
    clients: crate::standin::Hosts,
    /// Live flows per client address (a stand-in for IPv6): slab found
    /// through `by_client`, with its free slots; one slot per flow, so it
    /// never fills first. Each lists its evictable flows, so a client at
    /// its quota finds its own in O(1) rather than scanning the table.
    client_flows: Vec<Client>,
    free_clients: Vec<u32>,
    by_client: IndexTable,
    /// Most flows one client may hold.
    client_quota: u32,
    pub counters: LbCounters,
}

fn h_fwd(key: u64, proto: u8, client: Endpoint, service: u16) -> u64 {
    hash_words(key ^ 11, &[proto as u64, u32::from(client.addr) as u64, client.port as u64, service as u64])
}

fn h_client(key: u64, addr: Ipv4Addr) -> u64 {
    hash_words(key ^ 13, &[u32::from(addr) as u64])
}

fn h_rev(key: u64, proto: u8, backend: Endpoint, snat: Endpoint) -> u64 {
    hash_words(
        key ^ 12,
        &[
            proto as u64,
            u32::from(backend.addr) as u64,
            backend.port as u64,
            u32::from(snat.addr) as u64,
            snat.port as u64,
        ],
    )
}

/// The flow hash Maglev looks up: only the 5-tuple, with a fixed seed, so
/// every instance with the same config picks the same backend.
pub fn flow_hash(proto: u8, src: Endpoint, dst: Endpoint) -> u64 {
    hash_words(
        0x5eed,
        &[proto as u64, u32::from(src.addr) as u64, src.port as u64, u32::from(dst.addr) as u64, dst.port as u64],
    )
}

impl Lb {
    /// The load balancer of a config (which has services).
    pub fn from_config(config: &LbConfig, seed: u64) -> Lb {
        let mut names = v6::Names::default();
        let mut services = services_of(config, &mut names);
        for svc in &mut services {
            svc.rebuild(config.table_size);
        }
        let mut lb = Lb::new(services, config.flows, config.table_size, seed);
        lb.names = names;
        lb.clients.set_per_64(config.clients_per_64());
        lb.timeouts = timeouts_of(config);
        lb.client_quota = config.client_quota();
        lb.refusals = crate::ratelimit::PerSource::new(
            config.refusal_rate,
            config.refusal_burst,
            hash_words(seed, &[0x7265_6675]),
        );
        lb
    }

    /// Takes a changed config in place: established flows stay on their
    /// backends unless a backend was removed (its flows end; counted), every
    /// backend whose address, port and check did not change keeps its
    /// health state and counters, Maglev tables are rebuilt only for the
    /// services whose members changed, and the checks in flight of removed
    /// backends are closed on the next poll. `false` if the flow table's
    /// size or the Maglev size changed: then the stage is built anew.
    pub fn reconfigure(&mut self, config: &LbConfig) -> bool {
        // The IPv6 clients' table is sized with the first IPv6 service.
        let had_ipv6 = self.services.iter().any(|s| s.v6.is_some());
        if config.flows != self.flows.len() || config.table_size != self.table_size || config.has_ipv6() != had_ipv6 {
            return false;
        }
        let mut fresh = services_of(config, &mut self.names);
        let mut old = core::mem::take(&mut self.services);
        // Old (service, backend) -> new (service, backend).
        let mut remap: Vec<Vec<Option<(u16, u16)>>> = old.iter().map(|s| alloc::vec![None; s.backends.len()]).collect();
        for (nsi, ns) in fresh.iter_mut().enumerate() {
            let Some(osi) = old.iter().position(|o| o.name == ns.name && o.proto == ns.proto && o.vip == ns.vip) else {
                ns.rebuild(self.table_size);
                self.counters.maglev_rebuilds += 1;
                continue;
            };
            let os = &mut old[osi];
            let same_check = os.check == ns.check
                && os.check_port == ns.check_port
                && os.interval == ns.interval
                && os.timeout == ns.timeout;
            for (nbi, nb) in ns.backends.iter_mut().enumerate() {
                let Some(obi) = os.backends.iter().position(|b| b.ep == nb.ep) else { continue };
                let ob = &mut os.backends[obi];
                remap[osi][obi] = Some((nsi as u16, nbi as u16));
                nb.counters = core::mem::take(&mut ob.counters);
                nb.counters.active_flows = 0;
                if same_check {
                    nb.healthy = ob.healthy;
                    nb.health = core::mem::take(&mut ob.health);
                }
            }
            ns.counters = core::mem::take(&mut os.counters);
            ns.counters.active_flows = 0;
            if ns.members() == os.members() {
                ns.table = core::mem::replace(&mut os.table, MaglevTable::build(&[], 0));
            } else {
                ns.rebuild(self.table_size);
                self.counters.maglev_rebuilds += 1;
            }
        }
        // Checks in flight whose backend (or check) is gone.
        for os in &mut old {
            for ob in &mut os.backends {
                if let Some(h) = ob.health.abandon() {
                    self.orphans.push((ob.via_port, h));
                }
            }
        }
        self.services = fresh;
        self.clients.set_per_64(config.clients_per_64());
        self.timeouts = timeouts_of(config);
        // A lowered quota keeps the flows over it; only new ones wait.
        self.client_quota = config.client_quota();
        // Flows follow their backend's new place; the indexes are rebuilt
        // because both hash a service or backend of the flow.
        let key = self.key;
        self.fwd = IndexTable::new(self.flows.len());
        self.rev = IndexTable::new(self.flows.len());
        for i in 0..self.flows.len() {
            let f = self.flows[i];
            if f.service == NONE {
                continue;
            }
            match remap.get(f.service as usize).and_then(|r| r.get(f.backend as usize)).copied().flatten() {
                Some((si, bi)) => {
                    let f = &mut self.flows[i];
                    (f.service, f.backend) = (si, bi);
                    let svc = &mut self.services[si as usize];
                    svc.counters.active_flows += 1;
                    svc.backends[bi as usize].counters.active_flows += 1;
                    let b = svc.backends[bi as usize].ep;
                    self.fwd.insert(h_fwd(key, f.proto, f.client, f.service), i as u32);
                    self.rev.insert(h_rev(key, f.proto, b, f.snat), i as u32);
                }
                None => {
                    // Its backend was removed: the flow ends here. The
                    // client's next packet picks a live backend, which
                    // answers a TCP segment of an unknown connection
                    // with a reset.
                    if old[f.service as usize].v6.is_some() {
                        self.clients.release(f.client.addr);
                    }
                    self.client_down(i as u32);
                    self.flows[i].service = NONE;
                    self.free.push(i as u32);
                    self.counters.flows_backend_removed += 1;
                }
            }
        }
        true
    }

    pub fn new(services: Vec<Service>, flows: usize, table_size: usize, seed: u64) -> Lb {
        let any_v6 = services.iter().any(|s| s.v6.is_some());
        let blank = Flow {
            proto: 0,
            service: NONE,
            backend: NONE,
            client: Endpoint::new(Ipv4Addr::UNSPECIFIED, 0),
            snat: Endpoint::new(Ipv4Addr::UNSPECIFIED, 0),
            expires: 0,
            tcp: 0,
            links: (NIL, NIL),
        };
        Lb {
            services,
            flows: alloc::vec![blank; flows],
            free: (0..flows as u32).rev().collect(),
            fwd: IndexTable::new(flows),
            rev: IndexTable::new(flows),
            table_size,
            timeouts: Timeouts::default(),
            rng: seed | 1,
            key: hash_words(seed, &[0x6b65_795f_6c62]),
            sweep_at: 0,
            ident: 0,
            orphans: Vec::new(),
            names: v6::Names::default(),
            // Room for IPv6 clients only when a service is IPv6.
            clients: crate::standin::Hosts::new(
                if any_v6 { flows } else { 0 },
                crate::standin::default_per_64(flows),
                hash_words(seed, &[0x636c_6936]),
            ),
            refusals: crate::ratelimit::PerSource::new(100, 20, hash_words(seed, &[0x7265_6675])),
            client_flows: alloc::vec![Client { addr: Ipv4Addr::UNSPECIFIED, flows: 0, evictable: NIL }; flows],
            free_clients: (0..flows as u32).rev().collect(),
            by_client: IndexTable::new(flows),
            client_quota: u32::MAX,
            counters: LbCounters::default(),
        }
    }

    /// Bytes the flow table for `flows` flows takes.
    pub fn memory_for(flows: usize) -> usize {
        // Flows and their free list, the two indexes, and the per-client
        // counts with their free list and index.
        flows * (core::mem::size_of::<Flow>() + 4 + core::mem::size_of::<Client>() + 4)
            + 3 * IndexTable::memory_for(flows)
    }

    fn client_slot(&self, addr: Ipv4Addr) -> Option<u32> {
        let c = &self.client_flows;
        self.by_client.find(h_client(self.key, addr), |i| c[i as usize].addr == addr)
    }

    /// Live flows of client `addr`.
    fn flows_of(&self, addr: Ipv4Addr) -> u32 {
        self.client_slot(addr).map_or(0, |i| self.client_flows[i as usize].flows)
    }

    /// One flow more for client `addr`.
    fn client_up(&mut self, addr: Ipv4Addr) {
        match self.client_slot(addr) {
            Some(i) => self.client_flows[i as usize].flows += 1,
            // A slot per flow: there is always one for a new flow's client.
            None => {
                if let Some(i) = self.free_clients.pop() {
                    self.client_flows[i as usize] = Client { addr, flows: 1, evictable: NIL };
                    self.by_client.insert(h_client(self.key, addr), i);
                }
            }
        }
    }

    /// Flow `i` (ending) off its client's count and list.
    fn client_down(&mut self, i: u32) {
        let addr = self.flows[i as usize].client.addr;
        let Some(c) = self.client_slot(addr) else { return };
        if self.flows[i as usize].links.0 != NIL {
            self.unlink(c, i);
        }
        let cl = &mut self.client_flows[c as usize];
        cl.flows = cl.flows.saturating_sub(1);
        if cl.flows == 0 {
            let (key, cf) = (self.key, &self.client_flows);
            self.by_client.remove(h_client(key, addr), c, |j| h_client(key, cf[j as usize].addr));
            self.free_clients.push(c);
        }
    }

    /// Flow `i` at the end (newest) of client slot `c`'s evictable list.
    fn link(&mut self, c: u32, i: u32) {
        let head = self.client_flows[c as usize].evictable;
        if head == NIL {
            self.flows[i as usize].links = (i, i);
            self.client_flows[c as usize].evictable = i;
            return;
        }
        let tail = self.flows[head as usize].links.1;
        self.flows[i as usize].links = (head, tail);
        self.flows[tail as usize].links.0 = i;
        self.flows[head as usize].links.1 = i;
    }

    fn unlink(&mut self, c: u32, i: u32) {
        let (next, prev) = self.flows[i as usize].links;
        self.flows[i as usize].links = (NIL, NIL);
        let cl = &mut self.client_flows[c as usize];
        if next == i {
            cl.evictable = NIL;
            return;
        }
        if cl.evictable == i {
            cl.evictable = next;
        }
        self.flows[prev as usize].links.0 = next;
        self.flows[next as usize].links.1 = prev;
    }

    /// After flow `i`'s TCP state moved: on its client's evictable list
    /// exactly when it is evictable (a state change, so rarely a lookup).
    fn relist(&mut self, i: u32) {
        let f = &self.flows[i as usize];
        let (want, on) = (evictable(f), f.links.0 != NIL);
        if want == on {
            return;
        }
        let Some(c) = self.client_slot(f.client.addr) else { return };
        if want {
            self.link(c, i);
        } else {
            self.unlink(c, i);
        }
    }

    /// A client at its quota: ends its own flow that may make room (the
    /// expired or nearest its timeout of its [`OWN_SCAN`] oldest evictable
    /// ones), as the full table does for anyone's; `false` if it holds only
    /// established TCP. Otherwise spoofed SYNs in a victim's name would shut
    /// it out for the transitory timeout.
    fn evict_own(&mut self, addr: Ipv4Addr, now: Micros) -> bool {
        let Some(c) = self.client_slot(addr) else { return false };
        let head = self.client_flows[c as usize].evictable;
        if head == NIL {
            return false;
        }
        let mut best = (self.flows[head as usize].expires, head);
        let mut j = head;
        for _ in 1..OWN_SCAN {
            j = self.flows[j as usize].links.0;
            if j == head {
                break;
            }
            if self.flows[j as usize].expires < best.0 {
                best = (self.flows[j as usize].expires, j);
            }
        }
        self.remove(best.1);
        if best.0 > now {
            self.counters.flows_evicted += 1;
        }
        true
    }

    /// Live flows.
    pub fn flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    fn backend_ep(&self, f: &Flow) -> Endpoint {
        self.services[f.service as usize].backends[f.backend as usize].ep
    }

    /// The live flow of `client` to `service` (`h`: its hash, if the burst's
    /// first pass computed it).
    fn find_fwd(&mut self, h: Option<u64>, proto: u8, client: Endpoint, service: u16, now: Micros) -> Option<u32> {
        let key = self.key;
        let flows = &self.flows;
        let h = h.unwrap_or_else(|| h_fwd(key, proto, client, service));
        let i = self.fwd.find(h, |i| {
            let f = &flows[i as usize];
            f.proto == proto && f.client == client && f.service == service
        })?;
        if self.flows[i as usize].expires <= now {
            self.remove(i);
            return None;
        }
        Some(i)
    }

    fn find_rev(&mut self, h: Option<u64>, proto: u8, backend: Endpoint, snat: Endpoint, now: Micros) -> Option<u32> {
        let key = self.key;
        let (flows, services) = (&self.flows, &self.services);
        let h = h.unwrap_or_else(|| h_rev(key, proto, backend, snat));
        let i = self.rev.find(h, |i| {
            let f = &flows[i as usize];
            f.service != NONE
                && f.proto == proto
                && f.snat == snat
                && services[f.service as usize].backends[f.backend as usize].ep == backend
        })?;
        if self.flows[i as usize].expires <= now {
            self.remove(i);
            return None;
        }
        Some(i)
    }

    fn remove(&mut self, i: u32) {
        let key = self.key;
        let f = self.flows[i as usize];
        let b = self.backend_ep(&f);
        let (flows, services) = (&self.flows, &self.services);
        let be = |j: u32| {
            let g = &flows[j as usize];
            services[g.service as usize].backends[g.backend as usize].ep
        };
        self.fwd.remove(h_fwd(key, f.proto, f.client, f.service), i, |j| {
            let g = &flows[j as usize];
            h_fwd(key, g.proto, g.client, g.service)
        });
        self.rev.remove(h_rev(key, f.proto, b, f.snat), i, |j| {
            h_rev(key, flows[j as usize].proto, be(j), flows[j as usize].snat)
        });
        let svc = &mut self.services[f.service as usize];
        svc.counters.active_flows -= 1;
        svc.backends[f.backend as usize].counters.active_flows -= 1;
        if svc.v6.is_some() {
            // The flow's claim on its IPv6 client's stand-in.
            self.clients.release(f.client.addr);
        }
        self.client_down(i);
        self.flows[i as usize].service = NONE;
        self.free.push(i);
        self.counters.flows_expired += 1;
    }

    fn next_rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// With the flow table full, frees an expired flow, else of the 64
    /// flows from the sweep cursor the evictable one nearest its idle
    /// timeout (the longest idle): a UDP flow, or a TCP flow whose
    /// handshake is incomplete or that is closing. Established TCP flows
    /// are never evicted for new ones; UDP has no handshake to tell a
    /// flood from a client, so without this one source's queries would
    /// hold the table for the UDP timeout.
    fn evict_idle(&mut self, now: Micros) {
        let n = self.flows.len();
        let mut best: Option<(Micros, usize)> = None;
        for _ in 0..64.min(n) {
            let i = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % n;
            let f = &self.flows[i];
            if f.service == NONE {
                continue;
            }
            if f.expires <= now {
                self.remove(i as u32);
                return;
            }
            if evictable(f) && best.is_none_or(|(e, _)| f.expires < e) {
                best = Some((f.expires, i));
            }
        }
        if let Some((_, i)) = best {
            self.remove(i as u32);
            self.counters.flows_evicted += 1;
        }
    }

    /// A full-NAT source endpoint unused towards `backend`.
    fn snat_port(
        &mut self,
        proto: u8,
        addr: Ipv4Addr,
        client_port: u16,
        backend: Endpoint,
        now: Micros,
    ) -> Option<Endpoint> {
        let (lo, hi) = SNAT_PORTS;
        if (lo..=hi).contains(&client_port)
            && self.find_rev(None, proto, backend, Endpoint::new(addr, client_port), now).is_none()
        {
            return Some(Endpoint::new(addr, client_port));
        }
        for _ in 0..64 {
            let p = lo + (self.next_rand() % (hi - lo + 1) as u64) as u16;
            if self.find_rev(None, proto, backend, Endpoint::new(addr, p), now).is_none() {
                return Some(Endpoint::new(addr, p));
            }
        }
        None
    }

    /// The flow key of a TCP or UDP packet (a first fragment), IPv4 or
    /// IPv6; `None` for anything else.
    fn key_of(&mut self, pkt: &Packet, now: Micros) -> Option<Key> {
        if crate::ipv6::is_ipv6(pkt.l3()) {
            return v6::key(self, pkt, now);
        }
        let p = parse(pkt.l3());
        if !p.first || !(p.proto == TCP || p.proto == UDP) {
            return None;
        }
        let (sport, dport, flags) = ports(&pkt.l3()[..p.total], p.ihl, p.proto)?;
        Some(Key {
            proto: p.proto,
            src: Endpoint::new(p.src, sport),
            dst: Endpoint::new(p.dst, dport),
            flags,
            l4: p.ihl as u16,
            total: p.total as u16,
            v6: false,
        })
    }

    /// Writes `dst` and `src` (flow-table endpoints) into the packet.
    fn rewrite(&self, pkt: &mut Packet, k: &Key, dst: Option<Endpoint>, src: Option<Endpoint>) {
        if k.v6 {
            return v6::rewrite(self, pkt, k, dst, src);
        }
        let (l4, proto) = (k.l4 as usize, k.proto);
        let ip = &mut pkt.l3_mut()[..k.total as usize];
        if let Some(d) = dst {
            set_addr(ip, 16, d.addr, Some(l4), proto);
            set_port(ip, l4 + 2, d.port, l4, proto);
        }
        if let Some(s) = src {
            set_addr(ip, 12, s.addr, Some(l4), proto);
            set_port(ip, l4, s.port, l4, proto);
        }
    }

    /// A packet to a service's VIP: to its flow's backend, or a new one.
    fn forward_to_backend(
        &mut self,
        pkt: &mut Packet,
        si: u16,
        h: Option<u64>,
        k: &Key,
        now: Micros,
    ) -> Result<(), DropReason> {
        let key = self.key;
        let (sport, flags, total) = (k.src.port, k.flags, k.total as usize);
        let (mut client, h) = v6::client_of(self, pkt, k, h);
        let p_proto = k.proto;
        let mut flow = self.find_fwd(h, p_proto, client, si, now);
        if let Some(i) = flow {
            let f = self.flows[i as usize];
            let syn = flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
            if p_proto == TCP && syn && crate::flow::is_closed(f.tcp) {
                // A new connection on an old tuple: it owes the old flow
                // nothing, and is scheduled by today's mode and weights.
                self.remove(i);
                self.counters.flows_restarted += 1;
                flow = None;
            } else if !self.services[si as usize].backends[f.backend as usize].healthy {
                // Its backend left the table: only such flows move.
                self.remove(i);
                self.counters.flows_moved += 1;
                flow = None;
            }
        }
        let i = match flow {
            Some(i) => i,
            None => {
                let svc = &self.services[si as usize];
                let hash = if k.v6 { v6::maglev_hash(pkt, k) } else { flow_hash(p_proto, client, k.dst) };
                let Some(b) = svc.table.lookup(hash) else {
                    return Err(DropReason::LbNoBackend);
                };
                if self.flows_of(client.addr) >= self.client_quota && !self.evict_own(client.addr, now) {
                    self.counters.refused_client_quota += 1;
                    return Err(DropReason::LbClientQuota);
                }
                let svc = &self.services[si as usize];
                let backend = svc.backends[b].ep;
                let (mode, snat_addr) = (svc.mode, svc.snat);
                let snat = match mode {
                    LbMode::Dnat => client,
                    LbMode::FullNat => {
                        self.snat_port(p_proto, snat_addr, sport, backend, now).ok_or(DropReason::LbFlowTableFull)?
                    }
                };
                if self.free.is_empty() {
                    self.evict_idle(now);
                }
                let Some(i) = self.free.pop() else {
                    self.counters.table_full += 1;
                    return Err(DropReason::LbFlowTableFull);
                };
                // An IPv6 client's stand-in: claimed by the flow, now that
                // there is one (and after an eviction that may have freed it).
                if k.v6 {
                    client = v6::claim_client(self, pkt, client).inspect_err(|_| self.free.push(i))?;
                }
                let snat = if mode == LbMode::Dnat { client } else { snat };
                self.flows[i as usize] = Flow {
                    proto: p_proto,
                    service: si,
                    backend: b as u16,
                    client,
                    snat,
                    expires: 0,
                    tcp: 0,
                    links: (NIL, NIL),
                };
                self.fwd.insert(h_fwd(key, p_proto, client, si), i);
                self.rev.insert(h_rev(key, p_proto, backend, snat), i);
                self.client_up(client.addr);
                self.counters.flows_created += 1;
                let svc = &mut self.services[si as usize];
                svc.counters.new_flows += 1;
                svc.counters.active_flows += 1;
                let bc = &mut svc.backends[b].counters;
                bc.new_flows += 1;
                bc.active_flows += 1;
                i
            }
        };
        let t = self.timeouts;
        let f = &mut self.flows[i as usize];
        f.expires = now + idle_timeout(&t, &mut f.tcp, p_proto, flags, true);
        let f = *f;
        self.relist(i);
        let svc = &mut self.services[si as usize];
        let backend = &mut svc.backends[f.backend as usize];
        svc.counters.packets += 1;
        svc.counters.bytes += total as u64;
        backend.counters.packets += 1;
        backend.counters.bytes += total as u64;
        let be = backend.ep;
        self.rewrite(pkt, k, Some(be), (f.snat != f.client).then_some(f.snat));
        pkt.meta.local = false;
        Ok(())
    }

    /// A reply from a backend: back to the client from the VIP. `Ok(false)`
    /// if the packet is not one.
    fn reply_from_backend(&mut self, pkt: &mut Packet, h: Option<u64>, k: &Key, now: Micros) -> bool {
        let Some(i) = self.find_rev(h, k.proto, k.src, k.dst, now) else {
            return false;
        };
        let t = self.timeouts;
        let f = &mut self.flows[i as usize];
        f.expires = now + idle_timeout(&t, &mut f.tcp, k.proto, k.flags, false);
        let f = *f;
        self.relist(i);
        let svc = &mut self.services[f.service as usize];
        let vip = svc.vip;
        svc.counters.packets += 1;
        svc.counters.bytes += k.total as u64;
        let bc = &mut svc.backends[f.backend as usize].counters;
        bc.packets += 1;
        bc.bytes += k.total as u64;
        self.rewrite(pkt, k, (f.snat != f.client).then_some(f.client), Some(vip));
        pkt.meta.local = false;
        true
    }

    /// No backend is up: TCP gets a reset, UDP an ICMP port unreachable,
    /// both from the VIP; the router sends them back.
    fn refuse(&mut self, pkt: Packet, si: u16, cx: &mut StageContext<'_>) -> Option<Packet> {
        let in_port = pkt.meta.in_port;
        cx.count_drop(in_port, DropReason::LbNoBackend);
        self.counters.no_backend += 1;
        let svc = &mut self.services[si as usize];
        svc.counters.no_backend += 1;
        let vip = svc.vip.addr;
        let (tcp, v6) = (svc.proto == TCP, svc.v6);
        let allowed = match v6 {
            Some(_) => self.refusals.take6(crate::ipv6::src(pkt.l3()), cx.now),
            None => self.refusals.take(smoltcp::wire::Ipv4Packet::new_unchecked(pkt.l3()).src_addr(), cx.now),
        };
        if !allowed {
            self.counters.refusals_rate_limited += 1;
            cx.pool.free(pkt);
            return None;
        }
        if let Some((vip6, _)) = v6 {
            return v6::refuse(pkt, vip6, tcp, cx);
        }
        let svc = &self.services[si as usize];
        // The answer is a new small packet in this buffer.
        self.ident = self.ident.wrapping_add(1);
        crate::icmp::refuse(pkt, cx.pool, svc.proto == TCP, IcmpError::PortUnreachable, Some(vip), self.ident)
    }

    fn service_for(&self, proto: u8, dst: Ipv4Addr, dport: u16) -> Option<u16> {
        self.services
            .iter()
            .position(|s| s.proto == proto && s.vip.addr == dst && s.vip.port == dport)
            .map(|i| i as u16)
    }
}

impl Stage for Lb {
    /// Three passes, as the NAT's: find each packet's service and hash its
    /// flow key, prefetching the index slot; prefetch the candidate flow
    /// records; forward. A million flows' misses then overlap.
    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        let key = self.key;
        // Per packet: (service if to a VIP, flow hash) for TCP/UDP first fragments.
        let mut pre = [None; BURST];
        for (slot, pkt) in pre.iter_mut().zip(batch.iter()) {
            let Some(k) = self.key_of(pkt, cx.now) else { continue };
            *slot = Some(match self.service_for(k.proto, k.dst.addr, k.dst.port) {
                Some(si) => {
                    let h = h_fwd(key, k.proto, k.src, si);
                    self.fwd.prefetch(h);
                    (Some(si), h, k)
                }
                None => {
                    let h = h_rev(key, k.proto, k.src, k.dst);
                    self.rev.prefetch(h);
                    (None, h, k)
                }
            });
        }
        for &(si, h, _) in pre.iter().flatten() {
            let index = if si.is_some() { &self.fwd } else { &self.rev };
            if let Some(f) = index.candidate(h).and_then(|c| self.flows.get(c as usize)) {
                prefetch::prefetch(f);
            }
        }
        let mut pre = pre.into_iter();
        for_each_packet(batch, |mut pkt| {
            let Some((to_vip, h, k)) = pre.next().flatten() else { return Some(pkt) };
            match to_vip {
                Some(si) => match self.forward_to_backend(&mut pkt, si, Some(h), &k, cx.now) {
                    Ok(()) => Some(pkt),
                    Err(DropReason::LbNoBackend) => self.refuse(pkt, si, cx),
                    Err(reason) => {
                        cx.drop(pkt, reason);
                        None
                    }
                },
                None => {
                    self.reply_from_backend(&mut pkt, Some(h), &k, cx.now);
                    Some(pkt)
                }
            }
        });
    }

    fn reconfigure(&mut self, settings: &dyn Any) -> bool {
        settings.downcast_ref::<LbConfig>().is_some_and(|c| Lb::reconfigure(self, c))
    }

    /// IPv6 services are balanced like IPv4 ones (see [`v6`]).
    fn ipv6(&self) -> crate::stage::Ipv6Handling {
        crate::stage::Ipv6Handling::Process
    }

    fn poll(&mut self, cx: &mut StageContext<'_>) {
        for (port, h) in self.orphans.drain(..) {
            if let Some(host) = cx.host(port) {
                host.tcp_close(h);
            }
        }
        // Expired flows, a few per turn.
        for _ in 0..SWEEP_PER_POLL.min(self.flows.len()) {
            let i = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % self.flows.len();
            if self.flows[i].service != NONE && self.flows[i].expires <= cx.now {
                self.remove(i as u32);
            }
        }
        // Health checks; a changed state rebuilds that service's table.
        let size = self.table_size;
        for (si, svc) in self.services.iter_mut().enumerate() {
            if svc.check == CheckKind::None {
                continue;
            }
            let mut changed = false;
            for (bi, b) in svc.backends.iter_mut().enumerate() {
                // Each backend's checks walk their own 256 source ports.
                let slot = (si * 64 + bi) % ((HEALTH_PORTS.1 - HEALTH_PORTS.0) as usize / 256 + 1);
                let local_base = HEALTH_PORTS.0 + slot as u16 * 256;
                let Some(ok) = b.health.step(
                    cx,
                    &svc.check,
                    (b.real, svc.check_port.unwrap_or(b.ep.port)),
                    b.via_port,
                    local_base,
                    svc.interval,
                    svc.timeout,
                ) else {
                    continue;
                };
                let flip = if ok {
                    !b.healthy && b.health.successes >= svc.rise
                } else {
                    b.healthy && b.health.failures >= svc.fall
                };
                if flip {
                    b.healthy = ok;
                    b.counters.transitions += 1;
                    changed = true;
                    cx.note(alloc::format!(
                        "{}: backend {} {}",
                        svc.name,
                        v6::show_ep(b.real, b.ep.port),
                        if ok { "up" } else { "down" }
                    ));
                }
            }
            if changed {
                svc.rebuild(size);
            }
        }
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        let c = &self.counters;
        sink.gauge("flows", "flows in the table", self.flows() as u64);
        sink.gauge("flow_capacity", "flows the table holds", self.flows.len() as u64);
        sink.counter("flows_created", "flows created", c.flows_created);
        sink.counter("flows_expired", "flows removed after their idle timeout", c.flows_expired);
        sink.counter("flows_moved", "flows moved off a backend that went down", c.flows_moved);
        sink.counter("flow_table_full", "new flows refused: the table was full", c.table_full);
        sink.counter("no_backend", "packets to a service with no healthy backend", c.no_backend);
        sink.counter("flows_evicted", "transitory TCP or idle UDP flows evicted for a new one", c.flows_evicted);
        sink.counter(
            "refused_client_quota",
            "new flows refused: the client held its quota (client-flows)",
            c.refused_client_quota,
        );
        sink.counter(
            "flows_backend_removed",
            "flows ended because a reload removed their backend",
            c.flows_backend_removed,
        );
        sink.counter(
            "flows_restarted",
            "flows a client's SYN on their closed tuple replaced with a new one",
            c.flows_restarted,
        );
        sink.counter("maglev_rebuilds", "Maglev tables rebuilt", c.maglev_rebuilds);
        sink.counter(
            "refusals_rate_limited",
            "ICMP refusals not sent: the client's rate was used up",
            c.refusals_rate_limited,
        );
    }

    /// `show backends`: per service and backend, health, weight, flows,
    /// the check and the port it connects to, checks.
    fn show(&self, what: &str, query: &[(&str, &str)], now: Micros, out: &mut String) -> bool {
        use core::fmt::Write as _;
        if what == "flows" {
            self.show_flows(query, now, out);
            return true;
        }
        if what != "backends" {
            return false;
        }
        let _ = writeln!(
            out,
            "{:<12} {:<21} {:<21} {:<8} {:>6} {:>8} {:<10} {:>9} {:>9}",
            "service", "vip", "backend", "health", "weight", "flows", "check", "checks_ok", "failed"
        );
        for s in &self.services {
            for b in &s.backends {
                let check = match &s.check {
                    CheckKind::None => String::from("none"),
                    CheckKind::Tcp => alloc::format!("tcp:{}", s.check_port.unwrap_or(b.ep.port)),
                    CheckKind::Http(_) => alloc::format!("http:{}", s.check_port.unwrap_or(b.ep.port)),
                };
                let _ = writeln!(
                    out,
                    "{:<12} {:<21} {:<21} {:<8} {:>6} {:>8} {:<10} {:>9} {:>9}",
                    s.name,
                    v6::show_ep(s.vip_real(), s.vip.port),
                    v6::show_ep(b.real, b.ep.port),
                    if b.healthy { "up" } else { "down" },
                    b.weight,
                    b.counters.active_flows,
                    check,
                    b.health.total_ok,
                    b.health.total_failed
                );
            }
        }
        true
    }

    fn report_details(&self, sink: &mut dyn StatsSink) {
        self.report_services(sink)
    }
}

/// Flow slots one `show flows` request looks at, at most: a full million-
/// flow table is paged through with `offset`, never scanned at once.
const SHOW_SCAN: usize = 65_536;

impl Lb {
    /// `show flows`: the live flows (client, VIP, backend, the source the
    /// backend sees, seconds left), filtered by `service=` and `addr=` (the
    /// client's), paged by `offset=` (a slot) and `limit=`.
    fn show_flows(&self, query: &[(&str, &str)], now: Micros, out: &mut String) {
        use core::fmt::Write as _;
        let q = |k: &str| query.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let offset = q("offset").and_then(|v| v.parse().ok()).unwrap_or(0usize);
        let limit = q("limit").and_then(|v| v.parse().ok()).unwrap_or(100usize).clamp(1, 1000);
        let service = q("service");
        let addr: Option<core::net::Ipv4Addr> = q("addr").and_then(|v| v.parse().ok());
        let _ = writeln!(
            out,
            "{:<5} {:<12} {:<21} {:<21} {:<21} {:<21} {:>8}",
            "proto", "service", "client", "vip", "backend", "source_seen", "left_s"
        );
        let end = offset.saturating_add(SHOW_SCAN).min(self.flows.len());
        let mut shown = 0;
        let mut next = None;
        for i in offset.min(end)..end {
            let f = &self.flows[i];
            if f.service == NONE || f.expires <= now {
                continue;
            }
            let Some(s) = self.services.get(f.service as usize) else { continue };
            let Some(b) = s.backends.get(f.backend as usize) else { continue };
            if service.is_some_and(|n| n != s.name) || addr.is_some_and(|a| a != f.client.addr) {
                continue;
            }
            if shown == limit {
                next = Some(i);
                break;
            }
            shown += 1;
            let proto = match f.proto {
                6 => "tcp",
                17 => "udp",
                _ => "ip",
            };
            let ep = |e: &Endpoint| v6::show_ep(self.real_of(e.addr), e.port);
            let _ = writeln!(
                out,
                "{:<5} {:<12} {:<21} {:<21} {:<21} {:<21} {:>8}",
                proto,
                s.name,
                ep(&f.client),
                v6::show_ep(s.vip_real(), s.vip.port),
                v6::show_ep(b.real, b.ep.port),
                ep(&f.snat),
                (f.expires - now) / 1_000_000
            );
        }
        match next {
            Some(i) => {
                let _ = writeln!(out, "… more: offset={i}");
            }
            None if end < self.flows.len() => {
                let _ = writeln!(out, "… slots {end}.. not looked at: offset={end}");
            }
            None => {}
        }
    }

    fn report_services(&self, sink: &mut dyn StatsSink) {
        for s in &self.services {
            let c = &s.counters;
            let up = s.backends.iter().filter(|b| b.healthy).count();
            sink.object("lb_service", &[("service", &s.name)]);
            sink.text("vip", &v6::show_ep(s.vip_real(), s.vip.port));
            sink.text("proto", if s.proto == TCP { "tcp" } else { "udp" });
            sink.counter("new_flows", "flows the service began", c.new_flows);
            sink.gauge("active_flows", "flows of the service in the table", c.active_flows);
            sink.counter("packets", "packets to the service", c.packets);
            sink.counter("bytes", "bytes to the service", c.bytes);
            sink.counter("no_backend", "packets the service had no healthy backend for", c.no_backend);
            sink.gauge("backends_up", "backends passing their checks", up as u64);
            for b in &s.backends {
                let bc = &b.counters;
                let ep = v6::show_ep(b.real, b.ep.port);
                sink.object("lb_backend", &[("service", &s.name), ("backend", &ep)]);
                sink.gauge("healthy", "1 if the backend passes its checks", b.healthy as u64);
                sink.gauge("weight", "the backend's Maglev weight", b.weight as u64);
                sink.counter("new_flows", "flows the backend was given", bc.new_flows);
                sink.gauge("active_flows", "flows on the backend", bc.active_flows);
                sink.counter("packets", "packets to the backend", bc.packets);
                sink.counter("bytes", "bytes to the backend", bc.bytes);
                sink.counter("transitions", "health state changes", bc.transitions);
                sink.counter("checks_ok", "health checks passed", b.health.total_ok);
                sink.counter("checks_failed", "health checks failed", b.health.total_failed);
            }
        }
    }
}

/// The load balancer's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "lb", statements: &["service", "lb"], parse: config::parse, build };

fn build(c: &dyn StageConfig, cx: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<LbConfig>().expect("the lb builds from its own settings");
    Box::new(Lb::from_config(c, cx.seed))
}

#[cfg(test)]
mod tests;
