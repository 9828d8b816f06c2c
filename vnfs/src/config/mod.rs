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
//! This module is the framework's part: the grammar ([`lexer`]), ports,
//! routes, wires, the management endpoint, ARP and pipelines. Every other
//! statement belongs to a feature: its folder's `config.rs` reads it and
//! the stage registry (`registry.rs`, which only the crate root and the
//! host tools use) names the feature's
//! [`StageDef`]. An instance of a stage has a name, so a config may hold
//! two NATs or a policer per port; `pipeline PORT NAME...` lists the
//! instances a port's packets pass.
//!
//! Every problem is reported with line and column, and parsing continues past
//! it so that one run shows all errors. No word is ignored: once every
//! parser has run, the first word of a statement that none of them read is
//! refused ([`lexer::refuse_unread`]), so parsers read only what they
//! understand and need not look for extra words.

use alloc::boxed::Box;
use alloc::collections::btree_map::{BTreeMap, Entry};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use ipnet::{Ipv4Net, Ipv6Net};

pub mod lexer;
#[cfg(test)]
mod tests;

pub use lexer::{key_values, ConfigError, Errors, Stmt, Token, Word, MAX_DEPTH, MAX_ERRORS, MAX_STATEMENTS};
use lexer::{parse_statements, refuse_unread};

use crate::stage::Stage;
use crate::MAX_PORTS;

/// Largest MTU a port may have: a full frame must fit one receive buffer
/// (mergeable receive buffers are not negotiated yet).
pub const MAX_MTU: u16 = 1500;
/// Smallest MTU an IPv4 link may have (RFC 791).
pub const MIN_MTU: u16 = 68;

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
    /// Its IPv6 addresses (`address 2001:db8::1/64`, repeatable), beside
    /// the link-local address every port derives from its MAC.
    pub address6: Vec<Ipv6Net>,
    pub mtu: u16,
    /// The reverse-path check on this port (`rpf strict|loose|off`); `None`
    /// only while parsing (the default is decided once the management
    /// port is known).
    pub rpf: Option<Rpf>,
    /// Line of the `port` statement, for errors found after parsing
    /// (e.g. a MAC that matches no NIC).
    pub line: Line,
    /// A NIC, a VLAN sub-port of one, or a tunnel.
    pub kind: PortKind,
    /// The routing table (VRF) the port is in: 0 is the default one, `i`
    /// is `Config::vrfs[i - 1]`.
    pub vrf: usize,
}

/// What carries a port's frames. NIC ports come first in
/// [`Config::ports`] (the kernel binds NICs to them in that order); VLAN
/// sub-ports and tunnels follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PortKind {
    #[default]
    Nic,
    /// `port NAME on TRUNK vlan VID`: tagged frames on another port.
    Vlan(crate::vlan::VlanPort),
    /// `tunnel NAME vxlan|geneve …`: frames inside UDP from a port's address.
    Tunnel(crate::tunnel::TunnelPort),
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
    /// The VRF whose table holds the route (`route … vrf NAME`); the port
    /// may be in another one (route leaking, explicit only).
    pub vrf: usize,
}

/// Where a static IPv6 route sends packets (`route PREFIX via ADDRESS
/// [port NAME]`: a link-local next hop names its port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route6Config {
    pub prefix: Ipv6Net,
    pub port: usize,
    pub via: Option<Ipv6Addr>,
    pub line: Line,
}

/// Router advertisements on a port (`ra PORT [prefix P]... [interval S]
/// [lifetime S] [managed] [other]`, RFC 4861 §6.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaConfig {
    pub port: usize,
    /// Prefixes advertised for on-link and SLAAC (default: the port's
    /// prefixes of length 64).
    pub prefixes: Vec<Ipv6Net>,
    /// MaxRtrAdvInterval in seconds (4..=1800; MinRtrAdvInterval is a third).
    pub interval: u32,
    /// Router lifetime in seconds (0..=9000; 0: not a default router).
    pub lifetime: u32,
    /// The M and O flags (addresses / other configuration by DHCPv6).
    pub managed: bool,
    pub other: bool,
    pub line: Line,
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

/// Neighbour (ARP) cache settings: `arp entries N timeout SECONDS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpConfig {
    /// Neighbour cache entries.
    pub entries: usize,
    /// Seconds a resolved neighbour stays valid.
    pub timeout: u32,
    pub line: Line,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig { entries: 1024, timeout: 300, line: Line(0) }
    }
}

/// Where a stage goes in the pipeline of a port that has no `pipeline`
/// statement: before routing, the routing step itself, or after it. Ties
/// go by rank, then by the registry's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    BeforeRouting(u8),
    Routing,
    AfterRouting(u8),
}

