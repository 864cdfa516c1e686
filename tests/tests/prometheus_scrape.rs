//! The metrics endpoint as Prometheus sees it: `promtool check metrics` finds nothing to say
//! about it, and a real Prometheus server, scraping the agent every second, stores the
//! agent's counters with the values the test caused.

mod l7_support;

use std::process::Stdio;
use std::time::Duration;

use l7_support::admin::ADMIN;
use l7_support::client::{H1, get};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::{Captured, PrometheusServer, eventually, privileged, required_tool};

const LISTEN: u16 = 8080;
/// Where Prometheus listens, on the lab's own loopback (so no other Prometheus is in the way).
const PROMETHEUS: u16 = 9090;
const REQUESTS: usize = 25;

#[test]
fn promtool_finds_no_problem_in_the_metrics() {
    if !privileged() || !required_tool("promtool", "prometheus") {
        return;
    }
    let lab = lab_with_traffic();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let exposition = dir.path().join("metrics.txt");
    std::fs::write(&exposition, lab.metrics()).unwrap_or_else(|e| panic!("writing: {e}"));
    let input = std::fs::File::open(&exposition).unwrap_or_else(|e| panic!("opening: {e}"));
    let mut command = lab.ns.command("promtool");
    command.args(["check", "metrics"]).stdin(Stdio::from(input));
    let output = Captured::spawn(&lab.ns, command).finish(Duration::from_secs(30));
    let said = format!("{}{}", output.stdout, output.stderr);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}\nthe metrics:\n{}",
        output.status,
        lab.metrics()
    );
    lab.stop();
}

#[test]
fn prometheus_scrapes_the_agent() {
    if !privileged() || !required_tool("prometheus", "prometheus") {
        return;
    }
    let lab = lab_with_traffic();
    // On the lab's own loopback, scraping the agent's admin API every second.
    let prometheus = PrometheusServer::start(&lab.ns, local(PROMETHEUS), ADMIN);
    let version = env!("CARGO_PKG_VERSION");
    for (query, want) in [
        ("up{job=\"sluice\"}", "1"),
        ("sluice_build_info", "1"),
        (
            "sluice_l7_route_requests_total{service=\"svc\",status_class=\"2xx\"}",
            &REQUESTS.to_string(),
        ),
    ] {
        let result = eventually(Duration::from_secs(30), || {
            query_one(&prometheus, query, want)
        });
        eprintln!("prometheus: {query} = {result}");
        if query == "sluice_build_info" {
            assert!(
                result.contains(&format!("\"version\":\"{version}\"")),
                "{query}: {result}"
            );
        }
    }
    drop(prometheus);
    lab.stop();
}

/// An agent serving one route, after [`REQUESTS`] requests through it.
fn lab_with_traffic() -> Lab {
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    lab.start(&format!(
        "{}{}{}",
        pool("app", &[&app], &[], ""),
        service("svc", local(LISTEN), ""),
        forward_all("app")
    ));
    lab.run(async {
        let mut client = H1::connect(local(LISTEN)).await.expect("connect");
        for _ in 0..REQUESTS {
            let reply = client.send(get("x", "/")).await.expect("reply");
            assert_eq!(reply.status, 200);
        }
    });
    assert_eq!(app.count(), REQUESTS);
    lab
}

/// Runs an instant query; `Ok` with the result when it is one sample of value `want`.
fn query_one(prometheus: &PrometheusServer, query: &str, want: &str) -> Result<String, String> {
    let result = prometheus
        .query(query)
        .map_err(|e| format!("{e}; prometheus log:\n{}", prometheus.log()))?;
    let values: Vec<&str> = result
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| s["value"][1].as_str())
                .collect()
        })
        .unwrap_or_default();
    if values == [want] {
        Ok(result.to_string())
    } else {
        Err(format!(
            "{query}: want one sample of {want}, got {result}; prometheus log:\n{}",
            prometheus.log()
        ))
    }
}
