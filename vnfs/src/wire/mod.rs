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
