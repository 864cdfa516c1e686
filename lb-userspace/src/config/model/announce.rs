//! The validated `[announce]` table.

use std::time::Duration;

/// Route announcement: the agent keeps one route per announced VIP in a kernel routing table
/// that a BGP daemon on the node exports (see `config/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The routing table the agent owns: it adds and removes its VIP routes there.
    pub table: u32,
    /// How long the data path keeps forwarding after a shutdown withdrew every VIP, so the
    /// router has moved the traffic away before the XDP program is detached.
    pub withdraw_grace: Duration,
}
