//! The authentication and authorization filters' settings as written.

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
