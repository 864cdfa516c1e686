//! Health-aware desired state: which backends an L4 service keeps, and which its Maglev
//! table sends new flows to.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::time::Instant;

use super::{DesiredL4, desired, desired_with};
use crate::config::{
    Config, ForwardingMode, HealthCheckKind, L4Service, PoolId, Protocol, Service, ServiceKind,
    WhenNoHealthy,
};
use crate::health::test_config::{addr, check, config, pool};
use crate::health::{BackendHealth, BackendView, HealthView, PoolView};

/// One L4 DSR service over pool "web" of backends 10.0.0.1..=n.
fn l4_config(n: u8, when_no_healthy: WhenNoHealthy) -> Config {
    let backends: Vec<SocketAddr> = (1..=n).map(addr).collect();
    let mut web = pool("web", &backends, check(HealthCheckKind::Tcp, 1000));
    web.when_no_healthy = when_no_healthy;
    let mut config = config(vec![web]);
    config.services.push(Service {
        name: "web".into(),
        vip: "192.0.2.10".parse().expect("an address"),
        port: 80,
        protocol: Protocol::Tcp,
        kind: ServiceKind::L4(L4Service {
            mode: ForwardingMode::Dsr,
            pool: PoolId(0),
            maglev_table_size: 251,
            maglev_seed: 7,
        }),
    });
    config
}

/// A snapshot of `config` with backend `n`'s state set by `f(n, state)`.
fn view(config: &Config, f: impl Fn(u8, &mut BackendHealth)) -> HealthView {
    let now = Instant::now();
    let pools = config
        .pools
        .iter()
        .map(|p| {
            let backends = p
                .backends
                .iter()
                .zip(1..)
                .map(|(b, n)| {
                    let mut health = BackendHealth::fresh(now);
                    f(n, &mut health);
                    BackendView {
                        name: b.name.clone(),
                        address: b.address,
                        health,
                    }
                })
                .collect();
            (p.name.clone(), PoolView::new(p, backends, now))
        })
        .collect::<BTreeMap<_, _>>();
    HealthView::new(now, pools)
}

fn only_l4(config: &Config, health: Option<&HealthView>) -> DesiredL4 {
    let state = match health {
        Some(h) => desired_with(config, h),
        None => desired(config),
    }
    .expect("tables build");
    let service = state.services.into_values().next().expect("one service");
    service.l4.expect("an l4 service")
}

fn kept(l4: &DesiredL4) -> Vec<SocketAddr> {
    l4.backends.iter().map(|b| b.address).collect()
}

/// The address each slot sends new flows to.
fn owners(l4: &DesiredL4) -> Vec<SocketAddr> {
    let table = l4.table.as_ref().expect("a table");
    table
        .iter()
        .map(|&i| l4.backends.get(i as usize).expect("slot in range").address)
        .collect()
}

fn in_table(l4: &DesiredL4) -> Vec<SocketAddr> {
    let mut all = owners(l4);
    all.sort();
    all.dedup();
    all
}

#[test]
fn all_healthy_is_what_desired_has_always_built() {
    let config = l4_config(4, WhenNoHealthy::FailOpen);
    let plain = desired(&config).expect("tables build");
    let with = desired_with(&config, &HealthView::all_healthy(&config)).expect("tables build");
    assert_eq!(plain, with);
    // A snapshot that does not know the pool changes nothing either.
    let unknown = HealthView::new(Instant::now(), BTreeMap::new());
    assert_eq!(
        desired_with(&config, &unknown).expect("tables build"),
        plain
    );
}

#[test]
fn a_drained_backend_keeps_its_flows_but_takes_no_new_ones() {
    let config = l4_config(4, WhenNoHealthy::FailOpen);
    let l4 = only_l4(&config, Some(&view(&config, |n, h| h.drained = n == 2)));
    assert_eq!(kept(&l4), vec![addr(1), addr(2), addr(3), addr(4)]);
    assert_eq!(in_table(&l4), vec![addr(1), addr(3), addr(4)]);
    // Exactly the table of a pool without it: Maglev moves only the drained backend's slots.
    let mut without = l4_config(4, WhenNoHealthy::FailOpen);
    without.pools[0].backends.remove(1);
    assert_eq!(owners(&l4), owners(&only_l4(&without, None)));
}

#[test]
fn an_ejected_backend_keeps_its_flows_and_a_dead_one_loses_them() {
    let config = l4_config(5, WhenNoHealthy::FailOpen);
    let later = Instant::now() + std::time::Duration::from_secs(30);
    let health = view(&config, |n, h| match n {
        1 => h.ejected_until = Some(later),
        2 => h.healthy = false,
        // Dead and drained: dead wins, its flows re-steer.
        3 => (h.healthy, h.drained) = (false, true),
        _ => {}
    });
    let l4 = only_l4(&config, Some(&health));
    assert_eq!(kept(&l4), vec![addr(1), addr(4), addr(5)]);
    assert_eq!(in_table(&l4), vec![addr(4), addr(5)]);
}

#[test]
fn in_panic_mode_the_table_spreads_over_every_undrained_backend_dead_or_alive() {
    let config = l4_config(4, WhenNoHealthy::Refuse);
    let l4 = only_l4(&config, Some(&view(&config, |n, h| h.healthy = n == 1)));
    assert_eq!(kept(&l4), vec![addr(1), addr(2), addr(3), addr(4)]);
    assert_eq!(in_table(&l4), kept(&l4));
}

#[test]
fn with_no_healthy_backend_fail_open_keeps_a_table_and_refuse_has_none() {
    let dead_but_drained_4 = |n: u8, h: &mut BackendHealth| {
        h.healthy = n == 4;
        h.drained = n == 4;
    };
    let open = l4_config(4, WhenNoHealthy::FailOpen);
    let l4 = only_l4(&open, Some(&view(&open, dead_but_drained_4)));
    assert_eq!(in_table(&l4), vec![addr(1), addr(2), addr(3)]);
    assert!(!l4.refuse_when_empty);

    let refuse = l4_config(4, WhenNoHealthy::Refuse);
    let l4 = only_l4(&refuse, Some(&view(&refuse, dead_but_drained_4)));
    assert_eq!(l4.table, None);
    assert!(l4.refuse_when_empty);
    // The drained, healthy backend keeps its established flows.
    assert_eq!(kept(&l4), vec![addr(4)]);
}
