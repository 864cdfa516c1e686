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
    /// New flows a CPU enters into the connection table per second; default 125000, 0: no limit.
    pub new_flows_per_cpu: Option<Spanned<i64>>,
    /// New flows per second one source address may open; default 0 (no limit).
    pub source_new_flow_rate: Option<Spanned<i64>>,
    /// New flows a source may open at once; default the rate.
    pub source_new_flow_burst: Option<Spanned<i64>>,
    /// What echo requests to a VIP get: "reply", "pass" or "drop"; default "reply".
    pub vip_echo: Option<Spanned<String>>,
}
