//! The validated config: typed values only, every reference resolved.
//!
//! Values here are what the rest of the agent consumes; defaults are already applied and
//! every cross-reference (service -> pool, route -> pool, listener -> certificate) is an
//! index that is known to exist. `config/README.md` documents each field for users.

mod announce;
mod auth;
mod dataplane;
mod discovery;
mod filter;
mod l7;
mod log;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

pub use announce::Announce;
pub use auth::*;
pub use dataplane::{
    ConntrackTimeouts, DEFAULT_PIN_DIR, DataplaneSettings, FloodLimits, VipEcho, schema_dir,
};
pub use discovery::{Discovery, DnsDiscovery, DnsRecord};
pub use filter::*;
pub use l7::*;
pub use log::{AccessLogFormat, LogSettings};

/// Everything one config file describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interfaces the XDP program attaches to.
    pub interfaces: Vec<Interface>,
    /// The admin/metrics listener.
    pub admin: Admin,
    /// TLS certificates, referenced by [`CertificateId`].
    pub certificates: Vec<Certificate>,
    /// Backend pools, referenced by [`PoolId`].
    pub pools: Vec<Pool>,
    /// Services, in file order.
    pub services: Vec<Service>,
    /// `[announce]`: VIP routes for a BGP daemon; `None` when the node announces nothing.
    pub announce: Option<Announce>,
    /// `[dataplane]`: pins that outlive the agent.
    pub dataplane: DataplaneSettings,
    /// `[log]`: where the access log goes and in what format.
    pub log: LogSettings,
}

impl Config {
    /// The pool an id refers to. Ids come from this config, so they are in range.
    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.0)
    }

    /// The certificate an id refers to.
    pub fn certificate(&self, id: CertificateId) -> Option<&Certificate> {
        self.certificates.get(id.0)
    }
}

/// Index into [`Config::pools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub usize);

/// Index into [`Config::certificates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateId(pub usize);

/// A network interface to attach the XDP program to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Linux interface name (1..=15 bytes).
    pub name: String,
    /// How to attach.
    pub xdp_mode: XdpMode,
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Driver mode only; attaching fails if the driver lacks XDP support.
    Native,
    /// Generic (SKB) mode: works everywhere, slower.
    Generic,
}

/// The admin/metrics HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where to listen.
    pub listen: SocketAddr,
    /// File holding the bearer token; always set when `listen` is not loopback.
    pub token_file: Option<PathBuf>,
    /// Path of the Prometheus endpoint; starts with '/'.
    pub metrics_path: String,
}

/// A certificate chain and its key, loaded and parsed at validation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    /// Unique name, referenced from `service.l7.tls.certificates`.
    pub name: String,
    /// PEM chain path, resolved against the config file's directory.
    pub cert_path: PathBuf,
    /// PEM key path, resolved against the config file's directory.
    pub key_path: PathBuf,
    /// SNI names this certificate serves.
    pub server_names: Vec<HostPattern>,
    /// The chain, leaf first (at least one certificate).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKey,
}

