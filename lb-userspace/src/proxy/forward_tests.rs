use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn names(map: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
    names.sort();
    names
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut map = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("te", "gzip"),
        ("trailer", "x-checksum"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("accept", "*/*"),
    ]);
    strip_hop_by_hop(&mut map, false);
    assert_eq!(names(&map), ["accept"]);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let mut map = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
    strip_hop_by_hop(&mut map, false);
    assert_eq!(map.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
}

#[test]
fn an_upgrade_keeps_upgrade_and_connection_upgrade() {
    let mut map = headers(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "abc"),
    ]);
    assert!(is_upgrade_request(Version::HTTP_11, &map));
    assert!(!is_upgrade_request(Version::HTTP_2, &map));
    strip_hop_by_hop(&mut map, true);
    assert_eq!(names(&map), ["connection", "sec-websocket-key", "upgrade"]);
    assert_eq!(map[CONNECTION], "upgrade");
}

fn forwarded(
    map: &mut HeaderMap,
    peer: &str,
    https: bool,
    host: &'static str,
    trust: &ForwardedTrust,
) {
    let client = HeaderValue::from_str(peer).expect("ip");
    set_forwarded(
        map,
        &ForwardedFor {
            client_ip: &client,
            peer: peer.parse().expect("ip"),
            https,
            host: &HeaderValue::from_static(host),
            trust,
        },
    );
}

fn spoofed() -> HeaderMap {
    headers(&[
        ("x-forwarded-for", "203.0.113.1"),
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-host", "evil.test"),
        ("x-real-ip", "203.0.113.1"),
        ("forwarded", "for=203.0.113.1;host=evil.test"),
    ])
}

#[test]
fn an_untrusted_clients_forwarding_headers_are_replaced() {
    let mut map = spoofed();
    forwarded(
        &mut map,
        "192.0.2.7",
        true,
        "a.test",
        &ForwardedTrust::default(),
    );
    assert_eq!(map[&X_FORWARDED_FOR], "192.0.2.7");
    assert_eq!(map[&X_FORWARDED_PROTO], "https");
    assert_eq!(map[&X_FORWARDED_HOST], "a.test");
    assert_eq!(map[&X_REAL_IP], "192.0.2.7");
    assert_eq!(map[FORWARDED], "for=192.0.2.7;proto=https;host=\"a.test\"");
    let mut fresh = HeaderMap::new();
    forwarded(
        &mut fresh,
        "2001:db8::1",
        false,
        "",
        &ForwardedTrust::default(),
    );
    assert_eq!(fresh[&X_FORWARDED_FOR], "2001:db8::1");
    assert_eq!(fresh[&X_FORWARDED_PROTO], "http");
    assert!(!fresh.contains_key(&X_FORWARDED_HOST));
    assert!(
        !fresh.contains_key(FORWARDED),
        "none added when the client sent none"
    );
}

#[test]
fn a_trusted_proxys_forwarding_headers_are_extended() {
    let by_cidr = ForwardedTrust {
        trusted_proxies: vec!["192.0.2.0/24".parse().expect("cidr")],
        trusted_hops: 0,
    };
    let mut map = spoofed();
    forwarded(&mut map, "192.0.2.7", false, "a.test", &by_cidr);
    assert_eq!(map[&X_FORWARDED_FOR], "203.0.113.1, 192.0.2.7");
    assert_eq!(map[&X_FORWARDED_PROTO], "gopher");
    assert_eq!(map[&X_FORWARDED_HOST], "evil.test");
    assert_eq!(map[&X_REAL_IP], "203.0.113.1");
    assert_eq!(
        map[FORWARDED],
        "for=203.0.113.1;host=evil.test, for=192.0.2.7;proto=http;host=\"a.test\""
    );
    // The same headers from a peer outside the CIDR are replaced.
    let mut map = spoofed();
    forwarded(&mut map, "198.51.100.9", false, "a.test", &by_cidr);
    assert_eq!(map[&X_FORWARDED_FOR], "198.51.100.9");
    assert_eq!(map[&X_REAL_IP], "198.51.100.9");
}

