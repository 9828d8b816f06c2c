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
//!     rule permit tcp src 2001:db8::/32 dport 22   # IPv6: from its prefixes
//!     rule permit tcp6 dport 80                    # or from the protocol word
//!     rule permit icmp6 type 128
//!     default deny             # what no rule matches: deny (default), permit or reject
//! }
//! ```
//!
//! Rules are tried in order; the first that matches decides. A rule is
//! for IPv6 if a prefix is IPv6 or its protocol word ends in 6 (`tcp6`,
//! `udp6`, `icmp6`, `ip6`), else for IPv4: a rule without prefixes, such
//! as `permit tcp dport 80`, stays IPv4-only, so a config written before
//! IPv6 rules existed does not start passing IPv6 (an ACL without IPv6
//! rules drops forwarded IPv6). ICMPv6 is `icmp6` (58) with `type`/`code`.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::config::{is_name, stage_ports, Config, ConfigError, Errors, Line, Place, StageConfig, Stmt, Token, Word};
use crate::conntrack::ConnTable;
use core::net::{Ipv4Addr, Ipv6Addr};

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
    /// An IPv6 rule's (source, destination) prefixes (`src`/`dst` above are
    /// then unused); `None`: an IPv4 rule.
    pub v6: Option<(Ipv6Net, Ipv6Net)>,
    pub line: Line,
}

/// ICMPv6's protocol number.
pub const ICMP6: u8 = 58;

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
        v6: None,
        line: Line(key.line),
    };
    let any6 = Ipv6Net::default();
    // The family: `None` until a protocol word or a prefix says it.
    let mut family6: Option<bool> = None;
    let mut set_family = |t: &Token<'_>, six: bool, errors: &mut Errors| match family6 {
        Some(f) if f != six => errors.push(ConfigError::at(
            t,
            format!("`{}` mixes IPv4 and IPv6: a rule is for one family (write two rules)", t.text),
        )),
        _ => family6 = Some(six),
    };
    let mut rest = &args[1..];
    if let Some(p) = rest.first() {
        let proto = match p.text {
            "tcp" => Some((Some(6), None)),
            "udp" => Some((Some(17), None)),
            "icmp" => Some((Some(1), None)),
            "any" | "ip" => Some((None, None)),
            "tcp6" => Some((Some(6), Some(true))),
            "udp6" => Some((Some(17), Some(true))),
            "icmp6" => Some((Some(ICMP6), Some(true))),
            "ip6" | "any6" => Some((None, Some(true))),
            n => n.parse::<u8>().ok().map(|n| (Some(n), None)),
        };
        if let Some((proto, fam)) = proto {
            r.proto = proto;
            if let Some(six) = fam {
                set_family(p, six, errors);
            }
            rest = &rest[1..];
        }
    }
    let (mut src6, mut dst6) = (any6, any6);
    while let Some((k, tail)) = rest.split_first() {
        let Some(v) = tail.first() else {
            errors.push(ConfigError::at(k, format!("`{}` needs a value", k.text)));
            break;
        };
        rest = &tail[1..];
        match k.text {
            "src" | "dst" => match (v.text.parse::<Ipv4Net>(), v.text.parse::<Ipv6Net>()) {
                (Ok(n), _) => {
                    set_family(v, false, errors);
                    *(if k.text == "src" { &mut r.src } else { &mut r.dst }) = n.trunc();
                }
                (_, Ok(n)) => {
                    set_family(v, true, errors);
                    *(if k.text == "src" { &mut src6 } else { &mut dst6 }) = n.trunc();
                }
                _ => errors.push(ConfigError::at(v, format!("bad prefix `{}`", v.text))),
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
                if !matches!(r.proto, Some(1) | Some(ICMP6)) {
                    errors.push(ConfigError::at(k, format!("`{}` needs the protocol icmp or icmp6 first", k.text)));
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
    let six = family6 == Some(true);
    let icmp_family_clash = (six && r.proto == Some(1)) || (!six && r.proto == Some(ICMP6));
    if icmp_family_clash {
        let word = if six { "icmp6 (an IPv6 rule)" } else { "icmp (an IPv4 rule), or give an IPv6 prefix" };
        errors.push(ConfigError::at(first, format!("the protocol does not fit the rule's family: use {word}")));
    }
    if six {
        r.v6 = Some((src6, dst6));
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

impl AclConfig {
    /// Whether any rule is for IPv6 (else forwarded IPv6 is dropped).
    pub fn has_v6(&self) -> bool {
        self.rules.iter().any(|r| r.v6.is_some())
    }
}

impl StageConfig for AclConfig {
    crate::stage_config_identity!();

    fn table_bytes(&self, _: &Config) -> usize {
        // An IPv6 connection table beside the IPv4 one, only with IPv6 rules.
        let conns = match (self.stateful, self.has_v6()) {
            (false, _) => 0,
            (true, false) => ConnTable::<Ipv4Addr>::memory_for(self.connections),
            (true, true) => {
                ConnTable::<Ipv4Addr>::memory_for(self.connections)
                    + ConnTable::<Ipv6Addr>::memory_for(self.connections)
            }
        };
        conns + self.rules.len() * (core::mem::size_of::<Rule>() + 48)
    }

    /// An ACL without IPv6 rules drops forwarded IPv6 (fail closed): said
    /// at `check` time, naming the ports it runs on that have IPv6
    /// addresses (where IPv6 would otherwise flow).
    fn warnings(&self, config: &Config) -> Vec<(u32, String)> {
        if self.has_v6() {
            return Vec::new();
        }
        let me = self as *const AclConfig as *const u8;
        let Some((idx, inst)) =
            config.stages.iter().enumerate().find(|(_, s)| core::ptr::eq(Rc::as_ptr(&s.config) as *const u8, me))
        else {
            return Vec::new();
        };
        let ports: Vec<&str> = config
            .pipelines
            .iter()
            .enumerate()
            .filter(|(p, stages)| stages.contains(&idx) && config.ports.get(*p).is_some_and(|c| !c.address6.is_empty()))
            .filter_map(|(p, _)| config.ports.get(p).map(|c| c.name.as_str()))
            .collect();
        if ports.is_empty() {
            return Vec::new();
        }
        alloc::vec![(
            self.line.0,
            format!(
                "acl {} has no IPv6 rules: it drops the IPv6 forwarded on {} (add rules such as `rule permit tcp6 ...`, or `rule permit ip6` to pass it)",
                inst.name,
                ports.join(", ")
            ),
        )]
    }

    /// Before routing on its ports: a denied packet costs no lookup, and a
    /// reject's answer is routed back like any packet.
    fn placement(&self, port: usize, _: &Config) -> Option<Place> {
        self.ports.contains(&port).then_some(Place::BeforeRouting(0))
    }
}
