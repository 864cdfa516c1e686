//! The l7 part of the config file as written: listener settings, virtual hosts, routes.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::config::model::{Alpn, ClientAuthMode, EscapedSlashes, Scheme, TlsVersion};

/// `[service.l7]`, without its virtual hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7 {
    /// Default: plain text.
    pub tls: Option<Spanned<Tls>>,
    /// Default true.
    pub h2c: Option<bool>,
    /// Port, 1..=65535; plain listeners only; default none.
    pub redirect_to_https: Option<Spanned<i64>>,
    /// Default true.
    pub access_log: Option<bool>,
    /// Default: all limits at their defaults.
    #[serde(default)]
    pub limits: Limits,
    /// Default: every path setting at its default.
    #[serde(default)]
    pub paths: Paths,
    /// Default: no peer is trusted.
    #[serde(default)]
    pub forwarded: Forwarded,
    /// `[[service.l7.filter]]`: the filters routes run; default none.
    #[serde(default)]
    pub filter: Vec<Spanned<super::Filter>>,
}

/// `[service.l7.paths]`: how request paths are normalised before routing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// `keep`, `reject` or `decode`; default `reject`.
    pub escaped_slashes: Option<EscapedSlashes>,
    /// Default true.
    pub merge_slashes: Option<bool>,
}

/// `[service.l7.forwarded]`: whose X-Forwarded-* / Forwarded / X-Real-IP headers are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    /// CIDRs of trusted proxies; default none.
    pub trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    /// 0..=10; default 0.
    pub trusted_hops: Option<Spanned<i64>>,
}

/// `[service.l7.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate names, at least one; the first is the default.
    pub certificates: Spanned<Vec<Spanned<String>>>,
    /// Default `["h2", "http/1.1"]`.
    pub alpn: Option<Spanned<Vec<Spanned<Alpn>>>>,
    /// Default `"1.2"`.
    pub min_version: Option<TlsVersion>,
    /// PEM CA bundle client certificates are verified against; default none (no client
    /// certificates asked for).
    pub client_ca: Option<Spanned<String>>,
    /// `required` or `optional`; default `required`; only with `client_ca`.
    pub client_auth: Option<Spanned<ClientAuthMode>>,
    /// PEM file of one or more CRLs; default none; only with `client_ca`.
    pub client_crl: Option<Spanned<String>>,
    /// Header the verified certificate's identity is forwarded in; default none; only with
    /// `client_ca`.
    pub client_cert_header: Option<Spanned<String>>,
}

/// `[service.l7.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// 1024..=1048576; default 65536.
    pub max_request_header_bytes: Option<Spanned<i64>>,
    /// Default 10 MiB; 0 means unlimited.
    pub max_request_body_bytes: Option<Spanned<i64>>,
    /// Duration; default `10s`.
    pub header_read_timeout: Option<Spanned<String>>,
    /// Duration; default `60s`.
    pub idle_timeout: Option<Spanned<String>>,
    /// 1..=10000000; default 10000.
    pub max_connections: Option<Spanned<i64>>,
    /// 1..=10000; default 100.
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    /// 1024..=1048576; default 65536.
    pub h2_max_header_list_bytes: Option<Spanned<i64>>,
    /// Duration; default `60s`.
    pub send_timeout: Option<Spanned<String>>,
    /// Duration; default `5m`.
    pub tunnel_idle_timeout: Option<Spanned<String>>,
    /// 0..=10000000; default 0 (no per-client cap).
    pub max_connections_per_client: Option<Spanned<i64>>,
}

/// `[[service.l7.virtual_host]]`, without its routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// Unique in the service; required.
    pub name: Spanned<String>,
    /// Exact, `*.suffix` or `*`; at least one; required.
    pub domains: Spanned<Vec<Spanned<String>>>,
}

/// `[[service.l7.virtual_host.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Required.
    #[serde(rename = "match")]
    pub matcher: Spanned<Match>,
    /// One of `forward`, `redirect`, `direct_response`.
    pub forward: Option<Spanned<Forward>>,
    /// One of `forward`, `redirect`, `direct_response`.
    pub redirect: Option<Spanned<Redirect>>,
    /// One of `forward`, `redirect`, `direct_response`.
    pub direct_response: Option<Spanned<DirectResponse>>,
    /// Only with `path_prefix`.
    pub prefix_rewrite: Option<Spanned<String>>,
    /// Header name -> value.
    #[serde(default)]
    pub request_headers_add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names.
    #[serde(default)]
    pub request_headers_remove: Vec<Spanned<String>>,
    /// Header name -> value.
    #[serde(default)]
    pub response_headers_add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names.
    #[serde(default)]
    pub response_headers_remove: Vec<Spanned<String>>,
    /// Duration; default `15s`; `0s` turns it off.
    pub timeout: Option<Spanned<String>>,
    /// Duration; default off.
    pub stream_idle_timeout: Option<Spanned<String>>,
    /// Default: no retries.
    pub retry: Option<Spanned<Retry>>,
    /// Upgrade protocols tunnelled; default `["websocket"]`.
    pub upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    /// Names of the service's filters this route runs, in order; default: every enabled one.
    pub filters: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A route's `match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// One of the three path matches.
    pub path_exact: Option<Spanned<String>>,
    /// One of the three path matches.
    pub path_prefix: Option<Spanned<String>>,
    /// One of the three path matches.
    pub path_regex: Option<Spanned<String>>,
    /// Default: any method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Default: none.
    #[serde(default)]
    pub headers: Vec<Spanned<ValueMatch>>,
    /// Default: none.
    #[serde(default)]
    pub query: Vec<Spanned<ValueMatch>>,
}

/// A header or query condition: a name and exactly one of `present`, `exact`, `regex`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Required.
    pub name: Spanned<String>,
    /// true: present; false: absent.
    pub present: Option<bool>,
    /// Value equals.
    pub exact: Option<String>,
    /// Value matches.
    pub regex: Option<Spanned<String>>,
}

/// `forward`: exactly one of `pool` and `pools`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// A single pool.
    pub pool: Option<Spanned<String>>,
    /// A weighted split.
    pub pools: Option<Spanned<Vec<WeightedPool>>>,
}

/// One item of `forward.pools`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedPool {
    /// Pool name; required.
    pub pool: Spanned<String>,
    /// 1..=10000; required.
    pub weight: Spanned<i64>,
}

/// `redirect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<Scheme>,
    /// New host.
    pub host: Option<Spanned<String>>,
    /// 1..=65535.
    pub port: Option<Spanned<i64>>,
    /// Starts with '/'.
    pub path: Option<Spanned<String>>,
    /// 301, 302, 303, 307 or 308; default 302.
    pub status: Option<Spanned<i64>>,
}

/// `direct_response`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// 200..=599; required.
    pub status: Spanned<i64>,
    /// Default: empty.
    pub body: Option<String>,
}

/// `retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Default `["connect_failure"]`.
    pub on: Option<Vec<Spanned<String>>>,
    /// 0..=10; default 2.
    pub attempts: Option<Spanned<i64>>,
    /// Duration; default: none.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Default false.
    pub non_idempotent: Option<bool>,
    /// 0..=100; default 20.
    pub budget_percent: Option<Spanned<i64>>,
}
