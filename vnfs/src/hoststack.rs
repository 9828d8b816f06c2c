//! The appliance's own host stack on one port: smoltcp answering ARP and ICMP
//! echo for the port's address (and later serving management and originating
//! health checks).
//!
//! It sits off the fast path. The dataplane queues packets addressed to the
//! appliance into a small bounded backlog; `poll` runs smoltcp over them. The
//! smoltcp `Device` here lends the packet buffers themselves: a received
//! packet is read in place and returned to the pool, a transmitted frame is
//! written straight into a pool buffer that then joins the port's transmit
//! queue. No copies, no allocation.

use core::cell::RefCell;
use core::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpCidr,
};

use crate::packet::{Packet, PacketPool, MAX_FRAME};
use crate::Micros;

/// Packets for the appliance itself that may wait for the host stack.
pub const BACKLOG: usize = 64;
/// Frames the transmit queue of one port holds between two NIC bursts.
pub const TX_QUEUE: usize = 256;
/// Buffers each host stack keeps for itself. The NICs' refill takes every
/// free buffer of the pool at the end of each turn of the loop, so with a
/// small pool (a small VM, rings larger than the pool) the pool is empty
/// whenever the host stack runs: without buffers of its own it could
/// answer nothing, and the management port went silent for good after a
/// flood (issue 25, item 15). A received packet's buffer goes back to this
/// reserve first, so a reply always has one.
pub const RESERVE: usize = 4;

type Reserve = heapless::Vec<Packet, RESERVE>;

/// Frames waiting for one port's NIC.
pub type TxQueue = heapless::Deque<Packet, TX_QUEUE>;

/// Counters of one host stack.
#[derive(Clone, Debug, Default)]
pub struct HostCounters {
    /// Frames smoltcp wanted to send while the pool or the tx queue was full.
    pub tx_no_buffer: u64,
}

/// smoltcp on one port.
pub struct HostStack {
    iface: Interface,
    sockets: SocketSet<'static>,
    backlog: heapless::Deque<Packet, BACKLOG>,
    /// Buffers of its own (see [`RESERVE`]), kept from the first
    /// [`top_up`](Self::top_up) on (the appliance's announcement at boot).
    reserve: Reserve,
    keeps_reserve: bool,
    mac: [u8; 6],
    address: Option<Ipv4Net>,
    /// The port's IPv6 addresses (link-local first), for TCP and UDP over
    /// IPv6; neighbour discovery and echo are the port's IPv6 host's.
    address6: alloc::vec::Vec<ipnet::Ipv6Net>,
    also: alloc::vec::Vec<Ipv4Addr>,
    mtu: u16,
    /// Sockets aborted, removed after their RST has been sent.
    closing: alloc::vec::Vec<SocketHandle>,
    pub counters: HostCounters,
}

