use std::time::Duration;

use super::*;
use crate::config::{HostPattern, Pattern, RouteMatch, Scheme, ValueMatch, WeightedPool};
use http::HeaderValue;

fn route(path: PathMatch, action: RouteAction) -> RouteConfig {
    RouteConfig {
        matcher: RouteMatch {
            path,
            methods: vec![],
            headers: vec![],
            query: vec![],
        },
        action,
        prefix_rewrite: None,
        request_headers_add: vec![],
        request_headers_remove: vec![],
        response_headers_add: vec![],
        response_headers_remove: vec![],
        timeout: Some(Duration::from_secs(15)),
        stream_idle_timeout: None,
        retry: None,
        upgrades: vec!["websocket".to_owned()],
        filters: None,
    }
}

fn direct(status: u16) -> RouteAction {
    RouteAction::DirectResponse { status, body: None }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}

fn regex(re: &str) -> Pattern {
    Pattern(regex::Regex::new(&format!("^(?:{re})$")).expect("test regex"))
}

fn vhost(name: &str, domains: Vec<HostPattern>, routes: Vec<RouteConfig>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains,
        routes,
    }
}

fn exact(host: &str) -> HostPattern {
    HostPattern::Exact(host.into())
}

fn suffix(host: &str) -> HostPattern {
    HostPattern::Suffix(host.into())
}

fn table(hosts: Vec<VirtualHost>) -> RouteTable {
    RouteTable::compile(
        "svc",
        &hosts,
        &StatsRegistry::default(),
        &BuiltFilters::default(),
    )
    .expect("compiles")
}

struct Req {
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
}

fn get(path_and_query: &'static str) -> Req {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    Req {
        method: Method::GET,
        path,
        query,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
}

/// The name of the route `host` and `req` reach, or `None`.
fn found(t: &RouteTable, host: &str, req: &Req) -> Option<String> {
    let view = RequestView {
        method: &req.method,
        path: req.path,
        query: req.query,
        headers: &req.headers,
    };
    t.find(host, &view).map(|r| r.name.to_string())
}

#[test]
fn hosts_exact_then_longest_suffix_then_any() {
    let catch_all = |n: &str| vhost(n, vec![], vec![route(prefix("/"), direct(200))]);
    let mut a = catch_all("a");
    a.domains = vec![exact("www.example.com")];
    let mut b = catch_all("b");
    b.domains = vec![suffix("example.com")];
    let mut c = catch_all("c");
    c.domains = vec![suffix("api.example.com")];
    let mut d = catch_all("d");
    d.domains = vec![HostPattern::Any];
    let t = table(vec![a, b, c, d]);
    let r = get("/");
    assert_eq!(found(&t, "www.example.com", &r).as_deref(), Some("a#1"));
    assert_eq!(
        found(&t, "WWW.Example.COM:8443", &r).as_deref(),
        Some("a#1")
    );
    assert_eq!(found(&t, "www.example.com.", &r).as_deref(), Some("a#1"));
    assert_eq!(found(&t, "x.example.com", &r).as_deref(), Some("b#1"));
    assert_eq!(found(&t, "x.y.example.com", &r).as_deref(), Some("b#1"));
    assert_eq!(found(&t, "v1.api.example.com", &r).as_deref(), Some("c#1"));
    assert_eq!(
        found(&t, "example.com", &r).as_deref(),
        Some("d#1"),
        "*. needs a label"
    );
    assert_eq!(found(&t, "other.org", &r).as_deref(), Some("d#1"));
    assert_eq!(found(&t, "[::1]:80", &r).as_deref(), Some("d#1"));
}

#[test]
fn no_virtual_host_and_no_route_find_nothing() {
    let t = table(vec![vhost(
        "only",
        vec![exact("a.test")],
        vec![route(PathMatch::Exact("/x".into()), direct(200))],
    )]);
    assert_eq!(found(&t, "b.test", &get("/x")), None);
    assert_eq!(found(&t, "a.test", &get("/y")), None);
    assert_eq!(found(&t, "a.test", &get("/x")).as_deref(), Some("only#1"));
}

