//! What discovery found so far, pool by pool: the backends in force, when they last
//! changed, and the last failure; the source of `GET /discovery` and the discovery metrics.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Event, Outcome};
use crate::config::{Backend, Config, Discovery, WhenNoHealthy};
use crate::metrics::Metrics;

/// Where one pool's backends come from, for `GET /discovery` and `sluice discovery`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PoolSource {
    pub pool: String,
    /// `config` (listed in the file), `dns` or `endpoints_file`.
    pub source: String,
    /// The DNS name (with its record kind) or the file's path; absent for `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Backends in force.
    pub backends: usize,
    /// Unix time the backends last changed (for `config`: when the config was applied).
    pub last_changed: Option<f64>,
    /// Unix time of the last answer (or failure) from the source.
    pub last_update: Option<f64>,
    /// `found`, `empty` or `failed`: the last answer.
    pub last_result: Option<String>,
    /// The last failure's message, kept until an answer succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed resolutions or reads since the source was configured.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Entry {
    last_changed: Option<SystemTime>,
    last_update: Option<SystemTime>,
    last_result: Option<&'static str>,
    last_error: Option<String>,
    failures: u64,
}

/// The discovered backends of every discovered pool, and what is known about each source.
pub struct Book {
    discovered: BTreeMap<String, Vec<Backend>>,
    entries: BTreeMap<String, Entry>,
    updates: IntCounterVec,
    backends: IntGaugeVec,
}

impl Book {
    /// An empty book whose metrics are registered with `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let updates = IntCounterVec::new(
            Opts::new(
                "sluice_discovery_updates_total",
                "Answers from a pool's discovery source (DNS or endpoints file), by result: found, empty or failed.",
            ),
            &["pool", "result"],
        )
        .unwrap_or_else(|_| unreachable!("valid static metric definition"));
        let backends = IntGaugeVec::new(
            Opts::new(
                "sluice_discovery_backends",
                "Backends a discovered pool has in force.",
            ),
            &["pool"],
        )
        .unwrap_or_else(|_| unreachable!("valid static metric definition"));
        metrics.register(Box::new(updates.clone()));
        metrics.register(Box::new(backends.clone()));
        Self {
            discovered: BTreeMap::new(),
            entries: BTreeMap::new(),
            updates,
            backends,
        }
    }

    /// The backends discovered for each pool that has had an answer.
    pub fn discovered(&self) -> &BTreeMap<String, Vec<Backend>> {
        &self.discovered
    }

    /// Records `event` against the file's `config`; true when the pool's backends changed.
    /// Events of a source the config no longer has are ignored. A failure keeps the last
    /// set; an empty answer empties the pool under `when_no_healthy = "refuse"` and keeps
    /// the last set under `fail_open`.
    pub fn record(&mut self, event: Event, config: &Config) -> bool {
        let Some(pool) = config
            .pools
            .iter()
            .find(|p| p.name == event.pool && p.discovery.as_ref() == Some(&event.source))
        else {
            return false;
        };
        let now = SystemTime::now();
        let entry = self.entries.entry(pool.name.clone()).or_default();
        entry.last_update = Some(now);
        let result = match &event.outcome {
            Outcome::Found(_) => "found",
            Outcome::Empty => "empty",
            Outcome::Failed(_) => "failed",
        };
        entry.last_result = Some(result);
        self.updates.with_label_values(&[&pool.name, result]).inc();
        let next = match event.outcome {
            Outcome::Found(backends) => {
                entry.last_error = None;
                Some(backends)
            }
            Outcome::Empty => {
                entry.last_error = None;
                match (
                    pool.when_no_healthy,
                    self.discovered.contains_key(&pool.name),
                ) {
                    (WhenNoHealthy::FailOpen, true) => {
                        warn!(pool = %pool.name, "discovery answered with no backend; keeping the last set (when_no_healthy = \"fail_open\")");
                        None
                    }
                    _ => Some(Vec::new()),
                }
            }
            Outcome::Failed(message) => {
                entry.failures += 1;
                warn!(pool = %pool.name, failures = entry.failures, "discovery failed; keeping the last set of backends: {message}");
                entry.last_error = Some(message);
                None
            }
        };
        let Some(next) = next else {
            return false;
        };
        if self.discovered.get(&pool.name) == Some(&next) {
            return false;
        }
        info!(pool = %pool.name, backends = next.len(), "discovered backends changed");
        entry.last_changed = Some(now);
        self.backends
            .with_label_values(&[&pool.name])
            .set(i64::try_from(next.len()).unwrap_or(i64::MAX));
        self.discovered.insert(pool.name.clone(), next);
        true
    }

    /// Forgets pools that `config` no longer discovers (or discovers from another source:
    /// `same_source` says which kept their source).
    pub fn retain(&mut self, config: &Config, same_source: impl Fn(&str) -> bool) {
        let keep = |name: &String| {
            config
                .pools
                .iter()
                .any(|p| &p.name == name && p.discovery.is_some())
                && same_source(name)
        };
        self.discovered.retain(|name, _| keep(name));
        self.entries.retain(|name, _| keep(name));
        for name in self.backends_labels() {
            if !self.discovered.contains_key(&name) {
                let _ = self.backends.remove_label_values(&[&name]);
            }
        }
    }

    fn backends_labels(&self) -> Vec<String> {
        use prometheus::core::Collector;
        self.backends
            .collect()
            .iter()
            .flat_map(|family| family.get_metric().iter())
            .filter_map(|m| m.get_label().first().map(|l| l.value().to_owned()))
            .collect()
    }

    /// Every pool of the config in force (`config`, applied at `applied_at`) and where its
    /// backends come from.
    pub fn sources(&self, config: &Config, applied_at: SystemTime) -> Vec<PoolSource> {
        config
            .pools
            .iter()
            .map(|pool| {
                let (source, target) = match &pool.discovery {
                    None => ("config", None),
                    Some(Discovery::Dns(dns)) => {
                        let kind = match dns.record {
                            crate::config::DnsRecord::Address { .. } => "A/AAAA",
                            crate::config::DnsRecord::Srv => "SRV",
                        };
                        ("dns", Some(format!("{} {kind}", dns.name)))
                    }
                    Some(Discovery::EndpointsFile(path)) => {
                        ("endpoints_file", Some(path.display().to_string()))
                    }
                };
                let entry = self.entries.get(&pool.name);
                let last_changed = match pool.discovery {
                    None => Some(applied_at),
                    Some(_) => entry.and_then(|e| e.last_changed),
                };
                PoolSource {
                    pool: pool.name.clone(),
                    source: source.into(),
                    target,
                    backends: pool.backends.len(),
                    last_changed: last_changed.map(unix),
                    last_update: entry.and_then(|e| e.last_update).map(unix),
                    last_result: entry.and_then(|e| e.last_result).map(str::to_owned),
                    last_error: entry.and_then(|e| e.last_error.clone()),
                    failures: entry.map_or(0, |e| e.failures),
                }
            })
            .collect()
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
