//! The NAT's statement: `nat [NAME] { ... }`, one per instance (two NATs,
//! one per outside port, are two blocks with names).

use alloc::collections::btree_map::{BTreeMap, Entry};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use ipnet::{Ipv4Net, Ipv6Net};

use super::table::{NatTable, Quotas};
use crate::config::{is_name, usable_unicast, Config, ConfigError, Errors, Line, Place, StageConfig, Stmt, Token};

/// Addresses a NAT pool may have.
pub const MAX_POOL: usize = 256;

/// A static port forward: outside address:port to an inside host:port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    pub proto: u8,
    pub outside: (Ipv4Addr, u16),
    pub inside: (Ipv4Addr, u16),
    pub line: Line,
}

/// Inbound filtering of the NAT (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatFiltering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

/// The source NAT (`nat { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    pub inside: Vec<Ipv4Net>,
    /// Index of the outside port.
    pub outside: usize,
    /// Outside addresses (default: the outside port's address).
    pub pool: Vec<Ipv4Addr>,
    pub ports: (u16, u16),
    pub filtering: NatFiltering,
    pub sessions: usize,
    /// Seconds.
    pub udp_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_transitory_timeout: u32,
    /// The VRF of its inside (`vrf NAME`; default the default one): the
    /// NAT translates what is routed out of the outside port from that
    /// VRF, and hands replies back to that VRF's table.
    pub vrf: usize,
    pub icmp_timeout: u32,
    pub forwards: Vec<ForwardConfig>,
    /// Sessions one inside host / one port forward may hold.
    pub quotas: Quotas,
    /// `inbound route`: packets from the outside port to inside addresses
    /// (not the pool) are routed in, as a plain router would. By default
    /// (`inbound drop`) they are dropped: no session asked for them.
    pub inbound_route: bool,
    /// A `nat64` block: IPv6 inside, IPv4 outside (RFC 6146).
    pub nat64: Option<Nat64Settings>,
    pub line: Line,
}

/// What a `nat64` block adds: the prefix IPv4 addresses are embedded in
/// (RFC 6052), the IPv6 prefixes of its inside hosts, and how many of
/// them one /64 may have translated at once (`hosts-per-64`: each holds a
/// stand-in address while it has a session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat64Settings {
    pub prefix: Ipv6Net,
    pub inside: Vec<ipnet::Ipv6Net>,
    pub hosts_per_64: u32,
}

/// The well-known NAT64 prefix (RFC 6052 §2.1).
pub fn well_known_prefix() -> Ipv6Net {
    "64:ff9b::/96".parse().expect("a valid prefix")
}

