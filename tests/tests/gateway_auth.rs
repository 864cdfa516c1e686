//! Authentication and authorization filters end to end: real clients (HTTP/1.1 and HTTP/2)
//! through the agent to a recording backend. `api_key`: keys from a file, presented in a
//! header or the query, removed before the request goes on, the key's name the principal a
//! rate limit counts by, the file reloaded with the config.

mod l7_support;

use std::path::Path;
use std::time::Duration;

use l7_support::client::{H1, H2, Reply, Req, bearer, get, with_header};
use l7_support::{Backend, Lab, Mode, forward_all, gateway_lab, local, pool, service};
use sluice_tests::{eventually, privileged};

const ACME_KEY: &str = "acme-0123456789abcdef";
const GLOBEX_KEY: &str = "globex-0123456789abcdef";
const INITECH_KEY: &str = "initech-0123456789abcdef";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn api_keys_identify_partners_and_never_reach_the_backend() {
    if !privileged() {
        return;
    }
    let files = tempfile::tempdir().expect("temp dir");
    let keys = files.path().join("keys.txt");
    write(
        &keys,
        &format!("# partners\nacme {ACME_KEY}\n\nglobex {GLOBEX_KEY}\n"),
    );
    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        "{}{}[[service.l7.filter]]\nname = \"keys\"\n\
         api_key = {{ keys_file = {:?}, header = \"x-api-key\", query = \"api_key\" }}\n\
         [[service.l7.filter]]\nname = \"per-partner\"\n\
         rate_limit = {{ rate = 2, per = \"1h\", key = \"principal\" }}\n{}",
        pool("app", &[&app], &[], ""),
        service("gw", listen, ""),
        keys.display(),
        forward_all("app")
    );
    lab.start(&config);
    let host = "gw.test";
    let replies: Vec<(&str, Reply)> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let key = |k: &str| with_header(get(host, "/orders"), "x-api-key", k);
        vec![
            ("none", h1.send(get(host, "/orders")).await.expect("reply")),
            (
                "wrong",
                h2.send(key("acme-0123456789abcdeX")).await.expect("reply"),
            ),
            ("acme 1", h1.send(key(ACME_KEY)).await.expect("reply")),
            (
                "globex query",
                h2.send(get(host, &format!("/q?a=1&api_key={GLOBEX_KEY}&b=2")))
                    .await
                    .expect("reply"),
            ),
            ("acme 2", h2.send(key(ACME_KEY)).await.expect("reply")),
            ("acme 3", h1.send(key(ACME_KEY)).await.expect("reply")),
            ("globex 2", h1.send(key(GLOBEX_KEY)).await.expect("reply")),
        ]
    });
    let status = |what: &str| {
        replies
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("no reply {what}"))
            .1
            .status
            .as_u16()
    };
    assert_eq!(status("none"), 401);
    assert_eq!(status("wrong"), 401);
    assert_eq!(status("acme 1"), 200);
    assert_eq!(status("globex query"), 200);
    assert_eq!(status("acme 2"), 200);
    // The limit counts per key name, not per client address (all came from one address).
    assert_eq!(
        status("acme 3"),
        429,
        "acme's third request is over its limit"
    );
    assert_eq!(status("globex 2"), 200, "globex has its own bucket");

    let seen = app.seen();
    assert_eq!(seen.len(), 4, "refused requests never reach the backend");
    for request in &seen {
        assert!(
            request.header("x-api-key").is_empty(),
            "the key header is removed: {request:?}"
        );
        assert!(!request.path.contains("api_key"), "{}", request.path);
    }
    assert_eq!(seen[1].path, "/q?a=1&b=2", "the query key is cut out");

    assert_eq!(lab.filter_decisions("keys", "api_key", "allow", ""), 5.0);
    assert_eq!(
        lab.filter_decisions("keys", "api_key", "deny", "missing_key"),
        1.0
    );
    assert_eq!(
        lab.filter_decisions("keys", "api_key", "deny", "unknown_key"),
        1.0
    );
    let log = eventually(Duration::from_secs(10), || {
        let log = lab.log();
        let lines = log.lines().filter(|l| l.contains("sluice::access")).count();
        if lines >= 7 {
            Ok(log)
        } else {
            Err(format!("{lines} access lines; log:\n{log}"))
        }
    });
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sluice::access"))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("status=401") && l.contains("filters=keys:missing_key")),
        "{access:#?}"
    );
    assert!(
        access.iter().any(|l| l.contains("principal=\"globex\"")
            && l.contains("/q?a=1&b=2")
            && l.contains("filters=keys:allow,per-partner:allow")),
        "{access:#?}"
    );
    assert!(
        !log.contains(GLOBEX_KEY) && !log.contains(ACME_KEY),
        "a key was logged"
    );

    // A changed keys file takes effect with the reload; the rate limit's buckets stay.
    write(
        &keys,
        &format!("initech {INITECH_KEY}\nglobex {GLOBEX_KEY}\n"),
    );
    assert!(lab.reload(&config), "reload applied");
    // A bad keys file rejects the reload, pointing at its line; the running keys stay.
    write(&keys, &format!("initech {INITECH_KEY}\nglobex\n"));
    assert!(!lab.reload(&config), "a bad keys file is refused");
    let expected = format!("{}:2: expected `name key`", keys.display());
    assert!(lab.log().contains(&expected), "{}", lab.log());
    let after: Vec<u16> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut out = Vec::new();
        for k in [ACME_KEY, INITECH_KEY, GLOBEX_KEY] {
            let req = with_header(get(host, "/"), "x-api-key", k);
            out.push(h1.send(req).await.expect("reply").status.as_u16());
        }
        out
    });
    assert_eq!(
        after,
        [401, 200, 429],
        "acme's key is gone, initech's accepted, globex's spent bucket kept"
    );
    lab.stop();
}

