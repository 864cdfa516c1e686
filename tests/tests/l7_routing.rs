//! L7 end to end: virtual hosts, route matches and actions, and how forward actions spread
//! requests over pools, through the real agent with real clients and backends on a
//! namespace's loopback.

mod l7_support;

use l7_support::client::{H1, H2, get, request};
use l7_support::{Backend, Lab, Mode, local, pool, pool_at, service};
use sluice_tests::privileged;

const MATCHING: &str = r#"
[[service.l7.virtual_host]]
name = "exact"
domains = ["www.example.test"]
[[service.l7.virtual_host.route]]
match = { path_exact = "/exact" }
direct_response = { status = 200, body = "exact-path" }
[[service.l7.virtual_host.route]]
match = { path_regex = "/items/[0-9]+" }
direct_response = { status = 200, body = "regex-path" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/m", methods = ["POST", "PUT"] }
direct_response = { status = 200, body = "method" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/h", headers = [{ name = "x-canary", exact = "yes" }] }
direct_response = { status = 200, body = "header-exact" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/h", headers = [{ name = "x-debug", present = true }] }
direct_response = { status = 200, body = "header-present" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/h", headers = [{ name = "user-agent", regex = "curl/.*" }] }
direct_response = { status = 200, body = "header-regex" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/h", headers = [{ name = "x-block", present = false }] }
direct_response = { status = 200, body = "header-absent" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/q", query = [{ name = "v", exact = "2" }] }
direct_response = { status = 200, body = "query-exact" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/q", query = [{ name = "id", regex = "[0-9]+" }] }
direct_response = { status = 200, body = "query-regex" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/q", query = [{ name = "debug", present = true }] }
direct_response = { status = 200, body = "query-present" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
direct_response = { status = 200, body = "exact-host" }

[[service.l7.virtual_host]]
name = "wild"
domains = ["*.example.test"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
direct_response = { status = 200, body = "wildcard" }

[[service.l7.virtual_host]]
name = "deeper"
domains = ["*.api.example.test"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
direct_response = { status = 200, body = "deeper-wildcard" }

[[service.l7.virtual_host]]
name = "default"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
direct_response = { status = 200, body = "default" }
"#;

/// Method, host, path, headers, and the route body expected.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn every_match_kind_picks_its_route() {
    if !privileged() {
        return;
    }
    let listen = local(8080);
    let strict = local(8081);
    let config = format!(
        "{}{MATCHING}{}\
         [[service.l7.virtual_host]]\nname = \"only\"\ndomains = [\"only.test\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_exact = \"/\" }}\n\
         direct_response = {{ status = 204 }}\n",
        service("matching", listen, ""),
        service("strict", strict, ""),
    );
    let mut lab = Lab::new();
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        let cases: &[Case] = &[
            ("GET", "www.example.test", "/exact", &[], "exact-path"),
            ("GET", "WWW.Example.TEST:8080", "/exact", &[], "exact-path"),
            ("GET", "www.example.test", "/exact/more", &[], "exact-host"),
            ("GET", "www.example.test", "/items/42", &[], "regex-path"),
            ("GET", "www.example.test", "/items/42a", &[], "exact-host"),
            ("POST", "www.example.test", "/m", &[], "method"),
            ("GET", "www.example.test", "/m", &[], "exact-host"),
            (
                "GET",
                "www.example.test",
                "/h",
                &[("x-canary", "yes")],
                "header-exact",
            ),
            (
                "GET",
                "www.example.test",
                "/h",
                &[("x-canary", "no"), ("x-debug", "")],
                "header-present",
            ),
            (
                "GET",
                "www.example.test",
                "/h",
                &[("user-agent", "curl/8.5")],
                "header-regex",
            ),
            ("GET", "www.example.test", "/h", &[], "header-absent"),
            (
                "GET",
                "www.example.test",
                "/h",
                &[("x-block", "1")],
                "exact-host",
            ),
            ("GET", "www.example.test", "/q?v=2", &[], "query-exact"),
            (
                "GET",
                "www.example.test",
                "/q?v=3&id=17",
                &[],
                "query-regex",
            ),
            (
                "GET",
                "www.example.test",
                "/q?id=x&debug",
                &[],
                "query-present",
            ),
            ("GET", "www.example.test", "/q?id=x", &[], "exact-host"),
            ("GET", "a.example.test", "/", &[], "wildcard"),
            ("GET", "a.b.example.test", "/", &[], "wildcard"),
            ("GET", "v1.api.example.test", "/", &[], "deeper-wildcard"),
            ("GET", "example.test", "/", &[], "default"),
            ("GET", "other.test", "/", &[], "default"),
        ];
        for (method, host, path, headers, want) in cases {
            let mut req = request(method, host, path, "");
            for (name, value) in *headers {
                req.headers_mut()
                    .insert(*name, value.parse().expect("header value"));
            }
            let reply = c.send(req).await.expect("reply");
            assert_eq!(reply.text(), *want, "{method} {host}{path} {headers:?}");
        }
        // HTTP/2 routes by :authority.
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let reply = h2
            .send(get("x.api.example.test", "/"))
            .await
            .expect("h2 reply");
        assert_eq!(reply.text(), "deeper-wildcard");
        // A service without "*": unknown hosts and unmatched paths get 404.
        let mut s = H1::connect(strict).await.expect("connect");
        assert_eq!(
            s.send(get("only.test", "/")).await.expect("reply").status,
            204
        );
        assert_eq!(
            s.send(get("other.test", "/")).await.expect("reply").status,
            404
        );
        assert_eq!(
            s.send(get("only.test", "/x")).await.expect("reply").status,
            404
        );
    });
    lab.stop();
}

#[test]
fn redirects_direct_responses_404_and_unreachable_backends() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let listen = local(8080);
    let config = format!(
        "{}{}\
         [[service.l7.virtual_host]]\nname = \"site\"\ndomains = [\"site.test\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/old/\" }}\n\
         redirect = {{ scheme = \"https\", host = \"new.test\", path = \"/new\", status = 301 }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_exact = \"/down\" }}\n\
         direct_response = {{ status = 503, body = \"maintenance\\n\" }}\n\
         response_headers_add = {{ \"retry-after\" = \"60\" }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_exact = \"/gone\" }}\n\
         forward = {{ pool = \"nowhere\" }}\n",
        pool_at("nowhere", &[local(9)], ""),
        service("site", listen, ""),
    );
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        let redirect = c
            .send(get("site.test:8080", "/old/page?x=1"))
            .await
            .expect("reply");
        assert_eq!(redirect.status, 301);
        assert_eq!(redirect.header("location"), "https://new.test/new?x=1");
        let down = c.send(get("site.test", "/down")).await.expect("reply");
        assert_eq!(down.status, 503);
        assert_eq!(down.text(), "maintenance\n");
        assert_eq!(down.header("retry-after"), "60");
        let none = c.send(get("site.test", "/nothing")).await.expect("reply");
        assert_eq!(none.status, 404);
        let gone = c.send(get("site.test", "/gone")).await.expect("reply");
        assert_eq!(gone.status, 502, "nothing listens on the backend port");
        // The connection survived every answer.
        assert_eq!(
            c.send(get("site.test", "/down"))
                .await
                .expect("reply")
                .status,
            503
        );
    });
    lab.stop();
}

#[test]
fn round_robin_and_weighted_pool_split() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let a = Backend::start(&lab.ns, "a", local(9001), Mode::Echo);
    let b = Backend::start(&lab.ns, "b", local(9002), Mode::Echo);
    let canary = Backend::start(&lab.ns, "canary", local(9003), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/split\" }}\n\
         forward = {{ pools = [{{ pool = \"main\", weight = 3 }}, {{ pool = \"canary\", weight = 1 }}] }}\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"main\" }}\n",
        pool("main", &[&a, &b], &[], ""),
        pool("canary", &[&canary], &[], ""),
        service("split", listen, ""),
    );
    lab.start(&config);
    lab.run(async move {
        let mut c = H1::connect(listen).await.expect("connect");
        for _ in 0..20 {
            assert_eq!(c.send(get("x", "/rr")).await.expect("reply").status, 200);
        }
        for _ in 0..400 {
            assert_eq!(c.send(get("x", "/split")).await.expect("reply").status, 200);
        }
    });
    let rr = |backend: &Backend| backend.seen().iter().filter(|s| s.path == "/rr").count();
    assert_eq!((rr(&a), rr(&b)), (10, 10), "round robin alternates");
    let to_canary = canary.count();
    assert!(
        (60..=140).contains(&to_canary),
        "weight 1 of 4 of 400: {to_canary}"
    );
    lab.stop();
}