/// A feature's validated settings for one stage instance. The framework
/// knows it only through this trait: it compares instances across a
/// reload, asks for the memory their tables take, the addresses they
/// answer for and where they go in a default pipeline.
pub trait StageConfig: Any + fmt::Debug {
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` says the same (a reload then keeps the stage and
    /// its state). [`same_as`] implements it for a `PartialEq` type.
    fn same(&self, other: &dyn StageConfig) -> bool;
    /// Whether a reload from `old_config` (where this stage had the
    /// settings `old`) to `new_config` may keep the running stage and its
    /// state. By default: if its own settings are the same.
    fn reusable(&self, old: &dyn StageConfig, _old_config: &Config, _new_config: &Config) -> bool {
        self.same(old)
    }
    /// The line of the statement that made it, for messages.
    fn line(&self) -> u32;
    /// Bytes of the tables the stage allocates when it is built.
    fn table_bytes(&self, _config: &Config) -> usize {
        0
    }
    /// IPv6 addresses the stage answers for (IPv6 VIPs): the appliance
    /// answers neighbour solicitations for them, and the pipeline sees
    /// their traffic.
    fn addresses6(&self) -> Vec<Ipv6Addr> {
        Vec::new()
    }

    /// Addresses the stage answers for (a NAT pool, VIPs): the appliance
    /// answers ARP and ping for them, and stages see their traffic.
    fn addresses(&self) -> Vec<Ipv4Addr> {
        Vec::new()
    }
    /// Where the stage goes in `port`'s pipeline when the port has no
    /// `pipeline` statement; `None`: not there.
    fn placement(&self, _port: usize, _config: &Config) -> Option<Place> {
        None
    }
    /// Destinations a packet arriving on a port may not have, as it
    /// arrived (before any stage: what an earlier stage translates to,
    /// such as an LB's backends, is not refused), unless it is addressed
    /// to the appliance: (port, prefix, the drop reason). A NAT refuses
    /// its inside prefixes on its outside port.
    fn inbound_refused(&self, _config: &Config) -> Vec<(usize, Ipv4Net, crate::counters::DropReason)> {
        Vec::new()
    }
    /// Things that are allowed but probably not what the operator meant.
    fn warnings(&self, _config: &Config) -> Vec<(u32, String)> {
        Vec::new()
    }
}

/// [`StageConfig::same`] for a type that is `PartialEq`.
pub fn same_as<T: PartialEq + 'static>(this: &T, other: &dyn StageConfig) -> bool {
    other.as_any().downcast_ref::<T>().is_some_and(|o| o == this)
}

/// Reads a feature's statements into named instances.
pub type ParseFn = fn(&[&Stmt<'_>], &Config, &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)>;

/// What a stage's builder gets besides its own settings.
pub struct BuildContext<'a> {
    /// The instance's name (for its own reports).
    pub name: &'a str,
    pub config: &'a Config,
    /// Port `i`'s MAC.
    pub macs: &'a [[u8; 6]],
    /// The boot secret: hash keys are derived from it.
    pub seed: u64,
}

/// A feature, as the registry lists it: the statements it reads, how it
/// reads them into instances, and how it builds a stage from one.
pub struct StageDef {
    /// The kind of stage (`nat`), as messages say it.
    pub kind: &'static str,
    /// The top-level statements the feature reads.
    pub statements: &'static [&'static str],
    /// Reads all of the feature's statements (in text order; none if the
    /// text has none) into named instances. Ports and routes are known.
    pub parse: ParseFn,
    /// Builds the stage of one instance.
    pub build: fn(&dyn StageConfig, &BuildContext<'_>) -> Box<dyn Stage>,
}

impl fmt::Debug for StageDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)
    }
}

/// One named stage of a config.
#[derive(Clone, Debug)]
pub struct StageInstance {
    pub def: &'static StageDef,
    pub name: String,
    pub config: Rc<dyn StageConfig>,
}

impl PartialEq for StageInstance {
    fn eq(&self, o: &StageInstance) -> bool {
        core::ptr::eq(self.def, o.def) && self.name == o.name && self.config.same(&*o.config)
    }
}

impl Eq for StageInstance {}

impl StageInstance {
    /// The instance's settings as the feature's own type.
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.config.as_any().downcast_ref::<T>()
    }
}

/// A validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Port pairs joined by a wire: every frame in one goes out of the other
    /// unchanged (the null pipeline: the ceiling of the I/O path).
    pub wires: Vec<(usize, usize)>,
    pub management: Option<ManagementConfig>,
    pub ports: Vec<PortConfig>,
    pub routes: Vec<RouteConfig>,
    pub arp: ArpConfig,
    /// The stage instances, in registry order, then text order.
    pub stages: Vec<StageInstance>,
    /// Stages per input port, by port index: indices into `stages`.
    pub pipelines: Vec<Vec<usize>>,
    /// The features this config was read with: a reload reads the new
    /// text with the same ones.
    pub registry: Registry,
    /// Image options (`options offloads off`): what the kernel command
    /// line says too, for images whose command line is fixed (a disk
    /// image's GRUB, a libvirt domain).
    pub options: Options,
    /// Devices the image sets up before ports bind (`nic PCI vfs N`).
    pub nics: Vec<NicConfig>,
    /// Permanent neighbour entries (`neighbor IP mac MAC`).
    pub neighbors: Vec<StaticNeighbor>,
    /// Static IPv6 routes.
    pub routes6: Vec<Route6Config>,
    /// Ports that send router advertisements.
    pub ras: Vec<RaConfig>,
    /// Permanent IPv6 neighbour entries (`neighbor 2001:db8::2 mac MAC`).
    pub neighbors6: Vec<StaticNeighbor<Ipv6Addr>>,
    /// The VRFs besides the default one (`vrf NAME`), in text order.
    pub vrfs: Vec<String>,
}

/// `neighbor IP mac MAC`: a permanent ARP entry on the port whose subnet
/// holds IP (as `ip neigh add … nud permanent`): for next hops that do not
/// answer ARP (a traffic generator, a router with ARP turned off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNeighbor<A = Ipv4Addr> {
    pub ip: A,
    pub mac: [u8; 6],
    pub port: usize,
    pub line: Line,
}

/// Permanent neighbours a config may give (each takes a cache slot for good).
pub const MAX_STATIC_NEIGHBORS: usize = 1024;

/// `neighbor IP mac MAC [port NAME]` (the port when VRFs put IP's
/// subnet on several)
fn parse_neighbor(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    let form = "expected `neighbor IP mac MAC [port NAME]`";
    let (Some(ip_t), Some(key), Some(mac_t)) = (stmt.words.get(1), stmt.words.get(2), stmt.words.get(3)) else {
        errors.push(ConfigError::at(&kw, form));
        return;
    };
    let named = match (stmt.words.get(4), stmt.words.get(5)) {
        (None, _) => None,
        (Some(k), Some(n)) if k.text == "port" => match config.port_by_name(n.text) {
            Some(i) => Some(i),
            None => {
                errors.push(ConfigError::at(n, format!("no port named `{}`", n.text)));
                return;
            }
        },
        (Some(w), _) => {
            errors.push(ConfigError::at(w, format!("unexpected `{}`: {form}", w.text)));
            return;
        }
    };
    if key.text != "mac" {
        errors.push(ConfigError::at(key, form));
        return;
    }
    let Some(mac) = parse_mac(mac_t.text).filter(|m| m[0] & 1 == 0 && *m != [0; 6]) else {
        errors.push(ConfigError::at(mac_t, format!("`{}` is not a unicast MAC address", mac_t.text)));
        return;
    };
    if let Ok(ip) = ip_t.text.parse::<Ipv6Addr>() {
        // On a port's IPv6 prefix (not one of its addresses).
        let Some(port) = config.ports.iter().position(|p| p.address6.iter().any(|a| a.contains(&ip))) else {
            errors.push(ConfigError::at(ip_t, format!("neighbor {ip} is on no port's IPv6 prefix")));
            return;
        };
        if config.ports[port].address6.iter().any(|a| a.addr() == ip) {
            errors.push(ConfigError::at(
                ip_t,
                format!("neighbor {ip} is port `{}`'s own address", config.ports[port].name),
            ));
            return;
        }
        if config.neighbors.len() + config.neighbors6.len() >= MAX_STATIC_NEIGHBORS {
            errors.push(ConfigError::at(&kw, format!("too many `neighbor` entries: at most {MAX_STATIC_NEIGHBORS}")));
            return;
        }
        if let Some(other) = config.neighbors6.iter().find(|n| n.ip == ip) {
            errors.push(ConfigError::at(ip_t, format!("neighbor {ip} is already given on line {}", other.line)));
            return;
        }
        config.neighbors6.push(StaticNeighbor { ip, mac, port, line: Line(kw.line) });
        return;
    }
    let Ok(ip) = ip_t.text.parse::<Ipv4Addr>() else {
        errors.push(ConfigError::at(ip_t, format!("`{}` is not an IPv4 or IPv6 address", ip_t.text)));
        return;
    };
    let on = |p: &PortConfig| p.address.is_some_and(|a| a.contains(&ip));
    let port = match named {
        Some(i) if on(&config.ports[i]) => i,
        Some(i) => {
            errors.push(ConfigError::at(
                ip_t,
                format!("neighbor {ip} is not on port `{}`'s subnet", config.ports[i].name),
            ));
            return;
        }
        None => {
            let mut holders = config.ports.iter().enumerate().filter(|(_, p)| on(p)).map(|(i, _)| i);
            match (holders.next(), holders.next()) {
                (Some(i), None) => i,
                (Some(_), Some(_)) => {
                    errors.push(ConfigError::at(
                        ip_t,
                        format!("neighbor {ip} is on the subnet of several ports (VRFs): add `port NAME`"),
                    ));
                    return;
                }
                (None, _) => {
                    errors.push(ConfigError::at(ip_t, format!("neighbor {ip} is on no port's subnet")));
                    return;
                }
            }
        }
    };
    let net = config.ports[port].address.expect("the port that holds it has an address");
    if ip == net.addr() || (net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast())) {
        errors.push(ConfigError::at(
            ip_t,
            format!("neighbor {ip} is port `{}`'s own, network or broadcast address", config.ports[port].name),
        ));
        return;
    }
    if config.neighbors.len() + config.neighbors6.len() >= MAX_STATIC_NEIGHBORS {
        errors.push(ConfigError::at(&kw, format!("too many `neighbor` entries: at most {MAX_STATIC_NEIGHBORS}")));
        return;
    }
    if let Some(other) = config.neighbors.iter().find(|n| n.ip == ip && n.port == port) {
        errors.push(ConfigError::at(ip_t, format!("neighbor {ip} is already given on line {}", other.line)));
        return;
    }
    config.neighbors.push(StaticNeighbor { ip, mac, port, line: Line(kw.line) });
}

/// A PCI address, `0000:00:08.0` (domain 0 only) or `00:08.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddr {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0000:{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

impl PciAddr {
    pub fn parse(s: &str) -> Option<PciAddr> {
        let s = match s.split_once(':') {
            Some((dom, rest)) if rest.contains(':') => {
                (dom.len() == 4 && u16::from_str_radix(dom, 16).ok()? == 0).then_some(rest)?
            }
            _ => s,
        };
        let (bus, rest) = s.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let ok = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(bus, 2) || !ok(dev, 2) || !ok(func, 1) {
            return None;
        }
        let (bus, device, function) =
            (u8::from_str_radix(bus, 16).ok()?, u8::from_str_radix(dev, 16).ok()?, u8::from_str_radix(func, 16).ok()?);
        (device < 32 && function < 8).then_some(PciAddr { bus, device, function })
    }
}

/// The most VFs sluice enables on one 82576 (its eighth pool is the PF's).
pub const MAX_VFS: u8 = 7;

/// `nic PCI [vfs N] [mac M] [mailbox on|off]`: how the image sets up one
/// PCI function. `vfs`: enable N SR-IOV virtual functions on this physical
/// function (the 82576), which then become NICs ports bind to. `mac`: the
/// MAC this function uses (a VF asks its PF for it). `mailbox off`: enable
/// the VFs but leave the PF–VF mailbox unanswered (a host whose PF driver
/// is gone; for testing VF drivers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    pub pci: PciAddr,
    pub vfs: u8,
    pub mac: Option<[u8; 6]>,
    pub mailbox: bool,
    pub line: Line,
}

/// `nic PCI ...`
fn parse_nic(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    let Some(addr) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`nic` needs a PCI address, e.g. `nic 0000:00:08.0 vfs 2`"));
        return;
    };
    let Some(pci) = PciAddr::parse(addr.text) else {
        errors.push(ConfigError::at(
            addr,
            format!("`{}` is not a PCI address: expected DDDD:BB:SS.F or BB:SS.F (hex), e.g. 0000:00:08.0", addr.text),
        ));
        return;
    };
    if let Some(other) = config.nics.iter().find(|n| n.pci == pci) {
        errors.push(ConfigError::at(addr, format!("nic {pci} is already set up on line {}", other.line)));
        return;
    }
    let mut nic = NicConfig { pci, vfs: 0, mac: None, mailbox: true, line: Line(kw.line) };
    for (key, value) in key_values(stmt, 2, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        match key.text {
            "vfs" => match value.text.parse::<u8>() {
                Ok(n) if (1..=MAX_VFS).contains(&n) => nic.vfs = n,
                _ => errors.push(ConfigError::at(
                    &value,
                    format!("`vfs {}`: expected 1 to {MAX_VFS} (the 82576 has 8 pools and keeps one)", value.text),
                )),
            },
            "mac" => match parse_mac(value.text) {
                Some(m) if m[0] & 1 == 0 && m != [0; 6] => nic.mac = Some(m),
                _ => errors.push(ConfigError::at(&value, format!("`{}` is not a unicast MAC address", value.text))),
            },
            "mailbox" => match value.text {
                "on" => nic.mailbox = true,
                "off" => nic.mailbox = false,
                _ => errors.push(ConfigError::at(&value, "expected `mailbox on` or `mailbox off`")),
            },
            other => errors.push(ConfigError::at(
                &key,
                format!("unknown nic setting `{other}`: expected `vfs`, `mac` or `mailbox`"),
            )),
        }
    }
    if !nic.mailbox && nic.vfs == 0 {
        errors.push(ConfigError::at(&kw, "`mailbox off` is a setting of a PF's VFs: give `vfs N` too"));
    }
    config.nics.push(nic);
}

/// `options offloads on|off` (more to come: the same words as the kernel
/// command line's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// NICs may negotiate checksum offload and segmentation (default on).
    pub offloads: bool,
    pub line: Line,
}

