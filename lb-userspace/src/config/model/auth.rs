//! The validated settings of the authentication and authorization filters.

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::config::jwks::{Jwk, JwtAlg};

/// `api_key` settings: the keys (as SHA-256 hashes) and where a request presents one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySpec {
    /// The keys file the keys were read from (named in logs).
    pub file: PathBuf,
    /// The keys: `(name, SHA-256 of the key)`, in file order.
    pub keys: Vec<(String, [u8; 32])>,
    /// The request header carrying the key (lower case), if any.
    pub header: Option<String>,
    /// The query parameter carrying the key, if any.
    pub query: Option<String>,
}

/// How `api_key` keeps a key: its SHA-256.
pub fn key_hash(key: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `jwt` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSpec {
    /// Where the verification keys come from.
    pub keys: JwksSource,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match); empty: `aud` not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// A cookie the token may come in, after `Authorization: Bearer`.
    pub cookie: Option<String>,
    /// The algorithms accepted (each key narrows them further to its own type's).
    pub algorithms: Vec<JwtAlg>,
    /// `(claim, header)`: claims set as request headers; client-sent copies are removed.
    pub forward_claims: Vec<(String, String)>,
}

/// Where a `jwt` filter's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file, read with the config.
    File {
        /// The file.
        path: PathBuf,
        /// Its keys.
        keys: Vec<Jwk>,
    },
    /// A URL, fetched at start and every `refresh`.
    Url {
        /// `http://` or `https://host[:port]/path`.
        url: String,
        /// For an https URL, what its server's certificate must chain to.
        trust: Option<TrustRoots>,
        /// Time between fetches.
        refresh: Duration,
        /// How long a fetch may take.
        timeout: Duration,
    },
}

/// `ext_authz` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzSpec {
    /// `http://` or `https://host[:port]/path`: checks go to this path followed by the
    /// request's.
    pub url: String,
    /// For an https URL, what the service's certificate must chain to.
    pub trust: Option<TrustRoots>,
    /// How long a check may take.
    pub timeout: Duration,
    /// What an unreachable or silent service means.
    pub failure_mode: FailureMode,
    /// Request headers sent to the service (lower case).
    pub send_headers: Vec<String>,
    /// Headers of an allowing answer set on the request (lower case).
    pub add_to_request: Vec<String>,
}

/// The certificates an outside service's certificate must chain to (an https JWKS URL or
/// authorization service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The system's trust store, read when the filter is built.
    System,
    /// A CA bundle, read with the config.
    Bundle {
        /// The file.
        path: PathBuf,
        /// Its certificates.
        roots: Vec<CertificateDer<'static>>,
    },
}

/// What `ext_authz` does when its service gives no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// The request goes on.
    Open,
    /// The request is answered 503.
    Closed,
}

/// `authz` settings: ordered rules, the first that matches decides, else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzSpec {
    /// In order.
    pub rules: Vec<AuthzRule>,
    /// What a request no rule matches gets.
    pub default: AuthzAction,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzAction {
    /// The request goes on.
    Allow,
    /// The request is answered 403.
    Deny,
}

/// One rule: every condition given must hold (a rule with none matches every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRule {
    /// What a matching request gets.
    pub action: AuthzAction,
    /// Any of these principals (empty: any, or none).
    pub principals: Vec<String>,
    /// Every `(claim, value)`: a string claim equal to it, or a list claim holding it.
    pub claims: Vec<(String, String)>,
    /// Any of these methods (upper case; empty: any).
    pub methods: Vec<String>,
    /// The normalised path.
    pub path: Option<AuthzPath>,
    /// Any of these networks (empty: any client).
    pub client_cidrs: Vec<ipnet::IpNet>,
}

/// How a rule matches the normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzPath {
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this.
    Prefix(String),
}
