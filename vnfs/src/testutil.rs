//! Builders for real test frames, made with smoltcp's wire types, and a
//! rig that drives a whole dataplane with them.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

pub fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    arp_frame(&arp, src_mac, EthernetAddress::BROADCAST)
}

/// `arp` in an Ethernet frame from `src_mac` to `dst`.
fn arp_frame(arp: &ArpRepr, src_mac: [u8; 6], dst: EthernetAddress) -> Vec<u8> {
    let eth = EthernetRepr { src_addr: EthernetAddress(src_mac), dst_addr: dst, ethertype: EthernetProtocol::Arp };
    let mut buf = vec![0; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

pub fn echo_request(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ident: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest { ident, seq_no: 1, data };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut ipp = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut ipp, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps);
    buf
}

/// An IPv4 datagram in an Ethernet frame to `dst_mac`, with `payload` as
/// a UDP-ish body (protocol 17, no real UDP header needed by the router).
pub fn ipv4_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, df: bool, payload: &[u8]) -> Vec<u8> {
    let mut buf = l4_frame(dst_mac, src, dst, IpProtocol::Udp, payload);
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ipp.set_hop_limit(ttl);
    ipp.set_dont_frag(df);
    ipp.set_ident(0x1234);
    ipp.fill_checksum();
    buf
}

/// An ARP reply from `ip`/`mac` to `to_mac`/`to_ip`.
pub fn arp_reply(mac: [u8; 6], ip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress(to_mac),
        target_protocol_addr: to_ip,
    };
    arp_frame(&arp, mac, EthernetAddress(to_mac))
}

/// A UDP datagram in an Ethernet frame, with a correct checksum.
pub fn udp_frame(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    use smoltcp::wire::{UdpPacket, UdpRepr};
    let udp = UdpRepr { src_port: src.1, dst_port: dst.1 };
    let mut body = vec![0u8; udp.header_len() + payload.len()];
    let mut u = UdpPacket::new_unchecked(&mut body[..]);
    udp.emit(
        &mut u,
        &src.0.into(),
        &dst.0.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    l4_frame(dst_mac, src.0, dst.0, IpProtocol::Udp, &body)
}

/// A TCP segment (flags as given, no payload) in an Ethernet frame.
pub fn tcp_frame(dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), syn: bool, ack: bool) -> Vec<u8> {
    use smoltcp::wire::TcpControl;
    tcp_control_frame(dst_mac, src, dst, if syn { TcpControl::Syn } else { TcpControl::None }, ack)
}

/// A TCP segment with `control` (SYN, FIN, RST or none) and ACK if `ack`,
/// no payload, in an Ethernet frame.
pub fn tcp_control_frame(
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    control: smoltcp::wire::TcpControl,
    ack: bool,
) -> Vec<u8> {
    use smoltcp::wire::{TcpPacket, TcpRepr, TcpSeqNumber};
    let tcp = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control,
        seq_number: TcpSeqNumber(1000),
        ack_number: ack.then_some(TcpSeqNumber(1)),
        window_len: 1024,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let mut body = vec![0u8; tcp.buffer_len()];
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut body[..]),
        &src.0.into(),
        &dst.0.into(),
        &ChecksumCapabilities::default(),
    );
    l4_frame(dst_mac, src.0, dst.0, IpProtocol::Tcp, &body)
}

/// An IPv6 packet (no extension headers) of next header `next` carrying
/// `payload`, in an Ethernet frame from `src_mac` to `dst_mac`.
pub fn ipv6_frame(
    (dst_mac, src_mac): ([u8; 6], [u8; 6]),
    src: core::net::Ipv6Addr,
    dst: core::net::Ipv6Addr,
    hops: u8,
    next: u8,
    payload: &[u8],
) -> Vec<u8> {
    use crate::ipv6::{write_header, ETHERTYPE, HLEN};
    let mut f = vec![0u8; crate::wire::ETH_HLEN + HLEN + payload.len()];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE);
    write_header(&mut f[crate::wire::ETH_HLEN..], payload.len() as u16, next, hops, src, dst);
    f[crate::wire::ETH_HLEN + HLEN..].copy_from_slice(payload);
    f
}

/// An ICMPv6 message (checksum filled) in an [`ipv6_frame`].
pub fn icmpv6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: core::net::Ipv6Addr,
    dst: core::net::Ipv6Addr,
    hops: u8,
    repr: &smoltcp::wire::Icmpv6Repr<'_>,
) -> Vec<u8> {
    let mut body = vec![0u8; repr.buffer_len()];
    repr.emit(
        &src,
        &dst,
        &mut smoltcp::wire::Icmpv6Packet::new_unchecked(&mut body[..]),
        &ChecksumCapabilities::default(),
    );
    ipv6_frame(macs, src, dst, hops, crate::ipv6::ICMPV6, &body)
}

/// An IPv4 packet of protocol `proto` carrying `body`, in an Ethernet frame.
pub fn l4_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, body: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr { src_addr: src, dst_addr: dst, next_header: proto, payload_len: body.len(), hop_limit: 64 };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + body.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut ipp = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut ipp, &ChecksumCapabilities::default());
    ipp.payload_mut()[..body.len()].copy_from_slice(body);
    buf
}

