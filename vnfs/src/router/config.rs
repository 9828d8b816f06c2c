//! The router's statement, `router icmp-rate N icmp-burst N`. There is one
//! router, `router`, whether or not the statement is given: every port
//! routes unless its pipeline says otherwise.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{key_values, Config, ConfigError, Errors, Line, Place, StageConfig, Stmt};

/// Router settings (`router icmp-rate N icmp-burst N`). Its routes are the
/// framework's (`route`, the ports' prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// ICMP errors per second (token bucket rate).
    pub icmp_rate: u32,
    /// ICMP error burst (token bucket depth).
    pub icmp_burst: u32,
    pub line: Line,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { icmp_rate: 100, icmp_burst: 20, line: Line(0) }
    }
}

/// `router icmp-rate N icmp-burst N`
fn parse_router(stmt: &Stmt<'_>, r: &mut RouterConfig, errors: &mut Errors) {
    for (key, value) in key_values(stmt, 1, errors) {
        let Some(value) = value else {
            errors.push(ConfigError::at(&key, format!("`{}` needs a value", key.text)));
            continue;
        };
        let (min, max): (u64, u64) = match key.text {
            "icmp-rate" => (0, 1_000_000),
            "icmp-burst" => (1, 1_000_000),
            "arp-timeout" | "neighbors" => {
                errors.push(ConfigError::at(
                    &key,
                    format!("`router {}` moved to the `arp` statement: `arp entries N timeout SECONDS`", key.text),
                ));
                continue;
            }
            other => {
                errors.push(ConfigError::at(
                    &key,
                    format!("unknown router setting `{other}`: expected `icmp-rate` or `icmp-burst`"),
                ));
                continue;
            }
        };
        match value.text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => match key.text {
                "icmp-rate" => r.icmp_rate = v as u32,
                _ => r.icmp_burst = v as u32,
            },
            _ => errors.push(ConfigError::at(
                &value,
                format!("bad {} `{}`: expected a number from {min} to {max}", key.text, value.text),
            )),
        }
    }
}

pub fn parse(stmts: &[&Stmt<'_>], _: &Config, errors: &mut Errors) -> Vec<(String, Rc<dyn StageConfig>)> {
    let mut r = RouterConfig::default();
    for stmt in stmts {
        if r.line.0 != 0 {
            errors.push(ConfigError::at(&stmt.words[0], format!("`router` is already given on line {}", r.line)));
            continue;
        }
        r.line = Line(stmt.words[0].line);
        parse_router(stmt, &mut r, errors);
    }
    alloc::vec![(String::from("router"), Rc::new(r) as Rc<dyn StageConfig>)]
}

impl StageConfig for RouterConfig {
    crate::stage_config_identity!();

    /// The router's tables come from the routes, the ports and the
    /// management port, which are the framework's: kept only if those are
    /// unchanged too.
    fn reusable(&self, old: &dyn StageConfig, old_config: &Config, new_config: &Config) -> bool {
        self.same(old)
            && old_config.routes == new_config.routes
            && old_config.routes6 == new_config.routes6
            && old_config.ports == new_config.ports
            && old_config.management == new_config.management
    }

    /// The route table (connected and static routes) and its next hops.
    fn table_bytes(&self, config: &Config) -> usize {
        let connected = config.ports.iter().filter_map(|p| p.address.map(|a| a.trunc())).collect::<Vec<_>>();
        // Each VRF's table has its own top level.
        (config.vrf_count() - 1) * super::lpm::Lpm::memory_for(core::iter::empty())
            + super::lpm::Lpm::memory_for(config.routes.iter().map(|r| &r.prefix).chain(connected.iter()))
            + config.routes.len() * 16
            + super::lpm6::Lpm6::memory_for(
                config.routes6.len() + config.ports.iter().map(|p| p.address6.len()).sum::<usize>(),
            )
    }

    fn placement(&self, _: usize, _: &Config) -> Option<Place> {
        Some(Place::Routing)
    }
}
