//! Whole-file tests: the shipped example, error collection and locations, the typed result.
//! One test per validation rule lives in `tests/rules.rs`.

mod client_auth;
mod edge;
mod filters;
mod log;
mod readme;
mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.toml");

/// A path in the shipped `config/` directory, so `certs/example.crt` resolves.
fn origin() -> PathBuf {
    Path::new(EXAMPLE).with_file_name("test.toml")
}

/// The errors of `text` as `line:col: message`; panics if it validates.
pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(text, &origin()) {
        Ok(loaded) => panic!("expected errors, got a config: {:#?}", loaded.config),
        Err(errors) => {
            assert!(
                !errors.diagnostics.is_empty(),
                "ConfigErrors without diagnostics"
            );
            errors
                .diagnostics
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect()
        }
    }
}

/// The config of `text`; panics with the diagnostics if it does not validate.
pub(super) fn valid(text: &str) -> Loaded {
    match parse(text, &origin()) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

#[test]
fn shipped_example_is_valid_without_warnings() {
    let loaded = match load(Path::new(EXAMPLE)) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("config/example.toml does not validate:\n{errors}"),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.interfaces.len(), 1);
    assert_eq!(config.certificates.len(), 1);
    assert_eq!(config.pools.len(), 5);
    assert_eq!(config.services.len(), 4);
    let kinds: Vec<_> = config
        .services
        .iter()
        .map(|s| match &s.kind {
            ServiceKind::L4(l4) => format!("l4 {:?} {:?}", l4.mode, s.protocol),
            ServiceKind::L7(l7) => format!("l7 tls={}", l7.tls.is_some()),
        })
        .collect();
    assert_eq!(
        kinds,
        ["l4 Dsr Tcp", "l4 Nat Udp", "l7 tls=true", "l7 tls=false"]
    );
    assert!(!config.certificates[0].chain.is_empty());
}

#[test]
fn every_independent_mistake_is_reported_with_its_location() {
    let text = r#"
[[interface]]
name = "a/b"

[[pool]]
name = "web"
panic_threshold = 101
[[pool.backend]]
address = "10.0.0.1"
port = 80
weight = 0
[[pool.backend]]
address = "10.0.0.2"
port = 80
bogus = 1

[[pool]]
name = "api"
connect_timeout = "soon"
backend = [{ address = "10.0.0.3", port = 8080 }]

[[service]]
name = "s"
vip = "192.0.2.1"
port = 80
protocol = "udp"
[service.l7]
[[service.l7.virtual_host]]
name = "v"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
forward = { pool = "web" }
"#;
    assert_eq!(
        errors(text),
        [
            "3:8: interface \"a/b\": not a Linux interface name (1 to 15 bytes, no '/', ':' or whitespace)",
            "7:19: pool \"web\": panic_threshold 101 is out of range (0..=100)",
            "11:10: pool \"web\", backend \"10.0.0.1:80\": weight 0 is out of range (1..=10000)",
            "15:1: pool \"web\", backend #2: unknown field `bogus`, expected one of `address`, `port`, `weight`, `name`",
            "19:19: pool \"api\": connect_timeout \"soon\" is not a duration like \"1s\" or \"500ms\" (expected number at 0)",
            "26:12: service \"s\": an l7 service needs protocol \"tcp\"",
        ]
    );
}

#[test]
fn errors_in_sibling_routes_and_virtual_hosts_are_all_reported() {
    let text = rules::l7_route(
        r#"match = { path_prefix = "/" }
forward = { pool = 7 }
[[service.l7.virtual_host.route]]
match = { path_exact = "x" }
forward = { pool = "p" }
[[service.l7.virtual_host]]
name = "w"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/", extra = 1 }
forward = { pool = "p" }
"#,
    );
    assert_eq!(
        errors(&text),
        [
            "15:20: service \"s\", virtual host \"v\", route #1: invalid type: integer `7`, expected a string",
            "17:24: service \"s\", virtual host \"v\", route #2: path_exact \"x\" must start with '/' and contain no spaces",
            "21:12: service \"s\", virtual host \"w\": domain \"*\" is already served by virtual host \"v\"",
            "23:30: service \"s\", virtual host \"w\", route #1: unknown field `extra`, expected one of `path_exact`, `path_prefix`, `path_regex`, `methods`, `headers`, `query`",
        ]
    );
}

