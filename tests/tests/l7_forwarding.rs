//! L7 end to end: what forwarding does to a request and its response (path and header
//! rewrites, hop-by-hop headers, X-Forwarded-*), bodies streamed both ways and re-framed,
//! pipelined requests, and the access log.

mod l7_support;

use std::time::Duration;

use l7_support::client::{get, raw, request, send_h1};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::{eventually, privileged};

#[test]
fn forwarding_rewrites_paths_and_headers_and_strips_hop_by_hop() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}\
         [[service.l7.virtual_host]]\nname = \"app\"\ndomains = [\"app.test\"]\n\
         [[service.l7.virtual_host.route]]\n\
         match = {{ path_prefix = \"/api/\" }}\nforward = {{ pool = \"app\" }}\nprefix_rewrite = \"/\"\n\
         request_headers_add = {{ \"x-env\" = \"test\" }}\nrequest_headers_remove = [\"x-debug\"]\n\
         response_headers_add = {{ \"x-served-by\" = \"sluice\" }}\nresponse_headers_remove = [\"x-backend\"]\n",
        pool("app", &[&app], &[], ""),
        service("app", listen, ""),
    );
    lab.start(&config);
    let reply = lab.run(async move {
        let mut req = get("app.test", "/api/users?id=7");
        for (name, value) in [
            ("x-debug", "1"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "gopher"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic eDp5"),
            ("keep-alive", "timeout=5"),
        ] {
            req.headers_mut()
                .insert(name, value.parse().expect("value"));
        }
        send_h1(listen, req).await.expect("reply")
    });
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "app");
    assert_eq!(reply.header("x-served-by"), "sluice");
    assert_eq!(reply.header("x-backend"), "", "removed from the response");
    let seen = app.last();
    assert_eq!(seen.path, "/users?id=7");
    assert_eq!(seen.header("host"), "app.test", "Host is preserved");
    assert_eq!(seen.header("x-env"), "test");
    assert_eq!(seen.header("x-debug"), "");
    // The client is not a trusted proxy: its own X-Forwarded-* are replaced, not extended.
    assert_eq!(seen.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.header("x-real-ip"), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(seen.header("x-forwarded-host"), "app.test");
    for hop in [
        "connection",
        "x-secret",
        "proxy-authorization",
        "keep-alive",
    ] {
        assert_eq!(seen.header(hop), "", "{hop} is hop-by-hop");
    }
    lab.stop();
}

#[test]
fn bodies_stream_both_ways_with_one_framing_to_the_backend() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool("app", &[&app], &[], ""),
        service("app", listen, ""),
        forward_all("app")
    ));
    let upload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = upload.clone();
    let (echoed, big, chunked) = lab.run(async move {
        let echoed = send_h1(listen, request("POST", "a.test", "/echo", upload))
            .await
            .expect("echo");
        let big = send_h1(listen, get("a.test", "/big/3000000")).await.expect("big");
        let chunked = raw(
            listen,
            b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("raw");
        (echoed, big, chunked)
    });
    assert_eq!(echoed.status, 200);
    assert!(echoed.body[..] == expected[..], "1 MB echoed intact");
    assert_eq!(big.body.len(), 3_000_000);
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    assert!(chunked.ends_with("hello world"), "{chunked}");
    let seen = app.seen();
    let sized = seen
        .iter()
        .find(|s| s.body.len() == 1_000_000)
        .expect("sized upload");
    assert_eq!(sized.header("content-length"), "1000000");
    assert_eq!(sized.header("transfer-encoding"), "");
    let streamed = seen
        .iter()
        .find(|s| &s.body[..] == b"hello world")
        .expect("chunked upload");
    assert_eq!(streamed.header("transfer-encoding"), "chunked");
    assert_eq!(streamed.header("content-length"), "");
    lab.stop();
}

#[test]
fn access_log_has_one_line_per_request_unless_off() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let (logged, quiet) = (local(8080), local(8081));
    let config = format!(
        "{}{}{}{}{}",
        pool("app", &[&app], &[], ""),
        service("logged", logged, ""),
        forward_all("app"),
        service("quiet", quiet, "access_log = false"),
        forward_all("app"),
    );
    lab.start(&config);
    lab.run(async move {
        send_h1(logged, get("logged.test", "/status/418?q=1"))
            .await
            .expect("logged");
        send_h1(quiet, get("quiet.test", "/status/200"))
            .await
            .expect("quiet");
    });
    let line = eventually(Duration::from_secs(10), || {
        let log = lab.log();
        log.lines()
            .find(|l| l.contains("sluice::access"))
            .map(str::to_string)
            .ok_or_else(|| format!("no access line; log:\n{log}"))
    });
    for field in [
        "service=logged",
        "client=127.0.0.1:",
        "host=\"logged.test\"",
        "method=GET",
        "path=\"/status/418?q=1\"",
        "status=418",
        "bytes=3",
        "upstream=127.0.0.1:9001",
        "route=\"all#1\"",
        "duration_ms=",
        "time=",
    ] {
        assert!(line.contains(field), "{field} missing in: {line}");
    }
    assert!(
        !lab.log().contains("quiet.test"),
        "access_log = false logs nothing"
    );
    lab.stop();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool("app", &[&app], &[], ""),
        service("app", listen, ""),
        forward_all("app")
    ));
    let replies = lab.run(async move {
        raw(
            listen,
            b"GET /sleep/300 HTTP/1.1\r\nHost: a.test\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\n\r\nsecond\
              GET /third HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("raw")
    });
    let statuses = replies.matches("HTTP/1.1 200").count();
    assert_eq!(statuses, 3, "{replies}");
    let (first, rest) = replies
        .split_once("second")
        .expect("the echo, after the first answer");
    assert!(
        first.contains("\r\n\r\napp"),
        "the slow first answer comes first: {replies}"
    );
    assert!(rest.ends_with("app"), "{replies}");
    let paths: Vec<String> = app.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/sleep/300", "/echo", "/third"]);
    lab.stop();
}
