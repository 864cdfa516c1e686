//! The admin API's status page in a real browser (headless Chromium from Debian, driven
//! through chromedriver): it shows a running agent's services and backends, shows a backend
//! that dies as down within a few seconds, and a drain clicked on the page takes the backend
//! out of the kernel's Maglev table (new flows stop reaching it). A screenshot is saved
//! under `target/status-page/` for a person to look at.

#[path = "l4_e2e_support/mod.rs"]
mod l4_e2e_support;

use std::time::{Duration, Instant};

use l4_e2e_support::{Mode, Setup, V4};
use sluice_tests::{Browser, browser_available, eventually, privileged, target_dir};

const PAGE: &str = "http://127.0.0.1:9100/";
const HEALTH_CHECK: &str =
    "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\njitter = 0";

fn row(pool: &str, backend: &str) -> String {
    format!("tr[data-pool=\"{pool}\"][data-backend=\"{backend}\"]")
}

/// Waits until the state cell of `backend` in pool `tcp` reads `want`.
fn wait_for_state(browser: &Browser, backend: &str, want: &str, within: Duration) {
    let cell = format!("{} td.state", row("tcp", backend));
    eventually(within, || match browser.text(&cell) {
        Ok(text) if text == want => Ok(()),
        other => Err(format!("{backend} shows {other:?}, want {want:?}")),
    });
}

/// New flows through the VIP, by backend name.
fn spread(setup: &Setup, flows: usize) -> Vec<String> {
    setup
        .client
        .in_ns(|| (0..flows).map(|_| setup.tcp_connect().served_by).collect())
}

#[test]
fn the_status_page_shows_the_agent_live_and_drains_from_a_click() {
    if !privileged() || !browser_available() {
        return;
    }
    let setup = Setup::with_health_check(&V4, Mode::Nat, 3, HEALTH_CHECK);
    setup.client.in_ns(|| setup.wait_for_first_tcp_flow());
    let browser = Browser::start(setup.lb(), 1400, 1000);
    browser.goto(PAGE);

    // The agent's services and every backend, healthy.
    let service = eventually(Duration::from_secs(10), || {
        browser.text("tr[data-service=\"tcp\"]")
    });
    assert!(service.contains("10.99.0.1:7000/tcp"), "{service}");
    assert!(service.contains("l4-nat"), "{service}");
    let udp = browser
        .text("tr[data-service=\"udp\"]")
        .unwrap_or_else(|e| panic!("the udp service is not shown: {e}"));
    assert!(udp.contains("10.99.0.1:7001/udp"), "{udp}");
    let backends: Vec<String> = V4.backends[..3]
        .iter()
        .map(|b| format!("{b}:8000"))
        .collect();
    for backend in &backends {
        wait_for_state(&browser, backend, "up", Duration::from_secs(10));
    }
    // Traffic between two polls, so rates and shares have something to show.
    let before = spread(&setup, 40);
    assert!(before.iter().any(|b| b == V4.backends[1]), "{before:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let xdp = browser
        .text("tr[data-reason=\"flow_new\"]")
        .unwrap_or_else(|e| panic!("no flow_new row in the XDP table: {e}"));
    assert!(xdp.starts_with("flow_new"), "{xdp}");

    // A backend that dies shows as down within a few seconds.
    let killed = Instant::now();
    setup.kill_backend(0);
    wait_for_state(&browser, &backends[0], "down", Duration::from_secs(8));
    eprintln!(
        "the page showed the dead backend down {:?} after it died",
        killed.elapsed()
    );

    // A drain clicked on the page reaches the kernel: no new flow goes to the backend.
    browser
        .click(&format!("{} button.drain", row("tcp", &backends[1])))
        .unwrap_or_else(|e| panic!("clicking drain: {e}"));
    wait_for_state(&browser, &backends[1], "drained", Duration::from_secs(5));
    eventually(Duration::from_secs(5), || {
        let after = spread(&setup, 40);
        match after.iter().filter(|b| *b == V4.backends[1]).count() {
            0 => Ok(()),
            n => Err(format!(
                "{n} of 40 new flows still reached the drained backend"
            )),
        }
    });
    let summary = browser
        .text("h3[data-pool-summary=\"tcp\"]")
        .unwrap_or_else(|e| panic!("pool summary: {e}"));
    assert!(summary.contains("1 drained"), "{summary}");
    let action = browser.text("#action").unwrap_or_default();
    assert!(
        action.contains("draining"),
        "the page reports the drain: {action:?}"
    );
    // Traffic across a few polls, so the screenshot shows rates and shares.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        spread(&setup, 5);
    }
    let shot = target_dir().join("status-page").join("status-page.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    // And enabled again from the page.
    browser
        .click(&format!("{} button.enable", row("tcp", &backends[1])))
        .unwrap_or_else(|e| panic!("clicking enable: {e}"));
    wait_for_state(&browser, &backends[1], "up", Duration::from_secs(5));
    eventually(Duration::from_secs(5), || {
        let after = spread(&setup, 40);
        if after.iter().any(|b| b == V4.backends[1]) {
            Ok(())
        } else {
            Err("the enabled backend takes no new flow".to_string())
        }
    });
    drop(browser);
    setup.stop();
}
