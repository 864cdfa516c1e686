//! The proxy's HTTP/1.1 exchange against a hostile or broken backend, end to end: a scripted
//! raw backend writes exact bytes (conflicting lengths, a bad chunk, an early close, an
//! answer before the upload, 1xx responses, bodiless responses with and without stray bytes
//! after them, responses nobody asked for, malformed and oversized heads, a protocol switch
//! nobody asked for) and a real client checks what comes out of a real agent. A backend
//! connection whose framing cannot be trusted must never carry another request: each
//! script keeps serving after its hostile answer, so a reused connection shows up as a
//! wrong answer, and the backend counts the connections it accepted.

mod l7_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use l7_support::client::{H1, Reply, get, request};
use l7_support::{Lab, forward_all, local, pool_at, service};
use sluice_tests::privileged;
use sluice_tests::scripted_backend::{ScriptedBackend, Step, ok_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any one test's client side must be done within this; a hang fails the test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// What a raw read waits for the proxy's next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What every script serves once its hostile part is over (and what fresh connections serve).
const HEALTHY: &str = "healthy";

/// The agent forwarding everything to a scripted backend whose connection `i` runs
/// `scripts[i]`; connections past the list serve [`HEALTHY`].
fn hostile_lab(scripts: Vec<Vec<Step>>) -> (Lab, ScriptedBackend, SocketAddr) {
    hostile_lab_with("", scripts)
}

/// [`hostile_lab`] with `l7` in the service's `[service.l7]` table.
fn hostile_lab_with(l7: &str, scripts: Vec<Vec<Step>>) -> (Lab, ScriptedBackend, SocketAddr) {
    let mut lab = Lab::new();
    let backend = ScriptedBackend::start(&lab.ns, local(9001), move |i| {
        scripts
            .get(i)
            .cloned()
            .unwrap_or_else(|| vec![Step::Serve(HEALTHY)])
    });
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool_at("app", &[backend.addr], ""),
        service("hostile", listen, l7),
        forward_all("app")
    ));
    (lab, backend, listen)
}

/// Reads one request, answers it with `answer`, then serves [`HEALTHY`] on the same
/// connection: if the proxy sent another request there, it would get a 200.
fn answer_then_serve(answer: &str) -> Vec<Step> {
    vec![Step::ReadHead, Step::write(answer), Step::Serve(HEALTHY)]
}

/// Runs the client side in the lab, failing the test if it takes longer than TEST_TIMEOUT.
fn run<F>(lab: &Lab, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    lab.run(async move {
        tokio::time::timeout(TEST_TIMEOUT, future)
            .await
            .unwrap_or_else(|_| panic!("the client side hung for {TEST_TIMEOUT:?}"))
    })
}

async fn connect(listen: SocketAddr) -> H1 {
    H1::connect(listen).await.expect("connect to the proxy")
}

/// A request on `client` that must come back whole; panics with what happened otherwise.
async fn send(client: &mut H1, req: l7_support::client::Req) -> Reply {
    client.send(req).await.unwrap_or_else(|e| panic!("{e}"))
}

fn assert_healthy(reply: &Reply) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), HEALTHY, "{reply:?}");
}

/// What a raw exchange brought back.
struct RawReply {
    bytes: Vec<u8>,
    /// The proxy closed the connection (rather than the read timing out).
    closed: bool,
}

impl RawReply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Everything after the first head.
    fn body(&self) -> &[u8] {
        head_end(&self.bytes).map_or(&[], |end| &self.bytes[end..])
    }
}

/// Writes `request` on a fresh connection and reads until the proxy closes it or nothing
/// comes for READ_TIMEOUT.
async fn raw_exchange(listen: SocketAddr, request: &[u8]) -> RawReply {
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Err(_) => {
                return RawReply {
                    bytes,
                    closed: false,
                };
            }
            Ok(Ok(0) | Err(_)) => {
                return RawReply {
                    bytes,
                    closed: true,
                };
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Reads one response head from `stream` (bytes past it stay in `buffer`).
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = head_end(buffer) {
            let head: Vec<u8> = buffer.drain(..end).collect();
            return String::from_utf8_lossy(&head).into_owned();
        }
        fill(stream, buffer).await;
    }
}