/// A private key that can be cloned cheaply and never prints its bytes.
#[derive(Clone)]
pub struct PrivateKey(pub Arc<PrivateKeyDer<'static>>);

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A host name pattern, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `www.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: matches one or more labels in front of it.
    Suffix(String),
    /// `*`: any host (virtual hosts only).
    Any,
}

/// A pool of backends and how to pick one.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Unique name.
    pub name: String,
    /// Load-balancing policy (for l7 services; l4 services always use Maglev in the kernel).
    pub policy: Policy,
    /// Protocol spoken to backends by l7 services.
    pub upstream_protocol: UpstreamProtocol,
    /// Timeout for connecting to a backend.
    pub connect_timeout: Duration,
    /// Below this percentage of healthy backends, traffic goes to all backends (0..=100).
    pub panic_threshold: u8,
    /// What to do when no backend is healthy.
    pub when_no_healthy: WhenNoHealthy,
    /// Active health checking.
    pub health_check: HealthCheck,
    /// Passive health checking; `None` means disabled.
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits beyond which requests are refused at once (l7).
    pub circuit_breakers: CircuitBreakers,
    /// Names and addresses unique; at least one unless `discovery` is set, in which case
    /// these are the backends discovered last (empty until the first answer).
    pub backends: Vec<Backend>,
    /// Where the backends come from when not listed in the file.
    pub discovery: Option<Discovery>,
    /// A backend that joins or is readmitted ramps from [`SLOW_START_FLOOR`] of its weight
    /// to all of it over this window (l7, not maglev); `None` is off.
    pub slow_start: Option<Duration>,
}

/// The share of its weight a backend starts a slow-start window with.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// How an l7 service picks a backend from a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Each backend in turn.
    RoundRobin,
    /// Smooth weighted round robin.
    Weighted,
    /// Fewest in-flight requests per unit of weight among two picks drawn by weight.
    LeastRequest,
    /// Lowest peak-EWMA response time x (requests in flight + 1) per unit of weight among
    /// two picks drawn by weight.
    LeastResponseTime,
    /// Uniformly random.
    Random,
    /// Consistent hashing; `hash_on` is set whenever an l7 service uses the pool.
    Maglev {
        /// The request property to hash.
        hash_on: Option<HashOn>,
    },
}

/// Request property a Maglev pool hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header (name lower-cased).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client's IP address.
    ClientAddress,
}

/// Protocol spoken to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Behaviour when no backend is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenNoHealthy {
    /// Send traffic to all backends anyway.
    FailOpen,
    /// Refuse traffic (l7: 503; l4: drop).
    Refuse,
}

/// Active health check of each backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What to probe.
    pub kind: HealthCheckKind,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout; less than `interval`.
    pub timeout: Duration,
    /// Consecutive successes to become healthy (1..=100).
    pub rise: u8,
    /// Consecutive failures to become unhealthy (1..=100).
    pub fall: u8,
    /// Random spread of `interval`, in percent (0..=50).
    pub jitter_percent: u8,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP request.
    Http(HttpCheck),
    /// A `grpc.health.v1.Health/Check` call (HTTP/2 with prior knowledge) answered SERVING.
    Grpc {
        /// The service asked about; empty for the server as a whole.
        service: String,
    },
    /// No probing: backends are always healthy.
    None,
}

/// An HTTP health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Request method (upper case).
    pub method: String,
    /// Request path, starting with '/'.
    pub path: String,
    /// `Host` header; the backend address when `None`.
    pub host: Option<String>,
    /// Status codes counted as healthy.
    pub expected_status: Vec<StatusRange>,
    /// A substring the body must contain.
    pub body_contains: Option<String>,
}

/// An inclusive range of HTTP status codes (a single code has `first == last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest code.
    pub first: u16,
    /// Highest code.
    pub last: u16,
}

impl StatusRange {
    /// Whether `status` falls in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.first..=self.last).contains(&status)
    }
}

/// Passive health checking: eject backends that keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive failures that eject a backend (1..=1000).
    pub consecutive_failures: u32,
    /// Ejection time unit: the n-th recent ejection lasts n × this, capped at `max_ejection`.
    pub base_ejection: Duration,
    /// Upper bound of the ejection time; at least `base_ejection`.
    pub max_ejection: Duration,
    /// At most this percentage of the pool is ejected at once (0..=100).
    pub max_ejected_percent: u8,
    /// Whether a 5xx response counts as a failure (connect failures, resets and timeouts
    /// always do; a client's own faults never do).
    pub count_5xx: bool,
}

/// Envoy-style circuit breakers of an l7 pool: past a limit a request is answered 503 at
/// once instead of queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Connections open to each backend.
    pub max_connections: u32,
    /// Requests waiting for a connection to a backend at `max_connections`.
    pub max_pending_requests: u32,
    /// Requests in flight to the pool.
    pub max_requests: u32,
    /// Retries in flight to the pool.
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique within the pool; "address:port" unless given.
    pub name: String,
    /// Address and port the backend listens on.
    pub address: SocketAddr,
    /// Relative weight (1..=10000).
    pub weight: u16,
}

/// A virtual service: a VIP, port and protocol, balanced at l4 or l7.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// The virtual IP.
    pub vip: IpAddr,
    /// The virtual port (1..=65535).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// l4 forwarding or l7 proxying.
    pub kind: ServiceKind,
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// How a service is balanced.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per service, built once per reload and never moved on the request path"
)]
pub enum ServiceKind {
    /// In the kernel, by the XDP program.
    L4(L4Service),
    /// In userspace, by the HTTP proxy.
    L7(L7Service),
}

/// An l4 (XDP) service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Service {
    /// How packets reach the backend.
    pub mode: ForwardingMode,
    /// The backends.
    pub pool: PoolId,
    /// Maglev lookup table size: a prime in 251..=131071.
    pub maglev_table_size: u32,
    /// Seed of the Maglev permutation hashes.
    pub maglev_seed: u32,
}

/// l4 forwarding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingMode {
    /// Direct server return: the backend replies to the client itself; backend port equals
    /// the service port.
    Dsr,
    /// Destination NAT: replies come back through the balancer.
    Nat,
}
