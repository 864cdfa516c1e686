//! Slow start on real traffic: a backend that comes back after being unhealthy gets a small
//! share of a steady load at the start of its window and close to its full share at the end,
//! where without slow start it would get its full share at once.

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use l7_support::client::{H1, get};
use l7_support::{Lab, forward_all, local, service};
use sluice_tests::privileged;
use sluice_tests::slow_backend::SlowBackend;

/// The slow-start window of the test's pool.
const WINDOW: Duration = Duration::from_secs(4);

/// Requests from `clients` kept-alive connections to `listen` for `time`.
fn load(lab: &Lab, listen: SocketAddr, clients: usize, time: Duration) {
    lab.run(async move {
        let until = Instant::now() + time;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            tasks.push(tokio::spawn(async move {
                let Ok(mut c) = H1::connect(listen).await else {
                    return;
                };
                while Instant::now() < until {
                    if c.send(get("x", "/")).await.is_err() {
                        match H1::connect(listen).await {
                            Ok(fresh) => c = fresh,
                            Err(_) => return,
                        }
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// The share of `backends[1]` among the requests both served during `time` of load.
fn share_of_second(
    lab: &Lab,
    listen: SocketAddr,
    backends: &[&SlowBackend],
    time: Duration,
) -> (f64, [usize; 2]) {
    let before = [backends[0].served(), backends[1].served()];
    load(lab, listen, 8, time);
    let during = [
        backends[0].served() - before[0],
        backends[1].served() - before[1],
    ];
    let total = (during[0] + during[1]).max(1);
    (during[1] as f64 / total as f64, during)
}

#[test]
fn a_readmitted_backend_ramps_up_over_the_window() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (local(9001), local(9002));
    let first = SlowBackend::start(&lab.ns, "b1", a);
    let second = SlowBackend::start(&lab.ns, "b2", b);
    let listen = local(8080);
    let mut config = format!(
        "[[pool]]\nname = \"app\"\nslow_start = \"{}s\"\npanic_threshold = 0\n\
         [pool.health_check]\nkind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\njitter = 0\n",
        WINDOW.as_secs()
    );
    for addr in [a, b] {
        config += &format!(
            "[[pool.backend]]\naddress = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        );
    }
    lab.start(&format!(
        "{config}{}{}",
        service("web", listen, ""),
        forward_all("app")
    ));

    // At the start both are at full weight: round robin halves the load.
    let (share, during) =
        share_of_second(&lab, listen, &[&first, &second], Duration::from_millis(500));
    assert!(
        (0.4..0.6).contains(&share),
        "before any outage: {during:?}; log:\n{}",
        lab.log()
    );

    // b2 goes down: once unhealthy it gets nothing.
    drop(second);
    let gone = Instant::now();
    loop {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "b2 never left the pool; log:\n{}",
            lab.log()
        );
        if lab.backend_healthy("app", "127.0.0.1:9002") == Some(false) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // b2 comes back; its window starts when the next probe finds it. Load until it is
    // readmitted (its first request), then measure the first and the last second of the window.
    let second = SlowBackend::start(&lab.ns, "b2", b);
    let back = Instant::now();
    while second.served() == 0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "b2 was never readmitted; log:\n{}",
            lab.log()
        );
        load(&lab, listen, 2, Duration::from_millis(20));
    }
    let readmitted = Instant::now();
    let backends = [&first, &second];
    let (early, early_counts) = share_of_second(&lab, listen, &backends, Duration::from_secs(1));
    let middle = WINDOW - Duration::from_secs(1) - readmitted.elapsed();
    load(&lab, listen, 8, middle);
    let (late, late_counts) = share_of_second(&lab, listen, &backends, Duration::from_secs(1));
    eprintln!(
        "slow start share of the readmitted backend: first second {early:.3} {early_counts:?}, last second {late:.3} {late_counts:?}"
    );
    for counts in [early_counts, late_counts] {
        assert!(
            counts[0] + counts[1] >= 200,
            "too little load to judge: {counts:?}"
        );
    }
    // Its weight is 10% to 32.5% of full in the first second (a share of 9% to 25%), and
    // 77.5% to 100% in the last (44% to 50%); without slow start it would be 50% throughout.
    assert!(early < 0.3, "first second of the window: {early_counts:?}");
    assert!(late > 0.4, "last second of the window: {late_counts:?}");
    lab.stop();
}
