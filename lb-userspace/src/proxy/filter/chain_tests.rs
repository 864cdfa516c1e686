use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::HeaderMap;

use super::*;
use crate::config::{
    ClientIds, FilterKind, FilterSpec, HeaderEdits, RateKey, RateLimitSpec, RequestIdSpec,
};
use crate::proxy::stats::StatsRegistry;

fn request_id() -> FilterSpec {
    FilterSpec {
        name: "ids".into(),
        enabled: true,
        kind: FilterKind::RequestId(RequestIdSpec {
            header: "x-request-id".into(),
            client: ClientIds::Keep,
            traceparent: true,
            echo: true,
        }),
    }
}

fn limit(name: &str, burst: u32, enabled: bool) -> FilterSpec {
    FilterSpec {
        name: name.into(),
        enabled,
        kind: FilterKind::RateLimit(RateLimitSpec {
            rate: 1,
            per: Duration::from_secs(3600),
            burst,
            key: RateKey::Global,
            max_keys: 10,
            shared: None,
        }),
    }
}

fn edits() -> HeaderEdits {
    HeaderEdits {
        request_add: vec![("x-added".into(), "yes".into())],
        request_remove: vec![],
        response_add: vec![("x-route".into(), "r".into())],
        response_remove: vec!["server".into()],
    }
}

