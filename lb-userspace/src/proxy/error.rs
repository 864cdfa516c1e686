//! Errors on the request path: where each came from, whether a retry is safe, and the one
//! function that turns an error into the status the client sees ([`ProxyError::status`]).

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::config::RetryOn;

/// A boxed error from a body, a connection or a client.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection was refused, unreachable or reset while opening.
    #[error("connecting to {address}")]
    Connect {
        /// The backend.
        address: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection did not open within the pool's connect timeout.
    #[error("connecting to {address} took longer than {timeout:?}")]
    ConnectTimeout {
        /// The backend.
        address: SocketAddr,
        /// The pool's `connect_timeout`.
        timeout: Duration,
    },
    /// The HTTP/2 handshake failed: the backend does not speak HTTP/2 or hung up.
    #[error("HTTP/2 handshake with {address}")]
    Handshake {
        /// The backend.
        address: SocketAddr,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// A circuit breaker refused the request before it went out.
    #[error("{address}: circuit breaker {} open", limit.name())]
    Overloaded {
        /// The backend.
        address: SocketAddr,
        /// Which limit.
        limit: Overload,
    },
    /// The request went out (or was going out) and no response head came back.
    #[error("exchange with {address}")]
    Exchange {
        /// The backend.
        address: SocketAddr,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Whether the request never reached the backend because no connection could be made.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Self::Exchange { .. } | Self::Overloaded { .. })
    }
}

/// Where a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client sent something unusable: a malformed body, a bad chunk, ambiguous framing.
    ClientRequest,
    /// The client's body went past `max_request_body_bytes`.
    BodyTooLarge,
    /// The client went away or stopped sending its body in time.
    ClientGone,
    /// No connection to the backend could be made (refused, unreachable, connect timeout).
    UpstreamConnect,
    /// The backend closed or reset the connection or stream before a complete response head.
    UpstreamReset,
    /// The backend answered with something that is not HTTP.
    UpstreamProtocol,
    /// One try took longer than the retry policy's `per_try_timeout`.
    PerTryTimeout,
    /// The route's whole-request `timeout` (or the client's `grpc-timeout`) passed.
    RouteTimeout,
    /// The backend sent nothing for the route's `stream_idle_timeout`.
    StreamIdleTimeout,
    /// The client's own deadline (`grpc-timeout`, shorter than the route's) passed before
    /// the response head: not counted against the backend, which may have been given too
    /// little time.
    ClientDeadline,
    /// The pool has no backend to send to.
    NoHealthyBackend,
    /// A circuit breaker of the pool is open: the request is refused without queueing.
    Overloaded(Overload),
    /// A bug or an impossible state in Sluice.
    Internal,
}

/// Which circuit breaker refused a request; its name is the config field and the value of
/// the `x-sluice-overloaded` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// Every connection to the backend is busy and no request may wait for one.
    MaxConnections,
    /// Too many requests already wait for a connection.
    MaxPendingRequests,
    /// Too many requests in flight to the pool.
    MaxRequests,
    /// Too many retries in flight to the pool (the retry is skipped, not answered 503).
    MaxRetries,
}

impl Overload {
    /// The config field, as it appears in headers and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::MaxPendingRequests => "max_pending_requests",
            Self::MaxRequests => "max_requests",
            Self::MaxRetries => "max_retries",
        }
    }
}

/// A failed request, with its cause.
#[derive(Debug)]
pub struct ProxyError {
    kind: ErrorKind,
    source: Option<BoxError>,
}

impl ProxyError {
    /// An error of `kind` without an underlying cause.
    pub fn new(kind: ErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// Where the request failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status the client gets. The only place errors become statuses.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::ClientRequest => StatusCode::BAD_REQUEST,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ClientGone => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset | ErrorKind::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::PerTryTimeout
            | ErrorKind::RouteTimeout
            | ErrorKind::StreamIdleTimeout
            | ErrorKind::ClientDeadline => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NoHealthyBackend | ErrorKind::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the failure is the backend's fault and so counts toward outlier detection:
    /// it refused or dropped the connection, answered garbage, or did not answer in time.
    /// A client that aborts, sends a bad or oversized body, or goes away is not the
    /// backend's fault, and neither is a refusal by the proxy's own limits.
    pub fn is_backend_fault(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UpstreamConnect
                | ErrorKind::UpstreamReset
                | ErrorKind::UpstreamProtocol
                | ErrorKind::PerTryTimeout
                | ErrorKind::RouteTimeout
                | ErrorKind::StreamIdleTimeout
        )
    }

    /// Whether the client connection must be closed after the answer: its framing can no
    /// longer be trusted, or an unread body would have to be drained.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ClientRequest | ErrorKind::BodyTooLarge | ErrorKind::ClientGone
        )
    }

    /// Whether a retry policy listing `on` may retry this failure. The request itself must
    /// still be retry-safe (idempotent or allowed, body replayable): see `retry`.
    pub fn retryable_under(&self, on: &[RetryOn]) -> bool {
        match self.kind {
            ErrorKind::UpstreamConnect => on.contains(&RetryOn::ConnectFailure),
            ErrorKind::UpstreamReset => on.contains(&RetryOn::Reset),
            // A try that ran out of time is answered as a 504 would be.
            ErrorKind::PerTryTimeout => on.contains(&RetryOn::Status(504)),
            _ => false,
        }
    }

    /// Classifies an error of the upstream client. Errors of our own request body (the
    /// client's body failed or was too large) are found in the source chain.
    pub fn from_upstream(err: UpstreamError) -> Self {
        if let UpstreamError::Overloaded { limit, .. } = err {
            return Self::new(ErrorKind::Overloaded(limit));
        }
        if err.is_connect() {
            return Self::with_source(ErrorKind::UpstreamConnect, err);
        }
        let kind = classify_chain(&err);
        Self::with_source(kind, err)
    }
}

