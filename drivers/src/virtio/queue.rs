//! A split virtqueue (VIRTIO 1.2 §2.7): one descriptor per buffer, a chain
//! of descriptors for a chained packet.
//!
//! The head descriptor's slot owns the [`Packet`] whose buffers the chain
//! points at while the device has it, so ownership is never ambiguous: a
//! packet is either in a slot (the device may touch its bytes) or somewhere
//! else (it may not).

use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};

use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE};
use vnfs::packet::Packet;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// Ring layout inside one DMA allocation: descriptor table, then the avail
/// ring, then (page aligned, as the legacy layout requires) the used ring.
struct Layout {
    avail: usize,
    used: usize,
    pages: usize,
}

impl Layout {
    fn new(size: u16) -> Layout {
        let size = size as usize;
        let avail = 16 * size;
        let avail_end = avail + 6 + 2 * size;
        let used = avail_end.next_multiple_of(PAGE_SIZE);
        let used_end = used + 6 + 8 * size;
        Layout { avail, used, pages: used_end.div_ceil(PAGE_SIZE) }
    }
}

pub(crate) struct VirtQueue<H: Hal> {
    base: NonNull<u8>,
    paddr: u64,
    layout: Layout,
    size: u16,
    event_idx: bool,
    /// Descriptor ids not in use.
    free: Vec<u16>,
    slots: Vec<Option<Packet>>,
    /// Our copy of each descriptor's `next` (for freeing chains without
    /// reading memory the device may write).
    next: Vec<u16>,
    /// Descriptors in the chain that starts at each head.
    chain_len: Vec<u16>,
    /// Our copy of avail->idx (what we will publish next).
    avail_idx: u16,
    /// avail->idx as last published.
    published: u16,
    /// Next used ring entry to consume.
    last_used: u16,
    /// The device's used index as last read: entries up to it are taken
    /// without reading the index again (one shared-memory read a burst).
    seen_used: u16,
    _hal: PhantomData<H>,
}

impl<H: Hal> VirtQueue<H> {
    /// Allocates and zeroes the rings for a queue of `size` entries (a power of two).
    pub fn new(size: u16, event_idx: bool) -> Self {
        assert!(size.is_power_of_two());
        let layout = Layout::new(size);
        let (paddr, base) = H::dma_alloc(layout.pages, BufferDirection::Both);
        let mut q = VirtQueue {
            base,
            paddr,
            layout,
            size,
            event_idx,
            free: (0..size).rev().collect(),
            slots: (0..size).map(|_| None).collect(),
            next: alloc::vec![0; size as usize],
            chain_len: alloc::vec![0; size as usize],
            avail_idx: 0,
            published: 0,
            last_used: 0,
            seen_used: 0,
            _hal: PhantomData,
        };
        // We poll: ask the device never to interrupt.
        if event_idx {
            q.write_used_event();
        } else {
            q.write_u16(q.layout.avail, AVAIL_F_NO_INTERRUPT);
        }
        q
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Physical addresses of descriptor table, driver area, device area.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.paddr, self.paddr + self.layout.avail as u64, self.paddr + self.layout.used as u64)
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn in_flight(&self) -> usize {
        self.size as usize - self.free.len()
    }

