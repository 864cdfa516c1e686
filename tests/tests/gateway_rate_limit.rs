//! `rate_limit` under load: wrk offers far more than the configured rate for 10 s, and the
//! requests let through match the rate (plus the initial burst) within 5%.

mod l7_support;

use l7_support::{gateway_lab, pool, service};
use sluice_tests::{privileged, required_tool};

const RATE: u64 = 400;
const BURST: u64 = 40;
const SECONDS: u64 = 10;
const CONNECTIONS: u64 = 8;

#[test]
fn a_global_limit_holds_within_five_percent_under_wrk() {
    if !privileged() || !required_tool("wrk", "wrk") {
        return;
    }
    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        "{}{}[[service.l7.filter]]\nname = \"global\"\n\
         rate_limit = {{ rate = {RATE}, per = \"1s\", burst = {BURST}, key = \"global\" }}\n\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n",
        pool("app", &[&app], &[], ""),
        service("gw", listen, "")
    );
    lab.start(&config);
    let output = lab
        .ns
        .command("wrk")
        .args(["-t", "1", "--timeout", "5s"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{SECONDS}s"))
        .arg(format!("http://{listen}/"))
        .output()
        .unwrap_or_else(|e| panic!("running wrk: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {stdout}");

    let series = |decision: &str, reason: &str| {
        lab.filter_decisions("global", "rate_limit", decision, reason)
    };
    let allowed = series("allow", "") as u64;
    let denied = series("deny", "over_limit") as u64;
    assert!(
        denied > allowed,
        "wrk must offer well over the rate for the test to mean anything: {allowed} allowed, {denied} denied\n{stdout}"
    );
    let expected = RATE * SECONDS + BURST;
    let off = allowed.abs_diff(expected) as f64 / expected as f64;
    assert!(
        off <= 0.05,
        "{allowed} requests let through in {SECONDS} s, expected {expected} ± 5% ({:.1}% off)\n{stdout}",
        off * 100.0
    );
    // wrk stops by closing its connections, so a request let through in the last instant can
    // lose its client before it reaches the backend: at most one per connection.
    let reached = app.count() as u64;
    assert!(
        reached <= allowed && allowed - reached <= CONNECTIONS,
        "every request let through (but those in flight when wrk stopped), and only those, \
         reached the backend: {reached} reached, {allowed} let through"
    );
    lab.stop();
}
