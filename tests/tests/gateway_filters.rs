//! The filter chain end to end: `request_id`, `rate_limit` and header edits on real
//! HTTP/1.1 and HTTP/2 clients through the agent, per-route chains, decision metrics and
//! access-log fields, and rate-limit buckets kept across a reload.

mod l7_support;

use std::time::Duration;

use l7_support::client::{H1, H2, Reply, get, with_header};
use l7_support::{Lab, gateway_lab, pool, service};
use sluice_tests::{eventually, privileged};

const FILTERS: &str = r#"
[[service.l7.filter]]
name = "ids"
request_id = {}
[[service.l7.filter]]
name = "per-client"
rate_limit = { rate = 3, per = "1h" }
[[service.l7.filter]]
name = "per-key"
enabled = false
rate_limit = { rate = 1, per = "1h", key = "header", header = "x-api-key" }
[[service.l7.filter]]
name = "stamp"
headers = { request_add = { x-gw = "1" }, response_add = { x-served-by = "sluice" }, response_remove = ["x-backend"] }
"#;

const ROUTES: &str = r#"
[[service.l7.virtual_host]]
name = "all"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/open" }
forward = { pool = "app" }
filters = []
response_headers_add = { x-route = "open" }
[[service.l7.virtual_host.route]]
match = { path_prefix = "/keyed" }
forward = { pool = "app" }
filters = ["ids", "per-key"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
forward = { pool = "app" }
request_headers_add = { x-from = "gateway" }
"#;

#[test]
fn a_chain_identifies_limits_and_edits_on_http1_and_http2() {
    if !privileged() {
        return;
    }
    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        "{}{}{FILTERS}{ROUTES}",
        pool("app", &[&app], &[], ""),
        service("gw", listen, "")
    );
    lab.start(&config);
    let replies: Vec<(&str, Reply)> = lab.run(async move {
        let mut out = Vec::new();
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let host = "gw.test";
        out.push(("h1 first", h1.send(get(host, "/a")).await.expect("reply")));
        let sent = with_header(get(host, "/b"), "x-request-id", "client-id-1");
        out.push(("h1 own id", h1.send(sent).await.expect("reply")));
        out.push(("h2 third", h2.send(get(host, "/c")).await.expect("reply")));
        out.push(("h2 fourth", h2.send(get(host, "/d")).await.expect("reply")));
        out.push(("h1 fifth", h1.send(get(host, "/e")).await.expect("reply")));
        for _ in 0..5 {
            out.push(("open", h1.send(get(host, "/open")).await.expect("reply")));
        }
        let key = |k: &str| with_header(get(host, "/keyed"), "x-api-key", k);
        out.push(("key a", h1.send(key("a")).await.expect("reply")));
        out.push(("key a again", h2.send(key("a")).await.expect("reply")));
        out.push(("key b", h1.send(key("b")).await.expect("reply")));
        out
    });
    let reply = |what: &str| {
        &replies
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("no reply {what}"))
            .1
    };
    let seen = app.seen();

    // request_id: generated, passed on, echoed; a client's well-formed id is kept.
    let first = reply("h1 first");
    assert_eq!(first.status, 200);
    let id = first.header("x-request-id");
    assert_eq!(id.len(), 36, "a UUID: {id:?}");
    assert_eq!(seen[0].header("x-request-id"), id);
    let trace = seen[0].header("traceparent");
    assert!(trace.starts_with("00-") && trace.len() == 55, "{trace:?}");
    assert_eq!(
        seen[0].header("x-from"),
        "gateway",
        "the route's own edits run last"
    );
    assert_eq!(reply("h1 own id").header("x-request-id"), "client-id-1");
    assert_eq!(seen[1].header("x-request-id"), "client-id-1");

    // rate_limit: 3 per client, over HTTP/1.1 and HTTP/2 alike.
    assert_eq!(first.header("ratelimit-limit"), "3");
    assert_eq!(first.header("ratelimit-remaining"), "2");
    assert_eq!(reply("h2 third").status, 200);
    assert_eq!(reply("h2 third").header("ratelimit-remaining"), "0");
    for over in ["h2 fourth", "h1 fifth"] {
        let r = reply(over);
        assert_eq!(r.status, 429, "{over}");
        let retry: u64 = r
            .header("retry-after")
            .parse()
            .expect("Retry-After seconds");
        assert!((1..=1200).contains(&retry), "{over}: Retry-After {retry}");
        assert_eq!(r.header("ratelimit-remaining"), "0");
        assert_eq!(r.header("ratelimit-limit"), "3");
        assert!(
            !r.header("x-request-id").is_empty(),
            "the id is echoed on a denial"
        );
    }

    // A route with `filters = []` runs none, but keeps its own header edits.
    for (what, r) in replies.iter().filter(|(w, _)| *w == "open") {
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.header("x-route"), "open");
        assert!(
            r.header("x-request-id").is_empty(),
            "no request_id on /open"
        );
    }
    // A route listing a disabled filter: one per API key.
    assert_eq!(reply("key a").status, 200);
    assert_eq!(reply("key a again").status, 429);
    assert_eq!(reply("key b").status, 200);
    assert_eq!(
        seen.len(),
        3 + 5 + 2,
        "denied requests never reach the backend"
    );

    assert_eq!(
        lab.filter_decisions("per-client", "rate_limit", "allow", ""),
        3.0
    );
    assert_eq!(
        lab.filter_decisions("per-client", "rate_limit", "deny", "over_limit"),
        2.0
    );
    assert_eq!(
        lab.filter_decisions("per-key", "rate_limit", "allow", ""),
        2.0
    );
    assert_eq!(lab.filter_decisions("ids", "request_id", "allow", ""), 8.0);

    let line = eventually(Duration::from_secs(10), || {
        let log = lab.log();
        log.lines()
            .find(|l| l.contains("sluice::access") && l.contains("status=429"))
            .map(str::to_string)
            .ok_or_else(|| format!("no 429 access line; log:\n{log}"))
    });
    assert!(
        line.contains("filters=ids:allow,per-client:over_limit"),
        "{line}"
    );
    assert!(line.contains("request_id="), "{line}");
    assert!(line.contains("traceparent=00-"), "{line}");
    lab.stop();
}

