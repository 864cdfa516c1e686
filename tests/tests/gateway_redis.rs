//! A `rate_limit` shared through a real `redis-server`: two listeners count against one
//! limit, and when Redis goes away each falls back to its own local limit.

mod l7_support;

use std::process::Stdio;
use std::time::Duration;

use l7_support::client::{H1, get};
use l7_support::{Backend, Lab, Mode, local, pool, service};
use sluice_tests::{privileged, required_tool};

const REDIS_PORT: u16 = 6390;

/// A route behind the shared filter "shared": 5 requests a day, across listeners.
fn guarded(name: &str, port: u16) -> String {
    format!(
        "{}[[service.l7.filter]]\nname = \"shared\"\n\
         rate_limit = {{ rate = 5, per = \"24h\", key = \"global\", redis = \"redis://127.0.0.1:{REDIS_PORT}\", redis_timeout = \"200ms\" }}\n\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n",
        service(name, local(port), "")
    )
}

fn statuses(lab: &Lab, port: u16, n: usize) -> Vec<u16> {
    lab.run(async move {
        let mut h1 = H1::connect(local(port)).await.expect("connect");
        let mut out = Vec::new();
        for _ in 0..n {
            let reply = h1.send(get("gw.test", "/")).await.expect("reply");
            out.push(reply.status.as_u16());
        }
        out
    })
}

#[test]
fn two_listeners_share_a_redis_limit_and_fall_back_to_their_own() {
    if !privileged() || !required_tool("redis-server", "redis-server") {
        return;
    }
    let mut lab = Lab::new();
    let mut command = lab.ns.command("redis-server");
    command
        .args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut redis = lab.ns.spawn(command);
    lab.run(async {
        eventually_connects(local(REDIS_PORT)).await;
    });
    let app = Backend::start(&lab.ns, "app-1", local(9001), Mode::Echo);
    let config = format!(
        "{}{}{}",
        pool("app", &[&app], &[], ""),
        guarded("gw1", 8080),
        guarded("gw2", 8081)
    );
    lab.start(&config);

    // One limit of 5 over both listeners.
    assert_eq!(statuses(&lab, 8080, 3), [200, 200, 200]);
    assert_eq!(statuses(&lab, 8081, 3), [200, 200, 429]);
    assert_eq!(statuses(&lab, 8080, 1), [429]);
    assert_eq!(app.count(), 5);

    // Redis gone: each listener's own buckets (5, full) decide, without waiting on Redis.
    redis.kill();
    assert_eq!(statuses(&lab, 8080, 6), [200, 200, 200, 200, 200, 429]);
    assert_eq!(statuses(&lab, 8081, 1), [200]);
    assert_eq!(app.count(), 11);
    lab.stop();
}

/// Waits until something accepts connections on `addr`.
async fn eventually_connects(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server is not listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
