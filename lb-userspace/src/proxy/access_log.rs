//! What is known about a request when its response ends: one access-log line (when the
//! service has `access_log` on and target `sluice::access` is enabled at info level) and the
//! counters of its route, pool and backend. Lines are made here in the agent's log format and
//! written by the batched writer of `logging::access`.

use std::fmt::Display;
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
use crate::logging::LogFormat;
use crate::logging::access;

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

/// Whether access lines are wanted: target `sluice::access` at info level, as the log
/// filter (`--log-level`, `RUST_LOG`) says.
fn access_enabled() -> bool {
    tracing::enabled!(target: "sluice::access", tracing::Level::INFO)
}

/// Makes one line with `fields` and hands it to the access log's writer (straight to stderr
/// when none runs, as in unit tests).
fn write_line(fields: impl FnOnce(&mut Line<'_>)) {
    let make = |format: LogFormat, buf: &mut Vec<u8>| {
        let mut line = Line::start(buf, format);
        fields(&mut line);
        line.finish();
    };
    match access::get() {
        Some(log) => log.append(|buf| make(log.format(), buf)),
        None => {
            let mut buf = Vec::with_capacity(256);
            make(LogFormat::Text, &mut buf);
            buf.push(b'\n');
            let _ = std::io::stderr().lock().write_all(&buf);
        }
    }
}

/// A duration in milliseconds, with tracing's formatting of an `f64` field.
struct Ms(Duration);

impl Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.as_secs_f64() * 1000.0)
    }
}

/// One access line being written, in the layout `tracing_subscriber`'s formatter gives the
/// agent's other lines: text (`<time>  INFO sluice::access: access key=value ...`, text
/// fields quoted as tracing quotes `&str` values) or one flat JSON object.
struct Line<'b> {
    buf: &'b mut Vec<u8>,
    json: bool,
}

impl<'b> Line<'b> {
    fn start(buf: &'b mut Vec<u8>, format: LogFormat) -> Self {
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        let json = format == LogFormat::Json;
        // Writes into a Vec cannot fail.
        let _ = if json {
            write!(
                buf,
                "{{\"timestamp\":\"{now}\",\"level\":\"INFO\",\"message\":\"access\""
            )
        } else {
            write!(buf, "{now}  INFO sluice::access: access")
        };
        Line { buf, json }
    }

    /// A field shown as its text (`key=value`; a JSON string).
    fn shown(&mut self, key: &str, value: impl Display) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *self.buf, &value.to_string());
        } else {
            let _ = write!(self.buf, " {key}={value}");
        }
    }

    /// A text field quoted (`key="value"`, escaped; a JSON string).
    fn quoted(&mut self, key: &str, value: &str) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *self.buf, value);
        } else {
            let _ = write!(self.buf, " {key}={value:?}");
        }
    }

    /// A number (`key=1`; a JSON number).
    fn number(&mut self, key: &str, value: impl Display) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":{value}");
        } else {
            let _ = write!(self.buf, " {key}={value}");
        }
    }

    /// The filters' decisions, `name:decision` separated by commas, or `-`.
    fn decisions(&mut self, key: &str, learned: &Learned) {
        if self.json {
            self.shown(key, learned.decisions_text());
            return;
        }
        let _ = write!(self.buf, " {key}=");
        if learned.decisions.is_empty() {
            self.buf.push(b'-');
        }
        for (i, (name, decision)) in learned.decisions.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            let _ = write!(self.buf, "{name}:{decision}");
        }
    }

    fn finish(self) {
        if self.json {
            self.buf
                .extend_from_slice(b",\"target\":\"sluice::access\"}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a `tracing_subscriber` formatter wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The same fields through `tracing`'s formatter, as the agent's other lines are written.
    fn through_tracing(json: bool) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let event = || {
            tracing::info!(
                target: "sluice::access",
                time = %"2026-12-07T10:00:00.000Z",
                service = %"gw",
                host = "gw.test",
                path = "/a \"b\"",
                status = 200u16,
                duration_ms = 1.5f64,
                route = "-",
                "access"
            );
        };
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), event);
        } else {
            tracing::subscriber::with_default(builder.finish(), event);
        }
        String::from_utf8(captured.0.lock().expect("lock").clone()).expect("text")
    }

    fn through_line(format: LogFormat) -> String {
        let mut buf = Vec::new();
        let mut line = Line::start(&mut buf, format);
        line.shown("time", "2026-12-07T10:00:00.000Z");
        line.shown("service", "gw");
        line.quoted("host", "gw.test");
        line.quoted("path", "/a \"b\"");
        line.number("status", 200u16);
        line.number("duration_ms", Ms(Duration::from_micros(1500)));
        line.quoted("route", "-");
        line.finish();
        buf.push(b'\n');
        String::from_utf8(buf).expect("text")
    }

    #[test]
    fn access_lines_read_as_tracing_writes_the_other_lines() {
        // The timestamps differ; everything after them must not.
        let after_time = |s: &str| s.split_once(' ').map(|(_, rest)| rest.to_owned());
        let (ours, theirs) = (through_line(LogFormat::Text), through_tracing(false));
        assert_eq!(after_time(&ours), after_time(&theirs), "{ours}{theirs}");

        let parse = |s: &str| {
            let mut v: serde_json::Value = serde_json::from_str(s.trim()).expect("JSON");
            v.as_object_mut().expect("object").remove("timestamp");
            v
        };
        let (ours, theirs) = (through_line(LogFormat::Json), through_tracing(true));
        assert_eq!(parse(&ours), parse(&theirs), "{ours}{theirs}");
    }
}
