//! The HTTP edge against hostile request heads, end to end with a backend that records what
//! it received: one authority per request (duplicate Host, absolute form, HTTP/2 :authority
//! against host), normalised paths against a guarded route, upgrades only where allowed,
//! forwarding headers a client cannot forge, HTTP/2 cookies joined, and the proxy's own
//! answers counted.

mod l7_support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use l7_support::client::{H2, get, raw};
use l7_support::{Backend, Lab, Mode, local, pool, service};
use sluice_tests::privileged;

const WAIT: Duration = Duration::from_secs(3);

/// `public.example` guards `/admin` with a direct 403 and forwards the rest to `app`;
/// `internal.example` forwards everything to `internal`. No catch-all host.
fn edge_lab(l7: &str) -> (Lab, Backend, Backend, std::net::SocketAddr) {
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let internal = Backend::start(&lab.ns, "internal", local(9002), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}\
         [[service.l7.virtual_host]]\nname = \"public\"\ndomains = [\"public.example\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/admin\" }}\n\
         direct_response = {{ status = 403, body = \"guarded\" }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n\
         [[service.l7.virtual_host]]\nname = \"internal\"\ndomains = [\"internal.example\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"internal\" }}\n",
        pool("app", &[&app], &[], ""),
        pool("internal", &[&internal], &[], ""),
        service("edge", listen, l7),
    );
    lab.start(&config);
    (lab, app, internal, listen)
}

/// `head` on a fresh connection to `listen`, from inside the lab; what came back.
fn send_raw(lab: &Lab, listen: std::net::SocketAddr, head: &'static [u8]) -> String {
    lab.run(async move { raw(listen, head, WAIT).await.expect("raw") })
}

