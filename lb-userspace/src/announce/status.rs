//! What `/status` and the metrics show about announcements.

use serde::{Deserialize, Serialize};

/// The node's announcements, published after every change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AnnounceStatus {
    /// The kernel routing table the VIP routes are in (`[announce] table`).
    pub table: u32,
    /// Drained by `sluice drain-node`: every VIP is withdrawn until `undrain-node`.
    pub node_drained: bool,
    /// Every VIP of the config, announced or not.
    pub vips: Vec<VipStatus>,
    /// VIP routes added since the agent started.
    pub announcements: u64,
    /// VIP routes removed since the agent started.
    pub withdrawals: u64,
    /// Failed changes of the table since the agent started.
    pub errors: u64,
    /// The last failure, if the table does not hold what it should.
    pub last_error: Option<String>,
}

/// One VIP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    pub vip: String,
    /// Whether its route is in the table (so the BGP daemon announces it).
    pub announced: bool,
    /// `serving`, `no_backends` or `node_drained`.
    pub reason: String,
}
