//! 802.1Q VLAN sub-ports (and 802.1ad QinQ): a trunk NIC carries tagged
//! frames, each VLAN is a port of its own (`port lan100 on trunk0 vlan 100
//! address 10.100.0.1/24`) with addresses, pipeline, counters, ARP/ND and
//! host stack like any other.
//!
//! Ingress reads the tags once ([`parse`]) and takes them off the frame
//! ([`pop`]), so the sub-port sees what a Linux VLAN device delivers: an
//! untagged frame whose L3 offset is in the packet's metadata. The sub-port's
//! transmit queue is drained into its trunk's with the tags put back
//! ([`push`]); the priority bits (PCP) of a frame that came in tagged are
//! kept unless the sub-port sets its own (`priority 0-7`). Tags are told
//! apart by their TPID as IEEE 802.1Q-2018 does: a single-tagged sub-port
//! takes an 802.1Q tag (0x8100) only; a QinQ sub-port an 802.1ad service
//! tag (0x88a8, or its `tpid` for pre-standard gear: 0x9100…) outside an
//! 802.1Q tag; anything else is `vlan_bad_tpid`, and frames leave with the
//! same TPIDs. The MTU is the
//! IP MTU, as on Linux: a 1500-byte packet leaves in a 1518-byte frame (1522
//! with QinQ), which the NIC's buffers hold.

pub mod config;
#[cfg(test)]
mod tests;

use crate::counters::DropReason;
use crate::packet::Packet;
use crate::wire::ETH_HLEN;

pub use config::VlanPort;

/// 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag (the outer tag of QinQ).
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer TPIDs (some switches still send them); a
/// QinQ sub-port takes one only when its `tpid` says so.
pub const TPID_LEGACY: [u16; 3] = [0x9100, 0x9200, 0x9300];
/// Bytes one tag adds.
pub const TAG_LEN: usize = 4;

/// Whether `t` is the TPID of some tag (what [`parse`] reads as one).
fn is_tpid(t: u16) -> bool {
    t == TPID_8021Q || t == TPID_8021AD || TPID_LEGACY.contains(&t)
}

/// The tags a frame carries: `outer` is the service tag (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    pub outer: u16,
    /// The outer tag's TPID (0: a single tag).
    pub outer_tpid: u16,
    pub vid: u16,
    /// The TPID of the (inner) tag that carries `vid`.
    pub tpid: u16,
    /// Priority code point of the (inner) tag.
    pub pcp: u8,
    /// Bytes of tags after the MAC addresses (4 or 8).
    pub len: u8,
}

/// Reads the VLAN tags of a frame: `Ok(None)` for an untagged frame,
/// `Ok(Some(tags))` for one or two well-formed tags (of any TPID that
/// marks a tag: which ones a sub-port takes is [`Trunk::find`]'s to say),
/// `Err` for a frame cut inside its tags, VLAN 0 or 4095 where a VLAN id is
/// needed (priority tags are taken as untagged, 802.1Q §9.6), or more than
/// two tags.
pub fn parse(frame: &[u8]) -> Result<Option<Tags>, DropReason> {
    let tpid = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let Some(first) = tpid(12) else { return Err(DropReason::EthTruncated) };
    if !is_tpid(first) {
        return Ok(None);
    }
    // Tag control + the next EtherType must follow.
    let tci = tpid(14).ok_or(DropReason::VlanMalformed)?;
    let next = tpid(16).ok_or(DropReason::VlanMalformed)?;
    let vid = tci & 0x0fff;
    if is_tpid(next) {
        let inner = tpid(18).ok_or(DropReason::VlanMalformed)?;
        let after = tpid(20).ok_or(DropReason::VlanMalformed)?;
        if is_tpid(after) {
            // Three tags: sluice takes two at most.
            return Err(DropReason::VlanMalformed);
        }
        let ivid = inner & 0x0fff;
        if vid == 0 || vid == 0xfff || ivid == 0 || ivid == 0xfff {
            return Err(DropReason::VlanMalformed);
        }
        return Ok(Some(Tags {
            outer: vid,
            outer_tpid: first,
            vid: ivid,
            tpid: next,
            pcp: (inner >> 13) as u8,
            len: 8,
        }));
    }
    if vid == 0xfff {
        return Err(DropReason::VlanMalformed);
    }
    Ok(Some(Tags { outer: 0, outer_tpid: 0, vid, tpid: first, pcp: (tci >> 13) as u8, len: 4 }))
}

