//! The dataplane: ports, their counters and host stacks, the ingress check
//! every received packet goes through, and the pipelines of stages.
//!
//! Ingress decides, per packet: drop it (malformed, not for us: a named
//! reason), hand it to the appliance's own host stack (ARP, and IPv4 to one
//! of the appliance's addresses), or pass it to the input port's pipeline.
//! ARP is shown to every stage on its way to the host stack (the router
//! learns neighbours from it).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet,
};

use crate::config::{self, Config, StageKind};
use crate::counters::{DropReason, PortCounters};
use crate::egress::Egress;
use crate::hoststack::{HostStack, TxQueue};
use crate::lb::Lb;
use crate::mgmt::{Management, Request, Response};
use crate::nat::Nat;
use crate::packet::{Batch, PacketPool, PortId};
use crate::router::Router;
use crate::stage::{Stage, StageContext, StageCounters};
use crate::Micros;

/// Something an operator wants in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A `PUT /config`: applied, or refused with the reason.
    Reloaded {
        ok: bool,
        why: String,
    },
    Backend {
        service: String,
        backend: String,
        up: bool,
    },
}

/// What ingress decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// ARP: the egress learns from it, the host stack answers it.
    Arp,
    /// IPv4 to one of the appliance's addresses (or a broadcast).
    Local,
    /// IPv4 to be routed: for the input port's pipeline.
    Pipeline,
    Drop(DropReason),
}

/// One port: identity, counters, host stack and transmit queue.
pub struct Port {
    pub name: String,
    pub mac: [u8; 6],
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
    pub counters: PortCounters,
    pub host: HostStack,
    pub tx: TxQueue,
    /// The port's NIC completes partial checksums and cuts TCP
    /// super-packets on transmit (set by whoever binds the NIC).
    pub offloads: bool,
    /// The NIC driver's own counters (kicks, bursts, large frames…), as
    /// its owner last copied them in; shown on the `nic` line and in
    /// `/metrics`.
    pub nic_counters: DriverCounters,
}

