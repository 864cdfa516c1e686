//! Small config builders for the health tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    Admin, Backend, Config, HealthCheck, HealthCheckKind, OutlierDetection, Policy, Pool,
    UpstreamProtocol, WhenNoHealthy,
};

/// A check of `kind` every `interval_ms`, timing out at 80% of it, rise 2, fall 3, no jitter.
pub fn check(kind: HealthCheckKind, interval_ms: u64) -> HealthCheck {
    HealthCheck {
        kind,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms * 4 / 5),
        rise: 2,
        fall: 3,
        jitter_percent: 0,
    }
}

/// Outlier detection ejecting after 3 failures for 10 s, then 20 s, at most 25 s.
pub fn outliers(max_ejected_percent: u8) -> OutlierDetection {
    OutlierDetection {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(25),
        max_ejected_percent,
        count_5xx: true,
    }
}

/// A pool of `backends` (named after their addresses, weight 1) with `check`, panic
/// threshold 50 and `fail_open`.
pub fn pool(name: &str, backends: &[SocketAddr], check: HealthCheck) -> Pool {
    Pool {
        name: name.into(),
        policy: Policy::RoundRobin,
        upstream_protocol: UpstreamProtocol::Http1,
        connect_timeout: Duration::from_secs(1),
        panic_threshold: 50,
        when_no_healthy: WhenNoHealthy::FailOpen,
        health_check: check,
        outlier_detection: None,
        circuit_breakers: crate::config::CircuitBreakers::default(),
        backends: backends
            .iter()
            .map(|a| Backend {
                name: a.to_string(),
                address: *a,
                weight: 1,
            })
            .collect(),
        discovery: None,
        slow_start: None,
    }
}

/// A config of `pools` and nothing else.
pub fn config(pools: Vec<Pool>) -> Config {
    Config {
        interfaces: Vec::new(),
        admin: Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            token_file: None::<PathBuf>,
            metrics_path: "/metrics".into(),
        },
        certificates: Vec::new(),
        pools,
        services: Vec::new(),
        announce: None,
        dataplane: Default::default(),
        log: Default::default(),
    }
}

/// `10.0.0.n:80`.
pub fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 80))
}
