//! The sluice config language: parser and validated model.
//!
//! The same code runs in the image (on the text from fw_cfg, the kernel
//! command line or the embedded default) and on the host in `sluice check`, so
//! a config that passes `check` is exactly a config the image accepts.
//!
//! Syntax: one statement per line; `#` starts a comment. A statement is a
//! keyword followed by words. A statement may end in `{`, in which case the
//! following lines up to a line holding `}` are its sub-statements. These two
//! are the same port:
//!
//! ```text
//! port lan address 10.0.0.1/24 mac 52:54:00:00:00:01 mtu 1500
//!
//! port lan {
//!     address 10.0.0.1/24
//!     mac 52:54:00:00:00:01
//!     mtu 1500
//! }
//! ```
//!
//! Statements understood so far: `port`. Routes, NAT, LB services and
//! pipelines will be further keywords in the same grammar.
//!
//! Every problem is reported with line and column, and parsing continues past
//! it so that one run shows all errors.

use alloc::collections::btree_map::{BTreeMap, Entry};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use ipnet::Ipv4Net;

use crate::MAX_PORTS;

/// Largest MTU a port may have: a full frame must fit one receive buffer
/// (mergeable receive buffers are not negotiated yet).
pub const MAX_MTU: u16 = 1500;
/// Smallest MTU an IPv4 link may have (RFC 791).
pub const MIN_MTU: u16 = 68;
/// Load-balanced services a config may define.
pub const MAX_SERVICES: usize = 256;
/// Backends one service may have.
pub const MAX_BACKENDS: usize = 4096;
/// Addresses a NAT pool may have.
pub const MAX_POOL: usize = 256;

/// The line a statement was written on: for messages only. Two configs
/// that say the same thing on different lines are equal, so a reload
/// compares meaning, not positions (a comment added at the top changes
/// nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct Line(pub u32);

impl PartialEq for Line {
    fn eq(&self, _: &Line) -> bool {
        true
    }
}

impl Eq for Line {}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A configured port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    /// Selects the NIC with this MAC; without it the port takes the next NIC
    /// in discovery order.
    pub mac: Option<[u8; 6]>,
    /// The appliance's own address and the connected prefix on this port.
    pub address: Option<Ipv4Net>,
    pub mtu: u16,
    /// The reverse-path check on this port (`rpf strict|loose|off`); `None`
    /// only while parsing (the default is decided once the management
    /// port is known).
    pub rpf: Option<Rpf>,
    /// Line of the `port` statement, for errors found after parsing
    /// (e.g. a MAC that matches no NIC).
    pub line: Line,
}

/// Which sources a port accepts (a simple reverse-path check, RFC 3704):
/// `Strict` drops a packet whose source lies in another port's connected
/// prefix (or is an appliance address); `Loose` drops only sources that are
/// the appliance's own addresses or in the management prefix; `Off` checks
/// nothing. The management port defaults to strict, data ports to loose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpf {
    Strict,
    Loose,
    Off,
}

impl PortConfig {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.address.map(|a| a.addr())
    }
}

/// Where a static route sends packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    pub prefix: Ipv4Net,
    /// Index of the egress port.
    pub port: usize,
    /// The next hop; `None` for a route straight onto the port's link.
    pub via: Option<Ipv4Addr>,
    pub line: Line,
}

/// Router settings (`router ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// ICMP errors per second (token bucket rate).
    pub icmp_rate: u32,
    /// ICMP error burst (token bucket depth).
    pub icmp_burst: u32,
    /// Seconds a resolved neighbour stays valid.
    pub arp_timeout: u32,
    /// Neighbour cache entries.
    pub neighbors: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { icmp_rate: 100, icmp_burst: 20, arp_timeout: 300, neighbors: 1024 }
    }
}

/// The stages a pipeline can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    Router,
    Nat,
    Lb,
}

impl StageKind {
    pub const ALL: &'static [(&'static str, StageKind)] =
        &[("router", StageKind::Router), ("nat", StageKind::Nat), ("lb", StageKind::Lb)];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

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
    pub icmp_timeout: u32,
    pub forwards: Vec<ForwardConfig>,
    /// Sessions one inside host / one port forward may hold.
    pub quotas: crate::nat::table::Quotas,
    pub line: Line,
}

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
    pub addr: Ipv4Addr,
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
    pub vip: Ipv4Addr,
    pub port: u16,
    pub mode: LbMode,
    /// Full-NAT source address (default: the backend-facing port's address).
    pub snat: Option<Ipv4Addr>,
    pub backends: Vec<BackendConfig>,
    pub check: CheckKind,
    /// Between checks (µs; `interval 500ms`, `interval 2`).
    pub interval: u64,
    /// How long a check may take (µs).
    pub timeout: u64,
    pub rise: u32,
    pub fall: u32,
    pub line: Line,
}

/// Load-balancer settings (`lb table-size N flows N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbConfig {
    /// Maglev table size (prime).
    pub table_size: usize,
    /// Flow (connection) table entries.
    pub flows: usize,
    /// Idle timeouts of flows, seconds (as the NAT's).
    pub udp_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_transitory_timeout: u32,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            table_size: 65537,
            flows: 65536,
            udp_timeout: 300,
            tcp_established_timeout: 7440,
            tcp_transitory_timeout: 240,
        }
    }
}

/// A duration in µs: `2` or `0.5` (seconds), `500ms`, `2s`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1_000u64)
    } else {
        (s.strip_suffix('s').unwrap_or(s), 1_000_000)
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || int.len() > 7 || frac.len() > 6 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut part = 0u64;
    let mut unit = scale;
    for d in frac.bytes() {
        unit /= 10;
        part += (d - b'0') as u64 * unit;
    }
    whole.checked_mul(scale)?.checked_add(part)
}

/// The management endpoint (`management PORT [listen TCPPORT]
/// [token-file PATH] [metrics open|token]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementConfig {
    /// Index of the dedicated management port.
    pub port: usize,
    /// TCP port of the HTTP endpoint.
    pub listen: u16,
    /// The file on the host holding the bearer token. The host tools
    /// (`sluice run`, the lab) hand its contents to the image through
    /// fw_cfg (`opt/sluice/token`); the image only sees that a token is
    /// required and refuses to start without one.
    pub token_file: Option<String>,
    /// `/metrics` answers without the token (for a scraper that has none).
    pub metrics_open: bool,
    pub line: Line,
}

/// A validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Port pairs joined by a wire: every frame in one goes out of the other
    /// unchanged (the null pipeline: the ceiling of the I/O path).
    pub wires: Vec<(usize, usize)>,
    pub management: Option<ManagementConfig>,
    pub services: Vec<ServiceConfig>,
    pub lb: LbConfig,
    pub ports: Vec<PortConfig>,
    pub routes: Vec<RouteConfig>,
    pub router: RouterConfig,
    pub nat: Option<NatConfig>,
    /// Stages per input port, by port index. A port without a `pipeline`
    /// statement runs `router`.
    pub pipelines: Vec<Vec<StageKind>>,
}

impl Config {
    pub fn port_by_name(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// Bytes of the fixed-size tables this config asks for (NAT sessions,
    /// load-balancer flows and Maglev tables), all allocated at start: what
    /// the appliance needs beyond its packet buffers.
    pub fn table_bytes(&self) -> usize {
        self.nat_table_bytes() + self.lb_table_bytes() + self.router_table_bytes() + self.neighbor_table_bytes()
    }

    /// Bytes of the router's route table (connected and static routes)
    /// and its next hops.
    pub fn router_table_bytes(&self) -> usize {
        let connected = self.ports.iter().filter_map(|p| p.address.map(|a| a.trunc())).collect::<Vec<_>>();
        crate::router::lpm::Lpm::memory_for(self.routes.iter().map(|r| &r.prefix).chain(connected.iter()))
            + self.routes.len() * 16
    }

    /// Bytes of the egress's neighbour cache.
    pub fn neighbor_table_bytes(&self) -> usize {
        crate::neighbor::NeighborCache::memory_for(self.router.neighbors)
    }

    /// Things that are allowed but probably not what the operator meant.
    pub fn warnings(&self) -> Vec<(u32, String)> {
        let mut w = Vec::new();
        if let Some(n) = &self.nat {
            let ports = (n.ports.1 - n.ports.0) as usize + 1;
            let most = ports * n.pool.len();
            if n.sessions > most {
                w.push((
                    n.line.0,
                    format!(
                        "nat: sessions {} exceed the {} outside ports of the pool ({} address(es) x {} ports): \
                         at most {} inside endpoints can be mapped at once; add pool addresses or lower sessions",
                        n.sessions,
                        most,
                        n.pool.len(),
                        ports,
                        most
                    ),
                ));
            }
        }
        w
    }

    /// Bytes of the NAT's session table.
    pub fn nat_table_bytes(&self) -> usize {
        self.nat.as_ref().map_or(0, |n| crate::nat::table::NatTable::memory_for(n.sessions, n.pool.len()))
    }

    /// Bytes of the load balancer's flow table and Maglev tables.
    pub fn lb_table_bytes(&self) -> usize {
        if self.services.is_empty() {
            0
        } else {
            crate::lb::Lb::memory_for(self.lb.flows) + self.services.len() * self.lb.table_size * 2
        }
    }
}

/// One problem in a config text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl ConfigError {
    fn at(tok: &Token<'_>, message: impl Into<String>) -> Self {
        ConfigError { line: tok.line, column: tok.column, message: message.into() }
    }