/// Named counters a NIC driver or the poll loop keeps, copied into the
/// dataplane so that `stats` and `/metrics` show them (vnfs knows no driver).
pub type DriverCounters = heapless::Vec<(&'static str, u64), 16>;

/// How often the host stacks run when nothing arrives for them (ARP cache
/// and, later, TCP timers).
const HOST_POLL_INTERVAL: Micros = 100_000;
/// The same while the host stack has connections open (health checks).
const HOST_POLL_INTERVAL_BUSY: Micros = 2_000;

/// Heap a reload leaves free beyond the new tables.
const RELOAD_RESERVE: usize = 256 << 10;

pub struct Dataplane {
    /// The poll loop's own counters (busy turns, cycles per packet…), as
    /// the kernel last copied them in.
    pub loop_counters: DriverCounters,
    /// Tells how much heap is free (the kernel sets it), so a reload that
    /// asks for larger tables than the RAM holds is refused, not fatal.
    free_memory: Option<fn() -> usize>,
    ports: Vec<Port>,
    stages: Vec<(StageKind, Box<dyn Stage>)>,
    stage_counters: Vec<StageCounters>,
    /// Per input port: indices into `stages`, in order.
    pipelines: Vec<Vec<usize>>,
    /// Every address of the appliance (ports' first, the order host stacks
    /// take them in) and the same sorted, for the per-packet test.
    local: Vec<Ipv4Addr>,
    local_sorted: Vec<Ipv4Addr>,
    egress: Egress,
    last_host_poll: Micros,
    /// The config running now, its text and where the text came from.
    config: Config,
    config_text: String,
    seed: u64,
    /// The management endpoint and the port it serves on.
    mgmt: Option<(usize, Management)>,
    /// Per port: the port a wire sends its frames to.
    wires: Vec<Option<PortId>>,
    reloads: u64,
    events: crate::stage::Events,
    /// The management bearer token (from fw_cfg, never from the config
    /// text, never printed).
    mgmt_token: Option<Vec<u8>>,
    /// Where the running config came from, for `/health`.
    config_origin: String,
    /// The management endpoint's counters as of its last poll (`stats`).
    mgmt_counters: crate::mgmt::MgmtCounters,
    /// Reads the clock (the kernel sets it): reloads are timed with it.
    clock: Option<fn() -> Micros>,
    /// How long the last reload took, parse to tables (µs).
    last_reload_us: Option<Micros>,
    /// Per port: source prefixes the reverse-path check refuses there.
    rpf: Vec<Vec<Ipv4Net>>,
}

/// Per port, the source prefixes its reverse-path check refuses (see
/// [`config::Rpf`]): a handful, scanned per packet.
fn rpf_of(config: &Config, local: &[Ipv4Addr]) -> Vec<Vec<Ipv4Net>> {
    let mgmt = config.management.as_ref().map(|m| m.port);
    let own = || local.iter().map(|a| Ipv4Net::new(*a, 32).expect("a /32 is valid"));
    config
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v: Vec<Ipv4Net> = match p.rpf.unwrap_or(config::Rpf::Loose) {
                config::Rpf::Off => Vec::new(),
                config::Rpf::Loose => {
                    let m = mgmt.filter(|m| *m != i).and_then(|m| config.ports[m].address).map(|a| a.trunc());
                    own().chain(m).collect()
                }
                config::Rpf::Strict => config
                    .ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter_map(|(_, q)| q.address.map(|a| a.trunc()))
                    .chain(own())
                    .collect(),
            };
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect()
}

/// The appliance's addresses: its ports', the NAT pool and the VIPs (so ARP
/// and ping work for them).
fn local_addresses(config: &Config) -> Vec<Ipv4Addr> {
    let mut local: Vec<Ipv4Addr> = config.ports.iter().filter_map(|p| p.ip()).collect();
    for a in config.nat.iter().flat_map(|n| &n.pool).chain(config.services.iter().map(|s| &s.vip)) {
        if !local.contains(a) {
            local.push(*a);
        }
    }
    local
}

fn sorted(v: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

fn wires_of(config: &Config) -> Vec<Option<PortId>> {
    let mut w = alloc::vec![None; config.ports.len()];
    for &(a, b) in &config.wires {
        w[a] = Some(b as PortId);
        w[b] = Some(a as PortId);
    }
    w
}

type StageSet = (Vec<(StageKind, Box<dyn Stage>)>, Vec<StageCounters>, Vec<Vec<usize>>);

/// Builds the stages and pipelines of `config`, taking over `keep` stages
/// (with their state and counters) where their part of the config did not
/// change.
fn build_stages(
    config: &Config,
    macs: &[[u8; 6]],
    seed: u64,
    mut keep: Vec<(StageKind, Box<dyn Stage>, StageCounters)>,
) -> StageSet {
    let mut stages: Vec<(StageKind, Box<dyn Stage>)> = Vec::new();
    let mut counters = Vec::new();
    let mut pipelines = Vec::new();
    for p in &config.pipelines {
        let mut ids = Vec::new();
        for kind in p {
            let id = match stages.iter().position(|(k, _)| k == kind) {
                Some(id) => id,
                None => {
                    let (stage, c) = match keep.iter().position(|(k, _, _)| k == kind) {
                        Some(i) => {
                            let (_, s, c) = keep.swap_remove(i);
                            (s, c)
                        }
                        None => (
                            match kind {
                                StageKind::Router => {
                                    Box::new(Router::from_config(config, macs, seed)) as Box<dyn Stage>
                                }
                                StageKind::Nat => Box::new(Nat::from_config(config, seed)),
                                StageKind::Lb => Box::new(Lb::from_config(config, seed)),
                            },
                            StageCounters::default(),
                        ),
                    };
                    stages.push((*kind, stage));
                    counters.push(c);
                    stages.len() - 1
                }
            };
            ids.push(id);
        }
        pipelines.push(ids);
    }
    (stages, counters, pipelines)
}

impl Dataplane {
    /// Builds ports and stages from `config`; `macs[i]` is port `i`'s MAC.
    pub fn new(config: &Config, macs: &[[u8; 6]], now: Micros, seed: u64) -> Self {
        let local = local_addresses(config);
        let default_gw = |port: usize| {
            config.routes.iter().find(|r| r.prefix.prefix_len() == 0 && r.port == port).and_then(|r| r.via)
        };
        let mut ports: Vec<Port> = config
            .ports
            .iter()
            .zip(macs)
            .enumerate()
            .map(|(i, (pc, mac))| Port {
                name: pc.name.clone(),
                mac: *mac,
                address: pc.address,
                mtu: pc.mtu,
                counters: PortCounters::default(),
                host: HostStack::new(*mac, pc.address, &local, default_gw(i), pc.mtu, now, seed ^ i as u64),
                tx: TxQueue::new(),
                offloads: false,
                nic_counters: DriverCounters::new(),
            })
            .collect();
        let (stages, stage_counters, pipelines) = build_stages(config, macs, seed, Vec::new());
        let mgmt = config.management.as_ref().map(|m| (m.port, Management::new(&mut ports[m.port].host, m.listen)));
        Dataplane {
            loop_counters: DriverCounters::new(),
            free_memory: None,
            ports,
            stage_counters,
            stages,
            pipelines,
            local_sorted: sorted(&local),
            local,
            egress: Egress::new(config.router.neighbors, config.router.arp_timeout as Micros * 1_000_000),
            last_host_poll: now,
            config: config.clone(),
            config_text: String::new(),
            seed,
            mgmt,
            wires: wires_of(config),
            reloads: 0,
            events: crate::stage::Events::new(),
            mgmt_token: None,
            config_origin: String::from("boot"),
            mgmt_counters: Default::default(),
            clock: None,
            last_reload_us: None,
            rpf: rpf_of(config, &local_addresses(config)),
        }
    }

    /// Sets the bearer token every management request but `/health` (and
    /// `/metrics` with `metrics open`) must carry. Without one, the
    /// endpoint answers reads and refuses reloads.
    pub fn set_management_token(&mut self, token: Option<&[u8]>) {
        self.mgmt_token = token.map(|t| t.to_vec());
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= crate::stage::MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The oldest event not yet taken.
    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Records the text the running config came from (served by GET /config).
    pub fn set_config_text(&mut self, text: &str) {
        self.config_text = text.into();
    }

    /// Gives the dataplane a clock, so reloads report how long forwarding
    /// waited for them.
    pub fn set_clock(&mut self, clock: fn() -> Micros) {
        self.clock = Some(clock);
    }

    /// Records where the boot config came from (fw_cfg, the command line,
    /// the embedded default), for `/health`.
    pub fn set_config_origin(&mut self, origin: &str) {
        self.config_origin = alloc::format!("boot ({origin})");
    }

    /// Replaces the running config with `text`, between bursts. Ports and
    /// the management endpoint cannot change while running. Stages whose
    /// part of the config is unchanged keep their state (NAT sessions, LB
    /// flows), so established connections survive a reload that touches
    /// only routes, say. On error nothing changes and the errors come back
    /// as `NAME:line:column: reason` lines.
    pub fn reload(&mut self, name: &str, text: &str, pool: &mut PacketPool) -> Result<(), String> {
        let new = config::parse(text).map_err(|errors| {
            let mut s = String::new();
            for e in errors {
                let _ = writeln!(s, "{}", e.display(name));
            }
            s
        })?;
        if new.ports != self.config.ports {
            return Err(alloc::format!("{name}: ports cannot change while running; boot with the new config\n"));
        }
        if new.management != self.config.management {
            return Err(alloc::format!("{name}: the management endpoint cannot change while running\n"));
        }
        if let Some(m) = &new.management {
            if new.pipelines[m.port] != self.config.pipelines[m.port] {
                return Err(alloc::format!("{name}: the management port's pipeline cannot change\n"));
            }
        }
        if new.wires != self.config.wires {
            return Err(alloc::format!("{name}: wires cannot change while running\n"));
        }
        let old = &self.config;
        let unchanged = |k: StageKind| match k {
            StageKind::Router => false,
            StageKind::Nat => new.nat == old.nat,
            StageKind::Lb => new.services == old.services && new.lb == old.lb,
        };
        if let Some(free) = self.free_memory {
            // Rebuilt tables replace the old ones: refuse before touching
            // anything if the RAM cannot hold the new ones.
            // The router is always rebuilt; its old table goes once the
            // new one stands, so both are counted.
            let routes = new.router_table_bytes();
            let (mut need, mut freed) = (routes, 0);
            if new.router.neighbors != old.router.neighbors {
                need += new.neighbor_table_bytes();
                freed += old.neighbor_table_bytes();
            }
            if !unchanged(StageKind::Nat) {
                need += new.nat_table_bytes();
                freed += old.nat_table_bytes();
            }
            if !unchanged(StageKind::Lb) {
                need += new.lb_table_bytes();
                freed += old.lb_table_bytes();
            }
            let available = (free() + freed).saturating_sub(RELOAD_RESERVE);
            if need > available {
                return Err(alloc::format!(
                    "{name}: the new tables need {} KiB (routes {} KiB, neighbours {} KiB, nat {} KiB, lb {} KiB) \
                     but {} KiB of RAM is free; the running config stays\n",
                    need / 1024,
                    routes / 1024,
                    new.neighbor_table_bytes() / 1024,
                    new.nat_table_bytes() / 1024,
                    new.lb_table_bytes() / 1024,
                    available / 1024
                ));
            }
        }
        let mut keep = Vec::new();
        let stages = core::mem::take(&mut self.stages);
        let counters = core::mem::take(&mut self.stage_counters);
        for ((kind, mut stage), c) in stages.into_iter().zip(counters) {
            if unchanged(kind) || kind == StageKind::Lb && !new.services.is_empty() && stage.reconfigure(&new) {
                keep.push((kind, stage, c));
            } else {
                stage.drain(pool);
            }
        }
        let macs: Vec<[u8; 6]> = self.ports.iter().map(|p| p.mac).collect();
        let (stages, counters, pipelines) = build_stages(&new, &macs, self.seed, keep);
        if new.router.neighbors != old.router.neighbors || new.router.arp_timeout != old.router.arp_timeout {
            self.egress.drain(pool);
            self.egress = Egress::new(new.router.neighbors, new.router.arp_timeout as Micros * 1_000_000);
        }
        let local = local_addresses(&new);
        if local != self.local {
            // smoltcp flushes its neighbour cache when its addresses change,
            // which stalls the health checks in flight: only when needed.
            for p in &mut self.ports {
                p.host.set_also(&local);
            }
        }
        self.local = local;
        self.local_sorted = sorted(&self.local);
        self.rpf = rpf_of(&new, &self.local);
        self.stages = stages;
        self.stage_counters = counters;
        self.pipelines = pipelines;
        self.config = new;
        self.config_text = text.into();
        self.reloads += 1;
        Ok(())
    }

    /// Answers a management request as the endpoint would (for tests and
    /// the fuzzer; the endpoint itself calls this from `poll`).
    pub fn handle_request(&mut self, req: &Request, pool: &mut PacketPool) -> Response {
        let mut c = self.mgmt_counters.clone();
        let r = self.answer(req, pool, &mut c);
        self.mgmt_counters = c;
        r
    }

    /// Answers a management request.
    fn answer(&mut self, req: &Request, pool: &mut PacketPool, counters: &mut crate::mgmt::MgmtCounters) -> Response {
        let open = match req.path.as_str() {
            "/health" => true,
            "/metrics" => self.config.management.as_ref().is_some_and(|m| m.metrics_open),
            _ => false,
        };
        match &self.mgmt_token {
            Some(token) if !open => {
                let ok = req.bearer.as_ref().is_some_and(|b| crate::mgmt::token_matches(b.as_bytes(), token));
                if !ok {
                    counters.unauthorized += 1;
                    return Response::text(401, "this endpoint needs `Authorization: Bearer TOKEN`\n");
                }
            }
            None if req.method != "GET" => {
                counters.unauthorized += 1;
                return Response::text(
                    403,
                    "reloads need a management token: add `token-file PATH` to the `management` statement \
                     (the token reaches the image through fw_cfg opt/sluice/token)\n",
                );
            }
            _ => {}
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                let mut s = String::new();
                let _ = self.write_metrics(&mut s, pool);
                Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body: s.into_bytes() }
            }
            ("GET", "/health") => Response::text(
                200,
                alloc::format!(
                    "ok\nconfig: {} ({} reloads)\n{}",
                    self.config_origin,
                    self.reloads,
                    self.last_reload_us.map(|us| alloc::format!("last reload: {us} us\n")).unwrap_or_default()
                ),
            ),
            ("GET", "/config") => Response::text(200, self.config_text.clone()),
            ("PUT", "/config") => match core::str::from_utf8(&req.body) {
                Err(_) => Response::text(400, "config is not UTF-8\n"),
                Ok(text) => {
                    let t0 = self.clock.map(|c| c());
                    let result = self.reload("PUT /config", text, pool);
                    if let (Some(c), Some(t0)) = (self.clock, t0) {
                        self.last_reload_us = Some(c().saturating_sub(t0));
                    }
                    let why = result.as_ref().err().and_then(|e| e.lines().next()).unwrap_or("").into();
                    self.push_event(Event::Reloaded { ok: result.is_ok(), why });
                    match result {
                        Ok(()) => {
                            self.config_origin = alloc::format!("PUT /config, reload {}", self.reloads);
                            Response::text(
                                200,
                                "config applied; it lasts until the appliance restarts (the boot config \
                                 comes from fw_cfg, the command line or the image)\n",
                            )
                        }
                        Err(e) => Response::text(400, e),
                    }
                }
            },
            (_, "/metrics" | "/health" | "/config") => Response::text(405, "method not allowed\n"),
            _ => Response::text(404, "not found: try /metrics, /health, /config\n"),
        }
    }

    /// Writes every counter in the Prometheus text exposition format. The
    /// same counters as `write_stats`, one family per key.
    pub fn write_metrics(&self, w: &mut dyn fmt::Write, pool: &PacketPool) -> fmt::Result {
        let mut stats = String::new();
        self.write_stats(&mut stats)?;
        // family name -> (type, samples)
        let mut families: Vec<(String, &'static str, Vec<String>)> = Vec::new();
        let mut add = |name: String, kind: &'static str, labels: String, value: &str| {
            let sample = alloc::format!("{name}{{{labels}}} {value}");
            match families.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, _, v)) => v.push(sample),
                None => families.push((name, kind, alloc::vec![sample])),
            }
        };
        for line in stats.lines() {
            let mut words = line.split_whitespace();
            let (prefix, label_key) = match words.next() {
                Some("stats") => ("sluice_port", "port"),
                Some("stage") => ("sluice_stage", "stage"),
                Some("egress") => ("sluice_egress", "egress"),
                Some("nic") => ("sluice_nic", "port"),
                Some("loop") => ("sluice_loop", "loop"),
                Some("mgmt") => ("sluice_mgmt", "endpoint"),
                Some("lb-service") => ("sluice_lb_service", "service"),
                Some("lb-backend") => ("sluice_lb_backend", "backend"),
                _ => continue,
            };
            let pairs: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
            let Some((_, name)) = pairs.iter().find(|(k, _)| *k == "port" || *k == "name") else { continue };
            let labels = match (prefix, name.split_once('/')) {
                ("sluice_lb_backend", Some((svc, be))) => alloc::format!("service=\"{svc}\",backend=\"{be}\""),
                _ => alloc::format!("{label_key}=\"{name}\""),
            };
            for (k, v) in &pairs {
                if *k == "port" || *k == "name" || v.parse::<u64>().is_err() {
                    continue;
                }
                if let Some(reason) = k.strip_prefix("drop_") {
                    add(
                        alloc::format!("{prefix}_drops_total"),
                        "counter",
                        alloc::format!("{labels},reason=\"{reason}\""),
                        v,
                    );
                } else if is_gauge(k) {
                    add(alloc::format!("{prefix}_{k}"), "gauge", labels.clone(), v);
                } else {
                    add(alloc::format!("{prefix}_{k}_total"), "counter", labels.clone(), v);
                }
            }
        }
        add("sluice_pool_buffers_available".into(), "gauge", String::new(), &alloc::format!("{}", pool.available()));
        add("sluice_pool_buffers".into(), "gauge", String::new(), &alloc::format!("{}", pool.capacity()));
        add("sluice_config_reloads_total".into(), "counter", String::new(), &alloc::format!("{}", self.reloads));
        for (name, kind, samples) in families {
            writeln!(w, "# TYPE {name} {kind}")?;
            for s in samples {
                writeln!(w, "{}", s.replace("{}", ""))?;
            }
        }
        Ok(())
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Gives the dataplane a way to ask how much heap is free (see
    /// [`reload`](Self::reload)).
    pub fn set_free_memory_probe(&mut self, free: fn() -> usize) {
        self.free_memory = Some(free);
    }

    pub fn port_mut(&mut self, id: PortId) -> &mut Port {
        &mut self.ports[id as usize]
    }

    /// Queues one gratuitous ARP per addressed port, so neighbours learn the
    /// appliance's MAC at start.
    pub fn announce(&mut self, pool: &mut PacketPool) {
        for port in &mut self.ports {
            if let Some(p) = port.host.gratuitous_arp(pool) {
                if let Err(p) = port.tx.push_back(p) {
                    pool.free(p);
                }
            }
        }
    }

    /// Processes a burst received on `port`. Every packet leaves the batch:
    /// to the host stack, a transmit queue, a stage or the egress that
    /// holds it, or back to the pool with a drop counted.
    pub fn receive(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool, now: Micros) {
        if let Some(peer) = self.wires[port as usize] {
            return self.wire(port, peer, batch, pool);
        }
        let Dataplane { ports, stages, stage_counters, pipelines, local_sorted, egress, events, rpf, .. } = self;
        let pipeline = &pipelines[port as usize];
        let refused = &rpf[port as usize];
        let mut onward = Batch::new();
        for mut pkt in batch.drain(..) {
            pkt.meta.in_port = port;
            let p = &mut ports[port as usize];
            p.counters.rx_packets += 1;
            p.counters.rx_bytes += pkt.len() as u64;
            let mut verdict = classify(p.mac, p.address, local_sorted, pkt.data(), pkt.total_len());
            if matches!(verdict, Verdict::Pipeline | Verdict::Local) && !refused.is_empty() {
                // classify checked the IPv4 header: the source is there.
                let src = Ipv4Packet::new_unchecked(&pkt.data()[14..]).src_addr();
                if refused.iter().any(|n| n.contains(&src)) {
                    verdict = Verdict::Drop(DropReason::SourceWrongPort);
                }
            }
            match verdict {
                Verdict::Pipeline => {
                    // `onward` has the capacity of `batch`.
                    let _ = onward.push(pkt);
                }
                // Stages may claim traffic to our addresses (NAT, LB VIPs).
                Verdict::Local if !pipeline.is_empty() => {
                    pkt.meta.local = true;
                    let _ = onward.push(pkt);
                }
                Verdict::Local => to_host(ports, pool, pkt),
                Verdict::Arp => {
                    let arp = arp_of(pkt.data());
                    if let Some(arp) = &arp {
                        egress.observe_arp(port, arp, ports, pool, now);
                    }
                    let p = &mut ports[port as usize];
                    match arp.filter(|_| !pkt.is_chained()).and_then(|a| off_link_request(p, local_sorted, &a)) {
                        Some(reply) => {
                            answer_arp(&mut pkt, p.mac, &reply);
                            p.counters.local_packets += 1;
                            if let Err(pkt) = p.tx.push_back(pkt) {
                                p.counters.drop(DropReason::TxRingFull);
                                pool.free(pkt);
                            }
                        }
                        None => to_host(ports, pool, pkt),
                    }
                }
                Verdict::Drop(reason) => {
                    p.counters.drop(reason);
                    pool.free(pkt);
                }
            }
        }
        for &s in pipeline {
            if onward.is_empty() {
                break;
            }
            let counters = &mut stage_counters[s];
            counters.packets += onward.len() as u64;
            stages[s].1.process(&mut onward, &mut StageContext::new(now, pool, ports, counters, events));
        }
        for pkt in onward.drain(..) {
            if pkt.meta.out_port.is_some() {
                egress.send(pkt, ports, pool, now);
            } else if pkt.meta.local {
                to_host(ports, pool, pkt);
            } else {
                // No stage routed it.
                ports[port as usize].counters.drop(DropReason::NoRoute);
                pool.free(pkt);
            }
        }
    }

    /// The null pipeline: frames go out of the peer port untouched (but
    /// for offload work the peer's NIC cannot do: done here).
    fn wire(&mut self, port: PortId, peer: PortId, batch: &mut Batch, pool: &mut PacketPool) {
        let peer_offloads = self.ports[peer as usize].offloads;
        for mut pkt in batch.drain(..) {
            let len = pkt.total_len() as u64;
            let c = &mut self.ports[port as usize].counters;
            c.rx_packets += 1;
            c.rx_bytes += len;
            let o = pkt.meta.offload;
            if !peer_offloads && o.is_gso() {
                let mut cut = match crate::offload::Segmenter::new(pkt, o.gso_size) {
                    Ok(c) => c,
                    Err(pkt) => {
                        drop_at(&mut self.ports, pool, pkt, DropReason::OffloadUnsupported);
                        continue;
                    }
                };
                while let Some(seg) = cut.next(pool) {
                    let Some(seg) = seg else {
                        self.ports[port as usize].counters.drop(DropReason::SegmentNoBuffer);
                        break;
                    };
                    self.wire_one(port, peer, seg, pool);
                }
                cut.finish(pool);
                continue;
            }
            if !peer_offloads && !crate::offload::complete_checksum(&mut pkt) {
                drop_at(&mut self.ports, pool, pkt, DropReason::OffloadUnsupported);
                continue;
            }
            self.wire_one(port, peer, pkt, pool);
        }
    }

    fn wire_one(&mut self, port: PortId, peer: PortId, pkt: crate::packet::Packet, pool: &mut PacketPool) {
        if let Err(pkt) = self.ports[peer as usize].tx.push_back(pkt) {
            self.ports[port as usize].counters.drop(DropReason::TxRingFull);
            pool.free(pkt);
        }
    }

    /// Runs stage and egress timers, the host stacks (those with work, and
    /// all of them now and then for their own timers) and the management
    /// endpoint.
    pub fn poll(&mut self, now: Micros, pool: &mut PacketPool) {
        let Dataplane { ports, stages, stage_counters, egress, events, .. } = self;
        for ((_, s), c) in stages.iter_mut().zip(stage_counters.iter_mut()) {
            s.poll(&mut StageContext::new(now, pool, ports, c, events));
        }
        egress.poll(ports, pool, now);
        // Next hops that never answered ARP: the router tells the sources
        // (not for the appliance's own packets, NAT-translated ones among them).
        let router =
            if egress.unreachable.is_empty() { None } else { stages.iter().position(|(k, _)| *k == StageKind::Router) };
        while let Some(pkt) = egress.unreachable.pop_front() {
            let src = Ipv4Packet::new_unchecked(&pkt.data()[14..]).src_addr();
            let Some(r) = router.filter(|_| !self.local.contains(&src)) else {
                pool.free(pkt);
                continue;
            };
            let (_, stage) = &mut stages[r];
            let err = stage.unreachable(pkt, &mut StageContext::new(now, pool, ports, &mut stage_counters[r], events));
            if let Some(err) = err {
                egress.send(err, ports, pool, now);
            }
        }
        let since = now.wrapping_sub(self.last_host_poll);
        // The socket scan runs only when the short interval has passed, not
        // on every turn of the loop.
        let timers_due = since >= HOST_POLL_INTERVAL
            || since >= HOST_POLL_INTERVAL_BUSY && self.ports.iter().any(|p| p.host.has_sockets());
        if timers_due {
            self.last_host_poll = now;
        }
        for port in &mut self.ports {
            if timers_due || port.host.has_work() {
                port.host.poll(now, pool, &mut port.tx);
            }
        }
        if let Some((port, mut mgmt)) = self.mgmt.take() {
            let requests = mgmt.poll(&mut self.ports[port].host, now);
            for (conn, req) in requests {
                self.mgmt_counters = mgmt.counters.clone();
                let response = self.answer(&req, pool, &mut mgmt.counters);
                mgmt.respond(conn, &response);
            }
            self.mgmt_counters = mgmt.counters.clone();
            self.mgmt = Some((port, mgmt));
        }
    }

    /// Returns every buffer the dataplane holds to the pool.
    pub fn drain(&mut self, pool: &mut PacketPool) {
        for (_, s) in &mut self.stages {
            s.drain(pool);
        }
        self.egress.drain(pool);
        for port in &mut self.ports {
            port.host.drain(pool);
            while let Some(p) = port.tx.pop_front() {
                pool.free(p);
            }
        }
    }

    /// Writes the counters: one line per port,
    /// `stats port=NAME rx_packets=N ... drop_REASON=N` (non-zero drops
    /// only), then one per stage, `stage name=NAME packets=N ...`.
    pub fn write_stats(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        for p in &self.ports {
            let c = &p.counters;
            write!(
                w,
                "stats port={} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} local_packets={} drops={}",
                p.name,
                c.rx_packets,
                c.rx_bytes,
                c.tx_packets,
                c.tx_bytes,
                c.local_packets,
                c.total_drops()
            )?;
            write_drops(w, &c.drops)?;
            writeln!(w)?;
        }
        for ((_, s), c) in self.stages.iter().zip(&self.stage_counters) {
            let mut extra = String::new();
            s.write_stats(&mut extra);
            write!(w, "stage name={} packets={} tx={}{}", s.name(), c.packets, c.tx, extra)?;
            write_drops(w, &c.drops)?;
            writeln!(w)?;
            let mut details = String::new();
            s.write_details(&mut details);
            w.write_str(&details)?;
        }
        let e = &self.egress;
        writeln!(
            w,
            "egress name=egress fragments={} arp_requests={} large_sent={} segments_cut={} checksums_completed={} neighbors={} neighbor_capacity={} neighbors_evicted={} neighbors_failed={} host_sockets={}",
            e.counters.fragments,
            e.counters.arp_requests,
            e.counters.large_sent,
            e.counters.segments_cut,
            e.counters.checksums_completed,
            e.neighbors.len(),
            e.neighbors.capacity(),
            e.neighbors.counters.evicted,
            e.neighbors.counters.failed,
            self.ports.iter().map(|p| p.host.socket_count()).sum::<usize>()
        )?;
        for p in self.ports.iter().filter(|p| !p.nic_counters.is_empty()) {
            write!(w, "nic port={} offloads={}", p.name, p.offloads as u8)?;
            for (k, v) in &p.nic_counters {
                write!(w, " {k}={v}")?;
            }
            writeln!(w, " host_tx_no_buffer={}", p.host.counters.tx_no_buffer)?;
        }
        if self.config.management.is_some() {
            let c = &self.mgmt_counters;
            writeln!(
                w,
                "mgmt name=http requests={} rejected={} timeouts={} evicted={} unauthorized={}",
                c.requests, c.rejected, c.timeouts, c.evicted, c.unauthorized
            )?;
        }
        if !self.loop_counters.is_empty() {
            write!(w, "loop name=poll")?;
            for (k, v) in &self.loop_counters {
                write!(w, " {k}={v}")?;
            }
            writeln!(w)?;
        }
        Ok(())
    }
}