async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("nothing from the proxy; read so far: {buffer:?}"))
        .expect("read");
    assert!(
        n > 0,
        "the proxy closed the connection; read so far: {:?}",
        String::from_utf8_lossy(buffer)
    );
    buffer.extend_from_slice(&chunk[..n]);
}

/// Reads the final response (skipping 1xx heads, as a client does) with a
/// `Content-Length` body, or none.
async fn read_final(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> RawResponse {
    loop {
        let head = read_head(stream, buffer).await;
        let response = RawResponse {
            head,
            body: Vec::new(),
        };
        if (100..200).contains(&response.status()) {
            continue;
        }
        let length = response
            .head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buffer.len() < length {
            fill(stream, buffer).await;
        }
        let body = buffer.drain(..length).collect();
        return RawResponse { body, ..response };
    }
}

#[test]
fn conflicting_lengths_get_a_502_and_their_connection_is_dropped() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![
        // Two lengths: a backend and a proxy could frame this differently.
        answer_then_serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 13\r\n\r\nhello smuggle",
        ),
        // Both framings at once (RFC 9112 §6.3: to be handled as an error).
        answer_then_serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\nsmuggled\r\n0\r\n\r\n",
        ),
    ]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut client = connect(listen).await;
        let two_lengths = send(&mut client, get("a.test", "/two-lengths")).await;
        assert_eq!(two_lengths.status, 502, "{two_lengths:?}");
        assert!(!two_lengths.text().contains("hello"), "{two_lengths:?}");
        assert_eq!(seen.accepted(), 1);

        // The proxy's own 502 leaves the client's connection usable.
        let both = send(&mut client, get("a.test", "/both-framings")).await;
        assert_eq!(
            both.status, 502,
            "a response with Content-Length and Transfer-Encoding: {both:?}"
        );
        assert!(!both.text().contains("smuggled"), "{both:?}");
        assert_eq!(
            seen.accepted(),
            2,
            "the first connection was not used again"
        );

        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(
            seen.accepted(),
            3,
            "the second connection was not used again"
        );
    });
    lab.stop();
}

#[test]
fn a_bad_chunk_cuts_the_response_and_the_next_request_is_served() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![vec![
        Step::ReadHead,
        Step::write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        // The head and the first chunk are on their way to the client before the bad one.
        Step::Sleep(Duration::from_millis(200)),
        Step::write("zz\r\nworld\r\n0\r\n\r\n"),
        Step::Serve(HEALTHY),
    ]]);
    let seen = backend.seen();
    run(&lab, async move {
        let reply = raw_exchange(listen, b"GET /bad-chunk HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let text = reply.text();
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            reply.closed,
            "the cut response closes the connection: {text:?}"
        );
        assert!(text.contains("hello"), "{text:?}");
        assert!(!text.contains("world"), "{text:?}");
        assert!(
            !reply.body().ends_with(b"0\r\n\r\n"),
            "the cut body must not look complete: {text:?}"
        );

        let mut client = connect(listen).await;
        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(seen.accepted(), 2, "the broken connection was not reused");
    });
    lab.stop();
}

#[test]
fn an_early_close_mid_body_leaves_the_response_incomplete() {
    if !privileged() {
        return;
    }
    let early_close = vec![
        Step::ReadHead,
        Step::write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"),
        // Then the backend closes.
    ];
    let (lab, backend, listen) = hostile_lab(vec![early_close.clone(), early_close]);
    let seen = backend.seen();
    run(&lab, async move {
        let reply = raw_exchange(listen, b"GET /short HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let text = reply.text();
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 1000"),
            "{text:?}"
        );
        assert_eq!(reply.body(), b"0123456789", "{text:?}");
        assert!(reply.closed, "the proxy closes the cut response: {text:?}");

        // A hyper client sees the same response as incomplete, never as a whole one.
        let mut client = connect(listen).await;
        let cut = client.send(get("a.test", "/short-again")).await;
        assert!(
            cut.as_ref().is_err_and(|e| e.starts_with("response body")),
            "{cut:?}"
        );

        let mut client = connect(listen).await;
        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(seen.accepted(), 3);
    });
    lab.stop();
}

