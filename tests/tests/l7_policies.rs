//! L7 balancing policies, retries and timeouts end to end: how each policy spreads
//! requests, which failures are retried (and which methods), the retry budget, per-try and
//! route timeouts.

mod l7_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use l7_support::client::{H1, H2, get, request};
use l7_support::{Backend, Lab, Mode, local, pool, pool_at, service};
use sluice_tests::privileged;

/// A virtual host `*` with one route per `(path prefix, pool, extra route lines)`.
fn routes(routes: &[(&str, &str, &str)]) -> String {
    let mut toml = "[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n".to_string();
    for (prefix, pool, extra) in routes {
        toml += &format!(
            "[[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"{prefix}\" }}\n\
             forward = {{ pool = \"{pool}\" }}\n{extra}\n"
        );
    }
    toml
}

/// Which backend answered each of `n` requests for `path`, counted by name.
async fn tally(
    addr: SocketAddr,
    n: usize,
    req: impl Fn(usize) -> l7_support::client::Req,
) -> BTreeMap<String, usize> {
    let mut c = H1::connect(addr).await.expect("connect");
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let reply = c.send(req(i)).await.expect("reply");
        *counts.entry(reply.header("x-backend")).or_insert(0) += 1;
    }
    counts
}

#[test]
fn each_policy_spreads_requests_its_own_way() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let a = Backend::start(&lab.ns, "a", local(9001), Mode::Echo);
    let b = Backend::start(&lab.ns, "b", local(9002), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}{}{}{}{}{}",
        pool("weighted", &[&a, &b], &[3, 1], "policy = \"weighted\""),
        pool("random", &[&a, &b], &[], "policy = \"random\""),
        pool("least", &[&a, &b], &[], "policy = \"least_request\""),
        pool(
            "by-header",
            &[&a, &b],
            &[],
            "policy = \"maglev\"\nhash_on = { header = \"x-user\" }"
        ),
        pool(
            "by-cookie",
            &[&a, &b],
            &[],
            "policy = \"maglev\"\nhash_on = { cookie = \"sid\" }"
        ),
        pool(
            "by-client",
            &[&a, &b],
            &[],
            "policy = \"maglev\"\nhash_on = \"client_address\""
        ),
        service("policies", listen, ""),
        routes(&[
            ("/weighted", "weighted", ""),
            ("/random", "random", ""),
            ("/least", "least", ""),
            ("/header", "by-header", ""),
            ("/cookie", "by-cookie", ""),
            ("/client", "by-client", ""),
        ]),
    );
    lab.start(&config);
    lab.run(async move {
        let weighted = tally(listen, 400, |_| get("x", "/weighted")).await;
        assert_eq!(
            (weighted["a"], weighted["b"]),
            (300, 100),
            "smooth weighted 3:1"
        );

        let random = tally(listen, 400, |_| get("x", "/random")).await;
        assert!(
            random.values().all(|n| (140..=260).contains(n)),
            "random: {random:?}"
        );

        // Ten slow requests at once: each goes to the backend with fewer in flight.
        let h2 = H2::connect(listen).await.expect("h2c");
        let slow: Vec<_> = (0..10)
            .map(|_| {
                let mut h2 = h2.clone();
                tokio::spawn(async move { h2.send(get("x", "/least/sleep/1000")).await })
            })
            .collect();
        let mut least = BTreeMap::new();
        for task in slow {
            let reply = task.await.expect("task").expect("reply");
            *least.entry(reply.header("x-backend")).or_insert(0) += 1;
        }
        assert_eq!((least["a"], least["b"]), (5, 5), "least_request: {least:?}");

        // Maglev: every key sticks to one backend, and keys spread over both.
        for (path, key) in [("/header", "x-user"), ("/cookie", "cookie")] {
            let mut owners: BTreeMap<String, String> = BTreeMap::new();
            let mut c = H1::connect(listen).await.expect("connect");
            for round in 0..3 {
                for user in 0..40 {
                    let mut req = get("x", path);
                    let value = if key == "cookie" {
                        format!("a=1; sid=user{user}")
                    } else {
                        format!("user{user}")
                    };
                    req.headers_mut().insert(key, value.parse().expect("value"));
                    let backend = c.send(req).await.expect("reply").header("x-backend");
                    let owner = owners
                        .entry(format!("user{user}"))
                        .or_insert_with(|| backend.clone());
                    assert_eq!(*owner, backend, "{path}: user{user} moved in round {round}");
                }
            }
            let used: std::collections::BTreeSet<_> = owners.values().collect();
            assert_eq!(used.len(), 2, "{path}: keys spread over both backends");
        }
        let by_client = tally(listen, 20, |_| get("x", "/client")).await;
        assert_eq!(
            by_client.len(),
            1,
            "one client address, one backend: {by_client:?}"
        );
    });
    lab.stop();
}

