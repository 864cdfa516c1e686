//! Forwarding a request to a pool: the request re-framed for the backend, tries under the
//! route timeout and the retry policy, the response rewritten on its way back, and
//! protocol upgrades (WebSocket) spliced into a byte tunnel.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, request};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::access_log::RequestRecord;
use super::body::{RequestBody, ResponseBody};
use super::connections::Exchange;
use super::error::{ErrorKind, ProxyError};
use super::forward::{
    ForwardedFor, is_upgrade_request, join_cookies, set_forwarded, strip_hop_by_hop,
    upgrade_allowed, upstream_path, upstream_uri,
};
use super::grpc;
use super::listener::ConnCtx;
use super::pick;
use super::retry;
use super::route::{Route, WeightedPools};
use super::state::ListenerState;
use super::tunnel;
use super::upstream::{BackendGuard, PoolSlot, UpstreamBackend, UpstreamPool};

/// Bodies up to this size are buffered when the route retries, so a retry can resend them;
/// larger or unsized bodies are streamed and sent once.
const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// A request bound for a pool: the pool picked and what the head said about upgrades.
pub struct Outbound {
    pool: Arc<UpstreamPool>,
    /// The client connection, when the request upgrades it (a tunnel the route allows).
    client_upgrade: Option<OnUpgrade>,
    upgrade: bool,
    chunked: bool,
    h1: bool,
    /// The deadline is the client's (`grpc-timeout`), not the route's.
    client_deadline: bool,
}

impl Outbound {
    /// Says the request's deadline is the client's own (`grpc-timeout` shorter than the
    /// route's timeout): its passing is then nobody's fault, not the backend's.
    pub fn set_client_deadline(&mut self, client: bool) {
        self.client_deadline = client;
    }
}

/// Picks the pool for a forward route and makes `parts` a request for it: hop-by-hop
/// headers out, forwarding headers in. Filters then see the request as the backend will.
pub fn prepare(
    ctx: &ConnCtx,
    state: &ListenerState,
    route: &Route,
    pools: &WeightedPools,
    parts: &mut request::Parts,
    host: &HeaderValue,
    record: &mut RequestRecord,
) -> Result<Outbound, ProxyError> {
    let pool = pick::pool(state, pools)?;
    record.pool = Some(pool.stats.clone());
    let h1 = parts.version < Version::HTTP_2;
    let chunked = h1 && parts.headers.contains_key(TRANSFER_ENCODING);
    // Only protocols the route allows are tunnelled; any other Upgrade (h2c included) is
    // dropped with the other hop-by-hop headers and the request forwarded as a plain one.
    let upgrade = is_upgrade_request(parts.version, &parts.headers)
        && pool.is_http1()
        && upgrade_allowed(&parts.headers, &route.upgrades);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    // Nothing hyper attached to the client's request may leak into the backend's.
    parts.extensions.clear();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if !h1 {
        join_cookies(&mut parts.headers);
    }
    set_forwarded(
        &mut parts.headers,
        &ForwardedFor {
            client_ip: &ctx.client_ip,
            peer: ctx.client.ip(),
            https: ctx.https,
            host,
            trust: &state.forwarded,
        },
    );
    Ok(Outbound {
        pool,
        client_upgrade,
        upgrade,
        chunked,
        h1,
        client_deadline: false,
    })
}

