//! L7 pools that follow a DNS name: the test runs a DNS server (hickory-server) in the
//! lab's namespace and changes its records while the agent runs. Backends are added and
//! removed as the records change, a failing server keeps the last set (logged, counted,
//! shown by `sluice discovery`), an empty answer follows `when_no_healthy`, the TTL sets
//! when a name is asked again, and SRV records give ports and weights.

mod l7_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use l7_support::admin::ADMIN;
use l7_support::client::{H1, get};
use l7_support::{Backend, Lab, Mode, forward_all, local, service};
use sluice_tests::dns::{Srv, TestDns};
use sluice_tests::{eventually, privileged};

const WAIT: Duration = Duration::from_secs(20);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A pool following `name` at `dns`; `record` is the rest of `[pool.discovery.dns]`.
fn dns_pool(pool: &str, name: &str, dns: &TestDns, record: &str, extra: &str) -> String {
    format!(
        "[[pool]]\nname = \"{pool}\"\n{extra}\n[pool.health_check]\nkind = \"none\"\n\
         [pool.discovery.dns]\nname = \"{name}\"\nservers = [\"{}\"]\n{record}\n",
        dns.addr()
    )
}

/// Which backend answered each of `n` requests to `listen`, counted by name.
fn answers(lab: &Lab, listen: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    lab.run(async move {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let reply = match H1::connect(listen).await {
                Ok(mut c) => c.send(get("x", "/")).await,
                Err(e) => Err(e),
            };
            let key = match reply {
                Ok(r) if r.status == 200 => r.text(),
                Ok(r) => format!("status {}", r.status.as_u16()),
                Err(e) => format!("error {e}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    })
}

fn only(names: &[&str]) -> impl Fn(&BTreeMap<String, usize>) -> bool {
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    move |seen| seen.keys().cloned().collect::<Vec<_>>() == want
}

/// Waits until `n` requests are answered by exactly the backends `names`.
fn wait_for(lab: &Lab, listen: SocketAddr, names: &[&str], what: &str) {
    let check = only(names);
    eventually(WAIT, || {
        let seen = answers(lab, listen, 8);
        if check(&seen) {
            Ok(())
        } else {
            Err(format!("{what}: answers {seen:?}; log:\n{}", lab.log()))
        }
    });
}

/// `sluice discovery` for `pool`, as JSON.
fn discovery(lab: &Lab, pool: &str) -> serde_json::Value {
    let (ok, out) = lab.cli(&["discovery", "--admin", &ADMIN.to_string()]);
    assert!(ok, "sluice discovery: {out}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    report["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["pool"] == pool).cloned())
        .unwrap_or_else(|| panic!("no pool {pool} in {out}"))
}

#[test]
fn backends_follow_the_records_and_a_failing_server_keeps_the_last_set() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let dns = TestDns::start(&lab.ns, local(5300));
    let _one = Backend::start(&lab.ns, "one", SocketAddr::new(ip(2), 9000), Mode::Echo);
    let _two = Backend::start(&lab.ns, "two", SocketAddr::new(ip(3), 9000), Mode::Echo);
    let listen = local(8080);
    dns.set_addresses("app.test", &[ip(2)], 1);
    let record = "port = 9000\nmin_ttl = \"1s\"\nmax_ttl = \"2s\"";
    lab.start(&format!(
        "{}{}{}",
        dns_pool("app", "app.test.", &dns, record, ""),
        service("web", listen, ""),
        forward_all("app")
    ));
    wait_for(&lab, listen, &["one"], "the first answer");
    let source = discovery(&lab, "app");
    assert_eq!(source["source"], "dns", "{source}");
    assert_eq!(source["target"], "app.test. A/AAAA", "{source}");
    assert_eq!(source["backends"], 1, "{source}");
    let first_change = source["last_changed"].as_f64();
    assert!(first_change.is_some(), "{source}");

    dns.set_addresses("app.test", &[ip(2), ip(3)], 1);
    wait_for(&lab, listen, &["one", "two"], "a backend added");
    let status = lab.status();
    let pool = status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "app"))
        .unwrap_or_else(|| panic!("no pool app in /status: {status}"));
    assert_eq!(
        pool["backends"].as_array().map(Vec::len),
        Some(2),
        "discovered backends appear in /status: {status}"
    );

    dns.set_addresses("app.test", &[ip(3)], 1);
    wait_for(&lab, listen, &["two"], "a backend removed");
    let changed = discovery(&lab, "app")["last_changed"].as_f64();
    assert!(
        changed > first_change,
        "last_changed moves: {changed:?} after {first_change:?}"
    );

    dns.set_failing(true);
    eventually(WAIT, || {
        let source = discovery(&lab, "app");
        match source["failures"].as_u64() {
            Some(n) if n >= 2 => Ok(()),
            _ => Err(format!("no failures recorded yet: {source}")),
        }
    });
    let seen = answers(&lab, listen, 8);
    assert!(
        only(&["two"])(&seen),
        "the last set stays while DNS fails: {seen:?}"
    );
    let failed = lab.metric("sluice_discovery_updates_total{pool=\"app\",result=\"failed\"}");
    assert!(failed >= 2.0, "failures are counted: {failed}");
    assert!(
        lab.log().contains("discovery failed; keeping the last set"),
        "and logged"
    );
    let source = discovery(&lab, "app");
    assert!(
        source["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{source}"
    );

    dns.set_failing(false);
    dns.set_addresses("app.test", &[ip(2)], 1);
    wait_for(&lab, listen, &["one"], "answers again after the failure");
    assert_eq!(
        discovery(&lab, "app")["last_error"],
        serde_json::Value::Null
    );
    lab.stop();
}

#[test]
fn an_empty_answer_keeps_the_set_when_failing_open_and_empties_the_pool_when_refusing() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let dns = TestDns::start(&lab.ns, local(5300));
    let _one = Backend::start(&lab.ns, "one", SocketAddr::new(ip(2), 9000), Mode::Echo);
    let (open, refuse) = (local(8080), local(8081));
    dns.set_addresses("open.test", &[ip(2)], 1);
    dns.set_addresses("refuse.test", &[ip(2)], 1);
    let record = "port = 9000\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"";
    lab.start(&format!(
        "{}{}{}{}{}{}",
        dns_pool(
            "open",
            "open.test.",
            &dns,
            record,
            "when_no_healthy = \"fail_open\""
        ),
        dns_pool(
            "refuse",
            "refuse.test.",
            &dns,
            record,
            "when_no_healthy = \"refuse\""
        ),
        service("open", open, ""),
        forward_all("open"),
        service("refuse", refuse, ""),
        forward_all("refuse"),
    ));
    wait_for(&lab, open, &["one"], "fail_open pool");
    wait_for(&lab, refuse, &["one"], "refuse pool");
    // NXDOMAIN for both names.
    dns.set_addresses("open.test", &[], 1);
    dns.set_addresses("refuse.test", &[], 1);
    wait_for(&lab, refuse, &["status 503"], "the refusing pool is empty");
    eventually(WAIT, || {
        let source = discovery(&lab, "open");
        if source["last_result"] == "empty" {
            Ok(())
        } else {
            Err(format!("no empty answer yet: {source}"))
        }
    });
    let seen = answers(&lab, open, 8);
    assert!(
        only(&["one"])(&seen),
        "the fail_open pool keeps its set: {seen:?}"
    );
    assert_eq!(discovery(&lab, "open")["backends"], 1);
    assert_eq!(discovery(&lab, "refuse")["backends"], 0);
    lab.stop();
}

