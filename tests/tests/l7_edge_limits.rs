//! Stalls and floods against the HTTP edge: a client that stops reading is cut by
//! `send_timeout` and frees its backend connection; each circuit breaker trips with a 503
//! naming its limit and recovers; one client address cannot take more than
//! `max_connections_per_client`; a thousand one-byte HTTP/2 prefaces cost almost no CPU;
//! clients aborting a thousand uploads eject nobody; an idle WebSocket tunnel is closed.

mod l7_support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use l7_support::backend::websocket_echo;
use l7_support::client::{H1, get, raw, read_until_closed};
use l7_support::{Backend, Lab, Mode, forward_all, local, pool, pool_at, service};
use sluice_tests::{eventually, eventually_async, privileged, raise_open_files_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn lab_with(pool_extra: &str, l7: &str, mode: Mode) -> (Lab, Backend, std::net::SocketAddr) {
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), mode);
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool("app", &[&app], &[], pool_extra),
        service("limits", listen, l7),
        forward_all("app")
    ));
    (lab, app, listen)
}

#[test]
fn a_client_that_stops_reading_is_cut_by_the_send_timeout() {
    if !privileged() {
        return;
    }
    let (lab, app, listen) = lab_with(
        "",
        "[service.l7.limits]\nsend_timeout = \"1s\"\n",
        Mode::Echo,
    );
    const SIZE: usize = 64 << 20;
    let (read, elapsed) = lab.run(async move {
        let mut stream = TcpStream::connect(listen).await.expect("connect");
        let head = format!("GET /big/{SIZE} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut first = [0u8; 1024];
        stream
            .read_exact(&mut first)
            .await
            .expect("the response starts");
        // Stop reading: the proxy's writes back up, and must give up after 1 s.
        let stalled = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let rest = read_until_closed(&mut stream, Duration::from_secs(20)).await;
        (first.len() + rest.len(), stalled.elapsed())
    });
    assert!(
        read < SIZE,
        "the whole {SIZE}-byte body arrived: the stalled client was never cut"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "the connection stayed open"
    );
    // The response was abandoned mid-body, so the backend connection was closed, not pooled.
    eventually(Duration::from_secs(10), || {
        if app.connection_errors().is_empty() {
            Err("the backend connection of the stalled response is still open".to_string())
        } else {
            Ok(())
        }
    });
    let reply = lab.run(async move {
        H1::connect(listen)
            .await
            .expect("c")
            .send(get("a.test", "/"))
            .await
    });
    assert_eq!(
        reply.expect("reply").status,
        200,
        "the listener still serves"
    );
    lab.stop();
}

/// `n` requests for `path`, each on its own connection, started `gap` apart; their status
/// codes and `x-sluice-overloaded` headers, in start order.
fn concurrent(
    lab: &Lab,
    listen: std::net::SocketAddr,
    path: &'static str,
    n: usize,
    gap: Duration,
) -> Vec<(u16, String)> {
    lab.run(async move {
        let mut tasks = Vec::new();
        for _ in 0..n {
            tasks.push(tokio::spawn(async move {
                let reply = H1::connect(listen)
                    .await
                    .expect("connect")
                    .send(get("a.test", path))
                    .await
                    .expect("reply");
                (reply.status.as_u16(), reply.header("x-sluice-overloaded"))
            }));
            tokio::time::sleep(gap).await;
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("task"));
        }
        out
    })
}

fn overflow(lab: &Lab, limit: &str) -> f64 {
    lab.metric(&format!(
        "sluice_l7_pool_overflow_total{{pool=\"app\",limit=\"{limit}\"}}"
    ))
}

#[test]
fn max_requests_trips_and_recovers() {
    if !privileged() {
        return;
    }
    let (lab, _app, listen) = lab_with("circuit_breakers = { max_requests = 2 }", "", Mode::Echo);
    let replies = concurrent(&lab, listen, "/sleep/1500", 3, Duration::from_millis(200));
    assert_eq!(replies[0].0, 200);
    assert_eq!(replies[1].0, 200);
    assert_eq!(replies[2], (503, "max_requests".to_string()), "{replies:?}");
    assert_eq!(overflow(&lab, "max_requests"), 1.0);
    let replies = concurrent(&lab, listen, "/sleep/100", 2, Duration::ZERO);
    assert!(replies.iter().all(|r| r.0 == 200), "recovered: {replies:?}");
    lab.stop();
}

