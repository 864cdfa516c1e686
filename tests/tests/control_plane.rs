//! The control plane under load, through the real agent: a backend that dies leaves the
//! kernel's Maglev table within interval x fall (+ one interval) and takes no new flow;
//! established flows to the others never move; it rises after `rise` checks. Drain and
//! enable through the CLI, reload through the admin API (an invalid config changes nothing),
//! and the metrics endpoint shows the kernel's and the checker's counters.

#[path = "l4_e2e_support/mod.rs"]
mod l4_e2e_support;

use std::time::{Duration, Instant};

use l4_e2e_support::{Mode, Setup, V4};
use sluice_tests::{eventually, privileged, sluice_cli};

const INTERVAL_MS: u64 = 500;
const FALL: u64 = 2;
const RISE: u64 = 2;

fn health_check() -> String {
    format!(
        "kind = \"tcp\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"200ms\"\nfall = {FALL}\nrise = {RISE}\njitter = 0"
    )
}

/// Runs `sluice ARGS` (the CLI) inside the load balancer's namespace.
fn cli(setup: &Setup, args: &[&str]) -> (bool, String) {
    sluice_cli(setup.lb(), args)
}

fn backend_healthy(setup: &Setup, address: &str) -> Option<bool> {
    let (ok, status) = cli(setup, &["status"]);
    assert!(ok, "sluice status failed: {status}");
    let json: serde_json::Value = serde_json::from_str(&status)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {status}"));
    json["pools"]
        .as_array()?
        .iter()
        .filter(|p| p["name"] == "tcp")
        .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["address"] == address)
        .and_then(|b| b["healthy"].as_bool())
}

