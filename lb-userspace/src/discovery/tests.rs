//! The discovery book's rules (failure keeps, empty follows `when_no_healthy`), the overlay
//! onto the file's config, and endpoints files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{Book, Event, Outcome, effective};
use crate::config::{self, Backend, Config, Discovery, WhenNoHealthy};
use crate::metrics::Metrics;

fn file_config(when_no_healthy: &str) -> Config {
    let text = format!(
        "[[pool]]\nname = \"app\"\nwhen_no_healthy = \"{when_no_healthy}\"\n\
         [pool.discovery]\nendpoints_file = \"app.json\"\n\
         [[service]]\nname = \"web\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"tcp\"\n\
         [service.l7]\n[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n"
    );
    config::parse(&text, Path::new("/etc/sluice/sluice.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn backend(last: u8, weight: u16) -> Backend {
    let address = SocketAddr::from(([10, 0, 0, last], 80));
    Backend {
        name: address.to_string(),
        address,
        weight,
    }
}

fn event(config: &Config, outcome: Outcome) -> Event {
    Event {
        pool: "app".into(),
        source: config.pools[0]
            .discovery
            .clone()
            .unwrap_or_else(|| panic!("discovered pool")),
        outcome,
    }
}

#[test]
fn a_discovered_pool_is_validated_without_backends_and_its_path_is_anchored() {
    let config = file_config("fail_open");
    assert!(config.pools[0].backends.is_empty());
    assert_eq!(
        config.pools[0].discovery,
        Some(Discovery::EndpointsFile("/etc/sluice/app.json".into()))
    );
}

#[test]
fn a_failure_keeps_the_last_set_and_is_counted() {
    let config = file_config("fail_open");
    let mut book = Book::new(&Metrics::new());
    assert!(book.record(event(&config, Outcome::Found(vec![backend(1, 1)])), &config));
    assert!(!book.record(event(&config, Outcome::Failed("timed out".into())), &config));
    assert_eq!(book.discovered()["app"], vec![backend(1, 1)]);
    let sources = book.sources(
        &effective(&config, book.discovered()),
        std::time::SystemTime::now(),
    );
    assert_eq!(sources[0].source, "endpoints_file");
    assert_eq!(sources[0].backends, 1);
    assert_eq!(sources[0].failures, 1);
    assert_eq!(sources[0].last_result.as_deref(), Some("failed"));
    assert_eq!(sources[0].last_error.as_deref(), Some("timed out"));
}

#[test]
fn an_empty_answer_follows_when_no_healthy() {
    for (policy, kept) in [("fail_open", true), ("refuse", false)] {
        let config = file_config(policy);
        assert_eq!(
            config.pools[0].when_no_healthy,
            if kept {
                WhenNoHealthy::FailOpen
            } else {
                WhenNoHealthy::Refuse
            }
        );
        let mut book = Book::new(&Metrics::new());
        book.record(event(&config, Outcome::Found(vec![backend(1, 1)])), &config);
        let changed = book.record(event(&config, Outcome::Empty), &config);
        assert_eq!(changed, !kept, "{policy}");
        assert_eq!(book.discovered()["app"].is_empty(), !kept, "{policy}");
    }
}

#[test]
fn the_same_answer_again_changes_nothing_and_a_reweight_does() {
    let config = file_config("fail_open");
    let mut book = Book::new(&Metrics::new());
    assert!(book.record(event(&config, Outcome::Found(vec![backend(1, 1)])), &config));
    assert!(!book.record(event(&config, Outcome::Found(vec![backend(1, 1)])), &config));
    assert!(book.record(event(&config, Outcome::Found(vec![backend(1, 5)])), &config));
}

#[test]
fn answers_from_a_source_the_config_dropped_are_ignored() {
    let config = file_config("fail_open");
    let mut book = Book::new(&Metrics::new());
    let stale = Event {
        pool: "app".into(),
        source: Discovery::EndpointsFile("/elsewhere.json".into()),
        outcome: Outcome::Found(vec![backend(1, 1)]),
    };
    assert!(!book.record(stale, &config));
    assert!(book.discovered().is_empty());
}

#[test]
fn the_overlay_fills_in_discovered_pools_only() {
    let config = file_config("fail_open");
    let mut discovered = BTreeMap::new();
    discovered.insert("app".to_string(), vec![backend(1, 1), backend(2, 3)]);
    let applied = effective(&config, &discovered);
    assert_eq!(
        applied.pools[0].backends,
        vec![backend(1, 1), backend(2, 3)]
    );
    assert_eq!(
        effective(&config, &BTreeMap::new()).pools[0].backends,
        Vec::new()
    );
}

#[test]
fn endpoints_files_in_toml_and_json_read_the_same() {
    let toml = "[[backend]]\naddress = \"10.0.0.1\"\nport = 80\n\
                [[backend]]\naddress = \"10.0.0.2\"\nport = 80\nweight = 3\n";
    let json = r#"{"backend": [{"address": "10.0.0.1", "port": 80},
                  {"address": "10.0.0.2", "port": 80, "weight": 3}]}"#;
    let want = vec![backend(1, 1), backend(2, 3)];
    assert_eq!(
        config::endpoints::parse(toml, Path::new("e.toml")),
        Ok(want.clone())
    );
    assert_eq!(
        config::endpoints::parse(json, Path::new("e.json")),
        Ok(want)
    );
}

