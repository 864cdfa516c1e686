//! One request, as stages: the codec's checks, normalise, route, pick a pool (forward
//! routes), filters, then the answer (forward, redirect, direct response) and the filters'
//! response phase. The record made here logs and counts the request when its response ends.
//! Forwarding is in `exchange`, the proxy's own answers in `local_reply`; `pick` is the one
//! place a pool and each try's backend are chosen.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::TRANSFER_ENCODING;
use http::{Method, Request, Response, StatusCode, request};
use hyper::body::Incoming;

use super::access_log::RequestRecord;
use super::body::ResponseBody;
use super::conn_io::ConnGuard;
use super::error::{ErrorKind, ProxyError};
use super::exchange;
use super::filter::{FilterRequest, Learned};
use super::forward::redirect_location;
use super::grpc;
use super::listener::ConnCtx;
use super::local_reply::{LocalReply, ReplyTo, local_reply, redirect};
use super::request_head;
use super::route::{Action, RequestView, Route, split_host_port};
use super::state::ListenerState;

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
        learned: Learned::default(),
        _conn: guard,
    };
    let to = ReplyTo::of(&request);
    let mut response = match respond(&ctx, &state, request, &mut record).await {
        Ok(response) => response,
        Err(err) => local_reply(LocalReply::Error(&err), to),
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
    let to = ReplyTo::of(&request);
    let h1 = to.h1;
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
    client_identity(ctx, state, &mut request, record);
    record.host = Some(host.clone());
    let Ok(host_str) = host.to_str() else {
        return Err(ProxyError::with_source(
            ErrorKind::ClientRequest,
            "Host is not text",
        ));
    };
    if request.method() == Method::CONNECT {
        return Ok(local_reply(
            LocalReply::Status(StatusCode::METHOD_NOT_ALLOWED),
            to,
        ));
    }
    if let Some(port) = state.redirect_to_https {
        return Ok(redirect_to_https(host_str, port, &request));
    }
    let Some(route) = find_route(state, host_str, &request) else {
        return Ok(local_reply(LocalReply::Status(StatusCode::NOT_FOUND), to));
    };
    record.route = Some((route.name.clone(), route.stats.clone()));
    // The route's deadline covers its filters and the exchange; a gRPC client's own
    // deadline (grpc-timeout) shortens it, and so does the route's timeout when it is off.
    let client_timeout = to.grpc.then(|| grpc::timeout(request.headers())).flatten();
    let client_deadline = client_timeout.is_some_and(|c| route.timeout.is_none_or(|r| c < r));
    let timeout = if client_deadline {
        client_timeout
    } else {
        route.timeout
    };
    // Off: a sleep that never ends in practice (tokio caps it at its far future).
    let mut deadline = Box::pin(tokio::time::sleep(timeout.unwrap_or(Duration::MAX)));
    let (mut parts, body) = request.into_parts();
    let outbound = match &route.action {
        Action::Forward(pools) => {
            let mut outbound =
                exchange::prepare(ctx, state, route, pools, &mut parts, &host, record)?;
            outbound.set_client_deadline(client_deadline);
            Some(outbound)
        }
        Action::Redirect(_) | Action::Direct { .. } => None,
    };
    let mut filtered = FilterRequest {
        method: &parts.method,
        uri: &mut parts.uri,
        headers: &mut parts.headers,
        client: ctx.client,
        learned: &mut record.learned,
    };
    let (ran, denied) = route
        .chain
        .on_request(&mut filtered, deadline.as_mut())
        .await;
    if record.learned.query_redacted && record.path.is_some() {
        record.path = parts.uri.path_and_query().cloned();
    }
    let mut response = match (denied, outbound) {
        (Some(deny), _) => local_reply(LocalReply::Denied(deny), to),
        (None, Some(outbound)) => {
            let forwarded = exchange::forward(
                ctx, state, route, outbound, parts, body, &host, deadline, record,
            )
            .await;
            match forwarded {
                Ok(response) => response,
                Err(err) => local_reply(LocalReply::Error(&err), to),
            }
        }
        (None, None) => own_answer(route, ctx.https, host_str, &parts),
    };
    route
        .chain
        .on_response(ran, response.headers_mut(), &record.learned);
    Ok(response)
}

/// Puts the connection's verified certificate identity on the request, before routing so
/// routes may match on it: it becomes the principal the filters start with, and replaces
/// any client-sent copy of the listener's `client_cert_header` (removed even when the
/// client has no certificate).
fn client_identity(
    ctx: &ConnCtx,
    state: &ListenerState,
    request: &mut Request<Incoming>,
    record: &mut RequestRecord,
) {
    if let Some(name) = &state.client_cert_header {
        let headers = request.headers_mut();
        headers.remove(name);
        if let Some(cert) = &ctx.client_cert {
            headers.insert(name.clone(), cert.header.clone());
        }
    }
    if let Some(cert) = &ctx.client_cert {
        record.learned.principal = Some(cert.principal.clone());
    }
}

/// The route `request` takes, if any.
fn find_route<'s>(
    state: &'s ListenerState,
    host: &str,
    request: &Request<Incoming>,
) -> Option<&'s Route> {
    let view = RequestView {
        method: request.method(),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: request.headers(),
    };
    state.routes.as_ref()?.find(host, &view)
}

/// The answer of a route that does not forward: its redirect or direct response.
fn own_answer(
    route: &Route,
    https: bool,
    host: &str,
    parts: &request::Parts,
) -> Response<ResponseBody> {
    match &route.action {
        Action::Direct { status, body } => {
            let mut response = Response::new(ResponseBody::full(body.clone()));
            *response.status_mut() = *status;
            response
        }
        Action::Redirect(target) => {
            let path = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            let location = redirect_location(target, https, host, &path);
            let status = StatusCode::from_u16(target.status).unwrap_or(StatusCode::FOUND);
            redirect(status, &location)
        }
        // Forward routes are answered by `exchange`.
        Action::Forward(_) => local_reply(
            LocalReply::Error(&ProxyError::with_source(
                ErrorKind::Internal,
                "forward route answered locally",
            )),
            ReplyTo {
                h1: false,
                grpc: false,
            },
        ),
    }
}

fn redirect_to_https(host: &str, port: u16, request: &Request<Incoming>) -> Response<ResponseBody> {
    let (name, _) = split_host_port(host);
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{port}{path}")
    };
    redirect(StatusCode::MOVED_PERMANENTLY, &location)
}
