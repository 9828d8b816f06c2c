//! The dataplane: ports, their counters and host stacks, the ingress check
//! every received packet goes through, and the pipelines of stages.
//!
//! Ingress decides, per packet: drop it (malformed, not for us: a named
//! reason), hand it to the appliance's own host stack (ARP, and IPv4 to one
//! of the appliance's addresses), or pass it to the input port's pipeline.
//! ARP is shown to every stage on its way to the host stack (the router
//! learns neighbours from it).

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::Ipv4Packet;

use crate::config::Config;
use crate::counters::{DropReason, PortCounters};
use crate::egress::Egress;
use crate::hoststack::{HostStack, TxQueue};
use crate::mgmt::Management;
use crate::packet::{Batch, PacketPool, PortId};
use crate::port::{to_host, DriverCounters, Port};
use crate::stage::StageContext;
use crate::Micros;

mod ingress;
mod l2;
mod reload;
mod routes;
mod show;
mod stats;
#[cfg(test)]
mod tests;
pub mod trace;

pub use crate::stage::Event;
use ingress::{answer_arp, arp_of, off_link_request};
pub use ingress::{check_ipv4, classify, Verdict};
pub use reload::Running;
pub use show::{query_pairs, views_help, STAGE_VIEWS, VIEWS};

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
    /// The running stages, in the order of `config.stages` (which
    /// `config.pipelines` index).
    stages: Vec<Running>,
    /// Every address of the appliance (ports' first, the order host stacks
    /// take them in) and the same sorted, for the per-packet test.
    local: Vec<Ipv4Addr>,
    local_sorted: Vec<Ipv4Addr>,
    /// Every IPv6 address of the appliance (link-local ones included), sorted.
    local6: Vec<core::net::Ipv6Addr>,
    /// IPv6 addresses stages answer for (VIPs), sorted.
    vips6: Vec<core::net::Ipv6Addr>,
    egress: Egress,
    last_host_poll: Micros,
    /// The config running now, its text and where the text came from.
    config: Config,
    config_text: String,
    seed: u64,
    /// The management endpoint and the port it serves on.
    mgmt: Option<(usize, Management)>,
    /// The packet capture in progress, if one was asked for (`GET /capture`).
    pub capture: Option<crate::capture::Capture>,
    /// The packet trace asked for (`POST /trace`), kept until the next.
    pub trace: Option<trace::Trace>,
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
    /// What management buffers (requests, answers, a capture) may hold
    /// together (the kernel sizes it at boot).
    mgmt_budget: crate::mgmt::Budget,
    /// Reads the clock (the kernel sets it): reloads are timed with it.
    clock: Option<fn() -> Micros>,
    /// How long the last reload took, parse to tables (µs).
    last_reload_us: Option<Micros>,
    /// Per port: source prefixes the reverse-path check refuses there.
    rpf: Vec<ingress::Refused>,
    /// The same for IPv6 sources.
    rpf6: Vec<Vec<ipnet::Ipv6Net>>,
    /// Per port, destinations refused on arrival (a NAT's inside on its
    /// outside port): (network, mask, reason).
    inbound_refused: Vec<Vec<(u32, u32, DropReason)>>,
    /// The image's version and git commit, for `sluice_build_info`.
    build: Option<(&'static str, &'static str)>,
    /// VLAN sub-ports, tunnels, VRFs.
    l2: l2::L2,
}

