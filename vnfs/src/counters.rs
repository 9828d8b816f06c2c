//! Drop reasons and per-port counters.
//!
//! Every packet the appliance does not forward is dropped for one named
//! reason, and every reason has a counter the operator can read (VPP's error
//! table is the model). Names are stable: they appear in the console dump and,
//! later, in `/metrics`.

use core::fmt;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Why a packet was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in dumps and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One line for the operator on what the reason means.
            pub const fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)* }
            }
        }
    };
}

drop_reasons! {
    EthTruncated => "eth_truncated", "frame shorter than an Ethernet header";
    NotOurMac => "not_our_mac", "unicast frame for another MAC address";
    UnknownEthertype => "unknown_ethertype", "EtherType that sluice does not handle";
    VlanUnknown => "vlan_unknown", "tagged frame for a VLAN no sub-port of the trunk takes (counted per VLAN in `show vlans`)";
    VlanMalformed => "vlan_malformed", "VLAN tag cut short, VLAN id 4095, a zero id in QinQ, or more than two tags";
    VlanBadTpid => "vlan_bad_tpid", "VLAN tag whose TPID the sub-ports do not take: an 802.1Q tag is 0x8100, a QinQ outer tag 0x88a8 (or the sub-port's `tpid`)";
    TunnelTruncated => "tunnel_truncated", "VXLAN/Geneve packet shorter than its headers, options or inner Ethernet header";
    TunnelBadHeader => "tunnel_bad_header", "VXLAN flags without the I bit, a Geneve version other than 0, or a Geneve protocol sluice does not carry";
    TunnelBadChecksum => "tunnel_bad_checksum", "tunnel packet whose non-zero outer UDP checksum does not verify";
    TunnelUnknownVni => "tunnel_unknown_vni", "tunnel packet with a VNI no tunnel port of this address and UDP port has";
    TunnelUnknownRemote => "tunnel_unknown_remote", "tunnel packet from an outer source that is not one of the tunnel's remotes";
    TunnelWrongPort => "tunnel_wrong_port", "tunnel packet that arrived on a port other than the tunnel's underlay (the port whose address is its `local`)";
    TunnelFragment => "tunnel_fragment", "fragmented outer IPv4 packet of a tunnel (sluice does not reassemble)";
    TunnelNested => "tunnel_nested", "tunnel packet inside a tunnel (one level is decapsulated)";
    TunnelOam => "tunnel_oam", "Geneve OAM packet (O bit): control traffic, not data";
    TunnelCriticalOption => "tunnel_critical_option", "Geneve packet with the C bit set: a critical option sluice does not understand (RFC 8926 §3.4)";
    TunnelTooBig => "tunnel_too_big", "encapsulated frame larger than the underlay port's MTU";
    Ipv6Unsupported => "ipv6_unsupported", "IPv6 on a port without IPv6 addresses, or into a stage that refuses it (an ACL without IPv6 rules)";
    Ipv6Truncated => "ipv6_truncated", "IPv6 header or payload length longer than the frame";
    Ipv6BadVersion => "ipv6_bad_version", "IPv6 EtherType but the version field is not 6";
    Ipv6BadExtHeader => "ipv6_bad_ext_header", "IPv6 extension header chain outside the packet, hop-by-hop not first, or longer than 8 headers";
    HopLimitExpired => "hop_limit_expired", "IPv6 hop limit reached zero in transit (ICMPv6 time exceeded sent)";
    PacketTooBig => "packet_too_big", "IPv6 packet larger than the egress MTU (routers do not fragment IPv6; ICMPv6 packet too big sent)";
    Ipv6LocalUnhandled => "ipv6_local_unhandled", "IPv6 to the appliance that is neither echo nor neighbour discovery (no IPv6 TCP/UDP service yet)";
    Ipv6Tentative => "ipv6_tentative", "IPv6 to an address still in duplicate address detection";
    Icmpv6Malformed => "icmpv6_malformed", "ICMPv6 message too short or with a bad checksum";
    NdMalformed => "nd_malformed", "neighbour discovery message that fails RFC 4861 validation (hop limit 255, target, options)";
    ArpMalformed => "arp_malformed", "ARP packet too short or not Ethernet/IPv4";
    Ipv4Truncated => "ipv4_truncated", "IPv4 header or total length longer than the frame";
    Ipv4BadVersion => "ipv4_bad_version", "IP version field is not 4";
    Ipv4BadHeaderLen => "ipv4_bad_header_len", "IHL below 5 or total length below IHL";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum does not verify";
    NoRoute => "no_route", "IPv4 packet not for the appliance and no route for it";
    SourceWrongPort => "source_wrong_port", "source address that belongs on another port, or is the appliance's own (reverse-path check, `rpf`)";
    TtlExpired => "ttl_expired", "TTL reached zero in transit (ICMP time exceeded sent)";
    MartianSource => "martian_source", "source address that cannot be a host: 0/8, loopback, multicast, broadcast, 240/4";
    MartianDestination => "martian_destination", "destination that is never routed: 0/8, loopback, multicast, broadcast, 240/4";
    FragNeeded => "frag_needed", "larger than the egress MTU with DF set (ICMP fragmentation needed sent)";
    FragNoBuffer => "frag_no_buffer", "no free buffer for a fragment";
    NeighborQueueFull => "neighbor_queue_full", "too many packets already wait for this next hop's ARP reply";
    NeighborUnreachable => "neighbor_unreachable", "the next hop did not answer ARP";
    NeighborTableFull => "neighbor_table_full", "no room in the neighbour cache for another next hop";
    NeighborHoldFull => "neighbor_hold_full", "the packets waiting for next hops on this port already hold their share of the buffer pool (a sixteenth, split over the ports)";
    NatTableFull => "nat_table_full", "NAT session table full: new session refused";
    NatPortsExhausted => "nat_ports_exhausted", "no free outside port for a new NAT mapping";
    NatQuota => "nat_quota", "the inside host or port forward holds all the NAT sessions its quota allows (host-sessions, forward-sessions)";
    NatFiltered => "nat_filtered", "inbound packet the NAT's filtering does not let in";
    NatInboundUnsolicited => "nat_inbound_unsolicited", "packet from the NAT's outside port straight to an inside address, of no session (`inbound route` routes them)";
    NatNoMapping => "nat_no_mapping", "inbound packet to a NAT address with no mapping";
    NatUnsupportedProtocol => "nat_unsupported_protocol", "protocol the NAT cannot translate (not TCP, UDP or ICMP)";
    NatFragmentUnknown => "nat_fragment_unknown", "non-first fragment of a datagram whose first fragment the NAT has not seen";
    NatIcmpErrorNoMatch => "nat_icmp_error_no_match", "ICMP error about a packet of no NAT session";
    Nat64Unsupported => "nat64_unsupported", "what NAT64 does not translate: IPv6 extension headers and fragments, IPv4 fragments, ICMPv6 errors from inside, other protocols";
    Nat64NonGlobal => "nat64_non_global", "an address under the well-known prefix 64:ff9b::/96 with a non-global IPv4 address (RFC 6052 3.1: never translated)";
    Nat64NotInside => "nat64_not_inside", "IPv6 to the NAT64 prefix that arrived on its outside port, not an inside one";
    Nat64HostsPer64 => "nat64_hosts_per_64", "a new inside IPv6 host refused: its /64 has all the stand-in addresses `hosts-per-64` allows";
    L4Truncated => "l4_truncated", "TCP/UDP/ICMP header too short to translate or balance";
    LbNoBackend => "lb_no_backend", "no backend of the service is up (TCP reset / ICMP port unreachable sent)";
    LbFlowTableFull => "lb_flow_table_full", "load balancer flow table full: new flow refused";
    LbClientQuota => "lb_client_quota", "the client holds all the load balancer flows its quota allows (lb client-flows): new flow refused";
    LbClientsPer64 => "lb_clients_per_64", "a new IPv6 client's flow refused: its /64 has all the client slots `lb clients-per-64` allows";
    HostStackBacklog => "host_stack_backlog", "packets for the appliance itself arrived faster than its host stack drains them";
    TxRingFull => "tx_ring_full", "the egress NIC's transmit ring was full";
    OffloadUnsupported => "offload_unsupported", "a frame in several buffers, or a partial checksum or super-packet that is not TCP/UDP over IPv4, that cannot go on as it is";
    SegmentNoBuffer => "segment_no_buffer", "no free buffer to cut a TCP super-packet into segments in software";
    AclUnparsable => "acl_unparsable", "IPv4 packet an ACL cannot classify: a header cut short, or not all in the packet's first buffer (fail closed)";
    AclTinyFragment => "acl_tiny_fragment", "first fragment too short to hold its transport header's ports and flags, or a TCP fragment at offset 8 (RFC 1858, RFC 3128)";
    AclFragmentUnknown => "acl_fragment_unknown", "non-first fragment of a datagram whose first fragment the ACL has not judged (fail closed)";
    GsoSizeInvalid => "gso_size_invalid", "a super-packet whose segment size (gso_size) from the NIC is below 88 bytes or above what its port's MTU carries";
    Policy => "policy", "dropped by a stage's policy (a policer's rate, a filter's rule): that stage's counters say which";
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A counter per drop reason (an array too long for `derive(Default)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drops(pub [u64; DropReason::COUNT]);

impl Default for Drops {
    fn default() -> Self {
        Drops([0; DropReason::COUNT])
    }
}

impl core::ops::Deref for Drops {
    type Target = [u64; DropReason::COUNT];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for Drops {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Counters of one port.
#[derive(Clone, Debug, Default)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets handed to the appliance's own host stack.
    pub local_packets: u64,
    pub drops: Drops,
}

impl PortCounters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "ALL must be in discriminant order");
            assert!(a.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