/// `frame` as a chain of pool buffers of at most `chunk` bytes each, as a
/// NIC with mergeable receive buffers delivers a large one (a buffer the
/// pool cannot chain goes back to it).
pub fn chained(pool: &mut crate::packet::PacketPool, frame: &[u8], chunk: usize) -> crate::packet::Packet {
    let mut parts = frame.chunks(chunk);
    let mut head = pool.alloc().expect("a buffer");
    assert!(head.fill(parts.next().unwrap_or(&[])));
    for part in parts {
        let mut s = pool.alloc().expect("a buffer");
        assert!(s.fill(part));
        if let Err(s) = pool.append(&mut head, s) {
            pool.free(s);
        }
    }
    head
}

/// Buffers in a rig's pool.
pub const RIG_BUFFERS: usize = 256;

/// A dataplane driven by real frames, for the stage tests: frames go in on
/// a port, what the dataplane queued for transmit comes out.
pub struct Rig {
    pub pool: crate::packet::PacketPool,
    pub dp: crate::dataplane::Dataplane,
    pub now: u64,
}

impl Rig {
    pub fn with_config(text: &str, macs: &[[u8; 6]]) -> Rig {
        let cfg = crate::registry::parse(text).unwrap_or_else(|e| panic!("test config: {e:?}"));
        Rig::with(&cfg, macs)
    }

    pub fn with(cfg: &crate::config::Config, macs: &[[u8; 6]]) -> Rig {
        Rig {
            pool: crate::packet::PacketPool::new(RIG_BUFFERS),
            dp: crate::dataplane::Dataplane::new(cfg, macs, 0, 1),
            now: 0,
        }
    }

    /// Receives `frame` on `port`, then lets timers and host stacks run.
    pub fn send(&mut self, port: u8, frame: &[u8]) {
        let mut batch = crate::packet::Batch::new();
        let mut p = self.pool.alloc().unwrap();
        assert!(p.fill(frame));
        batch.push(p).unwrap();
        self.dp.receive(port, &mut batch, &mut self.pool, self.now);
        self.dp.poll(self.now, &mut self.pool);
    }

    /// Frames queued for transmit on `port`, taken out.
    pub fn sent(&mut self, port: u8) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let q = &mut self.dp.port_mut(port).tx;
        while let Some(p) = q.pop_front() {
            out.push(p.data().to_vec());
            self.pool.free(p);
        }
        out
    }

    /// Sends and returns the single frame that came out of `out`.
    pub fn through(&mut self, port: u8, frame: &[u8], out: u8) -> Vec<u8> {
        self.send(port, frame);
        let mut f = self.sent(out);
        assert_eq!(f.len(), 1, "expected one frame out of port {out}");
        f.pop().unwrap()
    }

    pub fn drops(&self, port: usize, r: crate::counters::DropReason) -> u64 {
        self.dp.ports()[port].counters.dropped(r)
    }

    /// Checks that every buffer came back to the pool.
    pub fn finish(mut self) {
        self.dp.drain(&mut self.pool);
        assert_eq!(self.pool.available(), RIG_BUFFERS, "buffers leaked");
    }
}

/// A TCP/IPv4 segmentation super-packet of `payload` bytes, as a NIC with
/// offloads delivers it: chained in buffers of `chunk` bytes, checksum
/// partial, `gso_size` 1448. `pool` must be able to chain
/// ([`crate::packet::PacketPool::with_tails`]).
pub fn super_packet(
    pool: &mut crate::packet::PacketPool,
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: usize,
    chunk: usize,
) -> crate::packet::Packet {
    use crate::csum;
    let mut f = tcp_frame(dst_mac, src, dst, false, true);
    f.extend((0..payload).map(|i| (i % 253) as u8));
    let ip_len = (f.len() - 14) as u16;
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_total_len(ip_len);
    ip.fill_checksum();
    // The partial checksum: the pseudo-header sum, for the NIC to complete.
    let mut sum = 6u32 + (ip_len as u32 - 20);
    for at in [26, 28, 30, 32] {
        sum += csum::get(&f, at) as u32;
    }
    csum::set(&mut f, 34 + 16, csum::fold(sum));
    let mut head = chained(pool, &f, chunk);
    assert!(head.is_chained(), "the pool chains");
    head.meta.offload = crate::packet::Offload { csum_partial: true, csum_start: 34, csum_offset: 16, gso_size: 1448 };
    head
}

/// `frame` (an untagged IPv4 frame) cut into fragments at the payload
/// offsets `cuts` (ascending, multiples of 8), each with its offset, MF bit,
/// total length and checksum set, in order.
pub fn fragments(frame: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(&frame[14..]).expect("an IPv4 frame");
    let hl = ip.header_len() as usize;
    let payload = ip.payload();
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < payload.len()));
    bounds.push(payload.len());
    bounds
        .windows(2)
        .map(|w| {
            let mut f = frame[..14 + hl].to_vec();
            f.extend_from_slice(&payload[w[0]..w[1]]);
            let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
            p.set_total_len((hl + w[1] - w[0]) as u16);
            p.set_frag_offset(w[0] as u16);
            p.set_more_frags(w[1] < payload.len());
            p.set_dont_frag(false);
            p.fill_checksum();
            f
        })
        .collect()
}

/// Receives `pkt` (built by the caller: chained, say) on `port`, as
/// [`Rig::send`] does a frame.
impl Rig {
    pub fn send_packet(&mut self, port: u8, pkt: crate::packet::Packet) {
        let mut batch = crate::packet::Batch::new();
        batch.push(pkt).unwrap();
        self.dp.receive(port, &mut batch, &mut self.pool, self.now);
        self.dp.poll(self.now, &mut self.pool);
    }
}