#[test]
fn pending_requests_wait_for_a_connection_within_their_limit() {
    if !privileged() {
        return;
    }
    let (lab, app, listen) = lab_with(
        "circuit_breakers = { max_connections = 1, max_pending_requests = 1 }",
        "",
        Mode::Echo,
    );
    let replies = concurrent(&lab, listen, "/sleep/1500", 3, Duration::from_millis(300));
    assert_eq!(replies[0].0, 200);
    assert_eq!(
        replies[1].0, 200,
        "the pending request waited for the connection"
    );
    assert_eq!(
        replies[2],
        (503, "max_pending_requests".to_string()),
        "{replies:?}"
    );
    assert_eq!(
        app.connections(),
        1,
        "never more than one backend connection"
    );
    let replies = concurrent(&lab, listen, "/", 2, Duration::from_millis(50));
    assert!(replies.iter().all(|r| r.0 == 200), "recovered: {replies:?}");
    assert_eq!(overflow(&lab, "max_pending_requests"), 1.0);
    lab.stop();
}

#[test]
fn max_connections_without_a_queue_refuses_at_once() {
    if !privileged() {
        return;
    }
    let (lab, _app, listen) = lab_with(
        "circuit_breakers = { max_connections = 1, max_pending_requests = 0 }",
        "",
        Mode::Echo,
    );
    let replies = concurrent(&lab, listen, "/sleep/1500", 2, Duration::from_millis(300));
    assert_eq!(replies[0].0, 200);
    assert_eq!(
        replies[1],
        (503, "max_connections".to_string()),
        "{replies:?}"
    );
    let replies = concurrent(&lab, listen, "/", 1, Duration::ZERO);
    assert_eq!(replies[0].0, 200, "recovered");
    lab.stop();
}

#[test]
fn max_retries_stops_retries_not_requests() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let app = Backend::start(&lab.ns, "app", local(9001), Mode::Status(503));
    let listen = local(8080);
    lab.start(&format!(
        "{}{}\
         [[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"app\" }}\n\
         retry = {{ on = [\"503\"], attempts = 2, budget_percent = 100 }}\n",
        pool("app", &[&app], &[], "circuit_breakers = { max_retries = 0 }"),
        service("limits", listen, ""),
    ));
    let replies = concurrent(&lab, listen, "/", 3, Duration::from_millis(50));
    assert!(
        replies.iter().all(|r| r.0 == 503 && r.1.is_empty()),
        "the backend's own 503s: {replies:?}"
    );
    assert_eq!(app.count(), 3, "no retry was sent");
    assert_eq!(overflow(&lab, "max_retries"), 3.0);
    lab.stop();
}

#[test]
fn one_client_cannot_take_more_than_its_connections() {
    if !privileged() {
        return;
    }
    let (lab, _app, listen) = lab_with(
        "",
        "[service.l7.limits]\nmax_connections_per_client = 2\n",
        Mode::Echo,
    );
    lab.run(async move {
        let mut first = H1::connect(listen).await.expect("first");
        let mut second = H1::connect(listen).await.expect("second");
        assert_eq!(first.send(get("a.test", "/")).await.expect("1").status, 200);
        assert_eq!(
            second.send(get("a.test", "/")).await.expect("2").status,
            200
        );
        let refused = raw(
            listen,
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
            Duration::from_secs(3),
        )
        .await
        .expect("connects, then is closed");
        assert_eq!(
            refused, "",
            "a third connection from the same address is closed unanswered"
        );
        drop(first);
        eventually_async(Duration::from_secs(5), || async move {
            let reply = raw(
                listen,
                b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                Duration::from_secs(3),
            )
            .await?;
            if reply.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(format!("not admitted again yet: {reply:?}"))
            }
        })
        .await;
        drop(second);
    });
    let refused =
        lab.metric("sluice_l7_connections_refused_total{service=\"limits\",reason=\"per_client\"}");
    assert!(refused >= 1.0, "refusals counted: {refused}");
    lab.stop();
}