/// Keys that are levels, not running totals.
fn is_gauge(k: &str) -> bool {
    matches!(
        k,
        "sessions"
            | "session_capacity"
            | "mappings"
            | "flows"
            | "flow_capacity"
            | "active_flows"
            | "healthy"
            | "weight"
            | "backends_up"
            | "neighbors"
            | "neighbor_capacity"
            | "host_sockets"
            | "routes"
            | "route_table_bytes"
            | "table_bytes"
            | "offloads"
            | "cycles_per_packet"
            | "packets_per_busy_turn"
            | "tsc_mhz"
            | "heap_used_bytes"
            | "heap_free_bytes"
    )
}

fn write_drops(w: &mut dyn fmt::Write, drops: &[u64; DropReason::COUNT]) -> fmt::Result {
    for r in DropReason::ALL {
        let n = drops[*r as usize];
        if n != 0 {
            write!(w, " drop_{}={}", r.name(), n)?;
        }
    }
    Ok(())
}

/// Hands a packet to the host stack of the port it came in on. The host
/// stack takes only whole, ordinary frames: a super-packet is cut into
/// segments here and a partial checksum completed (what a NIC without
/// offloads would have delivered).
pub(crate) fn to_host(ports: &mut [Port], pool: &mut PacketPool, mut pkt: crate::packet::Packet) {
    let o = pkt.meta.offload;
    if o.is_gso() {
        let in_port = pkt.meta.in_port as usize;
        let mut cut = match crate::offload::Segmenter::new(pkt, o.gso_size) {
            Ok(c) => c,
            Err(pkt) => return drop_at(ports, pool, pkt, DropReason::OffloadUnsupported),
        };
        while let Some(seg) = cut.next(pool) {
            match seg {
                Some(seg) => enqueue_host(ports, pool, seg),
                None => {
                    ports[in_port].counters.drop(DropReason::SegmentNoBuffer);
                    break;
                }
            }
        }
        return cut.finish(pool);
    }
    if pkt.is_chained() || !crate::offload::complete_checksum(&mut pkt) {
        return drop_at(ports, pool, pkt, DropReason::OffloadUnsupported);
    }
    enqueue_host(ports, pool, pkt);
}