/// Walks the source chain of an upstream error for the first cause that tells where it
/// came from.
fn classify_chain(err: &(dyn StdError + 'static)) -> ErrorKind {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return match body {
                RequestBodyError::TooLarge { .. } => ErrorKind::BodyTooLarge,
                // The client hung up or stalled mid-body, or sent a body hyper could not
                // decode (a bad chunk after the first).
                RequestBodyError::Client(e) if e.is_incomplete_message() || e.is_timeout() => {
                    ErrorKind::ClientGone
                }
                RequestBodyError::Client(_) => ErrorKind::ClientRequest,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return ErrorKind::UpstreamProtocol;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return ErrorKind::UpstreamReset;
            }
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return ErrorKind::UpstreamReset;
        }
        cause = e.source();
    }
    // An h2 stream reset, GOAWAY and the like.
    ErrorKind::UpstreamReset
}

impl ProxyError {
    /// What failed, in a few words without the cause (safe to show a client).
    pub fn summary(&self) -> &'static str {
        match self.kind {
            ErrorKind::ClientRequest => "malformed request",
            ErrorKind::BodyTooLarge => "request body too large",
            ErrorKind::ClientGone => "client went away",
            ErrorKind::UpstreamConnect => "cannot connect to the backend",
            ErrorKind::UpstreamReset => "backend closed the connection",
            ErrorKind::UpstreamProtocol => "backend answered with invalid HTTP",
            ErrorKind::PerTryTimeout => "backend did not answer within per_try_timeout",
            ErrorKind::RouteTimeout => "route timeout passed",
            ErrorKind::ClientDeadline => "the client's deadline (grpc-timeout) passed",
            ErrorKind::StreamIdleTimeout => "backend sent nothing within stream_idle_timeout",
            ErrorKind::NoHealthyBackend => "no healthy backend",
            ErrorKind::Overloaded(_) => "circuit breaker open",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.summary())?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
            let mut cause = source.source();
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why the body sent upstream failed: raised by our request body, found again by
/// [`ProxyError::from_upstream`] in the client's error chain.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The body went past the listener's limit.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// `max_request_body_bytes`.
        limit: u64,
    },
    /// Reading the client's body failed (bad chunk, reset, timeout).
    #[error("reading the client's request body")]
    Client(#[source] hyper::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_one_status() {
        let cases = [
            (ErrorKind::ClientRequest, 400),
            (ErrorKind::BodyTooLarge, 413),
            (ErrorKind::UpstreamConnect, 502),
            (ErrorKind::UpstreamReset, 502),
            (ErrorKind::PerTryTimeout, 504),
            (ErrorKind::RouteTimeout, 504),
            (ErrorKind::StreamIdleTimeout, 504),
            (ErrorKind::ClientDeadline, 504),
            (ErrorKind::NoHealthyBackend, 503),
            (ErrorKind::Overloaded(Overload::MaxRequests), 503),
            (ErrorKind::Internal, 500),
        ];
        for (kind, status) in cases {
            assert_eq!(ProxyError::new(kind).status().as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn retry_conditions_follow_the_policy() {
        let on = [RetryOn::ConnectFailure, RetryOn::Status(504)];
        assert!(ProxyError::new(ErrorKind::UpstreamConnect).retryable_under(&on));
        assert!(ProxyError::new(ErrorKind::PerTryTimeout).retryable_under(&on));
        assert!(!ProxyError::new(ErrorKind::UpstreamReset).retryable_under(&on));
        assert!(!ProxyError::new(ErrorKind::BodyTooLarge).retryable_under(&on));
        assert!(!ProxyError::new(ErrorKind::RouteTimeout).retryable_under(&[RetryOn::Reset]));
    }

    #[test]
    fn only_backend_faults_count_against_a_backend() {
        for kind in [
            ErrorKind::UpstreamConnect,
            ErrorKind::UpstreamReset,
            ErrorKind::UpstreamProtocol,
            ErrorKind::PerTryTimeout,
            ErrorKind::RouteTimeout,
            ErrorKind::StreamIdleTimeout,
        ] {
            assert!(ProxyError::new(kind).is_backend_fault(), "{kind:?}");
        }
        for kind in [
            ErrorKind::ClientRequest,
            ErrorKind::BodyTooLarge,
            ErrorKind::ClientGone,
            ErrorKind::NoHealthyBackend,
            ErrorKind::Overloaded(Overload::MaxPendingRequests),
            ErrorKind::Internal,
            ErrorKind::ClientDeadline,
        ] {
            assert!(!ProxyError::new(kind).is_backend_fault(), "{kind:?}");
        }
    }

    #[test]
    fn our_body_errors_are_found_in_a_chain() {
        let ours = RequestBodyError::TooLarge { limit: 10 };
        assert_eq!(classify_chain(&ours), ErrorKind::BodyTooLarge);
        let gone = ProxyError::new(ErrorKind::ClientGone);
        assert!(gone.closes_connection());
    }
}
