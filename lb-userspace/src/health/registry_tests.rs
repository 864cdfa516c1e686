//! The registry's rules, with explicit time: reloads keep state, drains, ejection caps.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::ProbeError;
use super::registry::{BackendKey, HealthError, Registry};
use super::test_config::{addr, check, config, outliers, pool};
use super::view::PoolMode;
use crate::config::{HealthCheckKind, WhenNoHealthy};

fn key(pool: &str, n: u8) -> BackendKey {
    BackendKey {
        pool: pool.into(),
        address: addr(n),
    }
}

fn failed() -> Result<(), ProbeError> {
    Err(ProbeError::Timeout {
        timeout: Duration::from_secs(1),
    })
}

fn usable(r: &Registry, pool: &str, now: Instant) -> (PoolMode, Vec<SocketAddr>) {
    let view = r.view(now);
    let set = view.usable(pool).expect("pool known");
    (set.mode, set.backends.clone())
}

#[test]
fn a_reload_keeps_the_state_of_backends_that_stay_and_plans_only_the_tasks_that_change() {
    let now = Instant::now();
    let tcp = check(HealthCheckKind::Tcp, 100);
    let mut r = Registry::default();
    let first = config(vec![
        pool("web", &[addr(1), addr(2)], tcp.clone()),
        pool("dns", &[addr(9)], check(HealthCheckKind::None, 100)),
    ]);
    let plan = r.update(&first, now);
    assert!(plan.stop.is_empty());
    let started: Vec<_> = plan.start.iter().map(|(k, _, g)| (k.clone(), *g)).collect();
    assert_eq!(started, vec![(key("web", 1), 1), (key("web", 2), 2)]);

    assert!(r.record_probe(&key("web", 1), 1, &failed(), now));
    assert!(r.set_drained("web", addr(2), true, now).expect("known"));

    // Add a backend and a pool, drop the unprobed pool: only new backends get tasks.
    let mut second = config(vec![
        pool("web", &[addr(1), addr(2), addr(3)], tcp.clone()),
        pool("api", &[addr(7)], tcp.clone()),
    ]);
    second.pools[0].backends[1].name = "renamed".into();
    let plan = r.update(&second, now);
    assert!(plan.stop.is_empty(), "{plan:?}");
    let started: Vec<_> = plan.start.iter().map(|(k, _, _)| k.clone()).collect();
    assert_eq!(started, vec![key("web", 3), key("api", 7)]);
    let view = r.view(now);
    let state = |n| view.state("web", addr(n)).expect("known").clone();
    assert!(!state(1).healthy && state(1).transitions == 1);
    assert!(state(2).healthy && state(2).drained);
    assert!(state(3).healthy && !state(3).drained);
    assert!(view.state("dns", addr(9)).is_none());
    let names: Vec<_> = view
        .pools()
        .flat_map(|(_, p)| &p.backends)
        .map(|b| &b.name)
        .collect();
    assert!(names.contains(&&"renamed".to_string()));

    // A changed check restarts the tasks (new generations) but keeps the verdicts.
    let mut slower = tcp.clone();
    slower.interval = Duration::from_millis(500);
    let third = config(vec![
        pool("web", &[addr(2), addr(3)], slower),
        pool("api", &[addr(7)], tcp.clone()),
    ]);
    let plan = r.update(&third, now);
    assert_eq!(plan.stop, vec![key("web", 1), key("web", 2), key("web", 3)]);
    let generations: Vec<_> = plan.start.iter().map(|(k, _, g)| (k.clone(), *g)).collect();
    assert_eq!(generations, vec![(key("web", 2), 5), (key("web", 3), 6)]);
    assert!(r.view(now).state("web", addr(2)).is_some_and(|s| s.drained));
    // A result from the stopped task (still in flight) no longer counts.
    assert!(!r.record_probe(&key("web", 3), 3, &failed(), now));
    assert!(r.record_probe(&key("web", 3), 6, &failed(), now));

    // Turning checks off stops the tasks and makes every backend healthy.
    let fourth = config(vec![
        pool(
            "web",
            &[addr(2), addr(3)],
            check(HealthCheckKind::None, 100),
        ),
        pool("api", &[addr(7)], tcp),
    ]);
    let plan = r.update(&fourth, now);
    assert_eq!(plan.stop, vec![key("web", 2), key("web", 3)]);
    assert!(plan.start.is_empty());
    let view = r.view(now);
    let web3 = view.state("web", addr(3)).expect("known");
    assert!(web3.healthy);
    assert_eq!(web3.transitions, 2);
}