fn enqueue_host(ports: &mut [Port], pool: &mut PacketPool, pkt: crate::packet::Packet) {
    let p = &mut ports[pkt.meta.in_port as usize];
    match p.host.enqueue(pkt) {
        Ok(()) => p.counters.local_packets += 1,
        Err(pkt) => {
            p.counters.drop(DropReason::HostStackBacklog);
            pool.free(pkt);
        }
    }
}

fn drop_at(ports: &mut [Port], pool: &mut PacketPool, pkt: crate::packet::Packet, reason: DropReason) {
    ports[pkt.meta.in_port as usize].counters.drop(reason);
    pool.free(pkt);
}

/// An ARP request for one of the appliance's addresses from a sender
/// outside the port's subnet: (sender MAC, sender IP, target IP). Linux asks
/// this way when the packet it wants to send has a source address from
/// another interface (a loopback service address, a multi-homed host);
/// RFC 826 answers every request whose target is ours. smoltcp ignores such
/// requests, so the dataplane answers them itself. Requests from on-link
/// senders go to the host stack as before.
fn off_link_request(port: &Port, local: &[Ipv4Addr], arp: &ArpRepr) -> Option<([u8; 6], Ipv4Addr, Ipv4Addr)> {
    let ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = *arp
    else {
        return None;
    };
    let sender_ok = source_hardware_addr.is_unicast()
        && !source_protocol_addr.is_unspecified()
        && !source_protocol_addr.is_broadcast()
        && !source_protocol_addr.is_multicast();
    let on_link = port.address.is_some_and(|a| a.contains(&source_protocol_addr));
    let ours = local.binary_search(&target_protocol_addr).is_ok();
    (sender_ok && !on_link && ours).then_some((source_hardware_addr.0, source_protocol_addr, target_protocol_addr))
}