    /// `file:line:column: message`, the format editors and CI logs understand.
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        struct D<'a>(&'a ConfigError, &'a str);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}:{}:{}: {}", self.1, self.0.line, self.0.column, self.0.message)
            }
        }
        D(self, file)
    }
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    line: u32,
    column: u32,
}

/// A statement: its words, and its block if it had one.
#[derive(Debug)]
struct Stmt<'a> {
    words: Vec<Token<'a>>,
    block: Option<Vec<Stmt<'a>>>,
}

/// Splits one line into tokens. Linear in the line's length: the column
/// is counted as the scan goes, never recomputed from the line's start.
fn tokenize_line<'a>(line: &'a str, line_no: u32, out: &mut Vec<Token<'a>>) {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    // (byte offset, column) of the word being read.
    let mut start: Option<(usize, u32)> = None;
    let mut column = 0u32;
    for (i, c) in line.char_indices() {
        column = column.saturating_add(1);
        if c.is_whitespace() || c == '{' || c == '}' || c == ';' {
            if let Some((s, col)) = start.take() {
                out.push(Token { text: &line[s..i], line: line_no, column: col });
            }
            if c == '{' || c == '}' || c == ';' {
                out.push(Token { text: &line[i..i + 1], line: line_no, column });
            }
        } else if start.is_none() {
            start = Some((i, column));
        }
    }
    if let Some((s, col)) = start {
        out.push(Token { text: &line[s..], line: line_no, column: col });
    }
}

/// The statements a config's top level may hold.
const TOP_KEYWORDS: &[&str] = &["port", "route", "router", "nat", "service", "lb", "management", "wire", "pipeline"];

/// Blocks may nest this deep (the grammar uses one level; the rest is
/// room). Deeper input is refused, so nothing that walks the statement
/// tree, its drop included, recurses more than this.
pub const MAX_DEPTH: usize = 4;
/// Statements a config may hold (a million routes fit).
pub const MAX_STATEMENTS: usize = 1 << 21;
/// Errors reported in full; the rest are counted ("… and N more").
pub const MAX_ERRORS: usize = 100;

/// The errors of one parse: the first [`MAX_ERRORS`] kept, the rest only
/// counted, so a hostile text of a million errors costs no more memory or
/// response size than a hundred. `len` counts them all.
#[derive(Debug, Default)]
struct Errors {
    kept: Vec<ConfigError>,
    more: usize,
    first_dropped: Option<(u32, u32)>,
}

impl Errors {
    fn push(&mut self, e: ConfigError) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(e);
        } else {
            self.more += 1;
            let at = (e.line, e.column);
            self.first_dropped = Some(self.first_dropped.map_or(at, |f| f.min(at)));
        }
    }

    /// Pushes the error `message()` builds at `tok`, building it only if
    /// it will be kept (a flood of errors costs a count each, not a string).
    fn push_at(&mut self, tok: &Token<'_>, message: impl FnOnce() -> String) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(ConfigError::at(tok, message()));
        } else {
            self.push(ConfigError { line: tok.line, column: tok.column, message: String::new() });
        }
    }

    fn len(&self) -> usize {
        self.kept.len() + self.more
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept errors in line order, then one line for the rest.
    fn into_vec(mut self) -> Vec<ConfigError> {
        self.kept.sort_by_key(|e| (e.line, e.column));
        if let Some((line, column)) = self.first_dropped {
            self.kept.push(ConfigError {
                line,
                column,
                message: format!(
                    "… and {} more error(s) from here on (only the first {MAX_ERRORS} are shown)",
                    self.more
                ),
            });
        }
        self.kept
    }
}

/// Splits the text into statements and blocks. `;` ends a statement like a
/// newline does, so a whole config fits on a kernel command line.
/// Linear in the text's length; blocks deeper than [`MAX_DEPTH`] and
/// statements beyond [`MAX_STATEMENTS`] are errors.
fn parse_statements<'a>(text: &'a str, errors: &mut Errors) -> Vec<Stmt<'a>> {
    // Open blocks: (opening token, statement words, children).
    let mut stack: Vec<(Token<'a>, Vec<Token<'a>>, Vec<Stmt<'a>>)> = Vec::new();
    let mut top: Vec<Stmt<'a>> = Vec::new();
    let mut count = 0usize;
    // `{`s beyond the depth limit: their blocks are skipped whole.
    let mut skipped = 0usize;
    let mut tokens = Vec::new();
    let finish = |words: &mut Vec<Token<'a>>,
                  stack: &mut Vec<(Token<'a>, Vec<Token<'a>>, Vec<Stmt<'a>>)>,
                  top: &mut Vec<Stmt<'a>>,
                  count: &mut usize,
                  errors: &mut Errors| {
        if words.is_empty() {
            return;
        }
        *count += 1;
        if *count > MAX_STATEMENTS {
            if *count == MAX_STATEMENTS + 1 {
                errors.push(ConfigError::at(&words[0], format!("more than {MAX_STATEMENTS} statements")));
            }
            words.clear();
            return;
        }
        if stack.is_empty() && !TOP_KEYWORDS.contains(&words[0].text) {
            // Refused here, before a statement is built: a flood of
            // unknown lines costs a count each.
            let kw = words[0];
            errors.push_at(&kw, || {
                format!("unknown statement `{}`: expected `port`, `route`, `router`, `nat`, `service`, `lb`, `management`, `wire` or `pipeline`", kw.text)
            });
            words.clear();
            return;
        }
        let stmt = Stmt { words: core::mem::take(words), block: None };
        match stack.last_mut() {
            Some((_, _, children)) => children.push(stmt),
            None => top.push(stmt),
        }
    };
    let mut words: Vec<Token<'a>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        tokens.clear();
        tokenize_line(line, u32::try_from(i + 1).unwrap_or(u32::MAX), &mut tokens);
        for &tok in &tokens {
            if skipped > 0 {
                match tok.text {
                    "{" => skipped += 1,
                    "}" => skipped -= 1,
                    _ => {}
                }
                continue;
            }
            match tok.text {
                "{" => {
                    if words.is_empty() {
                        errors.push(ConfigError::at(&tok, "`{` must follow a statement on the same line"));
                    } else if stack.len() >= MAX_DEPTH {
                        errors.push(ConfigError::at(
                            &tok,
                            format!("blocks nest at most {MAX_DEPTH} deep; this block and everything in it is ignored"),
                        ));
                        words.clear();
                        skipped = 1;
                    } else {
                        stack.push((tok, core::mem::take(&mut words), Vec::new()));
                    }
                }
                "}" => {
                    finish(&mut words, &mut stack, &mut top, &mut count, errors);
                    match stack.pop() {
                        Some((_, words, children)) => {
                            let stmt = Stmt { words, block: Some(children) };
                            match stack.last_mut() {
                                Some((_, _, c)) => c.push(stmt),
                                None => top.push(stmt),
                            }
                        }
                        None => errors.push(ConfigError::at(&tok, "`}` without an open block")),
                    }
                }
                ";" => finish(&mut words, &mut stack, &mut top, &mut count, errors),
                _ => words.push(tok),
            }
        }
        finish(&mut words, &mut stack, &mut top, &mut count, errors);
    }
    while let Some((open, words, children)) = stack.pop() {
        errors.push(ConfigError::at(
            &open,
            format!("block of `{}` is never closed: add a line with `}}`", words[0].text),
        ));
        let stmt = Stmt { words, block: Some(children) };
        match stack.last_mut() {
            Some((_, _, c)) => c.push(stmt),
            None => top.push(stmt),
        }
    }
    top
}