use sluice_tests::tokens as keys;

/// A `jwt` filter named `auth` over `keys` (`jwks_file = "..."` or `jwks_url = ...`), and
/// a catch-all route.
fn jwt_config(app: &Backend, listen: std::net::SocketAddr, keys: &str) -> String {
    format!(
        "{}{}[[service.l7.filter]]\nname = \"auth\"\n[service.l7.filter.jwt]\n{keys}\n\
         issuer = \"https://idp.test\"\naudiences = [\"orders\"]\nleeway = \"5s\"\n\
         cookie = \"session\"\nforward_claims = {{ sub = \"x-user\", email = \"x-user-email\" }}\n{}",
        pool("app", &[app], &[], ""),
        service("gw", listen, ""),
        forward_all("app")
    )
}

#[test]
fn jwt_accepts_signed_tokens_and_refuses_every_forgery() {
    if !privileged() || !sluice_tests::required_tool("openssl", "openssl") {
        return;
    }
    use jsonwebtoken::Algorithm;
    let files = tempfile::tempdir().expect("temp dir");
    let rsa = keys::rsa("rsa-1", files.path());
    let p256 = keys::ec("ec-256", false);
    let p384 = keys::ec("ec-384", true);
    let ed = keys::ed25519("ed-1");
    let stranger = keys::ec("ec-256", false);
    let jwks = files.path().join("jwks.json");
    write(&jwks, &keys::jwks(&[&rsa, &p256, &p384, &ed]));

    let (mut lab, app, listen) = gateway_lab();
    let config = jwt_config(&app, listen, &format!("jwks_file = {:?}", jwks.display()));
    lab.start(&config);

    let alice = keys::claims("alice");
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = keys::claims("alice");
        change(&mut c);
        c
    };
    let valid = vec![
        ("RS256", keys::token(&rsa, Algorithm::RS256, &alice)),
        ("RS384", keys::token(&rsa, Algorithm::RS384, &alice)),
        ("RS512", keys::token(&rsa, Algorithm::RS512, &alice)),
        ("PS256", keys::token(&rsa, Algorithm::PS256, &alice)),
        ("ES256", keys::token(&p256, Algorithm::ES256, &alice)),
        ("ES384", keys::token(&p384, Algorithm::ES384, &alice)),
        ("EdDSA", keys::token(&ed, Algorithm::EdDSA, &alice)),
        (
            "within leeway",
            keys::token(
                &rsa,
                Algorithm::RS256,
                &with(&|c| c["exp"] = (keys::now() - 2).into()),
            ),
        ),
    ];
    let rs = |c: &serde_json::Value| keys::token(&rsa, Algorithm::RS256, c);
    let forged = vec![
        (
            "expired",
            rs(&with(&|c| c["exp"] = (keys::now() - 60).into())),
            "expired",
        ),
        (
            "not yet valid",
            rs(&with(&|c| c["nbf"] = (keys::now() + 600).into())),
            "not_yet_valid",
        ),
        (
            "wrong aud",
            rs(&with(&|c| c["aud"] = "billing".into())),
            "wrong_audience",
        ),
        (
            "wrong iss",
            rs(&with(&|c| c["iss"] = "https://evil.test".into())),
            "wrong_issuer",
        ),
        (
            "no exp",
            rs(&with(&|c| {
                c.as_object_mut().map(|o| o.remove("exp"));
            })),
            "missing_claim",
        ),
        (
            "tampered",
            keys::tampered(&rs(&alice), &keys::claims("admin")),
            "bad_signature",
        ),
        ("alg none", keys::unsigned("rsa-1", &alice), "alg_refused"),
        (
            "HS256 with the public key",
            keys::hmac_with_public_key(&rsa, &alice),
            "alg_refused",
        ),
        (
            "RS256 header on an EC key",
            {
                let t = keys::token(&rsa, Algorithm::RS256, &alice);
                let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
                header.kid = Some("ec-256".into());
                let head = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    serde_json::to_vec(&header).expect("json"),
                );
                format!("{head}.{}", t.split_once('.').map_or("", |(_, rest)| rest))
            },
            "alg_refused",
        ),
        (
            "unknown kid",
            {
                let mut s = keys::ec("nobody", false);
                s.kid = "nobody".into();
                keys::token(&s, Algorithm::ES256, &alice)
            },
            "unknown_kid",
        ),
        (
            "foreign key, known kid",
            keys::token(&stranger, Algorithm::ES256, &alice),
            "bad_signature",
        ),
        ("garbage", "not.a.token".to_owned(), "malformed"),
    ];
    let forged_count = forged.len();
    let (ok, refused, missing, by_cookie) = {
        let valid = valid.clone();
        let forged: Vec<(&'static str, String)> =
            forged.iter().map(|(w, t, _)| (*w, t.clone())).collect();
        lab.run(async move {
            let mut h1 = H1::connect(listen).await.expect("connect");
            let mut h2 = H2::connect(listen).await.expect("h2c");
            let mut ok = Vec::new();
            for (i, (what, token)) in valid.iter().enumerate() {
                let req = with_header(bearer("/v", token), "x-user", "mallory");
                let reply = if i % 2 == 0 {
                    h1.send(req).await
                } else {
                    h2.send(req).await
                };
                ok.push((*what, reply.expect("reply")));
            }
            let mut refused = Vec::new();
            for (i, (what, token)) in forged.iter().enumerate() {
                let req = bearer("/f", token);
                let reply = if i % 2 == 0 {
                    h2.send(req).await
                } else {
                    h1.send(req).await
                };
                refused.push((*what, reply.expect("reply")));
            }
            let missing = h1.send(get("gw.test", "/none")).await.expect("reply");
            let cookie = with_header(
                get("gw.test", "/cookie"),
                "cookie",
                &format!("theme=dark; session={}", valid[4].1),
            );
            let by_cookie = h2.send(cookie).await.expect("reply");
            (ok, refused, missing, by_cookie)
        })
    };
    for (what, reply) in &ok {
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    }
    assert_eq!(by_cookie.status, 200, "a token in the cookie");
    for ((what, reply), (_, _, reason)) in refused.iter().zip(&forged) {
        assert_eq!(reply.status, 401, "{what}");
        let challenge = reply.header("www-authenticate");
        assert!(
            challenge.starts_with("Bearer realm=\"auth\", error=\"invalid_token\"")
                && challenge.contains(&format!("error_description=\"{reason}\"")),
            "{what}: {challenge:?}"
        );
    }
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), "Bearer realm=\"auth\"");

    let seen = app.seen();
    assert_eq!(
        seen.len(),
        valid.len() + 1,
        "refused tokens never reach the backend"
    );
    for request in &seen {
        assert_eq!(
            request.header("x-user"),
            "alice",
            "the claim replaces a client's copy"
        );
        assert_eq!(request.header("x-user-email"), "alice@example.test");
    }
    let denied = |reason: &str| lab.filter_decisions("auth", "jwt", "deny", reason);
    assert_eq!(
        lab.filter_decisions("auth", "jwt", "allow", ""),
        (valid.len() + 1) as f64
    );
    assert_eq!(denied("alg_refused"), 3.0);
    assert_eq!(denied("bad_signature"), 2.0);
    assert_eq!(denied("missing_token"), 1.0);
    let total: f64 = forged
        .iter()
        .map(|(_, _, r)| *r)
        .collect::<std::collections::BTreeSet<_>>()
        .iter()
        .map(|r| denied(r))
        .sum();
    assert_eq!(total, forged_count as f64);
    let log = eventually(Duration::from_secs(10), || {
        let log = lab.log();
        if log.contains("principal=\"alice\"") {
            Ok(log)
        } else {
            Err(format!("no access line with the principal; log:\n{log}"))
        }
    });
    assert!(log.contains("filters=auth:expired"), "decisions are logged");

    // Rotation by file: the reload brings the new key and drops the old one.
    let rsa2 = keys::rsa("rsa-2", files.path());
    write(&jwks, &keys::jwks(&[&rsa2, &p256]));
    assert!(lab.reload(&config), "reload applied");
    let old = keys::token(&rsa, Algorithm::RS256, &alice);
    let new = keys::token(&rsa2, Algorithm::RS256, &alice);
    let statuses: Vec<u16> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut out = Vec::new();
        for token in [old, new] {
            out.push(
                h1.send(bearer("/", &token))
                    .await
                    .expect("reply")
                    .status
                    .as_u16(),
            );
        }
        out
    });
    assert_eq!(
        statuses,
        [401, 200],
        "the old key is gone, the new one verifies"
    );
    lab.stop();
}