/// Hands a local IPv6 packet that is not TCP or UDP to the port's IPv6
/// host (neighbour discovery, echo), a copy of an advertisement to its
/// smoltcp stack too, and tells the egress what it learnt.
fn to_host6(
    ports: &mut [Port],
    egress: &mut Egress,
    pool: &mut PacketPool,
    pkt: crate::packet::Packet,
    kind: Option<crate::ipv6::host::LocalKind>,
    now: Micros,
) {
    let port = pkt.meta.in_port;
    if kind == Some(crate::ipv6::host::LocalKind::Advert) && !pkt.is_chained() {
        if let Some(mut copy) = pool.alloc() {
            copy.fill(pkt.data());
            copy.meta.in_port = port;
            to_host(ports, pool, copy);
        }
    }
    let Port { host6, tx, counters, .. } = &mut ports[port as usize];
    counters.local_packets += 1;
    let learned = match host6.as_mut() {
        Some(h) => h.receive(pkt, now, pool, tx, counters),
        None => {
            pool.free(pkt);
            None
        }
    };
    if let Some(l) = learned {
        egress.learn6(port, l, ports, pool, now);
    }
}

/// Queues a wired frame on the peer port.
fn wire_one(ports: &mut [Port], port: PortId, peer: PortId, pkt: crate::packet::Packet, pool: &mut PacketPool) {
    if let Err(pkt) = ports[peer as usize].tx.push_back(pkt) {
        ports[port as usize].counters.drop(DropReason::TxRingFull);
        pool.free(pkt);
    }
}

