//! The access log end to end: every request over keep-alive connections is one well-formed
//! line in `[log] access_log_file` (text or JSON) once the agent has stopped with SIGTERM,
//! none is lost in the writer's buffer; a reload reopens the file (rotation); the dropped
//! lines counter is exported.

mod l7_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use l7_support::client::{H1, request};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::privileged;

/// Requests each test sends, spread over [`CONNECTIONS`] keep-alive connections.
const REQUESTS: usize = 2_000;
const CONNECTIONS: usize = 4;

/// What request `i` is: its method, path (unique, so each line is matched to its request)
/// and the status the backend answers.
fn nth(i: usize) -> (&'static str, String, u16) {
    let method = ["GET", "POST", "PUT", "DELETE"][i % 4];
    let status = [200, 201, 404, 418][(i / 4) % 4];
    (method, format!("/status/{status}?i={i}"), status)
}

/// A lab whose one service logs to `file` (format `format`, or the agent's when `None`).
fn start(file: &Path, format: Option<&str>) -> (Lab, Backend, SocketAddr) {
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    lab.start(&config(file, format, listen, &app));
    (lab, app, listen)
}

fn config(file: &Path, format: Option<&str>, listen: SocketAddr, app: &Backend) -> String {
    let format = format.map_or(String::new(), |f| format!("access_log_format = \"{f}\"\n"));
    format!(
        "[log]\naccess_log_file = \"{}\"\n{format}{}{}{}",
        file.display(),
        pool("app", &[app], &[], ""),
        service("logged", listen, ""),
        forward_all("app"),
    )
}

/// Sends requests `range` over `CONNECTIONS` keep-alive connections at once; each must get
/// its status.
fn send(lab: &Lab, listen: SocketAddr, range: std::ops::Range<usize>) {
    lab.run(async move {
        let mut clients = Vec::new();
        for c in 0..CONNECTIONS {
            let range = range.clone();
            clients.push(tokio::spawn(async move {
                let mut h1 = H1::connect(listen).await.expect("connect");
                for i in range.skip(c).step_by(CONNECTIONS) {
                    let (method, path, status) = nth(i);
                    let reply = h1
                        .send(request(method, "logged.test", &path, ""))
                        .await
                        .unwrap_or_else(|e| panic!("request {i}: {e}"));
                    assert_eq!(reply.status.as_u16(), status, "request {i}");
                }
            }));
        }
        for client in clients {
            client.await.expect("client task");
        }
    });
}

/// The value of `key=` in a text access line (quoted values unquoted, no escapes here).
fn text_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        rest.split(' ').next()
    }
}

/// Checks that `lines` are exactly requests `range`, each once, read by `fields` as
/// (method, path, status).
fn assert_one_line_per_request(
    lines: &[&str],
    range: std::ops::Range<usize>,
    fields: impl Fn(&str) -> (String, String, u16),
) {
    assert_eq!(lines.len(), range.len(), "one line per request");
    let mut seen = BTreeMap::new();
    for line in lines {
        let (method, path, status) = fields(line);
        let i: usize = path
            .rsplit_once("?i=")
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or_else(|| panic!("no request number in {path:?}: {line}"));
        let (want_method, want_path, want_status) = nth(i);
        assert_eq!(
            (method.as_str(), path.as_str(), status),
            (want_method, want_path.as_str(), want_status),
            "{line}"
        );
        assert!(seen.insert(i, ()).is_none(), "request {i} logged twice");
    }
    assert_eq!(seen.len(), range.len());
    assert!(seen.keys().copied().eq(range), "every request logged");
}

#[test]
fn every_request_is_one_text_line_in_the_file_after_sigterm() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("access.log");
    let (lab, _app, listen) = start(&file, None);
    send(&lab, listen, 0..REQUESTS);
    let metrics = lab.metrics();
    assert!(
        metrics.contains("\nsluice_access_log_dropped_lines_total 0\n"),
        "the dropped lines counter is exported, none dropped:\n{metrics}"
    );
    let agent_log = lab.log();
    lab.stop();

    assert!(
        !agent_log.contains("sluice::access"),
        "access lines go to the file, not to stderr"
    );
    let written = std::fs::read_to_string(&file).expect("access log");
    assert!(written.ends_with('\n'), "whole lines");
    let lines: Vec<&str> = written.lines().collect();
    for line in &lines {
        assert!(
            line.contains("  INFO sluice::access: access time="),
            "{line}"
        );
        for key in [
            "service",
            "client",
            "host",
            "bytes",
            "duration_ms",
            "upstream",
            "route",
        ] {
            assert!(text_field(line, key).is_some(), "{key} missing: {line}");
        }
        assert_eq!(
            text_field(line, "upstream"),
            Some("127.0.0.1:9001"),
            "{line}"
        );
    }
    assert_one_line_per_request(&lines, 0..REQUESTS, |line| {
        let field = |key| {
            text_field(line, key)
                .unwrap_or_else(|| panic!("{key} missing: {line}"))
                .to_owned()
        };
        let status = field("status").parse().expect("status");
        (field("method"), field("path"), status)
    });
}

#[test]
fn json_lines_carry_each_requests_method_path_and_status() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("access.json");
    let (lab, _app, listen) = start(&file, Some("json"));
    send(&lab, listen, 0..REQUESTS);
    lab.stop();

    let written = std::fs::read_to_string(&file).expect("access log");
    let lines: Vec<&str> = written.lines().collect();
    assert_one_line_per_request(&lines, 0..REQUESTS, |line| {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["target"], "sluice::access", "{line}");
        assert_eq!(v["service"], "logged", "{line}");
        assert_eq!(v["host"], "logged.test", "{line}");
        assert_eq!(v["upstream"], "127.0.0.1:9001", "{line}");
        assert!(v["duration_ms"].is_f64(), "{line}");
        assert!(v["bytes"].is_u64(), "{line}");
        let text = |key: &str| {
            v[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} not text: {line}"))
                .to_owned()
        };
        let status = v["status"].as_u64().expect("status is a number");
        (text("method"), text("path"), status as u16)
    });
}

#[test]
fn a_reload_reopens_the_file_so_it_can_be_rotated() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    let toml = config(&file, Some("json"), listen, &app);
    lab.start(&toml);
    send(&lab, listen, 0..100);
    std::fs::rename(&file, &rotated).expect("rotate");
    assert!(lab.reload(&toml), "reload");
    send(&lab, listen, 100..200);
    lab.stop();

    let json = |line: &str| {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let text = |key: &str| v[key].as_str().expect("text").to_owned();
        (
            text("method"),
            text("path"),
            v["status"].as_u64().expect("status") as u16,
        )
    };
    let before = std::fs::read_to_string(&rotated).expect("rotated log");
    let after = std::fs::read_to_string(&file).expect("reopened log");
    assert_one_line_per_request(&before.lines().collect::<Vec<_>>(), 0..100, json);
    assert_one_line_per_request(&after.lines().collect::<Vec<_>>(), 100..200, json);
}
