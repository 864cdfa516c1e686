//! The checker end to end on 127.0.0.1 (real probes on short intervals, bounded waits), and
//! its ejection timer under paused time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::checker::{CheckerOptions, HealthChecker, first_delay, next_interval};
use super::test_backend::{Behaviour, TestBackend, closed_port, eventually};
use super::test_config::{addr, check, config, outliers, pool};
use super::view::{HealthView, PoolMode};
use crate::config::{HealthCheckKind, HttpCheck, StatusRange};

const MS: Duration = Duration::from_millis(1);

/// Waits for a snapshot satisfying `pred`; panics with `what` and the last one after `limit`.
async fn wait_view(
    rx: &mut watch::Receiver<Arc<HealthView>>,
    limit: Duration,
    what: &str,
    pred: impl FnMut(&Arc<HealthView>) -> bool,
) -> Arc<HealthView> {
    let found = match tokio::time::timeout(limit, rx.wait_for(pred)).await {
        Ok(Ok(view)) => Some(view.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("not within {limit:?}: {what}; last: {:#?}", rx.borrow()))
}

fn healthy(view: &HealthView, address: SocketAddr) -> bool {
    view.state("web", address).is_some_and(|s| s.healthy)
}

fn http_ok_check(interval_ms: u64) -> crate::config::HealthCheck {
    check(
        HealthCheckKind::Http(HttpCheck {
            method: "GET".into(),
            path: "/healthz".into(),
            host: None,
            expected_status: vec![StatusRange {
                first: 200,
                last: 299,
            }],
            body_contains: Some("ok".into()),
        }),
        interval_ms,
    )
}

#[tokio::test]
async fn tcp_checks_follow_a_listener_going_away_and_coming_back() {
    let interval = 50 * MS;
    let up = TestBackend::start(Behaviour::OK);
    let (up_addr, down_addr) = (up.address, closed_port().await);
    let web = pool(
        "web",
        &[up_addr, down_addr],
        check(HealthCheckKind::Tcp, 50),
    );
    let (checker, mut rx) = HealthChecker::start(&config(vec![web]));
    // Both start healthy; the closed port falls on its first probe, before any success.
    let view = wait_view(&mut rx, 500 * MS, "closed port down", |v| {
        !healthy(v, down_addr)
    })
    .await;
    assert!(healthy(&view, up_addr));
    eventually(500 * MS, "a probe passed", || up.accepted().len() >= 2).await;

    let gone = Instant::now();
    drop(up);
    let view = wait_view(&mut rx, 1000 * MS, "listener down", |v| {
        !healthy(v, up_addr)
    })
    .await;
    let took = view.state("web", up_addr).expect("known").last_change - gone;
    // fall = 3: three failed probes, at least two intervals apart from the first.
    assert!(
        took >= 2 * interval - 20 * MS,
        "fell after {took:?}: fall not honoured"
    );
    assert!(
        took <= 4 * interval + 40 * MS + 100 * MS,
        "fell after {took:?}"
    );

    let back = Instant::now();
    let _up = TestBackend::start_at(up_addr, Behaviour::OK);
    let view = wait_view(&mut rx, 1000 * MS, "listener up", |v| healthy(v, up_addr)).await;
    let took = view.state("web", up_addr).expect("known").last_change - back;
    // rise = 2.
    assert!(
        took >= interval - 20 * MS && took <= 3 * interval + 100 * MS,
        "rose after {took:?}"
    );
    checker.stop().await;
}

#[tokio::test]
async fn misbehaving_backends_fall_within_fall_intervals_and_leak_nothing() {
    let interval = 100 * MS;
    let backends: Vec<TestBackend> = (0..4).map(|_| TestBackend::start(Behaviour::OK)).collect();
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let web = pool("web", &addresses, http_ok_check(100));
    let (checker, mut rx) = HealthChecker::start(&config(vec![web]));
    let handle = checker.handle();
    for b in &backends {
        eventually(Duration::from_secs(1), "a probe passed", || {
            b.accepted().len() >= 2
        })
        .await;
    }
    assert_eq!(handle.running_probe_tasks(), 4);

    let bad = [
        Behaviour::Garbage,
        Behaviour::Reset,
        Behaviour::Silent,
        Behaviour::Endless,
    ];
    let start = Instant::now();
    for (b, behaviour) in backends.iter().zip(bad.clone()) {
        b.set(behaviour);
    }
    let all_down = |v: &Arc<HealthView>| addresses.iter().all(|a| !healthy(v, *a));
    let view = wait_view(&mut rx, Duration::from_secs(2), "all down", all_down).await;
    for (a, behaviour) in addresses.iter().zip(&bad) {
        let took = view.state("web", *a).expect("known").last_change - start;
        // fall = 3 probes; the last may take the whole 80 ms timeout.
        assert!(
            took >= 2 * interval - 20 * MS,
            "{behaviour:?} fell after {took:?}"
        );
        assert!(
            took <= 4 * interval + 80 * MS + 100 * MS,
            "{behaviour:?} fell after {took:?}"
        );
    }

    // Several more rounds against the bad backends: nothing piles up.
    tokio::time::sleep(5 * interval).await;
    assert_eq!(handle.running_probe_tasks(), 4);
    for (b, behaviour) in backends.iter().zip(&bad) {
        assert!(b.accepted().len() >= 8, "{behaviour:?}: probing goes on");
        // The probe in flight, and perhaps one the backend has not seen closed yet.
        assert!(
            b.open_connections() <= 2,
            "{behaviour:?}: {}",
            b.open_connections()
        );
    }

    let start = Instant::now();
    for b in &backends {
        b.set(Behaviour::OK);
    }
    let all_up = |v: &Arc<HealthView>| addresses.iter().all(|a| healthy(v, *a));
    let view = wait_view(&mut rx, Duration::from_secs(2), "all up", all_up).await;
    for a in &addresses {
        let state = view.state("web", *a).expect("known");
        // rise = 2; a silent backend's last bad probe may still be running when it turns good.
        let took = state.last_change - start;
        assert!(
            took <= 3 * interval + 80 * MS + 100 * MS,
            "{a} rose after {took:?}"
        );
        assert_eq!(state.transitions, 2);
    }

    checker.stop().await;
    assert_eq!(handle.running_probe_tasks(), 0);
    for b in &backends {
        eventually(Duration::from_secs(1), "probe connections closed", || {
            b.open_connections() == 0
        })
        .await;
    }
}

#[test]
fn jitter_spreads_first_probes_over_an_interval_and_varies_the_period() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut jittered = check(HealthCheckKind::Tcp, 1000);
    jittered.jitter_percent = 20;
    let firsts: Vec<Duration> = (0..1000)
        .map(|_| first_delay(&jittered, &mut rng))
        .collect();
    let (min, max) = (firsts.iter().min(), firsts.iter().max());
    assert!(min.is_some_and(|d| *d < 20 * MS) && max.is_some_and(|d| *d > 980 * MS));
    assert!(firsts.iter().all(|d| *d < 1000 * MS));
    let periods: Vec<Duration> = (0..1000)
        .map(|_| next_interval(&jittered, &mut rng))
        .collect();
    assert!(periods.iter().all(|d| (800 * MS..=1200 * MS).contains(d)));
    assert!(periods.iter().any(|d| *d < 820 * MS) && periods.iter().any(|d| *d > 1180 * MS));

    let steady = check(HealthCheckKind::Tcp, 1000);
    assert_eq!(first_delay(&steady, &mut rng), Duration::ZERO);
    assert_eq!(next_interval(&steady, &mut rng), 1000 * MS);
}

