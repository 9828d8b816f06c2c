//! Building the stages of a config, and replacing the running config with
//! a new one between bursts, keeping what did not change.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use super::{ingress, sorted, Dataplane, RELOAD_RESERVE};
use crate::config::{self, BuildContext, Config, StageInstance};
use crate::egress::Egress;
use crate::packet::PacketPool;
use crate::stage::{Stage, StageCounters};

/// A stage the dataplane runs: the instance's name and kind, the stage and
/// its counters.
pub struct Running {
    pub name: String,
    pub kind: &'static str,
    pub stage: Box<dyn Stage>,
    pub counters: StageCounters,
}

/// Builds the running stages of `config` (in the order of
/// `config.stages`, which the pipelines index), taking over stages of
/// `keep` that `reuse` allows.
pub(super) fn build_stages(
    config: &Config,
    macs: &[[u8; 6]],
    seed: u64,
    mut keep: Vec<(StageInstance, Running)>,
    old: Option<&Config>,
    pool: &mut PacketPool,
) -> Vec<Running> {
    let mut out = Vec::with_capacity(config.stages.len());
    for inst in &config.stages {
        let same_name = keep.iter().position(|(o, _)| o.name == inst.name && core::ptr::eq(o.def, inst.def));
        let taken = same_name.and_then(|i| {
            let (o, mut r) = keep.swap_remove(i);
            let reusable = old.is_some_and(|old| inst.config.reusable(&*o.config, old, config));
            if reusable || r.stage.reconfigure(inst.config.as_any()) {
                Some(r)
            } else {
                r.stage.drain(pool);
                None
            }
        });
        out.push(taken.unwrap_or_else(|| Running {
            name: inst.name.clone(),
            kind: inst.def.kind,
            stage: (inst.def.build)(&*inst.config, &BuildContext { name: &inst.name, config, macs, seed }),
            counters: StageCounters::default(),
        }));
    }
    for (_, mut r) in keep {
        r.stage.drain(pool);
    }
    out
}

impl Dataplane {
    /// Replaces the running config with `text`, between bursts. Ports and
    /// the management endpoint cannot change while running. Stages whose
    /// settings are unchanged keep their state (NAT sessions, LB flows),
    /// so established connections survive a reload that touches only
    /// routes, say; a stage that can take new settings in place (the load
    /// balancer) does. On error nothing changes and the errors come back as
    /// `NAME:line:column: reason` lines.
    pub fn reload(&mut self, name: &str, text: &str, pool: &mut PacketPool) -> Result<(), String> {
        let new = config::parse_with(text, self.config.registry.0).map_err(|errors| {
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
        if new.wires != self.config.wires {
            return Err(alloc::format!("{name}: wires cannot change while running\n"));
        }
        if new.options != self.config.options {
            return Err(alloc::format!("{name}: `options` apply at boot; boot with the new config\n"));
        }
        if new.nics != self.config.nics {
            return Err(alloc::format!("{name}: `nic` statements apply at boot; boot with the new config\n"));
        }
        let old = &self.config;
        let kept = |inst: &StageInstance| {
            old.stages
                .iter()
                .find(|o| o.name == inst.name && core::ptr::eq(o.def, inst.def))
                .is_some_and(|o| inst.config.reusable(&*o.config, old, &new))
        };
        if let Some(free) = self.free_memory {
            // Rebuilt tables replace the old ones: refuse before touching
            // anything if the RAM cannot hold the new ones. A stage's old
            // tables go once the new ones stand, so both are counted.
            let (mut need, mut freed) = (0, 0);
            let mut parts = String::new();
            for inst in new.stages.iter().filter(|i| !kept(i)) {
                let bytes = inst.config.table_bytes(&new);
                need += bytes;
                let _ = write!(parts, "{} {} KiB, ", inst.name, bytes / 1024);
            }
            for o in &old.stages {
                if !new.stages.iter().any(|i| i.name == o.name && kept(i)) {
                    freed += o.config.table_bytes(old);
                }
            }
            if new.arp.entries != old.arp.entries {
                need += new.neighbor_table_bytes();
                freed += old.neighbor_table_bytes();
                let _ = write!(parts, "neighbours {} KiB, ", new.neighbor_table_bytes() / 1024);
            }
            let available = (free() + freed).saturating_sub(RELOAD_RESERVE);
            if need > available {
                return Err(alloc::format!(
                    "{name}: the new tables need {} KiB ({}) but {} KiB of RAM is free; the running config stays\n",
                    need / 1024,
                    parts.trim_end_matches(", "),
                    available / 1024
                ));
            }
        }
        let running = core::mem::take(&mut self.stages);
        let keep: Vec<(StageInstance, Running)> = self.config.stages.iter().cloned().zip(running).collect();
        let macs: Vec<[u8; 6]> = self.ports.iter().map(|p| p.mac).collect();
        self.stages = build_stages(&new, &macs, self.seed, keep, Some(&self.config), pool);
        if new.arp != self.config.arp {
            self.egress.drain(pool);
            self.egress = Egress::with_static(&new, self.last_host_poll, self.seed);
        } else if new.neighbors != self.config.neighbors || new.neighbors6 != self.config.neighbors6 {
            // Packets held for an address that just became permanent were
            // waiting for an ARP reply that is now moot: let them go.
            for p in self.egress.install_static(&new, self.last_host_poll) {
                pool.free(p);
            }
        }
        // IPv6 next hops by the index the new router's routes carry (the
        // held packets wait on addresses, not indices).
        self.egress.gateways6 = new.gateways6();
        for (i, p) in self.ports.iter_mut().enumerate() {
            if let Some(h) = p.host6.as_mut() {
                h.set_ra(new.ras.iter().find(|r| r.port == i), p.mtu, self.last_host_poll);
            }
        }
        let local = new.local_addresses();
        if local != self.local {
            // smoltcp flushes its neighbour cache when its addresses change,
            // which stalls the health checks in flight: only when needed.
            for p in &mut self.ports {
                p.host.set_also(&local);
            }
        }
        self.local = local;
        self.local_sorted = sorted(&self.local);
        self.rpf = ingress::rpf_of(&new, &self.local);
        self.rpf6 = ingress::rpf6_of(&new, &self.local6);
        self.inbound_refused = ingress::inbound_refused_of(&new);
        self.vips6 = super::vips6_of(&new);
        for p in &mut self.ports {
            if let Some(h) = p.host6.as_mut() {
                h.also = self.vips6.clone();
            }
        }
        // Tunnels follow the new routes to their remotes.
        self.l2.tunnels.update(new.ports.iter().enumerate().filter_map(|(i, p)| match &p.kind {
            crate::config::PortKind::Tunnel(t) => Some((i, t.clone())),
            _ => None,
        }));
        self.config = new;
        self.config_text = text.into();
        self.reloads += 1;
        Ok(())
    }
}