impl HostStack {
    /// A host stack answering for `address` (the port's own, with its
    /// prefix) and for `also` (the appliance's other addresses, so a ping to
    /// any of them is answered on whichever port it arrives, as a router
    /// does). `gateway` is where it sends replies to off-link hosts.
    pub fn new(
        mac: [u8; 6],
        address: Option<Ipv4Net>,
        also: &[Ipv4Addr],
        gateway: Option<Ipv4Addr>,
        mtu: u16,
        now: Micros,
        seed: u64,
    ) -> Self {
        let mut config = IfaceConfig::new(EthernetAddress(mac).into());
        config.random_seed = seed;
        let mut pool = PacketPool::new(0);
        let mut tx = TxQueue::new();
        let mut backlog = heapless::Deque::new();
        let mut counters = HostCounters::default();
        let mut reserve = Reserve::new();
        let mut dev = PortDevice::new(&mut backlog, &mut pool, &mut reserve, false, &mut tx, mtu, &mut counters);
        let mut iface = Interface::new(config, &mut dev, instant(now));
        iface.update_ip_addrs(|addrs| fill_addrs(addrs, address, &[], also));
        if let Some(gw) = gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        HostStack {
            iface,
            sockets: SocketSet::new(alloc::vec::Vec::new()),
            backlog,
            reserve,
            keeps_reserve: false,
            mac,
            address,
            address6: alloc::vec::Vec::new(),
            also: also.to_vec(),
            mtu,
            closing: alloc::vec::Vec::new(),
            counters,
        }
    }

    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.address.map(|a| a.addr())
    }

    /// Replaces the other addresses this stack answers for (after a reload
    /// added a VIP or pool address).
    pub fn set_also(&mut self, also: &[Ipv4Addr]) {
        self.also = also.to_vec();
        let (own, own6, also) = (self.address, &self.address6, &self.also);
        self.iface.update_ip_addrs(|addrs| fill_addrs(addrs, own, own6, also));
    }

    /// Gives the stack the port's IPv6 addresses and its IPv6 default
    /// gateway (link-local or global), for TCP and UDP over IPv6.
    pub fn set_ipv6(&mut self, nets: &[ipnet::Ipv6Net], gateway: Option<core::net::Ipv6Addr>) {
        self.address6 = nets.to_vec();
        let (own, own6, also) = (self.address, &self.address6, &self.also);
        self.iface.update_ip_addrs(|addrs| fill_addrs(addrs, own, own6, also));
        if let Some(gw) = gateway {
            let _ = self.iface.routes_mut().add_default_ipv6_route(gw);
        }
    }

    /// Queues a packet for the host stack; gives it back if the backlog is full.
    pub fn enqueue(&mut self, pkt: Packet) -> Result<(), Packet> {
        self.backlog.push_back(pkt)
    }

    /// Whether packets are waiting for `poll`.
    pub fn has_work(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Runs smoltcp: consumes the backlog, emits replies into `tx`.
    pub fn poll(&mut self, now: Micros, pool: &mut PacketPool, tx: &mut TxQueue) {
        if self.keeps_reserve {
            self.top_up(pool);
        }
        let mut dev = PortDevice::new(
            &mut self.backlog,
            pool,
            &mut self.reserve,
            self.keeps_reserve,
            tx,
            self.mtu,
            &mut self.counters,
        );
        self.iface.poll(instant(now), &mut dev, &mut self.sockets);
        // Whatever smoltcp could not take (it stops when tx is full) waits.
        for h in self.closing.drain(..) {
            self.sockets.remove(h);
        }
    }

    /// Fills the stack's own reserve of buffers from `pool`, as far as it
    /// has free ones; from now on it keeps one.
    pub fn top_up(&mut self, pool: &mut PacketPool) {
        self.keeps_reserve = true;
        while !self.reserve.is_full() && pool.available() > 0 {
            match pool.alloc() {
                Some(p) => {
                    if let Err(p) = self.reserve.push(p) {
                        pool.free(p);
                    }
                }
                None => break,
            }
        }
    }

    /// Builds the gratuitous ARP request that announces this port's address
    /// (RFC 5227 §3: sender and target protocol address both ours).
    pub fn gratuitous_arp(&self, pool: &mut PacketPool) -> Option<Packet> {
        let ip = self.ip()?;
        let mut pkt = pool.alloc()?;
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(self.mac),
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(self.mac),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let len = eth.buffer_len() + arp.buffer_len();
        pkt.set_len(len);
        let mut frame = EthernetFrame::new_unchecked(pkt.data_mut());
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        Some(pkt)
    }

    /// Opens a TCP connection from `local_port` to `remote` (health checks).
    /// The socket's buffers are allocated here, off the fast path.
    pub fn tcp_open(&mut self, remote: (core::net::IpAddr, u16), local_port: u16) -> Option<SocketHandle> {
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(alloc::vec![0; 1024]), tcp::SocketBuffer::new(alloc::vec![0; 512]));
        let cx = self.iface.context();
        sock.connect(cx, (IpAddress::from(remote.0), remote.1), local_port).ok()?;
        Some(self.sockets.add(sock))
    }

    /// A connection like `tcp_open`'s with buffers of `rx` and `tx` bytes
    /// (tests' clients that send large requests).
    #[cfg(test)]
    pub fn tcp_open_sized(
        &mut self,
        remote: (core::net::IpAddr, u16),
        local_port: u16,
        rx: usize,
        tx: usize,
    ) -> Option<SocketHandle> {
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(alloc::vec![0; rx]), tcp::SocketBuffer::new(alloc::vec![0; tx]));
        sock.connect(self.iface.context(), (IpAddress::from(remote.0), remote.1), local_port).ok()?;
        Some(self.sockets.add(sock))
    }

    /// A socket listening on `port` (the management endpoint), with buffers
    /// of `rx` and `tx` bytes.
    pub fn tcp_listen(&mut self, port: u16, rx: usize, tx: usize) -> Option<SocketHandle> {
        let mut sock =
            tcp::Socket::new(tcp::SocketBuffer::new(alloc::vec![0; rx]), tcp::SocketBuffer::new(alloc::vec![0; tx]));
        sock.listen(port).ok()?;
        Some(self.sockets.add(sock))
    }

    /// Puts a socket back to listening after its connection ended.
    pub fn tcp_relisten(&mut self, h: SocketHandle, port: u16) {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.abort();
        let _ = s.listen(port);
    }

    /// The peer's address of a connection, if it has one.
    pub fn tcp_remote(&self, h: SocketHandle) -> Option<core::net::IpAddr> {
        self.sockets.get::<tcp::Socket>(h).remote_endpoint().map(|e| e.addr.into())
    }

    /// Resets a connection (RST) and keeps the socket.
    pub fn tcp_abort(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(h).abort();
    }

    /// Closes our side after the response (FIN once the send buffer drains).
    pub fn tcp_finish(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(h).close();
    }

    /// Queues as much of `data` as fits; returns how much.
    pub fn tcp_send_some(&mut self, h: SocketHandle, data: &[u8]) -> usize {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if s.can_send() {
            s.send_slice(data).unwrap_or(0)
        } else {
            0
        }
    }

    /// The state of a connection opened by `tcp_open`.
    pub fn tcp_state(&self, h: SocketHandle) -> tcp::State {
        self.sockets.get::<tcp::Socket>(h).state()
    }

    /// Queues `data` on the connection; false if it does not fit now.
    pub fn tcp_send(&mut self, h: SocketHandle, data: &[u8]) -> bool {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        s.can_send() && s.send_slice(data).is_ok_and(|n| n == data.len())
    }

    /// Reads what arrived into `buf`; returns the bytes read.
    pub fn tcp_recv(&mut self, h: SocketHandle, buf: &mut [u8]) -> usize {
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if s.can_recv() {
            s.recv_slice(buf).unwrap_or(0)
        } else {
            0
        }
    }

    /// Drops the connection (RST if still open) and frees the socket.
    pub fn tcp_close(&mut self, h: SocketHandle) {
        self.sockets.get_mut::<tcp::Socket>(h).abort();
        // Let the RST go out on the next poll before the socket goes.
        self.closing.push(h);
    }

    /// Whether connections are open or being made (the dataplane then polls
    /// more often). Idle listeners do not count.
    pub fn has_sockets(&self) -> bool {
        self.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => t.state() != tcp::State::Listen,
            #[allow(unreachable_patterns)]
            _ => true,
        })
    }

    /// Sockets held (listening, connected, or closing).
    pub fn socket_count(&self) -> usize {
        self.sockets.iter().count() + self.closing.len()
    }

    /// Returns every queued packet to the pool (used when a port is torn down).
    pub fn drain(&mut self, pool: &mut PacketPool) {
        while let Some(p) = self.backlog.pop_front() {
            pool.free(p);
        }
        while let Some(p) = self.reserve.pop() {
            pool.free(p);
        }
    }
}

