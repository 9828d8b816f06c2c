//! The load balancer's statements: `service NAME { ... }` (one per
//! service) and `lb table-size N flows N ...`; together they make one
//! stage instance, `lb`.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{
    endpoint, is_name, key_values, parse_duration, port_for, usable_unicast, Config, ConfigError, Errors, Line, Place,
    StageConfig, Stmt,
};

/// Load-balanced services a config may define.
pub const MAX_SERVICES: usize = 256;
/// Backends one service may have.
pub const MAX_BACKENDS: usize = 4096;

/// How a service reaches its backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbMode {
    /// Destination and source rewritten: backends answer the appliance.
    FullNat,
    /// Destination rewritten, client address kept: backends route back via the appliance.
    Dnat,
}

/// A backend health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    None,
    Tcp,
    /// HTTP GET of the path; 2xx is healthy.
    Http(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// The VIP's family (a service balances IPv4 or IPv6, not both).
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// Port the backend is reached through (connected prefix or route).
    pub via_port: usize,
    pub line: Line,
}

/// A load-balanced service (`service NAME { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub proto: u8,
    pub vip: IpAddr,
    pub port: u16,
    pub mode: LbMode,
    /// Full-NAT source address (`snat`; default: the address of the port
    /// that reaches the first backend, of the VIP's family).
    pub snat: IpAddr,
    pub backends: Vec<BackendConfig>,
    pub check: CheckKind,
    /// The port the check connects to on each backend (`check tcp port N`,
    /// `check http PATH port N`); `None`: the backend's own port. A UDP
    /// service is checked this way, on a TCP port of the same host.
    pub check_port: Option<u16>,
    /// Between checks (µs; `interval 500ms`, `interval 2`).
    pub interval: u64,
    /// How long a check may take (µs).
    pub timeout: u64,
    pub rise: u32,
    pub fall: u32,
    pub line: Line,
}

/// The load balancer: its services, and the settings of `lb table-size N
/// flows N ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbConfig {
    pub services: Vec<ServiceConfig>,
    /// Maglev table size (prime).
    pub table_size: usize,
    /// Flow (connection) table entries.
    pub flows: usize,
    /// Idle timeouts of flows, seconds (as the NAT's).
    pub udp_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_transitory_timeout: u32,
    /// ICMP port-unreachable answers to clients of a service with no
    /// healthy backend: per second and burst, per client.
    pub refusal_rate: u32,
    pub refusal_burst: u32,
    /// Most flows one client address may hold (`client-flows N`); `None`:
    /// [`LbConfig::client_quota`]'s default.
    pub client_flows: Option<u32>,
    /// IPv6 clients of one /64 that may have flows at once (`lb
    /// clients-per-64 N`; default [`crate::standin::default_per_64`]).
    pub clients_per_64: Option<u32>,
    pub line: Line,
}

impl LbConfig {
    /// Whether a service is IPv6.
    pub fn has_ipv6(&self) -> bool {
        self.services.iter().any(|s| s.vip.is_ipv6())
    }

    /// Most flows one client may hold: `client-flows`, else an eighth of
    /// the table (at least 64), as the NAT's `host-sessions`: room for a
    /// client behind a large NAT, but no single source fills the table. A
    /// quota of the whole table or more never binds: a full table evicts.
    pub fn client_quota(&self) -> u32 {
        let all = self.flows.min(u32::MAX as usize) as u32;
        self.client_flows.unwrap_or((all / 8).max(64))
    }

    /// IPv6 clients of one /64 that may have flows at once (each holds a
    /// client slot while it has one).
    pub fn clients_per_64(&self) -> u32 {
        self.clients_per_64.unwrap_or_else(|| crate::standin::default_per_64(self.flows))
    }
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            services: Vec::new(),
            refusal_rate: 100,
            refusal_burst: 20,
            client_flows: None,
            clients_per_64: None,
            line: Line(0),
            table_size: 65537,
            flows: 65536,
            udp_timeout: 300,
            tcp_established_timeout: 7440,
            tcp_transitory_timeout: 240,
        }
    }
}

