//! L7 limits and hostile clients: every limit answers with its status (431, 413 also for a
//! chunked body that grows past the limit, 408 for slow heads, 400 for malformed and
//! ambiguous requests), idle connections close, the connection limit holds new clients
//! back, and request-smuggling attempts never reach a backend.

mod l7_support;

use std::time::{Duration, Instant};

use l7_support::client::{H1, get, raw, request};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, service};
use sluice_tests::{eventually_async, privileged};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LIMITS: &str = "[service.l7.limits]\nmax_request_header_bytes = 2048\n\
                      max_request_body_bytes = 1000\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n";

/// A lab with one echo backend behind a service with small limits.
fn limited() -> (Lab, Backend, std::net::SocketAddr) {
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{LIMITS}{}",
        pool("app", &[&app], &[], ""),
        service("app", listen, ""),
        forward_all("app")
    );
    lab.start(&config);
    (lab, app, listen)
}

#[test]
fn large_heads_get_431_and_large_bodies_413_even_when_chunked() {
    if !privileged() {
        return;
    }
    let (lab, app, listen) = limited();
    lab.run(async move {
        let mut big_head = get("a.test", "/");
        big_head
            .headers_mut()
            .insert("x-padding", "p".repeat(3000).parse().expect("value"));
        let reply = H1::connect(listen)
            .await
            .expect("connect")
            .send(big_head)
            .await;
        assert_eq!(reply.expect("reply").status, 431);

        let reply = H1::connect(listen)
            .await
            .expect("connect")
            .send(request("POST", "a.test", "/echo", vec![b'x'; 2000]))
            .await;
        assert_eq!(
            reply.expect("reply").status,
            413,
            "declared length over the limit"
        );

        // Chunked, 100 bytes at a time, past 1000 bytes: the limit trips mid-stream.
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .expect("head");
        let chunk = format!("64\r\n{}\r\n", "y".repeat(100));
        for _ in 0..15 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let reply =
            l7_support::client::read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

        let ok = H1::connect(listen)
            .await
            .expect("connect")
            .send(request("POST", "a.test", "/echo", vec![b'z'; 900]))
            .await;
        assert_eq!(
            ok.expect("reply").body.len(),
            900,
            "a body under the limit passes"
        );
    });
    assert!(
        app.seen().iter().all(|s| s.body.len() == 900),
        "no oversized body reached the backend whole"
    );
    lab.stop();
}

#[test]
fn slow_heads_get_408_and_idle_connections_close() {
    if !privileged() {
        return;
    }
    let (lab, _app, listen) = limited();
    lab.run(async move {
        // Half a head, then silence.
        let started = Instant::now();
        let reply = raw(
            listen,
            b"GET / HTTP/1.1\r\nHost: a.test\r\n",
            Duration::from_secs(5),
        )
        .await
        .expect("raw");
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(4));

        // A head trickled a byte at a time does not reset the clock.
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        let trickle = async {
            for byte in b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: 1234567890\r\n" {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
        let reply =
            l7_support::client::read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

        // An idle keep-alive connection is closed after idle_timeout, not before.
        let mut c = H1::connect(listen).await.expect("connect");
        assert_eq!(c.send(get("a.test", "/")).await.expect("reply").status, 200);
        let idle_since = Instant::now();
        eventually_async(Duration::from_secs(10), || {
            let closed = c.is_closed();
            async move {
                if closed {
                    Ok(())
                } else {
                    Err("still open".to_string())
                }
            }
        })
        .await;
        let idle = idle_since.elapsed();
        assert!(idle >= Duration::from_millis(1500), "closed after {idle:?}");
    });
    lab.stop();
}

/// Requests no server may act on: each must get 400 and reach no backend.
const MALFORMED: &[(&str, &str)] = &[
    ("bad request line", "GET /\r\nHost: a.test\r\n\r\n"),
    (
        "space in a header name",
        "GET / HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n",
    ),
    (
        "no Host in HTTP/1.1",
        "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ),
    (
        "non-numeric length",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: abc\r\n\r\n",
    ),
    (
        "signed length",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello",
    ),
    (
        "obs-fold",
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\n c\r\n\r\n",
    ),
];

/// Smuggling attempts: framing a front and a back end could read differently.
const SMUGGLING: &[(&str, &str)] = &[
    (
        "CL then TE",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ),
    (
        "TE then CL",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\ncontent-length: 50\r\n\r\n\
         0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ),
    (
        "differing duplicate lengths",
        "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 37\r\n\r\n\
         helloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "bad chunk size",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "overflowing chunk size",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
         fffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunked not last",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "obs-folded transfer-encoding",
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello",
    ),
];

#[test]
fn malformed_and_smuggling_requests_get_400_and_reach_no_backend() {
    if !privileged() {
        return;
    }
    let (lab, app, listen) = limited();
    lab.run(async move {
        for (what, bytes) in MALFORMED.iter().chain(SMUGGLING) {
            let reply = raw(listen, bytes.as_bytes(), Duration::from_secs(5))
                .await
                .expect("raw");
            assert!(reply.starts_with("HTTP/1.1 400"), "{what}: {reply}");
            assert!(
                !reply.contains("HTTP/1.1 200") && !reply.contains("HTTP/1.1 404"),
                "{what}: only one answer, and the connection closed: {reply}"
            );
        }
    });
    assert_eq!(app.heads(), 0, "the backend saw nothing: {:?}", app.seen());
    // The backend and the path to it work: a clean request gets through.
    lab.run(async move {
        let reply = raw(
            listen,
            b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            Duration::from_secs(5),
        )
        .await
        .expect("raw");
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello"), "{reply}");
    });
    assert_eq!(app.count(), 1);
    lab.stop();
}

#[test]
fn beyond_max_connections_new_connections_wait_for_a_free_slot() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}[service.l7.limits]\nmax_connections = 2\n{}",
        pool("app", &[&app], &[], ""),
        service("app", listen, ""),
        forward_all("app")
    );
    lab.start(&config);
    lab.run(async move {
        let mut first = H1::connect(listen).await.expect("first");
        let mut second = H1::connect(listen).await.expect("second");
        assert_eq!(
            first.send(get("a.test", "/")).await.expect("reply").status,
            200
        );
        assert_eq!(
            second.send(get("a.test", "/")).await.expect("reply").status,
            200
        );
        let mut third = tokio::spawn(async move {
            let mut c = H1::connect(listen).await?;
            c.send(get("a.test", "/third")).await
        });
        let early = tokio::time::timeout(Duration::from_millis(1500), &mut third).await;
        assert!(
            early.is_err(),
            "a third connection is not served while two are open"
        );
        drop(first);
        let reply = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("served once a slot frees")
            .expect("task")
            .expect("reply");
        assert_eq!(reply.text(), "app");
        assert_eq!(
            second.send(get("a.test", "/")).await.expect("reply").status,
            200
        );
    });
    lab.stop();
}