/// CPU time (user + system) the process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

#[test]
fn a_thousand_one_byte_prefaces_cost_almost_nothing() {
    if !privileged() {
        return;
    }
    raise_open_files_limit().expect("raising the open files limit");
    let (lab, _app, listen) = lab_with(
        "",
        "[service.l7.limits]\nheader_read_timeout = \"10s\"\n",
        Mode::Echo,
    );
    let pid = lab.agent().pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "sluice", "measuring the agent's own CPU");
    let (spent, held) = lab.run(async move {
        let mut flood = Vec::new();
        for _ in 0..1000 {
            let mut stream = TcpStream::connect(listen).await.expect("connect");
            // The first byte of "PRI * HTTP/2.0...": the listener cannot tell yet.
            stream.write_all(b"P").await.expect("write");
            flood.push(stream);
        }
        // Let every connection be accepted and parked.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cpu_time(pid);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let spent = cpu_time(pid).saturating_sub(before);
        let held = flood.len();
        let reply = H1::connect(listen)
            .await
            .expect("connect")
            .send(get("a.test", "/"))
            .await;
        assert_eq!(reply.expect("served during the flood").status, 200);
        drop(flood);
        (spent, held)
    });
    assert_eq!(held, 1000);
    eprintln!("1000 parked one-byte prefaces: the agent used {spent:?} of CPU in 3 s");
    assert!(
        spent < Duration::from_millis(300),
        "parked connections cost {spent:?} of CPU in 3 s"
    );
    lab.stop();
}

#[test]
fn clients_aborting_uploads_eject_nobody() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let a = Backend::start(&lab.ns, "a", local(9001), Mode::Echo);
    let b = Backend::start(&lab.ns, "b", local(9002), Mode::Echo);
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool(
            "app",
            &[&a, &b],
            &[],
            "outlier_detection = { consecutive_failures = 3, max_ejected_percent = 100 }"
        ),
        service("uploads", listen, ""),
        forward_all("app")
    ));
    lab.run(async move {
        for _ in 0..20 {
            let mut batch = Vec::new();
            for _ in 0..50 {
                batch.push(tokio::spawn(async move {
                    let Ok(mut stream) = TcpStream::connect(listen).await else {
                        return;
                    };
                    let head =
                        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&[b'x'; 1000]).await;
                    // Give the proxy time to start the upload, then abort it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(stream);
                }));
            }
            for task in batch {
                let _ = task.await;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let metrics = lab.metrics();
    for backend in ["a", "b"] {
        let series =
            format!("sluice_backend_ejections_total{{pool=\"app\",backend=\"{backend}\"}}");
        let ejections = l7_support::admin::sample(&metrics, &series).unwrap_or(0.0);
        assert_eq!(
            ejections, 0.0,
            "{backend} was ejected by client aborts:\n{metrics}"
        );
        assert_eq!(lab.backend_healthy("app", backend), Some(true));
    }
    let served: Vec<String> = lab.run(async move {
        let mut h1 = H1::connect(listen).await.expect("connect");
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(h1.send(get("a.test", "/")).await.expect("reply").text());
        }
        names
    });
    assert!(
        served.contains(&"a".to_string()) && served.contains(&"b".to_string()),
        "{served:?}"
    );
    lab.stop();
}

#[test]
fn an_idle_websocket_tunnel_is_closed() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let _ws = websocket_echo(&lab.ns, local(9001));
    let listen = local(8080);
    lab.start(&format!(
        "{}{}{}",
        pool_at("ws", &[local(9001)], ""),
        service(
            "ws",
            listen,
            "[service.l7.limits]\ntunnel_idle_timeout = \"1s\"\n"
        ),
        forward_all("ws"),
    ));
    let closed_after = lab.run(async move {
        let stream = TcpStream::connect(listen).await.expect("connect");
        let (mut ws, _) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
            .await
            .expect("upgrade");
        ws.send(Message::text("hello")).await.expect("send");
        let echo = ws.next().await.expect("echo").expect("frame");
        assert_eq!(echo, Message::text("hello"));
        let idle = Instant::now();
        // Nothing moves: the tunnel must end within two idle periods.
        let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        assert!(
            matches!(end, Ok(None) | Ok(Some(Err(_)))),
            "the idle tunnel stayed open: {end:?}"
        );
        idle.elapsed()
    });
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early: {closed_after:?}"
    );
    lab.stop();
}