/// Takes `tags.len` bytes of tags out of the frame: the MAC addresses move
/// up, the window starts later, the offload offsets follow. `false` if the
/// frame is shorter than its tags.
pub fn pop(pkt: &mut Packet, tags: &Tags) -> bool {
    let n = tags.len as usize;
    if pkt.len() < 12 + n + 2 {
        return false;
    }
    let d = pkt.data_mut();
    d.copy_within(0..12, n);
    if !pkt.move_start(pkt.head() + n) {
        return false;
    }
    let o = &mut pkt.meta.offload;
    o.csum_start = o.csum_start.saturating_sub(n as u16);
    pkt.meta.l3 = ETH_HLEN as u8;
    true
}

/// Puts tags in front of the EtherType of an untagged frame: `outer`
/// (0: none) as a service tag of TPID `outer_tpid` (802.1ad's 0x88a8
/// unless the sub-port says otherwise), `vid` with priority `pcp` as the
/// 802.1Q tag. `false` if the buffer has no headroom left.
pub fn push(pkt: &mut Packet, (outer_tpid, outer): (u16, u16), vid: u16, pcp: u8) -> bool {
    let n = if outer != 0 { 2 * TAG_LEN } else { TAG_LEN };
    let Some(head) = pkt.head().checked_sub(n) else { return false };
    if pkt.len() < 12 || !pkt.move_start(head) {
        return false;
    }
    let d = pkt.data_mut();
    d.copy_within(n..n + 12, 0);
    let tci = (pcp as u16 & 7) << 13 | (vid & 0x0fff);
    if outer != 0 {
        d[12..14].copy_from_slice(&outer_tpid.to_be_bytes());
        d[14..16].copy_from_slice(&((pcp as u16 & 7) << 13 | (outer & 0x0fff)).to_be_bytes());
        d[16..18].copy_from_slice(&TPID_8021Q.to_be_bytes());
        d[18..20].copy_from_slice(&tci.to_be_bytes());
    } else {
        d[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
        d[14..16].copy_from_slice(&tci.to_be_bytes());
    }
    let o = &mut pkt.meta.offload;
    if o.csum_partial || o.is_gso() {
        o.csum_start += n as u16;
    }
    true
}

/// Frames for VLANs no sub-port takes, counted per VLAN id: the first
/// [`UNKNOWN_TRACKED`] distinct ids get a counter each, the rest share one.
#[derive(Clone, Debug, Default)]
pub struct UnknownVlans {
    pub per_vlan: heapless::Vec<(u16, u16, u64), UNKNOWN_TRACKED>,
    /// Frames of VLANs beyond the tracked ones.
    pub others: u64,
}

/// Distinct unknown VLANs counted one by one, per trunk.
pub const UNKNOWN_TRACKED: usize = 32;

impl UnknownVlans {
    pub fn count(&mut self, outer: u16, vid: u16) {
        if let Some(e) = self.per_vlan.iter_mut().find(|e| e.0 == outer && e.1 == vid) {
            e.2 += 1;
        } else if self.per_vlan.push((outer, vid, 1)).is_err() {
            self.others += 1;
        }
    }
}

/// A trunk's sub-ports, for the per-frame lookup (a handful: scanned).
#[derive(Clone, Debug, Default)]
pub struct Trunk {
    /// (outer VLAN or 0, VLAN, sub-port, outer TPID).
    pub subs: heapless::Vec<(u16, u16, crate::packet::PortId, u16), { crate::MAX_PORTS }>,
    pub unknown: UnknownVlans,
}

impl Trunk {
    /// The sub-port a tagged frame is for: `vlan_bad_tpid` if its tags'
    /// TPIDs are not the sub-port's (the VLAN id tag 802.1Q, the outer one
    /// the sub-port's service TPID), `vlan_unknown` if no sub-port has its
    /// VLANs.
    #[inline]
    pub fn find(&self, tags: &Tags) -> Result<crate::packet::PortId, DropReason> {
        if tags.tpid != TPID_8021Q {
            return Err(DropReason::VlanBadTpid);
        }
        match self.subs.iter().find(|s| s.0 == tags.outer && s.1 == tags.vid) {
            None => Err(DropReason::VlanUnknown),
            Some(s) if tags.outer != 0 && tags.outer_tpid != s.3 => Err(DropReason::VlanBadTpid),
            Some(s) => Ok(s.2),
        }
    }
}