/// Runs `chain` on a request with `headers`: the decision, filters run, request headers
/// after the chain and the response headers after its response phase.
fn run(chain: &Chain, headers: &[(&str, &str)]) -> (Option<Deny>, usize, HeaderMap, HeaderMap) {
    let mut request = HeaderMap::new();
    for (name, value) in headers {
        request.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let mut learned = Learned::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let (ran, deny) = runtime.block_on(async {
        let deadline = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
        let mut uri = http::Uri::from_static("/");
        let mut filtered = FilterRequest {
            method: &http::Method::GET,
            uri: &mut uri,
            headers: &mut request,
            client: SocketAddr::from(([192, 0, 2, 1], 4000)),
            learned: &mut learned,
        };
        chain.on_request(&mut filtered, deadline).await
    });
    let mut response = HeaderMap::new();
    response.insert("server", "backend".parse().expect("value"));
    chain.on_response(ran, &mut response, &learned);
    (deny, ran, request, response)
}

#[test]
fn a_denial_stops_the_chain_and_only_earlier_filters_see_the_response() {
    let stats = StatsRegistry::default();
    let mut next = FilterStates::default();
    let built = FilterStates::default()
        .build(
            "svc",
            &[request_id(), limit("rl", 2, true)],
            &stats,
            &mut next,
        )
        .expect("builds");
    let chain = built.chain(None, &edits()).expect("chain");

    for _ in 0..2 {
        let (deny, ran, request, response) = run(&chain, &[]);
        assert!(deny.is_none());
        assert_eq!(ran, 3, "request_id, rate_limit, the route's header edits");
        assert_eq!(request["x-added"], "yes");
        assert!(request.contains_key("x-request-id"));
        assert!(request.contains_key("traceparent"));
        // Echoed id, rate-limit state, the route's edits.
        assert_eq!(response["x-request-id"], request["x-request-id"]);
        assert_eq!(response["ratelimit-limit"], "2");
        assert_eq!(response["x-route"], "r");
        assert!(!response.contains_key("server"));
    }
    let (deny, ran, request, response) = run(&chain, &[]);
    let deny = deny.expect("third request over the burst of 2");
    assert_eq!(deny.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ran, 1, "only request_id let it go on");
    assert!(
        !request.contains_key("x-added"),
        "the route's edits never ran"
    );
    assert!(
        response.contains_key("x-request-id"),
        "request_id still echoes"
    );
    assert!(!response.contains_key("x-route"));

    let counted = stats.filters();
    let rl = counted
        .iter()
        .find(|(_, name, _)| &**name == "rl")
        .map(|(_, _, s)| s.clone())
        .expect("rl counters");
    assert_eq!(rl.allowed.load(Relaxed), 2);
    assert_eq!(
        rl.denied().collect::<Vec<_>>(),
        [("over_limit", 1), ("other", 0)]
    );
}

#[test]
fn a_route_list_replaces_the_enabled_filters() {
    let stats = StatsRegistry::default();
    let specs = [request_id(), limit("strict", 1, false)];
    let built = FilterStates::default()
        .build("svc", &specs, &stats, &mut FilterStates::default())
        .expect("builds");
    let default = built.chain(None, &HeaderEdits::default()).expect("chain");
    assert_eq!(
        format!("{default:?}"),
        r#"["ids"]"#,
        "a disabled filter is left out"
    );
    let listed = built
        .chain(Some(&[1, 0]), &HeaderEdits::default())
        .expect("chain");
    assert_eq!(
        format!("{listed:?}"),
        r#"["strict", "ids"]"#,
        "in the route's order"
    );
    let none = built.chain(Some(&[]), &edits()).expect("chain");
    assert_eq!(format!("{none:?}"), r#"["route_headers"]"#);
}

#[test]
fn a_reload_keeps_the_state_of_an_unchanged_filter_by_name() {
    let stats = StatsRegistry::default();
    let mut running = FilterStates::default();
    let first = FilterStates::default()
        .build("svc", &[limit("rl", 1, true)], &stats, &mut running)
        .expect("builds");
    let chain = first.chain(None, &HeaderEdits::default()).expect("chain");
    assert!(run(&chain, &[]).0.is_none());
    assert!(run(&chain, &[]).0.is_some(), "the bucket of 1 is spent");

    // Another filter before it moves its position; its name and settings are the same.
    let mut next = FilterStates::default();
    let kept = running
        .build(
            "svc",
            &[request_id(), limit("rl", 1, true)],
            &stats,
            &mut next,
        )
        .expect("builds");
    let chain = kept
        .chain(Some(&[1]), &HeaderEdits::default())
        .expect("chain");
    assert!(
        run(&chain, &[]).0.is_some(),
        "the spent bucket survived the reload"
    );

    // Changed settings start afresh.
    let changed = next
        .build(
            "svc",
            &[limit("rl", 5, true)],
            &stats,
            &mut FilterStates::default(),
        )
        .expect("builds");
    let chain = changed.chain(None, &HeaderEdits::default()).expect("chain");
    assert!(run(&chain, &[]).0.is_none());
}

#[test]
fn decisions_read_as_one_log_field() {
    let mut learned = Learned::default();
    assert_eq!(learned.decisions_text(), "-");
    learned.decisions.push(("ids".into(), "allow"));
    learned.decisions.push(("rl".into(), "over_limit"));
    assert_eq!(learned.decisions_text(), "ids:allow,rl:over_limit");
}

/// A filter whose decision never comes.
struct Stuck;

impl Filter for Stuck {
    fn on_request(&self, _request: &mut FilterRequest<'_>) -> Verdict {
        Verdict::Pending(Box::pin(std::future::pending()))
    }
}

#[test]
fn a_filter_still_waiting_at_the_route_deadline_answers_504() {
    let stats = StatsRegistry::default();
    let chain = Chain::new(vec![ChainEntry {
        name: "stuck".into(),
        filter: std::sync::Arc::new(Stuck),
        stats: Some(stats.filter("svc", "stuck", "test", &[], &[])),
    }]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut headers = HeaderMap::new();
    let mut learned = Learned::default();
    let (ran, deny) = runtime.block_on(async {
        let deadline = std::pin::pin!(tokio::time::sleep(Duration::from_millis(20)));
        let mut uri = http::Uri::from_static("/");
        let mut filtered = FilterRequest {
            method: &http::Method::GET,
            uri: &mut uri,
            headers: &mut headers,
            client: SocketAddr::from(([192, 0, 2, 1], 4000)),
            learned: &mut learned,
        };
        chain.on_request(&mut filtered, deadline).await
    });
    assert_eq!(ran, 0);
    assert_eq!(deny.map(|d| d.status), Some(StatusCode::GATEWAY_TIMEOUT));
    assert_eq!(learned.decisions_text(), "stuck:timeout");
}