/// Turns the request in `pkt` into the reply, in place.
fn answer_arp(
    pkt: &mut crate::packet::Packet,
    mac: [u8; 6],
    (peer_mac, peer_ip, ours): &([u8; 6], Ipv4Addr, Ipv4Addr),
) {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: *ours,
        target_hardware_addr: EthernetAddress(*peer_mac),
        target_protocol_addr: *peer_ip,
    };
    let eth = smoltcp::wire::EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress(*peer_mac),
        ethertype: EthernetProtocol::Arp,
    };
    pkt.set_len(eth.buffer_len() + arp.buffer_len());
    pkt.meta.offload = Default::default();
    let mut frame = EthernetFrame::new_unchecked(pkt.data_mut());
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

fn arp_of(frame: &[u8]) -> Option<ArpRepr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()
}

/// Decides what happens to a frame received on a port with `mac` and
/// `address`; `local` holds every address of the appliance (a few: scanned).
/// `frame` is the frame's first buffer; `frame_len` counts the whole frame
/// (a chained frame continues in further buffers).
pub fn classify(mac: [u8; 6], address: Option<Ipv4Net>, local: &[Ipv4Addr], frame: &[u8], frame_len: usize) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::Drop(DropReason::EthTruncated);
    };
    let dst = eth.dst_addr();
    if dst != EthernetAddress(mac) && !dst.is_broadcast() && !dst.is_multicast() {
        return Verdict::Drop(DropReason::NotOurMac);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()) {
            Ok(arp)
                if arp.hardware_type() == ArpHardware::Ethernet && arp.protocol_type() == EthernetProtocol::Ipv4 =>
            {
                Verdict::Arp
            }
            _ => Verdict::Drop(DropReason::ArpMalformed),
        },
        EthernetProtocol::Ipv4 => match check_ipv4(eth.payload(), frame_len.saturating_sub(14)) {
            Err(reason) => Verdict::Drop(reason),
            Ok(ip) if ip.is_broadcast() || local.contains(&ip) => Verdict::Local,
            Ok(ip) if address.is_some_and(|a| a.prefix_len() < 31 && ip == a.broadcast()) => Verdict::Local,
            // Multicast and broadcast frames are for the link, not for routing.
            Ok(_) if !dst.is_unicast() => Verdict::Drop(DropReason::MartianDestination),
            Ok(_) => Verdict::Pipeline,
        },
        EthernetProtocol::Ipv6 => Verdict::Drop(DropReason::Ipv6Unsupported),
        EthernetProtocol::Unknown(_) => Verdict::Drop(DropReason::UnknownEthertype),
    }
}

