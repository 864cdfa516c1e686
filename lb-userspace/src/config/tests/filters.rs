//! `[[service.l7.filter]]` and a route's `filters`: every rule's error at its place, and a
//! valid chain read into typed values.

use std::time::Duration;

use super::errors;
use super::rules::{VHOST, l7_service};
use crate::config::{
    ClientIds, FilterKind, RateKey, RateLimitSpec, RequestIdSpec, ServiceKind, parse,
};

/// A service whose `[service.l7]` holds `filters` (from line 10), then a catch-all route
/// with `route` lines after its `forward`.
fn with_filters(filters: &str, route: &str) -> String {
    l7_service(filters, &format!("{VHOST}{route}"))
}

fn assert_errors(text: &str, expected: &[&str]) {
    let actual = errors(text);
    let matches = actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            let (position, fragment) = e.split_once(' ').unwrap_or((e, ""));
            a.starts_with(position) && a.contains(fragment)
        });
    assert!(
        matches,
        "expected {expected:#?}\ngot {actual:#?}\n---\n{text}"
    );
}

#[test]
fn a_filter_needs_exactly_one_type() {
    assert_errors(
        &with_filters("[[service.l7.filter]]\nname = \"a\"\n", ""),
        &[
            "10:1: exactly one of `headers`, `request_id`, `rate_limit`, `api_key`, `jwt`, `authz`, `cors` or `ext_authz`, found 0",
        ],
    );
    assert_errors(
        &with_filters(
            "[[service.l7.filter]]\nname = \"a\"\nrequest_id = {}\nheaders = {}\n",
            "",
        ),
        &["10:1: found 2"],
    );
}

#[test]
fn filter_names_are_unique_in_a_service() {
    assert_errors(
        &with_filters(
            "[[service.l7.filter]]\nname = \"a\"\nrequest_id = {}\n[[service.l7.filter]]\nname = \"a\"\nrequest_id = {}\n",
            "",
        ),
        &["14:8: filter \"a\": the name is already used by the filter on line 11"],
    );
}

#[test]
fn rate_limit_settings_are_checked() {
    let limit = |fields: &str| {
        with_filters(
            &format!(
                "[[service.l7.filter]]\nname = \"rl\"\n[service.l7.filter.rate_limit]\n{fields}\n"
            ),
            "",
        )
    };
    assert_errors(
        &limit("rate = 0"),
        &["13:8: rate_limit.rate 0 is out of range"],
    );
    assert_errors(
        &limit("rate = 10\nkey = \"header\""),
        &["14:7: key = \"header\" needs rate_limit.header"],
    );
    assert_errors(
        &limit("rate = 10\nheader = \"x-api-key\""),
        &["14:10: rate_limit.header applies only with key = \"header\""],
    );
    assert_errors(
        &limit("rate = 10\nper = \"1ns\""),
        &["13:8: more than one request per nanosecond"],
    );
    assert_errors(
        &limit("rate = 10\nmax_keys = 0"),
        &["14:12: rate_limit.max_keys 0 is out of range"],
    );
    assert_errors(
        &limit("rate = 10\nkeys = 1"),
        &["14:1: unknown field `keys`"],
    );
}

#[test]
fn a_route_names_only_filters_its_service_defines_each_once() {
    let filters = "[[service.l7.filter]]\nname = \"ids\"\nrequest_id = {}\n";
    assert_errors(
        &with_filters(filters, "filters = [\"ids\", \"nope\", \"ids\"]\n"),
        &[
            "19:19: no [[service.l7.filter]] named \"nope\"",
            "19:27: filter \"ids\" is listed twice",
        ],
    );
}

#[test]
fn a_valid_chain_reads_into_typed_filters() {
    let text = with_filters(
        "[[service.l7.filter]]\nname = \"ids\"\nrequest_id = { client = \"refuse\" }\n\
         [[service.l7.filter]]\nname = \"per-key\"\nenabled = false\n\
         rate_limit = { rate = 5, per = \"1m\", key = \"header\", header = \"X-Api-Key\" }\n",
        "filters = [\"per-key\", \"ids\"]\n",
    );
    let loaded = match parse(&text, std::path::Path::new("config/test.toml")) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("{errors}"),
    };
    let ServiceKind::L7(l7) = &loaded.config.services[0].kind else {
        panic!("an l7 service");
    };
    assert_eq!(l7.filters.len(), 2);
    assert_eq!(
        l7.filters[0].kind,
        FilterKind::RequestId(RequestIdSpec {
            header: "x-request-id".into(),
            client: ClientIds::Refuse,
            traceparent: true,
            echo: true,
        })
    );
    assert!(!l7.filters[1].enabled);
    assert_eq!(
        l7.filters[1].kind,
        FilterKind::RateLimit(RateLimitSpec {
            rate: 5,
            per: Duration::from_secs(60),
            burst: 5,
            key: RateKey::Header("x-api-key".into()),
            max_keys: 100_000,
            shared: None,
        })
    );
    assert_eq!(
        l7.virtual_hosts[0].routes[0].filters.as_deref(),
        Some(&[1, 0][..])
    );
}

