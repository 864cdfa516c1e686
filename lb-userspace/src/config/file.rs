//! The config file as written: serde structs that mirror the TOML, nothing resolved yet.
//!
//! Every table rejects unknown fields. Optional fields are `Option` here and get their
//! documented default in `validate`; numbers are read as `i64` so that an out-of-range value
//! gets a message naming the allowed range rather than serde's "invalid value". Values that
//! validation may complain about keep their [`Spanned`] location.
//!
//! Arrays of tables that hold independent items (`[[pool.backend]]`,
//! `[[service.l7.virtual_host]]`, `[[...route]]`) are not fields here: `document` cuts them out
//! and deserializes each item on its own, so that one bad item does not hide errors in another.

mod announce;
mod auth;
mod dataplane;
mod discovery;
mod filter;
mod l7;
mod log;

use serde::Deserialize;
use toml::Spanned;

pub use announce::Announce;
pub use auth::*;
pub use dataplane::Dataplane;
pub use discovery::{Discovery, Dns};
pub use filter::{Cors, Filter, Headers, RateLimit, RequestId};
pub use l7::*;
pub use log::Log;

use super::model::{ForwardingMode, Protocol, UpstreamProtocol, WhenNoHealthy, XdpMode};

/// `[[interface]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Linux interface name; required.
    pub name: Spanned<String>,
    /// Default `auto`.
    pub xdp_mode: Option<XdpMode>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Socket address; default `127.0.0.1:9100`.
    pub listen: Option<Spanned<String>>,
    /// Bearer token file; required unless `listen` is a loopback address.
    pub token_file: Option<Spanned<String>>,
    /// Default `/metrics`.
    pub metrics_path: Option<Spanned<String>>,
}

/// `[[certificate]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Unique name; required.
    pub name: Spanned<String>,
    /// PEM certificate chain, leaf first; required.
    pub cert: Spanned<String>,
    /// PEM private key; required.
    pub key: Spanned<String>,
    /// SNI names (exact or `*.suffix`); default none.
    #[serde(default)]
    pub server_names: Vec<Spanned<String>>,
}

/// `[[pool]]`, without its backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Unique name; required.
    pub name: Spanned<String>,
    /// Default `round_robin`.
    pub policy: Option<Spanned<PolicyName>>,
    /// Only for `maglev`; required when an l7 service uses the pool.
    pub hash_on: Option<Spanned<HashOn>>,
    /// Default `http1`.
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Duration; default `1s`.
    pub connect_timeout: Option<Spanned<String>>,
    /// Percent, 0..=100; default 50.
    pub panic_threshold: Option<Spanned<i64>>,
    /// Default `fail_open`.
    pub when_no_healthy: Option<WhenNoHealthy>,
    /// Default: a TCP check with default settings.
    pub health_check: Option<Spanned<HealthCheck>>,
    /// Default: disabled.
    pub outlier_detection: Option<OutlierDetection>,
    /// Default: every limit at its default.
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// Default: none (the pool lists its backends).
    pub discovery: Option<Spanned<Discovery>>,
    /// Duration; default off (`0s` is off too). l7 only.
    pub slow_start: Option<Spanned<String>>,
}

/// `[pool.circuit_breakers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// 1..=1000000; default 1024.
    pub max_connections: Option<Spanned<i64>>,
    /// 0..=1000000; default 1024.
    pub max_pending_requests: Option<Spanned<i64>>,
    /// 1..=1000000; default 1024.
    pub max_requests: Option<Spanned<i64>>,
    /// 0..=1000000; default 3.
    pub max_retries: Option<Spanned<i64>>,
}

/// Value of `pool.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Round robin.
    RoundRobin,
    /// Weighted round robin.
    Weighted,
    /// Least request.
    LeastRequest,
    /// Least response time (peak EWMA).
    LeastResponseTime,
    /// Random.
    Random,
    /// Maglev consistent hashing.
    Maglev,
}

/// Value of `pool.hash_on`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// `{ header = "x-user" }`.
    Header(Spanned<String>),
    /// `{ cookie = "sid" }`.
    Cookie(Spanned<String>),
    /// `"client_address"`.
    ClientAddress,
}

/// `[pool.health_check]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Default `tcp`.
    pub kind: Option<HealthCheckKind>,
    /// Duration; default `2s`.
    pub interval: Option<Spanned<String>>,
    /// Duration; default `1s`; less than `interval`.
    pub timeout: Option<Spanned<String>>,
    /// 1..=100; default 2.
    pub rise: Option<Spanned<i64>>,
    /// 1..=100; default 3.
    pub fall: Option<Spanned<i64>>,
    /// Percent, 0..=50; default 10.
    pub jitter: Option<Spanned<i64>>,
    /// http only; default `GET`.
    pub method: Option<Spanned<String>>,
    /// http only; default `/`.
    pub path: Option<Spanned<String>>,
    /// http only; default: the backend address.
    pub host: Option<Spanned<String>>,
    /// http only; codes or "first-last" ranges; default `["200-399"]`.
    pub expected_status: Option<Spanned<Vec<Spanned<StatusSpec>>>>,
    /// http only; default none.
    pub body_contains: Option<Spanned<String>>,
    /// grpc only; default `""` (the server as a whole).
    pub service: Option<Spanned<String>>,
}

/// Value of `pool.health_check.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP request.
    Http,
    /// `grpc.health.v1.Health/Check` over HTTP/2.
    Grpc,
    /// No probing.
    None,
}

/// One `expected_status` item: `404` or `"200-399"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    /// A single code.
    Code(i64),
    /// A code or an inclusive range, as text.
    Text(String),
}

/// `[pool.outlier_detection]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// 1..=1000; default 5.
    pub consecutive_failures: Option<Spanned<i64>>,
    /// Duration; default `30s`.
    pub base_ejection: Option<Spanned<String>>,
    /// Duration; default `300s`; at least `base_ejection`.
    pub max_ejection: Option<Spanned<String>>,
    /// Percent, 0..=100; default 10.
    pub max_ejected_percent: Option<Spanned<i64>>,
    /// Whether 5xx responses count as failures; default true.
    pub count_5xx: Option<bool>,
}

/// `[[pool.backend]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// IP address; required.
    pub address: Spanned<String>,
    /// 1..=65535; required.
    pub port: Spanned<i64>,
    /// 1..=10000; default 1.
    pub weight: Option<Spanned<i64>>,
    /// Unique in the pool; default "address:port".
    pub name: Option<Spanned<String>>,
}

/// `[[service]]`, with its l7 part cut down to the service-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name; required.
    pub name: Spanned<String>,
    /// IP address; required.
    pub vip: Spanned<String>,
    /// 1..=65535; required.
    pub port: Spanned<i64>,
    /// Required.
    pub protocol: Spanned<Protocol>,
    /// Exactly one of `l4` and `l7`.
    pub l4: Option<Spanned<L4>>,
    /// Exactly one of `l4` and `l7`.
    pub l7: Option<Spanned<L7>>,
}

/// `[service.l4]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L4 {
    /// Required.
    pub mode: Spanned<ForwardingMode>,
    /// Pool name; required.
    pub pool: Spanned<String>,
    /// Prime in 251..=131071; default 65537.
    pub maglev_table_size: Option<Spanned<i64>>,
    /// u32; default 0.
    pub maglev_seed: Option<Spanned<i64>>,
}