/// Parses and validates a config. On failure returns every error found, in
/// line order.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let stmts = parse_statements(text, &mut errors);
    let mut config = Config::default();
    let mut later: Vec<&Stmt<'_>> = Vec::new();
    for stmt in &stmts {
        let kw = stmt.words[0];
        match kw.text {
            "route" | "pipeline" | "router" | "nat" | "service" | "lb" | "management" | "wire" => later.push(stmt),
            "port" if config.ports.len() >= MAX_PORTS => errors.push(ConfigError::at(
                &kw,
                format!("too many ports: sluice drives at most {MAX_PORTS}"),
            )),
            "port" => {
                if let Some(port) = parse_port(stmt, &mut errors) {
                    if config.ports.iter().any(|p| p.name == port.name) {
                        errors.push(ConfigError::at(&stmt.words[1], format!("port `{}` is defined twice", port.name)));
                    } else if let Some(other) = port.mac.and_then(|m| config.ports.iter().find(|p| p.mac == Some(m))) {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!(
                                "port `{}` has the same MAC as port `{}` (line {})",
                                port.name, other.name, other.line
                            ),
                        ));
                    } else if let Some(other) = port.address.and_then(|a| {
                        config.ports.iter().find(|p| p.address.is_some_and(|b| b.contains(&a.network()) || a.contains(&b.network())))
                    }) {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!(
                                "port `{}`: {} overlaps {} of port `{}` (line {}); each port needs its own subnet",
                                port.name,
                                port.address.map(|a| a.trunc()).unwrap_or_default(),
                                other.address.map(|a| a.trunc()).unwrap_or_default(),
                                other.name,
                                other.line
                            ),
                        ));
                    } else {
                        config.ports.push(port);
                    }
                }
            }
            other => errors.push_at(&kw, || {
                format!("unknown statement `{other}`: expected `port`, `route`, `router`, `nat`, `service`, `lb`, `management`, `wire` or `pipeline`")
            }),
        }
    }
    // Routes and pipelines name ports, so they are read once all ports are known.
    config.pipelines = config.ports.iter().map(|_| alloc::vec![StageKind::Router]).collect();
    let mut pipeline_lines: Vec<Option<u32>> = config.ports.iter().map(|_| None).collect();
    let mut router_seen = false;
    let mut route_lines: BTreeMap<Ipv4Net, u32> = BTreeMap::new();
    for stmt in later {
        match stmt.words[0].text {
            "route" => {
                if let Some(r) = parse_route(stmt, &config, &mut errors) {
                    // A map, not a scan: configs with a million routes are fine.
                    match route_lines.entry(r.prefix) {
                        Entry::Occupied(o) => errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!("route {} is already given on line {}", r.prefix, o.get()),
                        )),
                        Entry::Vacant(v) => {
                            v.insert(r.line.0);
                            config.routes.push(r);
                        }
                    }
                }
            }
            "pipeline" => parse_pipeline(stmt, &mut config, &mut pipeline_lines, &mut errors),
            "service" if config.services.len() >= MAX_SERVICES => {
                errors.push(ConfigError::at(&stmt.words[0], format!("too many services: at most {MAX_SERVICES}")))
            }
            "service" => {
                if let Some(svc) = parse_service(stmt, &config, &mut errors) {
                    if let Some(other) = config.services.iter().find(|o| o.name == svc.name) {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!("service `{}` is already defined on line {}", svc.name, other.line),
                        ));
                    } else if let Some(other) =
                        config.services.iter().find(|o| (o.vip, o.port, o.proto) == (svc.vip, svc.port, svc.proto))
                    {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!(
                                "service `{}` has the same VIP, port and protocol as `{}` (line {})",
                                svc.name, other.name, other.line
                            ),
                        ));
                    } else {
                        config.services.push(svc);
                    }
                }
            }
            "lb" => parse_lb(stmt, &mut config.lb, &mut errors),
            "wire" => {
                let kw = stmt.words[0];
                match (stmt.words.get(1), stmt.words.get(2), stmt.words.get(3)) {
                    (Some(a), Some(b), None) => match (config.port_by_name(a.text), config.port_by_name(b.text)) {
                        (Some(x), Some(y)) if x == y => {
                            errors.push(ConfigError::at(b, "a port cannot be wired to itself"))
                        }
                        (Some(x), Some(y)) => {
                            if config.wires.iter().any(|(p, q)| [*p, *q].iter().any(|v| *v == x || *v == y)) {
                                errors.push(ConfigError::at(&kw, "each port can be in one wire only"));
                            } else {
                                config.wires.push((x, y));
                            }
                        }
                        (None, _) => errors.push(ConfigError::at(a, format!("no port named `{}`", a.text))),
                        (_, None) => errors.push(ConfigError::at(b, format!("no port named `{}`", b.text))),
                    },
                    _ => errors.push(ConfigError::at(&kw, "expected `wire PORT PORT`")),
                }
            }
            "management" => {
                let kw = stmt.words[0];
                if let Some(m) = &config.management {
                    errors.push(ConfigError::at(&kw, format!("`management` is already given on line {}", m.line)));
                } else if let Some(name) = stmt.words.get(1) {
                    let mut m = ManagementConfig {
                        port: 0,
                        listen: 80,
                        token_file: None,
                        metrics_open: false,
                        line: Line(kw.line),
                    };
                    for (key, value) in key_values(stmt, 2, &mut errors) {
                        let Some(value) = value else {
                            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
                            continue;
                        };
                        match key.text {
                            "listen" => match value.text.parse::<u16>() {
                                Ok(v) if v > 0 => m.listen = v,
                                _ => errors.push(ConfigError::at(&value, format!("bad TCP port `{}`", value.text))),
                            },
                            "token-file" => m.token_file = Some(value.text.to_string()),
                            "metrics" => match value.text {
                                "open" => m.metrics_open = true,
                                "token" => m.metrics_open = false,
                                other => errors.push(ConfigError::at(
                                    &value,
                                    format!("unknown `metrics {other}`: expected `open` (no token for /metrics) or `token`"),
                                )),
                            },
                            other => errors.push(ConfigError::at(
                                &key,
                                format!("unknown management setting `{other}`: expected `listen`, `token-file` or `metrics`"),
                            )),
                        }
                    }
                    match config.port_by_name(name.text) {
                        Some(port) if config.ports[port].address.is_none() => errors.push(ConfigError::at(
                            name,
                            format!(
                                "management port `{}` has no address: give it one (`address A.B.C.D/LEN`)",
                                name.text
                            ),
                        )),
                        Some(port) => config.management = Some(ManagementConfig { port, ..m }),
                        None => errors.push(ConfigError::at(name, format!("no port named `{}`", name.text))),
                    }
                } else {
                    errors.push(ConfigError::at(&kw, "`management` needs a port: `management mgmt`"));
                }
            }
            "nat" => {
                if let Some(first) = &config.nat {
                    errors.push(ConfigError::at(
                        &stmt.words[0],
                        format!("only one `nat` is supported; the first is on line {}", first.line),
                    ));
                } else {
                    config.nat = parse_nat(stmt, &config, &mut errors);
                }
            }
            _ => {
                if router_seen {
                    errors.push(ConfigError::at(&stmt.words[0], "`router` is given twice"));
                }
                router_seen = true;
                parse_router(stmt, &mut config.router, &mut errors);
            }
        }
    }
    // Maglev needs more table slots than backends (NSDI 2016 §3.4: M ≫ N).
    for svc in config.services.iter().filter(|s| s.backends.len() >= config.lb.table_size) {
        errors.push(ConfigError {
            line: svc.line.0,
            column: 1,
            message: format!(
                "service `{}` has {} backends but the Maglev table has {} slots: raise `lb table-size` to a prime above {}",
                svc.name,
                svc.backends.len(),
                config.lb.table_size,
                svc.backends.len() * 10
            ),
        });
    }
    // The management port forwards nothing, and nothing is forwarded to it.
    if let Some(m) = &config.management {
        let name = &config.ports[m.port].name;
        match pipeline_lines[m.port] {
            Some(line) if !config.pipelines[m.port].is_empty() => errors.push(ConfigError {
                line,
                column: 1,
                message: format!("`{name}` is the management port: it forwards nothing, so its pipeline must be empty"),
            }),
            _ => {}
        }
        config.pipelines[m.port].clear();
        pipeline_lines[m.port] = Some(m.line.0);
        for r in config.routes.iter().filter(|r| r.port == m.port) {
            errors.push(ConfigError {
                line: r.line.0,
                column: 1,
                message: format!(
                    "route {} leads into the management port `{name}`: nothing is forwarded there",
                    r.prefix
                ),
            });
        }
        if config.wires.iter().any(|(a, b)| *a == m.port || *b == m.port) {
            errors.push(ConfigError {
                line: m.line.0,
                column: 1,
                message: format!("the management port `{name}` cannot be in a wire"),
            });
        }
    }
    for (i, p) in config.ports.iter_mut().enumerate() {
        if p.rpf.is_none() {
            let mgmt = config.management.as_ref().is_some_and(|m| m.port == i);
            p.rpf = Some(if mgmt { Rpf::Strict } else { Rpf::Loose });
        }
    }
    // With services and no explicit pipeline: the load balancer comes first.
    if !config.services.is_empty() {
        for (i, line) in pipeline_lines.iter().enumerate() {
            if line.is_none() {
                config.pipelines[i].insert(0, StageKind::Lb);
            }
        }
    } else {
        for (i, p) in config.pipelines.iter().enumerate() {
            if p.contains(&StageKind::Lb) {
                errors.push(ConfigError {
                    line: pipeline_lines[i].unwrap_or(1),
                    column: 1,
                    message: "pipeline uses `lb` but there is no `service NAME { ... }`".to_string(),
                });
            }
        }
    }
    // With a NAT and no explicit pipeline: the outside port translates
    // before routing (inbound DNAT), the others after (outbound SNAT).
    if let Some(nat) = &config.nat {
        for (i, line) in pipeline_lines.iter().enumerate() {
            if line.is_none() {
                let lb = config.pipelines[i].first() == Some(&StageKind::Lb);
                config.pipelines[i] = if i == nat.outside {
                    alloc::vec![StageKind::Nat, StageKind::Router]
                } else {
                    alloc::vec![StageKind::Router, StageKind::Nat]
                };
                if lb {
                    config.pipelines[i].insert(0, StageKind::Lb);
                }
            }
        }
    } else {
        for (i, p) in config.pipelines.iter().enumerate() {
            if p.contains(&StageKind::Nat) {
                errors.push(ConfigError {
                    line: pipeline_lines[i].unwrap_or(1),
                    column: 1,
                    message: "pipeline uses `nat` but there is no `nat { ... }` block".to_string(),
                });
            }
        }
    }
    if config.ports.is_empty() && errors.is_empty() {
        errors.push(ConfigError {
            line: 1,
            column: 1,
            message: "no ports: add at least one `port NAME address A.B.C.D/LEN`".to_string(),
        });
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors.into_vec())
    }
}

