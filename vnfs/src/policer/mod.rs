//! Policing: a token-bucket meter per policer, colour-blind, as the
//! single-rate three-colour marker (RFC 2697) or the two-rate one
//! (RFC 2698), and an action per colour: pass, drop (counted here and as
//! the `policy` drop reason) or remark the DSCP (RFC 2474).
//!
//! A packet counts with the bytes it puts on the wire (a chained
//! super-packet's whole chain and the headers of each segment). IPv4 and IPv6 are metered; a `match` (IPv4 prefixes) selects
//! IPv4 packets by the header in the first buffer, and a packet whose
//! header cannot be read is metered as if it matched (fail closed).
//!
//! Tokens are kept in byte-microseconds, so a refill is one multiply and
//! no fraction of a token is lost between packets; the refill is bounded
//! to the time that fills the bucket, so no product overflows.

pub mod config;

use alloc::boxed::Box;
use core::any::Any;

use smoltcp::wire::{Ipv4Packet, Ipv6Packet};

pub use self::config::{Action, Meter, PolicerConfig};
use crate::config::{BuildContext, StageConfig, StageDef};
use crate::counters::DropReason;
use crate::packet::{Batch, Packet};
use crate::stage::{for_each_packet, Stage, StageContext};
use crate::stats::StatsSink;
use crate::Micros;

/// One token bucket: `tokens` in byte·µs, up to `cap` (the burst, scaled).
/// A segmentation super-packet (up to 64 KiB, more than most bursts) is
/// admitted when one segment's worth is there and takes all its bytes:
/// the bucket may go into debt by up to [`MAX_DEBT`], so the long-run
/// rate holds and TCP with offloads is not starved by its own batching.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: i64,
    cap: i64,
}

/// Bytes a bucket may owe (one largest super-packet).
const MAX_DEBT: i64 = 65_536;
const SCALE: i64 = 1_000_000;

impl Bucket {
    fn full(burst: u64) -> Bucket {
        // Bursts are at most 1 GiB (config), so this fits.
        let cap = burst as i64 * SCALE;
        Bucket { tokens: cap, cap }
    }

    /// Adds `add` (scaled) and returns what did not fit.
    fn fill(&mut self, add: u64) -> u64 {
        let room = (self.cap - self.tokens) as u64;
        let taken = add.min(room);
        self.tokens += taken as i64;
        add - taken
    }

    fn has(&self, bytes: u64) -> bool {
        self.tokens >= bytes.min(1 << 20) as i64 * SCALE
    }

    fn take(&mut self, bytes: u64) {
        let b = bytes.min(1 << 20) as i64 * SCALE;
        self.tokens = (self.tokens - b).max(-MAX_DEBT * SCALE);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    Green,
    Yellow,
    Red,
}

/// The meter: RFC 2697 or RFC 2698, colour-blind.
#[derive(Clone, Debug)]
pub struct TokenMeter {
    /// Committed bucket (CBS, filled at CIR).
    c: Bucket,
    /// srTCM: the excess bucket (EBS, filled by the committed one's
    /// overflow). trTCM: the peak bucket (PBS, filled at PIR).
    e: Bucket,
    cir: u64,
    pir: Option<u64>,
    last: Micros,
}

impl TokenMeter {
    /// Both buckets start full (RFC 2697 §3, RFC 2698 §3).
    pub fn new(rate: u64, burst: u64, meter: Meter, now: Micros) -> TokenMeter {
        let (e, pir) = match meter {
            Meter::SingleRate { excess_burst } => (Bucket::full(excess_burst), None),
            Meter::TwoRate { peak_rate, peak_burst } => (Bucket::full(peak_burst), Some(peak_rate)),
        };
        TokenMeter { c: Bucket::full(burst), e, cir: rate, pir, last: now }
    }

    fn refill(&mut self, now: Micros) {
        let dt = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        // No bucket holds more than 1 GiB and no rate is below 1 byte/s:
        // past this, every bucket is full anyway (and the products fit).
        let dt = dt.min(1 << 30);
        match self.pir {
            None => {
                let over = self.c.fill(dt.saturating_mul(self.cir));
                self.e.fill(over);
            }
            Some(pir) => {
                self.c.fill(dt.saturating_mul(self.cir));
                self.e.fill(dt.saturating_mul(pir));
            }
        }
    }

    /// The colour of a packet of `bytes` at `now`, its tokens taken.
    pub fn colour(&mut self, bytes: u64, now: Micros) -> Colour {
        self.colour_in(bytes, bytes, now)
    }

