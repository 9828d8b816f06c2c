//! The policer's statement:
//!
//! ```text
//! policer NAME {
//!     rate 10mbit          # committed information rate (bit/s: k, m, g)
//!     burst 32k            # committed burst size, bytes (k, m: 1024s)
//!     excess-burst 64k     # srTCM (RFC 2697): a third colour from a second bucket
//!     peak-rate 20mbit     # trTCM (RFC 2698) instead: peak rate and burst
//!     peak-burst 64k
//!     match src 10.0.0.0/24  # police only this prefix's packets (src or dst; repeatable)
//!     exceed pass|drop|remark DSCP   # yellow packets (default: pass)
//!     violate drop|pass|remark DSCP  # red packets (default: drop)
//!     port lan             # default pipelines: police packets arriving on lan
//! }
//! ```

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use ipnet::Ipv4Net;

use crate::config::{is_name, stage_ports, Config, ConfigError, Errors, Line, Place, StageConfig, Stmt, Token, Word};

/// Prefixes one policer may match.
pub const MAX_MATCHES: usize = 64;

/// What happens to a packet of a colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Pass with this DSCP (RFC 2474) in the IPv4 header.
    Remark(u8),
}

/// Which meter (both colour-blind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter {
    /// RFC 2697: CIR, CBS and EBS.
    SingleRate { excess_burst: u64 },
    /// RFC 2698: CIR, CBS, PIR and PBS.
    TwoRate { peak_rate: u64, peak_burst: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicerConfig {
    /// Committed information rate, bytes per second.
    pub rate: u64,
    /// Committed burst size, bytes.
    pub burst: u64,
    pub meter: Meter,
    /// Police only packets whose source (`true`) or destination is in one
    /// of these; empty: every packet.
    pub matches: Vec<(bool, Ipv4Net)>,
    pub exceed: Action,
    pub violate: Action,
    /// Ports whose default pipeline runs this policer.
    pub ports: Vec<usize>,
    pub line: Line,
}

/// `10mbit`, `1.5gbit`, `64kbit`, `800000` (bit/s) to bytes per second.
fn parse_rate(s: &str) -> Option<u64> {
    let s = s.strip_suffix("bit").or_else(|| s.strip_suffix("bps")).unwrap_or(s);
    let (num, scale) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1_000u64),
        b'm' => (&s[..s.len() - 1], 1_000_000),
        b'g' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    let bits = scaled(num, scale)?;
    // 8 bit/s to 400 Gbit/s.
    (8..=400_000_000_000).contains(&bits).then_some(bits / 8)
}

/// `32k`, `1m`, `1500` bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, scale) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1024u64),
        b'm' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    // Up to 1 GiB: the token arithmetic stays far from overflow.
    scaled(num, scale).filter(|b| (1..=1 << 30).contains(b))
}

/// A decimal number (at most 9 digits before and 3 after the point) times `scale`.
fn scaled(num: &str, scale: u64) -> Option<u64> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || int.len() > 9 || frac.len() > 3 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v = int.parse::<u64>().ok()?.checked_mul(scale)?;
    let mut unit = scale;
    for d in frac.bytes() {
        unit /= 10;
        v = v.checked_add((d - b'0') as u64 * unit)?;
    }
    Some(v)
}

fn parse_action(t: &Token<'_>, dscp: Option<&Word<'_>>, errors: &mut Errors) -> Option<Action> {
    match (t.text, dscp) {
        ("pass", _) => Some(Action::Pass),
        ("drop", _) => Some(Action::Drop),
        ("remark", Some(d)) => match d.text.parse::<u8>() {
            Ok(v) if v < 64 => Some(Action::Remark(v)),
            _ => {
                errors.push(ConfigError::at(d, format!("bad DSCP `{}`: expected 0 to 63", d.text)));
                None
            }
        },
        _ => {
            errors.push(ConfigError::at(t, "expected `pass`, `drop` or `remark DSCP`"));
            None
        }
    }
}