impl Default for Options {
    fn default() -> Self {
        Options { offloads: true, line: Line(0) }
    }
}

/// The stage definitions a config was read with (equal whatever they are:
/// configs compare by meaning).
#[derive(Clone, Copy, Debug, Default)]
pub struct Registry(pub &'static [&'static StageDef]);

impl PartialEq for Registry {
    fn eq(&self, _: &Registry) -> bool {
        true
    }
}

impl Eq for Registry {}

impl Config {
    pub fn port_by_name(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// How many ports are NICs (they come first).
    pub fn nic_count(&self) -> usize {
        self.ports.iter().take_while(|p| p.kind == PortKind::Nic).count()
    }

    /// The name of VRF `i` (`default` for 0).
    pub fn vrf_index(&self, name: &str) -> Option<usize> {
        if name == "default" {
            return Some(0);
        }
        self.vrfs.iter().position(|v| v == name).map(|i| i + 1)
    }

    pub fn vrf_name(&self, i: usize) -> &str {
        i.checked_sub(1).and_then(|i| self.vrfs.get(i)).map_or("default", |s| s.as_str())
    }

    /// Number of routing tables (the default one and every `vrf`).
    pub fn vrf_count(&self) -> usize {
        1 + self.vrfs.len()
    }

    pub fn stage_by_name(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == name)
    }

