//! The ACL's statement:
//!
//! ```text
//! acl NAME {
//!     port lan                 # default pipelines: filter what arrives on lan
//!     stateful                 # replies of permitted connections pass
//!     connections 65536        # connections tracked (stateful)
//!     source-connections 8192  # of those, what one initiating address may hold
//!     rule permit tcp src 10.0.0.0/24 dport 80-443
//!     rule reject tcp dport 23           # TCP reset / ICMP admin-prohibited
//!     rule permit icmp type 8
//!     rule deny udp dst 10.1.0.0/16 dport 53
//!     default deny             # what no rule matches: deny (default), permit or reject
//! }
//! ```
//!
//! Rules are tried in order; the first that matches decides.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use ipnet::Ipv4Net;

use crate::config::{is_name, stage_ports, Config, ConfigError, Errors, Line, Place, StageConfig, Stmt, Token, Word};
use crate::conntrack::ConnTable;

/// Rules one ACL may hold.
pub const MAX_RULES: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclAction {
    Permit,
    Deny,
    /// Deny and tell the sender: a TCP reset for TCP, ICMP
    /// communication-administratively-prohibited otherwise.
    Reject,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: AclAction,
    /// `None`: any protocol.
    pub proto: Option<u8>,
    pub src: Ipv4Net,
    pub dst: Ipv4Net,
    /// Inclusive ranges; (0, 65535) is any.
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub line: Line,
}

impl Rule {
    /// Whether the rule needs the transport header (ports, ICMP type).
    pub fn needs_l4(&self) -> bool {
        self.sport != ANY_PORT || self.dport != ANY_PORT || self.icmp_type.is_some() || self.icmp_code.is_some()
    }
}

pub const ANY_PORT: (u16, u16) = (0, 65535);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclConfig {
    pub rules: Vec<Rule>,
    pub default: AclAction,
    pub stateful: bool,
    pub connections: usize,
    /// Connections one initiating address may hold (`None`: the default,
    /// [`crate::conntrack::default_quota`]).
    pub source_connections: Option<u32>,
    pub ports: Vec<usize>,
    pub line: Line,
}

fn parse_range(t: &Token<'_>, errors: &mut Errors) -> Option<(u16, u16)> {
    let r = match t.text.split_once('-') {
        Some((a, b)) => a.parse::<u16>().ok().zip(b.parse::<u16>().ok()),
        None => t.text.parse::<u16>().ok().map(|p| (p, p)),
    };
    match r {
        Some((a, b)) if a <= b => Some((a, b)),
        _ => {
            errors.push(ConfigError::at(t, format!("bad port range `{}`: expected PORT or LOW-HIGH", t.text)));
            None
        }
    }
}

fn parse_action(t: &Token<'_>, errors: &mut Errors) -> Option<AclAction> {
    match t.text {
        "permit" => Some(AclAction::Permit),
        "deny" => Some(AclAction::Deny),
        "reject" => Some(AclAction::Reject),
        other => {
            errors.push(ConfigError::at(t, format!("unknown action `{other}`: expected permit, deny or reject")));
            None
        }
    }
}

/// `rule ACTION [PROTO] [src PREFIX] [dst PREFIX] [sport R] [dport R] [type N] [code N]`
fn parse_rule(key: &Token<'_>, args: &[Word<'_>], errors: &mut Errors) -> Option<Rule> {
    let before = errors.len();
    let Some(first) = args.first() else {
        errors.push(ConfigError::at(key, "`rule` needs an action: `rule permit tcp dport 80`"));
        return None;
    };
    let action = parse_action(first, errors)?;
    let any: Ipv4Net = Ipv4Net::default();
    let mut r = Rule {
        action,
        proto: None,
        src: any,
        dst: any,
        sport: ANY_PORT,
        dport: ANY_PORT,
        icmp_type: None,
        icmp_code: None,
        line: Line(key.line),
    };
    let mut rest = &args[1..];
    if let Some(p) = rest.first() {
        let proto = match p.text {
            "tcp" => Some(Some(6)),
            "udp" => Some(Some(17)),
            "icmp" => Some(Some(1)),
            "any" | "ip" => Some(None),
            n => n.parse::<u8>().ok().map(Some),
        };
        if let Some(proto) = proto {
            r.proto = proto;
            rest = &rest[1..];
        }
    }
    while let Some((k, tail)) = rest.split_first() {
        let Some(v) = tail.first() else {
            errors.push(ConfigError::at(k, format!("`{}` needs a value", k.text)));
            break;
        };
        rest = &tail[1..];
        match k.text {
            "src" | "dst" => match v.text.parse::<Ipv4Net>() {
                Ok(n) if k.text == "src" => r.src = n.trunc(),
                Ok(n) => r.dst = n.trunc(),
                Err(_) => errors.push(ConfigError::at(v, format!("bad prefix `{}`", v.text))),
            },
            "sport" | "dport" => {
                if !matches!(r.proto, Some(6) | Some(17)) {
                    errors.push(ConfigError::at(k, format!("`{}` needs the protocol tcp or udp first", k.text)));
                } else if let Some(range) = parse_range(v, errors) {
                    if k.text == "sport" {
                        r.sport = range
                    } else {
                        r.dport = range
                    }
                }
            }
            "type" | "code" => {
                if r.proto != Some(1) {
                    errors.push(ConfigError::at(k, format!("`{}` needs the protocol icmp first", k.text)));
                } else {
                    match v.text.parse::<u8>() {
                        Ok(n) if k.text == "type" => r.icmp_type = Some(n),
                        Ok(n) => r.icmp_code = Some(n),
                        Err(_) => errors.push(ConfigError::at(v, format!("bad ICMP {} `{}`", k.text, v.text))),
                    }
                }
            }
            other => errors.push(ConfigError::at(
                k,
                format!("unknown rule field `{other}`: expected a protocol, src, dst, sport, dport, type or code"),
            )),
        }
    }
    (errors.len() == before).then_some(r)
}

