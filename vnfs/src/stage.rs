//! The stage framework: how packet-processing features plug into the
//! dataplane.
//!
//! A [`Stage`] gets a burst of packets that earlier stages passed on. For
//! each packet it may rewrite it, route it (set `meta.out_port` and
//! `meta.next_hop`), drop it with a [`DropReason`], keep it, or hand it to
//! the host stack; what stays in the burst goes on to the next stage. A
//! pipeline is the list of stages the config gives an input port. After the
//! last stage, a routed packet goes to the egress (fragmentation, ARP,
//! Ethernet rewrite), a packet for the appliance's own address to its host
//! stack, and anything else is dropped as `no_route`.
//!
//! Every verdict goes through [`StageContext`], which keeps the per-port and
//! per-stage counters, so a stage cannot forget to count.

use alloc::string::String;
use core::any::Any;

use crate::counters::DropReason;
use crate::packet::{Batch, Packet, PacketPool, PortId};
use crate::port::Port;
use crate::stats::StatsSink;
use crate::Micros;

/// Something an operator wants in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A `PUT /config`: applied, or refused with the reason.
    Reloaded { ok: bool, why: String },
    /// A stage's news (a backend went up or down), as one line.
    Stage { stage: String, text: String },
}

/// Counters of one stage (all ports together).
#[derive(Clone, Debug, Default)]
pub struct StageCounters {
    /// Packets the stage was given.
    pub packets: u64,
    /// Packets it queued for transmission (forwarded, and any it originated).
    pub tx: u64,
    /// Packets it dropped, by reason.
    pub drops: crate::counters::Drops,
}

/// What a stage sees of the dataplane while it runs.
pub struct StageContext<'a> {
    pub now: Micros,
    /// The running stage's instance name.
    pub name: &'a str,
    pub pool: &'a mut PacketPool,
    ports: &'a mut [Port],
    counters: &'a mut StageCounters,
    events: &'a mut Events,
}

/// Things worth a log line (the kernel logs them with defmt).
pub type Events = alloc::collections::VecDeque<Event>;
/// Events kept until the kernel takes them; older ones are dropped.
pub const MAX_EVENTS: usize = 64;

impl<'a> StageContext<'a> {
    pub(crate) fn new(
        now: Micros,
        name: &'a str,
        pool: &'a mut PacketPool,
        ports: &'a mut [Port],
        counters: &'a mut StageCounters,
        events: &'a mut Events,
    ) -> Self {
        StageContext { now, name, pool, ports, counters, events }
    }

    /// Records a line of the stage's news for the log.
    pub fn note(&mut self, text: String) {
        let stage = self.name.into();
        self.event(Event::Stage { stage, text });
    }

    /// Records an event for the log.
    pub fn event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Queues `pkt` for transmission on `port`.
    #[inline]
    pub fn forward(&mut self, port: PortId, pkt: Packet) {
        let Some(p) = self.ports.get_mut(port as usize) else {
            return self.drop(pkt, DropReason::NoRoute);
        };
        match p.tx.push_back(pkt) {
            Ok(()) => self.counters.tx += 1,
            Err(pkt) => {
                p.counters.drop(DropReason::TxRingFull);
                self.counters.drops[DropReason::TxRingFull as usize] += 1;
                self.pool.free(pkt);
            }
        }
    }

    /// Hands `pkt` to the host stack of the port it arrived on.
    pub fn local(&mut self, pkt: Packet) {
        crate::port::to_host(self.ports, self.pool, pkt);
    }

    /// Drops `pkt`: counted on its input port and on this stage.
    #[inline]
    pub fn drop(&mut self, pkt: Packet, reason: DropReason) {
        self.count_drop(pkt.meta.in_port, reason);
        self.pool.free(pkt);
    }

    /// Counts a drop whose buffer the stage reuses (e.g. for an ICMP error).
    #[inline]
    pub fn count_drop(&mut self, in_port: PortId, reason: DropReason) {
        if let Some(p) = self.ports.get_mut(in_port as usize) {
            p.counters.drop(reason);
        }
        self.counters.drops[reason as usize] += 1;
    }

    /// A fresh buffer, if the pool has one.
    #[inline]
    pub fn alloc(&mut self) -> Option<Packet> {
        self.pool.alloc()
    }

    /// The host stack of a port (health checks open connections on it).
    pub fn host(&mut self, port: PortId) -> Option<&mut crate::hoststack::HostStack> {
        self.ports.get_mut(port as usize).map(|p| &mut p.host)
    }
}

/// Runs `f` on every packet of `batch` in order; the packets it gives back
/// stay in the batch (in order) for the next stage, the others it has
/// dropped, queued or kept.
#[inline]
pub fn for_each_packet(batch: &mut Batch, mut f: impl FnMut(Packet) -> Option<Packet>) {
    let mut onward = Batch::new();
    for pkt in batch.drain(..) {
        if let Some(pkt) = f(pkt) {
            // Same capacity as `batch`: at most one packet out per packet in.
            let _ = onward.push(pkt);
        }
    }
    *batch = onward;
}

/// What a stage does with IPv6 packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Handling {
    /// It is given them like any packet.
    Process,
    /// They pass it untouched (a NAT44 or an IPv4 load balancer has
    /// nothing to do with them).
    Bypass,
    /// They are dropped as `ipv6_unsupported` (a filter that cannot
    /// read them must not let them through).
    Drop,
}

/// A packet-processing feature.
pub trait Stage {
    /// What the framework does with IPv6 packets before this stage (the
    /// stage sees IPv4 only unless it says `Process`).
    fn ipv6(&self) -> Ipv6Handling {
        Ipv6Handling::Bypass
    }

    /// Processes a burst. Packets left in `batch` go on to the next stage.
    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>);

    /// Runs timers; called once per loop turn. Must do bounded work.
    fn poll(&mut self, _cx: &mut StageContext<'_>) {}

    /// Reports the stage's own counters and gauges, on the stage's
    /// object (the framework has opened it and reported packets, tx and
    /// drops).
    fn report(&self, _sink: &mut dyn StatsSink) {}

    /// Reports objects of its own (per service, per backend…).
    fn report_details(&self, _sink: &mut dyn StatsSink) {}

    /// Writes the stage's view `what` (`sessions`, `backends`…) as text,
    /// for `GET /show/WHAT` and the console's `show`; `false` if the stage
    /// has no such view. `query` holds the request's `key=value` pairs
    /// (filters, `offset`, `limit`); the work must stay bounded.
    fn show(&self, _what: &str, _query: &[(&str, &str)], _now: Micros, _out: &mut String) -> bool {
        false
    }

    /// Returns every packet the stage holds to the pool.
    fn drain(&mut self, _pool: &mut PacketPool) {}

    /// Takes changed settings (the feature's own config type) in place,
    /// keeping the state that did not change; `false` if it cannot, and
    /// the dataplane builds a new stage.
    fn reconfigure(&mut self, _settings: &dyn Any) -> bool {
        false
    }

    /// Whether the stage answers packets whose next hop never answered
    /// ARP ([`unreachable`](Self::unreachable)): the router does.
    fn answers_unreachable(&self) -> bool {
        false
    }

    /// A packet the egress could not deliver because its next hop did not
    /// answer ARP (already counted as dropped). The router answers it with
    /// ICMP host unreachable and returns that, routed; others let it go.
    fn unreachable(&mut self, pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        cx.pool.free(pkt);
        None
    }
}
