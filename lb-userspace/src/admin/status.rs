//! What `GET /status` reports: the config in force and each backend's state.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// A snapshot the agent publishes after every change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Bumped each time a config is applied (1 at start).
    pub config_version: u64,
    pub config_path: String,
    /// Unix time the config in force was applied.
    pub config_applied_at: f64,
    pub services: Vec<ServiceStatus>,
    pub pools: Vec<PoolStatus>,
    /// The config these come from, for `explain` (route matching); not serialised.
    #[serde(skip)]
    pub config: Option<Arc<Config>>,
    /// What the node announces; absent without `[announce]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<crate::announce::AnnounceStatus>,
    /// Where each pool's backends come from; served by `GET /discovery`, not here.
    #[serde(skip)]
    pub discovery: Vec<crate::discovery::PoolSource>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    /// `l4-dsr`, `l4-nat` or `l7`.
    pub kind: String,
    /// Pools the service sends to.
    pub pools: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub policy: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub weight: u16,
    pub healthy: bool,
    pub drained: bool,
}