/// The prefix lengths RFC 6052 §2.2 allows.
pub const NAT64_PREFIX_LENS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// `nat { inside PREFIX; outside PORT; pool ADDRESS; ports LO-HI; filtering
/// MODE; sessions N; udp-timeout S; ...; forward PROTO ADDR:PORT ADDR:PORT }`,
/// and `nat64 { prefix P; inside PREFIX6; ... }` with the same settings
/// but forwards.
fn parse_one(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<NatConfig> {
    let kw = *stmt.words[0];
    let v6 = kw.text == "nat64";
    let before = errors.len();
    if let Some(name) = stmt.words.get(1).filter(|n| !is_name(n.text)) {
        errors.push(ConfigError::at(
            name,
            format!("bad nat name `{}`: use 1 to 15 letters, digits, `-` or `_`", name.text),
        ));
    }
    if let Some(extra) = stmt.words.get(2) {
        errors.push(ConfigError::at(
            extra,
            format!("unexpected `{}`: `nat [NAME]` takes its settings in a block: `nat {{` ... `}}`", extra.text),
        ));
    }
    let mut nat = NatConfig {
        inside: Vec::new(),
        outside: usize::MAX,
        pool: Vec::new(),
        ports: (1024, 65535),
        filtering: NatFiltering::AddressDependent,
        sessions: 65536,
        udp_timeout: 300,
        tcp_established_timeout: 7440,
        tcp_transitory_timeout: 240,
        icmp_timeout: 60,
        forwards: Vec::new(),
        quotas: Quotas { host: 0, forward: 0 },
        inbound_route: false,
        nat64: v6.then(|| Nat64Settings { prefix: well_known_prefix(), inside: Vec::new(), hosts_per_64: 0 }),
        line: Line(kw.line),
        vrf: 0,
    };
    let (mut host_quota, mut forward_quota, mut per_64) = (None, None, None);
    let mut outside_tok = None;
    let mut forward_lines: BTreeMap<(u8, (Ipv4Addr, u16)), u32> = BTreeMap::new();
    for child in stmt.block.iter().flatten() {
        let key = *child.words[0];
        let args = &child.words[1..];
        let want = |n: usize, errors: &mut Errors| -> bool {
            if args.len() < n {
                errors.push(ConfigError::at(&key, format!("`{}` takes {n} value(s), got {}", key.text, args.len())));
                false
            } else {
                true
            }
        };
        match (key.text, nat.nat64.as_mut()) {
            ("inside", Some(n64)) if want(1, errors) => match args[0].text.parse::<Ipv6Net>() {
                Ok(n) if n.prefix_len() > 128 - 16 => {
                    errors.push(ConfigError::at(&args[0], format!("inside prefix {n} is too long for hosts")))
                }
                Ok(n) => n64.inside.push(n.trunc()),
                Err(_) => errors.push(ConfigError::at(&args[0], format!("bad IPv6 prefix `{}`", args[0].text))),
            },
            ("prefix", Some(n64)) if want(1, errors) => match args[0].text.parse::<Ipv6Net>() {
                Ok(n) if !NAT64_PREFIX_LENS.contains(&n.prefix_len()) => errors.push(ConfigError::at(
                    &args[0],
                    format!(
                        "NAT64 prefix length /{} is not one of RFC 6052's: 32, 40, 48, 56, 64 or 96",
                        n.prefix_len()
                    ),
                )),
                Ok(n) if n != n.trunc() => errors.push(ConfigError::at(
                    &args[0],
                    format!("`{}` has host bits set: did you mean {}?", args[0].text, n.trunc()),
                )),
                Ok(n) => n64.prefix = n,
                Err(_) => errors.push(ConfigError::at(
                    &args[0],
                    format!("bad prefix `{}`: expected ADDRESS/LEN such as 64:ff9b::/96", args[0].text),
                )),
            },
            ("hosts-per-64", Some(_)) if want(1, errors) => match args[0].text.parse::<u32>() {
                Ok(v) if v >= 1 => per_64 = Some(v),
                _ => errors.push(ConfigError::at(
                    &args[0],
                    format!("bad hosts-per-64 `{}`: expected a number of inside hosts, at least 1", args[0].text),
                )),
            },
            ("forward", Some(_)) => errors.push(ConfigError::at(
                &key,
                "`nat64` has no port forwards (an IPv4 host cannot start a session to an IPv6-only host through it)",
            )),
            _ => {}
        }
        if nat.nat64.is_some() && matches!(key.text, "inside" | "prefix" | "forward" | "hosts-per-64") {
            continue;
        }
        match key.text {
            "inside" if want(1, errors) => match args[0].text.parse::<Ipv4Net>() {
                Ok(n) => nat.inside.push(n.trunc()),
                Err(_) => errors.push(ConfigError::at(&args[0], format!("bad prefix `{}`", args[0].text))),
            },
            "vrf" if v6 && want(1, errors) => {
                errors.push(ConfigError::at(&key, "NAT64 works in the default VRF only (for now)"))
            }
            "vrf" if want(1, errors) => match config.vrf_index(args[0].text) {
                Some(i) => nat.vrf = i,
                None => errors.push(ConfigError::at(&args[0], format!("no VRF named `{}`", args[0].text))),
            },
            "outside" if want(1, errors) => match config.port_by_name(args[0].text) {
                Some(i) => {
                    nat.outside = i;
                    outside_tok = Some(*args[0]);
                }
                None => errors.push(ConfigError::at(&args[0], format!("no port named `{}`", args[0].text))),
            },
            "pool" if want(1, errors) => match args[0].text.parse::<Ipv4Addr>() {
                Ok(a) if nat.pool.contains(&a) => errors.push(ConfigError::at(&args[0], format!("{a} is already in the pool"))),
                Ok(_) if nat.pool.len() >= MAX_POOL => errors.push(ConfigError::at(&args[0], format!("a pool holds at most {MAX_POOL} addresses"))),
                Ok(a) if let Err(why) = usable_unicast(a) => errors.push(ConfigError::at(&args[0], format!("pool address {a} {why}"))),
                Ok(a) => nat.pool.push(a),
                Err(_) => errors.push(ConfigError::at(&args[0], format!("bad pool address `{}`", args[0].text))),
            },
            "ports" if want(1, errors) => {
                let range = args[0].text.split_once('-').and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
                match range {
                    Some((lo, hi)) if lo >= 1 && lo <= hi => nat.ports = (lo, hi),
                    _ => errors.push(ConfigError::at(&args[0], format!("bad port range `{}`: expected LOW-HIGH such as 1024-65535", args[0].text))),
                }
            }
            "filtering" if want(1, errors) => match args[0].text {
                "endpoint-independent" => nat.filtering = NatFiltering::EndpointIndependent,
                "address-dependent" => nat.filtering = NatFiltering::AddressDependent,
                "address-and-port-dependent" => nat.filtering = NatFiltering::AddressAndPortDependent,
                other => errors.push(ConfigError::at(
                    &args[0],
                    format!("unknown filtering `{other}`: expected endpoint-independent, address-dependent or address-and-port-dependent"),
                )),
            },
            "sessions" | "udp-timeout" | "tcp-established-timeout" | "tcp-transitory-timeout" | "icmp-timeout" if want(1, errors) => {
                let (min, max) = if key.text == "sessions" { (16u64, 16_000_000) } else { (1, 1 << 20) };
                match args[0].text.parse::<u64>() {
                    Ok(v) if (min..=max).contains(&v) => match key.text {
                        "sessions" => nat.sessions = v as usize,
                        "udp-timeout" => nat.udp_timeout = v as u32,
                        "tcp-established-timeout" => nat.tcp_established_timeout = v as u32,
                        "tcp-transitory-timeout" => nat.tcp_transitory_timeout = v as u32,
                        _ => nat.icmp_timeout = v as u32,
                    },
                    _ => errors.push(ConfigError::at(&args[0], format!("bad {} `{}`: expected a number from {min} to {max}", key.text, args[0].text))),
                }
            }
            "forward" if want(3, errors) => {
                let proto = match args[0].text {
                    "tcp" => 6,
                    "udp" => 17,
                    other => {
                        errors.push(ConfigError::at(&args[0], format!("unknown protocol `{other}`: expected tcp or udp")));
                        continue;
                    }
                };
                let ep = |t: &Token<'_>, errors: &mut Errors| {
                    let parsed = t.text.split_once(':').and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok().filter(|p| *p != 0)?)));
                    if parsed.is_none() {
                        errors.push(ConfigError::at(t, format!("bad endpoint `{}`: expected ADDRESS:PORT", t.text)));
                    }
                    parsed
                };
                if let (Some(outside), Some(inside)) = (ep(&args[1], errors), ep(&args[2], errors)) {
                    // Few forwards in practice, but a scan per forward would be
                    // quadratic in a hostile config: a set.
                    match forward_lines.entry((proto, outside)) {
                        Entry::Occupied(o) => errors.push(ConfigError::at(&args[1], format!("forward {} {}:{} is already given on line {}", args[0].text, outside.0, outside.1, o.get()))),
                        Entry::Vacant(v) => {
                            v.insert(key.line);
                            nat.forwards.push(ForwardConfig { proto, outside, inside, line: Line(key.line) });
                        }
                    }
                }
            }
            "inbound" if v6 => errors.push(ConfigError::at(&key, "`inbound` is a `nat` setting (NAT64's inside is IPv6, never routed from outside)")),
            "inbound" if want(1, errors) => match args[0].text {
                "drop" => nat.inbound_route = false,
                "route" => nat.inbound_route = true,
                other => errors.push(ConfigError::at(&args[0], format!("unknown inbound `{other}`: expected drop or route"))),
            },
            "host-sessions" | "forward-sessions" if want(1, errors) => match args[0].text.parse::<u32>() {
                Ok(v) if v >= 1 => {
                    if key.text == "host-sessions" { host_quota = Some(v) } else { forward_quota = Some(v) }
                }
                _ => errors.push(ConfigError::at(&args[0], format!("bad {} `{}`: expected a number of sessions, at least 1", key.text, args[0].text))),
            },
            "inside" | "outside" | "pool" | "ports" | "filtering" | "sessions" | "udp-timeout" | "tcp-established-timeout"
            | "tcp-transitory-timeout" | "icmp-timeout" | "forward" | "host-sessions" | "forward-sessions" | "vrf" | "inbound" => {}
            "prefix" | "hosts-per-64" => errors.push(ConfigError::at(&key, format!("`{}` is a `nat64` setting", key.text))),
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown {} setting `{other}`: expected inside, outside, pool, ports, filtering, sessions, host-sessions, forward-sessions, {}or a timeout", kw.text, if v6 { "prefix, hosts-per-64 " } else { "forward, inbound " }),
            )),
        }
    }
    let defaults = Quotas::default_for(nat.sessions);
    nat.quotas =
        Quotas { host: host_quota.unwrap_or(defaults.host), forward: forward_quota.unwrap_or(defaults.forward) };
    if let Some(n64) = nat.nat64.as_mut() {
        n64.hosts_per_64 = per_64.unwrap_or_else(|| crate::standin::default_per_64(nat.sessions));
    }
    if outside_tok.is_none() && errors.len() == before {
        errors.push(ConfigError::at(&kw, format!("`{}` needs `outside PORT`", kw.text)));
    }
    let no_inside = nat.nat64.as_ref().map_or(nat.inside.is_empty(), |n| n.inside.is_empty());
    if no_inside && errors.len() == before {
        errors.push(ConfigError::at(&kw, format!("`{}` needs at least one `inside PREFIX`", kw.text)));
    }
    if errors.len() != before {
        return None;
    }
    if nat.pool.is_empty() {
        match config.ports[nat.outside].ip() {
            Some(a) => nat.pool.push(a),
            None => {
                errors.push(ConfigError::at(&kw, "the outside port has no address: give it one or add `pool ADDRESS`"));
                return None;
            }
        }
    }
    for (a, n) in nat.pool.iter().flat_map(|a| nat.inside.iter().filter(move |n| n.contains(a)).map(move |n| (a, n))) {
        errors.push(ConfigError::at(
            &kw,
            format!("pool address {a} is inside {n}: it would take over an inside host's address"),
        ));
    }
    for f in &nat.forwards {
        if !nat.pool.contains(&f.outside.0) {
            errors.push(ConfigError {
                line: f.line.0,
                column: 1,
                message: format!("forward address {} is not a NAT pool address", f.outside.0),
            });
        }
        if !nat.inside.iter().any(|n| n.contains(&f.inside.0)) {
            errors.push(ConfigError {
                line: f.line.0,
                column: 1,
                message: format!("forward target {} is not inside the NAT", f.inside.0),
            });
        }
    }
    if let Some(n64) = &nat.nat64 {
        // It translates only what arrives on its inside ports: an inside
        // prefix on the outside port's link would never be.
        let out = &config.ports[nat.outside];
        for n in n64
            .inside
            .iter()
            .filter(|n| out.address6.iter().any(|a| a.contains(&n.network()) || n.contains(&a.network())))
        {
            errors.push(ConfigError::at(
                &kw,
                format!(
                    "nat64 inside {n} is on its outside port `{}`: NAT64 translates only what arrives on its inside ports",
                    out.name
                ),
            ));
        }
    }
    if v6 {
        // Two translators handing out the same outside ports would send
        // each other's replies to the wrong host.
        for other in config.stages.iter().filter_map(|s| s.settings::<NatConfig>()) {
            let shared = nat.pool.iter().find(|a| other.pool.contains(a));
            let ports_overlap = nat.ports.0 <= other.ports.1 && other.ports.0 <= nat.ports.1;
            if let (Some(a), true) = (shared, ports_overlap) {
                errors.push(ConfigError::at(
                    &kw,
                    format!(
                        "nat64 pool address {a} with ports {}-{} overlaps the nat on line {} (ports {}-{}): give one of them other ports or addresses",
                        nat.ports.0, nat.ports.1, other.line, other.ports.0, other.ports.1
                    ),
                ));
            }
        }
    }
    (errors.len() == before).then_some(nat)
}