/// Sends a POST with a `size`-byte body on a fresh connection, reading while it writes
/// (as curl does), until the proxy closes the connection or goes quiet.
async fn upload_answered_early(listen: SocketAddr, size: usize) -> RawReply {
    let stream = TcpStream::connect(listen).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move {
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: {size}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&vec![b'u'; size]).await?;
        // Keep the write side open: the proxy, not the client, ends the exchange.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(writer)
    });
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout(READ_TIMEOUT, reader.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    upload.abort();
    RawReply { bytes, closed }
}

#[test]
fn a_response_before_the_request_body_is_read_reaches_the_client() {
    if !privileged() {
        return;
    }
    // An upload far larger than the socket buffers: the backend answers on the head alone
    // and closes with most of the body never read.
    const UPLOAD: usize = 32 << 20;
    let (lab, backend, listen) = hostile_lab_with(
        // Unlimited: the agent must not refuse the upload itself.
        "[service.l7.limits]\nmax_request_body_bytes = 0\n",
        vec![
            vec![
                Step::ReadHead,
                Step::write(
                    "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!",
                ),
            ],
            vec![
                Step::ReadHead,
                Step::write(
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly",
                ),
            ],
        ],
    );
    let seen = backend.seen();
    let (refused, accepted) = run(&lab, async move {
        let refused = upload_answered_early(listen, UPLOAD).await;
        let accepted = upload_answered_early(listen, UPLOAD).await;
        let mut client = connect(listen).await;
        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(seen.accepted(), 3);
        (refused, accepted)
    });
    // What Sluice does today is forward the backend's answer and close the client's
    // connection (its upload was never read whole); a 502 would be as safe.
    for (reply, status_line, body) in [
        (&refused, "HTTP/1.1 413 ", "too big!"),
        (&accepted, "HTTP/1.1 200 ", "early"),
    ] {
        let text = reply.text();
        eprintln!("early answer {status_line}: the client got {text:?}");
        let forwarded = text.starts_with(status_line) && reply.body() == body.as_bytes();
        assert!(
            forwarded || text.starts_with("HTTP/1.1 502 "),
            "{status_line}: {text:?}"
        );
        assert!(reply.closed, "the proxy closes the connection: {text:?}");
    }
    lab.stop();
}

