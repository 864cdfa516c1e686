use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use tokio::time::Instant;

use super::{Verdict, plan};
use crate::config::{Config, parse};
use crate::health::{BackendHealth, BackendView, HealthView, PoolView};

/// Two VIPs: .1 carries a TCP service on pool `a` and a UDP service on pool `b`; .2 carries
/// a TCP service on pool `b`. Pool `a` fails open, pool `b` refuses when none is healthy.
const CONFIG: &str = r#"
[[interface]]
name = "eth0"
[[pool]]
name = "a"
[[pool.backend]]
address = "10.1.0.1"
port = 80
[[pool]]
name = "b"
when_no_healthy = "refuse"
[[pool.backend]]
address = "10.1.0.2"
port = 80
[[service]]
name = "one-tcp"
vip = "10.0.0.1"
port = 80
protocol = "tcp"
[service.l4]
mode = "dsr"
pool = "a"
[[service]]
name = "one-udp"
vip = "10.0.0.1"
port = 53
protocol = "udp"
[service.l4]
mode = "nat"
pool = "b"
[[service]]
name = "two"
vip = "10.0.0.2"
port = 80
protocol = "tcp"
[service.l4]
mode = "dsr"
pool = "b"
"#;

fn config(text: &str) -> Config {
    match parse(text, Path::new("plan.toml")) {
        Ok(loaded) => loaded.config,
        Err(errors) => panic!("{errors}"),
    }
}

/// A snapshot with the backends of the pools named in `down` failing their checks.
fn view(config: &Config, down: &[&str]) -> HealthView {
    let now = Instant::now();
    let pools = config
        .pools
        .iter()
        .map(|pool| {
            let backends = pool
                .backends
                .iter()
                .map(|b| BackendView {
                    name: b.name.clone(),
                    address: b.address,
                    health: BackendHealth {
                        healthy: !down.contains(&pool.name.as_str()),
                        ..BackendHealth::fresh(now)
                    },
                })
                .collect();
            (pool.name.clone(), PoolView::new(pool, backends, now))
        })
        .collect();
    HealthView::new(now, pools)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn verdicts(pairs: &[(&str, Verdict)]) -> BTreeMap<IpAddr, Verdict> {
    pairs.iter().map(|(vip, v)| (ip(vip), *v)).collect()
}

#[test]
fn every_vip_with_healthy_backends_is_announced() {
    let config = config(CONFIG);
    assert_eq!(
        plan(&config, &view(&config, &[]), false),
        verdicts(&[
            ("10.0.0.1", Verdict::Serving),
            ("10.0.0.2", Verdict::Serving)
        ])
    );
}

#[test]
fn a_vip_whose_services_have_no_backend_is_withdrawn() {
    let config = config(CONFIG);
    // Pool b refuses without healthy backends: .2 has nothing; .1 still has pool a.
    assert_eq!(
        plan(&config, &view(&config, &["b"]), false),
        verdicts(&[
            ("10.0.0.1", Verdict::Serving),
            ("10.0.0.2", Verdict::NoBackends)
        ])
    );
}

#[test]
fn a_pool_failing_open_keeps_its_vip_announced() {
    let config = config(CONFIG);
    // Pool a has no healthy backend but fails open: .1 stays, .2 goes with pool b.
    assert_eq!(
        plan(&config, &view(&config, &["a", "b"]), false),
        verdicts(&[
            ("10.0.0.1", Verdict::Serving),
            ("10.0.0.2", Verdict::NoBackends)
        ])
    );
}

#[test]
fn a_drained_node_announces_nothing() {
    let config = config(CONFIG);
    let planned = plan(&config, &view(&config, &[]), true);
    assert_eq!(
        planned,
        verdicts(&[
            ("10.0.0.1", Verdict::NodeDrained),
            ("10.0.0.2", Verdict::NodeDrained)
        ])
    );
    assert!(planned.values().all(|v| !v.announced()));
}

#[test]
fn an_l7_service_answering_by_itself_is_announced() {
    let config = config(
        r#"
[[service]]
name = "redirect"
vip = "127.0.0.1"
port = 8080
protocol = "tcp"
[service.l7]
[[service.l7.virtual_host]]
name = "any"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
redirect = { scheme = "https" }
"#,
    );
    assert_eq!(
        plan(&config, &view(&config, &[]), false),
        verdicts(&[("127.0.0.1", Verdict::Serving)])
    );
}