#[test]
fn a_malformed_endpoints_file_is_rejected_at_its_line_and_column() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "e.toml",
            "[[backend]]\naddress = \"10.0.0.1\"\nport = 0\n",
            "e.toml:3:8: endpoints, backend \"10.0.0.1:0\": port",
        ),
        (
            "e.toml",
            "[[backend]]\naddress = \"10.0.0.1\nport = 80\n",
            "e.toml:2:",
        ),
        (
            "e.toml",
            "[[backend]]\naddress = \"10.0.0.1\"\nport = 80\ncolour = 1\n",
            "e.toml:4:1: unknown field `colour`",
        ),
        (
            "e.json",
            "{\"backend\": [\n  {\"address\": \"10.0.0.300\", \"port\": 80}]}",
            "e.json:2:",
        ),
        (
            "e.json",
            "{\"backend\": [\n  {\"address\": \"10.0.0.1\", \"port\": 80, \"weight\": 0}]}",
            "weight 0 is out of range",
        ),
    ];
    for (file, text, want) in cases {
        let errors = config::endpoints::parse(text, Path::new(file))
            .err()
            .unwrap_or_else(|| panic!("{file} {text:?} accepted"));
        let shown = errors.to_string();
        assert!(shown.contains(want), "{text:?}: {shown}");
    }
}

#[test]
fn a_repeated_address_in_an_endpoints_file_is_rejected() {
    let toml = "[[backend]]\naddress = \"10.0.0.1\"\nport = 80\n[[backend]]\naddress = \"10.0.0.1\"\nport = 80\n";
    let shown = config::endpoints::parse(toml, Path::new("e.toml"))
        .err()
        .unwrap_or_else(|| panic!("accepted"))
        .to_string();
    assert!(
        shown.starts_with("e.toml:4:1: endpoints: backend \"10.0.0.1:80\" repeats"),
        "{shown}"
    );
}

#[test]
fn dns_discovery_is_validated_with_its_defaults() {
    let base = "[[pool]]\nname = \"app\"\n[pool.discovery.dns]\n";
    let ok = config::parse(
        &format!("{base}name = \"_http._tcp.app.test.\"\nrecord = \"srv\"\nservers = [\"127.0.0.1:5353\"]\n"),
        Path::new("s.toml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(Discovery::Dns(dns)) = &ok.config.pools[0].discovery else {
        panic!("dns discovery");
    };
    assert_eq!(dns.min_ttl, Duration::from_secs(5));
    assert_eq!(dns.max_ttl, Duration::from_secs(300));
    assert_eq!(dns.servers, vec![SocketAddr::from(([127, 0, 0, 1], 5353))]);
    let bad = [
        (
            "name = \"app.test\"\n",
            "4:8: pool \"app\": discovery.dns.port is required",
        ),
        (
            "name = \"app.test\"\nrecord = \"srv\"\nport = 80\n",
            "6:8: pool \"app\": discovery.dns.port does not apply",
        ),
        (
            "name = \"app.test\"\nport = 80\nmin_ttl = \"10s\"\nmax_ttl = \"1s\"\n",
            "7:11: pool \"app\": discovery.dns.max_ttl (1s) is shorter than min_ttl (10s)",
        ),
        (
            "name = \"app test\"\nport = 80\n",
            "4:8: pool \"app\": discovery.dns.name \"app test\" is not a DNS name",
        ),
        (
            "name = \"a.test\"\nport = 80\nservers = [\"nowhere\"]\n",
            "6:12: pool \"app\": discovery.dns.servers: \"nowhere\" is not an IP address",
        ),
    ];
    for (body, want) in bad {
        let errors = config::parse(&format!("{base}{body}"), Path::new("s.toml"))
            .err()
            .unwrap_or_else(|| panic!("{body:?} accepted"))
            .to_string();
        assert!(errors.contains(want), "{body:?}: {errors}");
    }
    let both = config::parse(
        "[[pool]]\nname = \"app\"\n[pool.discovery]\nendpoints_file = \"x.json\"\n[[pool.backend]]\naddress = \"10.0.0.1\"\nport = 80\n",
        Path::new("s.toml"),
    )
    .err()
    .unwrap_or_else(|| panic!("backends and discovery accepted"))
    .to_string();
    assert!(
        both.contains("remove the [[pool.backend]] entries"),
        "{both}"
    );
}

#[test]
fn the_shipped_discovery_example_and_its_endpoints_file_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let loaded = config::load(&dir.join("discovery.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings, Vec::new(), "no warnings");
    let discovered = loaded
        .config
        .pools
        .iter()
        .filter(|p| p.discovery.is_some())
        .count();
    assert_eq!(discovered, 3);
    let backends = config::endpoints::load(&dir.join("discovery-endpoints.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(backends.len(), 2);
}

#[test]
fn the_readme_discovery_examples_are_valid() {
    const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/README.md"));
    let section = README
        .split_once("### `[pool.discovery]`")
        .map_or("", |(_, rest)| rest)
        .split("\n### ")
        .next()
        .unwrap_or_default();
    let blocks = |lang: &str| -> Vec<String> {
        section
            .split(&format!("```{lang}\n"))
            .skip(1)
            .filter_map(|b| b.split_once("```").map(|(body, _)| body.to_owned()))
            .collect()
    };
    let (toml, json) = (blocks("toml"), blocks("json"));
    assert_eq!((toml.len(), json.len()), (2, 1), "the section's examples");
    let loaded =
        config::parse(&toml[0], Path::new("config/sluice.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.pools.len(), 3);
    let from_toml =
        config::endpoints::parse(&toml[1], Path::new("e.toml")).unwrap_or_else(|e| panic!("{e}"));
    let from_json =
        config::endpoints::parse(&json[0], Path::new("e.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_toml[0].address, from_json[0].address);
    assert_eq!(from_toml[0].weight, 2);
}