/// `service NAME { vip ADDR:PORT [tcp|udp]; mode full-nat|dnat; snat ADDR;
/// backend ADDR:PORT [weight N]; check tcp|http PATH [port N]|none; interval S;
/// timeout S; rise N; fall N }`
fn parse_service(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<ServiceConfig> {
    let kw = *stmt.words[0];
    let before = errors.len();
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`service` needs a name and a block: `service web { ... }`"));
        return None;
    };
    if !is_name(name.text) {
        errors.push(ConfigError::at(name, format!("bad service name `{}`", name.text)));
    }
    let mut snat = None;
    let mut svc = ServiceConfig {
        name: name.text.to_string(),
        proto: 6,
        vip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
        mode: LbMode::FullNat,
        snat: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        backends: Vec::new(),
        check: CheckKind::Tcp,
        check_port: None,
        interval: 2_000_000,
        timeout: 1_000_000,
        rise: 2,
        fall: 2,
        line: Line(kw.line),
    };
    let mut have_vip = false;
    let mut backends_seen = alloc::collections::BTreeSet::new();
    for child in stmt.block.iter().flatten() {
        let key = *child.words[0];
        let args = &child.words[1..];
        let Some(first) = args.first() else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        match key.text {
            "vip" => {
                match endpoint_any(first, errors) {
                    Some((a, _)) if usable(a).is_err() => {
                        errors.push(ConfigError::at(first, format!("VIP {a} {}", usable(a).unwrap_err())))
                    }
                    Some((a, p)) => {
                        svc.vip = a;
                        svc.port = p;
                        have_vip = true;
                    }
                    None => {}
                }
                match args.get(1).map(|t| t.text) {
                    None | Some("tcp") => svc.proto = 6,
                    Some("udp") => svc.proto = 17,
                    Some(other) => errors.push(ConfigError::at(&args[1], format!("unknown protocol `{other}`: expected tcp or udp"))),
                }
            }
            "mode" => match first.text {
                "full-nat" => svc.mode = LbMode::FullNat,
                "dnat" => svc.mode = LbMode::Dnat,
                other => errors.push(ConfigError::at(first, format!("unknown mode `{other}`: expected full-nat or dnat"))),
            },
            "snat" => match first.text.parse::<IpAddr>() {
                Ok(a) => snat = Some(a),
                Err(_) => errors.push(ConfigError::at(first, format!("bad address `{}`", first.text))),
            },
            "backend" => {
                let Some((addr, port)) = endpoint_any(first, errors) else { continue };
                let mut weight = 1;
                match (args.get(1).map(|t| t.text), args.get(2)) {
                    (None, _) => {}
                    (Some("weight"), Some(w)) => match w.text.parse::<u32>() {
                        Ok(v) if (0..=1000).contains(&v) => weight = v,
                        _ => errors.push(ConfigError::at(w, format!("bad weight `{}`: expected 0 (drain) to 1000", w.text))),
                    },
                    (Some(w), _) => errors.push(ConfigError::at(&args[1], format!("unexpected `{w}`: expected `weight N` after the backend"))),
                }
                let via = match addr {
                    IpAddr::V4(a) => port_for(config, a),
                    IpAddr::V6(a) => port_for6(config, a),
                };
                let Some(via_port) = via else {
                    errors.push(ConfigError::at(first, format!("backend {addr} is on no port's subnet and no route reaches it")));
                    continue;
                };
                if !backends_seen.insert((addr, port)) {
                    errors.push(ConfigError::at(first, format!("backend {addr}:{port} is listed twice")));
                    continue;
                }
                if svc.backends.len() >= MAX_BACKENDS {
                    errors.push(ConfigError::at(first, format!("a service may have at most {MAX_BACKENDS} backends")));
                    continue;
                }
                if let Err(why) = usable(addr) {
                    errors.push(ConfigError::at(first, format!("backend {addr} {why}")));
                    continue;
                }
                let own = |p: &&crate::config::PortConfig| match addr {
                    IpAddr::V4(a) => p.ip() == Some(a),
                    IpAddr::V6(a) => p.address6.iter().any(|n| n.addr() == a),
                };
                if let Some(p) = config.ports.iter().find(own) {
                    errors.push(ConfigError::at(first, format!("backend {addr} is the address of port `{}`: a backend must be another host", p.name)));
                    continue;
                }
                svc.backends.push(BackendConfig { addr, port, weight, via_port, line: Line(key.line) });
            }
            "check" => {
                if let Some((check, port)) = parse_check(&key, args, errors) {
                    (svc.check, svc.check_port) = (check, port);
                }
            }
            "interval" | "timeout" => match parse_duration(first.text) {
                Some(v) if (10_000..=3_600_000_000).contains(&v) => {
                    if key.text == "interval" { svc.interval = v } else { svc.timeout = v }
                }
                _ => errors.push(ConfigError::at(
                    first,
                    format!("bad {} `{}`: expected a duration from 10ms to 3600s, such as 2, 0.5, 500ms or 2s", key.text, first.text),
                )),
            },
            "rise" | "fall" => match first.text.parse::<u32>() {
                Ok(v) if (1..=3600).contains(&v) => if key.text == "rise" { svc.rise = v } else { svc.fall = v },
                _ => errors.push(ConfigError::at(first, format!("bad {} `{}`: expected 1 to 3600", key.text, first.text))),
            },
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown service setting `{other}`: expected vip, mode, snat, backend, check, interval, timeout, rise or fall"),
            )),
        }
    }
    if !have_vip && errors.len() == before {
        errors.push(ConfigError::at(&kw, format!("service `{}` needs `vip ADDRESS:PORT`", svc.name)));
    }
    if svc.backends.is_empty() && errors.len() == before {
        errors.push(ConfigError::at(&kw, format!("service `{}` needs at least one `backend ADDRESS:PORT`", svc.name)));
    }
    if svc.backends.iter().any(|b| b.addr == svc.vip) {
        errors.push(ConfigError::at(
            &kw,
            format!("service `{}`: the VIP {} cannot be one of its backends", svc.name, svc.vip),
        ));
    }
    if svc.backends.iter().any(|b| b.addr.is_ipv4() != svc.vip.is_ipv4()) {
        errors.push(ConfigError::at(
            &kw,
            format!("service `{}`: the VIP and its backends must be of one family, IPv4 or IPv6 (use `nat64` to reach IPv4 from IPv6)", svc.name),
        ));
    }
    if snat.is_some_and(|s| s.is_ipv4() != svc.vip.is_ipv4()) {
        errors.push(ConfigError::at(&kw, format!("service `{}`: `snat` must be of the VIP's family", svc.name)));
    }
    let via_addr = |b: &BackendConfig| -> Option<IpAddr> {
        let p = &config.ports[b.via_port];
        match b.addr {
            IpAddr::V4(_) => p.ip().map(IpAddr::V4),
            IpAddr::V6(a) => {
                p.address6.iter().find(|n| n.contains(&a)).or(p.address6.first()).map(|n| IpAddr::V6(n.addr()))
            }
        }
    };
    svc.snat = snat.or_else(|| svc.backends.first().and_then(via_addr)).unwrap_or(match svc.vip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    if svc.mode == LbMode::FullNat && svc.snat.is_unspecified() && errors.len() == before {
        errors.push(ConfigError::at(&kw, format!("service `{}`: full-nat needs a source address: give the backends' port an address of the VIP's family, or `snat`", svc.name)));
    }
    (errors.len() == before).then_some(svc)
}

