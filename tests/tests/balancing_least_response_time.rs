//! `least_response_time` on real traffic: a backend the test makes slow gets less than 10%
//! of the requests in the first second of load after it slowed down, where round robin
//! would give it a third.

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use l7_support::client::{H1, get};
use l7_support::{Lab, forward_all, local, pool_at, service};
use sluice_tests::privileged;
use sluice_tests::slow_backend::SlowBackend;

/// Requests from `clients` kept-alive connections to `listen` for `time`; how many were
/// answered 200.
fn load(lab: &Lab, listen: SocketAddr, clients: usize, time: Duration) -> usize {
    lab.run(async move {
        let until = Instant::now() + time;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                let Ok(mut c) = H1::connect(listen).await else {
                    return 0;
                };
                while Instant::now() < until {
                    match c.send(get("x", "/")).await {
                        Ok(reply) if reply.status == 200 => ok += 1,
                        Ok(_) => {}
                        Err(_) => match H1::connect(listen).await {
                            Ok(fresh) => c = fresh,
                            Err(_) => return ok,
                        },
                    }
                }
                ok
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap_or(0);
        }
        total
    })
}

#[test]
fn a_slow_backend_gets_under_a_tenth_of_the_requests_within_a_second() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let backends: Vec<SlowBackend> = (1..=3)
        .map(|i| SlowBackend::start(&lab.ns, &format!("b{i}"), local(9000 + i)))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool_at("app", &addrs, "policy = \"least_response_time\""),
        service("web", listen, ""),
        forward_all("app")
    ));
    // Every backend answers fast and has samples.
    let warm = load(&lab, listen, 8, Duration::from_millis(500));
    assert!(warm > 0, "no request answered; log:\n{}", lab.log());
    for b in &backends {
        assert!(
            b.served() > 0,
            "{} got no request while all were fast",
            b.name
        );
    }
    let before: Vec<usize> = backends.iter().map(SlowBackend::served).collect();
    backends[2].set_delay(Duration::from_millis(100));
    let answered = load(&lab, listen, 8, Duration::from_secs(1));
    let during: Vec<usize> = backends
        .iter()
        .zip(&before)
        .map(|(b, before)| b.served() - before)
        .collect();
    let total: usize = during.iter().sum();
    assert!(
        total >= 100,
        "too little load to judge: {during:?} ({answered} answered)"
    );
    assert!(
        during[2] * 10 < total,
        "the slow backend got {} of {total} requests: {during:?}",
        during[2]
    );
    lab.stop();
}
