//! Filters calling outside services over https: a `jwt` filter's JWKS URL and an
//! `ext_authz` service, both served by a real TLS server in the lab whose certificate a
//! test CA signed. With that CA as the filters' CA file, keys are fetched and checks pass,
//! and the check connections are kept alive (far fewer connections than checks). With
//! another CA's bundle the server is not trusted: no keys (401) and no checks (503, failure
//! mode closed), each failure logged.

mod l7_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use l7_support::certs::TestCa;
use l7_support::client::{H1, Req, bearer};
use l7_support::{Backend, Lab, gateway_lab, local, pool, service};
use sluice_tests::tokens as keys;
use sluice_tests::{NsTask, eventually, privileged};

/// What the TLS server counts: connections accepted, checks answered.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    checks: AtomicUsize,
}

/// An https server: `GET /jwks.json` answers `jwks`; any path under `/check` allows
/// `Bearer good` (with `x-user: alice`) and refuses anything else with 403.
fn https_server(
    lab: &Lab,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    jwks: String,
    seen: Arc<Seen>,
) -> NsTask<()> {
    let ready = Arc::new(std::sync::Barrier::new(2));
    let bound = ready.clone();
    let task = lab.ns.spawn_task(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        bound.wait();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            seen.connections.fetch_add(1, Relaxed);
            let (acceptor, jwks, seen) = (acceptor.clone(), jwks.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let (jwks, seen) = (jwks.clone(), seen.clone());
                    async move {
                        let response = if req.uri().path() == "/jwks.json" {
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(jwks)))
                        } else if req.uri().path().starts_with("/check") {
                            seen.checks.fetch_add(1, Relaxed);
                            let auth = req.headers().get("authorization");
                            if auth.is_some_and(|v| v == "Bearer good") {
                                Response::builder()
                                    .header("x-user", "alice")
                                    .body(Full::new(Bytes::new()))
                            } else {
                                Response::builder()
                                    .status(403)
                                    .body(Full::new(Bytes::from_static(b"refused\n")))
                            }
                        } else {
                            Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                        };
                        Ok::<_, Infallible>(response.expect("response"))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    ready.wait();
    task
}

/// A `jwt` filter on `/jwt/` and an `ext_authz` filter on `/authz/`, both calling the
/// server at 127.0.0.1:9443 and trusting the CA bundle `ca`.
fn config(app: &Backend, listen: SocketAddr, ca: &std::path::Path) -> String {
    let ca = ca.display();
    format!(
        "{}{}\
         [[service.l7.filter]]\nname = \"auth\"\nenabled = false\n[service.l7.filter.jwt]\n\
         jwks_url = \"https://127.0.0.1:9443/jwks.json\"\njwks_ca_file = \"{ca}\"\n\
         jwks_refresh = \"1s\"\n\
         [[service.l7.filter]]\nname = \"policy\"\nenabled = false\n[service.l7.filter.ext_authz]\n\
         url = \"https://127.0.0.1:9443/check\"\nca_file = \"{ca}\"\ntimeout = \"1s\"\n\
         add_to_request = [\"x-user\"]\n\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/jwt/\" }}\n\
         forward = {{ pool = \"app\" }}\nfilters = [\"auth\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/authz/\" }}\n\
         forward = {{ pool = \"app\" }}\nfilters = [\"policy\"]\n",
        pool("app", &[app], &[], ""),
        service("gw", listen, ""),
    )
}

/// The statuses of `requests`, sent in order on one HTTP/1.1 connection.
fn statuses(lab: &Lab, listen: SocketAddr, requests: Vec<Req>) -> Vec<u16> {
    lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut out = Vec::new();
        for req in requests {
            out.push(h1.send(req).await.expect("reply").status.as_u16());
        }
        out
    })
}

/// Which CA bundle the filters are given.
enum Trust {
    /// The CA that signed the server's certificate.
    ServerCa,
    /// Another CA.
    OtherCa,
}

/// A running lab: the https server, the app and the agent with [`config`].
struct Started {
    lab: Lab,
    app: Backend,
    listen: SocketAddr,
    seen: Arc<Seen>,
    /// A token the server's key set verifies.
    token: String,
    server: NsTask<()>,
    /// Kept while the lab runs: the CA files live in its folders.
    _cas: (TestCa, TestCa),
}

