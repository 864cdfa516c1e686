//! Test backends: small hyper servers (HTTP/1.1 and h2c on one port) that record every
//! request they receive whole, and answer by path:
//!
//! - `/status/NNN`: status NNN;
//! - `/sleep/MS`: after MS milliseconds;
//! - `/fail-slowly/MS`: 503 after MS milliseconds;
//! - `/trailers`: a body then `grpc-status: 0` trailers;
//! - `/big/N`: N bytes;
//! - `/echo`: the request body;
//! - anything else: the backend's name.
//!
//! A marker may follow a route prefix (`/least/sleep/1000`). Every answer carries
//! `x-backend: NAME`. Backends also count the connections they accept and keep the error of
//! each one that ended badly (a reset, a request cut short), and can change their [`Mode`]
//! while they run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice_tests::{Netns, NsTask};

/// How a backend behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers as described in the module documentation.
    Echo,
    /// Answers every request with this status.
    Status(u16),
    /// Accepts connections and closes them without answering.
    Reset,
    /// Reads requests and never answers.
    Hang,
}

/// A request as the backend received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP version on the backend connection.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Seen {
    /// A header's value as text, or "".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

struct Log {
    mode: Mutex<Mode>,
    heads: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    connection_errors: Mutex<Vec<String>>,
}

impl Log {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running backend.
pub struct Backend {
    /// Its name (also its `x-backend` header).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Log>,
    _task: NsTask<()>,
}

impl Backend {
    /// Binds `addr` in `ns` (before returning) and serves there.
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr, mode: Mode) -> Backend {
        let listener = ns
            .in_ns(|| std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("backend {name}: binding {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
        let log = Arc::new(Log {
            mode: Mutex::new(mode),
            heads: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            connection_errors: Mutex::new(Vec::new()),
        });
        let task = ns.spawn_task(serve(listener, name.to_string(), log.clone()));
        Backend {
            name: name.to_string(),
            addr,
            log,
            _task: task,
        }
    }

    /// Requests received whole (head and body).
    pub fn count(&self) -> usize {
        self.seen().len()
    }

    /// Request heads received, complete or not.
    pub fn heads(&self) -> usize {
        self.log.heads.load(Ordering::SeqCst)
    }

    /// Every request received whole, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// The error of every connection that ended with one (reset by the peer, closed in the
    /// middle of a request or response), in order.
    pub fn connection_errors(&self) -> Vec<String> {
        self.log
            .connection_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes how the backend answers from now on (requests already waiting keep theirs).
    pub fn set_mode(&self, mode: Mode) {
        *self.log.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// The last request received whole.
    pub fn last(&self) -> Seen {
        self.seen()
            .pop()
            .unwrap_or_else(|| panic!("backend {} received nothing", self.name))
    }
}

async fn serve(listener: std::net::TcpListener, name: String, log: Arc<Log>) {
    let listener = tokio::net::TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("tokio listener: {e}"));
    while let Ok((stream, _)) = listener.accept().await {
        log.connections.fetch_add(1, Ordering::SeqCst);
        if log.mode() == Mode::Reset {
            drop(stream);
            continue;
        }
        let (name, log) = (name.clone(), log.clone());
        tokio::spawn(async move {
            let conn_log = log.clone();
            let service = service_fn(move |req| answer(req, name.clone(), log.clone()));
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                conn_log
                    .connection_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.to_string());
            }
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    name: String,
    log: Arc<Log>,
) -> Result<Response<Body>, Infallible> {
    let mode = log.mode();
    log.heads.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        // An incomplete body: the request never fully reached us, so it is not counted.
        return Ok(text(StatusCode::BAD_REQUEST, "incomplete body"));
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    log.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    let mut response = match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Status(code) => text(StatusCode::from_u16(code).unwrap_or(StatusCode::OK), &name),
        Mode::Echo | Mode::Reset => by_path(&path, &name, body).await,
    };
    if let Ok(value) = HeaderValue::from_str(&name) {
        response.headers_mut().insert("x-backend", value);
    }
    Ok(response)
}

async fn by_path(path: &str, name: &str, body: Bytes) -> Response<Body> {
    let path = path.split('?').next().unwrap_or(path);
    // The marker may follow a route prefix: `/least/sleep/1000` sleeps too.
    let arg = |marker: &str| {
        let at = path.find(marker)?;
        path[at + marker.len()..].parse::<u64>().ok()
    };
    if let Some(code) = arg("/status/") {
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok());
        return text(status.unwrap_or(StatusCode::OK), name);
    }
    if let Some(ms) = arg("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::OK, name);
    }
    if let Some(ms) = arg("/fail-slowly/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text(StatusCode::SERVICE_UNAVAILABLE, name);
    }
    if let Some(n) = arg("/big/") {
        let bytes = Bytes::from(vec![b'x'; usize::try_from(n).unwrap_or(0)]);
        return Response::new(Full::new(bytes).boxed());
    }
    if path.starts_with("/echo") {
        return Response::new(Full::new(body).boxed());
    }
    if path.starts_with("/trailers") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("all-good"));
        let body = Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x02hi"))
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return response;
    }
    text(StatusCode::OK, name)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response
}

/// A WebSocket echo server on `addr` in `ns`: every message comes back as it was sent.
pub fn websocket_echo(ns: &Netns, addr: SocketAddr) -> NsTask<()> {
    let listener = ns
        .in_ns(|| std::net::TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("websocket backend: binding {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
    ns.spawn_task(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .unwrap_or_else(|e| panic!("tokio listener: {e}"));
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}