/// The interface's addresses: the port's own IPv4 and IPv6 ones first,
/// then the appliance's other IPv4 addresses, as many as fit (smoltcp's
/// iface-max-addr-count-8).
fn fill_addrs(addrs: &mut heapless::Vec<IpCidr, 8>, own: Option<Ipv4Net>, own6: &[ipnet::Ipv6Net], also: &[Ipv4Addr]) {
    addrs.clear();
    if let Some(a) = own {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a.addr()), a.prefix_len()));
    }
    for a in own6 {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a.addr()), a.prefix_len()));
    }
    for ip in also.iter().filter(|ip| Some(**ip) != own.map(|a| a.addr())) {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(*ip), 32));
    }
}

fn instant(now: Micros) -> Instant {
    Instant::from_micros(now as i64)
}

/// What the smoltcp device borrows while `poll` runs.
struct HostIo<'a> {
    pool: &'a mut PacketPool,
    reserve: &'a mut Reserve,
    keeps_reserve: bool,
    tx: &'a mut TxQueue,
    counters: &'a mut HostCounters,
}

struct PortDevice<'a> {
    backlog: &'a mut heapless::Deque<Packet, BACKLOG>,
    io: RefCell<HostIo<'a>>,
    mtu: u16,
}

impl<'a> PortDevice<'a> {
    fn new(
        backlog: &'a mut heapless::Deque<Packet, BACKLOG>,
        pool: &'a mut PacketPool,
        reserve: &'a mut Reserve,
        keeps_reserve: bool,
        tx: &'a mut TxQueue,
        mtu: u16,
        counters: &'a mut HostCounters,
    ) -> Self {
        PortDevice { backlog, io: RefCell::new(HostIo { pool, reserve, keeps_reserve, tx, counters }), mtu }
    }

