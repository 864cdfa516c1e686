//! The admin server over real sockets: refusals of foreign Host/Origin, the connection cap,
//! header and idle timeouts, the page and its JSON endpoints (paged with 10,000 backends).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{
    AdminLimits, AdminServer, BackendStatus, Command, CommandError, Live, PoolStatus, Status, serve,
};
use crate::announce::NothingAnnounced;
use crate::metrics::Metrics;
use crate::run::{ApplyError, ReloadError};
use crate::status::BackendLookupError;

struct Running {
    addr: SocketAddr,
    commands: mpsc::Receiver<Command>,
    _stop: watch::Sender<bool>,
}

async fn start(limits: AdminLimits, status: Status) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    // Receivers keep the last value after their senders drop.
    let (_, status_rx) = watch::channel(Arc::new(status));
    let (_, ready) = watch::channel(true);
    let (commands_tx, commands) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let server = AdminServer {
        metrics: Arc::new(Metrics::new()),
        metrics_path: "/metrics".into(),
        status: status_rx,
        commands: commands_tx,
        token: None,
        ready,
        live: Live::default(),
        limits,
    };
    tokio::spawn(serve(listener, server, stop_rx));
    Running {
        addr,
        commands,
        _stop: stop,
    }
}

/// Sends `head` (without the final blank line) and reads the whole answer.
async fn exchange(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let request = format!("{head}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("no answer to {head:?}"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Waits (bounded) for the server to close `stream`; panics if it sends anything first.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "the server answered instead of closing: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

#[tokio::test]
async fn changes_from_a_foreign_host_or_origin_are_refused() {
    let mut server = start(AdminLimits::default(), Status::default()).await;
    let addr = server.addr;
    for (head, why) in [
        (
            format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example"),
            "Origin",
        ),
        (
            "POST /backends/web/a/drain HTTP/1.1\r\nHost: evil.example:80".to_string(),
            "Host",
        ),
        (
            format!(
                "POST /reload HTTP/1.1\r\nHost: rebound.example:{}",
                addr.port()
            ),
            "Host",
        ),
        ("POST /reload HTTP/1.0".to_string(), "Host"),
    ] {
        let (status, text) = exchange(addr, &head).await;
        assert_eq!(status, 403, "{head:?}: {text}");
        assert!(text.contains(why), "{head:?}: {text}");
    }
    assert!(
        server.commands.try_recv().is_err(),
        "a refused request reached the agent"
    );

    // The same request addressed to the listener goes through to the agent.
    let answer = tokio::spawn(async move {
        exchange(
            addr,
            &format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}"),
        )
        .await
    });
    match server.commands.recv().await {
        Some(Command::Reload(reply)) => {
            let _ = reply.send(Ok("config version 2 applied".into()));
        }
        other => panic!("expected a reload, got {other:?}"),
    }
    let (status, text) = answer.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{text}");
    // Reading needs no same-origin check.
    let (status, _) = exchange(addr, "GET /status HTTP/1.1\r\nHost: evil.example").await;
    assert_eq!(status, 200);
}

/// The agent's refusals reach the operator with their text and the code their type picks.
#[tokio::test]
async fn refused_commands_answer_with_their_text_and_code() {
    let mut server = start(AdminLimits::default(), Status::default()).await;
    let addr = server.addr;
    let refusals: [(&str, CommandError, u16, &str); 3] = [
        (
            "/backends/web/a/drain",
            BackendLookupError::NoPool { pool: "web".into() }.into(),
            404,
            "no pool named \"web\"",
        ),
        (
            "/node/drain",
            NothingAnnounced.into(),
            400,
            "this node announces nothing: the config has no [announce] section",
        ),
        (
            "/reload",
            ReloadError::Failed(ApplyError::AdminChanged).into(),
            400,
            "reload failed: [admin] changes need a restart of sluice (the admin API is how reloads arrive)",
        ),
    ];
    for (path, refusal, code, text) in refusals {
        let answer = tokio::spawn(async move {
            exchange(addr, &format!("POST {path} HTTP/1.1\r\nHost: {addr}")).await
        });
        let reply = match server.commands.recv().await {
            Some(
                Command::Reload(reply)
                | Command::Drain { reply, .. }
                | Command::Enable { reply, .. }
                | Command::DrainNode { reply, .. },
            ) => reply,
            None => panic!("the server dropped its command channel"),
        };
        let _ = reply.send(Err(refusal));
        let (status, body) = answer.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, code, "{path}: {body}");
        assert!(
            body.ends_with(&format!("\r\n\r\n{text}\n")),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_until_one_ends() {
    let limits = AdminLimits {
        max_connections: 2,
        ..AdminLimits::default()
    };
    let server = start(limits, Status::default()).await;
    let connect = || async {
        TcpStream::connect(server.addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    };
    let first = connect().await;
    let _second = connect().await;
    // Let the server accept both before the third arrives.
    let (status, _) = {
        let mut third = connect().await;
        closed_by_server(&mut third, Duration::from_secs(5)).await;
        drop(first);
        // The freed slot serves again (the server notices the close when it reads).
        let mut answer = None;
        for _ in 0..50 {
            let mut stream = connect().await;
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut raw = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut raw)).await;
            if raw.starts_with(b"HTTP/1.1 200") {
                answer = Some((200, String::from_utf8_lossy(&raw).into_owned()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answer.unwrap_or_else(|| panic!("no slot came free after a connection closed"))
    };
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_slow_head_and_an_idle_connection_are_cut() {
    let limits = AdminLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..AdminLimits::default()
    };
    let server = start(limits, Status::default()).await;
    let mut slow = TcpStream::connect(server.addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("a head that never ends kept its connection"));

    let limits = AdminLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(300),
        ..AdminLimits::default()
    };
    let server = start(limits, Status::default()).await;
    let mut idle = TcpStream::connect(server.addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    closed_by_server(&mut idle, Duration::from_secs(5)).await;
}

fn big_status(backends: usize) -> Status {
    Status {
        config_version: 3,
        config_path: "/etc/sluice.toml".into(),
        pools: vec![PoolStatus {
            name: "big".into(),
            policy: "maglev".into(),
            backends: (0..backends)
                .map(|i| BackendStatus {
                    name: format!("b{i}"),
                    address: format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255),
                    weight: 1,
                    healthy: i % 7 != 0,
                    drained: false,
                })
                .collect(),
        }],
        ..Status::default()
    }
}

#[tokio::test]
async fn the_page_and_its_json_stay_small_with_ten_thousand_backends() {
    let server = start(AdminLimits::default(), big_status(10_000)).await;
    let (status, page) = exchange(server.addr, "GET / HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 200);
    assert!(page.contains("text/html"), "{page}");
    assert!(page.contains("frame-ancestors 'none'"), "{page}");

    let (status, text) = exchange(server.addr, "GET /api/overview HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 200, "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let overview: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(overview["pools"][0]["backends"], 10_000);
    assert_eq!(
        overview["pools"][0]["healthy"],
        10_000 - 10_000_usize.div_ceil(7)
    );
    assert!(
        body.len() < 4096,
        "the overview lists no backend: {} bytes",
        body.len()
    );

    let (status, text) = exchange(
        server.addr,
        "GET /api/backends?pool=big&offset=9990&limit=50 HTTP/1.1\r\nHost: x",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let page: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(page["total"], 10_000);
    let rows = page["backends"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, 10, "the last page holds the last ten");
    assert_eq!(page["backends"][0]["name"], "b9990");

    for (query, want) in [
        ("pool=nope", 404),
        ("offset=1", 400),
        ("pool=big&limit=x", 400),
        ("pool=big&sort=name", 400),
        ("pool=%zz", 400),
    ] {
        let head = format!("GET /api/backends?{query} HTTP/1.1\r\nHost: x");
        let (status, text) = exchange(server.addr, &head).await;
        assert_eq!(status, want, "{query}: {text}");
    }
}
