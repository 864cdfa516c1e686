//! What is known about a request when its response ends: one access-log line (a tracing
//! event on target `sluice::access`, when the service has `access_log` on) and the counters
//! of its route, pool and backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

use super::conn_io::ConnGuard;
use super::filter::Learned;
use super::stats::{PoolStats, RouteStats};
use super::upstream::{BackendGuard, PoolSlot};

/// A request on its way, finished by [`RequestRecord::finish`] when its response body ends.
/// Dropping it also releases what the request held (connection and backend in-flight slots).
pub struct RequestRecord {
    /// The service (listener) that took the request.
    pub service: Arc<str>,
    /// When the request head arrived.
    pub start: Instant,
    /// The client's address.
    pub client: SocketAddr,
    /// The Host header or :authority.
    pub host: Option<HeaderValue>,
    /// The method.
    pub method: Method,
    /// The request's path and query as received, kept only when the access log is on.
    pub path: Option<PathAndQuery>,
    /// The status sent.
    pub status: u16,
    /// The route taken, if any.
    pub route: Option<(Arc<str>, Arc<RouteStats>)>,
    /// The pool forwarded to, if any.
    pub pool: Option<Arc<PoolStats>>,
    /// The backend that answered, if any.
    pub upstream: Option<SocketAddr>,
    /// Counts the request as in flight on its pool and backend until the response ends.
    pub backend_guard: Option<(PoolSlot, BackendGuard)>,
    /// Whether to write the access-log line.
    pub access_log: bool,
    /// What the route's filters learned and decided.
    pub learned: Learned,
    /// Keeps the client connection busy (not idle) until the response ends.
    pub _conn: ConnGuard,
}

impl RequestRecord {
    /// Counts the request and writes its log line; `bytes` is the response body sent.
    pub fn finish(self, bytes: u64) {
        let elapsed = self.start.elapsed();
        if let Some((_, stats)) = &self.route {
            stats.record(self.status, bytes, elapsed);
        }
        if let Some(pool) = &self.pool {
            pool.requests.record(self.status, bytes, elapsed);
        }
        if self.access_log {
            self.log(bytes, elapsed);
        }
    }

    fn log(&self, bytes: u64, elapsed: Duration) {
        let started = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let route = self.route.as_ref().map_or("-", |(name, _)| &**name);
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let learned = &self.learned;
        tracing::info!(
            target: "sluice::access",
            time = %humantime::format_rfc3339_millis(started),
            service = %self.service,
            client = %self.client,
            host,
            method = %self.method,
            path = self.path.as_ref().map_or("/", |p| p.as_str()),
            status = self.status,
            bytes,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = %self.upstream.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            route,
            filters = %learned.decisions_text(),
            principal = learned.principal.as_deref().unwrap_or("-"),
            request_id = %text(&learned.request_id),
            traceparent = %text(&learned.traceparent),
            "access"
        );
    }
}

/// Logs an answer a connection wrote outside any request (a 408 to a slow head, a 400 or
/// 431 hyper sent for a head it could not parse).
pub fn connection_answer(service: &str, client: SocketAddr, status: u16, why: &str) {
    tracing::info!(
        target: "sluice::access",
        time = %humantime::format_rfc3339_millis(SystemTime::now()),
        service,
        client = %client,
        host = "-",
        method = "-",
        path = "-",
        status,
        bytes = 0u64,
        duration_ms = 0.0,
        upstream = "-",
        route = "-",
        reason = why,
        "access"
    );
}
