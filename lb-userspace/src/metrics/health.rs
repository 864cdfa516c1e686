//! Backend health as the checker last published it.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::health::HealthHandle;

/// Reads the latest health snapshot at scrape time.
pub struct HealthCollector {
    health: HealthHandle,
    descs: Vec<Desc>,
}

impl HealthCollector {
    pub fn new(health: HealthHandle) -> Self {
        Self {
            health,
            descs: super::family::descs(&["sluice_backend_healthy"]),
        }
    }
}

impl Collector for HealthCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let view = self.health.view();
        let mut healthy = Family::gauge(
            "sluice_backend_healthy",
            "1 when the backend passes its health checks, 0 when it does not.",
        );
        let mut usable = Family::gauge(
            "sluice_backend_usable",
            "1 when the backend takes new flows and requests (healthy, not drained, not ejected, \
             or its pool is in panic or fail-open mode).",
        );
        let mut drained = Family::gauge(
            "sluice_backend_drained",
            "1 when the backend was drained by hand.",
        );
        let mut transitions = Family::counter(
            "sluice_backend_health_transitions_total",
            "Changes of the backend's health-check verdict, both ways.",
        );
        let mut ejections = Family::counter(
            "sluice_backend_ejections_total",
            "Times outlier detection ejected the backend.",
        );
        for (pool, pool_view) in view.pools() {
            for backend in &pool_view.backends {
                let address = backend.address.to_string();
                let labels = [
                    ("pool", pool),
                    ("backend", backend.name.as_str()),
                    ("address", address.as_str()),
                ];
                let flag = |b: bool| if b { 1.0 } else { 0.0 };
                healthy.set(&labels, flag(backend.health.healthy));
                usable.set(&labels, flag(pool_view.usable.contains(backend.address)));
                drained.set(&labels, flag(backend.health.drained));
                transitions.count(&labels, backend.health.transitions);
                ejections.count(&labels, backend.health.ejections);
            }
        }
        let mut probes = Family::gauge(
            "sluice_health_probe_tasks",
            "Health-check tasks running (one per checked backend).",
        );
        probes.set(&[], self.health.running_probe_tasks() as f64);
        [healthy, usable, drained, transitions, ejections, probes]
            .into_iter()
            .filter_map(Family::finish)
            .collect()
    }
}
