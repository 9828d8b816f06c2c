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
//!
//! A frame larger than one buffer (a TCP segmentation super-packet of up to
//! 64 KiB that a NIC with offloads received in several buffers) is a *chain*:
//! the head packet holds the first buffer — every header is in it — and a
//! tail of further buffers that hold the rest of the payload. Stages see and
//! rewrite the head; [`Packet::total_len`] counts the whole frame. Tails come
//! from the pool's spare lists, so chaining allocates nothing either, and
//! [`PacketPool::free`] returns a chain whole.

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

/// Buffers one frame may span: 64 KiB of a segmentation super-packet in
/// buffers of at least 1.9 KiB.
pub const MAX_SEGMENTS: usize = 36;

/// The further buffers of a chained frame.
pub type Tail = heapless::Vec<Packet, MAX_SEGMENTS>;

/// Work a NIC with offloads left for the next one (VIRTIO 1.2 §5.1.6: the
/// fields of `virtio_net_hdr`, NIC-neutral). A stage that rewrites headers
/// keeps them valid: offsets count from the frame start and no stage moves
/// the L3 header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The transport checksum is *partial*: its field holds only the
    /// pseudo-header sum, and whoever transmits completes it over the bytes
    /// from `csum_start` (NIC or software).
    pub csum_partial: bool,
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start` (TCP 16, UDP 6; a
    /// byte, so that `Meta`, and with it `Packet`, stays small: a larger
    /// `Packet` costs every burst move, +18 ns a packet at 48 bytes
    /// instead of 40 in `make bench`).
    pub csum_offset: u8,
    /// A TCP/IPv4 segmentation super-packet: the NIC that sends it cuts it
    /// into segments of `gso_size` payload bytes (0: an ordinary packet).
    pub gso_size: u16,
}

impl Offload {
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_size != 0
    }
}

/// Per-packet metadata that travels with the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The port the packet arrived on.
    pub in_port: PortId,
    /// Where routing decided to send it (`None`: not routed yet).
    pub out_port: Option<PortId>,
    /// The IPv4 next hop on `out_port` whose MAC the egress resolves. For
    /// IPv6 (16 bytes would grow every packet) it holds an index instead:
    /// see [`Meta::route6`].
    pub next_hop: core::net::Ipv4Addr,
    /// Addressed to one of the appliance's own addresses.
    pub local: bool,
    /// Where the L3 (IPv4) header starts in the frame: the L2 header's
    /// length, as ingress parsed it (an untagged frame until then).
    pub l3: u8,
    /// Checksum and segmentation work left to the transmitting NIC.
    pub offload: Offload,
    /// Bits 0-3: the VRF the packet is routed in (its input port's, or
    /// the one a NAT translated it into); bits 4-6: the 802.1p priority it
    /// arrived with; bit 7: it came out of a Geneve service-insertion
    /// tunnel and goes back into it (see `tunnel`). One byte, so that
    /// `Packet` stays at 40.
    pub l2: u8,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            in_port: 0,
            out_port: None,
            next_hop: core::net::Ipv4Addr::UNSPECIFIED,
            local: false,
            l3: crate::wire::ETH_HLEN as u8,
            offload: Offload::default(),
            l2: 0,
        }
    }
}

impl Meta {
    /// Routes the packet: out of `port`, to `next_hop`'s MAC.
    #[inline]
    pub fn route(&mut self, port: PortId, next_hop: core::net::Ipv4Addr) {
        self.out_port = Some(port);
        self.next_hop = next_hop;
    }

    /// Routes an IPv6 packet out of `port`: `gateway` is 0 when the
    /// destination is on the link, else the 1-based index of the next hop
    /// in the config's [`gateways6`](crate::config::Config::gateways6).
    #[inline]
    pub fn route6(&mut self, port: PortId, gateway: u32) {
        self.out_port = Some(port);
        self.next_hop = core::net::Ipv4Addr::from(gateway);
    }

    /// The VRF the packet is routed in.
    #[inline]
    pub fn vrf(&self) -> usize {
        (self.l2 & 0x0f) as usize
    }

    #[inline]
    pub fn set_vrf(&mut self, vrf: usize) {
        self.l2 = self.l2 & 0xf0 | (vrf as u8 & 0x0f);
    }

    /// The 802.1p priority the frame arrived with (0 untagged).
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.l2 >> 4 & 7
    }

    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        self.l2 = self.l2 & 0x8f | (pcp & 7) << 4;
    }

    /// Whether the packet goes back into the service-insertion tunnel it
    /// came from.
    #[inline]
    pub fn inserted(&self) -> bool {
        self.l2 & 0x80 != 0
    }

    #[inline]
    pub fn set_inserted(&mut self, on: bool) {
        self.l2 = self.l2 & 0x7f | (on as u8) << 7;
    }

    /// The IPv6 gateway index [`route6`](Self::route6) stored.
    #[inline]
    pub fn gateway6(&self) -> u32 {
        u32::from(self.next_hop)
    }
}

/// One owned packet buffer with its frame window and metadata.
pub struct Packet {
    buf: Box<[u8; BUF_SIZE]>,
    head: u16,
    len: u16,
    /// Bytes of the frame in `tail`.
    tail_len: u32,
    tail: Option<Box<Tail>>,
    pub meta: Meta,
}

impl core::fmt::Debug for Packet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet")
            .field("head", &self.head)
            .field("len", &self.len)
            .field("tail_len", &self.tail_len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Packet {
    fn new() -> Self {
        Packet {
            buf: Box::new([0; BUF_SIZE]),
            head: HEADROOM as u16,
            len: 0,
            tail_len: 0,
            tail: None,
            meta: Meta::default(),
        }
    }

    /// The frame bytes in this buffer (the whole frame unless chained).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head as usize..self.head as usize + self.len as usize]
    }

    /// The bytes from the L3 header on (in this buffer), where ingress
    /// found it ([`Meta::l3`]); empty if the frame is shorter.
    #[inline]
    pub fn l3(&self) -> &[u8] {
        self.data().get(self.meta.l3 as usize..).unwrap_or(&[])
    }

    /// Makes the frame's L2 header a plain Ethernet header's length, moving
    /// the window's start so that [`crate::wire::ETH_HLEN`] bytes precede the L3 header
    /// (after a tag was parsed at ingress); the egress then writes the header.
    /// `false` if the window cannot move (a frame in several buffers, or no
    /// room in front).
    pub fn untag(&mut self) -> bool {
        use crate::wire::ETH_HLEN;
        let l3 = self.meta.l3 as usize;
        if l3 == ETH_HLEN {
            return true;
        }
        let Some(head) = (self.head() + l3).checked_sub(ETH_HLEN) else { return false };
        let Some(len) = (self.len() + ETH_HLEN).checked_sub(l3) else { return false };
        if !self.set_window(head, len) {
            return false;
        }
        self.meta.l3 = ETH_HLEN as u8;
        true
    }

    /// The same, writable.
    #[inline]
    pub fn l3_mut(&mut self) -> &mut [u8] {
        let at = self.meta.l3 as usize;
        let d = self.data_mut();
        let at = at.min(d.len());
        &mut d[at..]
    }

    /// Frame bytes in this buffer.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Length of the whole frame, tail included.
    #[inline]
    pub fn total_len(&self) -> usize {
        self.len as usize + self.tail_len as usize
    }

    /// The IPv4 header at the offset ingress recorded, checked against the
    /// whole frame, tail included ([`crate::wire::ipv4_header`]): what a
    /// filter reads of a super-packet. `None`: it cannot be judged (drop).
    pub fn ipv4_header(&self) -> Option<smoltcp::wire::Ipv4Packet<&[u8]>> {
        crate::wire::ipv4_header(self.l3(), self.total_len().saturating_sub(self.meta.l3 as usize))
    }

    /// Whether the frame continues in further buffers.
    #[inline]
    pub fn is_chained(&self) -> bool {
        self.tail.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// The further buffers of a chained frame (empty if not chained).
    #[inline]
    pub fn tail(&self) -> &[Packet] {
        self.tail.as_deref().map_or(&[], |t| t.as_slice())
    }

    /// Copies `out.len()` frame bytes starting at `offset` of the whole
    /// frame (across the tail). Returns `false` if the frame is shorter.
    pub fn copy_out(&self, mut offset: usize, out: &mut [u8]) -> bool {
        let mut done = 0;
        for seg in core::iter::once(self).chain(self.tail()) {
            let d = seg.data();
            if offset >= d.len() {
                offset -= d.len();
                continue;
            }
            let n = (d.len() - offset).min(out.len() - done);
            out[done..done + n].copy_from_slice(&d[offset..offset + n]);
            done += n;
            offset = 0;
            if done == out.len() {
                return true;
            }
        }
        done == out.len()
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
    /// window does not fit in the buffer, or the packet is chained (a
    /// rebuild in place must first return the tail with
    /// [`PacketPool::release_tail`]).
    #[inline]
    pub fn set_window(&mut self, head: usize, len: usize) -> bool {
        if self.tail_len != 0 || head.checked_add(len).is_none_or(|end| end > BUF_SIZE) {
            return false;
        }
        self.head = head as u16;
        self.len = len as u16;
        true
    }

    /// Moves the start of the frame to `head`, keeping where this buffer's
    /// part of it ends: headers pushed in front (`head` smaller) or taken
    /// off (larger). Works on a chained frame too (its tail stays).
    /// `false` (nothing changed) if `head` lies outside the buffer or past
    /// the end of this buffer's bytes.
    #[inline]
    pub fn move_start(&mut self, head: usize) -> bool {
        let end = self.head as usize + self.len as usize;
        if head > end {
            return false;
        }
        self.head = head as u16;
        self.len = (end - head) as u16;
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
        if frame.len() > MAX_FRAME || self.tail_len != 0 {
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
    /// Empty tail lists for chaining (allocated at start, reused). Boxed:
    /// a packet takes one by moving a pointer, not 1.7 KiB.
    #[allow(clippy::vec_box)]
    tails: Vec<Box<Tail>>,
    /// Allocation requests refused because the pool was empty.
    pub exhausted: u64,
    /// Chains refused because no tail list was free.
    pub tails_exhausted: u64,
}

impl PacketPool {
    /// Allocates all `capacity` buffers now; nothing allocates later.
    pub fn new(capacity: usize) -> Self {
        Self::with_tails(capacity, 0)
    }

    /// A pool that can also chain `tails` frames at once (NICs with
    /// receive offloads need some).
    pub fn with_tails(capacity: usize, tails: usize) -> Self {
        let mut free = Vec::with_capacity(capacity);
        free.extend((0..capacity).map(|_| Packet::new()));
        let tails = (0..tails).map(|_| Box::new(Tail::new())).collect();
        PacketPool { free, capacity, tails, exhausted: 0, tails_exhausted: 0 }
    }

    /// Appends `seg`'s frame bytes to `head`'s frame as a further buffer.
    /// Gives `seg` back if no tail list is free or the chain is full.
    pub fn append(&mut self, head: &mut Packet, seg: Packet) -> Result<(), Packet> {
        if head.tail.is_none() {
            match self.tails.pop() {
                Some(t) => head.tail = Some(t),
                None => {
                    self.tails_exhausted += 1;
                    return Err(seg);
                }
            }
        }
        let n = seg.len() as u32;
        // `tail` was just made Some.
        let tail = head.tail.as_mut().expect("tail list attached");
        tail.push(seg)?;
        head.tail_len += n;
        Ok(())
    }

    /// Returns a chained packet's tail buffers to the pool: the packet keeps
    /// only the bytes in its first buffer.
    pub fn release_tail(&mut self, pkt: &mut Packet) {
        if let Some(mut t) = pkt.tail.take() {
            while let Some(seg) = t.pop() {
                self.free(seg);
            }
            self.tails.push(t);
        }
        pkt.tail_len = 0;
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

    /// Returns a buffer (a chain: all its buffers) to the pool.
    #[inline]
    pub fn free(&mut self, mut p: Packet) {
        if p.tail.is_some() {
            self.release_tail(&mut p);
        }
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

/// How the image divides its heap between tables and packet buffers
/// (the kernel's board file asks; the rules live here, beside the pool).
const _: () =
    assert!(core::mem::size_of::<Packet>() <= 40, "Packet grew: every burst move pays (see Offload::csum_offset)");

pub mod sizing {
    use alloc::vec::Vec;

    /// Heap kept free after start for what allocates later (host-stack
    /// buffers, management responses, a reloaded config's new stages).
    pub const RESERVE_BYTES: usize = 384 << 10;
    /// Heap one packet buffer takes (the buffer, its slot in the pool, the
    /// allocator's overhead).
    pub const BUFFER_BYTES: usize = super::BUF_SIZE + 64;
    /// The fewest buffers worth starting with: a quarter ring per NIC.
    pub const MIN_POOL_BYTES: usize = 256 * BUFFER_BYTES;
    /// Buffers per NIC beyond its rings: its transmit queue.
    pub const QUEUED_PER_NIC: usize = 256;
    /// Buffers beyond the NICs' (host stacks, ICMP errors, fragments,
    /// neighbour queues, software segmentation).
    pub const SPARE_BUFFERS: usize = 256;
    /// Tail lists (frames in several buffers) per NIC with offloads.
    pub const TAILS_PER_OFFLOAD_NIC: usize = 64;
    /// Buffers a NIC's transmit side must always find in a pool too small
    /// to fill its rings: a burst on the ring and a burst queued.
    pub const TX_ROOM_PER_NIC: usize = 2 * super::BURST;
    /// The fewest buffers a receive ring is worth posting: two bursts.
    /// A pool that cannot give every ring this much is refused at boot.
    pub const MIN_RX_FILL: usize = 2 * super::BURST;

    /// Whether tables of `table_bytes` leave room for a minimal pool and
    /// the reserve in `free` bytes of heap.
    pub fn tables_fit(table_bytes: usize, free: usize) -> bool {
        table_bytes.saturating_add(MIN_POOL_BYTES + RESERVE_BYTES) <= free
    }

    /// Heap the tables may take at most, for messages.
    pub fn room_for_tables(free: usize) -> usize {
        free.saturating_sub(MIN_POOL_BYTES + RESERVE_BYTES)
    }

    /// One NIC's rings, as the pool plan needs them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Rings {
        /// Receive ring entries.
        pub rx: usize,
        /// Receive and transmit ring entries together.
        pub total: usize,
        /// Whether it may receive frames in several buffers (tail lists).
        pub offloads: bool,
    }

    /// The pool the image builds and what each receive ring may hold of it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Plan {
        pub buffers: usize,
        pub tails: usize,
        /// Per NIC, in order: the most buffers its receive ring is given.
        pub rx_fill: Vec<usize>,
        /// Buffers no receive ring holds: transmit, host stacks, neighbour
        /// queues, fragments, chains.
        pub kept: usize,
    }

    /// A pool too small for the NICs: the numbers, for the refusal.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct TooSmall {
        /// Buffers the heap left after the tables holds.
        pub buffers: usize,
        /// Buffers the NICs need at least.
        pub needed: usize,
        /// Heap that many buffers (and the reserve) need.
        pub needed_bytes: usize,
    }

    impl core::fmt::Display for TooSmall {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(
                f,
                "{} packet buffers fit in the RAM the tables leave, but the NICs need at least {} \
                 ({MIN_RX_FILL} a receive ring, {TX_ROOM_PER_NIC} a NIC for transmit, {SPARE_BUFFERS} for the \
                 host stacks, neighbour queues and fragments; {} KiB): give the VM more memory (-m) or lower \
                 `sessions` / `flows` / `arp entries`",
                self.buffers,
                self.needed,
                self.needed_bytes / 1024
            )
        }
    }

    /// The pool for `nics` with `free` bytes of heap left after the tables:
    /// enough to fill every ring and queue once plus spares, or what fits.
    /// A pool smaller than that cannot let the first ring take what it
    /// offers (microvm's virtio-mmio rings offer 1024 each): every receive
    /// ring gets a share in proportion to its size, after
    /// [`TX_ROOM_PER_NIC`] a NIC and [`SPARE_BUFFERS`] are kept back. Below
    /// [`MIN_RX_FILL`] a ring the boot is refused, never a VM that says
    /// ready and cannot receive.
    pub fn plan(nics: &[Rings], free: usize) -> Result<Plan, TooSmall> {
        let n = nics.len();
        let tails = nics.iter().filter(|r| r.offloads).count() * TAILS_PER_OFFLOAD_NIC;
        let tail_bytes = tails * core::mem::size_of::<super::Tail>();
        let fits = free.saturating_sub(RESERVE_BYTES + tail_bytes) / BUFFER_BYTES;
        let want = nics.iter().map(|r| r.total).sum::<usize>() + n * QUEUED_PER_NIC + SPARE_BUFFERS;
        let buffers = want.min(fits);
        let kept = n * TX_ROOM_PER_NIC + SPARE_BUFFERS;
        let budget = buffers.saturating_sub(kept);
        let rx_total = nics.iter().map(|r| r.rx).sum::<usize>().max(1);
        let rx_fill: Vec<usize> = nics.iter().map(|r| r.rx.min(budget * r.rx / rx_total)).collect();
        let needed = kept + nics.iter().map(|r| r.rx.min(MIN_RX_FILL)).sum::<usize>();
        if nics.iter().zip(&rx_fill).any(|(r, &f)| f < r.rx.min(MIN_RX_FILL)) {
            let needed_bytes = needed * BUFFER_BYTES + RESERVE_BYTES + tail_bytes;
            return Err(TooSmall { buffers, needed, needed_bytes });
        }
        let kept = buffers - rx_fill.iter().sum::<usize>();
        Ok(Plan { buffers, tails, rx_fill, kept })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn rings(n: usize, rx: usize, offloads: bool) -> std::vec::Vec<Rings> {
            (0..n).map(|_| Rings { rx, total: 2 * rx, offloads }).collect()
        }

        #[test]
        fn a_small_heap_gets_what_fits_a_large_one_what_the_rings_need() {
            // Two NICs with 256-entry rings (a tap's), then with 1024.
            let p = plan(&rings(2, 256, true), 1 << 30).unwrap();
            assert_eq!((p.buffers, p.tails, p.rx_fill.as_slice()), (2 * 768 + 256, 128, &[256, 256][..]));
            let p = plan(&rings(2, 1024, false), 1 << 30).unwrap();
            assert_eq!((p.buffers, p.rx_fill.as_slice()), (4096 + 2 * 256 + 256, &[1024, 1024][..]));
            let p = plan(&rings(2, 256, false), 2 << 20).unwrap();
            assert_eq!(p.buffers, ((2 << 20) - RESERVE_BYTES) / BUFFER_BYTES);
            assert!(plan(&rings(2, 256, true), 0).is_err());
            assert!(tables_fit(0, MIN_POOL_BYTES + RESERVE_BYTES));
            assert!(!tables_fit(usize::MAX, 1 << 30));
        }

        #[test]
        fn a_pool_smaller_than_the_rings_is_shared_and_never_all_posted() {
            // -m 12 on microvm, three NICs of 1024-entry rings: 753 buffers
            // once all went to the first receive ring, and the appliance
            // said ready and answered nothing.
            let free = RESERVE_BYTES
                + 3 * TAILS_PER_OFFLOAD_NIC * core::mem::size_of::<crate::packet::Tail>()
                + 753 * BUFFER_BYTES;
            let p = plan(&rings(3, 1024, true), free).unwrap();
            assert_eq!(p.buffers, 753);
            let kept = 3 * TX_ROOM_PER_NIC + SPARE_BUFFERS;
            assert_eq!(p.rx_fill, [(753 - kept) / 3; 3]);
            assert!(p.rx_fill.iter().all(|&f| f >= MIN_RX_FILL));
            assert!(p.kept >= kept && p.kept + p.rx_fill.iter().sum::<usize>() == p.buffers);
            // Rings of different sizes share in proportion.
            let mixed =
                [Rings { rx: 256, total: 512, offloads: false }, Rings { rx: 1024, total: 2048, offloads: false }];
            let p = plan(&mixed, RESERVE_BYTES + 1000 * BUFFER_BYTES).unwrap();
            let budget = 1000 - 2 * TX_ROOM_PER_NIC - SPARE_BUFFERS;
            assert_eq!(p.rx_fill, [budget * 256 / 1280, budget * 1024 / 1280]);
        }

        #[test]
        fn a_pool_too_small_for_every_ring_is_refused_with_the_numbers() {
            let needed = 3 * (MIN_RX_FILL + TX_ROOM_PER_NIC) + SPARE_BUFFERS;
            let tails = 3 * TAILS_PER_OFFLOAD_NIC * core::mem::size_of::<crate::packet::Tail>();
            let at = |buffers: usize| RESERVE_BYTES + tails + buffers * BUFFER_BYTES;
            assert!(plan(&rings(3, 1024, true), at(needed)).is_ok());
            let e = plan(&rings(3, 1024, true), at(needed - 1)).unwrap_err();
            assert_eq!((e.buffers, e.needed), (needed - 1, needed));
            assert_eq!(e.needed_bytes, at(needed));
            let text = std::format!("{e}");
            assert!(text.contains(&std::format!("{} packet buffers", needed - 1)), "{text}");
            assert!(text.contains("give the VM more memory"), "{text}");
            // Tiny rings ask only for what they hold.
            assert!(plan(
                &rings(2, 16, false),
                RESERVE_BYTES + (2 * (16 + TX_ROOM_PER_NIC) + SPARE_BUFFERS) * BUFFER_BYTES
            )
            .is_ok());
        }
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
    fn chains_count_copy_and_return_whole() {
        let mut pool = PacketPool::with_tails(4, 1);
        let mut head = pool.alloc().unwrap();
        head.fill(&[1, 2, 3]);
        for bytes in [&[4u8, 5][..], &[6]] {
            let mut seg = pool.alloc().unwrap();
            seg.fill(bytes);
            pool.append(&mut head, seg).unwrap();
        }
        assert_eq!(head.total_len(), 6);
        assert!(head.is_chained());
        let mut out = [0; 4];
        assert!(head.copy_out(2, &mut out));
        assert_eq!(out, [3, 4, 5, 6]);
        assert!(!head.copy_out(3, &mut out), "past the end");
        assert!(!head.set_window(HEADROOM, 2), "a chained window is fixed");
        // No second tail list: a second chain is refused, not allocated.
        let mut other = pool.alloc().unwrap();
        let seg = Packet::new();
        assert!(pool.append(&mut other, seg).is_err());
        assert_eq!(pool.tails_exhausted, 1);
        pool.free(head);
        pool.free(other);
        assert_eq!(pool.available(), 4, "every buffer of the chain came back");
        assert_eq!(pool.tails.len(), 1);
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