#[test]
fn a_reference_to_a_broken_item_is_not_an_error_of_its_own() {
    let text = r#"
[[pool]]
name = "p"
policy = "fastest"
backend = [{ address = "10.0.0.1", port = 80 }]
[[certificate]]
name = "c"
cert = 1
key = "certs/example.key"
[[service]]
name = "s"
vip = "192.0.2.1"
port = 443
protocol = "tcp"
[service.l7]
tls = { certificates = ["c"] }
[[service.l7.virtual_host]]
name = "v"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
forward = { pool = "p" }
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("4:10: pool \"p\": unknown variant `fastest`"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("8:8: certificate \"c\": invalid type"),
        "{errs:?}"
    );
}

#[test]
fn names_must_not_be_empty() {
    let text =
        "[[pool]]\nname = \"\"\nbackend = [{ address = \"10.0.0.1\", port = 80, name = \"\" }]\n";
    assert_eq!(
        errors(text),
        [
            "2:8: pool \"\": name \"\" must be non-empty text without control characters",
            "3:54: pool \"\", backend \"\": name \"\" must be non-empty text without control characters",
        ]
    );
}

#[test]
fn unknown_field_is_rejected_where_it_is() {
    let text = "[admin]\nlisten = \"127.0.0.1:9100\"\n  metrics = \"/m\"\n";
    assert_eq!(
        errors(text),
        [
            "3:3: admin: unknown field `metrics`, expected one of `listen`, `token_file`, `metrics_path`"
        ]
    );
}

#[test]
fn unknown_top_level_key_and_wrong_shape() {
    let text = "pools = 1\n[pool]\nname = \"a\"\n";
    assert_eq!(
        errors(text),
        [
            "1:1: unknown top-level key `pools`, expected one of `interface`, `admin`, `announce`, `dataplane`, `log`, `certificate`, `pool`, `service`",
            "2:1: `pool` must be an array of tables (`[[pool]]`), found a table",
        ]
    );
}

#[test]
fn syntax_error_has_its_location() {
    let errs = errors("[[pool]]\nname = \"web\nport = 3\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("2:12: syntax error: "), "{errs:?}");
}

#[test]
fn type_errors_say_integer_and_point_at_the_value() {
    let text = "[[pool]]\nname = \"p\"\nbackend = [{ address = \"10.0.0.1\", port = \"http\" }]\n";
    assert_eq!(
        errors(text),
        ["3:43: pool \"p\", backend #1: invalid type: string \"http\", expected an integer"]
    );
}

#[test]
fn unreadable_file_is_one_diagnostic_without_a_line() {
    let path = Path::new("/nonexistent/sluice.toml");
    let Err(errors) = load(path) else {
        panic!("a missing file loaded");
    };
    assert_eq!(errors.diagnostics.len(), 1);
    let d = &errors.diagnostics[0];
    assert_eq!((d.file.as_path(), d.line, d.column), (path, 0, 0));
    assert!(
        d.to_string()
            .starts_with("/nonexistent/sluice.toml:0:0: cannot read the config file")
    );
}

#[test]
fn defaults_are_applied() {
    let loaded = valid(
        r#"
[[pool]]
name = "p"
backend = [{ address = "::1", port = 8080 }]
[[service]]
name = "s"
vip = "192.0.2.1"
port = 80
protocol = "tcp"
[service.l7]
[[service.l7.virtual_host]]
name = "v"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = { path_prefix = "/" }
forward = { pool = "p" }
"#,
    );
    let config = loaded.config;
    assert_eq!(
        config.admin.listen,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9100)
    );
    assert_eq!(config.admin.metrics_path, "/metrics");
    let pool = &config.pools[0];
    assert_eq!(pool.policy, Policy::RoundRobin);
    assert_eq!(pool.upstream_protocol, UpstreamProtocol::Http1);
    assert_eq!(pool.connect_timeout, Duration::from_secs(1));
    assert_eq!(pool.panic_threshold, 50);
    assert_eq!(pool.when_no_healthy, WhenNoHealthy::FailOpen);
    assert_eq!(
        pool.health_check,
        HealthCheck {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            jitter_percent: 10,
        }
    );
    assert_eq!(pool.outlier_detection, None);
    assert_eq!(pool.backends[0].name, "[::1]:8080");
    assert_eq!(pool.backends[0].weight, 1);
    let ServiceKind::L7(l7) = &config.services[0].kind else {
        panic!("not l7");
    };
    assert!(l7.h2c && l7.access_log && l7.tls.is_none());
    assert_eq!(l7.limits.max_request_body_bytes, Some(10 * 1024 * 1024));
    assert_eq!(l7.limits.max_connections, 10_000);
    let route = &l7.virtual_hosts[0].routes[0];
    assert_eq!(route.timeout, Some(Duration::from_secs(15)));
    assert_eq!(route.stream_idle_timeout, None);
    assert_eq!(route.retry, None);
    assert_eq!(
        route.action,
        RouteAction::Forward(vec![WeightedPool {
            pool: PoolId(0),
            weight: 1
        }])
    );
}