#[tokio::test]
async fn jitter_spreads_first_probes_of_many_backends() {
    let backends: Vec<TestBackend> = (0..12).map(|_| TestBackend::start(Behaviour::OK)).collect();
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let mut tcp = check(HealthCheckKind::Tcp, 400);
    tcp.jitter_percent = 10;
    let options = CheckerOptions {
        seed: Some(3),
        ..CheckerOptions::default()
    };
    let start = Instant::now();
    let (checker, _rx) =
        HealthChecker::start_with(&config(vec![pool("web", &addresses, tcp)]), options);
    let mut firsts = Vec::new();
    for b in &backends {
        eventually(Duration::from_secs(1), "a first probe", || {
            !b.accepted().is_empty()
        })
        .await;
        firsts.extend(b.accepted().first().map(|at| *at - start));
    }
    checker.stop().await;
    let (min, max) = (firsts.iter().min().copied(), firsts.iter().max().copied());
    let spread = max.zip(min).map(|(max, min)| max - min);
    assert!(
        spread.is_some_and(|s| s >= 150 * MS),
        "first probes at {firsts:?}"
    );
    assert!(
        max.is_some_and(|m| m < 400 * MS + 100 * MS),
        "first probes at {firsts:?}"
    );
}

#[tokio::test]
async fn probes_in_flight_are_bounded_by_the_semaphore() {
    // Eight backends that never answer: each probe holds its permit for the 80 ms timeout.
    let backends: Vec<TestBackend> = (0..8)
        .map(|_| TestBackend::start(Behaviour::Silent))
        .collect();
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let options = CheckerOptions {
        max_concurrent_probes: 2,
        seed: Some(1),
    };
    let web = pool("web", &addresses, http_ok_check(100));
    let (checker, _rx) = HealthChecker::start_with(&config(vec![web]), options);
    tokio::time::sleep(800 * MS).await;
    checker.stop().await;
    let probes: usize = backends.iter().map(|b| b.accepted().len()).sum();
    // Unbounded, 8 backends every 100 ms would make about 64; two at a time, 80 ms each,
    // at most 2 * 800 / 80 + 2.
    assert!((6..=24).contains(&probes), "{probes} probes");
}

