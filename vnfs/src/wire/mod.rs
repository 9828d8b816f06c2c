//! Bytes on the wire, for what smoltcp's views do not cover: the
//! translators' field rewrites with incremental checksums ([`rewrite`]),
//! and the one place that knows how long a plain Ethernet header is
//! (`Packet::untag` and the egress use it to write plain Ethernet).
//! Everything else finds the IPv4 header at the offset ingress recorded
//! in the packet's metadata ([`crate::packet::Meta::l3`]), so a stage works
//! the same behind an 802.1Q tag.

pub mod rewrite;

/// Bytes of an untagged Ethernet II header (destination, source, type).
pub const ETH_HLEN: usize = 14;
/// Bytes an 802.1Q tag adds.
pub const VLAN_TAG_LEN: usize = 4;

const _: () = assert!(ETH_HLEN == smoltcp::wire::EthernetFrame::<&[u8]>::header_len());

/// The IPv4 header at the start of `l3` (a packet's first buffer from its
/// L3 offset on), when `available` bytes of the frame follow that offset in
/// all its buffers: the header is always in the first buffer, but a chained
/// frame (a segmentation super-packet) continues past it, so the total
/// length is checked against the whole frame, not against the buffer, where
/// smoltcp's `new_checked` would refuse it. `None` if the header does not
/// hold together (a filter must then drop, not skip). Packets call it as
/// [`crate::packet::Packet::ipv4_header`].
pub fn ipv4_header(l3: &[u8], available: usize) -> Option<smoltcp::wire::Ipv4Packet<&[u8]>> {
    if l3.len() < 20 {
        return None;
    }
    let ip = smoltcp::wire::Ipv4Packet::new_unchecked(l3);
    let (ihl, total) = (ip.header_len() as usize, ip.total_len() as usize);
    (ip.version() == 4 && ihl >= 20 && ihl <= l3.len() && total >= ihl && total <= available).then_some(ip)
}