#[test]
fn l4_service_resolves_its_pool_and_unused_pools_warn() {
    let loaded = valid(
        r#"
[[interface]]
name = "eth0"
[[pool]]
name = "unused"
backend = [{ address = "10.0.0.9", port = 80 }]
[[pool]]
name = "p"
backend = [{ address = "10.0.0.1", port = 53 }]
[[service]]
name = "dns"
vip = "192.0.2.1"
port = 53
protocol = "udp"
[service.l4]
mode = "dsr"
pool = "p"
maglev_table_size = 251
maglev_seed = 7
"#,
    );
    let l4 = L4Service {
        mode: ForwardingMode::Dsr,
        pool: PoolId(1),
        maglev_table_size: 251,
        maglev_seed: 7,
    };
    assert_eq!(loaded.config.services[0].kind, ServiceKind::L4(l4));
    assert_eq!(
        loaded.config.pool(PoolId(1)).map(|p| p.name.as_str()),
        Some("p")
    );
    let warnings: Vec<_> = loaded
        .warnings
        .iter()
        .map(|w| (w.line, w.column, w.message.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [(5, 8, "pool \"unused\": no service uses this pool")]
    );
}

#[test]
fn l7_routes_become_typed_values() {
    let loaded = valid(&rules::l7_route(
        r#"match = { path_regex = "/u/[0-9]+", methods = ["GET"], headers = [{ name = "X-User", regex = "a.*" }], query = [{ name = "q", present = false }] }
redirect = { scheme = "https", port = 8443 }
response_headers_add = { "X-Served-By" = "sluice" }
"#,
    ));
    let ServiceKind::L7(l7) = &loaded.config.services[0].kind else {
        panic!("not l7");
    };
    let route = &l7.virtual_hosts[0].routes[0];
    let PathMatch::Regex(re) = &route.matcher.path else {
        panic!("not a regex: {:?}", route.matcher.path);
    };
    assert!(re.0.is_match("/u/42") && !re.0.is_match("/u/42/x"));
    assert_eq!(route.matcher.methods, ["GET"]);
    assert_eq!(route.matcher.headers[0].name, "x-user");
    assert_eq!(route.matcher.query[0].condition, ValueCondition::Absent);
    assert_eq!(
        route.action,
        RouteAction::Redirect(Redirect {
            scheme: Some(Scheme::Https),
            host: None,
            port: Some(8443),
            path: None,
            status: 302,
        })
    );
    assert_eq!(
        route.response_headers_add,
        [("x-served-by".to_owned(), "sluice".to_owned())]
    );
    // `rules::l7_route`'s pool is used by no route here.
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn the_shipped_grpc_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grpc.toml");
    let loaded = match load(&path) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("config/grpc.toml does not validate:\n{errors}"),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let pool = &loaded.config.pools[0];
    assert_eq!(pool.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(
        pool.health_check.kind,
        HealthCheckKind::Grpc {
            service: "shop.Orders".into()
        }
    );
    let ServiceKind::L7(l7) = &loaded.config.services[0].kind else {
        panic!("the gRPC service is l7");
    };
    let routes = &l7.virtual_hosts[0].routes;
    assert_eq!(
        (routes[0].timeout, routes[0].stream_idle_timeout),
        (None, Some(Duration::from_secs(300)))
    );
    assert_eq!(routes[1].timeout, Some(Duration::from_secs(10)));
}