    /// The settings of the first instance of type `T` (tests, tools).
    pub fn first<T: 'static>(&self) -> Option<&T> {
        self.stages.iter().find_map(|s| s.settings::<T>())
    }

    /// The names of the stages port `port` runs, in order.
    pub fn pipeline_names(&self, port: usize) -> Vec<&str> {
        self.pipelines[port].iter().map(|&i| self.stages[i].name.as_str()).collect()
    }

    /// Bytes of the fixed-size tables this config asks for (every stage's
    /// and the neighbour cache), all allocated at start: what the
    /// appliance needs beyond its packet buffers.
    pub fn table_bytes(&self) -> usize {
        self.stages.iter().map(|s| s.config.table_bytes(self)).sum::<usize>() + self.neighbor_table_bytes()
    }

    /// Bytes of the egress's neighbour caches (IPv4, and IPv6 when a port
    /// has IPv6 addresses: `arp entries` sizes both).
    pub fn neighbor_table_bytes(&self) -> usize {
        use crate::neighbor::NeighborCache;
        NeighborCache::<Ipv4Addr>::memory_for(self.arp.entries)
            + NeighborCache::<Ipv6Addr>::memory_for(self.neighbor6_entries())
    }

    /// Entries of the IPv6 neighbour cache.
    pub fn neighbor6_entries(&self) -> usize {
        if self.has_ipv6() {
            self.arp.entries
        } else {
            0
        }
    }

    /// Whether any port has an IPv6 address (else IPv6 is dropped at
    /// ingress as `ipv6_unsupported`, as it was before).
    pub fn has_ipv6(&self) -> bool {
        self.ports.iter().any(|p| !p.address6.is_empty())
    }

    /// Things that are allowed but probably not what the operator meant.
    pub fn warnings(&self) -> Vec<(u32, String)> {
        self.stages.iter().flat_map(|s| s.config.warnings(self)).collect()
    }

    /// Every address of the appliance: its ports' first (the order host
    /// stacks take them in), then those its stages answer for.
    pub fn local_addresses(&self) -> Vec<Ipv4Addr> {
        let mut local: Vec<Ipv4Addr> = self.ports.iter().filter_map(|p| p.ip()).collect();
        for s in &self.stages {
            for a in s.config.addresses() {
                if !local.contains(&a) {
                    local.push(a);
                }
            }
        }
        local
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

/// The statements the framework reads itself.
const FRAMEWORK_STATEMENTS: &[&str] =
    &["port", "tunnel", "vrf", "route", "management", "wire", "pipeline", "arp", "options", "nic", "neighbor", "ra"];

/// NICs one appliance drives.
pub const MAX_NICS: usize = 8;

/// VRFs a config may define besides the default one.
pub const MAX_VRFS: usize = 15;

/// Parses and validates a config with the features in `defs` (the
/// registry). On failure returns every error found, in line order.
pub fn parse_with(text: &str, defs: &'static [&'static StageDef]) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let mut top: Vec<&str> = FRAMEWORK_STATEMENTS.to_vec();
    top.extend(defs.iter().flat_map(|d| d.statements.iter().copied()));
    let stmts = parse_statements(text, &top, &mut errors);
    let mut config = Config { registry: Registry(defs), ..Config::default() };
    let mut later: Vec<&Stmt<'_>> = Vec::new();
    // VRFs first: ports and routes name them wherever they stand.
    for stmt in stmts.iter().filter(|s| s.words[0].text == "vrf") {
        parse_vrf(stmt, &mut config, &mut errors);
    }
    for stmt in &stmts {
        let kw = *stmt.words[0];
        match kw.text {
            "port" | "tunnel" if config.ports.len() >= MAX_PORTS => {
                errors.push(ConfigError::at(&kw, format!("too many ports: sluice drives at most {MAX_PORTS}")))
            }
            "port" | "tunnel" => {
                let port = if kw.text == "port" {
                    parse_port(stmt, &config, &mut errors)
                } else {
                    crate::tunnel::config::parse(stmt, &config, &mut errors)
                };
                if let Some(port) = port {
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
                        config.ports.iter().find(|p| {
                            p.vrf == port.vrf
                                && p.address.is_some_and(|b| b.contains(&a.network()) || a.contains(&b.network()))
                        })
                    }) {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!(
                                "port `{}`: {} overlaps {} of port `{}` (line {}); each port needs its own subnet (or another `vrf`)",
                                port.name,
                                port.address.map(|a| a.trunc()).unwrap_or_default(),
                                other.address.map(|a| a.trunc()).unwrap_or_default(),
                                other.name,
                                other.line
                            ),
                        ));
                    } else if let Some((a, other)) = port.address6.iter().find_map(|a| {
                        config
                            .ports
                            .iter()
                            .find(|p| p.address6.iter().any(|b| b.contains(&a.network()) || a.contains(&b.network())))
                            .map(|o| (a, o))
                    }) {
                        errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!(
                                "port `{}`: {} overlaps a prefix of port `{}` (line {}); each port needs its own subnet",
                                port.name,
                                a.trunc(),
                                other.name,
                                other.line
                            ),
                        ));
                    } else {
                        config.ports.push(port);
                    }
                }
            }
            "vrf" => {}
            _ => later.push(stmt),
        }
    }
    order_ports(&mut config, &mut errors);
    if config.nic_count() > MAX_NICS {
        let p = &config.ports[MAX_NICS];
        errors.push(ConfigError {
            line: p.line.0,
            column: 1,
            message: format!("too many NIC ports: sluice drives at most {MAX_NICS} NICs (VLAN sub-ports and tunnels add ports on them)"),
        });
    }
    // Everything else names ports, so it is read once all ports are known:
    // first the framework's statements, then each feature's.
    let mut route_lines: BTreeMap<(usize, Ipv4Net), u32> = BTreeMap::new();
    let mut route6_lines: BTreeMap<Ipv6Net, u32> = BTreeMap::new();
    let mut pipeline_stmts = Vec::new();
    for stmt in &later {
        match stmt.words[0].text {
            "route" if stmt.words.get(1).is_some_and(|w| w.text.contains(':')) => {
                if let Some(r) = parse_route6(stmt, &config, &mut errors) {
                    match route6_lines.entry(r.prefix) {
                        Entry::Occupied(o) => errors.push(ConfigError::at(
                            &stmt.words[1],
                            format!("route {} is already given on line {}", r.prefix, o.get()),
                        )),
                        Entry::Vacant(v) => {
                            v.insert(r.line.0);
                            config.routes6.push(r);
                        }
                    }
                }
            }
            "route" => {
                if let Some(r) = parse_route(stmt, &config, &mut errors) {
                    // A map, not a scan: configs with a million routes are fine.
                    match route_lines.entry((r.vrf, r.prefix)) {
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
            "pipeline" => pipeline_stmts.push(*stmt),
            "wire" => parse_wire(stmt, &mut config, &mut errors),
            "management" => parse_management(stmt, &mut config, &mut errors),
            "arp" => parse_arp(stmt, &mut config, &mut errors),
            "options" => parse_options(stmt, &mut config, &mut errors),
            "nic" => parse_nic(stmt, &mut config, &mut errors),
            "neighbor" => parse_neighbor(stmt, &mut config, &mut errors),
            "ra" => parse_ra(stmt, &mut config, &mut errors),
            _ => {}
        }
    }
    crate::tunnel::config::resolve(&mut config, &mut errors);
    // Each cache keeps three quarters of its slots for what it learns.
    for (n, line) in [
        (config.neighbors.len(), config.neighbors.first().map(|n| n.line.0)),
        (config.neighbors6.len(), config.neighbors6.first().map(|n| n.line.0)),
    ] {
        if n > config.arp.entries / 4 {
            errors.push(ConfigError {
                line: line.unwrap_or(1),
                column: 1,
                message: format!(
                    "{n} permanent neighbours need `arp entries` of at least {} (it is {})",
                    n * 4,
                    config.arp.entries
                ),
            });
        }
    }
    // The names a stage whose statements had errors might have had (its
    // kind, the word after its keyword): a pipeline naming one is not told
    // "no stage named" as well, the stage's own error being the cause.
    let mut failed: Vec<&str> = Vec::new();
    for def in defs {
        let mine: Vec<&Stmt<'_>> =
            later.iter().copied().filter(|s| def.statements.contains(&s.words[0].text)).collect();
        let before = errors.len();
        let parsed = (def.parse)(&mine, &config, &mut errors);
        if errors.len() > before {
            failed.push(def.kind);
            failed.extend(mine.iter().filter_map(|s| s.words.get(1)).map(|w| w.text).filter(|t| is_name(t)));
        }
        for (name, settings) in parsed {
            if let Some(other) = config.stages.iter().find(|s| s.name == name) {
                errors.push(ConfigError {
                    line: settings.line(),
                    column: 1,
                    message: format!(
                        "a stage named `{name}` is already defined ({} on line {}): give this {} another name",
                        other.def.kind,
                        other.config.line(),
                        def.kind
                    ),
                });
            } else {
                config.stages.push(StageInstance { def, name, config: settings });
            }
        }
    }
    let mut pipeline_lines: Vec<Option<u32>> = config.ports.iter().map(|_| None).collect();
    config.pipelines = config.ports.iter().map(|_| Vec::new()).collect();
    for stmt in pipeline_stmts {
        parse_pipeline(stmt, &mut config, &mut pipeline_lines, &failed, &mut errors);
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
        let into_mgmt = config.routes.iter().filter(|r| r.port == m.port).map(|r| (r.line.0, r.prefix.into()));
        let into_mgmt6 = config.routes6.iter().filter(|r| r.port == m.port).map(|r| (r.line.0, r.prefix.into()));
        for (line, prefix) in into_mgmt.chain(into_mgmt6) {
            let prefix: ipnet::IpNet = prefix;
            errors.push(ConfigError {
                line,
                column: 1,
                message: format!("route {prefix} leads into the management port `{name}`: nothing is forwarded there"),
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
    // A port without a `pipeline` statement runs the stages that place
    // themselves on it, ordered by place, then by registry order.
    for (port, line) in pipeline_lines.iter().enumerate() {
        if line.is_some() {
            continue;
        }
        let mut placed: Vec<(Place, usize)> = config
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.config.placement(port, &config)?, i)))
            .collect();
        placed.sort();
        config.pipelines[port] = placed.into_iter().map(|(_, i)| i).collect();
    }
    // Last, once every parser has read what it understands.
    refuse_unread(&stmts, &mut errors);
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

/// `wire PORT PORT`
fn parse_wire(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    match (stmt.words.get(1), stmt.words.get(2)) {
        (Some(a), Some(b)) => match (config.port_by_name(a.text), config.port_by_name(b.text)) {
            (Some(x), Some(y)) if x == y => errors.push(ConfigError::at(b, "a port cannot be wired to itself")),
            (Some(x), Some(y)) if config.ports[x].kind != PortKind::Nic || config.ports[y].kind != PortKind::Nic => {
                errors.push(ConfigError::at(&kw, "a wire joins two NIC ports (not VLAN sub-ports or tunnels)"))
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

/// `management PORT [listen TCPPORT] [token-file PATH] [metrics open|token]`
fn parse_management(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    if let Some(m) = &config.management {
        errors.push(ConfigError::at(&kw, format!("`management` is already given on line {}", m.line)));
        return;
    }
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`management` needs a port: `management mgmt`"));
        return;
    };
    let mut m = ManagementConfig { port: 0, listen: 80, token_file: None, metrics_open: false, line: Line(kw.line) };
    for (key, value) in key_values(stmt, 2, errors) {
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
            format!("management port `{}` has no address: give it one (`address A.B.C.D/LEN`)", name.text),
        )),
        Some(port) => config.management = Some(ManagementConfig { port, ..m }),
        None => errors.push(ConfigError::at(name, format!("no port named `{}`", name.text))),
    }
}

/// `options offloads on|off`
fn parse_options(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    if config.options.line.0 != 0 {
        errors.push(ConfigError::at(&kw, format!("`options` is already given on line {}", config.options.line)));
        return;
    }
    config.options.line = Line(kw.line);
    for (key, value) in key_values(stmt, 1, errors) {
        match (key.text, value.map(|v| v.text)) {
            ("offloads", Some("on")) => config.options.offloads = true,
            ("offloads", Some("off")) => config.options.offloads = false,
            ("offloads", _) => errors.push(ConfigError::at(&key, "expected `offloads on` or `offloads off`")),
            (other, _) => errors.push(ConfigError::at(&key, format!("unknown option `{other}`: expected `offloads`"))),
        }
    }
}

/// `arp entries N timeout SECONDS`
fn parse_arp(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    if config.arp.line.0 != 0 {
        errors.push(ConfigError::at(&kw, format!("`arp` is already given on line {}", config.arp.line)));
        return;
    }
    config.arp.line = Line(kw.line);
    for (key, value) in key_values(stmt, 1, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        let (min, max): (u64, u64) = match key.text {
            "timeout" => (1, 86_400),
            "entries" => (16, 1 << 20),
            other => {
                errors.push(ConfigError::at(
                    &key,
                    format!("unknown arp setting `{other}`: expected `entries` or `timeout`"),
                ));
                continue;
            }
        };
        match value.text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => match key.text {
                "timeout" => config.arp.timeout = v as u32,
                _ => config.arp.entries = v as usize,
            },
            _ => errors.push(ConfigError::at(
                &value,
                format!("bad {} `{}`: expected a number from {min} to {max}", key.text, value.text),
            )),
        }
    }
}

/// `pipeline PORT STAGE...`: the named stage instances, in order.
/// `failed`: names of stages that failed to parse (their errors say why).
fn parse_pipeline(
    stmt: &Stmt<'_>,
    config: &mut Config,
    seen: &mut [Option<u32>],
    failed: &[&str],
    errors: &mut Errors,
) {
    let kw = *stmt.words[0];
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
        match config.stage_by_name(w.text) {
            Some(k) if stages.contains(&k) => {
                errors.push(ConfigError::at(w, format!("stage `{}` appears twice in this pipeline", w.text)))
            }
            Some(k) => stages.push(k),
            None if failed.contains(&w.text) => {}
            None => {
                let known: Vec<&str> = config.stages.iter().map(|s| s.name.as_str()).collect();
                errors.push_at(w, || {
                    format!(
                        "no stage named `{}`: this config defines {}",
                        w.text,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )
                })
            }
        }
    }
    config.pipelines[i] = stages;
}

/// `port NAME...` in a stage's block: adds each named port to `ports` once.
/// The management port is refused (it forwards nothing), an unknown name
/// too, each at its word.
pub fn stage_ports(args: &[Word<'_>], config: &Config, kind: &str, ports: &mut Vec<usize>, errors: &mut Errors) {
    for t in args {
        match config.port_by_name(t.text) {
            Some(i) if config.management.as_ref().is_some_and(|m| m.port == i) => errors.push(ConfigError::at(
                t,
                format!("`{}` is the management port: it forwards nothing, so no {kind} runs there", t.text),
            )),
            Some(i) if !ports.contains(&i) => ports.push(i),
            Some(_) => {}
            None => errors.push(ConfigError::at(t, format!("no port named `{}`", t.text))),
        }
    }
}

/// The common part of a [`StageConfig`] impl for a settings type with a
/// `line: Line` field and `PartialEq`: `as_any`, `same` and `line`.
#[macro_export]
macro_rules! stage_config_identity {
    () => {
        fn as_any(&self) -> &dyn core::any::Any {
            self
        }

        fn same(&self, other: &dyn $crate::config::StageConfig) -> bool {
            $crate::config::same_as(self, other)
        }

        fn line(&self) -> u32 {
            self.line.0
        }
    };
}

/// `ADDRESS:PORT` (port not 0), or an error at `t`.
pub fn endpoint(t: &Token<'_>, errors: &mut Errors) -> Option<(Ipv4Addr, u16)> {
    let parsed = t
        .text
        .split_once(':')
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok().filter(|p| *p != 0)?)));
    if parsed.is_none() {
        errors.push(ConfigError::at(t, format!("bad endpoint `{}`: expected ADDRESS:PORT", t.text)));
    }
    parsed
}
/// A port named `name` with every setting at its default (for `port` and
/// `tunnel` statements).
pub fn new_port(stmt: &Stmt<'_>, name: &Token<'_>, errors: &mut Errors) -> PortConfig {
    if !is_name(name.text) {
        errors.push(ConfigError::at(
            name,
            format!("bad port name `{}`: use 1 to 15 letters, digits, `-` or `_`, starting with a letter", name.text),
        ));
    }
    PortConfig {
        name: name.text.to_string(),
        mac: None,
        address: None,
        address6: Vec::new(),
        mtu: 1500,
        rpf: None,
        line: Line(stmt.words[0].line),
        kind: PortKind::Nic,
        vrf: 0,
    }
}

/// Reads one setting every kind of port has (`address` IPv4, `mac`,
/// `mtu`, `rpf`, `vrf`); `false` if `key` is none of them.
pub fn port_key(
    key: &Token<'_>,
    value: &Token<'_>,
    port: &mut PortConfig,
    config: &Config,
    errors: &mut Errors,
) -> bool {
    match key.text {
        "mac" => match parse_mac(value.text) {
            Some(m) if m[0] & 1 == 1 => errors.push(ConfigError::at(
                value,
                format!("`{}` is a multicast MAC; a port needs a unicast MAC", value.text),
            )),
            Some(m) => port.mac = Some(m),
            None => errors.push(ConfigError::at(
                value,
                format!("bad MAC `{}`: expected six hex bytes like 52:54:00:12:34:56", value.text),
            )),
        },
        "address" => match value.text.parse::<Ipv4Net>() {
            Ok(net) if usable_unicast(net.addr()).is_err() => errors.push(ConfigError::at(
                value,
                format!("port address {} {}", net.addr(), usable_unicast(net.addr()).unwrap_err()),
            )),
            // A /31 has no network or broadcast address (RFC 3021).
            Ok(net) if net.prefix_len() >= 31 || net.addr() != net.network() && net.addr() != net.broadcast() => {
                port.address = Some(net)
            }
            Ok(_) => errors.push(ConfigError::at(
                value,
                format!(
                    "`{}` is the network or broadcast address of its prefix; give the port a host address",
                    value.text
                ),
            )),
            Err(_) => errors.push(ConfigError::at(
                value,
                format!("bad address `{}`: expected A.B.C.D/LEN such as 10.0.0.1/24", value.text),
            )),
        },
        "mtu" => match value.text.parse::<u16>() {
            Ok(m) if (MIN_MTU..=MAX_MTU).contains(&m) => port.mtu = m,
            _ => errors.push(ConfigError::at(
                value,
                format!("bad MTU `{}`: expected a number from {MIN_MTU} to {MAX_MTU}", value.text),
            )),
        },
        "rpf" => match value.text {
            "strict" => port.rpf = Some(Rpf::Strict),
            "loose" => port.rpf = Some(Rpf::Loose),
            "off" => port.rpf = Some(Rpf::Off),
            other => {
                errors.push(ConfigError::at(value, format!("unknown rpf `{other}`: expected strict, loose or off")))
            }
        },
        "vrf" => match config.vrf_index(value.text) {
            Some(v) => port.vrf = v,
            None => errors.push(ConfigError::at(
                value,
                format!("no VRF named `{}`: declare it with `vrf {}`", value.text, value.text),
            )),
        },
        _ => return false,
    }
    true
}

fn parse_port(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<PortConfig> {
    let kw = *stmt.words[0];
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "`port` needs a name: `port NAME address A.B.C.D/LEN`"));
        return None;
    };
    let before = errors.len();
    let mut port = new_port(stmt, name, errors);
    let mut vlan = crate::vlan::config::Pending::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in key_values(stmt, 2, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        if key.text == "address" && value.text.contains(':') {
            match parse_address6(value.text) {
                Ok(_) if port.address6.len() >= MAX_ADDRESSES6 => errors.push(ConfigError::at(
                    &value,
                    format!("port `{}` has more than {MAX_ADDRESSES6} IPv6 addresses", port.name),
                )),
                Ok(net) if port.address6.iter().any(|a| a.trunc() == net.trunc()) => errors.push(ConfigError::at(
                    &value,
                    format!("port `{}` has {} twice: one address per prefix", port.name, net.trunc()),
                )),
                Ok(net) => port.address6.push(net),
                Err(why) => errors.push(ConfigError::at(&value, format!("bad IPv6 address `{}`: {why}", value.text))),
            }
            continue;
        }
        if seen.contains(&key.text) {
            let also = if key.text == "address" { " (one IPv4 address; IPv6 addresses may repeat)" } else { "" };
            errors.push(ConfigError::at(&key, format!("`{}` is given twice for port `{}`{also}", key.text, port.name)));
            continue;
        }
        seen.push(key.text);
        if !port_key(&key, &value, &mut port, config, errors)
            && !crate::vlan::config::parse_key(&key, &value, &mut vlan, errors)
        {
            errors.push(ConfigError::at(
                &key,
                format!(
                    "unknown port setting `{}`: expected `address`, `mac`, `mtu`, `rpf`, `vrf`, or `on`, `vlan`, `outer-vlan`, `priority` for a VLAN sub-port",
                    key.text
                ),
            ));
        }
    }
    if let Some(v) = crate::vlan::config::finish(&kw, &port.name, vlan, errors) {
        if port.mac.is_some() {
            errors.push(ConfigError::at(
                &kw,
                format!("port `{}` is a VLAN sub-port: it has its trunk's MAC (no `mac`)", port.name),
            ));
        }
        port.kind = PortKind::Vlan(v);
    }
    if !port.address6.is_empty() && port.mtu < 1280 {
        errors.push(ConfigError::at(
            &kw,
            format!(
                "port `{}` has IPv6 addresses and MTU {}: IPv6 needs at least 1280 (RFC 8200 §5)",
                port.name, port.mtu
            ),
        ));
    }
    if !port.address6.is_empty() && port.vrf != 0 {
        errors.push(ConfigError::at(
            &kw,
            format!("port `{}`: IPv6 is routed in the default VRF only (for now)", port.name),
        ));
    }
    (errors.len() == before).then_some(port)
}

