//! `[dataplane]`: where the L4 data path keeps what outlives the agent, and how its
//! connection table is sized and timed out.

use serde::Deserialize;
use toml::Spanned;

/// `[dataplane]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Absolute path on a bpffs mount; default `/sys/fs/bpf/sluice`.
    pub pin_dir: Option<Spanned<String>>,
    /// Entries of the connection table (and of the NAT reverse table); default 262144.
    pub conntrack_entries: Option<Spanned<i64>>,
    /// Idle timeout of an open TCP flow; default "3h".
    pub tcp_idle_timeout: Option<Spanned<String>>,
    /// Idle timeout of a UDP flow; default "5m".
    pub udp_idle_timeout: Option<Spanned<String>>,
    /// Idle timeout of a closing TCP flow (RST, or FIN from each end); default "10s".
    pub tcp_closing_timeout: Option<Spanned<String>>,
}
