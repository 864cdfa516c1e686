//! Probes against real sockets on 127.0.0.1: what passes, what fails, and that no answer a
//! backend gives can hold a probe past its timeout.

use std::time::Duration;

use tokio::time::Instant;

use super::probe::{MAX_BODY_BYTES, ProbeError, Prober};
use super::test_backend::{Behaviour, TestBackend, closed_port, eventually};
use crate::config::{HealthCheck, HealthCheckKind, HttpCheck, StatusRange};

const TIMEOUT: Duration = Duration::from_millis(300);

fn check(kind: HealthCheckKind) -> HealthCheck {
    HealthCheck {
        kind,
        interval: Duration::from_secs(1),
        timeout: TIMEOUT,
        rise: 1,
        fall: 1,
        jitter_percent: 0,
    }
}

fn http(expected: &[(u16, u16)], body_contains: Option<&str>) -> HealthCheck {
    check(HealthCheckKind::Http(HttpCheck {
        method: "GET".into(),
        path: "/healthz".into(),
        host: None,
        expected_status: expected
            .iter()
            .map(|&(first, last)| StatusRange { first, last })
            .collect(),
        body_contains: body_contains.map(str::to_owned),
    }))
}

async fn probe(check: &HealthCheck, backend: &TestBackend) -> Result<(), ProbeError> {
    Prober::new(check, backend.address)
        .expect("a valid probe")
        .run()
        .await
}

#[tokio::test]
async fn tcp_probe_passes_on_a_listener_and_fails_on_a_closed_port() {
    let up = TestBackend::start(Behaviour::OK);
    let tcp = check(HealthCheckKind::Tcp);
    assert!(probe(&tcp, &up).await.is_ok());
    let down = Prober::new(&tcp, closed_port().await).expect("a valid probe");
    assert!(matches!(down.run().await, Err(ProbeError::Connect { .. })));
}

#[tokio::test]
async fn http_probe_sends_method_path_and_host_and_closes_the_connection() {
    let backend = TestBackend::start(Behaviour::OK);
    let mut with_host = http(&[(200, 200)], None);
    if let HealthCheckKind::Http(h) = &mut with_host.kind {
        h.method = "OPTIONS".into();
        h.host = Some("app.internal".into());
    }
    probe(&http(&[(200, 200)], None), &backend)
        .await
        .expect("passes");
    probe(&with_host, &backend).await.expect("passes");
    let requests = backend.requests();
    let default_host = format!("host: {}\r\n", backend.address);
    assert!(
        requests[0].starts_with("GET /healthz HTTP/1.1\r\n"),
        "{requests:?}"
    );
    assert!(
        requests[0].to_lowercase().contains(&default_host),
        "{requests:?}"
    );
    assert!(
        requests[1].starts_with("OPTIONS /healthz HTTP/1.1\r\n"),
        "{requests:?}"
    );
    assert!(
        requests[1]
            .to_lowercase()
            .contains("host: app.internal\r\n"),
        "{requests:?}"
    );
    assert!(
        requests[1].to_lowercase().contains("connection: close\r\n"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn status_must_fall_in_one_of_the_expected_ranges() {
    /// Status sent, ranges expected, whether the probe passes.
    type Case = (u16, &'static [(u16, u16)], bool);
    let cases: [Case; 6] = [
        (200, &[(200, 399)], true),
        (302, &[(200, 399)], true),
        (404, &[(200, 399)], false),
        (404, &[(200, 399), (404, 404)], true),
        (503, &[(200, 399), (404, 404)], false),
        (204, &[(200, 203), (205, 299)], false),
    ];
    let backend = TestBackend::start(Behaviour::OK);
    for (status, expected, passes) in cases {
        backend.set(Behaviour::Respond { status, body: "" });
        let result = probe(&http(expected, None), &backend).await;
        assert_eq!(
            result.is_ok(),
            passes,
            "{status} in {expected:?}: {result:?}"
        );
        if !passes {
            assert!(
                matches!(result, Err(ProbeError::Status { status: s }) if s == status),
                "{result:?}"
            );
        }
    }
}

#[tokio::test]
async fn body_must_contain_the_substring_even_split_across_chunks() {
    let backend = TestBackend::start(Behaviour::Respond {
        status: 200,
        body: "{\"status\":\"serving\"}",
    });
    let ranges = &[(200, 299)];
    probe(&http(ranges, Some("serving")), &backend)
        .await
        .expect("found");
    let missing = probe(&http(ranges, Some("draining")), &backend).await;
    assert!(
        matches!(missing, Err(ProbeError::Body { .. })),
        "{missing:?}"
    );

    backend.set(Behaviour::Chunked(vec!["{\"status\":\"ser", "vi", "ng\"}"]));
    probe(&http(ranges, Some("serving")), &backend)
        .await
        .expect("found across chunks");
    // The status is checked first: a 500 with the right body still fails.
    backend.set(Behaviour::Respond {
        status: 500,
        body: "serving",
    });
    let failed = probe(&http(ranges, Some("serving")), &backend).await;
    assert!(matches!(failed, Err(ProbeError::Status { status: 500 })));
}

#[tokio::test]
async fn an_endless_body_is_read_only_up_to_the_limit() {
    let backend = TestBackend::start(Behaviour::Endless);
    let started = Instant::now();
    let result = probe(&http(&[(200, 200)], Some("ok")), &backend).await;
    assert!(
        matches!(
            result,
            Err(ProbeError::Body {
                limit: MAX_BODY_BYTES,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < TIMEOUT, "gave up on size, not on time");
    // Without a body check the body is never read: status alone passes.
    probe(&http(&[(200, 200)], None), &backend)
        .await
        .expect("status only");
    eventually(
        Duration::from_secs(2),
        "the backend sees both connections closed",
        || backend.open_connections() == 0,
    )
    .await;
}

#[tokio::test]
async fn garbage_resets_silence_and_huge_heads_all_fail_within_the_timeout() {
    let behaviours = [
        Behaviour::Garbage,
        Behaviour::Reset,
        Behaviour::Silent,
        Behaviour::HugeHead,
    ];
    for behaviour in behaviours {
        let backend = TestBackend::start(behaviour.clone());
        let started = Instant::now();
        let result = probe(&http(&[(200, 599)], None), &backend).await;
        let took = started.elapsed();
        assert!(result.is_err(), "{behaviour:?} passed");
        assert!(
            took < TIMEOUT + Duration::from_millis(100),
            "{behaviour:?} took {took:?}"
        );
        if behaviour == Behaviour::Silent {
            assert!(
                matches!(result, Err(ProbeError::Timeout { .. })),
                "{result:?}"
            );
        }
        eventually(
            Duration::from_secs(2),
            "the probe's connection is closed",
            || backend.open_connections() == 0,
        )
        .await;
    }
}

#[tokio::test]
async fn kind_none_always_passes_without_connecting() {
    let none = Prober::new(&check(HealthCheckKind::None), closed_port().await).expect("valid");
    assert!(none.run().await.is_ok());
}

#[test]
fn a_method_validation_should_have_rejected_is_an_error_not_a_panic() {
    let mut bad = http(&[(200, 200)], None);
    if let HealthCheckKind::Http(h) = &mut bad.kind {
        h.method = "G T".into();
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(matches!(
        Prober::new(&bad, addr),
        Err(ProbeError::Request { .. })
    ));
}