/// `check tcp [port N]`, `check http PATH [port N]` or `check none`
/// (`args`: the words after `check`); every word it does not understand
/// is an error at that word.
fn parse_check(
    key: &crate::config::Token<'_>,
    args: &[crate::config::Word<'_>],
    errors: &mut Errors,
) -> Option<(CheckKind, Option<u16>)> {
    let first = args.first()?;
    let (check, rest) = match first.text {
        "tcp" => (CheckKind::Tcp, &args[1..]),
        "none" => (CheckKind::None, &args[1..]),
        "http" => match args.get(1) {
            Some(path) if path.text.starts_with('/') && path.text.len() < 200 => {
                (CheckKind::Http(path.text.to_string()), &args[2..])
            }
            _ => {
                errors.push(ConfigError::at(key, "`check http` needs a path such as /healthz"));
                return None;
            }
        },
        other => {
            errors.push(ConfigError::at(first, format!("unknown check `{other}`: expected tcp, http PATH or none")));
            return None;
        }
    };
    let port = match rest {
        [] => None,
        [p, ..] if p.text == "port" && check != CheckKind::None => {
            let Some(v) = rest.get(1) else {
                errors.push(ConfigError::at(p, "`port` needs a port number: `check tcp port 8053`"));
                return None;
            };
            match v.text.parse::<u16>() {
                Ok(n) if n != 0 => Some(n),
                _ => {
                    errors.push(ConfigError::at(v, format!("bad check port `{}`: expected 1 to 65535", v.text)));
                    return None;
                }
            }
        }
        [w, ..] => {
            let expected =
                if check == CheckKind::None { "`check none` takes nothing more" } else { "expected `port N`" };
            errors.push(ConfigError::at(w, format!("unexpected `{}`: {expected}", w.text)));
            return None;
        }
    };
    if let Some(w) = rest.get(2) {
        errors.push(ConfigError::at(w, format!("unexpected `{}`: the check is complete", w.text)));
        return None;
    }
    Some((check, port))
}

/// `ADDR:PORT` or `[ADDR6]:PORT`.
fn endpoint_any(t: &crate::config::Token<'_>, errors: &mut Errors) -> Option<(IpAddr, u16)> {
    if let Some(rest) = t.text.strip_prefix('[') {
        let parsed = rest
            .split_once("]:")
            .and_then(|(a, p)| Some((a.parse::<Ipv6Addr>().ok()?, p.parse::<u16>().ok().filter(|p| *p != 0)?)));
        if parsed.is_none() {
            errors.push(ConfigError::at(
                t,
                format!("bad endpoint `{}`: expected [ADDRESS]:PORT such as [2001:db8::10]:80", t.text),
            ));
        }
        return parsed.map(|(a, p)| (IpAddr::V6(a), p));
    }
    endpoint(t, errors).map(|(a, p)| (IpAddr::V4(a), p))
}

/// Why `a` cannot be a VIP or backend.
fn usable(a: IpAddr) -> Result<(), &'static str> {
    match a {
        IpAddr::V4(a) => usable_unicast(a),
        IpAddr::V6(a) => crate::config::usable_unicast6(a),
    }
}