#[tokio::test]
async fn drain_and_enable_publish_new_snapshots() {
    let web = pool(
        "web",
        &[addr(1), addr(2)],
        check(HealthCheckKind::None, 100),
    );
    let (checker, mut rx) = HealthChecker::start(&config(vec![web]));
    assert_eq!(
        checker.handle().running_probe_tasks(),
        0,
        "nothing to probe"
    );
    checker.drain("web", addr(1)).expect("known backend");
    let view = wait_view(&mut rx, 100 * MS, "drained", |v| {
        v.state("web", addr(1)).is_some_and(|s| s.drained)
    })
    .await;
    assert_eq!(
        view.usable("web").map(|u| u.backends.clone()),
        Some(vec![addr(2)])
    );
    checker.enable("web", addr(1)).expect("known backend");
    let view = wait_view(&mut rx, 100 * MS, "enabled", |v| {
        v.state("web", addr(1)).is_some_and(|s| !s.drained)
    })
    .await;
    assert_eq!(view.usable("web").map(|u| u.backends.len()), Some(2));
    assert!(checker.drain("web", addr(3)).is_err());
    checker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ejections_grow_end_on_time_and_stay_under_the_cap() {
    let backends: Vec<SocketAddr> = (1..=4).map(addr).collect();
    let mut web = pool("web", &backends, check(HealthCheckKind::None, 100));
    web.outlier_detection = Some(outliers(50));
    let (checker, mut rx) = HealthChecker::start(&config(vec![web]));
    let ejected_until =
        |v: &HealthView, n: u8| v.state("web", addr(n)).and_then(|s| s.ejected_until);

    for round in [10, 20, 25] {
        let now = Instant::now();
        for _ in 0..3 {
            checker.report_result("web", addr(1), false);
        }
        let view = rx.borrow_and_update().clone();
        assert_eq!(
            ejected_until(&view, 1),
            Some(now + Duration::from_secs(round))
        );
        assert!(!view.usable("web").is_some_and(|u| u.contains(addr(1))));
        // Paused time jumps to the expiry timer, which publishes the ejection's end.
        let view = wait_view(&mut rx, Duration::from_secs(60), "ejection over", |v| {
            ejected_until(v, 1).is_none()
        })
        .await;
        assert_eq!(Instant::now(), now + Duration::from_secs(round));
        assert!(view.usable("web").is_some_and(|u| u.contains(addr(1))));
    }

    // The whole pool fails at once: half of it keeps serving.
    for _ in 0..3 {
        for b in &backends {
            checker.report_result("web", *b, false);
        }
    }
    let view = rx.borrow_and_update().clone();
    let ejected = (1..=4)
        .filter(|n| ejected_until(&view, *n).is_some())
        .count();
    assert_eq!(ejected, 2);
    let usable = view.usable("web").expect("known pool");
    assert_eq!((usable.mode, usable.backends.len()), (PoolMode::Normal, 2));
    checker.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_the_state_of_backends_that_stay() {
    let up = TestBackend::start(Behaviour::OK);
    let (up_addr, down_addr) = (up.address, closed_port().await);
    let tcp = check(HealthCheckKind::Tcp, 50);
    let (mut checker, mut rx) = HealthChecker::start(&config(vec![pool(
        "web",
        &[up_addr, down_addr],
        tcp.clone(),
    )]));
    let handle = checker.handle();
    wait_view(&mut rx, 500 * MS, "closed port down", |v| {
        !healthy(v, down_addr)
    })
    .await;
    checker.drain("web", up_addr).expect("known backend");

    let added = TestBackend::start(Behaviour::OK);
    let all = [up_addr, down_addr, added.address];
    checker.update(&config(vec![pool("web", &all, tcp.clone())]));
    let view = rx.borrow_and_update().clone();
    let state = |a| view.state("web", a).expect("known").clone();
    assert!(state(up_addr).healthy && state(up_addr).drained);
    assert!(!state(down_addr).healthy, "not reset to the initial state");
    assert!(state(added.address).healthy && !state(added.address).drained);
    assert_eq!(handle.running_probe_tasks(), 3);
    eventually(500 * MS, "the added backend is probed", || {
        !added.accepted().is_empty()
    })
    .await;

    checker.update(&config(vec![pool("web", &[up_addr, added.address], tcp)]));
    assert!(rx.borrow().state("web", down_addr).is_none());
    eventually(500 * MS, "the removed backend's task ends", || {
        handle.running_probe_tasks() == 2
    })
    .await;
    checker.stop().await;
    assert_eq!(handle.running_probe_tasks(), 0);
}
