//! virtio-net on the virtio-drivers crate's transports (modern PCI, MMIO v1
//! and v2), with sluice's own split virtqueue.
//!
//! virtio-drivers does feature-free transport work well, but its queue kicks
//! the device about twice per packet under EVENT_IDX and has no batch API
//! (FACTS.md). So the rings are driven here: many buffers are added, the
//! avail index is published once, and the device is notified only when the
//! standard `vring_need_event` test says it is waiting.

mod net;
mod queue;

pub use net::{VirtioNet, VirtioNetError, OFFLOADS};
