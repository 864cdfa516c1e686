//! The validated filters of an l7 listener: what each built-in filter does, typed.

use std::time::Duration;

use serde::Deserialize;

use super::{ApiKeySpec, AuthzSpec, ExtAuthzSpec, JwtSpec};

/// One `[[service.l7.filter]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// Unique in the service; the filter's state (rate-limit buckets) is kept across reloads
    /// under this name while its settings stay the same.
    pub name: String,
    /// In the chain of every route that does not list its own `filters`.
    pub enabled: bool,
    /// What it does.
    pub kind: FilterKind,
}

/// A built-in filter and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterKind {
    /// Request and response header edits.
    Headers(HeaderEdits),
    /// `x-request-id` and W3C `traceparent`.
    RequestId(RequestIdSpec),
    /// Token buckets.
    RateLimit(RateLimitSpec),
    /// API keys from a file; the key's name becomes the principal.
    ApiKey(ApiKeySpec),
    /// JSON Web Tokens checked against a JWKS; `sub` becomes the principal.
    Jwt(JwtSpec),
    /// Allow/deny rules on the principal, claims, method, path and client address.
    Authz(AuthzSpec),
    /// Cross-origin resource sharing: preflights answered, responses marked.
    Cors(CorsSpec),
    /// A check by an external HTTP service.
    ExtAuthz(ExtAuthzSpec),
}

/// `cors` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSpec {
    /// The allowed origins (`scheme://host[:port]`); `None`: any (`*`).
    pub allow_origins: Option<Vec<String>>,
    /// Methods a preflight may ask for.
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (lower case).
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read (lower case).
    pub expose_headers: Vec<String>,
    /// Whether requests with credentials (cookies) may be read.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
}

impl FilterKind {
    /// The filter type as written in the config (the metric label).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Headers(_) => "headers",
            Self::RequestId(_) => "request_id",
            Self::RateLimit(_) => "rate_limit",
            Self::ApiKey(_) => "api_key",
            Self::Jwt(_) => "jwt",
            Self::Authz(_) => "authz",
            Self::Cors(_) => "cors",
            Self::ExtAuthz(_) => "ext_authz",
        }
    }

    /// Every reason a denial of this filter type gives (its metric labels).
    pub fn deny_reasons(&self) -> &'static [&'static str] {
        match self {
            Self::Headers(_) => &[],
            Self::RequestId(_) => &["client_id"],
            Self::RateLimit(_) => &["over_limit"],
            Self::ApiKey(_) => &["missing_key", "unknown_key"],
            Self::Jwt(_) => &[
                "missing_token",
                "malformed",
                "alg_refused",
                "unknown_kid",
                "no_keys",
                "bad_signature",
                "expired",
                "not_yet_valid",
                "wrong_issuer",
                "wrong_audience",
                "missing_claim",
            ],
            Self::Authz(_) => &["denied_by_rule", "denied_by_default"],
            Self::Cors(_) => &["preflight", "preflight_refused"],
            Self::ExtAuthz(_) => &["denied", "unavailable"],
        }
    }

    /// Every event this filter type counts besides its decisions (its metric labels).
    pub fn events(&self) -> &'static [&'static str] {
        match self {
            Self::Jwt(JwtSpec {
                keys: super::JwksSource::Url { .. },
                ..
            }) => &["jwks_fetched", "jwks_fetch_failed"],
            Self::ExtAuthz(_) => &["unavailable_allowed"],
            _ => &[],
        }
    }
}

/// Header edits: removals first, then additions (which replace). Names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Set on the forwarded request.
    pub request_add: Vec<(String, String)>,
    /// Removed from the forwarded request.
    pub request_remove: Vec<String>,
    /// Set on the response.
    pub response_add: Vec<(String, String)>,
    /// Removed from the response.
    pub response_remove: Vec<String>,
}

/// `request_id` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdSpec {
    /// The request-id header (lower case).
    pub header: String,
    /// What a client-sent id does.
    pub client: ClientIds,
    /// Keep a valid `traceparent` or start a new trace.
    pub traceparent: bool,
    /// Send the request id back on the response.
    pub echo: bool,
}

/// What a request id the client sent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIds {
    /// Kept when well formed (else replaced).
    Keep,
    /// Always replaced by a generated one.
    Replace,
    /// The request is answered 400.
    Refuse,
}

/// `rate_limit` settings: a token bucket of `burst` tokens refilled at `rate` per `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    /// Tokens added per `per`.
    pub rate: u32,
    /// The period `rate` is counted over.
    pub per: Duration,
    /// Bucket size.
    pub burst: u32,
    /// What a bucket belongs to.
    pub key: RateKey,
    /// Buckets kept; the least recently used goes first.
    pub max_keys: u32,
    /// A limit shared through Redis by every instance using it.
    pub shared: Option<SharedLimitSpec>,
}

/// Where a shared rate limit is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLimitSpec {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// How long a request waits for Redis before the local limit decides.
    pub timeout: Duration,
}

/// What a rate-limit bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP address.
    Client,
    /// The principal an earlier filter established (the client IP without one).
    Principal,
    /// One bucket for every request.
    Global,
    /// This request header's value (the client IP without it); lower case.
    Header(String),
}

/// `key` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKeyName {
    /// [`RateKey::Client`].
    Client,
    /// [`RateKey::Principal`].
    Principal,
    /// [`RateKey::Global`].
    Global,
    /// [`RateKey::Header`].
    Header,
}
