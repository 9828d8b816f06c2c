//! `tunnel NAME vxlan|geneve vni N local A [remote B]... [dstport P]
//! [mode insertion] [address …] [mac …] [mtu …] [vrf …]`: a tunnel port.

use alloc::format;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::config::{key_values, usable_unicast, Config, ConfigError, Errors, PortConfig, PortKind, Stmt};

/// The encapsulation a tunnel speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// RFC 7348, UDP port 4789.
    Vxlan,
    /// RFC 8926, UDP port 6081.
    Geneve,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Vxlan => "vxlan",
            Proto::Geneve => "geneve",
        }
    }
    pub fn default_port(self) -> u16 {
        match self {
            Proto::Vxlan => 4789,
            Proto::Geneve => 6081,
        }
    }
}

/// Bytes the encapsulation puts in front of the inner IP packet: inner
/// Ethernet 14 + VXLAN/Geneve 8 + UDP 8 + IPv4 20 (Geneve options on top).
pub const OVERHEAD: u16 = 50;

/// Remotes one tunnel may have (its flood list).
pub const MAX_REMOTES: usize = 16;

/// A tunnel port. Two are equal when they say the same (the next hops
/// follow the routes: a reload that changes a route keeps the tunnel).
#[derive(Clone, Debug)]
pub struct TunnelPort {
    pub proto: Proto,
    /// 24 bits.
    pub vni: u32,
    /// The appliance's address the tunnel starts at (a port's address).
    pub local: Ipv4Addr,
    /// The far ends: BUM traffic goes to all of them, unicast to the one
    /// the inner MAC was learnt from (all of them until then).
    pub remotes: Vec<Ipv4Addr>,
    /// The UDP destination port.
    pub udp_port: u16,
    /// Geneve service insertion: what arrives is sent back to its sender in
    /// the same tunnel, options kept, after the port's pipeline.
    pub insertion: bool,
    /// The port `local` belongs to (resolved once routes are read).
    pub underlay: usize,
    /// Per remote, the underlay next hop (the remote itself on the link).
    pub next_hops: Vec<Ipv4Addr>,
}

impl PartialEq for TunnelPort {
    fn eq(&self, o: &TunnelPort) -> bool {
        (self.proto, self.vni, self.local, &self.remotes, self.udp_port, self.insertion, self.underlay)
            == (o.proto, o.vni, o.local, &o.remotes, o.udp_port, o.insertion, o.underlay)
    }
}

impl Eq for TunnelPort {}