#[test]
fn retries_follow_conditions_methods_and_attempts() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let failing = Backend::start(&lab.ns, "failing", local(9001), Mode::Status(503));
    let good = Backend::start(&lab.ns, "good", local(9002), Mode::Echo);
    let resetting = Backend::start(&lab.ns, "resetting", local(9003), Mode::Reset);
    let listen = local(8080);
    let dead = local(9); // nothing listens: connect fails at once
    let on_503 = "retry = { on = [\"503\"], attempts = 2 }";
    let config = format!(
        "{}{}{}{}{}",
        pool("flaky", &[&failing, &good], &[], ""),
        pool_at("half-dead", &[dead, good.addr], ""),
        pool("resets", &[&resetting, &good], &[], ""),
        service("retries", listen, ""),
        routes(&[
            ("/idempotent-only", "flaky", on_503),
            (
                "/any-method",
                "flaky",
                "retry = { on = [\"503\"], attempts = 2, non_idempotent = true }"
            ),
            ("/connect", "half-dead", "retry = { attempts = 2 }"),
            (
                "/reset",
                "resets",
                "retry = { on = [\"reset\"], attempts = 2 }"
            ),
            ("/no-retry", "flaky", ""),
        ]),
    );
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        for i in 0..10 {
            let reply = c
                .send(get("x", &format!("/idempotent-only/{i}")))
                .await
                .expect("reply");
            assert_eq!(
                reply.status, 200,
                "GET {i} is retried onto the good backend"
            );
        }
        let mut refused = 0;
        for i in 0..10 {
            let reply = c
                .send(request(
                    "POST",
                    "x",
                    &format!("/idempotent-only/post{i}"),
                    "data",
                ))
                .await
                .expect("reply");
            refused += usize::from(reply.status == 503);
        }
        assert!(refused > 0, "POST is not retried without non_idempotent");
        for i in 0..10 {
            let reply = c
                .send(request("POST", "x", &format!("/any-method/{i}"), "data"))
                .await
                .expect("reply");
            assert_eq!(reply.status, 200, "POST {i} retried with non_idempotent");
        }
        for i in 0..10 {
            let reply = c
                .send(get("x", &format!("/connect/{i}")))
                .await
                .expect("reply");
            assert_eq!(reply.status, 200, "connect failure {i} retried");
        }
        for i in 0..10 {
            let reply = c
                .send(get("x", &format!("/reset/{i}")))
                .await
                .expect("reply");
            assert_eq!(reply.status, 200, "reset {i} retried");
        }
        let mut failures = 0;
        for i in 0..10 {
            let reply = c
                .send(get("x", &format!("/no-retry/{i}")))
                .await
                .expect("reply");
            failures += usize::from(reply.status == 503);
        }
        assert_eq!(
            failures, 5,
            "round robin without retries: every other request fails"
        );
    });
    // A POST reached a backend exactly once, retried or not.
    let posts = |b: &Backend| b.seen().iter().filter(|s| s.path.contains("post")).count();
    assert_eq!(posts(&failing) + posts(&good), 10);
    let retried_posts = good
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/any-method"))
        .count();
    assert_eq!(retried_posts, 10);
    lab.stop();
}

#[test]
fn the_retry_budget_keeps_retries_from_multiplying_load() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let a = Backend::start(&lab.ns, "a", local(9001), Mode::Echo);
    let b = Backend::start(&lab.ns, "b", local(9002), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}",
        pool("down", &[&a, &b], &[], ""),
        service("budget", listen, ""),
        routes(&[(
            "/",
            "down",
            "retry = { on = [\"503\"], attempts = 3, budget_percent = 20 }",
        )]),
    );
    lab.start(&config);
    let statuses = lab.run(async move {
        let h2 = H2::connect(listen).await.expect("h2c");
        let all: Vec<_> = (0..10)
            .map(|_| {
                let mut h2 = h2.clone();
                tokio::spawn(async move { h2.send(get("x", "/fail-slowly/300")).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in all {
            statuses.push(task.await.expect("task").expect("reply").status.as_u16());
        }
        statuses
    });
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    let tries = a.count() + b.count();
    // Without a budget: 10 requests x 4 tries = 40. With 20%: two retries at a time while
    // all ten are in flight, fewer as they finish.
    assert!(
        (11..=18).contains(&tries),
        "{tries} tries reached the backends"
    );
    lab.stop();
}

#[test]
fn timeouts_answer_504_and_per_try_timeouts_retry() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let hanging = Backend::start(&lab.ns, "hanging", local(9001), Mode::Hang);
    let good = Backend::start(&lab.ns, "good", local(9002), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}{}",
        pool("hangs", &[&hanging], &[], ""),
        pool("mixed", &[&hanging, &good], &[], ""),
        service("timeouts", listen, ""),
        routes(&[
            ("/route-timeout", "hangs", "timeout = \"500ms\""),
            (
                "/per-try",
                "mixed",
                "timeout = \"5s\"\nretry = { on = [\"504\"], attempts = 1, per_try_timeout = \"300ms\" }",
            ),
        ]),
    );
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        let started = Instant::now();
        let reply = c.send(get("x", "/route-timeout")).await.expect("reply");
        assert_eq!(reply.status, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(3),
            "{took:?}"
        );
        for i in 0..4 {
            let started = Instant::now();
            let reply = c
                .send(get("x", &format!("/per-try/{i}")))
                .await
                .expect("reply");
            assert_eq!(
                reply.status, 200,
                "a hanging try is cut at 300 ms and retried"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    });
    assert_eq!(good.count(), 4);
    lab.stop();
}