fn parse_one(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<(String, AclConfig)> {
    let kw = *stmt.words[0];
    let before = errors.len();
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`acl` needs a name and a block: `acl in { rule permit tcp dport 80 }`"));
        return None;
    };
    if !is_name(name.text) {
        errors.push(ConfigError::at(name, format!("bad acl name `{}`", name.text)));
    }
    if let Some(extra) = stmt.words.get(2) {
        errors.push(ConfigError::at(
            extra,
            format!("unexpected `{}`: `acl NAME` takes its rules in a block", extra.text),
        ));
    }
    let mut acl = AclConfig {
        rules: Vec::new(),
        default: AclAction::Deny,
        stateful: false,
        connections: 65_536,
        source_connections: None,
        ports: Vec::new(),
        line: Line(kw.line),
    };
    for child in stmt.block.iter().flatten() {
        let key = *child.words[0];
        let args = &child.words[1..];
        match key.text {
            "rule" if acl.rules.len() >= MAX_RULES => {
                errors.push(ConfigError::at(&key, format!("an acl holds at most {MAX_RULES} rules")))
            }
            "rule" => {
                if let Some(r) = parse_rule(&key, args, errors) {
                    acl.rules.push(r);
                }
            }
            "default" => match args.first() {
                Some(t) => {
                    if let Some(a) = parse_action(t, errors) {
                        acl.default = a;
                    }
                }
                None => errors.push(ConfigError::at(&key, "`default` needs permit, deny or reject")),
            },
            "stateful" => acl.stateful = true,
            "connections" => match args.first().map(|t| (t, t.text.parse::<usize>())) {
                Some((_, Ok(n))) if (16..=4_000_000).contains(&n) => acl.connections = n,
                Some((t, _)) => {
                    errors.push(ConfigError::at(t, format!("bad connections `{}`: expected 16 to 4000000", t.text)))
                }
                None => errors.push(ConfigError::at(&key, "`connections` needs a number")),
            },
            "source-connections" => match args.first().map(|t| (t, t.text.parse::<u32>())) {
                Some((_, Ok(n))) if (1..=4_000_000).contains(&n) => acl.source_connections = Some(n),
                Some((t, _)) => errors.push(ConfigError::at(
                    t,
                    format!("bad source-connections `{}`: expected 1 to 4000000", t.text),
                )),
                None => errors.push(ConfigError::at(&key, "`source-connections` needs a number")),
            },
            "port" => stage_ports(args, config, "acl", &mut acl.ports, errors),
            other => errors.push(ConfigError::at(
                &key,
                format!(
                    "unknown acl setting `{other}`: expected rule, default, stateful, connections, source-connections or port"
                ),
            )),
        }
    }
    (errors.len() == before).then(|| (name.text.to_string(), acl))
}

pub fn parse(stmts: &[&Stmt<'_>], config: &Config, errors: &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)> {
    stmts
        .iter()
        .filter_map(|s| parse_one(s, config, errors))
        .map(|(n, a)| (n, Rc::new(a) as Rc<dyn StageConfig>))
        .collect()
}

impl StageConfig for AclConfig {
    crate::stage_config_identity!();

    fn table_bytes(&self, _: &Config) -> usize {
        let conns = if self.stateful { ConnTable::memory_for(self.connections) } else { 0 };
        conns + self.rules.len() * (core::mem::size_of::<Rule>() + 48)
    }

    /// Before routing on its ports: a denied packet costs no lookup, and a
    /// reject's answer is routed back like any packet.
    fn placement(&self, port: usize, _: &Config) -> Option<Place> {
        self.ports.contains(&port).then_some(Place::BeforeRouting(0))
    }
}
