//! The validated l7 part of the config: listeners, virtual hosts and routes.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use serde::Deserialize;

use super::{CertificateId, HostPattern, PoolId};

/// An l7 (HTTP proxy) service.
#[derive(Debug, Clone, PartialEq)]
pub struct L7Service {
    /// TLS termination; `None` for a plain-text listener.
    pub tls: Option<Tls>,
    /// Accept HTTP/2 with prior knowledge on a plain-text listener.
    pub h2c: bool,
    /// Answer every request with a redirect to HTTPS on this port (plain listeners only).
    pub redirect_to_https: Option<u16>,
    /// Log each request.
    pub access_log: bool,
    /// Resource limits.
    pub limits: Limits,
    /// How request paths are normalised before routing.
    pub paths: PathSettings,
    /// Which peers' forwarding headers are kept.
    pub forwarded: ForwardedTrust,
    /// Virtual hosts; at least one, domains unique across them.
    pub virtual_hosts: Vec<VirtualHost>,
    /// The filters routes may run, in config order; names unique.
    pub filters: Vec<super::FilterSpec>,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// At least one; the first is served when no SNI name matches.
    pub certificates: Vec<CertificateId>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Alpn>,
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// Client certificates asked for and verified; `None` asks for none.
    pub client_auth: Option<ClientAuth>,
}

/// How a TLS listener verifies client certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The CA bundle's path, for messages.
    pub ca_path: PathBuf,
    /// The CA certificates client chains must lead to (at least one).
    pub roots: Vec<CertificateDer<'static>>,
    /// Whether a client without a certificate is refused at the handshake.
    pub mode: ClientAuthMode,
    /// The CRL file's path, for messages.
    pub crl_path: Option<PathBuf>,
    /// Revocation lists checked for every certificate of a client's chain.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The header (lower case) that carries the verified identity to the backend; a
    /// client-sent copy is always removed.
    pub header: Option<String>,
}

/// Whether a TLS listener with a client CA needs a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No certificate, no connection.
    Required,
    /// A client without a certificate is served, with no principal; one that presents a
    /// certificate must present a valid one.
    Optional,
}

/// An ALPN protocol Sluice can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Alpn {
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}

/// TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// Per-listener resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request head.
    pub max_request_header_bytes: u32,
    /// Largest accepted request body; `None` is unlimited.
    pub max_request_body_bytes: Option<u64>,
    /// Time allowed to receive the request head.
    pub header_read_timeout: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Concurrent client connections.
    pub max_connections: u32,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 header list size.
    pub h2_max_header_list_bytes: u32,
    /// A client that accepts no response bytes for this long is disconnected.
    pub send_timeout: Duration,
    /// An upgraded connection (WebSocket) idle in both directions this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Concurrent connections from one client address; `None` is no cap.
    pub max_connections_per_client: Option<u32>,
}

/// How a listener normalises request paths (RFC 3986 §6.2.2) before routing; the backend
/// receives the normalised path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSettings {
    /// What `%2F`, `%5C` and `\` in a path do.
    pub escaped_slashes: EscapedSlashes,
    /// Whether runs of `/` collapse into one.
    pub merge_slashes: bool,
}

/// What an encoded slash or a backslash in a request path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Left as they are: `%2F` is not a separator for routing, nor for the backend.
    Keep,
    /// The request is answered 400.
    Reject,
    /// `%2F`, `%5C` and `\` all become `/` before dot segments are removed.
    Decode,
}

/// Whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` headers are extended rather than
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardedTrust {
    /// Peers in these networks are trusted proxies.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Trust this many proxies in front of Sluice whatever their address (Envoy's
    /// `xff_num_trusted_hops`).
    pub trusted_hops: u8,
}

impl ForwardedTrust {
    /// Whether headers from `peer` are extended.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_hops > 0 || self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// A set of domains sharing one route table.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    /// Unique within the service.
    pub name: String,
    /// Hosts this virtual host serves; `HostPattern::Any` is the fallback.
    pub domains: Vec<HostPattern>,
    /// Evaluated in order; the first match wins.
    pub routes: Vec<Route>,
}