/// A tiny HTTP server answering every request with the current `body`; counts requests.
fn jwks_server(
    lab: &Lab,
    addr: std::net::SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
) -> sluice_tests::NsTask<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bound = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready = bound.clone();
    let task = lab.ns.spawn_task(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the JWKS server");
        ready.wait();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.lock().map(|b| b.clone()).unwrap_or_default();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if body.is_empty() {
                    ("503 Service Unavailable", String::new())
                } else {
                    ("200 OK", body)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    bound.wait();
    task
}

#[test]
fn jwt_keys_from_a_url_rotate_and_survive_its_outage() {
    if !privileged() || !sluice_tests::required_tool("openssl", "openssl") {
        return;
    }
    use jsonwebtoken::Algorithm;
    let first = keys::ec("k1", false);
    let second = keys::ed25519("k2");
    let body = std::sync::Arc::new(std::sync::Mutex::new(keys::jwks(&[&first])));
    let mut lab = Lab::new();
    let server = jwks_server(&lab, local(9300), body.clone());
    let app = Backend::start(&lab.ns, "app-1", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = jwt_config(
        &app,
        listen,
        "jwks_url = \"http://127.0.0.1:9300/jwks.json\"\njwks_refresh = \"1s\"",
    );
    lab.start(&config);
    let alice = keys::claims("alice");
    let one = keys::token(&first, Algorithm::ES256, &alice);
    let two = keys::token(&second, Algorithm::EdDSA, &alice);
    let status = |lab: &Lab, token: &str| -> u16 {
        let req = bearer("/", token);
        lab.run(async move {
            let mut h2 = H2::connect(listen).await.expect("h2c");
            h2.send(req).await.expect("reply").status.as_u16()
        })
    };
    eventually(Duration::from_secs(10), || match status(&lab, &one) {
        200 => Ok(()),
        other => Err(format!("k1 token answered {other}")),
    });
    assert_eq!(status(&lab, &two), 401, "k2 is not published yet");

    // The server publishes k2 in place of k1: the next refresh follows.
    if let Ok(mut b) = body.lock() {
        *b = keys::jwks(&[&second]);
    }
    eventually(Duration::from_secs(10), || match status(&lab, &two) {
        200 => Ok(()),
        other => Err(format!("k2 token answered {other}")),
    });
    assert_eq!(status(&lab, &one), 401, "k1 was withdrawn");

    // The server fails: the last good keys stay, and the failures are counted.
    if let Ok(mut b) = body.lock() {
        b.clear();
    }
    let failures = "sluice_l7_filter_events_total{service=\"gw\",filter=\"auth\",type=\"jwt\",event=\"jwks_fetch_failed\"}";
    eventually(Duration::from_secs(15), || match lab.metric(failures) {
        n if n >= 2.0 => Ok(()),
        n => Err(format!("{n} failed fetches")),
    });
    assert_eq!(status(&lab, &two), 200, "the last good key set is kept");
    assert!(
        lab.log().contains("JWKS fetch failed"),
        "the failure is logged"
    );
    assert!(
        lab.metric("sluice_l7_filter_events_total{service=\"gw\",filter=\"auth\",type=\"jwt\",event=\"jwks_fetched\"}") >= 2.0
    );
    drop(server);
    lab.stop();
}

#[test]
fn a_remembered_token_is_refused_once_it_expires() {
    if !privileged() {
        return;
    }
    use jsonwebtoken::Algorithm;
    let files = tempfile::tempdir().expect("temp dir");
    let key = keys::ec("k1", false);
    let jwks = files.path().join("jwks.json");
    write(&jwks, &keys::jwks(&[&key]));
    let (mut lab, app, listen) = gateway_lab();
    let config = jwt_config(&app, listen, &format!("jwks_file = {:?}", jwks.display()));
    lab.start(&config);
    // Valid for 2 s, plus the filter's 5 s leeway.
    let exp = keys::now() + 2;
    let mut claims = keys::claims("alice");
    claims["exp"] = exp.into();
    let token = keys::token(&key, Algorithm::ES256, &claims);
    let answer = |lab: &Lab| {
        let req = bearer("/", &token);
        lab.run(async move {
            let mut h1 = H1::connect(listen).await.expect("connect");
            let reply = h1.send(req).await.expect("reply");
            let challenge = reply
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (reply.status.as_u16(), challenge)
        })
    };
    // The second request finds the token verified already.
    assert_eq!(answer(&lab).0, 200);
    assert_eq!(answer(&lab).0, 200);
    while keys::now() <= exp + 5 {
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, challenge) = answer(&lab);
    assert_eq!(
        status, 401,
        "an expired token is refused, verified before or not"
    );
    assert!(challenge.contains("expired"), "{challenge}");
    lab.stop();
}

/// An HTTP/1.1 connection from source address `from`.
async fn h1_from(from: std::net::IpAddr, to: std::net::SocketAddr) -> H1 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("bind the source address");
    let stream = socket.connect(to).await.expect("connect");
    H1::over(stream).await.expect("http/1.1")
}

#[test]
fn authz_rules_decide_on_principal_claims_method_path_and_client() {
    if !privileged() {
        return;
    }
    use jsonwebtoken::Algorithm;
    let files = tempfile::tempdir().expect("temp dir");
    let signer = keys::ec("ec-1", false);
    let jwks = files.path().join("jwks.json");
    write(&jwks, &keys::jwks(&[&signer]));
    let api_keys = files.path().join("keys.txt");
    write(
        &api_keys,
        &format!("acme {ACME_KEY}\nglobex {GLOBEX_KEY}\n"),
    );

    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        r#"{}{}
[[service.l7.filter]]
name = "partners"
enabled = false
api_key = {{ keys_file = {:?} }}
[[service.l7.filter]]
name = "users"
enabled = false
jwt = {{ jwks_file = {:?}, issuer = "https://idp.test", audiences = ["orders"] }}
[[service.l7.filter]]
name = "policy"
[service.l7.filter.authz]
default = "deny"
[[service.l7.filter.authz.rule]]
action = "allow"
path_prefix = "/public/"
[[service.l7.filter.authz.rule]]
action = "deny"
client_cidrs = ["127.0.0.2/32"]
[[service.l7.filter.authz.rule]]
action = "allow"
claims = {{ roles = "admin" }}
[[service.l7.filter.authz.rule]]
action = "allow"
claims = {{ roles = "reader" }}
methods = ["GET", "HEAD"]
path_prefix = "/api/"
[[service.l7.filter.authz.rule]]
action = "allow"
principals = ["acme"]
path = "/partner/orders"
[[service.l7.virtual_host]]
name = "all"
domains = ["*"]
[[service.l7.virtual_host.route]]
match = {{ path_prefix = "/api/" }}
forward = {{ pool = "app" }}
filters = ["users", "policy"]
[[service.l7.virtual_host.route]]
match = {{ path_prefix = "/partner/" }}
forward = {{ pool = "app" }}
filters = ["partners", "policy"]
[[service.l7.virtual_host.route]]
match = {{ path_prefix = "/" }}
forward = {{ pool = "app" }}
"#,
        pool("app", &[&app], &[], ""),
        service("gw", listen, ""),
        api_keys.display(),
        jwks.display(),
    );
    lab.start(&config);
    let reader = keys::token(&signer, Algorithm::ES256, &keys::claims("rita"));
    let mut admin_claims = keys::claims("adam");
    admin_claims["roles"] = serde_json::json!(["reader", "admin"]);
    let admin = keys::token(&signer, Algorithm::ES256, &admin_claims);
    let post = |path: &str, token: &str| {
        with_header(
            l7_support::client::request("POST", "gw.test", path, "{}"),
            "authorization",
            &format!("Bearer {token}"),
        )
    };
    let key = |path: &str, k: &str| with_header(get("gw.test", path), "x-api-key", k);
    let cases: Vec<(&str, Req, u16)> = vec![
        ("public, anyone", get("gw.test", "/public/doc"), 200),
        ("reader reads", bearer("/api/orders", &reader), 200),
        ("reader writes", post("/api/orders", &reader), 403),
        ("admin writes", post("/api/orders", &admin), 200),
        ("acme's path", key("/partner/orders", ACME_KEY), 200),
        ("acme elsewhere", key("/partner/other", ACME_KEY), 403),
        ("globex", key("/partner/orders", GLOBEX_KEY), 403),
        ("no rule", get("gw.test", "/private"), 403),
        // Normalised before the rules see it: this is /private, not under /public/.
        (
            "dot-dot out of public",
            get("gw.test", "/public/%2e%2e/private"),
            403,
        ),
    ];
    let expected: Vec<(&str, u16)> = cases.iter().map(|(w, _, s)| (*w, *s)).collect();
    let (got, from_other) = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let mut got = Vec::new();
        for (i, (what, req, _)) in cases.into_iter().enumerate() {
            let reply = if i % 2 == 0 {
                h1.send(req).await
            } else {
                h2.send(req).await
            };
            got.push((what, reply.expect("reply").status.as_u16()));
        }
        let mut other = h1_from([127, 0, 0, 2].into(), listen).await;
        let from_other = other
            .send(bearer("/api/orders", &admin))
            .await
            .expect("reply")
            .status
            .as_u16();
        (got, from_other)
    });
    assert_eq!(got, expected);
    assert_eq!(
        from_other, 403,
        "the client CIDR rule comes before the admin rule"
    );
    assert_eq!(lab.filter_decisions("policy", "authz", "allow", ""), 4.0);
    assert_eq!(
        lab.filter_decisions("policy", "authz", "deny", "denied_by_default"),
        5.0
    );
    assert_eq!(
        lab.filter_decisions("policy", "authz", "deny", "denied_by_rule"),
        1.0
    );
    assert_eq!(
        app.seen().len(),
        4,
        "only allowed requests reach the backend"
    );
    lab.stop();
}