impl Started {
    fn stop(self) {
        drop(self.server);
        self.lab.stop();
    }
}

fn start(trust: Trust) -> Started {
    let ca = TestCa::named("sluice https services test CA");
    let other = TestCa::named("sluice https services other CA");
    let leaf = ca.issue("keys-and-policy", &["127.0.0.1"]);
    let bundle = match trust {
        Trust::ServerCa => ca.write_ca("services-ca.pem"),
        Trust::OtherCa => other.write_ca("other-ca.pem"),
    };
    let signer = keys::ec("k1", false);
    let token = keys::token(
        &signer,
        jsonwebtoken::Algorithm::ES256,
        &keys::claims("alice"),
    );
    let seen = Arc::new(Seen::default());
    let (mut lab, app, listen) = gateway_lab();
    let server = https_server(
        &lab,
        local(9443),
        ca.server_presenting(&leaf),
        keys::jwks(&[&signer]),
        seen.clone(),
    );
    lab.start(&config(&app, listen, &bundle));
    Started {
        lab,
        app,
        listen,
        seen,
        token,
        server,
        _cas: (ca, other),
    }
}

#[test]
fn filters_reach_https_services_they_trust_and_keep_their_connections() {
    if !privileged() {
        return;
    }
    let started = start(Trust::ServerCa);
    let (lab, listen, token) = (&started.lab, started.listen, &started.token);

    // The key set is fetched over TLS: the token verifies.
    eventually(Duration::from_secs(10), || {
        match statuses(lab, listen, vec![bearer("/jwt/a", token)])[..] {
            [200] => Ok(()),
            ref other => Err(format!("a valid token answered {other:?}")),
        }
    });

    // Checks go over TLS too, and reuse their connections.
    let before = started.seen.connections.load(Relaxed);
    let mut requests = Vec::new();
    for _ in 0..20 {
        requests.push(bearer("/authz/a", "good"));
        requests.push(bearer("/authz/a", "bad"));
    }
    let answered = statuses(lab, listen, requests);
    let expected: Vec<u16> = (0..20).flat_map(|_| [200, 403]).collect();
    assert_eq!(
        answered, expected,
        "good allowed, bad refused by the service"
    );
    assert!(
        started.seen.checks.load(Relaxed) >= 40,
        "every request was checked"
    );
    let opened = started.seen.connections.load(Relaxed) - before;
    // The JWKS refresh (every second) opens its own; checks should need one or two.
    assert!(
        opened <= 6,
        "40 sequential checks opened {opened} connections: they are not kept alive"
    );
    assert!(
        started
            .app
            .seen()
            .iter()
            .any(|r| r.header("x-user") == "alice"),
        "the service's x-user reached the backend"
    );
    started.stop();
}

#[test]
fn filters_refuse_an_https_service_whose_certificate_they_do_not_trust() {
    if !privileged() {
        return;
    }
    let started = start(Trust::OtherCa);
    let (lab, listen, token) = (&started.lab, started.listen, &started.token);

    let failures = "sluice_l7_filter_events_total{service=\"gw\",filter=\"auth\",type=\"jwt\",event=\"jwks_fetch_failed\"}";
    eventually(Duration::from_secs(15), || match lab.metric(failures) {
        n if n >= 2.0 => Ok(()),
        n => Err(format!("{n} failed fetches")),
    });
    let answered = statuses(
        lab,
        listen,
        vec![bearer("/jwt/a", token), bearer("/authz/a", "good")],
    );
    assert_eq!(
        answered,
        [401, 503],
        "no keys from an untrusted server; no check by an untrusted service (closed)"
    );
    assert_eq!(
        started.seen.checks.load(Relaxed),
        0,
        "no request went over TLS"
    );
    assert_eq!(started.app.count(), 0, "nothing reached the backend");
    let log = lab.log();
    assert!(
        log.contains("JWKS fetch failed") && log.contains("TLS handshake"),
        "the failed handshake is logged:\n{log}"
    );
    started.stop();
}
