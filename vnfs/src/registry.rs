//! The stage registry: every feature sluice has, one line each. Adding a
//! feature is its folder plus its line here; nothing else in the
//! framework names it.
//!
//! The order is the order of instances in a config (and so of `stats`
//! lines), and breaks ties between stages that place themselves at the
//! same point of a default pipeline.

use alloc::vec::Vec;

use crate::config::{self, Config, ConfigError, StageDef};

#[rustfmt::skip]
pub static STAGES: &[&StageDef] = &[
    &crate::router::DEF,
    &crate::nat::DEF,
    &crate::nat::nat64::DEF,
    &crate::lb::DEF,
    &crate::policer::DEF,
    &crate::acl::DEF,
];

/// Parses and validates a config with every feature of the registry.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    config::parse_with(text, STAGES)
}