    fn can_transmit(&mut self) -> bool {
        let io = self.io.get_mut();
        !io.tx.is_full() && (io.pool.available() > 0 || !io.reserve.is_empty())
    }
}

struct HostRx<'b, 'a> {
    pkt: Packet,
    io: &'b RefCell<HostIo<'a>>,
}

struct HostTx<'b, 'a> {
    io: &'b RefCell<HostIo<'a>>,
}

impl phy::RxToken for HostRx<'_, '_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // smoltcp may transmit a reply from inside `f`, which borrows `io`;
        // so the packet is owned here and `io` is only borrowed afterwards.
        let r = f(self.pkt.data());
        let mut io = self.io.borrow_mut();
        // Back to the stack's own reserve first (see `RESERVE`), if it keeps
        // one (a reserve starts with `top_up`) and the buffer is a plain one.
        let keep = io.keeps_reserve && !io.reserve.is_full() && !self.pkt.is_chained();
        match keep {
            true => {
                if let Err(p) = io.reserve.push(self.pkt) {
                    io.pool.free(p);
                }
            }
            false => io.pool.free(self.pkt),
        }
        r
    }
}

impl phy::TxToken for HostTx<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let pkt = {
            let mut io = self.io.borrow_mut();
            if io.pool.available() == 0 {
                // Through the pool, which resets the buffer's length and
                // metadata as it does for every allocation.
                if let Some(p) = io.reserve.pop() {
                    io.pool.free(p);
                }
            }
            io.pool.alloc()
        };
        match pkt {
            Some(mut pkt) if len <= MAX_FRAME => {
                pkt.set_len(len);
                let r = f(pkt.data_mut());
                let mut io = self.io.borrow_mut();
                if let Err(pkt) = io.tx.push_back(pkt) {
                    io.counters.tx_no_buffer += 1;
                    io.pool.free(pkt);
                }
                r
            }
            other => {
                // `transmit` checked for room, so this is only reached for an
                // oversized frame; smoltcp still needs somewhere to write.
                let mut io = self.io.borrow_mut();
                io.counters.tx_no_buffer += 1;
                if let Some(p) = other {
                    io.pool.free(p);
                }
                drop(io);
                let mut scratch = alloc::vec![0u8; len];
                f(&mut scratch)
            }
        }
    }
}

