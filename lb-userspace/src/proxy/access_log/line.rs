//! One access-log line, made without `tracing`: text in the layout `tracing_subscriber`'s
//! formatter gives the agent's other lines (`<time>  INFO sluice::access: access key=value
//! ...`, text fields quoted as tracing quotes `&str` values), or one flat JSON object with the
//! same fields, as `--log-format json` writes events.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use super::Learned;

/// Whether access lines are JSON objects (`[log] access_log_format`); text otherwise.
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the format of the lines made from now on.
pub fn set_json(json: bool) {
    JSON.store(json, Relaxed);
}

/// A duration in milliseconds, with tracing's formatting of an `f64` field.
pub struct Ms(pub Duration);

impl Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.as_secs_f64() * 1000.0)
    }
}

/// One line being written into a buffer. Writes into a `Vec` cannot fail, so their results
/// are ignored.
pub struct Line<'b> {
    buf: &'b mut Vec<u8>,
    json: bool,
}

impl<'b> Line<'b> {
    /// Starts a line in the format set by [`set_json`].
    pub fn start(buf: &'b mut Vec<u8>) -> Self {
        Self::start_as(buf, JSON.load(Relaxed))
    }

    fn start_as(buf: &'b mut Vec<u8>, json: bool) -> Self {
        let now = humantime::format_rfc3339_micros(SystemTime::now());
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
    pub fn shown(&mut self, key: &str, value: impl Display) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *self.buf, &value.to_string());
        } else {
            let _ = write!(self.buf, " {key}={value}");
        }
    }

    /// A text field quoted (`key="value"`, escaped; a JSON string).
    pub fn quoted(&mut self, key: &str, value: &str) {
        if self.json {
            let _ = write!(self.buf, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *self.buf, value);
        } else {
            let _ = write!(self.buf, " {key}={value:?}");
        }
    }

    /// A number (`key=1`; a JSON number).
    pub fn number(&mut self, key: &str, value: impl Display) {
        let _ = if self.json {
            write!(self.buf, ",\"{key}\":{value}")
        } else {
            write!(self.buf, " {key}={value}")
        };
    }

    /// The filters' decisions, `name:decision` separated by commas, or `-`.
    pub fn decisions(&mut self, key: &str, learned: &Learned) {
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

    /// Ends the line (with its newline).
    pub fn finish(self) {
        if self.json {
            self.buf
                .extend_from_slice(b",\"target\":\"sluice::access\"}");
        }
        self.buf.push(b'\n');
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

    /// The fields through `tracing`'s formatter, as the access log was written before it had
    /// a writer of its own and as the agent's other lines are.
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
                client = %"127.0.0.1:5000",
                host = "gw.test",
                method = %"GET",
                path = "/a \"b\"\\ é",
                status = 200u16,
                bytes = 3u64,
                duration_ms = 1.5f64,
                upstream = %"-",
                route = "all#1",
                filters = %"ids:allow,rl:over_limit",
                principal = "-",
                request_id = %"abc",
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

    fn through_line(json: bool) -> String {
        let mut learned = Learned::default();
        learned.decisions.push(("ids".into(), "allow"));
        learned.decisions.push(("rl".into(), "over_limit"));
        let mut buf = Vec::new();
        let mut line = Line::start_as(&mut buf, json);
        line.shown("time", "2026-12-07T10:00:00.000Z");
        line.shown("service", "gw");
        line.shown("client", "127.0.0.1:5000");
        line.quoted("host", "gw.test");
        line.shown("method", "GET");
        line.quoted("path", "/a \"b\"\\ é");
        line.number("status", 200u16);
        line.number("bytes", 3u64);
        line.number("duration_ms", Ms(Duration::from_micros(1500)));
        line.shown("upstream", "-");
        line.quoted("route", "all#1");
        line.decisions("filters", &learned);
        line.quoted("principal", "-");
        line.shown("request_id", "abc");
        line.finish();
        String::from_utf8(buf).expect("text")
    }

    #[test]
    fn text_lines_read_as_tracing_wrote_them() {
        // The timestamps differ; everything after them must not.
        let after_time = |s: &str| s.split_once(' ').map(|(_, rest)| rest.to_owned());
        let (ours, theirs) = (through_line(false), through_tracing(false));
        assert_eq!(after_time(&ours), after_time(&theirs), "{ours}{theirs}");
    }

    #[test]
    fn json_lines_hold_the_same_fields_as_tracing_json() {
        let parse = |s: &str| {
            let mut v: serde_json::Value = serde_json::from_str(s.trim()).expect("JSON");
            v.as_object_mut().expect("object").remove("timestamp");
            v
        };
        let (ours, theirs) = (through_line(true), through_tracing(true));
        assert_eq!(ours.lines().count(), 1, "one line: {ours}");
        assert_eq!(parse(&ours), parse(&theirs), "{ours}{theirs}");
        assert_eq!(parse(&ours)["path"], "/a \"b\"\\ é");
        assert_eq!(parse(&ours)["status"], 200);
    }
}
