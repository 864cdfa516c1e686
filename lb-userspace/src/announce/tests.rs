use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::Announcements;
use super::routes::fake::FakeTable;
use crate::config::{Config, parse};
use crate::health::HealthView;

fn config(announce: &str) -> Config {
    let text = format!(
        r#"{announce}
[[interface]]
name = "eth0"
[[pool]]
name = "web"
[[pool.backend]]
address = "10.1.0.1"
port = 80
[[service]]
name = "web"
vip = "10.0.0.1"
port = 80
protocol = "tcp"
[service.l4]
mode = "dsr"
pool = "web"
[[service]]
name = "web6"
vip = "fd00::1"
port = 80
protocol = "tcp"
[service.l4]
mode = "dsr"
pool = "web"
"#
    );
    match parse(&text, Path::new("a.toml")) {
        Ok(loaded) => loaded.config,
        Err(errors) => panic!("{errors}"),
    }
}

/// Announcements whose tables are fakes; the returned handle shows table `id`'s routes.
fn announcements() -> (Announcements, impl Fn(u32) -> Vec<IpAddr>) {
    let tables: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u32, FakeTable>>> =
        Default::default();
    let made = std::sync::Arc::clone(&tables);
    let announcements = Announcements::with_factory(Box::new(move |id| {
        let table = FakeTable::default();
        made.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, table.clone());
        Box::new(table)
    }));
    let routes = move |id| {
        tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(FakeTable::routes)
            .unwrap_or_default()
    };
    (announcements, routes)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

#[test]
fn vips_are_announced_drained_and_undrained() {
    let config = config("[announce]\ntable = 100");
    let view = HealthView::all_healthy(&config);
    let (mut ann, routes) = announcements();
    assert!(ann.sync(&config, &view));
    assert_eq!(routes(100), ips(&["10.0.0.1", "fd00::1"]));
    assert!(!ann.sync(&config, &view), "nothing changes twice");

    ann.set_drained(true).unwrap_or_else(|e| panic!("{e}"));
    assert!(ann.sync(&config, &view));
    assert_eq!(routes(100), ips(&[]));
    let status = ann.status().unwrap_or_else(|| panic!("no status"));
    assert!(status.node_drained);
    assert!(
        status
            .vips
            .iter()
            .all(|v| !v.announced && v.reason == "node_drained")
    );
    assert_eq!((status.announcements, status.withdrawals), (2, 2));

    ann.set_drained(false).unwrap_or_else(|e| panic!("{e}"));
    ann.sync(&config, &view);
    assert_eq!(routes(100), ips(&["10.0.0.1", "fd00::1"]));
}

#[test]
fn shutdown_withdraws_everything_and_asks_for_the_grace() {
    let config = config("[announce]\ntable = 100\nwithdraw_grace = \"300ms\"");
    let (mut ann, routes) = announcements();
    ann.sync(&config, &HealthView::all_healthy(&config));
    assert_eq!(ann.withdraw_all(), Some(Duration::from_millis(300)));
    assert_eq!(routes(100), ips(&[]));
    assert_eq!(ann.withdraw_all(), None, "nothing left to withdraw");
}

#[test]
fn a_reload_moving_or_removing_the_table_withdraws_from_the_old_one() {
    let (mut ann, routes) = announcements();
    let first = config("[announce]\ntable = 100");
    ann.sync(&first, &HealthView::all_healthy(&first));
    let moved = config("[announce]\ntable = 101");
    ann.sync(&moved, &HealthView::all_healthy(&moved));
    assert_eq!(routes(100), ips(&[]));
    assert_eq!(routes(101), ips(&["10.0.0.1", "fd00::1"]));
    let none = config("");
    ann.sync(&none, &HealthView::all_healthy(&none));
    assert_eq!(routes(101), ips(&[]));
    assert_eq!(ann.status(), None);
}

#[test]
fn draining_without_announce_is_refused() {
    let (mut ann, _) = announcements();
    let none = config("");
    ann.sync(&none, &HealthView::all_healthy(&none));
    let err = ann
        .set_drained(true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("[announce]"), "{err}");
}
