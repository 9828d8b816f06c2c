//! The VLAN settings of a `port` statement: `on PARENT vlan VID
//! [outer-vlan SVID [tpid 0x88a8|0x8100|0x9100|0x9200|0x9300]] [priority PCP]`.

use alloc::format;
use alloc::string::{String, ToString};

use crate::config::{ConfigError, Errors, Token};

/// A sub-port of a trunk NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanPort {
    /// The trunk's port index (resolved once every port is read).
    pub parent: usize,
    pub parent_name: String,
    /// The 802.1Q VLAN id (1-4094).
    pub vid: u16,
    /// The 802.1ad service VLAN of a QinQ sub-port (0: single-tagged).
    pub outer: u16,
    /// The service tag's TPID: 802.1ad's 0x88a8 unless `tpid` names a
    /// pre-standard one.
    pub outer_tpid: u16,
    /// PCP for every frame sent (`None`: keep the received frame's, else 0).
    pub priority: Option<u8>,
}

/// What a `port` statement said about VLANs so far.
#[derive(Default)]
pub struct Pending<'a> {
    pub on: Option<Token<'a>>,
    pub vid: Option<u16>,
    pub outer: u16,
    pub priority: Option<u8>,
    /// `tpid`, with its value's token (refused without `outer-vlan`).
    pub tpid: Option<(Token<'a>, u16)>,
}

/// Reads one VLAN key of a `port` statement; `false` if `key` is not one.
pub fn parse_key<'a>(key: &Token<'a>, value: &Token<'a>, p: &mut Pending<'a>, errors: &mut Errors) -> bool {
    let vid = |v: &Token<'_>, errors: &mut Errors| match v.text.parse::<u16>() {
        Ok(n) if (1..=4094).contains(&n) => Some(n),
        _ => {
            errors.push(ConfigError::at(v, format!("bad VLAN id `{}`: expected a number from 1 to 4094", v.text)));
            None
        }
    };
    match key.text {
        "on" => p.on = Some(*value),
        "vlan" => p.vid = vid(value, errors),
        "outer-vlan" => p.outer = vid(value, errors).unwrap_or(0),
        "tpid" => {
            let n = value.text.strip_prefix("0x").and_then(|h| u16::from_str_radix(h, 16).ok());
            match n {
                Some(t) if t == super::TPID_8021AD || t == super::TPID_8021Q || super::TPID_LEGACY.contains(&t) => {
                    p.tpid = Some((*value, t))
                }
                _ => errors.push(ConfigError::at(
                    value,
                    format!(
                        "bad TPID `{}`: expected 0x88a8 (802.1ad), or 0x8100, 0x9100, 0x9200, 0x9300 for pre-standard QinQ",
                        value.text
                    ),
                )),
            }
        }
        "priority" => match value.text.parse::<u8>() {
            Ok(n) if n <= 7 => p.priority = Some(n),
            _ => errors.push(ConfigError::at(
                value,
                format!("bad priority `{}`: expected an 802.1p class from 0 to 7", value.text),
            )),
        },
        _ => return false,
    }
    true
}

/// The sub-port the keys describe (`None` if they describe none); errors
/// for half a description.
pub fn finish(kw: &Token<'_>, name: &str, p: Pending<'_>, errors: &mut Errors) -> Option<VlanPort> {
    match (p.on, p.vid) {
        (None, None) if p.outer == 0 && p.priority.is_none() && p.tpid.is_none() => None,
        (Some(_), Some(_)) if p.outer == 0 && p.tpid.is_some() => {
            let (t, _) = p.tpid.expect("checked");
            // A single-tagged sub-port takes 802.1Q (0x8100) tags only.
            errors.push(ConfigError::at(
                &t,
                format!("port `{name}`: `tpid` sets the outer tag's TPID: it needs `outer-vlan SVID`"),
            ));
            None
        }
        (Some(on), Some(vid)) => Some(VlanPort {
            parent: usize::MAX,
            parent_name: on.text.to_string(),
            vid,
            outer: p.outer,
            outer_tpid: p.tpid.map_or(super::TPID_8021AD, |(_, t)| t),
            priority: p.priority,
        }),
        (Some(_), None) => {
            errors.push(ConfigError::at(kw, format!("port `{name}` is on a trunk but has no `vlan VID`")));
            None
        }
        _ => {
            errors.push(ConfigError::at(
                kw,
                format!("port `{name}` has VLAN settings but no trunk: `port {name} on TRUNK vlan VID …`"),
            ));
            None
        }
    }
}