#[test]
fn dead_backend_leaves_the_kernel_table_in_time_and_rises_again() {
    if !privileged() {
        return;
    }
    let mut setup = Setup::with_health_check(&V4, Mode::Dsr, 3, &health_check());
    let dead = V4.backends[0];
    let dead_addr = format!("{dead}:7000");
    let mut established = setup.client.in_ns(|| {
        setup.wait_for_first_tcp_flow();
        (0..30).map(|_| setup.tcp_connect()).collect::<Vec<_>>()
    });
    assert!(
        established.iter().any(|c| c.served_by == dead),
        "some flow on the backend to kill"
    );

    let killed = Instant::now();
    setup.kill_backend(0);
    // Each poll runs the CLI in a new process, which takes a while on a loaded machine: the
    // poll that sees the backend gone tells only that it was gone by then, so its own
    // duration is the measurement's uncertainty, not the agent's delay.
    let mut last_poll = Duration::ZERO;
    eventually(Duration::from_secs(10), || {
        let polled = Instant::now();
        let healthy = backend_healthy(&setup, &dead_addr);
        last_poll = polled.elapsed();
        match healthy {
            Some(false) => Ok(()),
            other => Err(format!("{dead} still healthy: {other:?}")),
        }
    });
    let detected = killed.elapsed();
    eprintln!(
        "backend removed {detected:?} after its death, seen by a poll of {last_poll:?} (interval {INTERVAL_MS} ms, fall {FALL})"
    );
    let bound = Duration::from_millis(INTERVAL_MS * (FALL + 1)) + Duration::from_millis(400);
    assert!(
        detected.saturating_sub(last_poll) <= bound,
        "removed after {detected:?} (less {last_poll:?} for the poll that saw it), want at most {bound:?}"
    );

    setup.client.in_ns(|| {
        for _ in 0..60 {
            let conn = setup.tcp_connect();
            assert_ne!(conn.served_by, dead, "a new flow went to the dead backend");
        }
        for conn in established.iter_mut().filter(|c| c.served_by != dead) {
            let now = conn.ask().unwrap_or_else(|e| {
                panic!("flow {} to a surviving backend broke: {e}", conn.local)
            });
            assert_eq!(now, conn.served_by, "flow {} moved", conn.local);
        }
    });

    let (_, metrics) = cli(&setup, &["status"]);
    assert!(metrics.contains("\"healthy\": false"), "{metrics}");

    let revived = Instant::now();
    setup.revive_backend(0);

    eventually(Duration::from_secs(10), || {
        let polled = Instant::now();
        let healthy = backend_healthy(&setup, &dead_addr);
        last_poll = polled.elapsed();
        match healthy {
            Some(true) => Ok(()),
            other => Err(format!(
                "{dead} not back yet: {other:?}; agent log:\n{}",
                setup
                    .agent_log()
                    .lines()
                    .filter(|l| l.contains("health"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        }
    });
    let rose = revived.elapsed();
    eprintln!(
        "backend readmitted {rose:?} after it came back, seen by a poll of {last_poll:?} (rise {RISE})"
    );
    let bound = Duration::from_millis(INTERVAL_MS * (RISE + 1)) + Duration::from_millis(400);
    assert!(
        rose.saturating_sub(last_poll) <= bound,
        "readmitted after {rose:?} (less {last_poll:?} for the poll that saw it), want at most {bound:?}"
    );
    let back = setup.client.in_ns(|| {
        (0..60)
            .filter(|_| setup.tcp_connect().served_by == dead)
            .count()
    });
    assert!(back > 0, "the revived backend takes new flows again");
    drop(established);
    setup.stop();
}

#[test]
fn drain_enable_reload_and_metrics_through_the_admin_api() {
    if !privileged() {
        return;
    }
    let setup = Setup::with_health_check(&V4, Mode::Nat, 3, &health_check());
    let drained = V4.backends[1];
    let mut established = setup.client.in_ns(|| {
        setup.wait_for_first_tcp_flow();
        (0..30).map(|_| setup.tcp_connect()).collect::<Vec<_>>()
    });
    assert!(established.iter().any(|c| c.served_by == drained));

    let (ok, out) = cli(&setup, &["drain", "tcp", &format!("{drained}:8000")]);
    assert!(ok, "drain: {out}");
    setup.client.in_ns(|| {
        eventually(Duration::from_secs(5), || {
            let hits = (0..40)
                .filter(|_| setup.tcp_connect().served_by == drained)
                .count();
            if hits == 0 {
                Ok(())
            } else {
                Err(format!("{hits} new flows still went to {drained}"))
            }
        });
        for conn in established.iter_mut() {
            let now = conn
                .ask()
                .unwrap_or_else(|e| panic!("established flow {} broke: {e}", conn.local));
            assert_eq!(
                now, conn.served_by,
                "established flows finish where they are, drained or not"
            );
        }
    });
    let (ok, out) = cli(&setup, &["enable", "tcp", &format!("{drained}:8000")]);
    assert!(ok, "enable: {out}");
    setup.client.in_ns(|| {
        eventually(Duration::from_secs(5), || {
            let hits = (0..40)
                .filter(|_| setup.tcp_connect().served_by == drained)
                .count();
            if hits > 0 {
                Ok(())
            } else {
                Err(format!("no new flow to {drained} after enable"))
            }
        });
    });
    let (ok, out) = cli(&setup, &["drain", "tcp", "no-such-backend"]);
    assert!(!ok && out.contains("no backend named"), "{out}");

    // An invalid config sent by POST /reload is refused and nothing changes.
    let (_, before) = cli(&setup, &["status"]);
    std::fs::write(setup_config_path(&setup), "[[pool]]\nname = 5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = cli(&setup, &["reload"]);
    assert!(!ok && out.contains("config rejected"), "{out}");
    let (_, after) = cli(&setup, &["status"]);
    let version = |s: &str| {
        s.lines()
            .find(|l| l.contains("config_version"))
            .map(str::to_string)
    };
    assert_eq!(
        version(&before),
        version(&after),
        "the running config stays"
    );
    setup.client.in_ns(|| {
        setup.tcp_connect();
    });

    // Saving the config file reloads it, no signal needed.
    std::fs::write(setup_config_path(&setup), setup.config_text())
        .unwrap_or_else(|e| panic!("{e}"));
    eventually(Duration::from_secs(10), || {
        let (_, now) = cli(&setup, &["status"]);
        match (version(&before), version(&now)) {
            (Some(b), Some(n)) if b != n => Ok(()),
            other => Err(format!("no reload after the file changed: {other:?}")),
        }
    });

    let metrics = setup.lb().in_ns(|| {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect("127.0.0.1:9100").unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{e}"));
        text
    });
    for needle in [
        "sluice_xdp_packets_total{reason=\"forward_nat\"}",
        "sluice_xdp_packets_total{reason=\"forward_nat_reply\"}",
        "sluice_l4_service_new_flows_total{service=\"tcp\"}",
        "sluice_l4_backend_packets_total{",
        "sluice_backend_healthy{",
        "sluice_build_info{",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_config_reloads_total{result=\"failure\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        failures.is_some_and(|n| n >= 1.0),
        "failed reloads counted: {failures:?}"
    );
    drop(established);
    setup.stop();
}

fn setup_config_path(setup: &Setup) -> std::path::PathBuf {
    setup.config_path()
}
