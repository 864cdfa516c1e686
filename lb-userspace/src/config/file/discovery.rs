//! `[pool.discovery]` as written: where a pool's backends come from when not listed.

use serde::Deserialize;
use toml::Spanned;

/// `[pool.discovery]`: exactly one of `dns` and `endpoints_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// `[pool.discovery.dns]`: follow a DNS name.
    pub dns: Option<Spanned<Dns>>,
    /// Path of a JSON or TOML file listing the backends, watched for changes.
    pub endpoints_file: Option<Spanned<String>>,
}

/// `[pool.discovery.dns]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// The name to resolve; required.
    pub name: Spanned<String>,
    /// `address` (A and AAAA) or `srv`; default `address`.
    pub record: Option<Spanned<String>>,
    /// 1..=65535; required with `address`, refused with `srv` (SRV records carry ports).
    pub port: Option<Spanned<i64>>,
    /// 1..=10000, every address's weight with `address`; default 1. Refused with `srv`.
    pub weight: Option<Spanned<i64>>,
    /// Duration; default `5s`.
    pub min_ttl: Option<Spanned<String>>,
    /// Duration; default `300s`; at least `min_ttl`.
    pub max_ttl: Option<Spanned<String>>,
    /// `ip` or `ip:port` of the name servers; default those of `/etc/resolv.conf`.
    #[serde(default)]
    pub servers: Vec<Spanned<String>>,
}