#[test]
fn continue_and_informational_responses_give_way_to_the_final_one() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![vec![
        Step::ReadHead,
        Step::write("HTTP/1.1 100 Continue\r\n\r\n"),
        Step::ReadBody,
        Step::write(&ok_response("final")),
        Step::ReadHead,
        Step::write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"),
        Step::Sleep(Duration::from_millis(100)),
        Step::write("HTTP/1.1 102 Processing\r\n\r\n"),
        Step::write(&ok_response("hinted")),
        Step::Serve(HEALTHY),
    ]]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        let mut buffer = Vec::new();
        stream
            .write_all(
                b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .await
            .expect("write");
        // The client holds its body back until it is told to go on.
        let go_on = read_head(&mut stream, &mut buffer).await;
        assert!(go_on.starts_with("HTTP/1.1 100 "), "{go_on:?}");
        stream.write_all(b"hello").await.expect("write the body");
        let last = read_final(&mut stream, &mut buffer).await;
        assert_eq!(last.status(), 200, "{last:?}");
        assert_eq!(last.body, b"final", "{last:?}");

        stream
            .write_all(b"GET /hints HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .expect("write");
        let hinted = read_final(&mut stream, &mut buffer).await;
        assert_eq!(hinted.status(), 200, "{hinted:?}");
        assert_eq!(hinted.body, b"hinted", "{hinted:?}");

        stream
            .write_all(b"GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .expect("write");
        let after = read_final(&mut stream, &mut buffer).await;
        assert_eq!(after.body, HEALTHY.as_bytes(), "{after:?}");
        assert_eq!(
            seen.accepted(),
            1,
            "1xx responses leave the connection's framing intact, so it is kept"
        );
    });
    assert_eq!(
        backend.seen().bodies().first().map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    lab.stop();
}

#[test]
fn bodiless_responses_come_back_at_once_on_a_kept_connection() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![vec![
        Step::ReadHead,
        // The length of the body a GET would get; a HEAD response carries none.
        Step::write("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"),
        Step::ReadHead,
        Step::write("HTTP/1.1 204 No Content\r\n\r\n"),
        Step::ReadHead,
        Step::write("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n"),
        Step::Serve(HEALTHY),
    ]]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut client = connect(listen).await;
        let prompt = Duration::from_secs(2);

        let started = Instant::now();
        let head = send(&mut client, request("HEAD", "a.test", "/head", "")).await;
        assert!(
            started.elapsed() < prompt,
            "HEAD took {:?}",
            started.elapsed()
        );
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(head.header("content-length"), "50", "{head:?}");
        assert!(head.body.is_empty(), "{head:?}");

        let started = Instant::now();
        let no_content = send(&mut client, get("a.test", "/no-content")).await;
        assert!(
            started.elapsed() < prompt,
            "204 took {:?}",
            started.elapsed()
        );
        assert_eq!(no_content.status, 204, "{no_content:?}");
        assert!(no_content.body.is_empty(), "{no_content:?}");

        let started = Instant::now();
        let not_modified = send(&mut client, get("a.test", "/not-modified")).await;
        assert!(
            started.elapsed() < prompt,
            "304 took {:?}",
            started.elapsed()
        );
        assert_eq!(not_modified.status, 304, "{not_modified:?}");
        assert!(not_modified.body.is_empty(), "{not_modified:?}");

        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(
            seen.accepted(),
            1,
            "every bodiless response left the connection reusable"
        );
    });
    lab.stop();
}

#[test]
fn bodies_where_none_belong_never_reach_a_client() {
    if !privileged() {
        return;
    }
    // Each answer carries bytes after a head that allows no body: they are not the body,
    // and a connection that carried them must not take the next request.
    let (lab, backend, listen) = hostile_lab(vec![
        answer_then_serve("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked"),
        answer_then_serve("HTTP/1.1 204 No Content\r\n\r\nleaked"),
        answer_then_serve("HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\nleaked"),
    ]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut client = connect(listen).await;
        let head = send(&mut client, request("HEAD", "a.test", "/head", "")).await;
        assert_eq!(head.status, 200, "{head:?}");
        assert!(head.body.is_empty(), "{head:?}");

        let no_content = send(&mut client, get("a.test", "/no-content")).await;
        assert_eq!(no_content.status, 204, "{no_content:?}");
        assert!(no_content.body.is_empty(), "{no_content:?}");
        assert_eq!(seen.accepted(), 2, "the HEAD's connection was not reused");

        let not_modified = send(&mut client, get("a.test", "/not-modified")).await;
        assert_eq!(not_modified.status, 304, "{not_modified:?}");
        assert!(not_modified.body.is_empty(), "{not_modified:?}");
        assert_eq!(seen.accepted(), 3, "the 204's connection was not reused");

        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(seen.accepted(), 4, "the 304's connection was not reused");
    });
    lab.stop();
}