impl<'a> phy::Device for PortDevice<'a> {
    type RxToken<'b>
        = HostRx<'b, 'a>
    where
        Self: 'b;
    type TxToken<'b>
        = HostTx<'b, 'a>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.can_transmit() {
            return None;
        }
        let pkt = self.backlog.pop_front()?;
        let io = &self.io;
        Some((HostRx { pkt, io }, HostTx { io }))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        if !self.can_transmit() {
            self.io.get_mut().counters.tx_no_buffer += 1;
            return None;
        }
        Some(HostTx { io: &self.io })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu as usize + crate::wire::ETH_HLEN;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Ipv4Packet};

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

    fn stack() -> HostStack {
        HostStack::new(MAC, Some("10.0.0.1/24".parse().unwrap()), &[], None, 1500, 0, 1)
    }

    #[test]
    fn answers_arp_for_its_address_only() {
        let mut pool = PacketPool::new(8);
        let mut tx = TxQueue::new();
        let mut hs = stack();
        for target in [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)] {
            let mut p = pool.alloc().unwrap();
            p.fill(&arp_request(PEER_MAC, PEER_IP, target));
            hs.enqueue(p).unwrap();
        }
        hs.poll(1, &mut pool, &mut tx);
        assert_eq!(tx.len(), 1, "one reply, for 10.0.0.1 only");
        let reply = tx.pop_front().unwrap();
        let frame = EthernetFrame::new_checked(reply.data()).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress(PEER_MAC));
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        match arp {
            ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, .. } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_hardware_addr, EthernetAddress(MAC));
                assert_eq!(source_protocol_addr, Ipv4Addr::new(10, 0, 0, 1));
            }
            _ => panic!("not an Ethernet/IPv4 ARP reply"),
        }
        pool.free(reply);
        hs.drain(&mut pool);
        assert_eq!(pool.available(), 8, "no buffer leaked");
    }

    #[test]
    fn answers_ping() {
        let mut pool = PacketPool::new(8);
        let mut tx = TxQueue::new();
        let mut hs = stack();
        // Teach smoltcp the peer's MAC first, as a real peer would by ARP.
        let mut p = pool.alloc().unwrap();
        p.fill(&arp_request(PEER_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 1)));
        hs.enqueue(p).unwrap();
        let mut p = pool.alloc().unwrap();
        p.fill(&echo_request(MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 1), 7, b"hello"));
        hs.enqueue(p).unwrap();
        hs.poll(2, &mut pool, &mut tx);
        assert_eq!(tx.len(), 2);
        let _arp = tx.pop_front().unwrap();
        let reply = tx.pop_front().unwrap();
        let frame = EthernetFrame::new_checked(reply.data()).unwrap();
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.dst_addr(), PEER_IP);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        match Icmpv4Repr::parse(&icmp, &Default::default()).unwrap() {
            Icmpv4Repr::EchoReply { ident, data, .. } => {
                assert_eq!(ident, 7);
                assert_eq!(data, b"hello");
            }
            r => panic!("expected an echo reply, got {r:?}"),
        }
        pool.free(_arp);
        pool.free(reply);
        hs.drain(&mut pool);
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn gratuitous_arp_announces_the_address() {
        let mut pool = PacketPool::new(1);
        let p = stack().gratuitous_arp(&mut pool).unwrap();
        let frame = EthernetFrame::new_checked(p.data()).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        let arp = ArpPacket::new_checked(frame.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Request);
        assert_eq!(arp.source_protocol_addr(), arp.target_protocol_addr());
        assert_eq!(arp.source_hardware_addr(), &MAC[..]);
        pool.free(p);
    }

    #[test]
    fn a_pool_the_rings_emptied_does_not_silence_the_host_stack() {
        // The NICs' refill takes every free buffer at the end of each turn:
        // when the host stack runs, the pool may well be empty.
        let mut pool = PacketPool::new(16);
        let mut tx = TxQueue::new();
        let mut hs = stack();
        hs.top_up(&mut pool);
        let mut rings = alloc::vec::Vec::new();
        for round in 0..5u8 {
            // Three ARP requests arrive; every other buffer sits in a ring.
            for i in 0..3u8 {
                let mut p = pool.alloc().unwrap();
                p.fill(&arp_request(
                    [2, 0, 0, 0, round, i],
                    Ipv4Addr::new(10, 0, 0, 10 + i),
                    Ipv4Addr::new(10, 0, 0, 1),
                ));
                hs.enqueue(p).unwrap();
            }
            while let Some(p) = pool.alloc() {
                rings.push(p);
            }
            hs.poll(2 + round as u64, &mut pool, &mut tx);
            assert_eq!(tx.len(), 3, "round {round}: every request answered though the pool was empty");
            assert!(!hs.has_work());
            // The NIC sends the replies and the ring gives buffers back.
            while let Some(p) = tx.pop_front() {
                pool.free(p);
            }
            for p in rings.drain(..) {
                pool.free(p);
            }
        }
        hs.drain(&mut pool);
        assert_eq!(pool.available(), 16, "no buffer leaked");
    }

    #[test]
    fn full_pool_stalls_instead_of_losing_packets() {
        let mut pool = PacketPool::new(1);
        let mut tx = TxQueue::new();
        let mut hs = stack();
        let mut p = pool.alloc().unwrap();
        p.fill(&arp_request(PEER_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 1)));
        hs.enqueue(p).unwrap();
        // The only buffer is in the backlog: no room for a reply yet.
        hs.poll(1, &mut pool, &mut tx);
        assert!(tx.is_empty());
        assert!(hs.has_work());
        hs.drain(&mut pool);
        assert_eq!(pool.available(), 1);
    }
}