/// The port that reaches an IPv6 address: a port's prefix, else the
/// longest IPv6 route.
fn port_for6(config: &Config, a: Ipv6Addr) -> Option<usize> {
    config.ports.iter().position(|p| p.address6.iter().any(|n| n.contains(&a))).or_else(|| {
        config.routes6.iter().filter(|r| r.prefix.contains(&a)).max_by_key(|r| r.prefix.prefix_len()).map(|r| r.port)
    })
}

/// `lb table-size PRIME flows N client-flows N ...`
fn parse_lb(stmt: &Stmt<'_>, lb: &mut LbConfig, errors: &mut Errors) {
    lb.line = Line(stmt.words[0].line);
    for (key, value) in key_values(stmt, 1, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        let v = value.text.parse::<usize>().ok();
        match (key.text, v) {
            // The range first: trial division of a 19-digit number took
            // minutes (found by the config fuzzer).
            ("table-size", Some(n)) if (251..=1_048_573).contains(&n) && super::maglev::is_prime(n) => {
                lb.table_size = n
            }
            ("table-size", _) => errors.push(ConfigError::at(
                &value,
                format!("bad table-size `{}`: expected a prime from 251 to 1048573, such as 65537", value.text),
            )),
            ("flows", Some(n)) if (16..=16_000_000).contains(&n) => lb.flows = n,
            ("flows", _) => {
                errors.push(ConfigError::at(&value, format!("bad flows `{}`: expected 16 to 16000000", value.text)))
            }
            ("udp-timeout" | "tcp-established-timeout" | "tcp-transitory-timeout", Some(n)) if (1..=1 << 20).contains(&n) => {
                match key.text {
                    "udp-timeout" => lb.udp_timeout = n as u32,
                    "tcp-established-timeout" => lb.tcp_established_timeout = n as u32,
                    _ => lb.tcp_transitory_timeout = n as u32,
                }
            }
            ("udp-timeout" | "tcp-established-timeout" | "tcp-transitory-timeout", _) => errors.push(ConfigError::at(
                &value,
                format!("bad {} `{}`: expected seconds from 1 to 1048576", key.text, value.text),
            )),
            ("refusal-rate", Some(n)) if n <= 1_000_000 => lb.refusal_rate = n as u32,
            ("refusal-burst", Some(n)) if (1..=1_000_000).contains(&n) => lb.refusal_burst = n as u32,
            ("client-flows", Some(n)) if (1..=16_000_000).contains(&n) => lb.client_flows = Some(n as u32),
            ("client-flows", _) => errors.push(ConfigError::at(
                &value,
                format!("bad client-flows `{}`: expected flows per client from 1 to 16000000", value.text),
            )),
            ("refusal-rate" | "refusal-burst", _) => errors.push(ConfigError::at(
                &value,
                format!("bad {} `{}`: expected a number up to 1000000", key.text, value.text),
            )),
            ("clients-per-64", Some(n)) if (1..=u32::MAX as usize).contains(&n) => lb.clients_per_64 = Some(n as u32),
            ("clients-per-64", _) => errors.push(ConfigError::at(
                &value,
                format!("bad clients-per-64 `{}`: expected a number of IPv6 clients, at least 1", value.text),
            )),
            (other, _) => errors.push(ConfigError::at(
                &key,
                format!("unknown lb setting `{other}`: expected table-size, flows, client-flows, udp-timeout, tcp-established-timeout, tcp-transitory-timeout, refusal-rate, refusal-burst or clients-per-64"),
            )),
        }
    }
}