/// Validates an IPv4 header against the frame it came in (RFC 1812 §5.2.2)
/// and returns the destination address. `bytes` starts at the header (all
/// of it must be there); `available` counts the datagram's bytes in the
/// whole frame, further buffers included.
pub fn check_ipv4(bytes: &[u8], available: usize) -> Result<Ipv4Addr, DropReason> {
    if bytes.len() < 20 {
        return Err(DropReason::Ipv4Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(bytes);
    if ip.version() != 4 {
        return Err(DropReason::Ipv4BadVersion);
    }
    let ihl = ip.header_len() as usize;
    let total = ip.total_len() as usize;
    if ihl < 20 || total < ihl {
        return Err(DropReason::Ipv4BadHeaderLen);
    }
    if ihl > bytes.len() || total > available.max(bytes.len()) {
        return Err(DropReason::Ipv4Truncated);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    Ok(ip.dst_addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::packet::BURST;
    use crate::testutil::*;
    use proptest::prelude::*;
    use std::string::String;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn net() -> Option<Ipv4Net> {
        Some("10.0.0.1/24".parse().unwrap())
    }

    fn classify1(frame: &[u8]) -> Verdict {
        classify(MAC, net(), &[ME, Ipv4Addr::new(10, 1, 0, 1)], frame, frame.len())
    }

    #[test]
    fn classification_of_real_frames() {
        assert_eq!(classify1(&arp_request(PEER_MAC, PEER_IP, ME)), Verdict::Arp);
        assert_eq!(classify1(&echo_request(MAC, PEER_IP, ME, 1, b"x")), Verdict::Local);
        assert_eq!(
            classify1(&echo_request(MAC, PEER_IP, Ipv4Addr::new(10, 1, 0, 1), 1, b"x")),
            Verdict::Local,
            "another port's address"
        );
        let other = echo_request(MAC, PEER_IP, Ipv4Addr::new(192, 0, 2, 1), 1, b"x");
        assert_eq!(classify1(&other), Verdict::Pipeline);
        let not_mine = echo_request([2, 0, 0, 0, 0, 5], PEER_IP, ME, 1, b"x");
        assert_eq!(classify1(&not_mine), Verdict::Drop(DropReason::NotOurMac));
        assert_eq!(classify1(&[0; 13]), Verdict::Drop(DropReason::EthTruncated));
    }

    #[test]
    fn malformed_ipv4_gets_the_right_reason() {
        let good = echo_request(MAC, PEER_IP, ME, 1, b"abcdefgh");
        let with = |f: &dyn Fn(&mut std::vec::Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            classify1(&v)
        };
        assert_eq!(with(&|v| v.truncate(14 + 19)), Verdict::Drop(DropReason::Ipv4Truncated));
        assert_eq!(with(&|v| v.truncate(v.len() - 1)), Verdict::Drop(DropReason::Ipv4Truncated));
        assert_eq!(with(&|v| v[14] = 0x65), Verdict::Drop(DropReason::Ipv4BadVersion));
        assert_eq!(with(&|v| v[14] = 0x44), Verdict::Drop(DropReason::Ipv4BadHeaderLen));
        assert_eq!(with(&|v| v[24] ^= 0xff), Verdict::Drop(DropReason::Ipv4BadChecksum));
        assert_eq!(
            with(&|v| {
                v[12] = 0x88;
                v[13] = 0xb5
            }),
            Verdict::Drop(DropReason::UnknownEthertype)
        );
        assert_eq!(
            with(&|v| {
                v[12] = 0x86;
                v[13] = 0xdd
            }),
            Verdict::Drop(DropReason::Ipv6Unsupported)
        );
        // Ethernet padding after the IPv4 total length is fine.
        assert_eq!(with(&|v| v.extend_from_slice(&[0; 10])), Verdict::Local);
    }

    pub(crate) fn dataplane(extra: &str) -> Dataplane {
        let cfg = config::parse(&std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n{extra}"))
            .unwrap();
        Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7)
    }

    #[test]
    fn a_reload_whose_tables_do_not_fit_is_refused_and_the_old_config_stays() {
        let mut pool = PacketPool::new(8);
        let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n";
        let small = std::format!("{base}nat {{\n inside 10.0.0.0/24\n outside wan\n sessions 1000\n}}\n");
        let mut dp = Dataplane::new(&config::parse(&small).unwrap(), &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
        dp.set_free_memory_probe(|| 4 << 20);
        let big = small.replace("sessions 1000", "sessions 1000000");
        let err = dp.reload("new.conf", &big, &mut pool).unwrap_err();
        assert!(err.contains("new.conf: the new tables need") && err.contains("the running config stays"), "{err}");
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        assert!(s.contains("session_capacity=1000 "), "{s}");
        // Tables that fit are taken.
        dp.reload("new.conf", &small.replace("sessions 1000", "sessions 2000"), &mut pool).unwrap();
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        assert!(s.contains("session_capacity=2000 "), "{s}");
    }

    fn request(method: &str, path: &str, body: &str, bearer: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            bearer: bearer.map(Into::into),
        }
    }

    #[test]
    fn management_requests_need_the_token_and_reloads_need_one_configured() {
        let mut pool = PacketPool::new(8);
        let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nport mgmt address 10.9.0.1/24\n";
        let text = std::format!("{base}management mgmt listen 8080\n");
        let cfg = config::parse(&text).unwrap();
        let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]], 0, 7);
        let mut c = crate::mgmt::MgmtCounters::default();
        // No token configured: reads work, reloads are refused.
        assert_eq!(dp.answer(&request("GET", "/metrics", "", None), &mut pool, &mut c).status, 200);
        assert_eq!(dp.answer(&request("PUT", "/config", &text, None), &mut pool, &mut c).status, 403);
        dp.set_management_token(Some(b"s3cret"));
        for (path, status) in [("/health", 200), ("/metrics", 401), ("/config", 401)] {
            assert_eq!(dp.answer(&request("GET", path, "", None), &mut pool, &mut c).status, status, "{path}");
            assert_eq!(dp.answer(&request("GET", path, "", Some("wrong")), &mut pool, &mut c).status, status, "{path}");
            assert_eq!(dp.answer(&request("GET", path, "", Some("s3cret")), &mut pool, &mut c).status, 200, "{path}");
        }
        assert_eq!(c.unauthorized, 5, "the 403 and two refusals each for /metrics and /config");
        let r = dp.answer(
            &request("PUT", "/config", &std::format!("# moved\n\n{text}"), Some("s3cret")),
            &mut pool,
            &mut c,
        );
        assert_eq!(r.status, 200, "{}", std::string::String::from_utf8_lossy(&r.body));
        assert!(std::str::from_utf8(&r.body).unwrap().contains("lasts until the appliance restarts"));
        let health = dp.answer(&request("GET", "/health", "", None), &mut pool, &mut c);
        assert!(std::str::from_utf8(&health.body).unwrap().contains("config: PUT /config, reload 1"));
        // The token never shows in the config the endpoint serves.
        let served = dp.answer(&request("GET", "/config", "", Some("s3cret")), &mut pool, &mut c);
        assert!(!std::str::from_utf8(&served.body).unwrap().contains("s3cret"));
        // The management port's pipeline cannot be changed by a reload.
        let r = dp.answer(
            &request("PUT", "/config", &std::format!("{text}pipeline mgmt router\n"), Some("s3cret")),
            &mut pool,
            &mut c,
        );
        assert_eq!(r.status, 400);
        // metrics open: /metrics without the token.
        let open = std::format!("{base}management mgmt listen 8080 metrics open\n");
        let mut dp = Dataplane::new(&config::parse(&open).unwrap(), &[MAC, [2; 6], [4; 6]], 0, 7);
        dp.set_management_token(Some(b"s3cret"));
        assert_eq!(dp.answer(&request("GET", "/metrics", "", None), &mut pool, &mut c).status, 200);
        assert_eq!(dp.answer(&request("GET", "/config", "", None), &mut pool, &mut c).status, 401);
    }

    #[test]
    fn sources_that_belong_on_another_port_are_dropped() {
        let mut pool = PacketPool::new(16);
        let base = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 rpf strict\nport mgmt address 10.9.0.1/24\nmanagement mgmt\nroute 0.0.0.0/0 via 10.1.0.254\n";
        let cfg = config::parse(base).unwrap();
        let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2], [0x52, 0x54, 0, 0, 0, 3]], 0, 7);
        let far = Ipv4Addr::new(192, 0, 2, 9);
        let send = |dp: &mut Dataplane, pool: &mut PacketPool, port: PortId, mac: [u8; 6], src: Ipv4Addr| {
            let mut b = Batch::new();
            let mut p = pool.alloc().unwrap();
            p.fill(&echo_request(mac, src, far, 1, b"x"));
            b.push(p).unwrap();
            dp.receive(port, &mut b, pool, 0);
            dp.ports()[port as usize].counters.dropped(DropReason::SourceWrongPort)
        };
        // lan (loose): the appliance's own address and the management
        // prefix are refused as sources; another data port's prefix is not.
        assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 9, 0, 1)), 1);
        assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 9, 0, 7)), 2);
        assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 1, 0, 1)), 3);
        assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 1, 0, 7)), 3);
        assert_eq!(send(&mut dp, &mut pool, 0, MAC, Ipv4Addr::new(10, 0, 0, 7)), 3);
        // wan (strict): lan's prefix is refused there.
        let wan = [0x52, 0x54, 0, 0, 0, 2];
        assert_eq!(send(&mut dp, &mut pool, 1, wan, Ipv4Addr::new(10, 0, 0, 7)), 1);
        assert_eq!(send(&mut dp, &mut pool, 1, wan, Ipv4Addr::new(198, 51, 100, 7)), 1);
        // Nothing is routed into the management network.
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(MAC, Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 9, 0, 2), 1, b"x"));
        b.push(p).unwrap();
        let before = dp.ports()[0].counters.dropped(DropReason::NoRoute);
        let neighbors_before = dp.egress.neighbors.len();
        dp.receive(0, &mut b, &mut pool, 0);
        dp.poll(1, &mut pool);
        assert!(dp.ports()[2].tx.is_empty(), "nothing leaves the management port");
        // It follows the default route to wan's gateway (already asked
        // for), not a connected route into 10.9.0.0/24.
        assert_eq!(dp.ports()[0].counters.dropped(DropReason::NoRoute), before);
        assert_eq!(dp.egress.neighbors.len(), neighbors_before, "no ARP for 10.9.0.2");
        let mut stats = String::new();
        dp.write_stats(&mut stats).unwrap();
        assert!(stats.contains("stage name=router packets=4 tx=0 forwarded=4 "), "{stats}");
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 16);
    }

    #[test]
    fn arp_requests_from_off_link_senders_are_answered_but_not_learned() {
        let mut pool = PacketPool::new(8);
        let mut dp = dataplane("");
        let far = Ipv4Addr::new(192, 168, 77, 1);
        let mut b = Batch::new();
        for target in [ME, Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 0, 0, 99)] {
            let mut p = pool.alloc().unwrap();
            p.fill(&arp_request(PEER_MAC, far, target));
            b.push(p).unwrap();
        }
        dp.receive(0, &mut b, &mut pool, 0);
        dp.poll(1, &mut pool);
        let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(0).tx.pop_front()).collect();
        assert_eq!(out.len(), 2, "both appliance addresses answered, the stranger's not");
        for (p, ours) in out.iter().zip([ME, Ipv4Addr::new(10, 1, 0, 1)]) {
            let frame = EthernetFrame::new_checked(p.data()).unwrap();
            assert_eq!(frame.dst_addr(), EthernetAddress(PEER_MAC));
            assert_eq!(frame.src_addr(), EthernetAddress(MAC));
            let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
            assert_eq!(
                arp,
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: EthernetAddress(MAC),
                    source_protocol_addr: ours,
                    target_hardware_addr: EthernetAddress(PEER_MAC),
                    target_protocol_addr: far,
                }
            );
        }
        assert_eq!(dp.egress.neighbors.len(), 0, "an off-link sender is not a neighbour");
        for p in out {
            pool.free(p);
        }
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn driver_and_loop_counters_reach_stats_and_metrics() {
        let pool = PacketPool::new(4);
        let mut dp = dataplane("");
        dp.port_mut(0).offloads = true;
        dp.port_mut(0).nic_counters.extend([("rx_kicks", 7), ("rx_large", 5)]);
        dp.loop_counters.extend([("busy_turns", 3), ("cycles_per_packet", 900)]);
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        assert!(s.contains("nic port=lan offloads=1 rx_kicks=7 rx_large=5 host_tx_no_buffer=0\n"), "{s}");
        assert!(s.contains("loop name=poll busy_turns=3 cycles_per_packet=900\n"), "{s}");
        let mut m = String::new();
        dp.write_metrics(&mut m, &pool).unwrap();
        assert!(
            m.contains("# TYPE sluice_nic_rx_large_total counter\nsluice_nic_rx_large_total{port=\"lan\"} 5\n"),
            "{m}"
        );
        assert!(m.contains("# TYPE sluice_nic_offloads gauge\n"), "{m}");
        assert!(
            m.contains(
                "# TYPE sluice_loop_cycles_per_packet gauge\nsluice_loop_cycles_per_packet{loop=\"poll\"} 900\n"
            ),
            "{m}"
        );
    }

    #[test]
    fn receive_counts_and_answers() {
        let mut pool = PacketPool::new(64);
        let mut dp = dataplane("");
        let mut batch = Batch::new();
        for frame in
            [arp_request(PEER_MAC, PEER_IP, ME), echo_request(MAC, PEER_IP, ME, 3, b"ping"), std::vec![0xff; 60]]
        {
            let mut p = pool.alloc().unwrap();
            p.fill(&frame);
            batch.push(p).unwrap();
        }
        dp.receive(0, &mut batch, &mut pool, 0);
        assert!(batch.is_empty());
        dp.poll(1, &mut pool);
        let port = &dp.ports()[0];
        assert_eq!(port.counters.rx_packets, 3);
        assert_eq!(port.counters.local_packets, 2);
        assert_eq!(port.tx.len(), 2, "ARP reply and echo reply");
        let mut s = String::new();
        dp.write_stats(&mut s).unwrap();
        assert!(s.starts_with("stats port=lan rx_packets=3 "), "{s}");
        assert!(s.contains(" drop_unknown_ethertype=1\n"), "{s}");
        assert!(s.contains("stage name=router packets=1 tx=0 forwarded=0 "), "the ping to us passes the router: {s}");
        assert!(s.contains("egress name=egress "), "{s}");
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 64);
    }

    #[test]
    fn without_a_router_nothing_is_forwarded() {
        let mut pool = PacketPool::new(8);
        let mut dp = dataplane("pipeline lan");
        let mut batch = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(MAC, PEER_IP, Ipv4Addr::new(10, 1, 0, 2), 3, b"ping"));
        batch.push(p).unwrap();
        dp.receive(0, &mut batch, &mut pool, 0);
        assert_eq!(dp.ports()[0].counters.dropped(DropReason::NoRoute), 1);
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn a_wire_passes_every_frame_unchanged() {
        let mut pool = PacketPool::new(8);
        let mut dp = dataplane("wire lan wan");
        let mut batch = Batch::new();
        for frame in [std::vec![0xee; 60], arp_request(PEER_MAC, PEER_IP, ME)] {
            let mut p = pool.alloc().unwrap();
            p.fill(&frame);
            batch.push(p).unwrap();
        }
        dp.receive(0, &mut batch, &mut pool, 0);
        let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data(), &[0xee; 60][..]);
        for p in out {
            pool.free(p);
        }
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 8);
    }

    /// A TCP super-packet of `payload` bytes from lan to 10.1.0.2, as a
    /// NIC with offloads delivers it: chained, checksum partial.
    fn super_packet(pool: &mut PacketPool, payload: usize) -> crate::packet::Packet {
        use crate::csum;
        use crate::packet::Offload;
        let mut f = tcp_frame(MAC, (PEER_IP, 40000), (Ipv4Addr::new(10, 1, 0, 2), 80), false, true);
        f.extend((0..payload).map(|i| (i % 253) as u8));
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = csum::checksum(&f[14..34]);
        csum::set(&mut f, 24, c);
        // The partial checksum: the pseudo-header sum.
        let mut sum = 6u32 + (ip_len as u32 - 20);
        for at in [26, 28, 30, 32] {
            sum += csum::get(&f, at) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        csum::set(&mut f, 34 + 16, sum as u16);
        let mut head = chained(pool, &f, 1800);
        head.meta.offload = Offload { csum_partial: true, csum_start: 34, csum_offset: 16, gso_size: 1448 };
        head
    }

    #[test]
    fn super_packets_leave_whole_or_cut_as_the_out_port_allows() {
        use smoltcp::wire::TcpPacket;
        for offloads in [true, false] {
            let mut pool = PacketPool::with_tails(64, 2);
            let mut dp = dataplane("");
            dp.port_mut(1).offloads = offloads;
            // The next hop is known.
            let mut b = Batch::new();
            let mut p = pool.alloc().unwrap();
            p.fill(&arp_reply(
                [2, 0, 0, 0, 0, 9],
                Ipv4Addr::new(10, 1, 0, 2),
                [0x52, 0x54, 0, 0, 0, 2],
                Ipv4Addr::new(10, 1, 0, 1),
            ));
            b.push(p).unwrap();
            dp.receive(1, &mut b, &mut pool, 0);
            while let Some(p) = dp.port_mut(1).tx.pop_front() {
                pool.free(p);
            }
            let mut b = Batch::new();
            b.push(super_packet(&mut pool, 10_000)).unwrap();
            dp.receive(0, &mut b, &mut pool, 0);
            let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
            if offloads {
                assert_eq!(out.len(), 1, "sent whole for the NIC to cut");
                assert!(out[0].is_chained() && out[0].meta.offload.is_gso());
            } else {
                assert_eq!(out.len(), 7, "10000 bytes in 1448-byte segments");
                let mut seq = 1000;
                for s in &out {
                    let ip = Ipv4Packet::new_checked(&s.data()[14..]).unwrap();
                    assert!(ip.verify_checksum());
                    assert_eq!(ip.hop_limit(), 63);
                    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
                    assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
                    assert_eq!(tcp.seq_number().0, seq);
                    seq += tcp.payload().len() as i32;
                    assert_eq!(s.meta.offload, Default::default());
                }
                assert_eq!(seq, 11_000);
            }
            for p in out {
                pool.free(p);
            }
            dp.drain(&mut pool);
            assert_eq!(pool.available(), 64, "offloads {offloads}: every buffer back");
        }
    }

    #[test]
    fn a_partial_checksum_datagram_too_big_for_the_port_is_completed_and_fragmented() {
        use crate::csum;
        use smoltcp::wire::UdpPacket;
        let cfg = config::parse("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24 mtu 1400\n").unwrap();
        let mut dp = Dataplane::new(&cfg, &[MAC, [0x52, 0x54, 0, 0, 0, 2]], 0, 7);
        dp.port_mut(1).offloads = true;
        let mut pool = PacketPool::new(16);
        let dst = Ipv4Addr::new(10, 1, 0, 2);
        let mut b = Batch::new();
        let mut p = pool.alloc().unwrap();
        p.fill(&arp_reply([2, 0, 0, 0, 0, 9], dst, [0x52, 0x54, 0, 0, 0, 2], Ipv4Addr::new(10, 1, 0, 1)));
        b.push(p).unwrap();
        dp.receive(1, &mut b, &mut pool, 0);
        while let Some(p) = dp.port_mut(1).tx.pop_front() {
            pool.free(p);
        }
        // 1472 bytes of UDP, DF clear, checksum left partial by the sender.
        let payload: std::vec::Vec<u8> = (0..1464u32).map(|i| i as u8).collect();
        let mut f = udp_frame(MAC, (PEER_IP, 5000), (dst, 53), &payload);
        f[20] &= !0x40; // DF clear
        csum::set(&mut f, 24, 0);
        let c = csum::checksum(&f[14..34]);
        csum::set(&mut f, 24, c);
        let mut sum = 17u32 + 1472;
        for at in [26, 28, 30, 32] {
            sum += csum::get(&f, at) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        csum::set(&mut f, 34 + 6, sum as u16);
        let mut p = pool.alloc().unwrap();
        p.fill(&f);
        p.meta.offload = crate::packet::Offload { csum_partial: true, csum_start: 34, csum_offset: 6, gso_size: 0 };
        let mut b = Batch::new();
        b.push(p).unwrap();
        dp.receive(0, &mut b, &mut pool, 0);
        let out: std::vec::Vec<_> = core::iter::from_fn(|| dp.port_mut(1).tx.pop_front()).collect();
        assert_eq!(out.len(), 2, "fragmented to the 1400-byte MTU");
        let mut datagram = std::vec::Vec::new();
        for s in &out {
            let ip = Ipv4Packet::new_checked(&s.data()[14..]).unwrap();
            assert!(ip.verify_checksum() && ip.total_len() <= 1400);
            datagram.extend_from_slice(ip.payload());
        }
        let udp = UdpPacket::new_checked(&datagram[..]).unwrap();
        assert!(udp.verify_checksum(&PEER_IP.into(), &dst.into()), "the completed checksum verifies");
        assert_eq!(udp.payload(), &payload[..]);
        for p in out {
            pool.free(p);
        }
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 16);
    }

    #[test]
    fn announce_queues_one_gratuitous_arp_per_port() {
        let mut pool = PacketPool::new(8);
        let mut dp = dataplane("");
        dp.announce(&mut pool);
        assert_eq!(dp.ports()[0].tx.len(), 1);
        assert_eq!(dp.ports()[1].tx.len(), 1);
        dp.drain(&mut pool);
        assert_eq!(pool.available(), 8);
    }

    proptest! {
        // Random bytes, and random mutations of valid frames, through the
        // whole dataplane (ingress, router, host stack) never panic and
        // never leak a buffer.
        #[test]
        fn random_frames_never_panic_or_leak(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..BURST),
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
            dst in any::<u32>(),
            ttl in 0u8..4,
        ) {
            let mut pool = PacketPool::new(BURST * 4);
            let mut dp = dataplane("route 0.0.0.0/0 via 10.1.0.254");
            let mut batch = Batch::new();
            for (i, f) in frames.iter().enumerate() {
                let mut p = pool.alloc().unwrap();
                let mut bytes = match i % 3 {
                    0 => f.clone(),
                    1 => echo_request(MAC, PEER_IP, ME, 1, f),
                    _ => echo_request(MAC, PEER_IP, Ipv4Addr::from(dst), 1, f),
                };
                if bytes.len() > 22 && i % 3 == 2 {
                    bytes[22] = ttl;
                }
                for (at, v) in &flips {
                    if let Some(b) = bytes.get_mut(*at) { *b = *v; }
                }
                p.fill(&bytes);
                batch.push(p).unwrap();
            }
            dp.receive(0, &mut batch, &mut pool, 0);
            for t in 0..6 {
                dp.poll(t * 1_000_000, &mut pool);
            }
            dp.drain(&mut pool);
            prop_assert_eq!(pool.available(), BURST * 4);
        }
    }
}