#[test]
fn a_reload_that_adds_a_route_keeps_the_buckets() {
    if !privileged() {
        return;
    }
    let (mut lab, app, listen) = gateway_lab();
    let head = format!(
        "{}{}[[service.l7.filter]]\nname = \"rl\"\nrate_limit = {{ rate = 2, per = \"1h\" }}\n",
        pool("app", &[&app], &[], ""),
        service("gw", listen, "")
    );
    let catch_all = "[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
                     [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\nforward = { pool = \"app\" }\n";
    lab.start(&format!("{head}{catch_all}"));
    let statuses = |lab: &Lab, path: &'static str, n: usize| -> Vec<u16> {
        lab.run(async move {
            let mut h1 = H1::connect(listen).await.expect("connect");
            let mut out = Vec::new();
            for _ in 0..n {
                let reply = h1.send(get("gw.test", path)).await.expect("reply");
                out.push(reply.status.as_u16());
            }
            out
        })
    };
    assert_eq!(statuses(&lab, "/", 3), [200, 200, 429]);

    // A new route in front of the old one moves it: the filter is found by name.
    let added = "[[service.l7.virtual_host]]\nname = \"new\"\ndomains = [\"new.test\"]\n\
                 [[service.l7.virtual_host.route]]\nmatch = { path_prefix = \"/\" }\nforward = { pool = \"app\" }\n";
    assert!(
        lab.reload(&format!("{head}{added}{catch_all}")),
        "reload applied"
    );
    assert_eq!(statuses(&lab, "/", 1), [429], "the spent bucket survived");

    // Changed settings are a new filter, with fresh buckets.
    let changed = head.replace("rate = 2", "rate = 4");
    assert!(
        lab.reload(&format!("{changed}{catch_all}")),
        "reload applied"
    );
    assert_eq!(statuses(&lab, "/", 5), [200, 200, 200, 200, 429]);
    lab.stop();
}

#[test]
fn a_refused_client_request_id_is_answered_400() {
    if !privileged() {
        return;
    }
    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        "{}{}[[service.l7.filter]]\nname = \"ids\"\nrequest_id = {{ client = \"refuse\", echo = false }}\n\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n",
        pool("app", &[&app], &[], ""),
        service("gw", listen, "")
    );
    lab.start(&config);
    let (own, plain) = lab.run(async move {
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let own = h2
            .send(with_header(get("gw.test", "/"), "x-request-id", "mine"))
            .await
            .expect("reply");
        let plain = h2.send(get("gw.test", "/")).await.expect("reply");
        (own, plain)
    });
    assert_eq!(own.status, 400);
    assert_eq!(plain.status, 200);
    assert!(plain.header("x-request-id").is_empty(), "echo = false");
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-request-id").len(), 36, "generated");
    lab.stop();
}
