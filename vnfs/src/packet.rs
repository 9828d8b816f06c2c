//! Packet buffers, their metadata, and the pool they come from.
//!
//! A [`Packet`] owns one fixed-size buffer for its whole life. The pool hands
//! buffers to NIC receive rings; the same buffer travels through every stage
//! by value (moving a `Packet` moves a pointer, never the bytes) and is handed
//! to a transmit ring, then returned to the pool. Nothing on the fast path
//! allocates: all buffers are allocated once, when the pool is built.
//!
//! Layout of a buffer: `[headroom | frame .......... | tailroom]`. The frame
//! starts at `head`. Receive places the frame at [`HEADROOM`], leaving room in
//! front for the NIC's own header (virtio-net's 12 bytes) and for stages that
//! push headers. A received buffer can be transmitted as is.

use alloc::boxed::Box;
use alloc::vec::Vec;

/// Size of one packet buffer.
pub const BUF_SIZE: usize = 2048;
/// Bytes kept in front of a received frame.
pub const HEADROOM: usize = 128;
/// The most frame bytes a buffer can hold when it starts at [`HEADROOM`].
pub const MAX_FRAME: usize = BUF_SIZE - HEADROOM;
/// Packets per burst: what one receive call returns at most and what a stage
/// processes at once.
pub const BURST: usize = 32;

/// A burst of packets.
pub type Batch = heapless::Vec<Packet, BURST>;

/// Index of a port, in config order.
pub type PortId = u8;

/// Per-packet metadata that travels with the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The port the packet arrived on.
    pub in_port: PortId,
    /// Where routing decided to send it (`None`: not routed yet).
    pub out_port: Option<PortId>,
    /// The IPv4 next hop on `out_port` whose MAC the egress resolves.
    pub next_hop: core::net::Ipv4Addr,
    /// Addressed to one of the appliance's own addresses.
    pub local: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { in_port: 0, out_port: None, next_hop: core::net::Ipv4Addr::UNSPECIFIED, local: false }
    }
}

impl Meta {
    /// Routes the packet: out of `port`, to `next_hop`'s MAC.
    #[inline]
    pub fn route(&mut self, port: PortId, next_hop: core::net::Ipv4Addr) {
        self.out_port = Some(port);
        self.next_hop = next_hop;
    }
}

/// One owned packet buffer with its frame window and metadata.
pub struct Packet {
    buf: Box<[u8; BUF_SIZE]>,
    head: u16,
    len: u16,
    pub meta: Meta,
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet").field("head", &self.head).field("len", &self.len).field("meta", &self.meta).finish()
    }
}

impl Packet {
    fn new() -> Self {
        Packet { buf: Box::new([0; BUF_SIZE]), head: HEADROOM as u16, len: 0, meta: Meta::default() }
    }

    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the frame inside the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head as usize
    }

    /// Sets the frame window. Returns `false` (and changes nothing) if the
    /// window does not fit in the buffer.
    #[inline]
    pub fn set_window(&mut self, head: usize, len: usize) -> bool {
        if head.checked_add(len).is_none_or(|end| end > BUF_SIZE) {
            return false;
        }
        self.head = head as u16;
        self.len = len as u16;
        true
    }

    /// Sets the frame length, keeping `head`. Returns `false` if it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        self.set_window(self.head as usize, len)
    }

    /// The bytes in front of the frame (for a NIC header or pushed headers).
    #[inline]
    pub fn headroom_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.head as usize]
    }

    /// Address of the first byte of the buffer. The buffer never moves while
    /// the packet lives, so a driver may hand this address to a device.
    #[inline]
    pub fn buffer_addr(&self) -> usize {
        self.buf.as_ptr() as usize
    }

    /// Replaces the frame with `frame` at the standard headroom (slow path:
    /// the host stack and tests use it; the fast path never copies).
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        self.head = HEADROOM as u16;
        self.len = frame.len() as u16;
        self.data_mut().copy_from_slice(frame);
        true
    }
}

/// The one pool every buffer comes from and returns to.
pub struct PacketPool {
    free: Vec<Packet>,
    capacity: usize,
    /// Allocation requests refused because the pool was empty.
    pub exhausted: u64,
}

impl PacketPool {
    /// Allocates all `capacity` buffers now; nothing allocates later.
    pub fn new(capacity: usize) -> Self {
        let mut free = Vec::with_capacity(capacity);
        free.extend((0..capacity).map(|_| Packet::new()));
        PacketPool { free, capacity, exhausted: 0 }
    }

    /// Takes a buffer with an empty frame at the standard headroom.
    #[inline]
    pub fn alloc(&mut self) -> Option<Packet> {
        match self.free.pop() {
            Some(mut p) => {
                p.head = HEADROOM as u16;
                p.len = 0;
                p.meta = Meta::default();
                Some(p)
            }
            None => {
                self.exhausted += 1;
                None
            }
        }
    }

    /// Returns a buffer to the pool.
    #[inline]
    pub fn free(&mut self, p: Packet) {
        debug_assert!(self.free.len() < self.capacity, "pool overfilled");
        self.free.push(p);
    }

    /// Returns every packet of a batch to the pool.
    pub fn free_all(&mut self, batch: &mut Batch) {
        while let Some(p) = batch.pop() {
            self.free(p);
        }
    }

    /// Buffers currently in the pool.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers the pool was built with.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_round_trip_keeps_count() {
        let mut pool = PacketPool::new(4);
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!(pool.available(), 2);
        pool.free(a);
        pool.free(b);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn empty_pool_is_counted() {
        let mut pool = PacketPool::new(1);
        let a = pool.alloc().unwrap();
        assert!(pool.alloc().is_none());
        assert_eq!(pool.exhausted, 1);
        pool.free(a);
    }

    #[test]
    fn buffer_address_is_stable_across_moves() {
        let mut pool = PacketPool::new(1);
        let p = pool.alloc().unwrap();
        let addr = p.buffer_addr();
        let moved = [p];
        assert_eq!(moved[0].buffer_addr(), addr);
        let [p] = moved;
        pool.free(p);
    }

    #[test]
    fn window_outside_buffer_is_refused() {
        let mut pool = PacketPool::new(1);
        let mut p = pool.alloc().unwrap();
        assert!(!p.set_window(BUF_SIZE - 10, 11));
        assert!(!p.set_window(usize::MAX, 2));
        assert!(p.set_window(BUF_SIZE - 10, 10));
        assert!(!p.fill(&[0; MAX_FRAME + 1]));
        assert!(p.fill(&[1, 2, 3]));
        assert_eq!(p.data(), &[1, 2, 3]);
        pool.free(p);
    }
}
