use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::health::test_config::{addr, check, pool};

fn slow_pool(backends: &[SocketAddr]) -> Pool {
    let mut p = pool(
        "web",
        backends,
        check(crate::config::HealthCheckKind::None, 100),
    );
    p.slow_start = Some(Duration::from_secs(60));
    p
}

fn running(config: &Pool, previous: Option<&UpstreamPool>) -> UpstreamPool {
    UpstreamPool::new(
        config,
        &StatsRegistry::default(),
        None,
        &ConnectionRegistry::start(),
        previous,
    )
}

/// Backend `address`'s share of 10,000 picks.
fn share(pool: &UpstreamPool, address: SocketAddr) -> f64 {
    let client = IpAddr::from([10, 9, 9, 9]);
    let hits = (0..10_000)
        .filter(|_| pool.pick(&HeaderMap::new(), client).map(|b| b.address) == Some(address))
        .count();
    hits as f64 / 10_000.0
}

fn ramping(pool: &UpstreamPool) -> Vec<bool> {
    pool.backends()
        .iter()
        .map(|b| b.ramp_start().is_some())
        .collect()
}

#[tokio::test]
async fn backends_at_the_start_take_full_shares_and_one_added_later_ramps() {
    let first = running(&slow_pool(&[addr(1), addr(2)]), None);
    assert_eq!(ramping(&first), [false, false]);
    assert!((0.45..0.55).contains(&share(&first, addr(2))));

    // A reload (or a discovery answer) adds backend 3: only it starts a window.
    let second = running(&slow_pool(&[addr(1), addr(2), addr(3)]), Some(&first));
    assert_eq!(ramping(&second), [false, false, true]);
    // At 10% of its weight: 0.1 / 2.1 of the picks, where a full share is a third.
    let new = share(&second, addr(3));
    assert!((0.02..0.08).contains(&new), "{new}");
}

#[tokio::test]
async fn a_backend_readmitted_to_the_usable_set_ramps_and_the_others_do_not() {
    let web = running(&slow_pool(&[addr(1), addr(2)]), None);
    web.set_usable(&[addr(1)]);
    assert_eq!(share(&web, addr(2)), 0.0);
    web.set_usable(&[addr(1), addr(2)]);
    assert_eq!(ramping(&web), [false, true]);
    let back = share(&web, addr(2));
    assert!((0.05..0.15).contains(&back), "{back}");
    // Staying usable does not restart the window.
    let started = web.backends()[1].ramp_start();
    web.set_usable(&[addr(1), addr(2)]);
    assert_eq!(web.backends()[1].ramp_start(), started);
}

#[tokio::test]
async fn without_slow_start_nothing_ramps() {
    let mut config = slow_pool(&[addr(1), addr(2)]);
    config.slow_start = None;
    let web = running(&config, None);
    web.set_usable(&[addr(1)]);
    web.set_usable(&[addr(1), addr(2)]);
    assert_eq!(ramping(&web), [false, false]);
    assert!((0.45..0.55).contains(&share(&web, addr(2))));
}
