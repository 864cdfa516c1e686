//! The edge settings of an l7 listener and pool (paths, forwarded headers, upgrades, circuit
//! breakers, per-client caps), the upper bound on durations, and certificate/key pairs that
//! must belong together.

use std::time::Duration;

use super::rules::{VHOST, l7_route, l7_service, pool};
use super::{errors, valid};
use crate::config::{EscapedSlashes, ServiceKind};

fn l7(config: &crate::config::Config) -> &crate::config::L7Service {
    match &config.services[0].kind {
        ServiceKind::L7(l7) => l7,
        ServiceKind::L4(_) => panic!("an l7 service"),
    }
}

#[test]
fn edge_settings_have_safe_defaults() {
    let loaded = valid(&l7_service("", VHOST));
    let l7 = l7(&loaded.config);
    assert_eq!(l7.paths.escaped_slashes, EscapedSlashes::Reject);
    assert!(l7.paths.merge_slashes);
    assert!(l7.forwarded.trusted_proxies.is_empty());
    assert_eq!(l7.forwarded.trusted_hops, 0);
    assert_eq!(l7.limits.send_timeout, Duration::from_secs(60));
    assert_eq!(l7.limits.tunnel_idle_timeout, Duration::from_secs(300));
    assert_eq!(l7.limits.max_connections_per_client, None);
    assert_eq!(l7.virtual_hosts[0].routes[0].upgrades, ["websocket"]);
    let pool = &loaded.config.pools[0];
    assert_eq!(pool.circuit_breakers.max_requests, 1024);
    assert_eq!(pool.circuit_breakers.max_retries, 3);
}

#[test]
fn edge_settings_are_read() {
    let text = l7_service(
        "limits = { send_timeout = \"5s\", max_connections_per_client = 8 }\n\
         paths = { escaped_slashes = \"decode\", merge_slashes = false }\n\
         forwarded = { trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"] }\n",
        VHOST,
    );
    let loaded = valid(&text);
    let l7 = l7(&loaded.config);
    assert_eq!(l7.paths.escaped_slashes, EscapedSlashes::Decode);
    assert!(!l7.paths.merge_slashes);
    assert_eq!(l7.limits.send_timeout, Duration::from_secs(5));
    assert_eq!(l7.limits.max_connections_per_client, Some(8));
    assert!(l7.forwarded.trusts("10.1.2.3".parse().expect("ip")));
    assert!(l7.forwarded.trusts("192.0.2.1".parse().expect("ip")));
    assert!(!l7.forwarded.trusts("192.0.2.2".parse().expect("ip")));
}

#[test]
fn bad_edge_settings_are_errors_where_they_are() {
    let errs = errors(&l7_service(
        "forwarded = { trusted_proxies = [\"10.0.0.0/33\"], trusted_hops = 1 }\n",
        VHOST,
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("10:33:") && errs[0].contains("not both"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("10:34:") && errs[1].contains("is not a CIDR"),
        "{errs:?}"
    );
    let errs = errors(&l7_service(
        "paths = { escaped_slashes = \"maybe\" }\n",
        VHOST,
    ));
    assert!(errs[0].starts_with("10:"), "{errs:?}");
    let errs = errors(&l7_route(
        "match = { path_prefix = \"/\" }\nforward = { pool = \"p\" }\nupgrades = [\"websocket\", \"h2c\", \"a b\"]\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("h2c is never tunnelled"), "{errs:?}");
    assert!(errs[1].contains("not a protocol name"), "{errs:?}");
    let errs = errors(&l7_route(
        "match = { path_prefix = \"/\" }\ndirect_response = { status = 200 }\nupgrades = []\n",
    ));
    assert!(
        errs[0].contains("only applies to forward routes"),
        "{errs:?}"
    );
}

#[test]
fn circuit_breakers_are_bounded() {
    let text = format!(
        "{}{}",
        pool("circuit_breakers = { max_requests = 0, max_pending_requests = -1 }"),
        "[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\nprotocol = \"tcp\"\n[service.l7]\n"
    ) + VHOST;
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("circuit_breakers.max_requests"))
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("circuit_breakers.max_pending_requests"))
    );
}

#[test]
fn durations_have_an_upper_bound() {
    let errs = errors(&l7_service(
        "limits = { idle_timeout = \"25h\", send_timeout = \"1000000000000s\" }\n",
        VHOST,
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    for e in &errs {
        assert!(e.contains("longer than the longest allowed, 1day"), "{e}");
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, body: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let site = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).expect("cert");
    let cert = write("site.crt", site.cert.pem());
    let good = write("site.key", site.signing_key.serialize_pem());
    let wrong = write("other.key", other.signing_key.serialize_pem());
    let text = |key: &std::path::Path| {
        format!(
            "[[certificate]]\nname = \"c\"\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let config = dir.path().join("sluice.toml");
    assert!(crate::config::parse(&text(&good), &config).is_ok());
    let Err(errs) = crate::config::parse(&text(&wrong), &config) else {
        panic!("a mismatched pair validated");
    };
    let message = errs.diagnostics[0].to_string();
    assert_eq!(errs.diagnostics[0].line, 4, "{message}");
    assert!(message.contains("does not match certificate"), "{message}");
}