    fn ptr(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < self.layout.pages * PAGE_SIZE);
        // SAFETY: every caller passes an offset inside the ring allocation
        // (checked above in debug builds), so the result stays in bounds.
        unsafe { self.base.as_ptr().add(offset) }
    }

    fn write_u16(&mut self, offset: usize, v: u16) {
        // SAFETY: `offset` is a 2-aligned field of the rings inside our DMA
        // allocation; volatile because the device reads it concurrently.
        unsafe { (self.ptr(offset) as *mut u16).write_volatile(v) }
    }

    fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: as for `write_u16`; the device writes it concurrently.
        unsafe { (self.ptr(offset) as *const u16).read_volatile() }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: a 4-aligned field of the used ring inside our allocation.
        unsafe { (self.ptr(offset) as *const u32).read_volatile() }
    }

    /// used_event: the used index at which we would want an interrupt. We
    /// never do, so keep it half the ring space ahead of where we are.
    fn write_used_event(&mut self) {
        let off = self.layout.avail + 4 + 2 * self.size as usize;
        let v = self.last_used.wrapping_add(0x8000);
        self.write_u16(off, v);
    }

    /// Adds one buffer region of `pkt` (`offset..offset+len` of its buffer).
    /// The device writes it if `device_writes`. Not visible to the device
    /// until [`publish`](Self::publish).
    pub fn add(&mut self, pkt: Packet, offset: usize, len: usize, device_writes: bool) -> Result<(), Packet> {
        self.add_chain(pkt, offset, len, device_writes)
    }

    /// Adds `offset..offset+len` of `pkt`'s buffer and then the frame bytes
    /// of each buffer of its tail, as one descriptor chain. Gives the packet
    /// back if the ring lacks free descriptors for the whole chain.
    pub fn add_chain(&mut self, pkt: Packet, offset: usize, len: usize, device_writes: bool) -> Result<(), Packet> {
        if !pkt.is_chained() {
            return self.add_one(pkt, offset, len, device_writes);
        }
        let n = 1 + pkt.tail().len();
        if self.free.len() < n {
            return Err(pkt);
        }
        let direction = if device_writes { BufferDirection::DeviceToDriver } else { BufferDirection::DriverToDevice };
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        let first = (pkt.buffer_addr() + offset, len);
        let rest = pkt.tail().iter().map(|s| (s.buffer_addr() + s.head(), s.len()));
        let mut ids = [0u16; 1 + vnfs::packet::MAX_SEGMENTS];
        for id in ids.iter_mut().take(n) {
            // Counted above: at least `n` are free.
            *id = self.free.pop().expect("free descriptors counted");
        }
        for (i, (start, len)) in core::iter::once(first).chain(rest).enumerate() {
            let region = NonNull::slice_from_raw_parts(
                NonNull::new(start as *mut u8).expect("packet buffers are never at address 0"),
                len,
            );
            // SAFETY: `region` lies inside one of the packet's buffers (the
            // caller gives an in-buffer window for the first; the others are
            // frame windows), which stay put while the slot owns the packet.
            let addr = unsafe { H::share(region, direction) };
            let id = ids[i];
            let (f, next) = if i + 1 < n { (flags | DESC_F_NEXT, ids[i + 1]) } else { (flags, 0) };
            self.next[id as usize] = next;
            let d = id as usize * 16;
            // SAFETY: descriptor `id` is free, so the device is not reading
            // it; the 16-byte descriptor lies inside the table.
            unsafe {
                let p = self.ptr(d);
                (p as *mut u64).write_volatile(addr);
                (p.add(8) as *mut u32).write_volatile(len as u32);
                (p.add(12) as *mut u16).write_volatile(f);
                (p.add(14) as *mut u16).write_volatile(next);
            }
        }
        let head = ids[0];
        self.chain_len[head as usize] = n as u16;
        self.slots[head as usize] = Some(pkt);
        let ring = self.layout.avail + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.write_u16(ring, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Ok(())
    }

    /// [`add_chain`](Self::add_chain) for a packet in one buffer (every
    /// receive buffer, every ordinary frame sent): one descriptor.
    #[inline]
    fn add_one(&mut self, pkt: Packet, offset: usize, len: usize, device_writes: bool) -> Result<(), Packet> {
        let Some(id) = self.free.pop() else { return Err(pkt) };
        let direction = if device_writes { BufferDirection::DeviceToDriver } else { BufferDirection::DriverToDevice };
        let region = NonNull::slice_from_raw_parts(
            NonNull::new((pkt.buffer_addr() + offset) as *mut u8).expect("packet buffers are never at address 0"),
            len,
        );
        // SAFETY: `region` lies inside the packet's buffer (the caller gives
        // an in-buffer window), which stays put while the slot owns the packet.
        let addr = unsafe { H::share(region, direction) };
        let d = id as usize * 16;
        // SAFETY: descriptor `id` was free, so the device is not reading it;
        // the 16-byte descriptor lies inside the table.
        unsafe {
            let p = self.ptr(d);
            (p as *mut u64).write_volatile(addr);
            (p.add(8) as *mut u32).write_volatile(len as u32);
            (p.add(12) as *mut u16).write_volatile(if device_writes { DESC_F_WRITE } else { 0 });
            (p.add(14) as *mut u16).write_volatile(0);
        }
        self.next[id as usize] = 0;
        self.chain_len[id as usize] = 1;
        self.slots[id as usize] = Some(pkt);
        let ring = self.layout.avail + 4 + 2 * (self.avail_idx % self.size) as usize;
        self.write_u16(ring, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Ok(())
    }

    /// Makes all added buffers visible to the device. Returns whether the
    /// device asked to be notified (so the caller kicks at most once).
    pub fn publish(&mut self) -> bool {
        if self.avail_idx == self.published {
            return false;
        }
        let old = self.published;
        let new = self.avail_idx;
        // Descriptors and ring entries must be visible before the index.
        fence(Ordering::Release);
        self.write_u16(self.layout.avail + 2, new);
        self.published = new;
        // The index store must be visible before we read the device's
        // suppression state (store→load: a full fence).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let avail_event = self.read_u16(self.layout.used + 4 + 8 * self.size as usize);
            // vring_need_event: did `avail_event` fall in (old, new]?
            new.wrapping_sub(avail_event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.read_u16(self.layout.used) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Takes back the next buffer the device has finished with, and the
    /// number of bytes it wrote.
    pub fn pop_used(&mut self) -> Option<(Packet, u32)> {
        loop {
            if self.last_used == self.seen_used {
                let used_idx = self.read_u16(self.layout.used + 2);
                if used_idx == self.last_used {
                    return None;
                }
                self.seen_used = used_idx;
                // Read the entries only after seeing the index.
                fence(Ordering::Acquire);
            }
            let e = self.layout.used + 4 + 8 * (self.last_used % self.size) as usize;
            let id = self.read_u32(e) as usize;
            let len = self.read_u32(e + 4);
            self.last_used = self.last_used.wrapping_add(1);
            if self.event_idx && self.last_used == self.seen_used {
                self.write_used_event();
            }
            // A device returning an id we never gave it is skipped, never a panic.
            if let Some(pkt) = self.slots.get_mut(id).and_then(Option::take) {
                let mut d = id as u16;
                for _ in 0..self.chain_len[id] {
                    self.free.push(d);
                    d = self.next[d as usize];
                }
                return Some((pkt, len));
            }
        }
    }

    /// Takes every packet out of the queue (after the device was reset).
    pub fn drain(&mut self) -> impl Iterator<Item = Packet> + '_ {
        self.slots.iter_mut().filter_map(Option::take)
    }
}

impl<H: Hal> Drop for VirtQueue<H> {
    fn drop(&mut self) {
        // SAFETY: allocated by `H::dma_alloc` in `new` with these values; the
        // owner resets the device before dropping its queues.
        unsafe { H::dma_dealloc(self.paddr, self.base, self.layout.pages) };
    }
}

/// The virtqueue against a device made of plain memory: the test plays the
/// device's side of the split ring (VIRTIO 1.2 §2.7) on the same rings.
#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::testhal::TestHal;
    use std::vec;
    use vnfs::packet::PacketPool;

    /// The device's view of one queue: where the rings are and how far it
    /// has read the avail ring and written the used ring.
    struct Device {
        desc: u64,
        avail: u64,
        used: u64,
        size: u16,
        last_avail: u16,
        used_idx: u16,
    }

    fn rd16(at: u64) -> u16 {
        // SAFETY: `at` is a field of the rings the queue allocated and
        // keeps alive for the test; u16 fields are 2-aligned.
        unsafe { (at as *const u16).read_volatile() }
    }

    fn wr16(at: u64, v: u16) {
        // SAFETY: as for `rd16`; the device's own fields.
        unsafe { (at as *mut u16).write_volatile(v) }
    }

    fn wr32(at: u64, v: u32) {
        // SAFETY: a 4-aligned field of the used ring.
        unsafe { (at as *mut u32).write_volatile(v) }
    }

    impl Device {
        fn of(q: &VirtQueue<TestHal>) -> Device {
            let (desc, avail, used) = q.addresses();
            Device { desc, avail, used, size: q.size(), last_avail: 0, used_idx: 0 }
        }

        /// The chains made available since the last call: (head, [(addr, len, flags)]).
        fn take(&mut self) -> vec::Vec<(u16, vec::Vec<(u64, u32, u16)>)> {
            let idx = rd16(self.avail + 2);
            let mut out = vec::Vec::new();
            while self.last_avail != idx {
                let head = rd16(self.avail + 4 + 2 * (self.last_avail % self.size) as u64);
                let mut chain = vec::Vec::new();
                let mut d = head;
                loop {
                    let at = self.desc + 16 * d as u64;
                    // SAFETY: descriptor `d` < size lies in the table.
                    let (addr, len) =
                        unsafe { ((at as *const u64).read_volatile(), ((at + 8) as *const u32).read_volatile()) };
                    let flags = rd16(at + 12);
                    chain.push((addr, len, flags));
                    if flags & DESC_F_NEXT == 0 || chain.len() > self.size as usize {
                        break;
                    }
                    d = rd16(at + 14);
                }
                out.push((head, chain));
                self.last_avail = self.last_avail.wrapping_add(1);
            }
            out
        }

        /// Returns chain `head` having written `len` bytes.
        fn complete(&mut self, head: u32, len: u32) {
            let e = self.used + 4 + 8 * (self.used_idx % self.size) as u64;
            wr32(e, head);
            wr32(e + 4, len);
            self.used_idx = self.used_idx.wrapping_add(1);
            wr16(self.used + 2, self.used_idx);
        }

        fn set_avail_event(&self, v: u16) {
            wr16(self.used + 4 + 8 * self.size as u64, v);
        }
    }

    fn packet(pool: &mut PacketPool, byte: u8) -> Packet {
        let mut p = pool.alloc().unwrap();
        assert!(p.fill(&[byte; 60]));
        p
    }

    #[test]
    fn indices_wrap_past_65535_and_every_buffer_comes_back_in_order() {
        let mut pool = PacketPool::new(8);
        let mut q = VirtQueue::<TestHal>::new(4, false);
        let mut dev = Device::of(&q);
        // 70,000 round trips of three buffers: avail and used indices wrap.
        for round in 0..70_000u32 {
            for k in 0..3u8 {
                let p = packet(&mut pool, k);
                let at = p.head();
                assert!(q.add(p, at, 60, true).is_ok());
            }
            q.publish();
            let chains = dev.take();
            assert_eq!(chains.len(), 3, "round {round}");
            for (i, (head, chain)) in chains.iter().enumerate() {
                assert_eq!(chain.len(), 1);
                assert_eq!(chain[0].2 & DESC_F_WRITE, DESC_F_WRITE, "receive buffers are device-writable");
                dev.complete(*head as u32, 10 + i as u32);
            }
            for i in 0..3u8 {
                let (p, len) = q.pop_used().expect("completed buffer");
                assert_eq!((p.data()[0], len), (i, 10 + i as u32));
                pool.free(p);
            }
            assert!(q.pop_used().is_none());
            assert_eq!(q.free_count(), 4);
        }
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn a_chained_packet_is_one_descriptor_chain_and_frees_all_its_descriptors() {
        let mut pool = PacketPool::with_tails(12, 2);
        let mut q = VirtQueue::<TestHal>::new(8, false);
        let mut dev = Device::of(&q);
        let mut head = packet(&mut pool, 1);
        for b in [2u8, 3] {
            let s = packet(&mut pool, b);
            assert!(pool.append(&mut head, s).is_ok());
        }
        let addrs: vec::Vec<u64> =
            core::iter::once(&head).chain(head.tail()).map(|p| (p.buffer_addr() + p.head()) as u64).collect();
        let at = head.head();
        assert!(q.add_chain(head, at, 60, false).is_ok());
        assert_eq!(q.free_count(), 5);
        q.publish();
        let chains = dev.take();
        assert_eq!(chains.len(), 1);
        let (h, chain) = &chains[0];
        assert_eq!(chain.iter().map(|c| c.0).collect::<vec::Vec<_>>(), addrs, "head buffer, then each tail buffer");
        assert!(chain[..2].iter().all(|c| c.2 & DESC_F_NEXT != 0) && chain[2].2 & DESC_F_NEXT == 0);
        assert!(chain.iter().all(|c| c.2 & DESC_F_WRITE == 0 && c.1 == 60), "the device reads a transmit chain");
        // The other five descriptors take five single buffers; a sixth is
        // given back (the ring is full), never half-added.
        let small: vec::Vec<Packet> = (0..6).map(|b| packet(&mut pool, b)).collect();
        let mut refused = 0;
        for p in small {
            let at = p.head();
            if let Err(p) = q.add(p, at, 60, false) {
                refused += 1;
                pool.free(p);
            }
        }
        assert_eq!((q.free_count(), refused), (0, 1));
        q.publish();
        dev.complete(*h as u32, 0);
        let (p, _) = q.pop_used().unwrap();
        assert_eq!(p.tail().len(), 2);
        pool.free(p);
        assert_eq!(q.free_count(), 3, "the chain's three descriptors are free again");
        // A device that returns an id it was never given (past the ring) is
        // skipped; the real completion behind it still comes.
        let singles = dev.take();
        assert_eq!(singles.len(), 5);
        dev.complete(1000, 0);
        dev.complete(singles[0].0 as u32, 42);
        let (p, len) = q.pop_used().expect("the real completion");
        assert_eq!(len, 42);
        pool.free(p);
        assert!(q.pop_used().is_none());
        for p in q.drain() {
            pool.free(p);
        }
    }

    #[test]
    fn event_index_kicks_only_when_the_device_waits_for_the_published_range() {
        let mut pool = PacketPool::new(16);
        let mut q = VirtQueue::<TestHal>::new(8, true);
        let dev = Device::of(&q);
        let add = |q: &mut VirtQueue<TestHal>, pool: &mut PacketPool| {
            let p = packet(pool, 0);
            let at = p.head();
            assert!(q.add(p, at, 60, true).is_ok());
        };
        // The device wants a kick when avail idx passes 0 (its avail_event).
        dev.set_avail_event(0);
        add(&mut q, &mut pool);
        assert!(q.publish(), "0 is in (0, 1]: kick");
        // It now wants a kick once avail idx passes 4: publishing 2 and 3 needs none.
        dev.set_avail_event(4);
        add(&mut q, &mut pool);
        assert!(!q.publish());
        add(&mut q, &mut pool);
        assert!(!q.publish());
        // Publishing 4 and 5 at once crosses it: one kick for both.
        add(&mut q, &mut pool);
        add(&mut q, &mut pool);
        assert!(q.publish());
        // Nothing new: no kick.
        assert!(!q.publish());
        // Our used_event stays half a ring ahead: the device never interrupts us.
        let used_event = rd16(dev.avail + 4 + 2 * 8);
        assert_eq!(used_event, 0x8000);
        for p in q.drain() {
            pool.free(p);
        }
    }
}
