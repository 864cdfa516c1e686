//! `[log]`: where the access log goes and in what format.

use serde::Deserialize;
use toml::Spanned;

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// File the access log is appended to; default none (standard error).
    pub access_log_file: Option<Spanned<String>>,
    /// "text" or "json"; default the agent's `--log-format`.
    pub access_log_format: Option<Spanned<String>>,
}