/// `GET path` for `public.example` on a fresh connection; what came back.
async fn get_public(listen: std::net::SocketAddr, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n");
    raw(listen, head.as_bytes(), WAIT).await.expect("raw")
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

#[test]
fn one_authority_per_request() {
    if !privileged() {
        return;
    }
    let (lab, app, internal, listen) = edge_lab("");
    let replies = lab.run(async move {
        let send = |head: &'static str| async move {
            raw(listen, head.as_bytes(), WAIT).await.expect("raw")
        };
        let duplicate =
            send("GET / HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n").await;
        let no_host = send("GET / HTTP/1.1\r\n\r\n").await;
        let userinfo = send("GET / HTTP/1.1\r\nHost: internal.example@public.example\r\n\r\n").await;
        let absolute = send(
            "GET http://public.example/from-absolute HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        (duplicate, no_host, userinfo, absolute)
    });
    assert!(
        status_line(&replies.0).contains(" 400"),
        "duplicate Host: {}",
        replies.0
    );
    assert!(
        status_line(&replies.1).contains(" 400"),
        "no Host: {}",
        replies.1
    );
    assert!(
        status_line(&replies.2).contains(" 400"),
        "userinfo: {}",
        replies.2
    );
    assert!(
        status_line(&replies.3).contains(" 200"),
        "absolute form: {}",
        replies.3
    );
    let seen = app.last();
    assert_eq!(seen.path, "/from-absolute");
    assert_eq!(
        seen.header("host"),
        "public.example",
        "the backend gets the authority the request was routed by"
    );
    assert_eq!(internal.count(), 0, "nothing reached the other host's pool");
    assert_eq!(app.count(), 1, "the refused requests reached no backend");

    // HTTP/2: :authority wins; a host header that disagrees is refused.
    let (agree, disagree) = lab.run(async move {
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let agree = h2
            .send_as_is(
                Request::get("http://public.example/h2")
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await
            .expect("reply");
        let disagree = h2
            .send_as_is(
                Request::get("http://public.example/h2-mismatch")
                    .header("host", "internal.example")
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await;
        (agree, disagree)
    });
    assert_eq!(agree.status, 200);
    assert_eq!(app.last().path, "/h2");
    assert_eq!(app.last().header("host"), "public.example");
    match disagree {
        Ok(reply) => assert_eq!(reply.status, 400, "host disagreeing with :authority"),
        Err(reset) => assert!(reset.contains("request failed"), "{reset}"),
    }
    assert_eq!(internal.count(), 0);
    assert_eq!(app.count(), 2);
    lab.stop();
}

#[test]
fn path_tricks_cannot_get_past_a_guarded_route() {
    if !privileged() {
        return;
    }
    let (lab, app, _internal, listen) = edge_lab("");
    let tricks = [
        "/admin",
        "/%61dmin",
        "/%61%64%6d%69%6e/users",
        "/x/../admin",
        "/./admin",
        "//admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2E//admin/",
        "///admin",
        "/public/../../admin",
    ];
    let replies = lab.run(async move {
        let mut out = Vec::new();
        for path in tricks {
            out.push((path, get_public(listen, path).await));
        }
        out
    });
    for (path, reply) in &replies {
        assert!(
            status_line(reply).contains(" 403") && reply.ends_with("guarded"),
            "{path} got past the guard: {reply}"
        );
    }
    assert_eq!(
        app.count(),
        0,
        "no trick reached the backend: {:?}",
        app.seen()
    );

    // Encoded slashes and backslashes are refused by default; other paths arrive normalised.
    let (slash, backslash, bad_escape, normal) = lab.run(async move {
        let send = |path: &'static str| get_public(listen, path);
        (
            send("/x/..%2Fadmin").await,
            send("/x\\..\\admin").await,
            send("/%zz").await,
            send("/a/./b/../%7Ec%3f?q=/../admin").await,
        )
    });
    assert!(status_line(&slash).contains(" 400"), "{slash}");
    assert!(
        status_line(&backslash).contains(" 400"),
        "backslash: {backslash}"
    );
    assert!(status_line(&bad_escape).contains(" 400"), "{bad_escape}");
    assert!(status_line(&normal).contains(" 200"), "{normal}");
    assert_eq!(
        app.last().path,
        "/a/~c%3F?q=/../admin",
        "the backend receives the path the route matched, query untouched"
    );
    lab.stop();
}

#[test]
fn decoded_slashes_and_kept_runs_follow_the_listener() {
    if !privileged() {
        return;
    }
    let (lab, app, _internal, listen) =
        edge_lab("[service.l7.paths]\nescaped_slashes = \"decode\"\nmerge_slashes = false\n");
    let (decoded, kept) = lab.run(async move {
        let send = |path: &'static str| get_public(listen, path);
        (send("/x%2F..%2Fadmin").await, send("/a//b").await)
    });
    assert!(
        decoded.ends_with("guarded"),
        "decoded %2F is a separator: {decoded}"
    );
    assert!(status_line(&kept).contains(" 200"), "{kept}");
    assert_eq!(
        app.last().path,
        "/a//b",
        "runs of slashes kept as configured"
    );
    lab.stop();
}

#[test]
fn only_allowed_upgrades_are_tunnelled() {
    if !privileged() {
        return;
    }
    let (lab, app, _internal, listen) = edge_lab("");
    let reply = send_raw(
        &lab,
        listen,
        b"GET /up HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert!(
        status_line(&reply).contains(" 200"),
        "h2c is answered as a plain request, not switched: {reply}"
    );
    let seen = app.last();
    assert_eq!(seen.path, "/up");
    for hop in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(hop), "", "{hop} reached the backend");
    }
    let unknown = send_raw(&lab, listen, b"GET /up2 HTTP/1.1\r\nHost: public.example\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n");
    assert!(status_line(&unknown).contains(" 200"), "{unknown}");
    assert_eq!(app.last().header("upgrade"), "");
    lab.stop();
}

#[test]
fn forwarding_headers_cannot_be_forged_and_h2_cookies_are_joined() {
    if !privileged() {
        return;
    }
    let (lab, app, _internal, listen) = edge_lab("");
    let reply = send_raw(&lab, listen, b"GET /who HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 203.0.113.66\r\n\
              X-Real-IP: 203.0.113.66\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
              Forwarded: for=203.0.113.66;proto=https\r\nConnection: close\r\n\r\n");
    assert!(status_line(&reply).contains(" 200"), "{reply}");
    let seen = app.last();
    assert_eq!(seen.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.header("x-real-ip"), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-host"), "public.example");
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(
        seen.header("forwarded"),
        "for=127.0.0.1;proto=http;host=\"public.example\""
    );

    let reply = lab.run(async move {
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let mut req = get("public.example", "/cookies");
        req.headers_mut()
            .append("cookie", "a=1".parse().expect("v"));
        req.headers_mut()
            .append("cookie", "b=2".parse().expect("v"));
        h2.send(req).await.expect("reply")
    });
    assert_eq!(reply.status, 200);
    let seen = app.last();
    assert_eq!(seen.headers.get_all("cookie").iter().count(), 1);
    assert_eq!(seen.header("cookie"), "a=1; b=2");
    lab.stop();
}

#[test]
fn trusted_proxies_have_their_chain_extended() {
    if !privileged() {
        return;
    }
    let (lab, app, _internal, listen) =
        edge_lab("[service.l7.forwarded]\ntrusted_proxies = [\"127.0.0.0/8\"]\n");
    send_raw(&lab, listen, b"GET /who HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 198.51.100.7, 127.0.0.9\r\n\
              X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n");
    let seen = app.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        "198.51.100.7, 127.0.0.9, 127.0.0.1"
    );
    assert_eq!(seen.header("x-real-ip"), "198.51.100.7");
    assert_eq!(seen.header("x-forwarded-proto"), "https");
    lab.stop();
}

#[test]
fn answers_the_proxy_makes_itself_are_counted_and_logged() {
    if !privileged() {
        return;
    }
    let (lab, _app, _internal, listen) = edge_lab("");
    lab.run(async move {
        for head in [
            "GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET /admin HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: public.example\r\nX-Bad\r\n\r\n",
        ] {
            raw(listen, head.as_bytes(), WAIT).await.expect("raw");
        }
    });
    let metrics = lab.metrics();
    for status in ["404", "400", "403"] {
        let series =
            format!("sluice_l7_local_responses_total{{service=\"edge\",status=\"{status}\"}}");
        let count = l7_support::admin::sample(&metrics, &series).unwrap_or(0.0);
        assert!(count >= 1.0, "{series} = {count}\n{metrics}");
    }
    let log = lab.log();
    assert!(
        log.contains("status=404") && log.contains("malformed request head"),
        "access log lines for local answers:\n{log}"
    );
    lab.stop();
}