/// Forwards a request [`prepare`]d for `route` (and passed by its filters) and returns the
/// backend's response, rewritten; `deadline` is the route's, started before the filters.
#[expect(
    clippy::too_many_arguments,
    reason = "one request's parts and context; bundling them would only rename the list"
)]
pub async fn forward(
    ctx: &ConnCtx,
    state: &ListenerState,
    route: &Route,
    outbound: Outbound,
    mut parts: request::Parts,
    body: Incoming,
    host: &HeaderValue,
    mut deadline: Pin<Box<Sleep>>,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Outbound {
        pool,
        client_upgrade,
        upgrade,
        chunked,
        h1,
        client_deadline,
    } = outbound;
    let limit = state.limits.max_request_body_bytes;
    if let (Some(limit), Some(declared)) = (limit, body.size_hint().exact())
        && declared > limit
    {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge));
    }
    if !parts.headers.contains_key(HOST) {
        parts.headers.insert(HOST, host.clone());
    }

    let policy = route
        .retry
        .as_ref()
        .filter(|p| p.attempts > 0 && !upgrade && retry::method_allows(p, &parts.method));
    let body = prepare_body(body, chunked, limit, policy.is_some(), deadline.as_mut()).await?;
    // One framing to the backend: hyper derives Content-Length from a sized body and
    // chunks an unsized one (it would send an unsized GET body as no body at all).
    parts.headers.remove(CONTENT_LENGTH);
    if pool.is_http1() && body.is_unsized_stream() {
        parts
            .headers
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    parts.version = pool.version();
    let grpc = grpc::is_grpc(&parts.headers);
    let original = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let rewrite = route.prefix_rewrite.as_ref().map(|(a, b)| (&**a, &**b));
    let path = upstream_path(&original, rewrite)
        .ok_or_else(|| ProxyError::with_source(ErrorKind::Internal, "prefix rewrite"))?;

    let slot = pool.admit()?;
    let replayable = policy.filter(|_| body.replay().is_some());
    let mut body = Some(body);
    let mut tries: u8 = 0;
    let mut last: Option<Arc<UpstreamBackend>> = None;
    let mut _retry_slot = None;
    loop {
        let backend = pick::backend(&pool, &parts.headers, ctx.client.ip(), last.as_ref())?;
        let guard = backend.start();
        let more_tries = replayable.is_some_and(|p| tries < p.attempts);
        let this_body = match (&replayable, &body) {
            (Some(_), Some(b)) => b.replay(),
            _ => body.take(),
        }
        .unwrap_or_else(RequestBody::empty);
        let headers = if more_tries {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let uri = if pool.is_http1() {
            Uri::from(path.clone())
        } else {
            upstream_uri(&backend.authority, path.clone())
                .ok_or_else(|| ProxyError::with_source(ErrorKind::Internal, "upstream URI"))?
        };
        let mut upstream = Request::new(this_body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = parts.version;
        *upstream.headers_mut() = headers;

        let started = Instant::now();
        let per_try = replayable.and_then(|p| p.per_try_timeout);
        let waits = Waits {
            per_try,
            idle: route.stream_idle_timeout,
            deadline: if client_deadline {
                ErrorKind::ClientDeadline
            } else {
                ErrorKind::RouteTimeout
            },
        };
        let result = send(&pool, &backend, upstream, waits, deadline.as_mut()).await;
        let retry_wanted = match &result {
            Ok(exchange) => {
                let status = exchange.response.status().as_u16();
                backend.stats.responses.record(status, 0, started.elapsed());
                pool.report_status(&backend, status);
                replayable.is_some_and(|p| retry::status_retried(p, status))
            }
            Err(err) if err.is_backend_fault() => {
                let counter = if err.kind() == ErrorKind::UpstreamConnect {
                    &backend.stats.connect_failures
                } else {
                    &backend.stats.failures
                };
                counter.fetch_add(1, Relaxed);
                pool.report(&backend, false);
                debug!(backend = %backend.address, error = %err, "try failed");
                replayable.is_some_and(|p| err.retryable_under(&p.on))
            }
            // The client's fault or the proxy's own limits: the backend did nothing wrong.
            Err(err) => {
                debug!(backend = %backend.address, error = %err, "try ended without the backend at fault");
                false
            }
        };
        if retry_wanted
            && more_tries
            && let Some(policy) = replayable
        {
            // This request's previous retry is over; it must not count against the next.
            _retry_slot = None;
            if let Some(slot) = pool.try_retry(policy.budget_percent) {
                pool.stats.retries.fetch_add(1, Relaxed);
                _retry_slot = Some(slot);
                tries += 1;
                last = Some(backend);
                continue;
            }
        }
        let exchange = result?;
        record.upstream = Some(backend.address);
        return finish_response(
            exchange,
            (slot, guard),
            deadline,
            client_upgrade,
            ctx,
            Streaming {
                tunnel_idle: state.limits.tunnel_idle_timeout,
                h2_send_timeout: (!h1).then_some(state.limits.send_timeout),
                stream_idle: route.stream_idle_timeout,
                grpc,
            },
            record,
        );
    }
}

/// The waits a try is bounded by besides the route deadline.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// The retry policy's `per_try_timeout`.
    per_try: Option<Duration>,
    /// The route's `stream_idle_timeout`, which bounds the wait for the response head too.
    idle: Option<Duration>,
    /// What the deadline's passing is: the route's timeout or the client's.
    deadline: ErrorKind,
}

/// How the response body streams: timers and the shape of its failures.
struct Streaming {
    tunnel_idle: Duration,
    h2_send_timeout: Option<Duration>,
    stream_idle: Option<Duration>,
    /// The request is gRPC: a failure mid-body ends it with gRPC trailers.
    grpc: bool,
}

/// One try: the response head within the per-try timeout, the stream idle timeout and the
/// route deadline.
async fn send(
    pool: &UpstreamPool,
    backend: &UpstreamBackend,
    request: Request<RequestBody>,
    waits: Waits,
    deadline: Pin<&mut Sleep>,
) -> Result<Exchange, ProxyError> {
    let exchange = backend.send(request, pool.pending_limit());
    let sleep_or_never = |limit: Option<Duration>| async move {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let try_timeout = sleep_or_never(waits.per_try);
    let idle_timeout = sleep_or_never(waits.idle);
    tokio::select! {
        result = exchange => result.map_err(|err| {
            let err = ProxyError::from_upstream(err);
            if let ErrorKind::Overloaded(limit) = err.kind() {
                pool.stats.overflowed(limit);
            }
            err
        }).and_then(refuse_double_framing),
        () = deadline => Err(ProxyError::new(waits.deadline)),
        () = try_timeout => Err(ProxyError::new(ErrorKind::PerTryTimeout)),
        () = idle_timeout => Err(ProxyError::new(ErrorKind::StreamIdleTimeout)),
    }
}

/// Refuses a response framed both by `Content-Length` and `Transfer-Encoding` (RFC 9112
/// §6.3: to be handled as an error, a sign of response splitting). hyper reads its body by
/// `Transfer-Encoding` and would keep the connection, but the `Content-Length` would go on
/// to the client, which frames the body by it. Answered 502 instead, and the connection is
/// closed: whatever follows the body on it cannot be trusted.
fn refuse_double_framing(exchange: Exchange) -> Result<Exchange, ProxyError> {
    let headers = exchange.response.headers();
    if !(headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH)) {
        return Ok(exchange);
    }
    if let Some(checkin) = &exchange.checkin {
        checkin.closer().abort();
    }
    Err(ProxyError::with_source(
        ErrorKind::UpstreamProtocol,
        "response with both Content-Length and Transfer-Encoding",
    ))
}

/// Reads what must be read before a backend sees the request: a body to buffer for
/// retries, or the first chunk of a chunked body (so a malformed one is refused, not
/// half-forwarded).
async fn prepare_body(
    body: Incoming,
    chunked: bool,
    limit: Option<u64>,
    retries: bool,
    deadline: Pin<&mut Sleep>,
) -> Result<RequestBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(RequestBody::empty());
    }
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= RETRY_BUFFER_LIMIT);
    if retries && small {
        let collected = tokio::select! {
            collected = body.collect() => collected,
            () = deadline => return Err(ProxyError::new(ErrorKind::ClientGone)),
        };
        let bytes: Bytes = collected
            .map_err(|e| ProxyError::with_source(ErrorKind::ClientRequest, e))?
            .to_bytes();
        return Ok(RequestBody::full(bytes));
    }
    if !chunked {
        return Ok(RequestBody::stream(body, None, limit));
    }
    let mut body = body;
    let first = tokio::select! {
        first = body.frame() => first,
        () = deadline => return Err(ProxyError::new(ErrorKind::ClientGone)),
    };
    match first {
        None => Ok(RequestBody::empty()),
        Some(Err(e)) => Err(ProxyError::with_source(ErrorKind::ClientRequest, e)),
        Some(Ok(frame)) => {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if limit.is_some_and(|limit| len > limit) {
                return Err(ProxyError::new(ErrorKind::BodyTooLarge));
            }
            Ok(RequestBody::stream(body, Some(frame), limit))
        }
    }
}

