//! `[[service.l7.filter]]` as written: a name, whether it runs by default, and exactly one
//! filter type's settings.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::config::model::{ClientIds, RateKeyName};

/// `[[service.l7.filter]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Unique in the service; keys the filter's state across reloads; required.
    pub name: Spanned<String>,
    /// Default true: in the chain of every route that does not list its own `filters`.
    pub enabled: Option<bool>,
    /// One filter type.
    pub headers: Option<Spanned<Headers>>,
    /// One filter type.
    pub request_id: Option<Spanned<RequestId>>,
    /// One filter type.
    pub rate_limit: Option<Spanned<RateLimit>>,
    /// One filter type.
    pub api_key: Option<Spanned<super::ApiKey>>,
    /// One filter type.
    pub jwt: Option<Spanned<super::Jwt>>,
    /// One filter type.
    pub authz: Option<Spanned<super::Authz>>,
    /// One filter type.
    pub cors: Option<Spanned<Cors>>,
    /// One filter type.
    pub ext_authz: Option<Spanned<super::ExtAuthz>>,
}

/// `cors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins (`https://host[:port]`), or `["*"]`; required.
    pub allow_origins: Vec<Spanned<String>>,
    /// Default `GET`, `HEAD`, `POST`.
    pub allow_methods: Option<Vec<Spanned<String>>>,
    /// Header names; default none.
    #[serde(default)]
    pub allow_headers: Vec<Spanned<String>>,
    /// Header names; default none.
    #[serde(default)]
    pub expose_headers: Vec<Spanned<String>>,
    /// Default false.
    pub allow_credentials: Option<bool>,
    /// Duration; default none.
    pub max_age: Option<Spanned<String>>,
}

/// `headers`: the same edits a route's `*_headers_*` fields make.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// Header name -> value; default none.
    #[serde(default)]
    pub request_add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names; default none.
    #[serde(default)]
    pub request_remove: Vec<Spanned<String>>,
    /// Header name -> value; default none.
    #[serde(default)]
    pub response_add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Header names; default none.
    #[serde(default)]
    pub response_remove: Vec<Spanned<String>>,
}

/// `request_id`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestId {
    /// Default `x-request-id`.
    pub header: Option<Spanned<String>>,
    /// `keep`, `replace` or `refuse`; default `keep`.
    pub client: Option<ClientIds>,
    /// Default true.
    pub traceparent: Option<bool>,
    /// Default true.
    pub echo: Option<bool>,
}

/// `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per `per`, 1..=1000000000; required.
    pub rate: Spanned<i64>,
    /// Duration; default `1s`.
    pub per: Option<Spanned<String>>,
    /// 1..=1000000000; default `rate`.
    pub burst: Option<Spanned<i64>>,
    /// Default `client`.
    pub key: Option<Spanned<RateKeyName>>,
    /// Only with `key = "header"`.
    pub header: Option<Spanned<String>>,
    /// 1..=10000000; default 100000.
    pub max_keys: Option<Spanned<i64>>,
    /// `redis://host:port[/db]`; default none (a local limit only).
    pub redis: Option<Spanned<String>>,
    /// Duration; only with `redis`; default `50ms`.
    pub redis_timeout: Option<Spanned<String>>,
}
