//! The running agent's admin API without a token refuses changes a browser could be made to
//! send from another origin (a foreign `Origin`, or a `Host` that is not the listener, as
//! after DNS rebinding), changes nothing for them, and still takes them from the CLI and
//! from its own page's origin.

mod l7_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use l7_support::admin::ADMIN;
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::privileged;

/// `POST path` with exactly these extra header lines; returns the status and the body.
fn post(lab: &Lab, path: &str, headers: &str) -> (u16, String) {
    let request =
        format!("POST {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: 0\r\n\r\n");
    lab.ns.in_ns(move || {
        let mut stream = TcpStream::connect_timeout(&ADMIN, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        (status, text)
    })
}

#[test]
fn foreign_origins_and_hosts_cannot_change_the_agent() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    lab.start(&format!(
        "{}{}{}",
        pool("app", &[&app], &[], ""),
        service("svc", local(8080), ""),
        forward_all("app")
    ));
    let before = lab.reloads();
    for (path, headers) in [
        (
            "/reload",
            format!("Host: {ADMIN}\r\nOrigin: http://evil.example\r\n"),
        ),
        ("/reload", format!("Host: {ADMIN}\r\nOrigin: null\r\n")),
        ("/reload", "Host: evil.example:9100\r\n".to_string()),
        (
            "/backends/app/app/drain",
            "Host: rebound.example:9100\r\n".to_string(),
        ),
        (
            "/backends/app/app/drain",
            format!("Host: {ADMIN}\r\nOrigin: http://127.0.0.1:8080\r\n"),
        ),
    ] {
        let (status, text) = post(&lab, path, &headers);
        assert_eq!(status, 403, "{path} with {headers:?}: {text}");
    }
    assert_eq!(lab.reloads(), before, "a refused reload changed nothing");
    assert_eq!(
        lab.backend_healthy("app", "app"),
        Some(true),
        "a refused drain changed nothing"
    );
    let drained = lab.status()["pools"][0]["backends"][0]["drained"].clone();
    assert_eq!(drained, false, "{}", lab.status());

    // The page's own origin and the CLI (Host, no Origin) may.
    let (status, text) = post(
        &lab,
        "/backends/app/app/drain",
        &format!("Host: {ADMIN}\r\nOrigin: http://{ADMIN}\r\n"),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(lab.status()["pools"][0]["backends"][0]["drained"], true);
    let (ok, out) = lab.cli(&["enable", "app", "app"]);
    assert!(ok, "sluice enable: {out}");
    let (ok, out) = lab.cli(&["reload"]);
    assert!(ok, "sluice reload: {out}");
    assert_eq!(lab.reloads().success, before.success + 1);
    lab.stop();
}