/// The backend's response as the client gets it. A `101` to an upgrade request splices
/// the two connections together once hyper has handed both over; otherwise the backend
/// connection goes back to its backend when the body has been read to its end.
fn finish_response(
    exchange: Exchange,
    (slot, guard): (PoolSlot, BackendGuard),
    deadline: Pin<Box<Sleep>>,
    client_upgrade: Option<OnUpgrade>,
    ctx: &ConnCtx,
    streaming: Streaming,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Streaming {
        tunnel_idle,
        h2_send_timeout,
        stream_idle,
        grpc,
    } = streaming;
    let Exchange {
        mut response,
        checkin,
    } = exchange;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && client_upgrade.is_none() {
        // A switch nobody asked for (or the route does not allow): never tunnel it.
        return Err(ProxyError::with_source(
            ErrorKind::UpstreamProtocol,
            "101 Switching Protocols to a request that was not upgraded",
        ));
    }
    let tunnel = match client_upgrade {
        Some(client) if switching => Some((client, hyper::upgrade::on(&mut response))),
        _ => None,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, tunnel.is_some());
    parts.version = Version::HTTP_11;
    match tunnel {
        Some((client, backend)) => {
            ctx.shared.set_upgraded();
            let shared = ctx.shared.clone();
            tokio::spawn(async move {
                let _in_flight = guard;
                if let (Ok(client), Ok(backend)) = tokio::join!(client, backend) {
                    let (client, backend) = (TokioIo::new(client), TokioIo::new(backend));
                    tunnel::splice(client, backend, tunnel_idle).await;
                }
                shared.tunnel_closed();
            });
            // The connection is the tunnel's now; hyper closes it when the tunnel ends.
            drop(checkin);
            Ok(Response::from_parts(
                parts,
                ResponseBody::upstream(body, None, None),
            ))
        }
        None => {
            record.backend_guard = Some((slot, guard));
            let mut body = ResponseBody::upstream(body, Some(deadline), checkin);
            if let Some(timeout) = h2_send_timeout {
                body.watch_sends(timeout);
            }
            if let Some(timeout) = stream_idle {
                body.idle_timeout(timeout);
            }
            if grpc {
                body.speak_grpc();
            }
            Ok(Response::from_parts(parts, body))
        }
    }
}
