//! Authentication and authorization filters end to end: real clients (HTTP/1.1 and HTTP/2)
//! through the agent to a recording backend. `api_key`: keys from a file, presented in a
//! header or the query, removed before the request goes on, the key's name the principal a
//! rate limit counts by, the file reloaded with the config.

mod l7_support;

use std::path::Path;
use std::time::Duration;

use l7_support::client::{H1, H2, Reply, Req, get};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::{eventually, privileged};

const ACME_KEY: &str = "acme-0123456789abcdef";
const GLOBEX_KEY: &str = "globex-0123456789abcdef";
const INITECH_KEY: &str = "initech-0123456789abcdef";

fn with_header(mut req: Req, name: &'static str, value: &str) -> Req {
    req.headers_mut()
        .insert(name, value.parse().expect("header value"));
    req
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn decisions(filter: &str, kind: &str, decision: &str, reason: &str) -> String {
    format!(
        "sluice_l7_filter_decisions_total{{service=\"gw\",filter=\"{filter}\",type=\"{kind}\",decision=\"{decision}\",reason=\"{reason}\"}}"
    )
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
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app-1", local(9001), Mode::Echo);
    let listen = local(8080);
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

    assert_eq!(lab.metric(&decisions("keys", "api_key", "allow", "")), 5.0);
    assert_eq!(
        lab.metric(&decisions("keys", "api_key", "deny", "missing_key")),
        1.0
    );
    assert_eq!(
        lab.metric(&decisions("keys", "api_key", "deny", "unknown_key")),
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