/// Reads the `service` and `lb` statements into the one load balancer
/// (none without services).
pub fn parse(stmts: &[&Stmt<'_>], config: &Config, errors: &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)> {
    let mut lb = LbConfig::default();
    let mut lb_seen = false;
    for stmt in stmts {
        let kw = *stmt.words[0];
        match kw.text {
            "lb" if lb_seen => errors.push(ConfigError::at(&kw, format!("`lb` is already given on line {}", lb.line))),
            "lb" => {
                lb_seen = true;
                parse_lb(stmt, &mut lb, errors);
            }
            _ if lb.services.len() >= MAX_SERVICES => {
                errors.push(ConfigError::at(&kw, format!("too many services: at most {MAX_SERVICES}")))
            }
            _ => {
                let Some(svc) = parse_service(stmt, config, errors) else { continue };
                if let Some(other) = lb.services.iter().find(|o| o.name == svc.name) {
                    errors.push(ConfigError::at(
                        &stmt.words[1],
                        format!("service `{}` is already defined on line {}", svc.name, other.line),
                    ));
                } else if let Some(other) =
                    lb.services.iter().find(|o| (o.vip, o.port, o.proto) == (svc.vip, svc.port, svc.proto))
                {
                    errors.push(ConfigError::at(
                        &stmt.words[1],
                        format!(
                            "service `{}` has the same VIP, port and protocol as `{}` (line {})",
                            svc.name, other.name, other.line
                        ),
                    ));
                } else {
                    lb.services.push(svc);
                }
            }
        }
    }
    // Maglev needs more table slots than backends (NSDI 2016 §3.4: M ≫ N).
    for svc in lb.services.iter().filter(|s| s.backends.len() >= lb.table_size) {
        errors.push(ConfigError {
            line: svc.line.0,
            column: 1,
            message: format!(
                "service `{}` has {} backends but the Maglev table has {} slots: raise `lb table-size` to a prime above {}",
                svc.name,
                svc.backends.len(),
                lb.table_size,
                svc.backends.len() * 10
            ),
        });
    }
    if lb.services.is_empty() {
        return Vec::new();
    }
    if lb.line.0 == 0 {
        lb.line = lb.services[0].line;
    }
    alloc::vec![(String::from("lb"), Rc::new(lb) as Rc<dyn StageConfig>)]
}

impl StageConfig for LbConfig {
    crate::stage_config_identity!();

    fn table_bytes(&self, _: &Config) -> usize {
        // IPv6 clients' stand-ins: two slots per flow, when a service is IPv6.
        let clients = if self.has_ipv6() { crate::standin::Hosts::memory_for(self.flows) } else { 0 };
        super::Lb::memory_for(self.flows) + self.services.len() * self.table_size * 2 + clients
    }

    fn addresses(&self) -> Vec<Ipv4Addr> {
        self.services
            .iter()
            .filter_map(|s| match s.vip {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    fn addresses6(&self) -> Vec<Ipv6Addr> {
        self.services
            .iter()
            .filter_map(|s| match s.vip {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            })
            .collect()
    }

    /// First on every port: a VIP's traffic is claimed before routing.
    fn placement(&self, _: usize, _: &Config) -> Option<Place> {
        Some(Place::BeforeRouting(0))
    }
}
