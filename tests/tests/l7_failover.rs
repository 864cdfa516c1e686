//! An L7 backend fails under continuous load: it stops listening (connections refused) or
//! stops answering (requests hang). Active HTTP checks take it out of the pool within
//! interval x fall (+ one interval), the proxy sends it no try after that, retries hide the
//! failure from clients (idempotent GETs: zero errors), and once it recovers it is back after
//! `rise` checks and takes requests again.

mod l7_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use l7_support::admin::sample;
use l7_support::client::{H1, get};
use l7_support::{Backend, Lab, Mode, local, service};
use sluice_tests::{NsTask, eventually, privileged};

const INTERVAL_MS: u64 = 400;
const FALL: u64 = 2;
const RISE: u64 = 2;
/// Time one try may take before the proxy retries elsewhere (what makes a hung backend's
/// requests succeed).
const PER_TRY_MS: u64 = 300;
/// Scheduling slack on top of the bounds (the same as the L4 control-plane test).
const SLACK: Duration = Duration::from_millis(400);
/// Concurrent client loops.
const CLIENTS: usize = 4;
const LISTEN: u16 = 8080;
/// The backend that fails.
const VICTIM: &str = "c";

fn config(backends: &[&Backend]) -> String {
    let mut toml = format!(
        "[[pool]]\nname = \"app\"\n[pool.health_check]\nkind = \"http\"\npath = \"/health\"\n\
         interval = \"{INTERVAL_MS}ms\"\ntimeout = \"200ms\"\nfall = {FALL}\nrise = {RISE}\njitter = 0\n"
    );
    for backend in backends {
        toml += &format!(
            "[[pool.backend]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\n",
            backend.name,
            backend.addr.ip(),
            backend.addr.port()
        );
    }
    toml += &service("svc", local(LISTEN), "access_log = false");
    toml += &format!(
        "[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n\
         retry = {{ on = [\"connect_failure\", \"reset\", \"504\"], attempts = 2, \
         per_try_timeout = \"{PER_TRY_MS}ms\", budget_percent = 100 }}\n"
    );
    toml
}

/// What one client request got: the backend that answered, or what went wrong.
type Outcome = Result<String, String>;

/// [`CLIENTS`] loops sending `GET /work` over keep-alive connections until `stop`.
fn load(lab: &Lab, stop: Arc<AtomicBool>) -> NsTask<Vec<Outcome>> {
    lab.ns.spawn_task(async move {
        let loops: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client_loop(stop.clone())))
            .collect();
        let mut outcomes = Vec::new();
        for client in loops {
            outcomes.extend(client.await.unwrap_or_else(|e| panic!("client loop: {e}")));
        }
        outcomes
    })
}

