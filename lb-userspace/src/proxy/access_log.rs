//! What is known about a request when its response ends: one access-log line (when the
//! service has `access_log` on and target `sluice::access` is enabled at info level) and the
//! counters of its route, pool and backend. Lines are made here (`line`) and handed to the
//! batched writer of `access_log_writer`, so a request makes no system call for its line.

mod line;

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method};

use super::conn_io::ConnGuard;
use super::filter::Learned;
use super::stats::{PoolStats, RouteStats};
use super::upstream::{BackendGuard, PoolSlot};
use crate::access_log_writer;

pub use line::set_json;
use line::{Line, Ms};

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
        if !access_enabled() {
            return;
        }
        let started = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        let route = self.route.as_ref().map_or("-", |(name, _)| &**name);
        fn text(v: &Option<HeaderValue>) -> &str {
            v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
        }
        let learned = &self.learned;
        write_line(|line| {
            line.shown("time", humantime::format_rfc3339_millis(started));
            line.shown("service", &self.service);
            line.shown("client", self.client);
            line.quoted("host", host);
            line.shown("method", &self.method);
            line.quoted("path", self.path.as_ref().map_or("/", |p| p.as_str()));
            line.number("status", self.status);
            line.number("bytes", bytes);
            line.number("duration_ms", Ms(elapsed));
            match self.upstream {
                Some(upstream) => line.shown("upstream", upstream),
                None => line.shown("upstream", "-"),
            }
            line.quoted("route", route);
            line.decisions("filters", learned);
            line.quoted("principal", learned.principal.as_deref().unwrap_or("-"));
            line.shown("request_id", text(&learned.request_id));
            line.shown("traceparent", text(&learned.traceparent));
        });
    }
}

/// Logs an answer a connection wrote outside any request (a 408 to a slow head, a 400 or
/// 431 hyper sent for a head it could not parse).
pub fn connection_answer(service: &str, client: SocketAddr, status: u16, why: &str) {
    if !access_enabled() {
        return;
    }
    write_line(|line| {
        line.shown("time", humantime::format_rfc3339_millis(SystemTime::now()));
        line.quoted("service", service);
        line.shown("client", client);
        line.quoted("host", "-");
        line.quoted("method", "-");
        line.quoted("path", "-");
        line.number("status", status);
        line.number("bytes", 0u64);
        line.number("duration_ms", Ms(Duration::ZERO));
        line.quoted("upstream", "-");
        line.quoted("route", "-");
        line.quoted("reason", why);
    });
}

/// Whether access lines are wanted: target `sluice::access` at info level, as the log filter
/// (`--log-level`, `RUST_LOG`) says, as when the lines were tracing events.
fn access_enabled() -> bool {
    tracing::enabled!(target: "sluice::access", tracing::Level::INFO)
}

thread_local! {
    /// Where this thread makes its lines, kept so that a line allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Makes one line with `fields` and hands it to the access log's writer (straight to stderr
/// when none runs, as in unit tests).
fn write_line(fields: impl FnOnce(&mut Line<'_>)) {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let mut line = Line::start(buf);
        fields(&mut line);
        line.finish();
        match access_log_writer::global() {
            Some(writer) => writer.append(buf),
            None => {
                let _ = std::io::stderr().lock().write_all(buf);
            }
        }
        // One huge line (a long path) is not kept for the thread's lifetime.
        buf.shrink_to(4096);
    });
}
