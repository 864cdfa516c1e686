//! A gRPC backend spoken in HTTP/2 directly (the h2 crate), so a test can do what a
//! generated server would not: hold an answer, stream at a set pace, or die mid-stream.
//! Methods (the request's metadata sets the numbers):
//! - `/test.Echo/Unary`: answers the request's message after `x-delay-ms`.
//! - `/test.Echo/Stream`: `x-count` messages, one every `x-interval-ms`, then status OK.
//! - `/test.Echo/Die`: one message, then the whole connection is dropped (the process dying,
//!   as the proxy sees it).
//! - `/grpc.health.v1.Health/Check`: the serving status the test sets
//!   ([`GrpcBackend::set_serving`]), for any service name.
//!
//! Messages are gRPC's length-prefixed frames; the health answer is a hand-encoded
//! `HealthCheckResponse` (field 1, varint status).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::{Netns, NsTask};

/// A running backend; dropping it stops it and every connection it has.
pub struct GrpcBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    serving: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    _task: NsTask<()>,
}

impl GrpcBackend {
    /// Starts a backend on `addr` inside `ns`, serving; returns once it listens.
    pub fn start(ns: &Netns, addr: SocketAddr) -> GrpcBackend {
        let serving = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = Shared {
            serving: serving.clone(),
            calls: calls.clone(),
        };
        let task = ns.spawn_task(async move {
            let listener = TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("binding the gRPC backend to {addr}: {e}"));
            let _ = ready_tx.send(());
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(connection(stream, shared.clone()));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the gRPC backend on {addr} did not start: {e}"));
        GrpcBackend {
            addr,
            serving,
            calls,
            _task: task,
        }
    }

    /// What `grpc.health.v1.Health/Check` answers from now on: SERVING or NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Relaxed);
    }

    /// Calls of the test methods so far (health checks not counted).
    pub fn calls(&self) -> usize {
        self.calls.load(Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    serving: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

/// Serves one HTTP/2 connection until the client leaves or a `Die` call drops it.
async fn connection(stream: TcpStream, shared: Shared) {
    let Ok(mut conn) = h2::server::handshake(stream).await else {
        return;
    };
    let die = Arc::new(Notify::new());
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            () = die.notified() => return,
        };
        let Some(Ok((request, respond))) = next else {
            return;
        };
        tokio::spawn(call(request, respond, shared.clone(), die.clone()));
    }
}

fn metadata(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A gRPC message frame: uncompressed flag, big-endian length, the bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

fn status_trailers(code: u8) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    trailers
}

async fn call(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: Shared,
    die: Arc<Notify>,
) {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let mut body = request.into_body();
    let mut message = BytesMut::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let head = Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap_or_default();
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    match path.as_str() {
        "/grpc.health.v1.Health/Check" => {
            // HealthCheckResponse { status = 1 (SERVING) | 2 (NOT_SERVING) }: field 1, varint.
            let status = if shared.serving.load(Relaxed) { 1 } else { 2 };
            let _ = send.send_data(frame(&[0x08, status]), false);
            let _ = send.send_trailers(status_trailers(0));
        }
        "/test.Echo/Unary" => {
            shared.calls.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(metadata(&headers, "x-delay-ms"))).await;
            // The request's frame goes back as it came.
            let _ = send.send_data(message.freeze(), false);
            let _ = send.send_trailers(status_trailers(0));
        }
        "/test.Echo/Stream" => {
            shared.calls.fetch_add(1, Relaxed);
            let interval = Duration::from_millis(metadata(&headers, "x-interval-ms"));
            for i in 0..metadata(&headers, "x-count") {
                tokio::time::sleep(interval).await;
                if send.send_data(frame(&i.to_be_bytes()), false).is_err() {
                    return;
                }
            }
            let _ = send.send_trailers(status_trailers(0));
        }
        "/test.Echo/Die" => {
            shared.calls.fetch_add(1, Relaxed);
            let _ = send.send_data(frame(b"last words"), false);
            // Let the frame leave before the connection goes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            die.notify_one();
        }
        _ => {
            let _ = send.send_trailers(status_trailers(12));
        }
    }
}
