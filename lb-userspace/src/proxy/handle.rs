//! One request, from head to response: which host and route it is for, the answers the
//! proxy gives itself (redirects, direct responses, 404, errors), and the record that logs
//! and counts it when the response ends. Forwarding is in `exchange`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, LOCATION, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tracing::debug;

use super::access_log::RequestRecord;
use super::body::ResponseBody;
use super::conn_io::{ConnGuard, ConnShared};
use super::error::{ErrorKind, ProxyError};
use super::exchange;
use super::forward::{edit_headers, redirect_location};
use super::request_head;
use super::route::{Action, RequestView, split_host_port};
use super::state::ListenerState;

/// Names the circuit breaker that refused a request (Envoy says `x-envoy-overloaded`).
static X_SLUICE_OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-sluice-overloaded");

/// What every request on a connection shares.
pub struct ConnCtx {
    /// The listener's current state, read anew by each request (reloads apply at once).
    pub listener: Arc<ArcSwap<ListenerState>>,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP, ready for X-Forwarded-For.
    pub client_ip: HeaderValue,
    /// Whether the connection is TLS.
    pub https: bool,
    /// The connection's timers and flags.
    pub shared: Arc<ConnShared>,
}

/// The hyper service: answers `request`. Never fails; errors become responses.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    request: Request<Incoming>,
    guard: ConnGuard,
) -> Result<Response<ResponseBody>, Infallible> {
    let state = ctx.listener.load_full();
    let mut record = RequestRecord {
        service: state.service.clone(),
        start: Instant::now(),
        client: ctx.client,
        host: None,
        method: request.method().clone(),
        // Only the access log reads it: no copy per request when the log is off.
        path: state
            .access_log
            .then(|| request.uri().path_and_query().cloned())
            .flatten(),
        status: 0,
        route: None,
        pool: None,
        upstream: None,
        backend_guard: None,
        access_log: state.access_log,
        _conn: guard,
    };
    let h1 = request.version() < Version::HTTP_2;
    let mut response = match respond(&ctx, &state, request, &mut record).await {
        Ok(response) => response,
        Err(err) => error_response(&err, h1),
    };
    record.status = response.status().as_u16();
    if record.upstream.is_none() {
        state.stats.local_response(record.status);
    }
    response.body_mut().set_record(record);
    Ok(response)
}

async fn respond(
    ctx: &ConnCtx,
    state: &ListenerState,
    request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, ProxyError> {
    let h1 = request.version() < Version::HTTP_2;
    // hyper resolves Content-Length + Transfer-Encoding to chunked and drops the length;
    // such a request is a smuggling attempt or a broken client: refuse it, never forward it.
    if h1
        && ctx.shared.take_content_length_seen()
        && request.headers().contains_key(TRANSFER_ENCODING)
    {
        return Err(ProxyError::with_source(
            ErrorKind::ClientRequest,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let mut request = request;
    let host = request_head::prepare(&mut request, state.paths)?;
    record.host = Some(host.clone());
    let Ok(host_str) = host.to_str() else {
        return Err(ProxyError::with_source(
            ErrorKind::ClientRequest,
            "Host is not text",
        ));
    };
    if request.method() == Method::CONNECT {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED));
    }
    if let Some(port) = state.redirect_to_https {
        return Ok(redirect_to_https(host_str, port, &request));
    }
    let Some(routes) = &state.routes else {
        return Ok(plain(StatusCode::NOT_FOUND));
    };
    let view = RequestView {
        method: request.method(),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: request.headers(),
    };
    let Some(route) = routes.find(host_str, &view) else {
        return Ok(plain(StatusCode::NOT_FOUND));
    };
    record.route = Some((route.name.clone(), route.stats.clone()));
    let mut response = match &route.action {
        Action::Direct { status, body } => {
            let mut response = Response::new(ResponseBody::full(body.clone()));
            *response.status_mut() = *status;
            response
        }
        Action::Redirect(redirect) => {
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            let location = redirect_location(redirect, ctx.https, host_str, &path);
            let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
            redirect_response(status, &location)
        }
        Action::Forward(pools) => {
            let forwarded =
                exchange::forward(ctx, state, route, pools, request, &host, record).await;
            match forwarded {
                Ok(response) => response,
                Err(err) => error_response(&err, h1),
            }
        }
    };
    edit_headers(
        response.headers_mut(),
        &route.response_headers_remove,
        &route.response_headers_add,
    );
    Ok(response)
}

fn redirect_to_https(host: &str, port: u16, request: &Request<Incoming>) -> Response<ResponseBody> {
    let (name, _) = split_host_port(host);
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    };
    redirect_response(StatusCode::MOVED_PERMANENTLY, &location)
}

fn redirect_response(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::new()));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// A short text answer for `status`.
fn plain(status: StatusCode) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The answer for a failed request; HTTP/1 connections whose framing cannot be trusted
/// any more are closed after it.
pub fn error_response(err: &ProxyError, h1: bool) -> Response<ResponseBody> {
    debug!(error = %err, "request failed");
    let mut response = plain(err.status());
    if let ErrorKind::Overloaded(limit) = err.kind() {
        response.headers_mut().insert(
            X_SLUICE_OVERLOADED.clone(),
            HeaderValue::from_static(limit.name()),
        );
    }
    if h1 && err.closes_connection() {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