#[test]
fn drain_and_enable_change_the_usable_set_and_unknown_backends_are_errors() {
    let now = Instant::now();
    let mut r = Registry::default();
    r.update(
        &config(vec![pool(
            "web",
            &[addr(1), addr(2)],
            check(HealthCheckKind::None, 100),
        )]),
        now,
    );
    assert!(r.set_drained("web", addr(1), true, now).expect("known"));
    assert!(
        !r.set_drained("web", addr(1), true, now).expect("known"),
        "no change"
    );
    assert_eq!(usable(&r, "web", now), (PoolMode::Normal, vec![addr(2)]));
    assert!(r.set_drained("web", addr(1), false, now).expect("known"));
    assert_eq!(
        usable(&r, "web", now),
        (PoolMode::Normal, vec![addr(1), addr(2)])
    );
    let err = r.set_drained("web", addr(3), true, now);
    assert!(matches!(err, Err(HealthError::UnknownBackend { .. })));
    let err = r
        .set_drained("nope", addr(1), true, now)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("pool \"nope\" has no backend at 10.0.0.1:80; check the pool name and address")
    );
}

#[test]
fn a_pool_wide_burst_of_failures_ejects_no_more_than_the_cap() {
    let now = Instant::now();
    let backends: Vec<SocketAddr> = (1..=10).map(addr).collect();
    let mut web = pool("web", &backends, check(HealthCheckKind::None, 100));
    web.outlier_detection = Some(outliers(10));
    let mut r = Registry::default();
    r.update(&config(vec![web]), now);
    // Every backend fails every request: a restart of the whole fleet.
    let mut ejected = 0;
    for _ in 0..5 {
        for backend in &backends {
            ejected += usize::from(r.report("web", *backend, false, now));
        }
    }
    assert_eq!(ejected, 1, "10% of 10");
    let (mode, set) = usable(&r, "web", now);
    assert_eq!((mode, set.len()), (PoolMode::Normal, 9));

    // When the ejection ends, the next failure ejects the next backend that kept failing.
    let later = now + Duration::from_secs(10);
    assert_eq!(r.next_expiry(), Some(later));
    assert!(!r.expire(later - Duration::from_millis(1)));
    assert!(r.expire(later));
    assert_eq!(r.next_expiry(), None);
    let view = r.view(later);
    let first = view.state("web", addr(1)).expect("known");
    assert_eq!((first.ejected_until, first.last_change), (None, later));
    assert!(r.report("web", addr(2), false, later));
    assert_eq!(usable(&r, "web", later).1.len(), 9);
}

#[test]
fn the_cap_and_panic_mode_together_keep_half_a_pool_serving() {
    let now = Instant::now();
    let backends: Vec<SocketAddr> = (1..=4).map(addr).collect();
    let mut web = pool("web", &backends, check(HealthCheckKind::None, 100));
    web.outlier_detection = Some(outliers(50));
    let mut r = Registry::default();
    r.update(&config(vec![web]), now);
    for backend in &backends {
        for _ in 0..3 {
            r.report("web", *backend, false, now);
        }
    }
    // Two ejected (the cap), two left: 50% is not below the panic threshold.
    assert_eq!(
        usable(&r, "web", now),
        (PoolMode::Normal, vec![addr(3), addr(4)])
    );
    // A success resets a backend's count.
    r.report("web", addr(3), true, now);
}

#[test]
fn a_single_backend_pool_can_lose_its_backend_and_then_follows_when_no_healthy() {
    let now = Instant::now();
    let mut web = pool("web", &[addr(1)], check(HealthCheckKind::None, 100));
    web.outlier_detection = Some(outliers(10));
    web.when_no_healthy = WhenNoHealthy::Refuse;
    let mut r = Registry::default();
    r.update(&config(vec![web.clone()]), now);
    for _ in 0..3 {
        r.report("web", addr(1), false, now);
    }
    assert_eq!(usable(&r, "web", now), (PoolMode::Empty, vec![]));

    // Without outlier detection, reports change nothing, and a reload that turns it off
    // lifts ejections.
    web.outlier_detection = None;
    r.update(&config(vec![web]), now);
    assert_eq!(usable(&r, "web", now), (PoolMode::Normal, vec![addr(1)]));
    for _ in 0..10 {
        assert!(!r.report("web", addr(1), false, now));
    }
}
