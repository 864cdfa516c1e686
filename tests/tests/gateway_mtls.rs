//! mTLS on a TLS listener, end to end with rustls clients: client certificates verified
//! against `client_ca` with a CRL (`required` and `optional`), and the verified identity
//! forwarded in `client_cert_header`, whose client-sent copy never reaches the backend.

mod l7_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use l7_support::certs::{TestCa, certificate};
use l7_support::client::{H1, H2, get, tls_connect};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use rustls::ClientConfig;
use rustls::version::{TLS12, TLS13};
use sluice_tests::{eventually, privileged};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER: &str = "x-client-cert";
const ALICE: &str = "Subject=\"CN=alice\";DNS=alice.example;URI=spiffe://example/alice";

/// A TLS listener on `listen` forwarding to `app`, asking for client certificates of `ca`
/// (`mode`), with the CRL at `crl`.
fn mtls_config(ca: &TestCa, app: &Backend, listen: SocketAddr, mode: &str, crl: &Path) -> String {
    let site = ca.issue("site", &["a.test"]);
    let bundle = ca.write_ca("clients-ca.pem");
    format!(
        "{}{}{}\n[service.l7.tls]\ncertificates = [\"site\"]\nclient_ca = \"{}\"\n\
         client_auth = \"{mode}\"\nclient_crl = \"{}\"\nclient_cert_header = \"{HEADER}\"\n{}",
        certificate("site", &site, &["a.test"]),
        pool("app", &[app], &[], ""),
        service("site", listen, ""),
        bundle.display(),
        crl.display(),
        forward_all("app"),
    )
}

/// The CRL most tests use: it revokes serial 13 only, so every other certificate of the CA
/// is covered and valid.
fn crl_revoking_13(ca: &TestCa) -> PathBuf {
    ca.write_crl("clients.crl", &[13])
}

/// GET / with a forged identity header, over TLS with `client`; the reply's body.
async fn forged_get(listen: SocketAddr, client: Arc<ClientConfig>) -> Result<String, String> {
    let tls = tls_connect(listen, client, Some("a.test")).await?;
    let mut h1 = H1::over(tls).await?;
    let mut request = get("a.test", "/");
    request.headers_mut().insert(
        HEADER,
        http::HeaderValue::from_static("Subject=\"CN=mallory\""),
    );
    let reply = h1.send(request).await?;
    Ok(reply.text())
}

/// How the listener refuses `client`: the TLS error it gets, in the handshake (TLS 1.2) or
/// at the first read after it (TLS 1.3, where the server checks the certificate after the
/// client considers the handshake done). Panics if a request gets an answer.
async fn refusal(listen: SocketAddr, client: Arc<ClientConfig>) -> String {
    let mut tls = match tls_connect(listen, client, Some("a.test")).await {
        Ok(tls) => tls,
        Err(err) => return err,
    };
    let _ = tls
        .write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await;
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
    match read {
        Ok(Err(err)) => err.to_string(),
        other => panic!(
            "the request was not refused: {other:?} {:?}",
            String::from_utf8_lossy(&reply)
        ),
    }
}

