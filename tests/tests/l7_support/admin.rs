//! The agent's control plane as a test sees it: the admin API (status, metrics, reload), the
//! `sluice` CLI, SIGHUP and config-file saves, all inside the lab's namespace. The harness's
//! blocking HTTP client (`sluice_tests::http`) keeps these helpers usable from any thread.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_tests::{Netns, http_client};

use super::Lab;

/// Where the agent's admin API listens in the lab (the `[admin]` default).
pub const ADMIN: SocketAddr = sluice_tests::DEFAULT_ADMIN;

/// Time one control-plane call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status code and body.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body, as text.
    pub body: String,
}

/// `METHOD path` to `addr` from inside `ns`, over a fresh connection.
pub fn fetch(ns: &Netns, addr: SocketAddr, method: &str, path: &str) -> Result<Answer, String> {
    let response = ns
        .in_ns(|| http_client::request(addr, method, path, CALL_TIMEOUT))
        .map_err(|e| format!("{method} {path} at {addr}: {e}"))?;
    Ok(Answer {
        status: response.status,
        body: response.body,
    })
}

/// The value of one sample in a Prometheus text exposition: `series` is the name and labels
/// exactly as the agent renders them, e.g. `sluice_config_reloads_total{result="success"}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Reload counters and config version, read together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloads {
    /// `sluice_config_reloads_total{result="success"}`.
    pub success: u64,
    /// `sluice_config_reloads_total{result="failure"}`.
    pub failure: u64,
    /// `config_version` of `GET /status`.
    pub version: u64,
}

impl Lab {
    /// `METHOD path` on the admin API; panics when it cannot be reached.
    pub fn admin(&self, method: &str, path: &str) -> Answer {
        fetch(&self.ns, ADMIN, method, path)
            .unwrap_or_else(|e| panic!("admin API: {e}; agent log:\n{}", self.log()))
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        let answer = self.admin("GET", "/metrics");
        assert_eq!(answer.status, 200, "GET /metrics: {}", answer.body);
        answer.body
    }

    /// A sample of `GET /metrics` (see [`sample`]), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics(), series).unwrap_or(0.0)
    }

    /// How many requests filter `filter` (of type `kind`) of the service `gw`, as every
    /// gateway test names it, decided `decision` for `reason` ("" when allowed).
    pub fn filter_decisions(&self, filter: &str, kind: &str, decision: &str, reason: &str) -> f64 {
        self.metric(&format!(
            "sluice_l7_filter_decisions_total{{service=\"gw\",filter=\"{filter}\",type=\"{kind}\",decision=\"{decision}\",reason=\"{reason}\"}}"
        ))
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let answer = self.admin("GET", "/status");
        assert_eq!(answer.status, 200, "GET /status: {}", answer.body);
        serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("GET /status is not JSON ({e}): {}", answer.body))
    }

    /// Whether `GET /status` shows backend `backend` of `pool` healthy (`None`: not listed).
    pub fn backend_healthy(&self, pool: &str, backend: &str) -> Option<bool> {
        let status = self.status();
        status["pools"]
            .as_array()?
            .iter()
            .filter(|p| p["name"] == pool)
            .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
            .find(|b| b["name"] == backend)
            .and_then(|b| b["healthy"].as_bool())
    }

    /// The reload counters and the config version now.
    pub fn reloads(&self) -> Reloads {
        let metrics = self.metrics();
        let count = |result: &str| {
            let series = format!("sluice_config_reloads_total{{result=\"{result}\"}}");
            sample(&metrics, &series)
                .unwrap_or_else(|| panic!("/metrics has no {series}:\n{metrics}"))
                as u64
        };
        let version = self.status()["config_version"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET /status has no config_version"));
        Reloads {
            success: count("success"),
            failure: count("failure"),
            version,
        }
    }

    /// Replaces the config file the way careful editors save: a new file renamed over the
    /// old one, so the agent never reads half of it. The agent watches the file, so this
    /// alone reloads it.
    pub fn save_config(&self, config: &str) {
        let path = self.agent().config_path();
        let staged = path.with_extension("toml.new");
        std::fs::write(&staged, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", staged.display()));
        std::fs::rename(&staged, &path).unwrap_or_else(|e| {
            panic!("renaming {} over {}: {e}", staged.display(), path.display())
        });
    }

    /// Runs `sluice ARGS` (the CLI) in the lab; returns whether it succeeded and what it
    /// printed (stdout then stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        sluice_tests::sluice_cli(&self.ns, args)
    }
}