/// Reads every `nat` statement: an instance each, named `nat` unless the
/// statement names it.
pub fn parse(stmts: &[&Stmt<'_>], config: &Config, errors: &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)> {
    let mut out: Vec<(String, Rc<dyn StageConfig>)> = Vec::new();
    for stmt in stmts {
        let name = stmt.words.get(1).map_or(stmt.words[0].text, |t| t.text).to_string();
        if let Some(nat) = parse_one(stmt, config, errors) {
            // Two NATs handing out the same outside ports would take each
            // other's replies (one NAT per VRF shares the outside port).
            let others = out.iter().filter_map(|(_, o)| o.as_any().downcast_ref::<NatConfig>());
            if let Some(other) = others.into_iter().find(|o| {
                o.nat64.is_none() == nat.nat64.is_none()
                    && o.pool.iter().any(|a| nat.pool.contains(a))
                    && nat.ports.0 <= o.ports.1
                    && o.ports.0 <= nat.ports.1
            }) {
                errors.push(ConfigError {
                    line: nat.line.0,
                    column: 1,
                    message: format!(
                        "this nat shares pool addresses and ports with the nat on line {}: give each its own pool address (or port range)",
                        other.line
                    ),
                });
                continue;
            }
            out.push((name, Rc::new(nat)));
        }
    }
    out
}

impl StageConfig for NatConfig {
    crate::stage_config_identity!();

    /// `inbound` is applied at ingress from the new config, not by the
    /// translator: changing it alone keeps the sessions.
    fn reusable(&self, old: &dyn StageConfig, _: &Config, _: &Config) -> bool {
        old.as_any()
            .downcast_ref::<NatConfig>()
            .is_some_and(|o| NatConfig { inbound_route: self.inbound_route, ..o.clone() } == *self)
    }

    fn table_bytes(&self, _: &Config) -> usize {
        let hosts = if self.nat64.is_some() { crate::standin::Hosts::memory_for(self.sessions) } else { 0 };
        NatTable::memory_for(self.sessions, self.pool.len()) + hosts
    }

    fn addresses(&self) -> Vec<Ipv4Addr> {
        self.pool.clone()
    }

    /// The outside port translates before routing (inbound), the others
    /// after it (outbound).
    fn placement(&self, port: usize, config: &Config) -> Option<Place> {
        match &self.nat64 {
            // NAT64 translates before routing both ways: the router then
            // routes the packet in its new family.
            Some(_) if port == self.outside || !config.ports[port].address6.is_empty() => Some(Place::BeforeRouting(1)),
            Some(_) => None,
            None if port == self.outside => Some(Place::BeforeRouting(1)),
            None => (config.ports[port].vrf == self.vrf).then_some(Place::AfterRouting(0)),
        }
    }

    /// New flows from the outside port straight to an inside address:
    /// every inside host's traffic out is translated, so no session ever
    /// has such a packet; nobody inside asked for it (home and cloud NAT
    /// gateways drop it, Linux routes it in, as `inbound route` does).
    /// Only when the outside port routes in the inside's VRF: another VRF
    /// may reuse the prefix.
    fn inbound_refused(&self, config: &Config) -> Vec<(usize, Ipv4Net, crate::counters::DropReason)> {
        let routes_inside = config.ports.get(self.outside).is_some_and(|p| p.vrf == self.vrf);
        if self.inbound_route || self.nat64.is_some() || !routes_inside {
            return Vec::new();
        }
        self.inside.iter().map(|n| (self.outside, *n, crate::counters::DropReason::NatInboundUnsolicited)).collect()
    }

    fn warnings(&self, _: &Config) -> Vec<(u32, String)> {
        let ports = (self.ports.1 - self.ports.0) as usize + 1;
        let most = ports * self.pool.len();
        if self.sessions <= most {
            return Vec::new();
        }
        alloc::vec![(
            self.line.0,
            format!(
                "nat: sessions {} exceed the {} outside ports of the pool ({} address(es) x {} ports): \
                 at most {} inside endpoints can be mapped at once; add pool addresses or lower sessions",
                self.sessions,
                most,
                self.pool.len(),
                ports,
                most
            ),
        )]
    }
}