/// `vrf NAME`: a routing table of its own.
fn parse_vrf(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, "expected `vrf NAME`"));
        return;
    };
    if !is_name(name.text) || name.text == "default" {
        errors.push(ConfigError::at(
            name,
            format!("bad VRF name `{}`: 1 to 15 letters, digits, `-` or `_`, not `default`", name.text),
        ));
    } else if config.vrfs.iter().any(|v| v == name.text) {
        errors.push(ConfigError::at(name, format!("vrf `{}` is defined twice", name.text)));
    } else if config.vrfs.len() >= MAX_VRFS {
        errors.push(ConfigError::at(name, format!("too many VRFs: at most {MAX_VRFS} besides the default one")));
    } else {
        config.vrfs.push(name.text.to_string());
    }
}

/// Puts NIC ports first (the kernel binds NICs in that order), VLAN
/// sub-ports and tunnels after them in text order, and checks what a
/// sub-port needs of its trunk.
fn order_ports(config: &mut Config, errors: &mut Errors) {
    let (mut nics, virt): (Vec<PortConfig>, Vec<PortConfig>) =
        core::mem::take(&mut config.ports).into_iter().partition(|p| p.kind == PortKind::Nic);
    nics.extend(virt);
    config.ports = nics;
    for i in 0..config.ports.len() {
        let PortKind::Vlan(v) = &config.ports[i].kind else { continue };
        let p = &config.ports[i];
        let at = |message: String| ConfigError { line: p.line.0, column: 1, message };
        let Some(parent) = config.port_by_name(&v.parent_name) else {
            errors.push(at(format!("port `{}`: no port named `{}` to be on", p.name, v.parent_name)));
            continue;
        };
        let trunk = &config.ports[parent];
        if trunk.kind != PortKind::Nic {
            errors.push(at(format!(
                "port `{}`: `{}` is not a NIC port; VLAN sub-ports sit on NIC ports",
                p.name, trunk.name
            )));
            continue;
        }
        if p.mtu > trunk.mtu {
            errors.push(at(format!(
                "port `{}`: MTU {} is larger than its trunk `{}`'s {}",
                p.name, p.mtu, trunk.name, trunk.mtu
            )));
        }
        if let Some(other) = config.ports[..i].iter().find(|q| match &q.kind {
            PortKind::Vlan(w) => w.parent_name == v.parent_name && w.vid == v.vid && w.outer == v.outer,
            _ => false,
        }) {
            errors.push(at(format!(
                "port `{}`: VLAN {} on `{}` is already port `{}` (line {})",
                p.name, v.vid, trunk.name, other.name, other.line
            )));
        }
        if let PortKind::Vlan(v) = &mut config.ports[i].kind {
            v.parent = parent;
        }
    }
}