/// Collects `key value` pairs from the words after `skip` and from a block.
fn key_values<'a>(stmt: &Stmt<'a>, skip: usize, errors: &mut Errors) -> Vec<(Token<'a>, Option<Token<'a>>)> {
    let mut out = Vec::new();
    let mut rest = &stmt.words[skip..];
    while let Some((k, tail)) = rest.split_first() {
        out.push((*k, tail.first().copied()));
        rest = tail.get(1..).unwrap_or(&[]);
    }
    for child in stmt.block.iter().flatten() {
        let k = child.words[0];
        if let Some(b) = &child.block {
            let _ = b;
            errors.push(ConfigError::at(&k, format!("`{}` does not take a block", k.text)));
            continue;
        }
        if child.words.len() > 2 {
            errors.push(ConfigError::at(
                &child.words[2],
                format!("unexpected `{}`: `{}` takes one value", child.words[2].text, k.text),
            ));
        }
        out.push((k, child.words.get(1).copied()));
    }
    out
}

fn parse_port(stmt: &Stmt<'_>, errors: &mut Errors) -> Option<PortConfig> {
    let kw = stmt.words[0];
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`port` needs a name: `port NAME address A.B.C.D/LEN`"));
        return None;
    };
    let before = errors.len();
    if !is_name(name.text) {
        errors.push(ConfigError::at(
            name,
            format!("bad port name `{}`: use 1 to 15 letters, digits, `-` or `_`, starting with a letter", name.text),
        ));
    }
    let mut port =
        PortConfig { name: name.text.to_string(), mac: None, address: None, mtu: 1500, rpf: None, line: Line(kw.line) };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in key_values(stmt, 2, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        if seen.contains(&key.text) {
            errors.push(ConfigError::at(&key, format!("`{}` is given twice for port `{}`", key.text, port.name)));
            continue;
        }
        match key.text {
            "mac" => match parse_mac(value.text) {
                Some(m) if m[0] & 1 == 1 => errors.push(ConfigError::at(
                    &value,
                    format!("`{}` is a multicast MAC; a port needs a unicast MAC", value.text),
                )),
                Some(m) => port.mac = Some(m),
                None => errors.push(ConfigError::at(
                    &value,
                    format!("bad MAC `{}`: expected six hex bytes like 52:54:00:12:34:56", value.text),
                )),
            },
            "address" => match value.text.parse::<Ipv4Net>() {
                Ok(net) if usable_unicast(net.addr()).is_err() => errors.push(ConfigError::at(
                    &value,
                    format!("port address {} {}", net.addr(), usable_unicast(net.addr()).unwrap_err()),
                )),
                // A /31 has no network or broadcast address (RFC 3021).
                Ok(net) if net.prefix_len() >= 31 || net.addr() != net.network() && net.addr() != net.broadcast() => {
                    port.address = Some(net)
                }
                Ok(_) => errors.push(ConfigError::at(
                    &value,
                    format!(
                        "`{}` is the network or broadcast address of its prefix; give the port a host address",
                        value.text
                    ),
                )),
                Err(_) => errors.push(ConfigError::at(
                    &value,
                    format!("bad address `{}`: expected A.B.C.D/LEN such as 10.0.0.1/24", value.text),
                )),
            },
            "mtu" => match value.text.parse::<u16>() {
                Ok(m) if (MIN_MTU..=MAX_MTU).contains(&m) => port.mtu = m,
                _ => errors.push(ConfigError::at(
                    &value,
                    format!("bad MTU `{}`: expected a number from {MIN_MTU} to {MAX_MTU}", value.text),
                )),
            },
            "rpf" => match value.text {
                "strict" => port.rpf = Some(Rpf::Strict),
                "loose" => port.rpf = Some(Rpf::Loose),
                "off" => port.rpf = Some(Rpf::Off),
                other => errors
                    .push(ConfigError::at(&value, format!("unknown rpf `{other}`: expected strict, loose or off"))),
            },
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown port setting `{other}`: expected `address`, `mac`, `mtu` or `rpf`"),
            )),
        }
        seen.push(key.text);
    }
    (errors.len() == before).then_some(port)
}