#[test]
fn an_http2_client_that_stops_reading_one_stream_frees_its_backend_connection() {
    if !privileged() {
        return;
    }
    let (lab, app, listen) = lab_with(
        "",
        "[service.l7.limits]\nsend_timeout = \"1s\"\n",
        Mode::Echo,
    );
    let second = lab.run(async move {
        let stream = TcpStream::connect(listen).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        tokio::spawn(conn);
        let big = http::Request::get("http://a.test/big/67108864")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        // The head arrives; the body is never read, so this stream's window is never granted
        // again while the connection itself stays busy and alive.
        let unread = sender.send_request(big).await.expect("response head");
        assert_eq!(unread.status(), 200);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let small = http::Request::get("http://a.test/")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let status = sender
            .send_request(small)
            .await
            .expect("another stream")
            .status();
        drop(unread);
        status
    });
    assert_eq!(second, 200, "the client's other streams are still served");
    assert!(
        !app.connection_errors().is_empty(),
        "the backend connection of the unread stream was never closed"
    );
    lab.stop();
}

/// Sets the soft open-files limit of process `pid` (the hard limit stays).
fn set_open_files(pid: u32, soft: impl std::fmt::Display) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .unwrap_or_else(|e| panic!("running prlimit (util-linux): {e}"));
    assert!(status.success(), "prlimit --nofile={soft} failed");
}

/// The soft open-files limit of process `pid`.
fn open_files_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("no open-files limit in /proc/{pid}/limits:\n{limits}"))
        .to_owned()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn out_of_file_descriptors_the_listener_backs_off_and_recovers() {
    if !privileged() {
        return;
    }
    let (lab, _app, listen) = lab_with("", "", Mode::Echo);
    let pid = lab.agent().pid();
    let limit = open_files_limit(pid);
    let before = open_files(pid);
    // Room for one more descriptor: accepting fails with EMFILE from the second client on.
    set_open_files(pid, before + 1);
    let spent = lab.run(async move {
        let mut waiting = Vec::new();
        for _ in 0..20 {
            waiting.push(
                TcpStream::connect(listen)
                    .await
                    .expect("the kernel completes the handshake"),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = cpu_time(pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let spent = cpu_time(pid).saturating_sub(cpu);
        drop(waiting);
        spent
    });
    eprintln!("accepting at the descriptor limit for 2 s cost {spent:?} of CPU");
    assert!(
        spent < Duration::from_millis(400),
        "the accept loop spun: {spent:?} of CPU in 2 s"
    );
    let log = lab.log();
    assert!(
        log.contains("accepting a connection failed"),
        "the failure is logged:\n{log}"
    );
    set_open_files(pid, &limit);
    eventually(Duration::from_secs(10), || {
        l7_support::admin::fetch(&lab.ns, l7_support::admin::ADMIN, "GET", "/healthz")
            .and_then(|a| if a.status == 200 { Ok(()) } else { Err(a.body) })
    });
    eventually(Duration::from_secs(10), || {
        lab.run(async move {
            let mut h1 = H1::connect(listen).await?;
            let reply = h1.send(get("a.test", "/")).await?;
            if reply.status == 200 {
                Ok(())
            } else {
                Err(format!("status {}", reply.status))
            }
        })
    });
    lab.stop();
}