#[test]
fn trusted_hops_pick_the_client_from_the_right() {
    let two_hops = ForwardedTrust {
        trusted_proxies: Vec::new(),
        trusted_hops: 2,
    };
    let mut map = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.5, 10.0.0.2")]);
    forwarded(&mut map, "10.0.0.3", false, "a.test", &two_hops);
    assert_eq!(
        map[&X_FORWARDED_FOR],
        "198.51.100.1, 203.0.113.5, 10.0.0.2, 10.0.0.3"
    );
    // Two trusted proxies (10.0.0.2 appended by the first, we see the second as peer):
    // the client is the one the first proxy saw.
    assert_eq!(map[&X_REAL_IP], "203.0.113.5");
}

#[test]
fn http2_cookies_are_joined() {
    let mut map = headers(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
    join_cookies(&mut map);
    assert_eq!(map.get_all(COOKIE).iter().count(), 1);
    assert_eq!(map[COOKIE], "a=1; b=2; c=3");
}

#[test]
fn only_allowed_upgrades_pass() {
    let allowed = vec!["websocket".to_owned()];
    let asks = |value: &'static str| {
        let map = headers(&[("upgrade", value)]);
        upgrade_allowed(&map, &allowed)
    };
    assert!(asks("websocket"));
    assert!(asks("WebSocket"));
    assert!(!asks("h2c"));
    assert!(!asks("websocket, h2c"));
    assert!(!asks("foo/1.0"));
    assert!(!upgrade_allowed(&HeaderMap::new(), &allowed));
}

#[test]
fn route_header_edits_remove_then_add() {
    let mut map = headers(&[("x-debug", "1"), ("x-env", "old")]);
    let add = [(
        HeaderName::from_static("x-env"),
        HeaderValue::from_static("prod"),
    )];
    edit_headers(&mut map, &[HeaderName::from_static("x-debug")], &add);
    assert_eq!(names(&map), ["x-env"]);
    assert_eq!(map["x-env"], "prod");
}

#[test]
fn prefix_rewrite_keeps_the_query() {
    let pq = |s: &'static str| PathAndQuery::from_static(s);
    let rewrite = |p: &'static str, r| upstream_path(&pq(p), r).map(|x| x.to_string());
    assert_eq!(
        rewrite("/api/users?id=1", Some(("/api/", "/"))).as_deref(),
        Some("/users?id=1")
    );
    assert_eq!(
        rewrite("/api/users", Some(("/api", "/v2"))).as_deref(),
        Some("/v2/users")
    );
    assert_eq!(
        rewrite("/api/x", Some(("/api", "/"))).as_deref(),
        Some("/x")
    );
    assert_eq!(rewrite("/api", Some(("/api", "/"))).as_deref(), Some("/"));
    assert_eq!(rewrite("/other", Some(("/api", "/"))), None);
    assert_eq!(rewrite("/same?q", None).as_deref(), Some("/same?q"));
}

#[test]
fn upstream_uri_names_the_backend() {
    let authority = Authority::from_static("10.0.0.1:8080");
    let uri = upstream_uri(&authority, PathAndQuery::from_static("/a?b=c")).expect("uri");
    assert_eq!(uri.to_string(), "http://10.0.0.1:8080/a?b=c");
}

#[test]
fn redirects_keep_unset_parts() {
    let pq = PathAndQuery::from_static("/old/page?x=1");
    let mut r = Redirect {
        scheme: Some(RedirectScheme::Https),
        host: None,
        port: None,
        path: None,
        status: 301,
    };
    assert_eq!(
        redirect_location(&r, false, "a.test:8080", &pq),
        "https://a.test/old/page?x=1"
    );
    r.port = Some(8443);
    assert_eq!(
        redirect_location(&r, false, "a.test", &pq),
        "https://a.test:8443/old/page?x=1"
    );
    let r = Redirect {
        scheme: None,
        host: Some("b.test".into()),
        port: None,
        path: Some("/new".into()),
        status: 302,
    };
    assert_eq!(
        redirect_location(&r, false, "a.test:8080", &pq),
        "http://b.test:8080/new?x=1"
    );
    assert_eq!(
        redirect_location(&r, true, "[::1]:443", &pq),
        "https://b.test/new?x=1"
    );
}
