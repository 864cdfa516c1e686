//! The authentication and authorization filters' settings as written.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `api_key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The keys file, `name key` per line; relative to the config file; required.
    pub keys_file: Spanned<String>,
    /// The header carrying the key; default `x-api-key` unless `query` is given.
    pub header: Option<Spanned<String>>,
    /// The query parameter carrying the key; default none.
    pub query: Option<Spanned<String>>,
}

/// `jwt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// A JWKS file; exactly one of `jwks_file` and `jwks_url`.
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS URL (`http://` or `https://`).
    pub jwks_url: Option<Spanned<String>>,
    /// A PEM CA bundle; only with an `https://` `jwks_url`; default the system's trust store.
    pub jwks_ca_file: Option<Spanned<String>>,
    /// Duration; only with `jwks_url`; default `5m`.
    pub jwks_refresh: Option<Spanned<String>>,
    /// Duration; only with `jwks_url`; default `5s`.
    pub jwks_timeout: Option<Spanned<String>>,
    /// Default none (not checked).
    pub issuer: Option<Spanned<String>>,
    /// Default none (not checked).
    #[serde(default)]
    pub audiences: Vec<Spanned<String>>,
    /// Duration, `0s` allowed; default `60s`.
    pub leeway: Option<Spanned<String>>,
    /// Default none.
    pub cookie: Option<Spanned<String>>,
    /// Default every supported one.
    pub algorithms: Option<Vec<Spanned<String>>>,
    /// Claim -> header; default none.
    #[serde(default)]
    pub forward_claims: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `ext_authz`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthz {
    /// `http://` or `https://host:port/path`; required.
    pub url: Spanned<String>,
    /// A PEM CA bundle; only with an `https://` url; default the system's trust store.
    pub ca_file: Option<Spanned<String>>,
    /// Duration; default `200ms`.
    pub timeout: Option<Spanned<String>>,
    /// `open` or `closed`; default `closed`.
    pub failure_mode: Option<Spanned<String>>,
    /// Header names; default `["authorization"]`.
    pub send_headers: Option<Vec<Spanned<String>>>,
    /// Header names; default none.
    #[serde(default)]
    pub add_to_request: Vec<Spanned<String>>,
}

/// `authz`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authz {
    /// `allow` or `deny`; required.
    pub default: Spanned<String>,
    /// In order; the first that matches decides. Default none.
    #[serde(default)]
    pub rule: Vec<Spanned<AuthzRule>>,
}

/// `[[...authz.rule]]`: every condition given must hold.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// `allow` or `deny`; required.
    pub action: Spanned<String>,
    /// Any of these principals.
    pub principals: Option<Vec<Spanned<String>>>,
    /// Every claim = value.
    #[serde(default)]
    pub claims: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Any of these methods.
    pub methods: Option<Vec<Spanned<String>>>,
    /// The normalised path, exactly.
    pub path: Option<Spanned<String>>,
    /// The normalised path starts with this.
    pub path_prefix: Option<Spanned<String>>,
    /// The client address is in any of these.
    pub client_cidrs: Option<Vec<Spanned<String>>>,
}
