//! The proxy's counters and latency histograms, per route, pool and backend.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::proxy::stats::{Histogram, LATENCY_BOUNDS_US, OVERLOADS, RequestStats, StatsRegistry};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Reads the proxy's atomics at scrape time.
pub struct L7Collector {
    stats: Arc<StatsRegistry>,
    descs: Vec<Desc>,
}

impl L7Collector {
    pub fn new(stats: Arc<StatsRegistry>) -> Self {
        Self {
            stats,
            descs: super::family::descs(&["sluice_l7_route_requests_total"]),
        }
    }
}

impl Collector for L7Collector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut route_requests = Family::counter(
            "sluice_l7_route_requests_total",
            "Requests answered on an L7 route, by status class.",
        );
        let mut route_latency = Family::histogram(
            "sluice_l7_route_request_duration_seconds",
            "Time from an L7 request's head to the end of its response, per route.",
        );
        let mut route_bytes = Family::counter(
            "sluice_l7_route_response_bytes_total",
            "Response body bytes sent to clients, per route.",
        );
        for (service, route, stats) in self.stats.routes() {
            let labels = [("service", &*service), ("route", &*route)];
            requests(&mut route_requests, &labels, stats.as_ref());
            route_bytes.count(&labels, stats.bytes_sent.load(Relaxed));
            histogram(&mut route_latency, &labels, &stats.latency);
        }

        let mut pool_requests = Family::counter(
            "sluice_l7_pool_requests_total",
            "Requests sent to an upstream pool, by final status class.",
        );
        let mut pool_latency = Family::histogram(
            "sluice_l7_pool_request_duration_seconds",
            "Time requests to an upstream pool took, retries included.",
        );
        let mut retries = Family::counter(
            "sluice_l7_upstream_retries_total",
            "Retries sent to an upstream pool.",
        );
        let mut over_budget = Family::counter(
            "sluice_l7_upstream_retries_over_budget_total",
            "Retries not sent because the pool's retry budget was spent.",
        );
        let mut no_backend = Family::counter(
            "sluice_l7_pool_no_backend_total",
            "Requests answered 503 because the pool had no usable backend.",
        );
        let mut overflow = Family::counter(
            "sluice_l7_pool_overflow_total",
            "Requests answered 503 (or retries skipped) because a circuit breaker of the pool was open, by limit.",
        );
        for (pool, stats) in self.stats.pools() {
            let labels = [("pool", &*pool)];
            for (limit, counter) in OVERLOADS.iter().zip(&stats.overflow) {
                overflow.count(
                    &[("pool", &*pool), ("limit", limit.name())],
                    counter.load(Relaxed),
                );
            }
            requests(&mut pool_requests, &labels, &stats.requests);
            histogram(&mut pool_latency, &labels, &stats.requests.latency);
            retries.count(&labels, stats.retries.load(Relaxed));
            over_budget.count(&labels, stats.retries_over_budget.load(Relaxed));
            no_backend.count(&labels, stats.no_backend.load(Relaxed));
        }

        let mut backend_responses = Family::counter(
            "sluice_l7_backend_responses_total",
            "Tries that got a response from an upstream backend, by status class.",
        );
        let mut backend_latency = Family::histogram(
            "sluice_l7_backend_response_duration_seconds",
            "Time upstream backends took to answer a try.",
        );
        let mut connect_errors = Family::counter(
            "sluice_l7_upstream_connect_errors_total",
            "Tries that could not connect to an upstream backend.",
        );
        let mut failures = Family::counter(
            "sluice_l7_upstream_failures_total",
            "Tries that failed after connecting (reset, timeout, invalid response).",
        );
        for (pool, backend, stats) in self.stats.backends() {
            let labels = [("pool", &*pool), ("backend", backend.as_str())];
            requests(&mut backend_responses, &labels, &stats.responses);
            histogram(&mut backend_latency, &labels, &stats.responses.latency);
            connect_errors.count(&labels, stats.connect_failures.load(Relaxed));
            failures.count(&labels, stats.failures.load(Relaxed));
        }

        let mut local = Family::counter(
            "sluice_l7_local_responses_total",
            "Responses the proxy made itself, without a backend's answer (no route, bad requests, timeouts, redirects, direct responses, gateway errors), by listener and status.",
        );
        let mut refused = Family::counter(
            "sluice_l7_connections_refused_total",
            "Client connections closed at accept, by listener and reason.",
        );
        let mut tls_failures = Family::counter(
            "sluice_l7_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by listener and reason (client certificate refusals of mTLS by cause, timeout, other).",
        );
        for (service, stats) in self.stats.listeners() {
            // Like the local responses, a reason appears with its first failure: a plain
            // HTTP listener shows none.
            for (failure, count) in stats.tls_failures().filter(|(_, n)| *n > 0) {
                tls_failures.count(
                    &[("service", &*service), ("reason", failure.reason())],
                    count,
                );
            }
            for (status, count) in stats.local_responses() {
                let status = status.to_string();
                local.count(&[("service", &*service), ("status", &status)], count);
            }
            refused.count(
                &[("service", &*service), ("reason", "per_client")],
                stats.refused_per_client.load(Relaxed),
            );
        }

        let mut decisions = Family::counter(
            "sluice_l7_filter_decisions_total",
            "Requests each L7 filter let go on (decision=\"allow\") or answered itself (decision=\"deny\", by reason).",
        );
        let mut events = Family::counter(
            "sluice_l7_filter_events_total",
            "Things L7 filters count besides decisions (jwt: JWKS fetches, by event).",
        );
        for (service, filter, stats) in self.stats.filters() {
            for (event, count) in stats.events() {
                events.count(
                    &[
                        ("service", &*service),
                        ("filter", &*filter),
                        ("type", stats.filter_type),
                        ("event", event),
                    ],
                    count,
                );
            }
            let base = [
                ("service", &*service),
                ("filter", &*filter),
                ("type", stats.filter_type),
            ];
            let mut allowed = base.to_vec();
            allowed.extend([("decision", "allow"), ("reason", "")]);
            decisions.count(&allowed, stats.allowed.load(Relaxed));
            for (reason, count) in stats.denied() {
                let mut denied = base.to_vec();
                denied.extend([("decision", "deny"), ("reason", reason)]);
                decisions.count(&denied, count);
            }
        }

        let mut access_dropped = Family::counter(
            "sluice_access_log_dropped_lines_total",
            "Access-log lines dropped because the log's buffer was full (its destination could not keep up) or a write failed; requests never wait for the log.",
        );
        access_dropped.count(
            &[],
            crate::access_log_writer::global().map_or(0, |w| w.dropped()),
        );

        [
            access_dropped,
            local,
            refused,
            tls_failures,
            decisions,
            events,
            overflow,
            route_requests,
            route_latency,
            route_bytes,
            pool_requests,
            pool_latency,
            retries,
            over_budget,
            no_backend,
            backend_responses,
            backend_latency,
            connect_errors,
            failures,
        ]
        .into_iter()
        .filter_map(Family::finish)
        .collect()
    }
}

fn requests(family: &mut Family, labels: &[(&str, &str)], stats: &RequestStats) {
    for (class, counter) in CLASSES.iter().zip(&stats.by_class) {
        let mut with_class = labels.to_vec();
        with_class.push(("status_class", class));
        family.count(&with_class, counter.load(Relaxed));
    }
}

fn histogram(family: &mut Family, labels: &[(&str, &str)], histogram: &Histogram) {
    let (cumulative, sum_us, count) = histogram.snapshot();
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
        .iter()
        .zip(&cumulative)
        .map(|(bound, count)| (*bound as f64 / 1e6, *count))
        .collect();
    family.observe(labels, &buckets, count, sum_us as f64 / 1e6);
}
