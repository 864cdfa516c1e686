//! `ext_authz` end to end: a real authorization service (a small HTTP server in the lab)
//! allows (its headers copied onto the request), denies (its status and body reach the
//! client), is too slow, or is down, with failure mode closed and open; over HTTP/1.1 and
//! HTTP/2.

mod l7_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use l7_support::client::{H1, H2, Reply, get, with_headers};
use l7_support::{Backend, Lab, Mode, local, pool, service};
use sluice_tests::{NsTask, privileged};

/// What the service saw: `(method, path, authorization, cookie)`.
type Checks = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// The authorization service: `Bearer good` is allowed (with `x-user` and `x-internal`
/// headers), `Bearer slow` is allowed after two seconds, anything else is refused `403`.
fn authz_service(lab: &Lab, addr: SocketAddr, checks: Checks) -> NsTask<()> {
    let ready = Arc::new(std::sync::Barrier::new(2));
    let bound = ready.clone();
    let task = lab.ns.spawn_task(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        bound.wait();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let checks = checks.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let checks = checks.clone();
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let auth = header("authorization");
                        if let Ok(mut seen) = checks.lock() {
                            seen.push((
                                req.method().to_string(),
                                req.uri().to_string(),
                                auth.clone(),
                                header("cookie"),
                            ));
                        }
                        let response = match auth.as_str() {
                            "Bearer good" | "Bearer slow" => {
                                if auth == "Bearer slow" {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                }
                                Response::builder()
                                    .status(200)
                                    .header("x-user", "alice")
                                    .header("x-internal", "secret")
                                    .body(Full::new(Bytes::new()))
                            }
                            _ => Response::builder()
                                .status(403)
                                .body(Full::new(Bytes::from_static(b"forbidden by policy\n"))),
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

#[test]
fn ext_authz_allows_denies_and_fails_open_or_closed() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let checks: Checks = Arc::default();
    let server = authz_service(&lab, local(9400), checks.clone());
    let app = Backend::start(&lab.ns, "app-1", local(9001), Mode::Echo);
    let listen = local(8080);
    let filter = |name: &str, url: &str, mode: &str| {
        format!(
            "[[service.l7.filter]]\nname = \"{name}\"\nenabled = false\n[service.l7.filter.ext_authz]\n\
             url = \"{url}\"\ntimeout = \"500ms\"\nfailure_mode = \"{mode}\"\n\
             send_headers = [\"authorization\"]\nadd_to_request = [\"x-user\"]\n"
        )
    };
    let route = |prefix: &str, filter: &str| {
        format!(
            "[[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"{prefix}\" }}\n\
             forward = {{ pool = \"app\" }}\nfilters = [\"{filter}\"]\n"
        )
    };
    let config = format!(
        "{}{}{}{}{}[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n{}{}{}",
        pool("app", &[&app], &[], ""),
        service("gw", listen, ""),
        filter("checked", "http://127.0.0.1:9400/check", "closed"),
        filter("down-closed", "http://127.0.0.1:9499/check", "closed"),
        filter("down-open", "http://127.0.0.1:9499/check", "open"),
        route("/closed/", "down-closed"),
        route("/open/", "down-open"),
        route("/", "checked"),
    );
    lab.start(&config);
    let bearer = |path: &str, token: &str| {
        with_headers(
            get("gw.test", path),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cookie", "sid=1"),
                ("x-user", "mallory"),
            ],
        )
    };
    let replies: Vec<(&str, Reply)> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        vec![
            (
                "allowed h1",
                h1.send(bearer("/api/items?page=2", "good"))
                    .await
                    .expect("reply"),
            ),
            (
                "allowed h2",
                h2.send(bearer("/api/items", "good")).await.expect("reply"),
            ),
            (
                "denied",
                h2.send(bearer("/api/items", "bad")).await.expect("reply"),
            ),
            (
                "too slow",
                h1.send(bearer("/api/items", "slow")).await.expect("reply"),
            ),
            (
                "down, closed",
                h1.send(bearer("/closed/x", "good")).await.expect("reply"),
            ),
            (
                "down, open",
                h2.send(bearer("/open/x", "good")).await.expect("reply"),
            ),
        ]
    });
    let reply = |what: &str| {
        &replies
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("no reply {what}"))
            .1
    };
    assert_eq!(reply("allowed h1").status, 200);
    assert_eq!(reply("allowed h2").status, 200);
    let denied = reply("denied");
    assert_eq!(denied.status, 403, "the service's status");
    assert_eq!(denied.text(), "forbidden by policy\n", "the service's body");
    assert_eq!(
        reply("too slow").status,
        503,
        "a timeout with failure_mode closed"
    );
    assert_eq!(reply("down, closed").status, 503);
    assert_eq!(
        reply("down, open").status,
        200,
        "failure_mode open lets it go on"
    );

    let seen = app.seen();
    assert_eq!(
        seen.len(),
        3,
        "two allowed, one let through by failure_mode open"
    );
    for request in &seen[..2] {
        assert_eq!(
            request.header("x-user"),
            "alice",
            "the service's header replaces the client's"
        );
        assert!(
            request.header("x-internal").is_empty(),
            "only add_to_request headers are copied"
        );
    }
    assert!(
        seen[2].header("x-user").is_empty(),
        "a client's copy never goes on"
    );
    let checks = checks.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(checks.len(), 4, "allowed twice, denied, too slow");
    assert_eq!(checks[0].0, "GET");
    assert_eq!(
        checks[0].1, "/check/api/items?page=2",
        "the URL's path, then the request's"
    );
    assert_eq!(checks[0].2, "Bearer good");
    assert!(
        checks[0].3.is_empty(),
        "headers not in send_headers stay home"
    );

    let decisions = |filter: &str, decision: &str, reason: &str| {
        lab.filter_decisions(filter, "ext_authz", decision, reason)
    };
    assert_eq!(decisions("checked", "allow", ""), 2.0);
    assert_eq!(decisions("checked", "deny", "denied"), 1.0);
    assert_eq!(decisions("checked", "deny", "unavailable"), 1.0);
    assert_eq!(decisions("down-closed", "deny", "unavailable"), 1.0);
    assert_eq!(decisions("down-open", "allow", ""), 1.0);
    assert_eq!(
        lab.metric("sluice_l7_filter_events_total{service=\"gw\",filter=\"down-open\",type=\"ext_authz\",event=\"unavailable_allowed\"}"),
        1.0
    );
    drop(server);
    lab.stop();
}