    /// The same for a packet whose wire units are at most `unit` bytes (a
    /// super-packet's segments): a colour needs one unit's tokens.
    pub fn colour_in(&mut self, bytes: u64, unit: u64, now: Micros) -> Colour {
        self.refill(now);
        let unit = unit.min(bytes);
        match self.pir {
            None => {
                if self.c.has(unit) {
                    self.c.take(bytes);
                    Colour::Green
                } else if self.e.has(unit) {
                    self.e.take(bytes);
                    Colour::Yellow
                } else {
                    Colour::Red
                }
            }
            Some(_) => {
                if !self.e.has(unit) {
                    Colour::Red
                } else if !self.c.has(unit) {
                    self.e.take(bytes);
                    Colour::Yellow
                } else {
                    self.e.take(bytes);
                    self.c.take(bytes);
                    Colour::Green
                }
            }
        }
    }
}

crate::counters! {
    pub struct PolicerCounters {
        green_packets: counter "packets within the committed rate",
        green_bytes: counter "bytes within the committed rate",
        yellow_packets: counter "packets above the committed rate, within the excess burst or peak rate",
        yellow_bytes: counter "bytes above the committed rate, within the excess burst or peak rate",
        red_packets: counter "packets above what the meter allows",
        red_bytes: counter "bytes above what the meter allows",
        dropped: counter "packets the policer dropped",
        remarked: counter "packets the policer gave a new DSCP",
        unmatched: counter "packets no `match` of the policer selects (passed unmetered)",
    }
}

pub struct Policer {
    settings: PolicerConfig,
    meter: Option<TokenMeter>,
    pub counters: PolicerCounters,
}

/// Sets the DSCP, keeping ECN: in the IPv4 header (its checksum
/// recomputed) or the IPv6 traffic class. The header is in the first
/// buffer, also of a chained super-packet.
fn set_dscp(pkt: &mut Packet, dscp: u8) {
    if crate::ipv6::is_ipv6(pkt.l3()) {
        if pkt.l3().len() >= 40 {
            let mut ip = Ipv6Packet::new_unchecked(pkt.l3_mut());
            let ecn = ip.traffic_class() & 3;
            ip.set_traffic_class(dscp << 2 | ecn);
        }
        return;
    }
    if pkt.ipv4_header().is_none() {
        return;
    }
    let mut ip = Ipv4Packet::new_unchecked(pkt.l3_mut());
    let ecn = ip.ecn();
    ip.set_dscp(dscp);
    ip.set_ecn(ecn);
    ip.fill_checksum();
}

/// The bytes a packet puts on the wire and the largest frame it leaves
/// in: a super-packet's every byte (the chain's further buffers too) and
/// the headers each of its segments repeats, as Linux's qdisc length
/// counts them; its unit is one segment.
fn wire_len(pkt: &Packet) -> (u64, u64) {
    let total = pkt.total_len() as u64;
    let o = pkt.meta.offload;
    let seg = if o.is_gso() { crate::offload::segment_len(pkt, o.gso_size) } else { None };
    let Some(seg) = seg else { return (total, total) };
    // gso_size is not 0 here; the headers are at most a few hundred bytes.
    let mss = o.gso_size as u64;
    let headers = pkt.meta.l3 as u64 + (seg as u64).saturating_sub(mss);
    let payload = total.saturating_sub(headers);
    let segments = payload.div_ceil(mss).max(1);
    (payload + segments * headers, (headers + mss).min(total))
}

impl Policer {
    pub fn new(settings: &PolicerConfig) -> Policer {
        Policer { settings: settings.clone(), meter: None, counters: PolicerCounters::default() }
    }

    fn selected(&self, pkt: &Packet) -> bool {
        if self.settings.matches.is_empty() {
            return true;
        }
        if crate::ipv6::is_ipv6(pkt.l3()) {
            // The prefixes are IPv4: no IPv6 address is in them.
            return false;
        }
        // A header this stage cannot read is metered, never waved through
        // unmetered (fail closed): a policer that skipped what it could not
        // parse would let anyone past it who sends such packets.
        let Some(ip) = pkt.ipv4_header() else { return true };
        self.settings.matches.iter().any(|(src, net)| net.contains(&if *src { ip.src_addr() } else { ip.dst_addr() }))
    }

    /// Meters one packet and applies its colour's action.
    fn police(&mut self, mut pkt: Packet, cx: &mut StageContext<'_>) -> Option<Packet> {
        if !self.selected(&pkt) {
            self.counters.unmatched += 1;
            return Some(pkt);
        }
        let s = &self.settings;
        let (bytes, unit) = wire_len(&pkt);
        let meter = self.meter.get_or_insert_with(|| TokenMeter::new(s.rate, s.burst, s.meter, cx.now));
        let c = &mut self.counters;
        let action = match meter.colour_in(bytes, unit, cx.now) {
            Colour::Green => {
                c.green_packets += 1;
                c.green_bytes += bytes;
                Action::Pass
            }
            Colour::Yellow => {
                c.yellow_packets += 1;
                c.yellow_bytes += bytes;
                s.exceed
            }
            Colour::Red => {
                c.red_packets += 1;
                c.red_bytes += bytes;
                s.violate
            }
        };
        match action {
            Action::Pass => Some(pkt),
            Action::Drop => {
                c.dropped += 1;
                cx.drop(pkt, DropReason::Policy);
                None
            }
            Action::Remark(dscp) => {
                c.remarked += 1;
                set_dscp(&mut pkt, dscp);
                Some(pkt)
            }
        }
    }
}

impl Stage for Policer {
    /// IPv6 is metered too (without a `match`): a rate on a port holds
    /// whatever the packets carry.
    fn ipv6(&self) -> crate::stage::Ipv6Handling {
        crate::stage::Ipv6Handling::Process
    }

    fn process(&mut self, batch: &mut Batch, cx: &mut StageContext<'_>) {
        for_each_packet(batch, |pkt| self.police(pkt, cx));
    }

    fn report(&self, sink: &mut dyn StatsSink) {
        self.counters.report(sink);
    }

    /// New rates take effect at once with full buckets; the counters stay.
    fn reconfigure(&mut self, settings: &dyn Any) -> bool {
        let Some(s) = settings.downcast_ref::<PolicerConfig>() else { return false };
        self.settings = s.clone();
        self.meter = None;
        true
    }
}

/// The policer's stage definition (one line of the registry).
pub static DEF: StageDef = StageDef { kind: "policer", statements: &["policer"], parse: config::parse, build };

fn build(c: &dyn StageConfig, _: &BuildContext<'_>) -> Box<dyn Stage> {
    let c = c.as_any().downcast_ref::<PolicerConfig>().expect("a policer builds from its own settings");
    Box::new(Policer::new(c))
}

#[cfg(test)]
mod tests;