/// `route PREFIX via ADDRESS [port NAME] [vrf NAME]` or `route PREFIX
/// port NAME [vrf NAME]`. The route goes into the VRF's table (default:
/// the default VRF); a next hop is looked for on that VRF's ports unless
/// `port` names one (in any VRF: that is how routes leak between VRFs).
fn parse_route(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<RouteConfig> {
    let kw = *stmt.words[0];
    const FORM: &str =
        "expected `route PREFIX via ADDRESS [port NAME] [vrf NAME]` or `route PREFIX port NAME [vrf NAME]`";
    let (Some(prefix), Some(kind), Some(target)) = (stmt.words.get(1), stmt.words.get(2), stmt.words.get(3)) else {
        errors.push(ConfigError::at(&kw, format!("incomplete route: {FORM}")));
        return None;
    };
    let mut vrf = 0;
    let mut via_port: Option<usize> = None;
    let mut rest = stmt.words.get(4..).unwrap_or(&[]);
    while let Some((k, tail)) = rest.split_first() {
        let Some(v) = tail.first() else {
            errors.push(ConfigError::at(k, format!("`{}` needs a value: {FORM}", k.text)));
            return None;
        };
        match k.text {
            "vrf" => match config.vrf_index(v.text) {
                Some(i) => vrf = i,
                None => {
                    errors.push(ConfigError::at(v, format!("no VRF named `{}`", v.text)));
                    return None;
                }
            },
            "port" if kind.text == "via" => match config.port_by_name(v.text) {
                Some(i) => via_port = Some(i),
                None => {
                    errors.push(ConfigError::at(v, format!("no port named `{}`", v.text)));
                    return None;
                }
            },
            _ => {
                errors.push(ConfigError::at(k, format!("unexpected `{}`: {FORM}", k.text)));
                return None;
            }
        }
        rest = &tail[1..];
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
            let on = |p: &PortConfig| p.address.is_some_and(|a| a.contains(&gw) && a.addr() != gw);
            let on_link = match via_port {
                Some(i) => Some(i).filter(|i| on(&config.ports[*i])),
                None => config.ports.iter().position(|p| p.vrf == vrf && on(p)),
            };
            match on_link {
                Some(port) => Some(RouteConfig { prefix: net, port, via: Some(gw), line: Line(kw.line), vrf }),
                None if via_port.is_some() => {
                    errors.push(ConfigError::at(target, format!("next hop {gw} is not on the subnet of that port")));
                    None
                }
                None => {
                    let in_vrf = if config.vrfs.is_empty() {
                        String::new()
                    } else {
                        format!(" in VRF {}", config.vrf_name(vrf))
                    };
                    errors.push(ConfigError::at(
                        target,
                        format!("next hop {gw} is not on the subnet of any port{in_vrf}: give a port an address on its link"),
                    ));
                    None
                }
            }
        }
        "port" => match config.port_by_name(target.text) {
            Some(port) => Some(RouteConfig { prefix: net, port, via: None, line: Line(kw.line), vrf }),
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

/// IPv6 addresses a port may have besides its link-local one.
pub const MAX_ADDRESSES6: usize = 4;

/// A port's IPv6 address with its prefix: global or unique-local unicast,
/// not the subnet-router anycast address of its prefix (RFC 4291 §2.6.1).
pub fn parse_address6(s: &str) -> Result<Ipv6Net, String> {
    let net: Ipv6Net = s.parse().map_err(|_| "expected ADDRESS/LEN such as 2001:db8:0:1::1/64".to_string())?;
    usable_unicast6(net.addr()).map_err(|e| format!("{} {e}", net.addr()))?;
    if net.prefix_len() < 127 && net.addr() == net.network() {
        return Err(format!(
            "{} is the subnet-router anycast address of {}; give the port a host address",
            net.addr(),
            net.trunc()
        ));
    }
    Ok(net)
}

/// Why `a` cannot be an IPv6 address the appliance owns or routes to as a
/// next hop's global address: unspecified, loopback, multicast, link-local
/// (each port derives its own), or IPv4-mapped.
pub fn usable_unicast6(a: Ipv6Addr) -> Result<(), &'static str> {
    let s = a.segments();
    if a.is_unspecified() {
        Err("is the unspecified address")
    } else if a.is_loopback() {
        Err("is the loopback address")
    } else if a.is_multicast() {
        Err("is a multicast address")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Err("is link-local: each port derives its own from its MAC")
    } else if a.to_ipv4_mapped().is_some() {
        Err("is an IPv4-mapped address")
    } else {
        Ok(())
    }
}

/// `route PREFIX via ADDRESS [port NAME]` or `route PREFIX port NAME`, for
/// IPv6: a global next hop must be on a port's prefix; a link-local one
/// needs its port.
fn parse_route6(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<Route6Config> {
    let kw = *stmt.words[0];
    const FORM: &str = "expected `route PREFIX via ADDRESS [port NAME]` or `route PREFIX port NAME`";
    let prefix = *stmt.words[1];
    let Ok(net) = prefix.text.parse::<Ipv6Net>() else {
        errors
            .push(ConfigError::at(&prefix, format!("bad prefix `{}`: expected ADDRESS/LEN such as ::/0", prefix.text)));
        return None;
    };
    if net != net.trunc() {
        errors.push(ConfigError::at(
            &prefix,
            format!("`{}` has host bits set: did you mean {}?", prefix.text, net.trunc()),
        ));
        return None;
    }
    let mut via: Option<(Ipv6Addr, Token<'_>)> = None;
    let mut port: Option<usize> = None;
    let mut i = 2;
    while i < stmt.words.len() {
        let k = *stmt.words[i];
        let Some(v) = stmt.words.get(i + 1) else {
            errors.push(ConfigError::at(&k, format!("`{}` needs a value: {FORM}", k.text)));
            return None;
        };
        match k.text {
            "via" if via.is_none() => match v.text.parse::<Ipv6Addr>() {
                Ok(a) if !a.is_unspecified() && !a.is_multicast() && !a.is_loopback() => via = Some((a, **v)),
                _ => {
                    errors.push(ConfigError::at(
                        v,
                        format!("bad next hop `{}`: expected a unicast IPv6 address", v.text),
                    ));
                    return None;
                }
            },
            "port" if port.is_none() => match config.port_by_name(v.text) {
                Some(p) => port = Some(p),
                None => {
                    errors.push(ConfigError::at(v, format!("no port named `{}`", v.text)));
                    return None;
                }
            },
            _ => {
                errors.push(ConfigError::at(&k, format!("unexpected `{}`: {FORM}", k.text)));
                return None;
            }
        }
        i += 2;
    }
    let line = Line(kw.line);
    match (via, port) {
        (None, None) => {
            errors.push(ConfigError::at(&kw, format!("incomplete route: {FORM}")));
            None
        }
        (None, Some(port)) => Some(Route6Config { prefix: net, port, via: None, line }),
        (Some((gw, t)), port) => {
            let link_local = gw.segments()[0] & 0xffc0 == 0xfe80;
            let on_link =
                config.ports.iter().position(|p| p.address6.iter().any(|a| a.contains(&gw) && a.addr() != gw));
            match (link_local, port, on_link) {
                (true, Some(port), _) => Some(Route6Config { prefix: net, port, via: Some(gw), line }),
                (true, None, _) => {
                    errors.push(ConfigError::at(
                        &t,
                        format!("next hop {gw} is link-local: say which port, `via {gw} port NAME`"),
                    ));
                    None
                }
                (false, Some(p), Some(q)) if p != q => {
                    errors.push(ConfigError::at(
                        &t,
                        format!("next hop {gw} is on port `{}`, not `{}`", config.ports[q].name, config.ports[p].name),
                    ));
                    None
                }
                (false, _, Some(port)) => Some(Route6Config { prefix: net, port, via: Some(gw), line }),
                (false, _, None) => {
                    errors.push(ConfigError::at(
                        &t,
                        format!(
                            "next hop {gw} is not on an IPv6 prefix of any port: give a port an address on its link"
                        ),
                    ));
                    None
                }
            }
        }
    }
}

/// `ra PORT [prefix P]... [interval S] [lifetime S] [managed] [other]`
fn parse_ra(stmt: &Stmt<'_>, config: &mut Config, errors: &mut Errors) {
    let kw = *stmt.words[0];
    const FORM: &str = "expected `ra PORT [prefix P/LEN]... [interval SECONDS] [lifetime SECONDS] [managed] [other]`";
    let Some(name) = stmt.words.get(1) else {
        errors.push(ConfigError::at(&kw, format!("`ra` needs a port: {FORM}")));
        return;
    };
    let Some(port) = config.port_by_name(name.text) else {
        errors.push(ConfigError::at(name, format!("no port named `{}`", name.text)));
        return;
    };
    if let Some(other) = config.ras.iter().find(|r| r.port == port) {
        errors.push(ConfigError::at(name, format!("port `{}` has an `ra` already (line {})", name.text, other.line)));
        return;
    }
    let mut ra = RaConfig {
        port,
        prefixes: Vec::new(),
        interval: 600,
        lifetime: 0,
        managed: false,
        other: false,
        line: Line(kw.line),
    };
    let mut lifetime = None;
    let mut i = 2;
    let before = errors.len();
    while i < stmt.words.len() {
        let k = *stmt.words[i];
        let v = stmt.words.get(i + 1);
        i += 1;
        match (k.text, v) {
            ("managed", _) => ra.managed = true,
            ("other", _) => ra.other = true,
            ("prefix", Some(v)) => {
                i += 1;
                match v.text.parse::<Ipv6Net>() {
                    Ok(n) if n != n.trunc() => errors.push(ConfigError::at(
                        v,
                        format!("`{}` has host bits set: did you mean {}?", v.text, n.trunc()),
                    )),
                    Ok(n) if ra.prefixes.len() >= MAX_ADDRESSES6 => errors.push(ConfigError::at(
                        v,
                        format!("at most {MAX_ADDRESSES6} prefixes per `ra` (`{n}` is one more)"),
                    )),
                    Ok(n) => ra.prefixes.push(n),
                    Err(_) => errors.push(ConfigError::at(
                        v,
                        format!("bad prefix `{}`: expected ADDRESS/LEN such as 2001:db8:0:1::/64", v.text),
                    )),
                }
            }
            ("interval", Some(v)) => {
                i += 1;
                match v.text.parse::<u32>() {
                    Ok(s) if (4..=1800).contains(&s) => ra.interval = s,
                    _ => errors.push(ConfigError::at(
                        v,
                        format!("bad interval `{}`: seconds from 4 to 1800 (RFC 4861 MaxRtrAdvInterval)", v.text),
                    )),
                }
            }
            ("lifetime", Some(v)) => {
                i += 1;
                match v.text.parse::<u32>() {
                    Ok(s) if s <= 9000 => lifetime = Some(s),
                    _ => errors.push(ConfigError::at(v, format!("bad lifetime `{}`: seconds from 0 to 9000", v.text))),
                }
            }
            _ => errors.push(ConfigError::at(&k, format!("unexpected `{}`: {FORM}", k.text))),
        }
    }
    if ra.prefixes.is_empty() {
        ra.prefixes = config.ports[port].address6.iter().filter(|a| a.prefix_len() == 64).map(|a| a.trunc()).collect();
    }
    ra.lifetime = lifetime.unwrap_or(ra.interval.saturating_mul(3).min(9000));
    if lifetime.is_some_and(|l| l != 0 && l < ra.interval) {
        errors.push(ConfigError::at(
            &kw,
            format!(
                "router lifetime {} is shorter than the interval {}: hosts would drop the route between advertisements",
                ra.lifetime, ra.interval
            ),
        ));
    }
    if config.ports[port].address6.is_empty() && ra.prefixes.is_empty() {
        errors.push(ConfigError::at(
            name,
            format!(
                "port `{}` has no IPv6 prefix to advertise: give it `address PREFIX::1/64` or name `prefix`",
                name.text
            ),
        ));
    }
    if errors.len() == before {
        config.ras.push(ra);
    }
}

impl Config {
    /// The appliance's IPv6 next hops, in a fixed order: what an IPv6
    /// packet's [`Meta::gateway6`](crate::packet::Meta::gateway6) indexes
    /// (1-based; 0 is the packet's destination).
    pub fn gateways6(&self) -> Vec<Ipv6Addr> {
        let mut g: Vec<Ipv6Addr> = Vec::new();
        let mut seen = alloc::collections::BTreeSet::new();
        for r in &self.routes6 {
            if let Some(v) = r.via {
                if seen.insert(v) {
                    g.push(v);
                }
            }
        }
        g
    }
}

/// The port through which `addr` is reached: a connected prefix, else a route.
pub fn port_for(config: &Config, addr: Ipv4Addr) -> Option<usize> {
    config.ports.iter().position(|p| p.address.is_some_and(|a| a.contains(&addr))).or_else(|| {
        config.routes.iter().filter(|r| r.prefix.contains(&addr)).max_by_key(|r| r.prefix.prefix_len()).map(|r| r.port)
    })
}

/// Why `a` cannot be an address the appliance owns or sends to (a pool
/// address, a VIP, a backend): unspecified, loopback, multicast, broadcast
/// or reserved (RFC 1122 §3.2.1.3, RFC 1112, RFC 1812 §5.3.7).
pub fn usable_unicast(a: Ipv4Addr) -> Result<(), &'static str> {
    match a.octets()[0] {
        0 => Err("is in 0.0.0.0/8 (\"this network\"), not a usable address"),
        127 => Err("is a loopback address"),
        224..=239 => Err("is a multicast address"),
        240..=255 if a.is_broadcast() => Err("is the broadcast address"),
        240..=255 => Err("is in the reserved 240.0.0.0/4"),
        _ => Ok(()),
    }
}

pub fn is_name(s: &str) -> bool {
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
