//! `[announce]` as written: where the agent puts the routes of the VIPs it announces.

use serde::Deserialize;
use toml::Spanned;

/// `[announce]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// Kernel routing table id; required. Not 0, 253 (default), 254 (main) or 255 (local).
    pub table: Spanned<i64>,
    /// Duration; default `1s`.
    pub withdraw_grace: Option<Spanned<String>>,
}