#[test]
fn path_matches_and_first_match_wins() {
    let t = table(vec![vhost(
        "v",
        vec![HostPattern::Any],
        vec![
            route(PathMatch::Exact("/exact".into()), direct(200)),
            route(PathMatch::Regex(regex("/items/[0-9]+")), direct(200)),
            route(prefix("/api/"), direct(200)),
            route(prefix("/"), direct(404)),
        ],
    )]);
    let name = |p| found(&t, "h", &get(p));
    assert_eq!(name("/exact").as_deref(), Some("v#1"));
    assert_eq!(name("/exact/more").as_deref(), Some("v#4"));
    assert_eq!(name("/items/42").as_deref(), Some("v#2"));
    assert_eq!(
        name("/items/42x").as_deref(),
        Some("v#4"),
        "regex is a full match"
    );
    assert_eq!(name("/api/users?id=1").as_deref(), Some("v#3"));
    assert_eq!(name("/apix").as_deref(), Some("v#4"));
}

#[test]
fn methods_headers_and_query_all_must_hold() {
    let mut by_method = route(prefix("/"), direct(200));
    by_method.matcher.methods = vec!["POST".into()];
    let mut by_header = route(prefix("/"), direct(200));
    by_header.matcher.headers = vec![
        ValueMatch {
            name: "x-canary".into(),
            condition: ValueCondition::Exact("yes".into()),
        },
        ValueMatch {
            name: "x-debug".into(),
            condition: ValueCondition::Absent,
        },
    ];
    let mut by_header_re = route(prefix("/"), direct(200));
    by_header_re.matcher.headers = vec![ValueMatch {
        name: "user-agent".into(),
        condition: ValueCondition::Regex(regex("curl/.*")),
    }];
    let mut by_query = route(prefix("/"), direct(200));
    by_query.matcher.query = vec![
        ValueMatch {
            name: "v".into(),
            condition: ValueCondition::Regex(regex("[0-9]+")),
        },
        ValueMatch {
            name: "name".into(),
            condition: ValueCondition::Exact("a b".into()),
        },
        ValueMatch {
            name: "flag".into(),
            condition: ValueCondition::Present,
        },
    ];
    let fallback = route(prefix("/"), direct(404));
    let t = table(vec![vhost(
        "v",
        vec![HostPattern::Any],
        vec![by_method, by_header, by_header_re, by_query, fallback],
    )]);
    let name = |r: Req| found(&t, "h", &r);
    assert_eq!(name(get("/").method(Method::POST)).as_deref(), Some("v#1"));
    assert_eq!(
        name(get("/").header("x-canary", "yes")).as_deref(),
        Some("v#2")
    );
    assert_eq!(
        name(get("/").header("x-canary", "yes").header("x-debug", "1")).as_deref(),
        Some("v#5"),
        "absent header present"
    );
    assert_eq!(
        name(get("/").header("x-canary", "no")).as_deref(),
        Some("v#5")
    );
    assert_eq!(
        name(get("/").header("user-agent", "curl/8")).as_deref(),
        Some("v#3")
    );
    assert_eq!(
        name(get("/").header("user-agent", "xcurl/8")).as_deref(),
        Some("v#5")
    );
    assert_eq!(name(get("/?v=12&name=a%20b&flag")).as_deref(), Some("v#4"));
    assert_eq!(
        name(get("/?v=12&name=a%20b")).as_deref(),
        Some("v#5"),
        "no flag"
    );
    assert_eq!(name(get("/?v=1x&name=a%20b&flag")).as_deref(), Some("v#5"));
    assert_eq!(name(get("/?flag&v=3&name=a+b")).as_deref(), Some("v#5"));
}

