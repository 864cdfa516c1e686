//! L7 protocols beyond request/response: WebSocket upgrades spliced through the proxy,
//! gRPC-style HTTP/2 with trailers to an HTTP/2 pool, and the bounds the HTTP/2 listener
//! advertises and enforces against abusive clients.

mod l7_support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use l7_support::backend::websocket_echo;
use l7_support::client::{H1, H2, get, request};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, pool_at, service};
use sluice_tests::privileged;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[test]
fn websocket_upgrades_are_spliced_both_ways_and_outlive_http_timers() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let _ws = websocket_echo(&lab.ns, local(9001));
    let listen = local(8080);
    let config = format!(
        "{}{}[service.l7.limits]\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n{}",
        pool_at("ws", &[local(9001)], ""),
        service("ws", listen, ""),
        forward_all("ws"),
    );
    lab.start(&config);
    lab.run(async move {
        let stream = TcpStream::connect(listen).await.expect("connect");
        let (mut ws, response) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
            .await
            .expect("websocket handshake through the proxy");
        assert_eq!(response.status(), 101);
        ws.send(Message::text("hello")).await.expect("send");
        assert_eq!(
            ws.next().await.expect("echo").expect("frame"),
            Message::text("hello")
        );
        ws.send(Message::binary(vec![1u8, 2, 3]))
            .await
            .expect("send");
        assert_eq!(
            ws.next().await.expect("echo").expect("frame"),
            Message::binary(vec![1u8, 2, 3])
        );
        // Quiet for longer than both HTTP timers: an upgraded connection is no longer HTTP.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        ws.send(Message::text("still here"))
            .await
            .expect("send after a pause");
        assert_eq!(
            ws.next().await.expect("echo").expect("frame"),
            Message::text("still here")
        );
        ws.close(None).await.expect("close");
    });
    lab.stop();
}

#[test]
fn grpc_style_trailers_reach_the_client_over_http2() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let grpc = Backend::start(&lab.ns, "grpc", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}{}",
        pool("grpc", &[&grpc], &[], "upstream_protocol = \"http2\""),
        service("grpc", listen, ""),
        forward_all("grpc"),
    );
    lab.start(&config);
    lab.run(async move {
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let mut req = request(
            "POST",
            "grpc.test",
            "/trailers",
            &b"\x00\x00\x00\x00\x00"[..],
        );
        req.headers_mut()
            .insert("content-type", "application/grpc".parse().expect("v"));
        req.headers_mut()
            .insert("te", "trailers".parse().expect("v"));
        let reply = h2.send(req).await.expect("reply");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), "application/grpc");
        let trailers = reply.trailers.expect("trailers arrive");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        assert_eq!(
            trailers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"all-good"[..])
        );
        // An HTTP/1.1 client reaches the same HTTP/2 pool.
        let reply = H1::connect(listen)
            .await
            .expect("h1")
            .send(get("grpc.test", "/"))
            .await;
        assert_eq!(reply.expect("reply").text(), "grpc");
    });
    let seen = grpc.seen();
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "HTTP/2 to the backend"
    );
    assert_eq!(seen[0].header("te"), "trailers", "TE: trailers survives");
    lab.stop();
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: type, flags, stream and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HEADERS for `GET /` to authority `a`, HPACK-encoded by hand (static table indices).
fn get_headers(stream: u32) -> Vec<u8> {
    frame(
        0x1,
        0x4 | 0x1,
        stream,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'],
    )
}

/// Reads frames until a SETTINGS frame from the server; returns its parameters.
async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.expect("frame header");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        if head[3] == 0x4 && head[4] & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|p| {
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                    )
                })
                .collect();
        }
    }
}

async fn still_serves(listen: SocketAddr) {
    let mut h2 = H2::connect(listen).await.expect("h2c after the flood");
    let reply = h2
        .send(get("a.test", "/"))
        .await
        .expect("reply after the flood");
    assert_eq!(reply.status, 200);
}

#[test]
fn http2_advertises_its_bounds_and_survives_floods() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Echo);
    let listen = local(8080);
    let config = format!(
        "{}{}[service.l7.limits]\nh2_max_concurrent_streams = 5\nh2_max_header_list_bytes = 4096\n{}",
        pool("app", &[&app], &[], ""),
        service("h2", listen, ""),
        forward_all("app"),
    );
    lab.start(&config);
    lab.run(async move {
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        stream.write_all(PREFACE).await.expect("preface");
        stream
            .write_all(&frame(0x4, 0, 0, &[]))
            .await
            .expect("settings");
        let settings = server_settings(&mut stream).await;
        assert!(
            settings.contains(&(0x3, 5)),
            "MAX_CONCURRENT_STREAMS 5: {settings:?}"
        );
        assert!(
            settings.contains(&(0x6, 4096)),
            "MAX_HEADER_LIST_SIZE 4096: {settings:?}"
        );

        // A header list over the limit is refused (431 or a reset), never forwarded.
        let mut h2 = H2::connect(listen).await.expect("h2c");
        let mut big = get("a.test", "/too-big");
        big.headers_mut()
            .insert("x-big", "b".repeat(8000).parse().expect("v"));
        if let Ok(reply) = h2.send(big).await {
            assert_eq!(reply.status, 431);
        }

        // Rapid reset: streams opened and cancelled at once, by the thousand.
        let mut flood = Vec::new();
        for i in 0..2000u32 {
            let id = 2 * i + 1;
            flood.extend(get_headers(id));
            flood.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
        }
        let _ = stream.write_all(&flood).await;
        // PING flood on another connection.
        let mut pings = TcpStream::connect(listen).await.expect("connect");
        let mut flood = PREFACE.to_vec();
        flood.extend(frame(0x4, 0, 0, &[]));
        for i in 0..20_000u64 {
            flood.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
        }
        let _ = pings.write_all(&flood).await;
        drop((stream, pings));
        still_serves(listen).await;
    });
    assert!(
        app.seen().iter().all(|s| s.path != "/too-big"),
        "an oversized header list reached the backend"
    );
    lab.stop();
}