#[test]
fn responses_nobody_asked_for_never_answer_a_later_request() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![
        // The stray response comes in the same write as the real one...
        vec![
            Step::ReadHead,
            Step::write(&(ok_response("first") + &ok_response("unasked"))),
            Step::Serve("stale"),
        ],
        // ... or a moment later, on a connection that looks idle.
        vec![
            Step::ReadHead,
            Step::write(&ok_response("second")),
            Step::Sleep(Duration::from_millis(100)),
            Step::write(&ok_response("unasked-late")),
            Step::Serve("stale"),
        ],
    ]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut client = connect(listen).await;
        let first = send(&mut client, get("a.test", "/1")).await;
        assert_eq!(first.text(), "first", "{first:?}");

        let second = send(&mut client, get("a.test", "/2")).await;
        assert_eq!(
            second.text(),
            "second",
            "the next request gets its own answer, from a new connection"
        );
        assert_eq!(seen.accepted(), 2);

        // Let the late stray response arrive while the connection is idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let third = send(&mut client, get("a.test", "/3")).await;
        assert_healthy(&third);
        assert_eq!(seen.accepted(), 3);
    });
    lab.stop();
}

#[test]
fn malformed_response_heads_get_a_502_and_their_connection_is_dropped() {
    if !privileged() {
        return;
    }
    let many_headers: String = (0..200).map(|i| format!("X-Many-{i}: x\r\n")).collect();
    let huge_header = format!("X-Huge: {}\r\n", "h".repeat(1 << 20));
    let heads = [
        ("garbage status line", "HTTX/1.1 200 OK\r\n".to_string()),
        ("status code not a number", "HTTP/1.1 2x0 OK\r\n".into()),
        (
            "header without a colon",
            "HTTP/1.1 200 OK\r\nX-Evil leaked\r\n".into(),
        ),
        (
            "NUL in a header value",
            "HTTP/1.1 200 OK\r\nX-Evil: a\0b\r\n".into(),
        ),
        (
            "bare CR in a header value",
            "HTTP/1.1 200 OK\r\nX-Evil: a\rb\r\n".into(),
        ),
        ("200 headers", format!("HTTP/1.1 200 OK\r\n{many_headers}")),
        ("a 1 MiB head", format!("HTTP/1.1 200 OK\r\n{huge_header}")),
    ];
    let scripts = heads
        .iter()
        .map(|(_, head)| answer_then_serve(&format!("{head}Content-Length: 6\r\n\r\nleaked")))
        .collect();
    let (lab, backend, listen) = hostile_lab(scripts);
    let seen = backend.seen();
    let whats: Vec<&'static str> = heads.iter().map(|(what, _)| *what).collect();
    run(&lab, async move {
        let mut client = connect(listen).await;
        for (i, what) in whats.iter().enumerate() {
            let reply = send(&mut client, get("a.test", "/malformed")).await;
            assert_eq!(reply.status, 502, "{what}: {reply:?}");
            assert!(!reply.text().contains("leaked"), "{what}: {reply:?}");
            assert!(reply.header("x-evil").is_empty(), "{what}: {reply:?}");
            assert!(reply.header("x-many-0").is_empty(), "{what}: {reply:?}");
            assert_eq!(seen.accepted(), i + 1, "{what}: a new connection each time");
        }
        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(seen.accepted(), whats.len() + 1);
    });
    lab.stop();
}

#[test]
fn a_protocol_switch_nobody_asked_for_gets_a_502() {
    if !privileged() {
        return;
    }
    let (lab, backend, listen) = hostile_lab(vec![answer_then_serve(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n\
         raw bytes of another protocol",
    )]);
    let seen = backend.seen();
    run(&lab, async move {
        let mut client = connect(listen).await;
        let switched = send(&mut client, get("a.test", "/plain")).await;
        assert_eq!(switched.status, 502, "{switched:?}");
        assert!(!switched.text().contains("raw bytes"), "{switched:?}");
        let after = send(&mut client, get("a.test", "/after")).await;
        assert_healthy(&after);
        assert_eq!(
            seen.accepted(),
            2,
            "the switched connection was not used again"
        );
    });
    lab.stop();
}
