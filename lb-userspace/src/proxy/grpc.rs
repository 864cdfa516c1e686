//! gRPC as gRPC clients expect it from a proxy: what makes a request gRPC, the status codes
//! of the proxy's own errors (trailers-only responses), and the `grpc-timeout` header.
//! The codes and the HTTP mapping are those of the gRPC spec (`doc/statuscodes.md`,
//! `doc/http-grpc-status-mapping.md`, `doc/PROTOCOL-HTTP2.md`).

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::error::ErrorKind;

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The gRPC status codes the proxy itself answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// The client cancelled (went away).
    Cancelled = 1,
    /// Nothing more specific applies.
    Unknown = 2,
    /// The deadline (`grpc-timeout` or the route's timeout) passed.
    DeadlineExceeded = 4,
    /// A filter refused the caller (403).
    PermissionDenied = 7,
    /// A rate limit or a size limit (429, 413).
    ResourceExhausted = 8,
    /// No route for the method (404).
    Unimplemented = 12,
    /// The proxy failed, or the client sent what HTTP cannot carry (400, 500).
    Internal = 13,
    /// No backend, a connect failure, a reset, a circuit breaker: retryable.
    Unavailable = 14,
    /// A filter found no valid credentials (401).
    Unauthenticated = 16,
}

impl Code {
    /// The code of a failure of kind `kind`.
    pub fn of_error(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::ClientGone => Self::Cancelled,
            ErrorKind::PerTryTimeout
            | ErrorKind::RouteTimeout
            | ErrorKind::StreamIdleTimeout
            | ErrorKind::ClientDeadline => Self::DeadlineExceeded,
            ErrorKind::BodyTooLarge => Self::ResourceExhausted,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamProtocol
            | ErrorKind::NoHealthyBackend
            | ErrorKind::Overloaded(_) => Self::Unavailable,
            ErrorKind::ClientRequest | ErrorKind::Internal => Self::Internal,
        }
    }

    /// The code for an HTTP status the proxy answers (a filter's refusal, no route), as the
    /// spec maps HTTP to gRPC, with the refusals gRPC has codes of its own for.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 | 500 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 | 405 => Self::Unimplemented,
            408 => Self::DeadlineExceeded,
            413 | 429 => Self::ResourceExhausted,
            502..=504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The `grpc-status` value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from(u16::from(self as u8))
    }
}

/// Whether `headers` are a gRPC request's: `content-type: application/grpc` or
/// `application/grpc+proto` and the like.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// `grpc-status` and `grpc-message` headers for `code` and `message` (percent-encoded as
/// the spec asks: everything outside printable ASCII, and `%`).
pub fn status_headers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(GRPC_STATUS.clone(), code.header());
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(GRPC_MESSAGE.clone(), value);
    }
    headers
}

fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client's deadline from `grpc-timeout` (`TimeoutValue TimeoutUnit`: at most 8 digits,
/// then H, M, S, m, u or n); `None` when absent or malformed (a malformed one is ignored,
/// as gRPC servers do, and the route's timeout applies).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; x=1",
        ] {
            assert!(is_grpc(&headers("content-type", yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&headers("content-type", no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_units() {
        let t = |v: &'static str| timeout(&headers("grpc-timeout", v));
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("1S"), Some(Duration::from_secs(1)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1s", "1.5S", "-1S", "1 S"] {
            assert_eq!(timeout(&headers("grpc-timeout", bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn refusals_and_errors_map_to_the_spec_codes() {
        assert_eq!(
            Code::of_status(StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
        assert_eq!(
            Code::of_status(StatusCode::FORBIDDEN),
            Code::PermissionDenied
        );
        assert_eq!(
            Code::of_status(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
        assert_eq!(Code::of_status(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            Code::of_error(ErrorKind::NoHealthyBackend),
            Code::Unavailable
        );
        assert_eq!(
            Code::of_error(ErrorKind::UpstreamConnect),
            Code::Unavailable
        );
        assert_eq!(
            Code::of_error(ErrorKind::RouteTimeout),
            Code::DeadlineExceeded
        );
        assert_eq!(Code::DeadlineExceeded.header(), "4");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("no healthy backend"), "no healthy backend");
        assert_eq!(percent_encode("100% é\n"), "100%25 %C3%A9%0A");
    }
}
