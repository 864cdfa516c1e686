//! `[dataplane]`: where the L4 data path keeps what outlives the agent.

use serde::Deserialize;
use toml::Spanned;

/// `[dataplane]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Absolute path on a bpffs mount; default `/sys/fs/bpf/sluice`.
    pub pin_dir: Option<Spanned<String>>,
}