#[test]
fn forward_weights_pick_by_ticket() {
    let mut r = route(
        prefix("/"),
        RouteAction::Forward(vec![
            WeightedPool {
                pool: PoolId(0),
                weight: 90,
            },
            WeightedPool {
                pool: PoolId(3),
                weight: 10,
            },
        ]),
    );
    r.prefix_rewrite = Some("/v2/".into());
    let t = table(vec![vhost("v", vec![HostPattern::Any], vec![r])]);
    let view = get("/");
    let req = RequestView {
        method: &view.method,
        path: view.path,
        query: None,
        headers: &view.headers,
    };
    let route = t.find("h", &req).expect("route");
    let Action::Forward(pools) = &route.action else {
        panic!("forward action expected");
    };
    assert_eq!(pools.total(), 100);
    assert_eq!(pools.pick(0), Some(PoolId(0)));
    assert_eq!(pools.pick(89), Some(PoolId(0)));
    assert_eq!(pools.pick(90), Some(PoolId(3)));
    assert_eq!(pools.pick(99), Some(PoolId(3)));
    assert_eq!(pools.pick(100), None);
    assert_eq!(
        route.prefix_rewrite.as_ref().map(|(a, b)| (&**a, &**b)),
        Some(("/", "/v2/"))
    );
}

#[test]
fn redirect_and_direct_actions_compile() {
    let redirect = Redirect {
        scheme: Some(Scheme::Https),
        host: None,
        port: None,
        path: None,
        status: 301,
    };
    let t = table(vec![vhost(
        "v",
        vec![HostPattern::Any],
        vec![
            route(
                PathMatch::Exact("/r".into()),
                RouteAction::Redirect(redirect),
            ),
            route(
                prefix("/"),
                RouteAction::DirectResponse {
                    status: 503,
                    body: Some("down\n".into()),
                },
            ),
        ],
    )]);
    let view = get("/x");
    let req = RequestView {
        method: &view.method,
        path: view.path,
        query: None,
        headers: &view.headers,
    };
    match &t.find("h", &req).expect("route").action {
        Action::Direct { status, body } => {
            assert_eq!(status.as_u16(), 503);
            assert_eq!(&body[..], b"down\n");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn host_and_port_split() {
    assert_eq!(split_host_port("a.test:8080"), ("a.test", Some(8080)));
    assert_eq!(split_host_port("a.test"), ("a.test", None));
    assert_eq!(split_host_port("[::1]:443"), ("[::1]", Some(443)));
    assert_eq!(split_host_port("[::1]"), ("[::1]", None));
}

#[test]
fn an_indexed_virtual_host_still_takes_the_first_match() {
    // 10,000 prefix routes, then routes that overlap them by method, exact path and regex:
    // enough to be indexed, and every kind of candidate that must be skipped or taken.
    let mut routes: Vec<RouteConfig> = (0..10_000)
        .map(|i| route(prefix(&format!("/svc{i}/")), direct(200)))
        .collect();
    let mut post_only = route(prefix("/svc9999/"), direct(201));
    post_only.matcher.methods = vec!["POST".into()];
    routes.insert(9_999, post_only);
    routes.push(route(PathMatch::Exact("/svc5/exact".into()), direct(202)));
    routes.push(route(PathMatch::Regex(regex("/re/[0-9]+")), direct(203)));
    routes.push(route(prefix("/"), direct(204)));
    let t = table(vec![vhost("big", vec![HostPattern::Any], routes)]);
    assert!(
        t.hosts[0].index.is_some(),
        "a large virtual host is indexed"
    );
    let cases = [
        (get("/svc0/a"), "big#1"),
        (get("/svc9999/a"), "big#10001"),
        (get("/svc9999/a").method(Method::POST), "big#10000"),
        (get("/svc5/exact"), "big#6"),
        (get("/re/42"), "big#10003"),
        (get("/elsewhere"), "big#10004"),
        (get("/svc"), "big#10004"),
    ];
    for (req, want) in cases {
        assert_eq!(
            found(&t, "any.test", &req).as_deref(),
            Some(want),
            "{}",
            req.path
        );
    }
}
