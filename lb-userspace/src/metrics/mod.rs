//! The Prometheus endpoint's content: the agent's own metrics (reloads, build info) in the
//! prometheus crate's types, and collectors that read the kernel's and the proxy's counters
//! at scrape time. Names follow Prometheus conventions: `sluice_` prefix, `_total` counters,
//! base units (`_seconds`, `_bytes`).

mod announce;
mod family;
mod health;
mod l7;
mod xdp;

use std::sync::Arc;

use prometheus::{Encoder, Gauge, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tracing::warn;

pub use announce::AnnounceCollector;
pub use family::Family;
pub use health::HealthCollector;
pub use l7::L7Collector;
pub use xdp::XdpCollector;

use crate::dataplane::StatsReader;

/// The registry and the metrics the agent updates itself.
pub struct Metrics {
    registry: Registry,
    reloads: IntCounterVec,
    last_reload: Gauge,
    last_reload_result: std::sync::Mutex<Option<ReloadRecord>>,
}

/// The outcome of the last reload, for the status page.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ReloadRecord {
    /// Whether it was applied.
    pub ok: bool,
    /// Unix time it finished.
    pub at: f64,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reloads = IntCounterVec::new(
            Opts::new(
                "sluice_config_reloads_total",
                "Config reloads, by result (success or failure).",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable!("valid static metric definition"));
        let last_reload = Gauge::new(
            "sluice_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load or reload that was applied.",
        )
        .unwrap_or_else(|_| unreachable!("valid static metric definition"));
        let build_info = IntGauge::with_opts(
            Opts::new("sluice_build_info", "Build of the running agent; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .unwrap_or_else(|_| unreachable!("valid static metric definition"));
        build_info.set(1);
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        let metrics = Self {
            registry,
            reloads,
            last_reload,
            last_reload_result: std::sync::Mutex::new(None),
        };
        metrics.register(Box::new(metrics.reloads.clone()));
        metrics.register(Box::new(metrics.last_reload.clone()));
        metrics.register(Box::new(build_info));
        metrics.config_applied();
        metrics
    }

    /// Adds a collector; a name clash is a bug, logged rather than fatal.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(err) = self.registry.register(collector) {
            warn!(error = %err, "registering a metrics collector");
        }
    }

    /// Adds the XDP program's counters.
    pub fn register_xdp(&self, stats: Arc<StatsReader>) {
        self.register(Box::new(XdpCollector::new(stats)));
    }

    /// Records a config that was applied (at start or by a reload).
    pub fn config_applied(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_reload.set(now);
    }

    /// Records a reload's result.
    pub fn reload_result(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        if success {
            self.config_applied();
        }
        let record = ReloadRecord {
            ok: success,
            at: unix_now(),
        };
        *self
            .last_reload_result
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(record);
    }

    /// The last reload's outcome (`None` before the first reload).
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        *self
            .last_reload_result
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reloads so far: (applied, rejected).
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.with_label_values(&["success"]).get(),
            self.reloads.with_label_values(&["failure"]).get(),
        )
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&families, &mut out) {
            warn!(error = %err, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_and_build_info_are_exported_with_conventional_names() {
        let metrics = Metrics::new();
        metrics.reload_result(true);
        metrics.reload_result(false);
        metrics.reload_result(false);
        let text = metrics.render();
        assert!(
            text.contains("sluice_config_reloads_total{result=\"failure\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sluice_config_reloads_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("sluice_build_info{version=\""), "{text}");
        assert!(text.contains("# TYPE sluice_config_last_reload_success_timestamp_seconds gauge"));
    }

    #[test]
    fn hand_built_families_render_and_empty_ones_are_dropped() {
        struct Fixed;
        impl prometheus::core::Collector for Fixed {
            fn desc(&self) -> Vec<&prometheus::core::Desc> {
                Vec::new()
            }
            fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
                let mut c = Family::counter("sluice_test_total", "A test counter.");
                c.count(&[("a", "x\"y")], 7);
                let mut h = Family::histogram("sluice_test_seconds", "A test histogram.");
                h.observe(&[], &[(0.5, 1), (1.0, 3)], 4, 2.5);
                let empty = Family::gauge("sluice_empty", "Nothing.");
                [c.finish(), h.finish(), empty.finish()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
        }
        let metrics = Metrics::new();
        metrics.register(Box::new(Fixed));
        let text = metrics.render();
        assert!(text.contains("sluice_test_total{a=\"x\\\"y\"} 7"), "{text}");
        assert!(
            text.contains("sluice_test_seconds_bucket{le=\"1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sluice_test_seconds_bucket{le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(!text.contains("sluice_empty"), "{text}");
    }
}
