//! `config/grafana-dashboard.json` works as shipped: a real Prometheus scrapes an agent
//! carrying L4 traffic through XDP and L7 traffic (successes, connect failures, 5xx,
//! retries) while a backend dies, and every query of every panel, evaluated through
//! Prometheus's HTTP API, parses and returns data.

#[path = "l4_e2e_support/mod.rs"]
mod l4_e2e_support;
mod l7_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use l4_e2e_support::{Mode, Setup, V4};
use l7_support::Backend;
use l7_support::client::{H1, get};
use sluice_tests::{PrometheusServer, eventually, privileged, required_tool, workspace_root};

const HEALTH_CHECK: &str =
    "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\njitter = 0";
const ADMIN: &str = "127.0.0.1:9100";
const PROMETHEUS: &str = "127.0.0.1:9090";
const L7: &str = "127.0.0.1:8080";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// An L7 service beside the L4 ones: `/` to a healthy pool, `/flaky` to a pool of a
/// backend that refuses connections and one that answers 503, with retries.
fn l7_config() -> String {
    let pool = |name: &str, backends: &[(&str, u16)]| {
        let mut text =
            format!("[[pool]]\nname = \"{name}\"\n[pool.health_check]\nkind = \"none\"\n");
        for (backend, port) in backends {
            text += &format!(
                "[[pool.backend]]\nname = \"{backend}\"\naddress = \"127.0.0.1\"\nport = {port}\n"
            );
        }
        text
    };
    format!(
        "{}{}[[service]]\nname = \"web\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"tcp\"\n\
         [service.l7]\n[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/flaky\" }}\n\
         forward = {{ pool = \"flaky\" }}\n\
         retry = {{ on = [\"connect_failure\", \"503\"], attempts = 2, budget_percent = 100 }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\n\
         forward = {{ pool = \"app\" }}\n",
        pool("app", &[("app1", 9001)]),
        pool("flaky", &[("gone", 9002), ("fails", 9003)]),
    )
}

/// Every query of every panel (rows excluded), with the panel's title.
fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let panels = dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("the dashboard has no panels"));
    let mut queries = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: panels use the dashboard's data source variable"
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    queries
}

/// What Grafana substitutes before sending a query: all agents, a rate window.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$__rate_interval", "15s")
}

#[test]
fn every_panel_of_the_dashboard_returns_data() {
    if !privileged() || !required_tool("prometheus", "prometheus") {
        return;
    }
    let path = workspace_root().join("config/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let queries = panel_queries(&dashboard);

    let setup = Setup::with_health_check(&V4, Mode::Nat, 3, HEALTH_CHECK);
    let lb = setup.lb();
    let _app = Backend::start(lb, "app1", addr("127.0.0.1:9001"), l7_support::Mode::Echo);
    let _fails = Backend::start(
        lb,
        "fails",
        addr("127.0.0.1:9003"),
        l7_support::Mode::Status(503),
    );
    setup.reload_with(&format!("{}{}", setup.config_text(), l7_config()));
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    let prometheus = PrometheusServer::start(lb, addr(PROMETHEUS), addr(ADMIN));

    // L7 traffic all along, from a task in the load balancer's namespace.
    let running = Arc::new(AtomicBool::new(true));
    let l7 = {
        let running = Arc::clone(&running);
        lb.spawn_task(async move {
            let mut answered = 0u64;
            while running.load(Relaxed) {
                let Ok(mut client) = H1::connect(addr(L7)).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                for path in ["/", "/", "/flaky"] {
                    if client.send(get("x", path)).await.is_ok() {
                        answered += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answered
        })
    };
    // L4 flows and a backend that dies (health transitions) while Prometheus watches.
    setup.client.in_ns(|| {
        for _ in 0..60 {
            setup.tcp_connect();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    setup.kill_backend(0);
    // New flows wait until the checker has taken the dead backend out of the table.
    let dead = format!("{}:8000", V4.backends[0]);
    eventually(Duration::from_secs(30), || {
        let query = format!("sluice_backend_healthy{{pool=\"tcp\",address=\"{dead}\"}} == 0");
        match prometheus.query(&query) {
            Ok(result) if result.as_array().is_some_and(|r| !r.is_empty()) => Ok(()),
            other => Err(format!("{dead} not seen down yet: {other:?}")),
        }
    });

    for (title, expr) in &queries {
        let query = as_grafana_sends(expr);
        let result = eventually(Duration::from_secs(30), || {
            // L4 flows keep coming, so rates over the window have something to see.
            setup.client.in_ns(|| {
                for _ in 0..5 {
                    setup.tcp_connect();
                }
            });
            let result = prometheus
                .query(&query)
                .map_err(|e| format!("{title}: {e}\nprometheus log:\n{}", prometheus.log()))?;
            let samples = result.as_array().cloned().unwrap_or_default();
            let numbers = samples
                .iter()
                .filter_map(|s| s["value"][1].as_str())
                .filter(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
                .count();
            if numbers > 0 {
                Ok(result)
            } else {
                Err(format!("{title}: {query} returned no number yet: {result}"))
            }
        });
        eprintln!("{title}: {query}\n  = {result}");
    }
    running.store(false, Relaxed);
    let answered = l7.join();
    assert!(answered > 0, "the L7 traffic got answers");
    drop(prometheus);
    setup.stop();
}