/// One route: a match, an action and per-route options.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Which requests this route takes.
    pub matcher: RouteMatch,
    /// What to do with them.
    pub action: RouteAction,
    /// Replaces the matched prefix (only for `PathMatch::Prefix`).
    pub prefix_rewrite: Option<String>,
    /// Headers added to the request before forwarding (name lower-cased).
    pub request_headers_add: Vec<(String, String)>,
    /// Headers removed from the request before forwarding (lower-cased).
    pub request_headers_remove: Vec<String>,
    /// Headers added to the response (name lower-cased).
    pub response_headers_add: Vec<(String, String)>,
    /// Headers removed from the response (lower-cased).
    pub response_headers_remove: Vec<String>,
    /// Whole-request timeout, retries included; `None` is off (long streams).
    pub timeout: Option<Duration>,
    /// Longest wait for the backend's response head or its next body frame; `None` is off.
    pub stream_idle_timeout: Option<Duration>,
    /// Retries; `None` means no retries.
    pub retry: Option<RetryPolicy>,
    /// Upgrade protocols (lower case, e.g. `websocket`) this route tunnels.
    pub upgrades: Vec<String>,
    /// The route's filter chain as indices into [`L7Service::filters`], in order; `None`
    /// runs every enabled filter of the service.
    pub filters: Option<Vec<usize>>,
}

/// Conditions a request must meet, all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Allowed methods (upper case); empty means any.
    pub methods: Vec<String>,
    /// Header conditions (names lower-cased).
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions.
    pub query: Vec<ValueMatch>,
}

/// How the request path is matched.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// The path starts with this.
    Prefix(String),
    /// The whole path matches this regex.
    Regex(Pattern),
}

/// A condition on a named header or query parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMatch {
    /// Header or parameter name.
    pub name: String,
    /// What its value must satisfy.
    pub condition: ValueCondition,
}

/// What a header or query parameter must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueCondition {
    /// It is present (any value).
    Present,
    /// It is absent.
    Absent,
    /// Its value equals this.
    Exact(String),
    /// Its whole value matches this regex.
    Regex(Pattern),
}

/// A compiled regex, compared by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// What a route does with a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Proxy to one of these pools, chosen by weight (at least one).
    Forward(Vec<WeightedPool>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse {
        /// Status code (200..=599).
        status: u16,
        /// Response body.
        body: Option<String>,
    },
}

/// A pool and its share of a route's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedPool {
    /// The pool.
    pub pool: PoolId,
    /// Relative weight (1..=10000).
    pub weight: u16,
}

/// A redirect answer; unset parts keep the request's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// New scheme.
    pub scheme: Option<Scheme>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path (starts with '/').
    pub path: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// URL scheme of a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

/// When and how often a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failures that trigger a retry.
    pub on: Vec<RetryOn>,
    /// Retries after the first try (0..=10).
    pub attempts: u8,
    /// Timeout of each try; the route timeout still bounds the total.
    pub per_try_timeout: Option<Duration>,
    /// Also retry methods that are not idempotent (POST, PATCH).
    pub non_idempotent: bool,
    /// Retries may add at most this percentage to the pool's request rate (0..=100).
    pub budget_percent: u8,
}

/// A failure that can trigger a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The upstream connection could not be established.
    ConnectFailure,
    /// The upstream reset the connection before responding.
    Reset,
    /// The upstream answered with this 5xx status.
    Status(u16),
}

/// Why a listener's client-certificate settings cannot verify anything.
#[derive(Debug, thiserror::Error)]
pub enum ClientVerifierError {
    /// A certificate of the CA bundle is not a usable trust anchor.
    #[error("certificate #{index} of {} is not a usable CA: {source}", path.display())]
    Root {
        /// The CA bundle.
        path: PathBuf,
        /// Its position in the bundle, from 1.
        index: usize,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the settings (an unparsable CRL, no roots).
    #[error("client certificate settings ({}): {source}", path.display())]
    Verifier {
        /// The CRL file when there is one, else the CA bundle.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

impl ClientAuth {
    /// The verifier a handshake runs: chains to `roots`, checked against `crls` (a
    /// certificate of the chain whose revocation status no CRL gives is refused).
    pub fn verifier(
        &self,
    ) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>, ClientVerifierError>
    {
        let mut store = rustls::RootCertStore::empty();
        for (i, root) in self.roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|source| ClientVerifierError::Root {
                    path: self.ca_path.clone(),
                    index: i + 1,
                    source,
                })?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(store),
            provider,
        )
        .with_crls(self.crls.iter().cloned());
        let builder = match self.mode {
            ClientAuthMode::Required => builder,
            ClientAuthMode::Optional => builder.allow_unauthenticated(),
        };
        builder
            .build()
            .map_err(|source| ClientVerifierError::Verifier {
                path: self
                    .crl_path
                    .clone()
                    .unwrap_or_else(|| self.ca_path.clone()),
                source,
            })
    }
}
