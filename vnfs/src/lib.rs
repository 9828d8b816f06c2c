//! Portable packet processing for sluice.
//!
//! Everything here is `no_std` + `alloc` under `#![forbid(unsafe_code)]`, so it runs the
//! same inside the unikernel image and in `cargo test` on the host. The kernel
//! wires NIC drivers to a [`dataplane::Dataplane`]; the dataplane owns the
//! per-port host stacks and counters and decides, for every received packet,
//! whether it is forwarded, dropped (with a named [`counters::DropReason`]) or
//! handed to the appliance's own host stack.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acl;
pub mod capture;
pub mod config;
pub mod configdrive;
pub mod conntrack;
pub mod counters;
pub mod csum;
pub mod dataplane;
pub mod egress;
pub mod flow;
pub mod hoststack;
pub mod icmp;
pub mod ipv6;
pub mod lb;
pub mod mgmt;
pub mod nat;
pub mod neighbor;
pub mod offload;
pub mod packet;
pub mod policer;
pub mod port;
pub mod ratelimit;
pub mod registry;
pub mod router;
pub mod stage;
pub mod standin;
pub mod stats;
pub mod table;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tunnel;
pub mod vlan;
pub mod wire;

/// Time as the data path sees it: microseconds since boot, from the kernel's
/// calibrated TSC (or any monotonic clock on the host).
pub type Micros = u64;

/// The largest number of ports one appliance drives.
pub const MAX_PORTS: usize = 32;