/// `route PREFIX via ADDRESS` or `route PREFIX port NAME`.
fn parse_route(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<RouteConfig> {
    let kw = stmt.words[0];
    const FORM: &str = "expected `route PREFIX via ADDRESS` or `route PREFIX port NAME`";
    let (Some(prefix), Some(kind), Some(target)) = (stmt.words.get(1), stmt.words.get(2), stmt.words.get(3)) else {
        errors.push(ConfigError::at(&kw, format!("incomplete route: {FORM}")));
        return None;
    };
    if let Some(extra) = stmt.words.get(4) {
        errors.push(ConfigError::at(extra, format!("unexpected `{}`: {FORM}", extra.text)));
        return None;
    }
    let Ok(net) = prefix.text.parse::<Ipv4Net>() else {
        errors.push(ConfigError::at(
            prefix,
            format!("bad prefix `{}`: expected A.B.C.D/LEN such as 0.0.0.0/0", prefix.text),
        ));
        return None;
    };
    if net != net.trunc() {
        errors.push(ConfigError::at(
            prefix,
            format!("`{}` has host bits set: did you mean {}?", prefix.text, net.trunc()),
        ));
        return None;
    }
    match kind.text {
        "via" => {
            let Ok(gw) = target.text.parse::<Ipv4Addr>() else {
                errors
                    .push(ConfigError::at(target, format!("bad next hop `{}`: expected an IPv4 address", target.text)));
                return None;
            };
            let on_link =
                config.ports.iter().position(|p| p.address.is_some_and(|a| a.contains(&gw) && a.addr() != gw));
            match on_link {
                Some(port) => Some(RouteConfig { prefix: net, port, via: Some(gw), line: Line(kw.line) }),
                None => {
                    errors.push(ConfigError::at(
                        target,
                        format!("next hop {gw} is not on the subnet of any port: give a port an address on its link"),
                    ));
                    None
                }
            }
        }
        "port" => match config.port_by_name(target.text) {
            Some(port) => Some(RouteConfig { prefix: net, port, via: None, line: Line(kw.line) }),
            None => {
                errors.push(ConfigError::at(target, format!("no port named `{}`", target.text)));
                None
            }
        },
        other => {
            errors.push(ConfigError::at(kind, format!("unexpected `{other}`: {FORM}")));
            None
        }
    }
}

/// `pipeline PORT STAGE...`
fn parse_pipeline(stmt: &Stmt<'_>, config: &mut Config, seen: &mut [Option<u32>], errors: &mut Errors) {
    let kw = stmt.words[0];
    let Some(port) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`pipeline` needs a port and stages: `pipeline PORT router`"));
        return;
    };
    let name = port.text.trim_end_matches(':');
    let Some(i) = config.port_by_name(name) else {
        errors.push(ConfigError::at(port, format!("no port named `{name}`")));
        return;
    };
    if let Some(line) = seen[i] {
        errors.push(ConfigError::at(port, format!("port `{name}` already has a pipeline (line {line})")));
        return;
    }
    seen[i] = Some(kw.line);
    let mut stages = Vec::new();
    for w in &stmt.words[2..] {
        match StageKind::ALL.iter().find(|(n, _)| *n == w.text) {
            Some((_, k)) if stages.contains(k) => {
                errors.push(ConfigError::at(w, format!("stage `{}` appears twice in this pipeline", w.text)))
            }
            Some((_, k)) => stages.push(*k),
            None => {
                let known: Vec<&str> = StageKind::ALL.iter().map(|(n, _)| *n).collect();
                errors.push(ConfigError::at(
                    w,
                    format!("unknown stage `{}`: expected one of {}", w.text, known.join(", ")),
                ))
            }
        }
    }
    config.pipelines[i] = stages;
}