async fn client_loop(stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut conn: Option<H1> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => match H1::connect(local(LISTEN)).await {
                Ok(c) => c,
                Err(e) => {
                    outcomes.push(Err(e));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let outcome = match c.send(get("app", "/work")).await {
            Ok(reply) if reply.status == 200 => Ok(reply.header("x-backend")),
            Ok(reply) => Err(format!("status {}: {}", reply.status, reply.text())),
            Err(e) => Err(e),
        };
        if outcome.is_ok() {
            conn = Some(c);
        }
        outcomes.push(outcome);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    outcomes
}

/// Tries the proxy sent to `backend`, by its metrics: responses of every class, connect
/// errors and other failures (resets, per-try timeouts).
fn tries(lab: &Lab, backend: &str) -> u64 {
    let metrics = lab.metrics();
    let labels = format!("{{pool=\"app\",backend=\"{backend}\"");
    let responses: f64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .filter_map(|class| {
            let series =
                format!("sluice_l7_backend_responses_total{labels},status_class=\"{class}\"}}");
            sample(&metrics, &series)
        })
        .sum();
    let other: f64 = [
        "sluice_l7_upstream_connect_errors_total",
        "sluice_l7_upstream_failures_total",
    ]
    .iter()
    .filter_map(|name| sample(&metrics, &format!("{name}{labels}}}")))
    .sum();
    (responses + other) as u64
}

/// Polls `GET /status` every 20 ms until the victim's health is `healthy`; returns how long
/// that took.
fn time_until_health(lab: &Lab, healthy: bool) -> Duration {
    let since = Instant::now();
    eventually(Duration::from_secs(15), || {
        std::thread::sleep(Duration::from_millis(20));
        match lab.backend_healthy("app", VICTIM) {
            Some(h) if h == healthy => Ok(()),
            other => Err(format!("{VICTIM} healthy: {other:?}, want {healthy}")),
        }
    });
    since.elapsed()
}

/// Requests for `/work` the backend received.
fn work(backend: &Backend) -> usize {
    backend
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/work"))
        .count()
}

/// The victim, while it exists.
fn present(victim: &Option<Backend>) -> &Backend {
    victim
        .as_ref()
        .unwrap_or_else(|| panic!("backend {VICTIM} is not running"))
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    /// The server goes away: connections are refused.
    Refused,
    /// The server accepts and reads requests but never answers them (nor its checks).
    Hang,
}

fn fail_and_recover(failure: Failure) {
    let mut lab = Lab::new();
    let a = Backend::start(&lab.ns, "a", local(9001), Mode::Echo);
    let b = Backend::start(&lab.ns, "b", local(9002), Mode::Echo);
    let start_victim = |lab: &Lab| Backend::start(&lab.ns, VICTIM, local(9003), Mode::Echo);
    let mut victim = Some(start_victim(&lab));
    lab.start(&config(&[&a, &b, present(&victim)]));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&lab, stop.clone());
    eventually(Duration::from_secs(10), || {
        if [&a, &b, present(&victim)].iter().all(|b| work(b) > 0) {
            Ok(())
        } else {
            Err("the load has not reached every backend".into())
        }
    });

    match failure {
        Failure::Refused => victim = None,
        Failure::Hang => present(&victim).set_mode(Mode::Hang),
    }
    let removed = time_until_health(&lab, false);
    let bound = Duration::from_millis(INTERVAL_MS * (FALL + 1)) + SLACK;
    eprintln!(
        "{failure:?}: backend removed {removed:?} after it failed (interval {INTERVAL_MS} ms, \
         fall {FALL}, bound {bound:?})"
    );
    assert!(
        removed <= bound,
        "removed after {removed:?}, want at most {bound:?}"
    );

    // Tries picked just before the removal end within a per-try timeout; none may start
    // after it.
    std::thread::sleep(Duration::from_millis(PER_TRY_MS + 100));
    let tries_then = tries(&lab, VICTIM);
    let arrived_then = victim.as_ref().map(work);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        tries(&lab, VICTIM),
        tries_then,
        "the proxy sent tries to {VICTIM} after it left the pool"
    );
    assert_eq!(
        victim.as_ref().map(work),
        arrived_then,
        "requests reached {VICTIM} after it left the pool"
    );

    let recovered = Instant::now();
    match failure {
        Failure::Refused => victim = Some(start_victim(&lab)),
        Failure::Hang => present(&victim).set_mode(Mode::Echo),
    }
    let victim = present(&victim);
    let readmitted = time_until_health(&lab, true);
    let bound = Duration::from_millis(INTERVAL_MS * (RISE + 1)) + SLACK;
    eprintln!("{failure:?}: backend readmitted {readmitted:?} after it recovered (rise {RISE})");
    assert!(
        readmitted <= bound,
        "readmitted after {readmitted:?}, want at most {bound:?}"
    );
    let before = work(victim);
    eventually(Duration::from_secs(5), || {
        if work(victim) > before {
            Ok(())
        } else {
            Err(format!("{VICTIM} takes no request since it recovered"))
        }
    });
    eprintln!(
        "{failure:?}: taking requests again {:?} after it recovered",
        recovered.elapsed()
    );

    stop.store(true, Ordering::SeqCst);
    let outcomes = clients.join();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let served = |name: &str| {
        outcomes
            .iter()
            .filter(|o| o.as_ref().is_ok_and(|b| b == name))
            .count()
    };
    eprintln!(
        "{failure:?}: {} requests (a {}, b {}, {VICTIM} {}), {} errors",
        outcomes.len(),
        served("a"),
        served("b"),
        served(VICTIM),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "clients saw {} errors (retries should hide the failure): {:?}",
        errors.len(),
        errors.iter().take(5).collect::<Vec<_>>()
    );
    lab.stop();
}

#[test]
fn a_refusing_backend_leaves_the_pool_in_time_and_comes_back() {
    if !privileged() {
        return;
    }
    fail_and_recover(Failure::Refused);
}

#[test]
fn a_hanging_backend_leaves_the_pool_in_time_and_comes_back() {
    if !privileged() {
        return;
    }
    fail_and_recover(Failure::Hang);
}
