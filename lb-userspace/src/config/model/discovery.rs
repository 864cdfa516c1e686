//! Validated `[pool.discovery]`: a pool whose backends come from DNS or an endpoints file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a discovered pool's backends come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Discovery {
    /// A DNS name, re-resolved at its TTL.
    Dns(DnsDiscovery),
    /// A JSON or TOML file (by extension: `.json` is JSON, anything else TOML), watched.
    EndpointsFile(PathBuf),
}

/// A pool that follows a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsDiscovery {
    /// The name, as written (a trailing dot makes it absolute; otherwise the search list
    /// of the resolver applies).
    pub name: String,
    /// Which records to ask for.
    pub record: DnsRecord,
    /// Lower bound of the time between resolutions (the record's TTL otherwise).
    pub min_ttl: Duration,
    /// Upper bound of the time between resolutions; at least `min_ttl`.
    pub max_ttl: Duration,
    /// Name servers to ask; empty means the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
}

/// The records a DNS pool follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsRecord {
    /// A and AAAA: every address is a backend on `port` with `weight`.
    Address {
        /// Backend port (1..=65535).
        port: u16,
        /// Every backend's weight (1..=10000).
        weight: u16,
    },
    /// SRV: each target's addresses on the record's port, with the record's weight (a
    /// weight of 0 counts as 1, clamped to 10000); only the lowest priority is used.
    Srv,
}
