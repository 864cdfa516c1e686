//! `GET /discovery`: where each pool's backends come from and when they last changed.

use serde::{Deserialize, Serialize};

use super::Status;
use crate::discovery::PoolSource;

/// The body of `GET /discovery` (and the output of `sluice discovery`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryReport {
    /// Every pool of the config in force, in config order.
    pub pools: Vec<PoolSource>,
}

/// The report as JSON, from the status the agent last published.
pub fn body(status: &Status) -> String {
    let report = DiscoveryReport {
        pools: status.discovery.clone(),
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
}
