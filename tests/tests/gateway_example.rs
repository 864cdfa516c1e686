//! `config/gateway.toml` as shipped: `sluice check-config` accepts it, and the agent runs it
//! (its addresses moved onto the lab's loopback and its key files named by absolute path,
//! nothing else changed) in front of real backends: the health route, CORS for the web front
//! end, JWT users with an authorization policy, partners with API keys, and the per-principal
//! rate limit, over HTTP/1.1 and HTTP/2.

mod l7_support;

use std::path::Path;

use jsonwebtoken::Algorithm;
use l7_support::client::{H1, H2, get, request, with_headers};
use l7_support::{Backend, Lab, Mode, local};
use sluice_tests::{privileged, sluice_cli, tokens};

const HOST: &str = "api.example.com";
const FRONT_END: &str = "https://app.example.com";
const ACME: &str = "acme-example-key-4f1d2c9b7a6e5d30";
const GLOBEX: &str = "globex-example-key-8b2e7c1f0a9d4e63";

/// `text` with `from` replaced by `to`; the example must still contain `from`.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "config/gateway.toml no longer has {from:?}"
    );
    text.replace(from, to)
}

#[test]
fn the_shipped_gateway_example_checks_and_runs() {
    if !privileged() {
        return;
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let example = shipped.join("gateway.toml");
    let mut lab = Lab::new();
    let example_arg = example.display().to_string();
    let (ok, out) = sluice_cli(&lab.ns, &["check-config", &example_arg]);
    assert!(ok, "check-config refused config/gateway.toml:\n{out}");

    // The identity provider's key is made here (the shipped JWKS has only a public key).
    let files = tempfile::tempdir().expect("temp dir");
    let idp = tokens::ec("idp-test", false);
    let jwks = files.path().join("jwks.json");
    std::fs::write(&jwks, tokens::jwks(&[&idp])).expect("write the JWKS");
    let text = std::fs::read_to_string(&example).expect("read config/gateway.toml");
    let mut text = replaced(
        &text,
        "vip = \"192.0.2.10\"\nport = 80\n",
        "vip = \"127.0.0.1\"\nport = 8080\n",
    );
    for (from, port) in [
        ("10.0.1.11", 9001),
        ("10.0.1.12", 9002),
        ("10.0.2.11", 9003),
    ] {
        text = replaced(
            &text,
            &format!("address = \"{from}\"\nport = 8080\n"),
            &format!("address = \"127.0.0.1\"\nport = {port}\n"),
        );
    }
    let text = replaced(
        &text,
        "\"gateway-jwks.json\"",
        &format!("{:?}", jwks.display()),
    );
    let keys = shipped.join("gateway-partner-keys.txt");
    let text = replaced(
        &text,
        "\"gateway-partner-keys.txt\"",
        &format!("{:?}", keys.display()),
    );

    let orders = [
        Backend::start(&lab.ns, "orders-1", local(9001), Mode::Echo),
        Backend::start(&lab.ns, "orders-2", local(9002), Mode::Echo),
    ];
    let feed = Backend::start(&lab.ns, "feed-1", local(9003), Mode::Echo);
    lab.start(&text);
    let listen = local(8080);

    let claims = |sub: &str, roles: &[&str]| {
        let mut c = serde_json::json!({"sub": sub, "iss": "https://idp.example.com",
            "aud": "orders-api", "exp": tokens::now() + 600, "email": format!("{sub}@example.com")});
        c["roles"] = serde_json::json!(roles);
        c
    };
    let reader = tokens::token(&idp, Algorithm::ES256, &claims("rita", &["reader"]));
    let admin = tokens::token(&idp, Algorithm::ES256, &claims("adam", &["admin"]));
    let user = |method: &str, token: &str| {
        with_headers(
            request(method, HOST, "/api/orders", ""),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("origin", FRONT_END),
            ],
        )
    };
    let partner = |key: &str| with_headers(get(HOST, "/partners/feed"), &[("x-api-key", key)]);
    let preflight = with_headers(
        request("OPTIONS", HOST, "/api/orders", ""),
        &[
            ("origin", FRONT_END),
            ("access-control-request-method", "PUT"),
        ],
    );
    let (replies, burst, globex_after) = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let replies = vec![
            (
                "health",
                h1.send(get(HOST, "/healthz")).await.expect("reply"),
            ),
            ("preflight", h2.send(preflight).await.expect("reply")),
            (
                "no token",
                h1.send(with_headers(
                    get(HOST, "/api/orders"),
                    &[("origin", FRONT_END)],
                ))
                .await
                .expect("reply"),
            ),
            (
                "reader reads",
                h2.send(user("GET", &reader)).await.expect("reply"),
            ),
            (
                "reader writes",
                h1.send(user("PUT", &reader)).await.expect("reply"),
            ),
            (
                "admin writes",
                h2.send(user("PUT", &admin)).await.expect("reply"),
            ),
            ("partner", h1.send(partner(ACME)).await.expect("reply")),
            (
                "no key",
                h2.send(get(HOST, "/partners/feed")).await.expect("reply"),
            ),
        ];
        // acme spends its burst of 30 (it used one above) faster than 10 a second refill.
        let mut burst = Vec::new();
        for i in 0..60 {
            let reply = if i % 2 == 0 {
                h1.send(partner(ACME)).await
            } else {
                h2.send(partner(ACME)).await
            };
            burst.push(reply.expect("reply").status.as_u16());
        }
        let globex_after = h1
            .send(partner(GLOBEX))
            .await
            .expect("reply")
            .status
            .as_u16();
        (replies, burst, globex_after)
    });
    let reply = |what: &str| {
        &replies
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("no reply {what}"))
            .1
    };
    assert_eq!(reply("health").status, 200);
    assert_eq!(reply("health").text(), "ok\n");
    assert_eq!(reply("preflight").status, 204);
    assert_eq!(
        reply("preflight").header("access-control-allow-origin"),
        FRONT_END
    );
    assert_eq!(reply("no token").status, 401);
    assert_eq!(
        reply("no token").header("access-control-allow-origin"),
        FRONT_END,
        "the front end can read its 401"
    );
    assert_eq!(reply("reader reads").status, 200);
    assert_eq!(
        reply("reader reads").header("access-control-allow-origin"),
        FRONT_END
    );
    assert!(!reply("reader reads").header("x-request-id").is_empty());
    assert_eq!(reply("reader writes").status, 403);
    assert_eq!(reply("admin writes").status, 200);
    assert_eq!(reply("partner").status, 200);
    assert_eq!(reply("no key").status, 401);
    assert!(burst.contains(&429), "acme's burst ran out: {burst:?}");
    assert!(
        burst.iter().take(25).all(|s| *s == 200),
        "the first 25 fit the burst: {burst:?}"
    );
    assert_eq!(globex_after, 200, "the limit is per partner");

    // The pools' health probes (GET /healthz, at their own pace) are not the routes' doing.
    let routed = |b: &Backend| -> Vec<_> {
        b.seen()
            .into_iter()
            .filter(|s| s.path != "/healthz")
            .collect()
    };
    let at_orders: Vec<_> = orders.iter().flat_map(routed).collect();
    assert_eq!(at_orders.len(), 2, "the reader's GET and the admin's PUT");
    assert!(at_orders.iter().any(|s| s.header("x-user-id") == "rita"));
    assert!(
        at_orders
            .iter()
            .any(|s| s.header("x-user-email") == "adam@example.com")
    );
    let at_feed = routed(&feed);
    assert!(at_feed.len() >= 27, "{} partner requests", at_feed.len());
    assert!(
        at_feed.iter().all(|s| s.header("x-api-key").is_empty()),
        "keys never reach the feed"
    );
    lab.stop();
}