fn parse_one(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<(String, PolicerConfig)> {
    let kw = *stmt.words[0];
    let before = errors.len();
    let Some(name) = stmt.words.get(1) else {
        errors
            .push(ConfigError::at(&kw, "`policer` needs a name and a block: `policer up { rate 10mbit; burst 32k }`"));
        return None;
    };
    if !is_name(name.text) {
        errors.push(ConfigError::at(name, format!("bad policer name `{}`", name.text)));
    }
    if let Some(extra) = stmt.words.get(2) {
        errors.push(ConfigError::at(
            extra,
            format!("unexpected `{}`: `policer NAME` takes its settings in a block", extra.text),
        ));
    }
    let mut p = PolicerConfig {
        rate: 0,
        burst: 0,
        meter: Meter::SingleRate { excess_burst: 0 },
        matches: Vec::new(),
        exceed: Action::Pass,
        violate: Action::Drop,
        ports: Vec::new(),
        line: Line(kw.line),
    };
    let (mut peak_rate, mut peak_burst, mut excess) = (None, None, None);
    for child in stmt.block.iter().flatten() {
        let key = *child.words[0];
        let args = &child.words[1..];
        let Some(first) = args.first() else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        match key.text {
            "rate" | "peak-rate" => {
                match parse_rate(first.text) {
                    Some(r) if key.text == "rate" => p.rate = r,
                    Some(r) => peak_rate = Some(r),
                    None => errors.push(ConfigError::at(
                        first,
                        format!("bad {} `{}`: expected bits per second such as 10mbit, 512kbit or 1gbit", key.text, first.text),
                    )),
                }
            }
            "burst" | "peak-burst" | "excess-burst" => {
                match parse_size(first.text) {
                    Some(b) => match key.text {
                        "burst" => p.burst = b,
                        "peak-burst" => peak_burst = Some(b),
                        _ => excess = Some(b),
                    },
                    None => errors.push(ConfigError::at(
                        first,
                        format!("bad {} `{}`: expected bytes from 1 to 1024m, such as 32k", key.text, first.text),
                    )),
                }
            }
            "match" => {
                let src = match first.text {
                    "src" => true,
                    "dst" => false,
                    _ => {
                        errors.push(ConfigError::at(first, "expected `match src PREFIX` or `match dst PREFIX`"));
                        continue;
                    }
                };
                match args.get(1).map(|t| (t, t.text.parse::<Ipv4Net>())) {
                    Some((_, Ok(net))) if p.matches.len() < MAX_MATCHES => p.matches.push((src, net.trunc())),
                    Some((t, Ok(_))) => errors.push(ConfigError::at(t, format!("a policer matches at most {MAX_MATCHES} prefixes"))),
                    Some((t, Err(_))) => errors.push(ConfigError::at(t, format!("bad prefix `{}`", t.text))),
                    None => errors.push(ConfigError::at(first, "`match` needs a prefix")),
                }
            }
            "exceed" | "violate" => {
                if let Some(a) = parse_action(first, args.get(1), errors) {
                    if key.text == "exceed" {
                        p.exceed = a
                    } else {
                        p.violate = a
                    }
                }
            }
            "port" => stage_ports(args, config, "policer", &mut p.ports, errors),
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown policer setting `{other}`: expected rate, burst, excess-burst, peak-rate, peak-burst, match, exceed, violate or port"),
            )),
        }
    }
    if p.rate == 0 && errors.len() == before {
        errors.push(ConfigError::at(&kw, "a policer needs `rate BITS-PER-SECOND`"));
    }
    if p.burst == 0 {
        // One MTU-sized packet at least, or 10 ms at the rate.
        p.burst = (p.rate / 100).max(1514);
    }
    match (peak_rate, peak_burst, excess) {
        (Some(_), _, Some(_)) => errors.push(ConfigError::at(
            &kw,
            "`excess-burst` (RFC 2697) and `peak-rate` (RFC 2698) do not mix: pick one meter",
        )),
        (Some(pir), pbs, None) if pir < p.rate => {
            let _ = pbs;
            errors.push(ConfigError::at(&kw, "`peak-rate` must be at least `rate` (RFC 2698)"))
        }
        (Some(pir), pbs, None) => p.meter = Meter::TwoRate { peak_rate: pir, peak_burst: pbs.unwrap_or(p.burst) },
        (None, Some(_), _) => errors.push(ConfigError::at(&kw, "`peak-burst` needs `peak-rate`")),
        (None, None, e) => p.meter = Meter::SingleRate { excess_burst: e.unwrap_or(0) },
    }
    (errors.len() == before).then(|| (name.text.to_string(), p))
}

pub fn parse(stmts: &[&Stmt<'_>], config: &Config, errors: &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)> {
    stmts
        .iter()
        .filter_map(|s| parse_one(s, config, errors))
        .map(|(n, p)| (n, Rc::new(p) as Rc<dyn StageConfig>))
        .collect()
}

impl StageConfig for PolicerConfig {
    crate::stage_config_identity!();

    /// Before routing on its ports: what is policed away costs no lookup.
    fn placement(&self, port: usize, _: &Config) -> Option<Place> {
        self.ports.contains(&port).then_some(Place::BeforeRouting(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes() {
        assert_eq!(parse_rate("10mbit"), Some(1_250_000));
        assert_eq!(parse_rate("1.5gbit"), Some(187_500_000));
        assert_eq!(parse_rate("64k"), Some(8_000));
        assert_eq!(parse_rate("800"), Some(100));
        for bad in ["", "mbit", "-1", "1e9", "9999999999gbit", "1.2345m", "7"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        assert_eq!(parse_size("32k"), Some(32 * 1024));
        assert_eq!(parse_size("1500"), Some(1500));
        assert_eq!(parse_size("2048m"), None);
        assert_eq!(parse_size("0"), None);
    }
}
