//! The dataplane's report of every counter: ports, stages, the egress,
//! NICs, the management endpoint, the poll loop, the buffer pool. The
//! console's `stats` and `/metrics` are two sinks of this one report.

use alloc::string::String;
use core::fmt;

use super::Dataplane;
use crate::counters::{DropReason, Drops};
use crate::packet::PacketPool;
use crate::stats::{PromSink, StatsSink, TextSink};

fn report_drops(sink: &mut dyn StatsSink, drops: &Drops) {
    for r in DropReason::ALL {
        sink.drops(r.name(), drops[*r as usize]);
    }
}

impl Dataplane {
    /// Reports every counter to `sink`; with `pool`, the buffer pool too.
    pub fn report(&self, sink: &mut dyn StatsSink, pool: Option<&PacketPool>) {
        for p in &self.ports {
            let c = &p.counters;
            sink.object("port", &[("port", &p.name)]);
            sink.counter("rx_packets", "packets received", c.rx_packets);
            sink.counter("rx_bytes", "bytes received", c.rx_bytes);
            sink.counter("tx_packets", "packets transmitted", c.tx_packets);
            sink.counter("tx_bytes", "bytes transmitted", c.tx_bytes);
            sink.counter("local_packets", "packets handed to the appliance's own host stack", c.local_packets);
            // The total is for people; Prometheus sums the per-reason
            // series itself (one family, one meaning).
            sink.text("drops", &alloc::format!("{}", c.total_drops()));
            report_drops(sink, &c.drops);
        }
        for r in &self.stages {
            let c = &r.counters;
            sink.object("stage", &[("stage", &r.name)]);
            sink.counter("packets", "packets the stage was given", c.packets);
            sink.counter("tx", "packets the stage queued for transmission", c.tx);
            r.stage.report(sink);
            report_drops(sink, &c.drops);
            r.stage.report_details(sink);
        }
        for (i, t) in self.l2.trunks.iter().enumerate() {
            let name = &self.ports[i].name;
            for (outer, vid, n) in &t.unknown.per_vlan {
                let vlan = if *outer == 0 { alloc::format!("{vid}") } else { alloc::format!("{outer}.{vid}") };
                sink.object("vlan_unknown", &[("port", name), ("vlan", &vlan)]);
                sink.counter("frames", "frames of a VLAN no sub-port takes", *n);
            }
            if t.unknown.others > 0 {
                sink.object("vlan_unknown", &[("port", name), ("vlan", "other")]);
                sink.counter("frames", "frames of a VLAN no sub-port takes", t.unknown.others);
            }
        }
        for t in &self.l2.tunnels.list {
            let c = &t.counters;
            sink.object("tunnel", &[("port", &self.ports[t.port as usize].name)]);
            sink.counter("decapsulated", "frames taken out of the tunnel", c.decapsulated);
            sink.counter("encapsulated", "frames put into the tunnel (a copy per remote)", c.encapsulated);
            sink.counter("flooded", "frames sent to every remote (broadcast, multicast, unknown unicast)", c.flooded);
            sink.counter("reflected", "service insertion: packets sent back into their tunnel", c.reflected);
        }
        for p in &self.ports {
            if let Some(h) = &p.host6 {
                sink.object("nd", &[("port", &p.name)]);
                h.counters.report(sink);
                sink.gauge(
                    "addresses",
                    "IPv6 addresses in use (duplicate address detection passed)",
                    h.preferred().count() as u64,
                );
            }
        }
        let e = &self.egress;
        sink.object("egress", &[("egress", "egress")]);
        e.counters.report(sink);
        sink.gauge("neighbors", "resolved and pending neighbours", e.neighbors.len() as u64);
        sink.gauge("neighbor_capacity", "neighbour cache entries", e.neighbors.capacity() as u64);
        sink.counter("neighbors_evicted", "neighbours evicted from a full cache", e.neighbors.counters.evicted);
        sink.counter("neighbors_failed", "next hops that never answered ARP", e.neighbors.counters.failed);
        if self.config.has_ipv6() {
            sink.gauge("neighbors6", "IPv6 neighbours (all states)", e.neighbors6.len() as u64);
            sink.counter(
                "neighbors6_failed",
                "IPv6 next hops that never answered or stopped answering solicitations",
                e.neighbors6.counters.failed,
            );
        }
        let sockets = self.ports.iter().map(|p| p.host.socket_count()).sum::<usize>();
        sink.gauge("host_sockets", "sockets open in the host stacks", sockets as u64);
        for p in self.ports.iter().filter(|p| !p.nic_counters.is_empty()) {
            sink.object("nic", &[("port", &p.name)]);
            sink.gauge("offloads", "1 if the NIC does checksum and segmentation offloads", p.offloads as u64);
            for s in &p.nic_counters {
                s.report(sink);
            }
            sink.counter(
                "host_tx_no_buffer",
                "host stack frames lost for want of a buffer",
                p.host.counters.tx_no_buffer,
            );
        }
        if self.config.management.is_some() {
            sink.object("mgmt", &[("endpoint", "http")]);
            self.mgmt_counters.report(sink);
            sink.gauge("budget_used_bytes", "bytes management buffers hold now", self.mgmt_budget.used() as u64);
            sink.gauge("budget_bytes", "bytes management buffers may hold together", self.mgmt_budget.limit() as u64);
        }
        if !self.loop_counters.is_empty() {
            sink.object("loop", &[("loop", "poll")]);
            for s in &self.loop_counters {
                s.report(sink);
            }
        }
        if let Some(pool) = pool {
            sink.object("pool", &[]);
            sink.gauge("buffers_available", "packet buffers free", pool.available() as u64);
            sink.gauge("buffers", "packet buffers in all", pool.capacity() as u64);
        }
        sink.object("config", &[]);
        sink.counter("reloads", "configs applied with PUT /config", self.reloads);
        if let Some((version, git)) = self.build {
            sink.object("build", &[("version", version), ("git", git)]);
            sink.gauge("info", "the image's version and git commit (always 1)", 1);
        }
        if let Some(clock) = self.clock {
            sink.object("uptime", &[]);
            sink.gauge("seconds", "seconds since the image started", clock() / 1_000_000);
        }
    }

    /// Writes the counters as the console's `stats` lines: one line per
    /// port, `stats port=NAME rx_packets=N ... drop_REASON=N` (non-zero
    /// drops only), then one per stage, `stage name=NAME packets=N ...`,
    /// and so on.
    pub fn write_stats(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let mut sink = TextSink::default();
        self.report(&mut sink, None);
        w.write_str(&sink.finish())
    }

    /// Every counter in the Prometheus text exposition format: the same
    /// report as `write_stats`, one family per name.
    pub fn metrics(&self, pool: &PacketPool) -> String {
        let mut sink = PromSink::default();
        self.report(&mut sink, Some(pool));
        sink.finish()
    }
}