/// Waits (bounded) until `sluice_l7_tls_handshake_failures_total` of the listener shows
/// each `(reason, count)`: the count follows the refusal the client already saw.
fn assert_tls_failures(lab: &Lab, want: &[(&str, u64)]) {
    eventually(Duration::from_secs(10), || {
        let metrics = lab.metrics();
        for &(reason, count) in want {
            let series = format!(
                "sluice_l7_tls_handshake_failures_total{{service=\"site\",reason=\"{reason}\"}}"
            );
            let seen = l7_support::admin::sample(&metrics, &series).unwrap_or(0.0);
            if seen != count as f64 {
                return Err(format!(
                    "{series} is {seen}, want {count}; metrics:\n{metrics}"
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn required_client_certificates_are_verified_and_forwarded() {
    if !privileged() {
        return;
    }
    let ca = TestCa::named("clients");
    // Another CA with the same name: its certificates name our CA as issuer, but their
    // signatures do not verify.
    let impostor = TestCa::named("clients");
    let foreign = TestCa::named("foreign");
    let alice = ca.issue_client("alice", "alice.example", "spiffe://example/alice", 7, false);
    let expired = ca.issue_client("old", "old.example", "spiffe://example/old", 8, true);
    let revoked = ca.issue_client("gone", "gone.example", "spiffe://example/gone", 13, false);
    let stranger =
        foreign.issue_client("alice", "alice.example", "spiffe://example/alice", 7, false);
    let forged =
        impostor.issue_client("alice", "alice.example", "spiffe://example/alice", 7, false);
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8443);
    lab.start(&mtls_config(
        &ca,
        &app,
        listen,
        "required",
        &crl_revoking_13(&ca),
    ));
    let clients = [
        (ca.client_presenting(&alice, &[&TLS13]), "TLS 1.3"),
        (ca.client_presenting(&alice, &[&TLS12]), "TLS 1.2"),
    ];
    let mut h2_client = (*ca.client_presenting(&alice, &[&TLS13])).clone();
    h2_client.alpn_protocols = vec![b"h2".to_vec()];
    let h2_client = Arc::new(h2_client);
    let refused = [
        (
            ca.client(&["http/1.1"], &[&TLS13]),
            "CertificateRequired",
            "no certificate, TLS 1.3",
        ),
        (
            ca.client(&["http/1.1"], &[&TLS12]),
            "CertificateRequired",
            "no certificate, TLS 1.2",
        ),
        (
            ca.client_presenting(&expired, &[&TLS13]),
            "CertificateExpired",
            "expired",
        ),
        (
            ca.client_presenting(&stranger, &[&TLS13]),
            "UnknownCA",
            "foreign CA",
        ),
        (
            ca.client_presenting(&forged, &[&TLS13]),
            "DecryptError",
            "forged issuer",
        ),
        (
            ca.client_presenting(&revoked, &[&TLS13]),
            "CertificateRevoked",
            "revoked",
        ),
        (
            ca.client_presenting(&revoked, &[&TLS12]),
            "CertificateRevoked",
            "revoked, TLS 1.2",
        ),
    ];
    lab.run(async move {
        for (client, what) in clients {
            let body = forged_get(listen, client)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(body, "app", "{what}");
        }
        let tls = tls_connect(listen, h2_client, Some("a.test"))
            .await
            .expect("h2 handshake");
        let mut h2 = H2::over(tls).await.expect("h2");
        let mut request = get("a.test", "/");
        request.headers_mut().insert(
            HEADER,
            http::HeaderValue::from_static("Subject=\"CN=mallory\""),
        );
        let reply = h2.send(request).await.expect("h2 reply");
        assert_eq!(reply.version, http::Version::HTTP_2);
        assert_eq!(reply.text(), "app");
        for (client, alert, what) in refused {
            let err = refusal(listen, client).await;
            assert!(err.contains(alert), "{what}: want alert {alert}, got {err}");
        }
    });
    // Each refusal is counted by its cause; alice's handshakes are not failures.
    assert_tls_failures(
        &lab,
        &[
            ("no_certificate", 2),
            ("expired", 1),
            ("unknown_ca", 1),
            ("bad_signature", 1),
            ("revoked", 2),
            ("other", 0),
        ],
    );
    let seen = app.seen();
    assert_eq!(
        seen.len(),
        3,
        "only alice's requests (TLS 1.3, TLS 1.2, h2) reach the backend"
    );
    for request in &seen {
        let forwarded: Vec<_> = request.headers.get_all(HEADER).iter().collect();
        assert_eq!(forwarded.len(), 1, "one identity header: {forwarded:?}");
        assert_eq!(
            request.header(HEADER),
            ALICE,
            "the verified identity, not the forged one"
        );
    }
    // Only the principal field of the access log carries the URI SAN.
    eventually(Duration::from_secs(10), || {
        let log = lab.log();
        let lines = log
            .lines()
            .filter(|l| l.contains("principal=") && l.contains("spiffe://example/alice"))
            .count();
        if lines == 3 {
            Ok(())
        } else {
            Err(format!(
                "{lines} access lines with alice's principal; log:\n{log}"
            ))
        }
    });
    lab.stop();
}

#[test]
fn optional_client_certificates_let_anonymous_clients_in_without_an_identity() {
    if !privileged() {
        return;
    }
    let ca = TestCa::named("clients");
    // Another CA with the same name: its certificates name our CA as issuer, but their
    // signatures do not verify.
    let impostor = TestCa::named("clients");
    let foreign = TestCa::named("foreign");
    let alice = ca.issue_client("alice", "alice.example", "spiffe://example/alice", 7, false);
    let stranger = foreign.issue_client("eve", "eve.example", "spiffe://example/eve", 9, false);
    let forged = impostor.issue_client("eve", "eve.example", "spiffe://example/eve", 9, false);
    let revoked = ca.issue_client("gone", "gone.example", "spiffe://example/gone", 13, false);
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8443);
    lab.start(&mtls_config(
        &ca,
        &app,
        listen,
        "optional",
        &crl_revoking_13(&ca),
    ));
    let anonymous = ca.client(&["http/1.1"], &[&TLS13]);
    let with_cert = ca.client_presenting(&alice, &[&TLS13]);
    let refused = [
        (
            ca.client_presenting(&stranger, &[&TLS13]),
            "UnknownCA",
            "foreign CA",
        ),
        (
            ca.client_presenting(&forged, &[&TLS13]),
            "DecryptError",
            "forged issuer",
        ),
        (
            ca.client_presenting(&revoked, &[&TLS13]),
            "CertificateRevoked",
            "revoked",
        ),
    ];
    lab.run(async move {
        let body = forged_get(listen, anonymous)
            .await
            .expect("anonymous client served");
        assert_eq!(body, "app");
        let body = forged_get(listen, with_cert).await.expect("alice served");
        assert_eq!(body, "app");
        for (client, alert, what) in refused {
            let err = refusal(listen, client).await;
            assert!(err.contains(alert), "{what}: want alert {alert}, got {err}");
        }
    });
    // An anonymous client is no failure when certificates are optional.
    assert_tls_failures(
        &lab,
        &[
            ("no_certificate", 0),
            ("unknown_ca", 1),
            ("bad_signature", 1),
            ("revoked", 1),
            ("other", 0),
        ],
    );
    let seen = app.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        !seen[0].headers.contains_key(HEADER),
        "the forged copy is removed without a certificate: {:?}",
        seen[0].headers
    );
    assert_eq!(seen[1].header(HEADER), ALICE);
    lab.stop();
}

#[test]
fn a_reload_with_a_broken_crl_keeps_the_running_one_and_a_new_crl_applies() {
    if !privileged() {
        return;
    }
    let ca = TestCa::named("clients");
    let alice = ca.issue_client("alice", "alice.example", "spiffe://example/alice", 7, false);
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8443);
    lab.start(&mtls_config(
        &ca,
        &app,
        listen,
        "required",
        &crl_revoking_13(&ca),
    ));
    let broken = ca.path("broken.crl");
    std::fs::write(
        &broken,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", broken.display()));
    assert!(
        !lab.reload(&mtls_config(&ca, &app, listen, "required", &broken)),
        "a broken CRL is rejected"
    );
    assert!(
        lab.log().contains(&broken.display().to_string()),
        "the rejection names the file; log:\n{}",
        lab.log()
    );
    let client = ca.client_presenting(&alice, &[&TLS13]);
    let again = client.clone();
    let body = lab.run(async move { forged_get(listen, again).await });
    assert_eq!(
        body.as_deref(),
        Ok("app"),
        "the running settings still serve alice"
    );

    let revoking_alice = ca.write_crl("alice.crl", &[7]);
    assert!(lab.reload(&mtls_config(&ca, &app, listen, "required", &revoking_alice)));
    let err = lab.run(async move { refusal(listen, client).await });
    assert!(
        err.contains("CertificateRevoked"),
        "after the reload: {err}"
    );
    assert_eq!(app.seen().len(), 1);
    lab.stop();
}
