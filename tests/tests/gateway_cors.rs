//! `cors` end to end: preflights from allowed origins answered by the gateway per the Fetch
//! standard (never forwarded, never asked for credentials), refused ones without CORS
//! headers; actual requests marked with `Access-Control-Allow-Origin` and `Vary: Origin`,
//! also on a denial by a later filter; over HTTP/1.1 and HTTP/2.

mod l7_support;

use l7_support::client::{H1, H2, Reply, get, request, with_headers};
use l7_support::{forward_all, gateway_lab, pool, service};
use sluice_tests::privileged;

const APP: &str = "https://app.example.test";
const KEY: &str = "web-0123456789abcdef";

#[test]
fn cors_answers_preflights_and_marks_responses_for_allowed_origins_only() {
    if !privileged() {
        return;
    }
    let files = tempfile::tempdir().expect("temp dir");
    let keys = files.path().join("keys.txt");
    std::fs::write(&keys, format!("web {KEY}\n")).expect("write the keys file");
    let (mut lab, app, listen) = gateway_lab();
    let config = format!(
        "{}{}[[service.l7.filter]]\nname = \"browser\"\n[service.l7.filter.cors]\n\
         allow_origins = [\"{APP}\", \"http://localhost:3000\"]\n\
         allow_methods = [\"GET\", \"POST\", \"PUT\"]\n\
         allow_headers = [\"Content-Type\", \"x-api-key\"]\nexpose_headers = [\"x-backend\"]\n\
         allow_credentials = true\nmax_age = \"10m\"\n\
         [[service.l7.filter]]\nname = \"keys\"\napi_key = {{ keys_file = {:?} }}\n{}",
        pool("app", &[&app], &[], ""),
        service("gw", listen, ""),
        keys.display(),
        forward_all("app")
    );
    lab.start(&config);
    let host = "gw.test";
    let preflight = |origin: &str, method: &str| {
        with_headers(
            request("OPTIONS", host, "/api/items", ""),
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type, x-api-key"),
            ],
        )
    };
    let keyed = |origin: Option<&str>| {
        let mut req = with_headers(get(host, "/api/items"), &[("x-api-key", KEY)]);
        if let Some(origin) = origin {
            req = with_headers(req, &[("origin", origin)]);
        }
        req
    };
    let replies: Vec<(&str, Reply)> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut h2 = H2::connect(listen).await.expect("h2c");
        vec![
            (
                "preflight h1",
                h1.send(preflight(APP, "PUT")).await.expect("reply"),
            ),
            (
                "preflight h2",
                h2.send(preflight(APP, "PUT")).await.expect("reply"),
            ),
            (
                "preflight foreign origin",
                h1.send(preflight("https://evil.test", "PUT"))
                    .await
                    .expect("reply"),
            ),
            (
                "preflight DELETE",
                h2.send(preflight(APP, "DELETE")).await.expect("reply"),
            ),
            ("actual", h2.send(keyed(Some(APP))).await.expect("reply")),
            (
                "actual, denied later",
                h1.send(with_headers(get(host, "/api/items"), &[("origin", APP)]))
                    .await
                    .expect("reply"),
            ),
            (
                "actual foreign origin",
                h1.send(keyed(Some("https://evil.test")))
                    .await
                    .expect("reply"),
            ),
            ("no origin", h2.send(keyed(None)).await.expect("reply")),
            (
                "plain OPTIONS",
                h1.send(with_headers(
                    request("OPTIONS", host, "/api/items", ""),
                    &[("origin", APP), ("x-api-key", KEY)],
                ))
                .await
                .expect("reply"),
            ),
        ]
    });
    let reply = |what: &str| {
        &replies
            .iter()
            .find(|(w, _)| *w == what)
            .unwrap_or_else(|| panic!("no reply {what}"))
            .1
    };
    for what in ["preflight h1", "preflight h2"] {
        let r = reply(what);
        assert_eq!(r.status, 204, "{what}: a preflight needs no API key");
        assert_eq!(r.header("access-control-allow-origin"), APP, "{what}");
        assert_eq!(r.header("access-control-allow-methods"), "GET, POST, PUT");
        assert_eq!(
            r.header("access-control-allow-headers"),
            "content-type, x-api-key"
        );
        assert_eq!(r.header("access-control-allow-credentials"), "true");
        assert_eq!(r.header("access-control-max-age"), "600");
        assert!(r.header("vary").contains("Origin"), "{what}");
    }
    for what in ["preflight foreign origin", "preflight DELETE"] {
        let r = reply(what);
        assert_eq!(r.status, 403, "{what}");
        assert!(r.header("access-control-allow-origin").is_empty(), "{what}");
        assert!(
            r.header("access-control-allow-methods").is_empty(),
            "{what}"
        );
    }
    let actual = reply("actual");
    assert_eq!(actual.status, 200);
    assert_eq!(actual.header("access-control-allow-origin"), APP);
    assert_eq!(actual.header("access-control-allow-credentials"), "true");
    assert_eq!(actual.header("access-control-expose-headers"), "x-backend");
    assert!(actual.header("vary").contains("Origin"));
    let denied = reply("actual, denied later");
    assert_eq!(denied.status, 401, "the API key is still required");
    assert_eq!(
        denied.header("access-control-allow-origin"),
        APP,
        "the page can read the 401"
    );
    let foreign = reply("actual foreign origin");
    assert_eq!(
        foreign.status, 200,
        "CORS is enforced by browsers, not here"
    );
    assert!(foreign.header("access-control-allow-origin").is_empty());
    assert!(foreign.header("vary").contains("Origin"));
    assert!(
        reply("no origin")
            .header("access-control-allow-origin")
            .is_empty()
    );
    assert_eq!(
        reply("plain OPTIONS").status,
        200,
        "an OPTIONS without Access-Control-Request-Method goes on"
    );

    let seen = app.seen();
    assert_eq!(seen.len(), 4, "preflights never reach the backend");
    assert!(
        seen.iter()
            .all(|s| s.method != "OPTIONS" || s.header("access-control-request-method").is_empty())
    );
    let decisions =
        |decision: &str, reason: &str| lab.filter_decisions("browser", "cors", decision, reason);
    assert_eq!(decisions("deny", "preflight"), 2.0);
    assert_eq!(decisions("deny", "preflight_refused"), 2.0);
    lab.stop();
}