/// Reads a `tunnel` statement into a port.
pub fn parse(stmt: &Stmt<'_>, config: &Config, errors: &mut Errors) -> Option<PortConfig> {
    let kw = *stmt.words[0];
    const FORM: &str = "expected `tunnel NAME vxlan|geneve vni N local ADDRESS remote ADDRESS …`";
    let (Some(name), Some(kind)) = (stmt.words.get(1), stmt.words.get(2)) else {
        errors.push(ConfigError::at(&kw, FORM));
        return None;
    };
    let proto = match kind.text {
        "vxlan" => Proto::Vxlan,
        "geneve" => Proto::Geneve,
        other => {
            errors.push(ConfigError::at(kind, format!("unknown tunnel type `{other}`: expected vxlan or geneve")));
            return None;
        }
    };
    let before = errors.len();
    let mut port = crate::config::new_port(stmt, name, errors);
    let mut t = TunnelPort {
        proto,
        vni: u32::MAX,
        local: Ipv4Addr::UNSPECIFIED,
        remotes: Vec::new(),
        udp_port: proto.default_port(),
        insertion: false,
        underlay: usize::MAX,
        next_hops: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut mtu_given = false;
    for (key, value) in key_values(stmt, 3, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        if key.text == "remote" {
            match value.text.parse::<Ipv4Addr>() {
                Ok(a) if usable_unicast(a).is_err() => {
                    errors.push(ConfigError::at(&value, format!("remote {a} {}", usable_unicast(a).unwrap_err())))
                }
                Ok(a) if t.remotes.contains(&a) => {
                    errors.push(ConfigError::at(&value, format!("remote {a} is given twice")))
                }
                Ok(_) if t.remotes.len() >= MAX_REMOTES => errors.push(ConfigError::at(
                    &value,
                    format!("tunnel `{}` has more than {MAX_REMOTES} remotes", name.text),
                )),
                Ok(a) => t.remotes.push(a),
                Err(_) => errors
                    .push(ConfigError::at(&value, format!("bad remote `{}`: expected an IPv4 address", value.text))),
            }
            continue;
        }
        if seen.contains(&key.text) {
            errors.push(ConfigError::at(&key, format!("`{}` is given twice for tunnel `{}`", key.text, name.text)));
            continue;
        }
        seen.push(key.text);
        match key.text {
            "vni" => match value.text.parse::<u32>() {
                Ok(v) if v < 1 << 24 => t.vni = v,
                _ => errors.push(ConfigError::at(
                    &value,
                    format!("bad VNI `{}`: expected a number from 0 to 16777215", value.text),
                )),
            },
            "local" => match value.text.parse::<Ipv4Addr>() {
                Ok(a) => t.local = a,
                Err(_) => errors.push(ConfigError::at(&value, format!("bad local `{}`: expected an IPv4 address", value.text))),
            },
            "dstport" => match value.text.parse::<u16>() {
                Ok(p) if p > 0 => t.udp_port = p,
                _ => errors.push(ConfigError::at(&value, format!("bad UDP port `{}`", value.text))),
            },
            "mode" => match value.text {
                "insertion" if proto == Proto::Geneve => t.insertion = true,
                "insertion" => errors.push(ConfigError::at(
                    &value,
                    "service insertion is a Geneve mode (the options travel back with the packet)",
                )),
                "tunnel" => t.insertion = false,
                other => errors.push(ConfigError::at(
                    &value,
                    format!("unknown tunnel mode `{other}`: expected `tunnel` or `insertion`"),
                )),
            },
            "mtu" => {
                mtu_given = true;
                crate::config::port_key(&key, &value, &mut port, config, errors);
            }
            _ if crate::config::port_key(&key, &value, &mut port, config, errors) => {}
            other => errors.push(ConfigError::at(
                &key,
                format!(
                    "unknown tunnel setting `{other}`: expected `vni`, `local`, `remote`, `dstport`, `mode`, `address`, `mac`, `mtu`, `rpf` or `vrf`"
                ),
            )),
        }
    }
    if t.vni == u32::MAX {
        errors.push(ConfigError::at(&kw, format!("tunnel `{}` needs `vni N`", name.text)));
    }
    if t.local.is_unspecified() {
        errors.push(ConfigError::at(
            &kw,
            format!("tunnel `{}` needs `local ADDRESS` (one of the appliance's port addresses)", name.text),
        ));
    }
    if t.remotes.is_empty() && !t.insertion {
        errors.push(ConfigError::at(&kw, format!("tunnel `{}` needs at least one `remote ADDRESS`", name.text)));
    }
    if !mtu_given {
        // Decided once the underlay port is known.
        port.mtu = 0;
    }
    port.kind = PortKind::Tunnel(t);
    (errors.len() == before).then_some(port)
}

/// Once ports and routes are read: each tunnel's underlay port (the one
/// whose address is `local`), its next hop to every remote (on the link,
/// or the gateway of the longest static route in the underlay's VRF) and
/// its MTU (the underlay's less the encapsulation's overhead).
pub fn resolve(config: &mut Config, errors: &mut Errors) {
    for i in 0..config.ports.len() {
        let PortKind::Tunnel(t) = &config.ports[i].kind else { continue };
        let (name, line) = (config.ports[i].name.clone(), config.ports[i].line.0);
        let at = |message: alloc::string::String| ConfigError { line, column: 1, message };
        let Some(u) =
            config.ports.iter().position(|p| p.ip() == Some(t.local) && !matches!(p.kind, PortKind::Tunnel(_)))
        else {
            errors.push(at(format!(
                "tunnel `{name}`: local {} is not the address of a port (the tunnel starts at one of the appliance's addresses)",
                t.local
            )));
            continue;
        };
        if config.management.as_ref().is_some_and(|m| m.port == u) {
            // The management port forwards nothing, and carries no tenant.
            errors.push(at(format!(
                "tunnel `{name}`: local {} is the management port's address: a tunnel starts at a data port's",
                t.local
            )));
            continue;
        }
        let under = &config.ports[u];
        let vrf = under.vrf;
        let mut hops = Vec::new();
        for r in &t.remotes {
            if under.address.is_some_and(|a| a.contains(r)) {
                hops.push(*r);
                continue;
            }
            let via = config
                .routes
                .iter()
                .filter(|x| x.vrf == vrf && x.prefix.contains(r))
                .max_by_key(|x| x.prefix.prefix_len())
                .filter(|x| x.port == u)
                .and_then(|x| x.via);
            match via {
                Some(g) => hops.push(g),
                None => errors.push(at(format!(
                    "tunnel `{name}`: remote {r} is neither on port `{}`'s subnet nor behind a route via a gateway there",
                    under.name
                ))),
            }
        }
        let max = under.mtu.saturating_sub(OVERHEAD);
        let mtu = config.ports[i].mtu;
        if max < crate::config::MIN_MTU {
            errors.push(at(format!(
                "tunnel `{name}`: port `{}`'s MTU {} leaves less than {} bytes inside the {OVERHEAD} bytes of encapsulation",
                under.name,
                under.mtu,
                crate::config::MIN_MTU
            )));
        } else if mtu > max {
            errors.push(at(format!(
                "tunnel `{name}`: MTU {mtu} does not fit port `{}`'s MTU {} with the {OVERHEAD} bytes of encapsulation (at most {max})",
                under.name, under.mtu
            )));
        }
        let p = &mut config.ports[i];
        if p.mtu == 0 {
            p.mtu = max;
        }
        if let PortKind::Tunnel(t) = &mut p.kind {
            t.underlay = u;
            t.next_hops = hops;
        }
    }
    // Two tunnels may not take the same packets.
    let tunnels: Vec<(usize, &TunnelPort)> = config
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.kind {
            PortKind::Tunnel(t) => Some((i, t)),
            _ => None,
        })
        .collect();
    for (n, (i, a)) in tunnels.iter().enumerate() {
        for (j, b) in &tunnels[..n] {
            if a.local == b.local && a.udp_port == b.udp_port && a.proto != b.proto {
                errors.push(ConfigError {
                    line: config.ports[*i].line.0,
                    column: 1,
                    message: format!(
                        "tunnel `{}` is {} on the local address and UDP port of {} tunnel `{}` (line {}): give one of them another `dstport`",
                        config.ports[*i].name, a.proto.name(), b.proto.name(), config.ports[*j].name, config.ports[*j].line
                    ),
                });
            } else if a.local == b.local && a.udp_port == b.udp_port && a.vni == b.vni {
                errors.push(ConfigError {
                    line: config.ports[*i].line.0,
                    column: 1,
                    message: format!(
                        "tunnel `{}` has the local address, UDP port and VNI of tunnel `{}` (line {})",
                        config.ports[*i].name, config.ports[*j].name, config.ports[*j].line
                    ),
                });
            }
        }
    }
}
