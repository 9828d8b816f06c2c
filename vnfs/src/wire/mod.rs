//! Bytes on the wire, for what smoltcp's views do not cover: the
//! translators' field rewrites with incremental checksums ([`rewrite`]),
//! and the one place that knows how long a plain Ethernet header is.
//! Everything else finds the IPv4 header at the offset ingress recorded
//! in the packet's metadata ([`crate::packet::Meta::l3`]), so a stage works
//! the same behind an 802.1Q tag.

pub mod rewrite;

/// Bytes of an untagged Ethernet II header (destination, source, type).
pub const ETH_HLEN: usize = 14;
/// Bytes an 802.1Q tag adds.
pub const VLAN_TAG_LEN: usize = 4;

const _: () = assert!(ETH_HLEN == smoltcp::wire::EthernetFrame::<&[u8]>::header_len());

/// Makes the frame's L2 header a plain Ethernet header's length, moving
/// the window's start so that [`ETH_HLEN`] bytes precede the L3 header
/// (after a tag was parsed at ingress); the egress then writes the header.
/// `false` if the window cannot move (a frame in several buffers, or no
/// room in front).
pub fn untag(pkt: &mut crate::packet::Packet) -> bool {
    let l3 = pkt.meta.l3 as usize;
    if l3 == ETH_HLEN {
        return true;
    }
    let Some(head) = (pkt.head() + l3).checked_sub(ETH_HLEN) else { return false };
    let Some(len) = (pkt.len() + ETH_HLEN).checked_sub(l3) else { return false };
    if !pkt.set_window(head, len) {
        return false;
    }
    pkt.meta.l3 = ETH_HLEN as u8;
    true
}