/// `nat { inside PREFIX; outside PORT; pool ADDRESS; ports LO-HI; filtering
/// MODE; sessions N; udp-timeout S; ...; forward PROTO ADDR:PORT ADDR:PORT }`
fn parse_nat(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<NatConfig> {
    let kw = stmt.words[0];
    let before = errors.len();
    if let Some(extra) = stmt.words.get(1) {
        errors.push(ConfigError::at(extra, "`nat` takes its settings in a block: `nat {` ... `}`"));
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
        quotas: crate::nat::table::Quotas { host: 0, forward: 0 },
        line: Line(kw.line),
    };
    let (mut host_quota, mut forward_quota) = (None, None);
    let mut outside_tok = None;
    let mut forward_lines: BTreeMap<(u8, (Ipv4Addr, u16)), u32> = BTreeMap::new();
    for child in stmt.block.iter().flatten() {
        let key = child.words[0];
        let args = &child.words[1..];
        let want = |n: usize, errors: &mut Errors| -> bool {
            if args.len() != n {
                errors.push(ConfigError::at(&key, format!("`{}` takes {n} value(s), got {}", key.text, args.len())));
                false
            } else {
                true
            }
        };
        match key.text {
            "inside" if want(1, errors) => match args[0].text.parse::<Ipv4Net>() {
                Ok(n) => nat.inside.push(n.trunc()),
                Err(_) => errors.push(ConfigError::at(&args[0], format!("bad prefix `{}`", args[0].text))),
            },
            "outside" if want(1, errors) => match config.port_by_name(args[0].text) {
                Some(i) => {
                    nat.outside = i;
                    outside_tok = Some(args[0]);
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
            "host-sessions" | "forward-sessions" if want(1, errors) => match args[0].text.parse::<u32>() {
                Ok(v) if v >= 1 => {
                    if key.text == "host-sessions" { host_quota = Some(v) } else { forward_quota = Some(v) }
                }
                _ => errors.push(ConfigError::at(&args[0], format!("bad {} `{}`: expected a number of sessions, at least 1", key.text, args[0].text))),
            },
            "inside" | "outside" | "pool" | "ports" | "filtering" | "sessions" | "udp-timeout" | "tcp-established-timeout"
            | "tcp-transitory-timeout" | "icmp-timeout" | "forward" | "host-sessions" | "forward-sessions" => {}
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown nat setting `{other}`: expected inside, outside, pool, ports, filtering, sessions, host-sessions, forward-sessions, forward or a timeout"),
            )),
        }
    }
    let defaults = crate::nat::table::Quotas::default_for(nat.sessions);
    nat.quotas = crate::nat::table::Quotas {
        host: host_quota.unwrap_or(defaults.host),
        forward: forward_quota.unwrap_or(defaults.forward),
    };
    if outside_tok.is_none() && errors.len() == before {
        errors.push(ConfigError::at(&kw, "`nat` needs `outside PORT`"));
    }
    if nat.inside.is_empty() && errors.len() == before {
        errors.push(ConfigError::at(&kw, "`nat` needs at least one `inside PREFIX`"));
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
    (errors.len() == before).then_some(nat)
}

/// The port through which `addr` is reached: a connected prefix, else a route.
fn port_for(config: &Config, addr: Ipv4Addr) -> Option<usize> {
    config.ports.iter().position(|p| p.address.is_some_and(|a| a.contains(&addr))).or_else(|| {
        config.routes.iter().filter(|r| r.prefix.contains(&addr)).max_by_key(|r| r.prefix.prefix_len()).map(|r| r.port)
    })
}

/// `service NAME { vip ADDR:PORT [tcp|udp]; mode full-nat|dnat; snat ADDR;
/// backend ADDR:PORT [weight N]; check tcp|http PATH|none; interval S;
/// timeout S; rise N; fall N }`
fn parse_service(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<ServiceConfig> {
    let kw = stmt.words[0];
    let before = errors.len();
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`service` needs a name and a block: `service web { ... }`"));
        return None;
    };
    if !is_name(name.text) {
        errors.push(ConfigError::at(name, format!("bad service name `{}`", name.text)));
    }
    let mut svc = ServiceConfig {
        name: name.text.to_string(),
        proto: 6,
        vip: Ipv4Addr::UNSPECIFIED,
        port: 0,
        mode: LbMode::FullNat,
        snat: None,
        backends: Vec::new(),
        check: CheckKind::Tcp,
        interval: 2_000_000,
        timeout: 1_000_000,
        rise: 2,
        fall: 2,
        line: Line(kw.line),
    };
    let mut have_vip = false;
    let mut backends_seen = alloc::collections::BTreeSet::new();
    let endpoint = |t: &Token<'_>, errors: &mut Errors| {
        let parsed = t
            .text
            .split_once(':')
            .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok().filter(|p| *p != 0)?)));
        if parsed.is_none() {
            errors.push(ConfigError::at(t, format!("bad endpoint `{}`: expected ADDRESS:PORT", t.text)));
        }
        parsed
    };
    for child in stmt.block.iter().flatten() {
        let key = child.words[0];
        let args = &child.words[1..];
        let Some(first) = args.first() else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        match key.text {
            "vip" => {
                if let Some((a, _)) = endpoint(first, errors).filter(|(a, _)| usable_unicast(*a).is_err()) {
                    errors.push(ConfigError::at(first, format!("VIP {a} {}", usable_unicast(a).unwrap_err())));
                } else if let Some((a, p)) = endpoint(first, errors) {
                    svc.vip = a;
                    svc.port = p;
                    have_vip = true;
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
            "snat" => match first.text.parse::<Ipv4Addr>() {
                Ok(a) => svc.snat = Some(a),
                Err(_) => errors.push(ConfigError::at(first, format!("bad address `{}`", first.text))),
            },
            "backend" => {
                let Some((addr, port)) = endpoint(first, errors) else { continue };
                let mut weight = 1;
                match (args.get(1).map(|t| t.text), args.get(2)) {
                    (None, _) => {}
                    (Some("weight"), Some(w)) => match w.text.parse::<u32>() {
                        Ok(v) if (0..=1000).contains(&v) => weight = v,
                        _ => errors.push(ConfigError::at(w, format!("bad weight `{}`: expected 0 (drain) to 1000", w.text))),
                    },
                    (Some(_), _) => errors.push(ConfigError::at(&args[1], "expected `weight N` after the backend")),
                }
                let Some(via_port) = port_for(config, addr) else {
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
                if let Err(why) = usable_unicast(addr) {
                    errors.push(ConfigError::at(first, format!("backend {addr} {why}")));
                    continue;
                }
                if let Some(p) = config.ports.iter().find(|p| p.ip() == Some(addr)) {
                    errors.push(ConfigError::at(first, format!("backend {addr} is the address of port `{}`: a backend must be another host", p.name)));
                    continue;
                }
                svc.backends.push(BackendConfig { addr, port, weight, via_port, line: Line(key.line) });
            }
            "check" => match first.text {
                "tcp" => svc.check = CheckKind::Tcp,
                "none" => svc.check = CheckKind::None,
                "http" => match args.get(1) {
                    Some(path) if path.text.starts_with('/') && path.text.len() < 200 => svc.check = CheckKind::Http(path.text.to_string()),
                    _ => errors.push(ConfigError::at(&key, "`check http` needs a path such as /healthz")),
                },
                other => errors.push(ConfigError::at(first, format!("unknown check `{other}`: expected tcp, http PATH or none"))),
            },
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
    (errors.len() == before).then_some(svc)
}

/// `lb table-size PRIME flows N`
fn parse_lb(stmt: &Stmt<'_>, lb: &mut LbConfig, errors: &mut Errors) {
    for (key, value) in key_values(stmt, 1, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        let v = value.text.parse::<usize>().ok();
        match (key.text, v) {
            // The range first: trial division of a 19-digit number took
            // minutes (found by the config fuzzer).
            ("table-size", Some(n)) if (251..=1_048_573).contains(&n) && crate::lb::maglev::is_prime(n) => {
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
            (other, _) => errors.push(ConfigError::at(
                &key,
                format!("unknown lb setting `{other}`: expected table-size, flows, udp-timeout, tcp-established-timeout or tcp-transitory-timeout"),
            )),
        }
    }
}

/// `router icmp-rate N icmp-burst N arp-timeout SECONDS neighbors N`
fn parse_router(stmt: &Stmt<'_>, r: &mut RouterConfig, errors: &mut Errors) {
    for (key, value) in key_values(stmt, 1, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        let (min, max): (u64, u64) = match key.text {
            "icmp-rate" => (0, 1_000_000),
            "icmp-burst" => (1, 1_000_000),
            "arp-timeout" => (1, 86_400),
            "neighbors" => (16, 1 << 20),
            other => {
                errors.push(ConfigError::at(
                    &key,
                    format!("unknown router setting `{other}`: expected `icmp-rate`, `icmp-burst`, `arp-timeout` or `neighbors`"),
                ));
                continue;
            }
        };
        match value.text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => match key.text {
                "icmp-rate" => r.icmp_rate = v as u32,
                "icmp-burst" => r.icmp_burst = v as u32,
                "arp-timeout" => r.arp_timeout = v as u32,
                _ => r.neighbors = v as usize,
            },
            _ => errors.push(ConfigError::at(
                &value,
                format!("bad {} `{}`: expected a number from {min} to {max}", key.text, value.text),
            )),
        }
    }
}

/// Why `a` cannot be an address the appliance owns or sends to (a pool
/// address, a VIP, a backend): unspecified, loopback, multicast, broadcast
/// or reserved (RFC 1122 §3.2.1.3, RFC 1112, RFC 1812 §5.3.7).
fn usable_unicast(a: Ipv4Addr) -> Result<(), &'static str> {
    match a.octets()[0] {
        0 => Err("is in 0.0.0.0/8 (\"this network\"), not a usable address"),
        127 => Err("is a loopback address"),
        224..=239 => Err("is a multicast address"),
        240..=255 if a.is_broadcast() => Err("is the broadcast address"),
        240..=255 => Err("is in the reserved 240.0.0.0/4"),
        _ => Ok(()),
    }
}

fn is_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

/// Formats a MAC the way `ip link` prints it.
pub fn fmt_mac(m: &[u8; 6]) -> impl fmt::Display + '_ {
    struct M<'a>(&'a [u8; 6]);
    impl fmt::Display for M<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let m = self.0;
            write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
        }
    }
    M(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn errs(text: &str) -> Vec<String> {
        parse(text).unwrap_err().iter().map(|e| e.display("t.conf").to_string()).collect()
    }

    const TWO: &str = "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n";

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        // 20,000 levels once overflowed the stack when the tree was dropped.
        for text in ["port lan {\n".repeat(20_000), "port lan {".repeat(20_000), "a {\n".repeat(3000)] {
            let e = errs(&text);
            assert!(e.iter().any(|e| e.contains("blocks nest at most 4 deep")), "{:?}", &e[..3]);
            assert!(e.len() <= MAX_ERRORS + 1, "{}", e.len());
        }
        let ok = std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n}}\n");
        parse(&ok).unwrap();
    }

    #[test]
    fn errors_are_capped_and_the_rest_counted() {
        let text = "a\n".repeat(131_072);
        let e = errs(&text);
        assert_eq!(e.len(), MAX_ERRORS + 1);
        assert!(e[0].starts_with("t.conf:1:1: unknown statement `a`"), "{}", e[0]);
        assert!(e[MAX_ERRORS].contains("and 130972 more error(s)"), "{}", e[MAX_ERRORS]);
        assert!(e[MAX_ERRORS].starts_with("t.conf:101:1:"), "{}", e[MAX_ERRORS]);
    }

    #[test]
    fn columns_are_counted_in_one_pass() {
        // 131k tokens on one line: once quadratic (a column recount per token).
        let line = std::format!("port lan address 10.0.0.1/24 {}", "x ".repeat(131_072));
        let e = errs(&line);
        assert!(e[0].contains(":1:30: "), "{}", e[0]);
        // Columns count characters, not bytes.
        assert!(errs("port lan ä mtu 9999")[0].starts_with("t.conf:1:"), "ok");
        let e = errs("port lan address 10.0.0.1/24 mtu ä9");
        assert!(e[0].starts_with("t.conf:1:34: bad MTU"), "{}", e[0]);
    }

    #[test]
    fn positions_are_not_part_of_meaning() {
        let a = parse(&std::format!(
            "{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n forward tcp 10.1.0.1:80 10.0.0.2:80\n}}\n"
        ))
        .unwrap();
        let b = parse(&std::format!("# a comment\n\n{TWO}route 192.168.0.0/16 via 10.1.0.2\nnat {{\n inside 10.0.0.0/24\n\n outside wan\n forward tcp 10.1.0.1:80 10.0.0.2:80\n}}\n")).unwrap();
        assert_eq!(a.ports, b.ports);
        assert_eq!(a.nat, b.nat);
        assert_ne!(a.routes, b.routes);
    }

    #[test]
    fn nonsense_addresses_and_duplicates_are_refused() {
        let nat = |body: &str| errs(&std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n{body}}}\n"));
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1"] {
            let e = nat(&std::format!(" pool {bad}\n"));
            assert!(e[0].starts_with("t.conf:6:7: pool address"), "{bad}: {e:?}");
        }
        let e = nat(" pool 10.0.0.2\n");
        assert!(e[0].contains("pool address 10.0.0.2 is inside 10.0.0.0/24"), "{e:?}");
        let e = nat(" forward tcp 10.1.0.1:80 10.0.0.2:80\n forward tcp 10.1.0.1:80 10.0.0.3:80\n");
        assert!(e[0].starts_with("t.conf:7:14: forward tcp 10.1.0.1:80 is already given on line 6"), "{e:?}");
        let e = nat(" forward tcp 10.1.0.1:0 10.0.0.2:80\n");
        assert!(e[0].contains("bad endpoint `10.1.0.1:0`"), "{e:?}");
        let svc = |body: &str| errs(&std::format!("{TWO}service web {{\n{body}}}\n"));
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255"] {
            let e = svc(&std::format!(" vip {bad}:80\n backend 10.1.0.2:80\n"));
            assert!(e[0].contains(&std::format!("VIP {bad} ")), "{bad}: {e:?}");
        }
        let e = svc(" vip 10.1.0.9:80\n backend 10.1.0.1:80\n");
        assert!(e[0].contains("backend 10.1.0.1 is the address of port `wan`"), "{e:?}");
        let e = errs("port lan address 10.0.0.1/24\nport wan address 10.0.0.129/25\n");
        assert!(e[0].starts_with("t.conf:2:6: port `wan`: 10.0.0.128/25 overlaps 10.0.0.0/24 of port `lan`"), "{e:?}");
        let many: std::string::String =
            (0..300).map(|i| std::format!(" backend 10.1.{}.{}:80\n", i / 200, 2 + i % 200)).collect();
        let e = errs(&std::format!("port lan address 10.0.0.1/24\nport wan address 10.1.0.1/16\nservice w {{\n vip 10.0.0.9:80\n{many}}}\nlb table-size 251\n"));
        assert!(e[0].contains("has 300 backends but the Maglev table has 251 slots"), "{e:?}");
        let e = errs("port lan address 10.0.0.1/24\nport mgmt\nmanagement mgmt\n");
        assert!(e[0].contains("management port `mgmt` has no address"), "{e:?}");
        // RFC 3021: both addresses of a /31 are hosts.
        let c = parse("port lan address 10.0.0.0/31\nport wan address 10.1.0.1/31\n").unwrap();
        assert_eq!(c.ports[0].address.unwrap().prefix_len(), 31);
    }

    #[test]
    fn the_management_port_forwards_nothing() {
        let base =
            std::format!("{TWO}port mgmt address 10.9.0.1/24\nmanagement mgmt listen 8080 token-file t metrics open\n");
        let c = parse(&base).unwrap();
        let m = c.management.as_ref().unwrap();
        assert_eq!((m.listen, m.token_file.as_deref(), m.metrics_open), (8080, Some("t"), true));
        assert!(c.pipelines[2].is_empty());
        assert_eq!(c.ports[2].rpf, Some(Rpf::Strict));
        assert_eq!(c.ports[0].rpf, Some(Rpf::Loose));
        let e = errs(&std::format!("{base}pipeline mgmt router\n"));
        assert!(e[0].contains("`mgmt` is the management port: it forwards nothing"), "{e:?}");
        let e = errs(&std::format!("{base}route 192.168.0.0/16 via 10.9.0.2\n"));
        assert!(e[0].contains("route 192.168.0.0/16 leads into the management port"), "{e:?}");
    }

    #[test]
    fn table_sizes_are_known_before_building() {
        let c = parse(&std::format!("{TWO}router neighbors 1048576\n")).unwrap();
        assert!(c.neighbor_table_bytes() > 64 << 20, "{}", c.neighbor_table_bytes());
        let routes: std::string::String = (0..4096u32)
            .map(|i| std::format!("route 172.{}.{}.{}/32 via 10.1.0.2\n", 16 + i / 65536, (i >> 8) & 255, i & 255))
            .collect();
        let c = parse(&std::format!("{TWO}{routes}")).unwrap();
        // 16 /24s with /32s under one /16 (1 + 16 chunks), and the /24s of
        // the two ports (one chunk each) beside the top level.
        assert_eq!(c.router_table_bytes(), ((1 << 16) + 19 * 256) * 4 + 4096 * 16);
        let mut lpm = crate::router::lpm::Lpm::new();
        for (i, r) in c.routes.iter().enumerate() {
            lpm.insert(r.prefix, i as u32);
        }
        for p in &c.ports {
            lpm.insert(p.address.unwrap().trunc(), 0);
        }
        assert_eq!(
            lpm.memory(),
            crate::router::lpm::Lpm::memory_for(
                c.routes.iter().map(|r| &r.prefix).chain(c.ports.iter().map(|p| p.address.as_ref().unwrap()))
            )
        );
    }

    #[test]
    fn a_huge_maglev_size_is_refused_before_any_primality_test() {
        // From the config fuzzer: this once spent minutes in trial division.
        let e = errs(&std::format!("{TWO}lb table-size 6553333333333333333\n"));
        assert!(e[0].contains("bad table-size `6553333333333333333`"), "{e:?}");
        assert!(errs(&std::format!("{TWO}lb table-size 18446744073709551557\n"))[0].contains("bad table-size"));
    }

    #[test]
    fn durations_take_sub_second_values() {
        for (t, us) in [
            ("2", 2_000_000),
            ("0.5", 500_000),
            ("500ms", 500_000),
            ("2s", 2_000_000),
            ("1.25s", 1_250_000),
            ("10ms", 10_000),
            (".5", 500_000),
        ] {
            assert_eq!(parse_duration(t), Some(us), "{t}");
        }
        for t in ["", "s", "ms", "-1", "1.2.3", "5m", "1e3", "99999999999", "0.0000001"] {
            assert_eq!(parse_duration(t), None, "{t}");
        }
        let c = parse(&std::format!("{TWO}service w {{\n vip 10.1.0.9:80\n backend 10.1.0.2:80 weight 0\n backend 10.1.0.3:80\n interval 500ms\n timeout 0.2\n}}\nlb tcp-established-timeout 600 udp-timeout 30\n")).unwrap();
        let s = &c.services[0];
        assert_eq!((s.interval, s.timeout, s.backends[0].weight), (500_000, 200_000, 0));
        assert_eq!((c.lb.tcp_established_timeout, c.lb.udp_timeout, c.lb.tcp_transitory_timeout), (600, 30, 240));
        let e = errs(&std::format!("{TWO}service w {{\n vip 10.1.0.9:80\n backend 10.1.0.2:80\n interval 5ms\n}}\n"));
        assert!(e[0].contains("bad interval `5ms`"), "{e:?}");
    }

    #[test]
    fn more_sessions_than_ports_is_a_warning() {
        let c = parse(&std::format!("{TWO}nat {{\n inside 10.0.0.0/24\n outside wan\n}}\n")).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].1.contains("sessions 65536 exceed the 64512 outside ports"), "{w:?}");
    }

    #[test]
    fn one_line_and_block_forms_agree() {
        let a = parse("port lan address 10.0.0.1/24 mac 52:54:00:00:00:01 mtu 1400\n").unwrap();
        let b =
            parse("# lan side\nport lan {\n  address 10.0.0.1/24\n  mac 52:54:00:00:00:01 # fixed\n  mtu 1400\n}\n")
                .unwrap();
        assert_eq!(a.ports[0].address, b.ports[0].address);
        assert_eq!(a.ports[0].mac, b.ports[0].mac);
        assert_eq!(a.ports[0].mtu, 1400);
        assert_eq!(b.ports[0].mtu, 1400);
        assert_eq!(a.ports[0].ip(), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn semicolons_separate_statements_on_one_line() {
        let c = parse("port a address 10.0.0.1/24; port b address 10.1.0.1/24").unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[1].name, "b");
    }

    #[test]
    fn errors_carry_line_and_column() {
        assert_eq!(
            errs("port lan address 10.0.0.1/24\nport wan address 10.0.300.1/24\n"),
            ["t.conf:2:18: bad address `10.0.300.1/24`: expected A.B.C.D/LEN such as 10.0.0.1/24"]
        );
        assert_eq!(
            errs("port lan {\n    mtu 9000\n}\n"),
            ["t.conf:2:9: bad MTU `9000`: expected a number from 68 to 1500"]
        );
    }

    #[test]
    fn every_error_is_reported() {
        let e = errs("bogus 1\nport lan mac zz:00:00:00:00:00 colour blue\nport lan address 10.0.0.1/24\n}\n");
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("t.conf:1:1: unknown statement `bogus`"));
        assert!(e[1].starts_with("t.conf:2:14: bad MAC"));
        assert!(e[2].starts_with("t.conf:2:32: unknown port setting `colour`"));
        assert!(e[3].starts_with("t.conf:4:1: `}` without an open block"));
    }

    #[test]
    fn duplicates_are_refused() {
        let e = errs("port a address 10.0.0.1/24 mac 02:00:00:00:00:01\nport a address 10.1.0.1/24\nport b mac 02:00:00:00:00:01\n");
        assert!(e[0].contains("port `a` is defined twice"), "{e:?}");
        assert!(e[1].contains("same MAC as port `a` (line 1)"), "{e:?}");
        let e = errs("port a address 10.0.0.1/24 address 10.0.0.2/24");
        assert!(e[0].contains("`address` is given twice"), "{e:?}");
    }

    #[test]
    fn unclosed_block_and_missing_values() {
        let e = errs("port lan {\n  address\n");
        assert!(e[0].starts_with("t.conf:1:10: block of `port` is never closed"), "{e:?}");
        assert!(e[1].starts_with("t.conf:2:3: `address` needs a value"), "{e:?}");
    }

    #[test]
    fn network_broadcast_multicast_refused() {
        assert!(errs("port a address 10.0.0.0/24")[0].contains("network or broadcast"));
        assert!(errs("port a address 10.0.0.255/24")[0].contains("network or broadcast"));
        assert!(errs("port a address 10.0.0.1/24 mac 01:00:5e:00:00:01")[0].contains("multicast MAC"));
        assert!(parse("port a address 10.0.0.7/32").is_ok());
    }

    #[test]
    fn too_many_and_no_ports() {
        let mut text = String::new();
        for i in 0..9 {
            text += &std::format!("port p{i} address 10.{i}.0.1/24\n");
        }
        assert!(errs(&text)[0].starts_with("t.conf:9:1: too many ports"));
        assert!(errs("# nothing\n")[0].contains("no ports"));
    }

    #[test]
    fn routes_router_and_pipelines() {
        let c = parse(
            "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\n\
             route 0.0.0.0/0 via 10.1.0.254\nroute 192.168.0.0/16 port lan\n\
             router icmp-rate 5 neighbors 64\npipeline wan: router\npipeline lan\n",
        )
        .unwrap();
        assert_eq!(
            c.routes[0],
            RouteConfig {
                prefix: "0.0.0.0/0".parse().unwrap(),
                port: 1,
                via: Some(Ipv4Addr::new(10, 1, 0, 254)),
                line: Line(3)
            }
        );
        assert_eq!(c.routes[1].port, 0);
        assert_eq!(c.routes[1].via, None);
        assert_eq!(c.router.icmp_rate, 5);
        assert_eq!(c.router.neighbors, 64);
        assert_eq!(c.router.icmp_burst, RouterConfig::default().icmp_burst);
        assert_eq!(c.pipelines, [std::vec![], std::vec![StageKind::Router]]);
        // Without pipeline statements every port routes.
        let c = parse("port a address 10.0.0.1/24").unwrap();
        assert_eq!(c.pipelines, [std::vec![StageKind::Router]]);
    }

    #[test]
    fn route_errors() {
        let base = "port lan address 10.0.0.1/24\n";
        let e = errs(&std::format!("{base}route 10.9.0.0/16 via 10.9.0.1\n"));
        assert_eq!(
            e,
            ["t.conf:2:23: next hop 10.9.0.1 is not on the subnet of any port: give a port an address on its link"]
        );
        let e = errs(&std::format!("{base}route 10.9.0.1/16 via 10.0.0.9\n"));
        assert!(e[0].contains("has host bits set: did you mean 10.9.0.0/16?"), "{e:?}");
        let e = errs(&std::format!("{base}route 10.9.0.0/16 port wan\nroute 10.8.0.0/16\n"));
        assert!(e[0].contains("no port named `wan`"), "{e:?}");
        assert!(e[1].starts_with("t.conf:3:1: incomplete route"), "{e:?}");
        let e = errs(&std::format!("{base}route 0.0.0.0/0 via 10.0.0.9\nroute 0.0.0.0/0 via 10.0.0.8\n"));
        assert!(e[0].contains("already given on line 2"), "{e:?}");
        let e = errs(&std::format!("{base}pipeline lan firewall\npipeline wan router\nrouter icmp-rate lots\n"));
        assert!(e[0].contains("unknown stage `firewall`: expected one of router, nat"), "{e:?}");
        assert!(e[1].contains("no port named `wan`"), "{e:?}");
        assert!(e[2].contains("bad icmp-rate `lots`"), "{e:?}");
    }

    #[test]
    fn nat_block() {
        let c = parse(
            "port lan address 10.0.0.1/24\nport wan address 10.1.0.1/24\nnat {\n  inside 10.0.0.0/24\n  outside wan\n  \
             filtering endpoint-independent\n  sessions 64\n  udp-timeout 30\n  forward tcp 10.1.0.1:8080 10.0.0.2:80\n}\n",
        )
        .unwrap();
        let nat = c.nat.as_ref().unwrap();
        assert_eq!(nat.outside, 1);
        assert_eq!(nat.pool, [Ipv4Addr::new(10, 1, 0, 1)], "defaults to the outside address");
        assert_eq!(nat.sessions, 64);
        assert_eq!(nat.udp_timeout, 30);
        assert_eq!(nat.tcp_established_timeout, 7440);
        assert_eq!(nat.filtering, NatFiltering::EndpointIndependent);
        assert_eq!(
            nat.forwards[0],
            ForwardConfig {
                proto: 6,
                outside: (Ipv4Addr::new(10, 1, 0, 1), 8080),
                inside: (Ipv4Addr::new(10, 0, 0, 2), 80),
                line: Line(9)
            }
        );
        assert_eq!(
            c.pipelines,
            [std::vec![StageKind::Router, StageKind::Nat], std::vec![StageKind::Nat, StageKind::Router]]
        );
        let e = errs("port lan address 10.0.0.1/24\nnat {\n  inside 10.0.0.0/24\n  outside wan\n  ports 9-2\n}\npipeline lan nat\n");
        assert!(e[0].contains("no port named `wan`"), "{e:?}");
        assert!(e[1].contains("bad port range `9-2`"), "{e:?}");
        let e = errs("port lan address 10.0.0.1/24\npipeline lan router nat\n");
        assert!(e[0].contains("no `nat { ... }` block"), "{e:?}");
    }

    #[test]
    fn services() {
        let c = parse(
            "port client address 10.1.0.1/24\nport servers address 10.2.0.1/24\n\
             service web {\n vip 10.1.0.1:80\n backend 10.2.0.11:8000 weight 2\n backend 10.2.0.12:8000\n check http /healthz\n mode dnat\n fall 3\n}\n\
             lb table-size 251\n",
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!((s.vip, s.port, s.proto, s.mode), (Ipv4Addr::new(10, 1, 0, 1), 80, 6, LbMode::Dnat));
        assert_eq!(s.backends[0].weight, 2);
        assert_eq!(s.backends[1].via_port, 1);
        assert_eq!(s.check, CheckKind::Http("/healthz".into()));
        assert_eq!((s.interval, s.timeout, s.rise, s.fall), (2_000_000, 1_000_000, 2, 3));
        assert_eq!(c.lb.table_size, 251);
        assert_eq!(c.pipelines[0], [StageKind::Lb, StageKind::Router]);
        let e = errs("port a address 10.1.0.1/24\nservice web {\n vip 10.1.0.1:80\n backend 10.9.0.1:80\n}\nlb table-size 1000\n");
        assert!(e[0].contains("backend 10.9.0.1 is on no port's subnet"), "{e:?}");
        assert!(e[1].contains("bad table-size `1000`"), "{e:?}");
    }

    #[test]
    fn mac_parse_and_format() {
        let m = parse_mac("52:54:00:AB:cd:0f").unwrap();
        assert_eq!(fmt_mac(&m).to_string(), "52:54:00:ab:cd:0f");
        assert!(parse_mac("52:54:00:ab:cd").is_none());
        assert!(parse_mac("52:54:00:ab:cd:0f:11").is_none());
        assert!(parse_mac("5:54:00:ab:cd:0f").is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn arbitrary_config_like_text_never_panics(lines in proptest::collection::vec(
            "(port|route|via|router|pipeline|icmp-rate|mtu|mac|address|\\{|\\}|;|#|lan|10\\.0\\.0\\.1/24|0\\.0\\.0\\.0/0|1500| |\t){0,8}", 0..10)) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