#[test]
fn the_ttl_sets_when_a_name_is_asked_again_within_the_bounds() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let dns = TestDns::start(&lab.ns, local(5300));
    let _one = Backend::start(&lab.ns, "one", SocketAddr::new(ip(2), 9000), Mode::Echo);
    // Same bounds; only the records' TTLs differ. A third name's long TTL is cut by max_ttl.
    dns.set_addresses("short.test", &[ip(2)], 1);
    dns.set_addresses("long.test", &[ip(2)], 3600);
    dns.set_addresses("capped.test", &[ip(2)], 3600);
    let wide = "port = 9000\nmin_ttl = \"1s\"\nmax_ttl = \"1h\"";
    let capped = "port = 9000\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"";
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}{}{}",
        dns_pool("short", "short.test.", &dns, wide, ""),
        dns_pool("long", "long.test.", &dns, wide, ""),
        dns_pool("capped", "capped.test.", &dns, capped, ""),
        service("web", listen, ""),
        forward_all("short"),
    ));
    // Each resolution asks for A and AAAA.
    eventually(WAIT, || {
        let (short, capped) = (dns.queries("short.test"), dns.queries("capped.test"));
        if short >= 8 && capped >= 8 {
            Ok(())
        } else {
            Err(format!(
                "asked {short} times for short.test and {capped} for capped.test"
            ))
        }
    });
    assert_eq!(
        dns.queries("long.test"),
        2,
        "a name whose TTL has not run out is not asked again"
    );
    lab.stop();
}

#[test]
fn srv_records_give_ports_and_weights() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let dns = TestDns::start(&lab.ns, local(5300));
    let _one = Backend::start(&lab.ns, "one", SocketAddr::new(ip(2), 9001), Mode::Echo);
    let _two = Backend::start(&lab.ns, "two", SocketAddr::new(ip(3), 9002), Mode::Echo);
    let _spare = Backend::start(&lab.ns, "spare", SocketAddr::new(ip(4), 9003), Mode::Echo);
    dns.set_addresses("one.test", &[ip(2)], 1);
    dns.set_addresses("two.test", &[ip(3)], 1);
    dns.set_addresses("spare.test", &[ip(4)], 1);
    let srv = |weight_two: u16| {
        [
            Srv {
                priority: 10,
                weight: 1,
                port: 9001,
                target: "one.test",
            },
            Srv {
                priority: 10,
                weight: weight_two,
                port: 9002,
                target: "two.test",
            },
            // A higher priority is a fallback tier, unused while the lowest has targets.
            Srv {
                priority: 20,
                weight: 1,
                port: 9003,
                target: "spare.test",
            },
        ]
    };
    dns.set_srv("_http._tcp.app.test", &srv(3), 1);
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        dns_pool(
            "app",
            "_http._tcp.app.test.",
            &dns,
            "record = \"srv\"\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"",
            "policy = \"weighted\""
        ),
        service("web", listen, ""),
        forward_all("app")
    ));
    wait_for(&lab, listen, &["one", "two"], "the SRV targets");
    // Smooth weighted round robin over weights 1 and 3: exactly 1 in 4.
    let seen = answers(&lab, listen, 40);
    assert_eq!(seen.get("one"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("two"), Some(&30), "{seen:?}");
    dns.set_srv("_http._tcp.app.test", &srv(1), 1);
    eventually(WAIT, || {
        let seen = answers(&lab, listen, 40);
        if seen.get("one") == Some(&20) && seen.get("two") == Some(&20) {
            Ok(())
        } else {
            Err(format!("not reweighted yet: {seen:?}"))
        }
    });
    lab.stop();
}
