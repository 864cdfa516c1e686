//! The admin HTTP server (HTTP/1.1, hyper).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::conn::{AdminLimits, MAX_ACCEPT_BACKOFF};
use super::flow;
use super::guard::check_same_origin;
use super::overview::{DEFAULT_PAGE, Live};
use super::page::page;
use super::{Command, Reply, Status};
use crate::idle::Watched;
use crate::metrics::Metrics;

/// What the server reads and whom it asks.
pub struct AdminServer {
    pub metrics: Arc<Metrics>,
    pub metrics_path: String,
    pub status: watch::Receiver<Arc<Status>>,
    pub commands: mpsc::Sender<Command>,
    /// Required as a bearer token when set.
    pub token: Option<String>,
    /// False until the agent has applied its config and attached.
    pub ready: watch::Receiver<bool>,
    /// Counters and health for the status page.
    pub live: Live,
    /// Connection cap, timeouts and accept back-off.
    pub limits: AdminLimits,
}

/// Serves the admin API on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, server: AdminServer, mut stop: watch::Receiver<bool>) {
    let server = Arc::new(server);
    let limits = server.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin API listening");
    }
    let mut backoff = limits.accept_backoff;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    backoff = limits.accept_backoff;
                    conn
                }
                Err(err) => {
                    // EMFILE and friends persist until something closes: pause rather than spin.
                    warn!(error = %err, pause = ?backoff, "admin API accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, max = limits.max_connections, "admin API connection cap reached; closing");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let _slot = slot;
            let (stream, activity) = Watched::new(stream);
            let service = service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(handle(&server, req, peer, local).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = conn => {
                    if let Err(err) = result {
                        debug!(%peer, error = %err, "admin connection ended with an error");
                    }
                }
                () = activity.idle_for(limits.idle_timeout) => {
                    debug!(%peer, "admin connection idle too long; closing");
                }
            }
        });
    }
}

async fn handle(
    server: &AdminServer,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    // The page itself holds no data; it asks for the token and sends it with each call.
    let is_page = req.method() == Method::GET && path == "/";
    if let Some(token) = server.token.as_ref().filter(|_| !is_page) {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            warn!(%peer, path = req.uri().path(), "admin request without a valid bearer token");
            return text(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required\n",
            );
        }
    } else if req.method() == Method::POST
        && let Err(foreign) = check_same_origin(req.headers(), local)
    {
        warn!(%peer, path = req.uri().path(), "refused a cross-origin admin request: {foreign}");
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "{foreign}; without a token, changes are accepted only from clients addressing {local}\n"
            ),
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let query = req.uri().query().unwrap_or("");
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => page(),
        (&Method::GET, ["api", "overview"]) => {
            let status = Arc::clone(&server.status.borrow());
            json(&server.live.overview(&status, &server.metrics))
        }
        (&Method::GET, ["api", "backends"]) => backends_page(server, query),
        (&Method::GET, ["debug", "flow"]) => debug_flow(server, query),
        (&Method::GET, ["discovery"]) => respond(
            StatusCode::OK,
            "application/json",
            super::discovery::body(&server.status.borrow()),
        ),
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["ready"]) => {
            if *server.ready.borrow() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        (&Method::GET, ["status"]) => {
            let status = Arc::clone(&server.status.borrow());
            match serde_json::to_string_pretty(&*status) {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
            }
        }
        (&Method::GET, _) if path == server.metrics_path => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            server.metrics.render(),
        ),
        (&Method::POST, ["reload"]) => ask(server, Command::Reload).await,
        (&Method::POST, ["backends", pool, backend, action]) => {
            let (Some(pool), Some(backend)) = (decode(pool), decode(backend)) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "bad percent-encoding in the path\n",
                );
            };
            match *action {
                "drain" => {
                    ask(server, |reply| Command::Drain {
                        pool,
                        backend,
                        reply,
                    })
                    .await
                }
                "enable" => {
                    ask(server, |reply| Command::Enable {
                        pool,
                        backend,
                        reply,
                    })
                    .await
                }
                _ => text(
                    StatusCode::NOT_FOUND,
                    "unknown backend action (drain or enable)\n",
                ),
            }
        }
        (&Method::POST, ["node", action @ ("drain" | "undrain")]) => {
            let drain = *action == "drain";
            ask(server, |reply| Command::DrainNode { drain, reply }).await
        }
        (_, ["healthz" | "ready" | "status" | "reload" | ""])
        | (_, ["backends" | "api" | "debug" | "node", ..]) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /api/backends?pool=NAME&offset=N&limit=N`.
fn backends_page(server: &AdminServer, query: &str) -> Response<Full<Bytes>> {
    let mut pool = None;
    let (mut offset, mut limit) = (0, DEFAULT_PAGE);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = decode(&value.replace('+', " ")) else {
            return text(
                StatusCode::BAD_REQUEST,
                "bad percent-encoding in the query\n",
            );
        };
        let number = || value.parse::<usize>().ok();
        match key {
            "pool" => pool = Some(value.clone()),
            "offset" => match number() {
                Some(n) => offset = n,
                None => return text(StatusCode::BAD_REQUEST, "offset must be a number\n"),
            },
            "limit" => match number() {
                Some(n) => limit = n,
                None => return text(StatusCode::BAD_REQUEST, "limit must be a number\n"),
            },
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown query parameter {key:?} (pool, offset, limit)\n"),
                );
            }
        }
    }
    let Some(pool) = pool else {
        return text(StatusCode::BAD_REQUEST, "the pool parameter is required\n");
    };
    let status = Arc::clone(&server.status.borrow());
    match server.live.backends(&status, &pool, offset, limit) {
        Some(page) => json(&page),
        None => text(StatusCode::NOT_FOUND, &format!("no pool named {pool:?}\n")),
    }
}

/// `GET /debug/flow?proto=&src=&dst=&host=&path=`.
fn debug_flow(server: &AdminServer, query: &str) -> Response<Full<Bytes>> {
    let (flow, host, path) = match flow::parse_query(query) {
        Ok(parsed) => parsed,
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    };
    let status = Arc::clone(&server.status.borrow());
    match flow::explain(&server.live, &status, &flow, host.as_deref(), &path) {
        Ok(explanation) => json(&explanation),
        Err(err @ flow::FlowError::BadQuery(_)) => {
            text(StatusCode::BAD_REQUEST, &format!("{err}\n"))
        }
        Err(err) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{err}\n")),
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(value) {
        Ok(json) => respond(StatusCode::OK, "application/json", json),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err}\n")),
    }
}

/// Sends a command to the agent and turns its answer into a response.
async fn ask(
    server: &AdminServer,
    command: impl FnOnce(Reply) -> Command,
) -> Response<Full<Bytes>> {
    let (reply, answer) = oneshot::channel();
    if server.commands.send(command(reply)).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down\n",
        );
    }
    match answer.await {
        Ok(Ok(message)) => text(StatusCode::OK, &format!("{message}\n")),
        Ok(Err(refused)) => text(refused.status(), &format!("{refused}\n")),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Decodes a percent-encoded path segment; `None` for bad escapes or non-UTF-8.
pub(super) fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Compares without an early exit, so response timing does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("10.0.0.1%3A80").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(decode("web").as_deref(), Some("web"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%FF"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