#[test]
fn jwt_settings_are_checked() {
    let jwt = |fields: &str| {
        with_filters(
            &format!("[[service.l7.filter]]\nname = \"auth\"\n[service.l7.filter.jwt]\n{fields}\n"),
            "",
        )
    };
    assert_errors(
        &jwt("issuer = \"x\""),
        &["12:1: jwt needs jwks_file or jwks_url"],
    );
    assert_errors(
        &jwt("jwks_url = \"ftp://idp/jwks\""),
        &["13:12: jwt.jwks_url \"ftp://idp/jwks\" is not a URL like"],
    );
    assert_errors(
        &jwt("jwks_url = \"http://idp/jwks\"\njwks_ca_file = \"ca.pem\""),
        &["14:16: jwt.jwks_ca_file applies only with an https jwt.jwks_url"],
    );
    assert_errors(
        &jwt("jwks_url = \"https://idp/jwks\"\njwks_ca_file = \"/nonexistent/ca.pem\""),
        &["14:16: jwt.jwks_ca_file /nonexistent/ca.pem cannot be read"],
    );
    assert_errors(
        &jwt("jwks_url = \"http://idp/jwks\"\nalgorithms = [\"RS256\", \"HS256\"]"),
        &["14:24: \"HS256\" is not accepted"],
    );
    assert_errors(
        &jwt("jwks_url = \"http://idp/jwks\"\nleeway = \"2h\""),
        &["14:10: jwt.leeway \"2h\" is not a duration"],
    );
    assert_errors(
        &jwt("jwks_file = \"/nonexistent/jwks.json\""),
        &["13:13: jwt.jwks_file /nonexistent/jwks.json cannot be read"],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jwks.json");
    std::fs::write(
        &file,
        "{\"keys\": [\n  {\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}\n]}",
    )
    .expect("write");
    assert_errors(
        &jwt(&format!(
            "jwks_file = {:?}\njwks_refresh = \"1m\"",
            file.display()
        )),
        &[
            "13:13: key 0 (no kid): kty \"oct\" is refused",
            "14:16: jwt.jwks_refresh applies only with jwt.jwks_url",
        ],
    );
}

#[test]
fn the_shipped_gateway_example_is_valid_without_warnings() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
    let loaded = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let ServiceKind::L7(l7) = &loaded.config.services[0].kind else {
        panic!("an l7 service");
    };
    let types: Vec<_> = l7.filters.iter().map(|f| f.kind.type_name()).collect();
    assert_eq!(
        types,
        [
            "cors",
            "request_id",
            "jwt",
            "api_key",
            "rate_limit",
            "authz"
        ]
    );
}

#[test]
fn ext_authz_settings_are_checked() {
    let ext = |fields: &str| {
        with_filters(
            &format!(
                "[[service.l7.filter]]\nname = \"ext\"\n[service.l7.filter.ext_authz]\n{fields}\n"
            ),
            "",
        )
    };
    assert_errors(
        &ext("url = \"https://authz/check?x=1\""),
        &["13:7: ext_authz.url \"https://authz/check?x=1\" is not a URL"],
    );
    assert_errors(
        &ext("url = \"http://authz/check\"\nca_file = \"ca.pem\""),
        &["14:11: ext_authz.ca_file applies only with an https ext_authz.url"],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "no certificate here\n").expect("write");
    assert_errors(
        &ext(&format!(
            "url = \"https://authz/check\"\nca_file = {:?}",
            not_pem.display()
        )),
        &["14:11: holds no PEM CERTIFICATE block"],
    );
    assert_errors(
        &ext("url = \"http://authz/check\"\nfailure_mode = \"maybe\""),
        &["14:16: ext_authz.failure_mode \"maybe\" is neither"],
    );
    assert_errors(
        &ext("url = \"http://authz/check\"\nadd_to_request = [\"bad name\"]"),
        &["14:19: "],
    );
}

#[test]
fn cors_and_authz_settings_are_checked() {
    let table = |kind: &str, fields: &str| {
        with_filters(
            &format!("[[service.l7.filter]]\nname = \"f\"\n[service.l7.filter.{kind}]\n{fields}\n"),
            "",
        )
    };
    assert_errors(
        &table("cors", "allow_origins = [\"*\"]\nallow_credentials = true"),
        &["12:1: cannot go with allow_credentials = true"],
    );
    assert_errors(
        &table("cors", "allow_origins = [\"https://App.example.com/\"]"),
        &["13:18: is not an origin as browsers send it"],
    );
    assert_errors(
        &table("cors", "allow_origins = [\"*\", \"https://a.example\"]"),
        &["12:1: \"*\" stands alone"],
    );
    assert_errors(
        &table("authz", "default = \"maybe\""),
        &["13:11: authz.default \"maybe\" is neither"],
    );
    assert_errors(
        &table(
            "authz",
            "default = \"deny\"\n[[service.l7.filter.authz.rule]]\naction = \"allow\"\nmethods = []\n\
             path = \"/a\"\npath_prefix = \"/b\"\nclient_cidrs = [\"10.0.0.0/33\"]",
        ),
        &[
            "14:1: methods is empty",
            "18:15: a rule takes path or path_prefix, not both",
            "19:17: client_cidrs: \"10.0.0.0/33\" is not a CIDR",
        ],
    );
}