fn sorted(v: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

/// The IPv6 addresses the config's stages answer for, sorted.
fn vips6_of(config: &Config) -> Vec<core::net::Ipv6Addr> {
    let mut v: Vec<core::net::Ipv6Addr> = config.stages.iter().flat_map(|s| s.config.addresses6()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every IPv6 address of the ports (link-local ones included), sorted.
fn local6_of(ports: &[Port]) -> Vec<core::net::Ipv6Addr> {
    let mut v: Vec<core::net::Ipv6Addr> =
        ports.iter().flat_map(|p| p.host6.iter().flat_map(|h| h.addrs.iter().map(|a| a.net.addr()))).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn wires_of(config: &Config) -> Vec<Option<PortId>> {
    let mut w = alloc::vec![None; config.ports.len()];
    for &(a, b) in &config.wires {
        w[a] = Some(b as PortId);
        w[b] = Some(a as PortId);
    }
    w
}

impl Dataplane {
    /// Builds ports and stages from `config`; `macs[i]` is port `i`'s MAC.
    pub fn new(config: &Config, nic_macs: &[[u8; 6]], now: Micros, seed: u64) -> Self {
        let local = config.local_addresses();
        let macs = &l2::L2::macs(config, nic_macs)[..];
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
                host6: (!pc.address6.is_empty()).then(|| {
                    let ra = config.ras.iter().find(|r| r.port == i);
                    crate::ipv6::host::Host6::new(*mac, &pc.address6, ra, pc.mtu, now, seed ^ (i as u64) << 32)
                }),
                tx: TxQueue::new(),
                offloads: false,
                nic_counters: DriverCounters::new(),
            })
            .collect();
        let local6 = local6_of(&ports);
        let rpf6 = ingress::rpf6_of(config, &local6);
        let vips6 = vips6_of(config);
        for p in &mut ports {
            if let Some(h) = p.host6.as_mut() {
                h.also = vips6.clone();
            }
        }
        for (i, p) in ports.iter_mut().enumerate() {
            if let Some(h) = &p.host6 {
                let nets: Vec<ipnet::Ipv6Net> = h.addrs.iter().map(|a| a.net).collect();
                let gw = config.routes6.iter().find(|r| r.prefix.prefix_len() == 0 && r.port == i).and_then(|r| r.via);
                p.host.set_ipv6(&nets, gw);
            }
        }
        let mut scratch = PacketPool::new(0);
        let stages = reload::build_stages(config, macs, seed, Vec::new(), None, &mut scratch);
        let mgmt = config
            .management
            .as_ref()
            .map(|m| (m.port, Management::new(&mut ports[m.port].host, m.listen, seed ^ 0x6d67_6d74)));
        Dataplane {
            loop_counters: DriverCounters::new(),
            free_memory: None,
            ports,
            stages,
            local_sorted: sorted(&local),
            local,
            local6,
            vips6,
            egress: Egress::with_static(config, now, seed),
            last_host_poll: now,
            config: config.clone(),
            config_text: String::new(),
            seed,
            mgmt,
            capture: None,
            trace: None,
            wires: wires_of(config),
            reloads: 0,
            events: crate::stage::Events::new(),
            mgmt_token: None,
            config_origin: String::from("boot"),
            mgmt_counters: Default::default(),
            mgmt_budget: crate::mgmt::Budget::new(crate::mgmt::BUDGET_MAX),
            clock: None,
            last_reload_us: None,
            rpf: ingress::rpf_of(config, &config.local_addresses()),
            rpf6,
            inbound_refused: ingress::inbound_refused_of(config),
            build: None,
            l2: l2::L2::new(config),
        }
    }

    /// Sets the bearer token every management request but `/health` (and
    /// `/metrics` with `metrics open`) must carry. Without one, the
    /// endpoint answers reads and refuses reloads.
    pub fn set_management_token(&mut self, token: Option<&[u8]>) {
        self.mgmt_token = token.map(|t| t.to_vec());
    }

    /// Sizes the management budget (bytes; see [`crate::mgmt::budget_for`]).
    pub fn set_management_budget(&mut self, bytes: usize) {
        self.mgmt_budget = crate::mgmt::Budget::new(bytes);
    }

    /// The management budget: (bytes held now, limit).
    pub fn management_budget(&self) -> (usize, usize) {
        (self.mgmt_budget.used(), self.mgmt_budget.limit())
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

    /// Records the image's version and git commit (`sluice_build_info`).
    pub fn set_build_info(&mut self, version: &'static str, git: &'static str) {
        self.build = Some((version, git));
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

    /// The IPv6 neighbour cache: (port, address, MAC, state), for `show neighbors`.
    pub fn egress_neighbors6(
        &self,
    ) -> impl Iterator<Item = (PortId, core::net::Ipv6Addr, Option<[u8; 6]>, &'static str)> + '_ {
        let now = self.last_host_poll;
        self.egress.neighbors6.entries(now).map(|(p, a, m, s, _)| (p, a, m, s))
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
    /// appliance's MAC at start, and gives each host stack its own few
    /// buffers (before the NICs' rings take the rest).
    pub fn announce(&mut self, pool: &mut PacketPool) {
        for port in &mut self.ports {
            if let Some(p) = port.host.gratuitous_arp(pool) {
                if let Err(p) = port.tx.push_back(p) {
                    pool.free(p);
                }
            }
            if let Some(h) = port.host6.as_mut() {
                h.start(pool, &mut port.tx);
            }
            port.host.top_up(pool);
        }
    }

    /// Processes a burst received on `port`. Every packet leaves the batch:
    /// to the host stack, a transmit queue, a stage or the egress that
    /// holds it, or back to the pool with a drop counted.
    pub fn receive(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool, now: Micros) {
        if let Some(c) = self.capture.as_mut().filter(|c| c.port == port) {
            for pkt in batch.iter() {
                c.record(pkt.data(), pkt.total_len(), now);
            }
        }
        self.refuse_bad_gso(port, batch, pool);
        if let Some(peer) = self.wires[port as usize] {
            return self.wire(port, peer, batch, pool);
        }
        if self.l2.active {
            self.receive_l2(port, batch, pool, now);
        } else {
            self.receive_port(port, batch, pool, now, 0);
        }
        self.flush_virtual(pool, now);
    }

    /// Drops super-packets whose segment size the NIC's device gave out of
    /// range for the port (see [`crate::offload::gso_size_acceptable`]):
    /// nothing after this trusts a device's number to bound its work.
    fn refuse_bad_gso(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool) {
        let mtu = self.ports[port as usize].mtu;
        let ok = |p: &crate::packet::Packet| crate::offload::gso_size_acceptable(p.meta.offload.gso_size, mtu);
        if batch.iter().all(ok) {
            return;
        }
        let c = &mut self.ports[port as usize].counters;
        for pkt in core::mem::take(batch) {
            if ok(&pkt) {
                // As many as were taken out: there is room.
                let _ = batch.push(pkt);
            } else {
                c.rx_packets += 1;
                c.rx_bytes += pkt.total_len() as u64;
                c.drop(DropReason::GsoSizeInvalid);
                pool.free(pkt);
            }
        }
    }

    /// One port's packets (`depth` 1: they came out of a tunnel); then the
    /// frames its tunnels decapsulated, on the tunnel ports.
    fn receive_port(&mut self, port: PortId, batch: &mut Batch, pool: &mut PacketPool, now: Micros, depth: u8) {
        let mut inner = Batch::new();
        if self.trace.as_mut().is_some_and(|t| t.wants(port, now)) {
            self.receive_traced(port, batch, pool, now, depth, &mut inner);
        } else {
            self.receive_inner(port, batch, pool, now, None, depth, &mut inner);
        }
        if !inner.is_empty() {
            // Only one level: what these carry is not decapsulated again.
            self.dispatch(inner, pool, now, depth + 1);
        }
    }

    /// Tracing: the packets one at a time, each recorded while the trace
    /// wants more.
    fn receive_traced(
        &mut self,
        port: PortId,
        batch: &mut Batch,
        pool: &mut PacketPool,
        now: Micros,
        depth: u8,
        inner: &mut Batch,
    ) {
        let Some(mut t) = self.trace.take() else { return };
        let mut one = Batch::new();
        let pkts: alloc::vec::Vec<crate::packet::Packet> = batch.drain(..).collect();
        for pkt in pkts {
            let tracing = t.left > 0 && t.filter.matches(pkt.data());
            if tracing {
                t.begin(&self.ports[port as usize].name, &pkt, &self.ports);
            }
            let _ = one.push(pkt);
            self.receive_inner(port, &mut one, pool, now, tracing.then_some(&mut t), depth, inner);
            if tracing {
                t.end();
            }
        }
        self.trace = Some(t);
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_inner(
        &mut self,
        port: PortId,
        batch: &mut Batch,
        pool: &mut PacketPool,
        now: Micros,
        mut trace: Option<&mut trace::Trace>,
        depth: u8,
        inner: &mut Batch,
    ) {
        let Dataplane {
            ports,
            stages,
            config,
            local_sorted,
            local6,
            vips6,
            egress,
            events,
            rpf,
            rpf6,
            inbound_refused,
            l2,
            ..
        } = self;
        let refused_to = inbound_refused.get(port as usize).map_or(&[][..], |v| v.as_slice());
        let pipeline = &config.pipelines[port as usize];
        let refused = &rpf[port as usize];
        let refused6 = &rpf6[port as usize];
        let vrf = l2.vrf.get(port as usize).copied().unwrap_or(0);
        // From the NIC itself: nothing of the buffer's last life counts. Else
        // the trunk or tunnel that handed it over set priority and insertion.
        let fresh = !l2.active;
        let insertion = l2.active && l2.tunnels.is_insertion(port);
        let tunnels = l2.active && !l2.tunnels.is_empty();
        let foreign: &[Ipv4Addr] = l2.foreign.get(port as usize).map_or(&[], |v| v.as_slice());
        let mut onward = Batch::new();
        for mut pkt in batch.drain(..) {
            // A fresh arrival, whatever the buffer carried before (a driver
            // or a harness may hand back a buffer without the pool's reset):
            // no routing decision yet. The NIC's offload notes stay.
            pkt.meta.in_port = port;
            pkt.meta.out_port = None;
            pkt.meta.local = false;
            pkt.meta.l2 = if fresh { vrf } else { pkt.meta.l2 & 0xf0 | vrf };
            let p = &mut ports[port as usize];
            p.counters.rx_packets += 1;
            p.counters.rx_bytes += pkt.len() as u64;
            // A service-insertion tunnel takes every inner frame: they are
            // another network's, passing through.
            let mac =
                if insertion { pkt.data().get(0..6).and_then(|m| m.try_into().ok()).unwrap_or(p.mac) } else { p.mac };
            let mut verdict = classify(
                (mac, p.address, p.host6.is_some()),
                local_sorted,
                (local6, vips6),
                pkt.data(),
                pkt.total_len(),
            );
            // Untagged Ethernet is all ingress parses so far: the L3 header
            // follows it (a VLAN tag would move this, and only this).
            pkt.meta.l3 = crate::wire::ETH_HLEN as u8;
            if matches!(verdict, Verdict::Pipeline | Verdict::Local)
                && !refused.is_empty()
                && !crate::ipv6::is_ipv6(pkt.l3())
            {
                // classify checked the IPv4 header: the source is there.
                let src = Ipv4Packet::new_unchecked(pkt.l3()).src_addr();
                if refused.refuses(src) {
                    verdict = Verdict::Drop(DropReason::SourceWrongPort);
                }
            }
            if verdict == Verdict::Pipeline && !refused6.is_empty() && crate::ipv6::is_ipv6(pkt.l3()) {
                // An IPv6 packet to route whose source is the appliance's
                // own, or (strict) behind another port.
                let src = crate::ipv6::src(pkt.l3());
                if refused6.iter().any(|n| n.contains(&src)) {
                    verdict = Verdict::Drop(DropReason::SourceWrongPort);
                }
            }
            if verdict == Verdict::Local && !foreign.is_empty() && !crate::ipv6::is_ipv6(pkt.l3()) {
                // Another VRF's address: routed in this one, not delivered.
                let dst = Ipv4Packet::new_unchecked(pkt.l3()).dst_addr();
                if foreign.binary_search(&dst).is_ok() {
                    verdict = Verdict::Pipeline;
                }
            }
            if verdict == Verdict::Pipeline && !refused_to.is_empty() && !crate::ipv6::is_ipv6(pkt.l3()) {
                // To be routed (not the appliance's own) to a destination
                // a stage refuses on this port (classify checked the header).
                let dst = u32::from(Ipv4Packet::new_unchecked(pkt.l3()).dst_addr());
                if let Some(&(_, _, reason)) = refused_to.iter().find(|&&(net, mask, _)| dst & mask == net) {
                    verdict = Verdict::Drop(reason);
                }
            }
            if verdict == Verdict::Local && tunnels && !crate::ipv6::is_ipv6(pkt.l3()) {
                match l2.tunnels.decap(&mut pkt, now) {
                    Ok(crate::tunnel::Decap::NotTunnel) => {}
                    Ok(crate::tunnel::Decap::Inner(t)) if depth == 0 => {
                        if let Some(tr) = trace.as_deref_mut() {
                            tr.note(format_args!("ingress: tunnel, decapsulated onto port {}", ports[t as usize].name));
                        }
                        // `inner` has the capacity of `batch`.
                        let _ = inner.push(pkt);
                        continue;
                    }
                    Ok(crate::tunnel::Decap::Inner(_)) => verdict = Verdict::Drop(DropReason::TunnelNested),
                    // Found inside a tunnel (whose port is never an underlay).
                    Err(DropReason::TunnelWrongPort) if depth > 0 => verdict = Verdict::Drop(DropReason::TunnelNested),
                    Err(reason) => verdict = Verdict::Drop(reason),
                }
            }
            if let Some(t) = trace.as_deref_mut() {
                t.note(format_args!("ingress: {verdict:?}"));
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
                Verdict::Local6 => {
                    use crate::ipv6::host::LocalKind;
                    let kind = ports[port as usize].host6.as_ref().map(|h| h.local_kind(pkt.l3()));
                    if kind == Some(LocalKind::HostStack) {
                        if pipeline.is_empty() {
                            to_host(ports, pool, pkt);
                        } else {
                            // Stages may claim it (a load balancer's
                            // full-NAT replies); else the host stack takes it.
                            pkt.meta.local = true;
                            let _ = onward.push(pkt);
                        }
                        continue;
                    }
                    to_host6(ports, egress, pool, pkt, kind, now);
                }
                Verdict::Arp => {
                    let arp = arp_of(pkt.data());
                    if let Some(arp) = &arp {
                        egress.observe_arp(port, arp, ports, pool, now);
                    }
                    let nets = l2.other_nets.get(port as usize).map_or(&[][..], |v| v.as_slice());
                    let p = &mut ports[port as usize];
                    let elsewhere = |a: Ipv4Addr| nets.iter().any(|n| n.contains(&a));
                    match arp
                        .filter(|_| !pkt.is_chained())
                        .and_then(|a| off_link_request(p, local_sorted, &a, elsewhere))
                    {
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
        // Stages that do not handle IPv6 are passed by (or drop) it; no
        // IPv6 gets this far unless a port has an IPv6 address.
        let v6 = !local6.is_empty() && onward.iter().any(|p| crate::ipv6::is_ipv6(p.l3()));
        for &s in pipeline {
            if onward.is_empty() {
                break;
            }
            let r = &mut stages[s];
            let handling = r.stage.ipv6();
            let mut aside = Batch::new();
            if v6 && handling != crate::stage::Ipv6Handling::Process {
                let mut keep = Batch::new();
                for pkt in onward.drain(..) {
                    if !crate::ipv6::is_ipv6(pkt.l3()) {
                        let _ = keep.push(pkt);
                    } else if handling == crate::stage::Ipv6Handling::Bypass {
                        let _ = aside.push(pkt);
                    } else {
                        r.counters.drops[DropReason::Ipv6Unsupported as usize] += 1;
                        ports[pkt.meta.in_port as usize].counters.drop(DropReason::Ipv6Unsupported);
                        pool.free(pkt);
                    }
                }
                onward = keep;
            }
            r.counters.packets += onward.len() as u64;
            r.stage.process(&mut onward, &mut StageContext::new(now, &r.name, pool, ports, &mut r.counters, events));
            for pkt in aside {
                // `onward` has room: the stage kept at most what it was given.
                if let Err(pkt) = onward.push(pkt) {
                    pool.free(pkt);
                }
            }
            if let Some(t) = trace.as_deref_mut() {
                t.step(&r.name, onward.first(), ports);
            }
        }
        for pkt in onward.drain(..) {
            if pkt.meta.out_port.is_some() {
                let out = pkt.meta.out_port.unwrap_or(0) as usize;
                egress.send(pkt, ports, pool, now);
                if let Some(t) = trace.as_deref_mut() {
                    let name = ports.get(out).map_or("?", |p| p.name.as_str());
                    t.step(&alloc::format!("egress ({name})"), None, ports);
                }
            } else if pkt.meta.local && crate::ipv6::is_ipv6(pkt.l3()) {
                // Unclaimed IPv6 to the appliance (or a VIP): TCP and UDP to
                // the host stack, the rest (echo to a VIP) to the port's
                // IPv6 host.
                let kind = ports[port as usize].host6.as_ref().map(|h| h.local_kind(pkt.l3()));
                match kind {
                    Some(crate::ipv6::host::LocalKind::HostStack) | None => to_host(ports, pool, pkt),
                    _ => to_host6(ports, egress, pool, pkt, kind, now),
                }
                if let Some(t) = trace.as_deref_mut() {
                    t.note(format_args!("host stack: delivered to the appliance"));
                }
            } else if pkt.meta.local {
                to_host(ports, pool, pkt);
                if let Some(t) = trace.as_deref_mut() {
                    t.note(format_args!("host stack: delivered to the appliance"));
                }
            } else if pkt.meta.inserted() {
                // Service insertion: back into the tunnel it came in.
                let mut pkt = pkt;
                let under = l2.tunnels.get(port).map_or(0, |t| t.cfg.underlay);
                match crate::tunnel::reflect(&mut pkt) {
                    Ok(()) => {
                        if let Some(t) = l2.tunnels.list.iter_mut().find(|t| t.port == port) {
                            t.counters.reflected += 1;
                        }
                        let c = &mut ports[port as usize].counters;
                        c.tx_packets += 1;
                        c.tx_bytes += pkt.len() as u64;
                        if let Err(pkt) = ports[under].tx.push_back(pkt) {
                            ports[port as usize].counters.drop(DropReason::TxRingFull);
                            pool.free(pkt);
                        }
                        if let Some(t) = trace.as_deref_mut() {
                            t.note(format_args!("tunnel: sent back to the sender, options kept"));
                        }
                    }
                    Err(reason) => {
                        ports[port as usize].counters.drop(reason);
                        pool.free(pkt);
                    }
                }
            } else {
                // No stage routed it.
                ports[port as usize].counters.drop(DropReason::NoRoute);
                pool.free(pkt);
                if let Some(t) = trace.as_deref_mut() {
                    t.note(format_args!("dropped: no stage routed it (no_route)"));
                }
            }
        }
    }

    /// The null pipeline: frames go out of the peer port untouched (but
    /// for offload work the peer's NIC cannot do: done here).
    fn wire(&mut self, port: PortId, peer: PortId, batch: &mut Batch, pool: &mut PacketPool) {
        let peer_offloads = self.ports[peer as usize].offloads;
        for pkt in batch.drain(..) {
            let len = pkt.total_len() as u64;
            let c = &mut self.ports[port as usize].counters;
            c.rx_packets += 1;
            c.rx_bytes += len;
            if peer_offloads {
                self.wire_one(port, peer, pkt, pool);
                continue;
            }
            let mss = pkt.meta.offload.gso_size;
            let ports = &mut self.ports;
            let sent = crate::offload::normalize(pkt, mss, false, pool, |p, pool| wire_one(ports, port, peer, p, pool));
            if let Err(reason) = sent {
                self.ports[port as usize].counters.drop(reason);
            }
        }
    }

    fn wire_one(&mut self, port: PortId, peer: PortId, pkt: crate::packet::Packet, pool: &mut PacketPool) {
        wire_one(&mut self.ports, port, peer, pkt, pool);
    }

    /// Runs stage and egress timers, the host stacks (those with work, and
    /// all of them now and then for their own timers) and the management
    /// endpoint.
    pub fn poll(&mut self, now: Micros, pool: &mut PacketPool) {
        self.poll_inner(now, pool);
        self.flush_virtual(pool, now);
    }

    fn poll_inner(&mut self, now: Micros, pool: &mut PacketPool) {
        let Dataplane { ports, stages, egress, events, .. } = self;
        for r in stages.iter_mut() {
            r.stage.poll(&mut StageContext::new(now, &r.name, pool, ports, &mut r.counters, events));
        }
        egress.poll(ports, pool, now);
        // Next hops that never answered ARP: the router tells the sources
        // (not for the appliance's own packets, NAT-translated ones among them).
        let router = if egress.unreachable.is_empty() {
            None
        } else {
            stages.iter().position(|r| r.stage.answers_unreachable())
        };
        while let Some(pkt) = egress.unreachable.pop_front() {
            let ours = if crate::ipv6::is_ipv6(pkt.l3()) {
                pkt.l3().len() < crate::ipv6::HLEN || self.local6.binary_search(&crate::ipv6::src(pkt.l3())).is_ok()
            } else {
                self.local.contains(&Ipv4Packet::new_unchecked(pkt.l3()).src_addr())
            };
            let Some(r) = router.filter(|_| !ours) else {
                pool.free(pkt);
                continue;
            };
            let r = &mut stages[r];
            let err =
                r.stage.unreachable(pkt, &mut StageContext::new(now, &r.name, pool, ports, &mut r.counters, events));
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
            if let Some(h) = port.host6.as_mut() {
                if timers_due {
                    h.poll(now, pool, &mut port.tx);
                }
                while let Some(n) = h.notes.pop_front() {
                    let text = match n {
                        crate::ipv6::host::Note::Duplicate(a) => alloc::format!(
                            "port {}: {a} is used by another node (duplicate address detection): not used",
                            port.name
                        ),
                        crate::ipv6::host::Note::Preferred(a) => {
                            alloc::format!("port {}: {a} passed duplicate address detection", port.name)
                        }
                    };
                    if self.events.len() >= crate::stage::MAX_EVENTS {
                        self.events.pop_front();
                    }
                    self.events.push_back(Event::Stage { stage: String::from("ipv6"), text });
                }
            }
        }
        if let Some((port, mut mgmt)) = self.mgmt.take() {
            let metrics_open = self.config.management.as_ref().is_some_and(|m| m.metrics_open);
            let access = crate::mgmt::Access { token: self.mgmt_token.as_deref(), metrics_open };
            let requests = mgmt.poll(&mut self.ports[port].host, now, &access, &mut self.mgmt_budget);
            for (conn, req) in requests {
                self.mgmt_counters = mgmt.counters;
                let response = self.answer(&req, pool, &mut mgmt.counters);
                // The request's buffer goes before the answer is charged.
                drop(req);
                if response.status == routes::DEFERRED {
                    // A capture started: it answers when it is done.
                    if let Some(c) = &mut self.capture {
                        c.conn = Some(conn);
                    }
                } else {
                    mgmt.respond(conn, response, &mut self.mgmt_budget);
                }
            }
            if self.capture.as_ref().is_some_and(|c| c.done(now)) {
                if let Some(c) = self.capture.take() {
                    let (conn, charged) = (c.conn, c.charged);
                    match conn {
                        Some(conn) => {
                            mgmt.respond_owned(conn, routes::pcap_response(c), charged, &mut self.mgmt_budget)
                        }
                        None => self.mgmt_budget.give(charged),
                    }
                }
            }
            self.mgmt_counters = mgmt.counters;
            self.mgmt = Some((port, mgmt));
        }
    }

    /// Hands port `port`'s transmit queue to `send` (the driver's burst),
    /// counting what it took; a capture on the port records each frame
    /// once, as it first reaches the queue.
    pub fn transmit(
        &mut self,
        port: PortId,
        now: Micros,
        send: impl FnOnce(&mut crate::hoststack::TxQueue) -> (usize, usize),
    ) {
        let p = &mut self.ports[port as usize];
        if let Some(c) = self.capture.as_mut().filter(|c| c.port == port) {
            let fresh = p.tx.len().saturating_sub(c.tx_recorded);
            for pkt in p.tx.iter().skip(p.tx.len() - fresh) {
                c.record(pkt.data(), pkt.total_len(), now);
            }
            c.tx_recorded = p.tx.len();
        }
        let (pkts, bytes) = send(&mut p.tx);
        p.counters.tx_packets += pkts as u64;
        p.counters.tx_bytes += bytes as u64;
        if let Some(c) = self.capture.as_mut().filter(|c| c.port == port) {
            c.tx_recorded = c.tx_recorded.saturating_sub(pkts);
        }
    }

    /// Returns every buffer the dataplane holds to the pool.
    pub fn drain(&mut self, pool: &mut PacketPool) {
        for r in &mut self.stages {
            r.stage.drain(pool);
        }
        self.egress.drain(pool);
        for port in &mut self.ports {
            port.host.drain(pool);
            while let Some(p) = port.tx.pop_front() {
                pool.free(p);
            }
        }
    }
}
