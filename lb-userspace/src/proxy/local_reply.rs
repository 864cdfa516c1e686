//! The answers the proxy makes itself (404, errors, a filter's denial), built in one place:
//! [`local_reply`]. A new kind of local answer (a gRPC-shaped error, say) is a new
//! [`LocalReply`] arm or a new branch here, not a new response builder elsewhere.
//! A gRPC client gets every local answer as a trailers-only gRPC response (HTTP 200 with
//! `grpc-status` and `grpc-message`), since gRPC clients read no HTTP error statuses.

use http::header::{CONNECTION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use tracing::debug;

use super::body::ResponseBody;
use super::error::{ErrorKind, ProxyError};
use super::filter::Deny;
use super::grpc::{self, Code};

/// Names the circuit breaker that refused a request (Envoy says `x-envoy-overloaded`).
static X_SLUICE_OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-sluice-overloaded");

/// Something the proxy answers itself.
#[derive(Debug)]
pub enum LocalReply<'a> {
    /// A bare status (404 for no route, 405 for CONNECT).
    Status(StatusCode),
    /// A failed request.
    Error(&'a ProxyError),
    /// A filter's refusal.
    Denied(Deny),
}

/// Who a local answer goes to.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    /// The client speaks HTTP/1, whose connection is closed after an error that leaves its
    /// framing untrustworthy.
    pub h1: bool,
    /// The request is gRPC.
    pub grpc: bool,
}

impl ReplyTo {
    /// Who sent `request`.
    pub fn of<B>(request: &http::Request<B>) -> Self {
        Self {
            h1: request.version() < http::Version::HTTP_2,
            grpc: grpc::is_grpc(request.headers()),
        }
    }
}

/// The response for `reply` to `to`.
pub fn local_reply(reply: LocalReply<'_>, to: ReplyTo) -> Response<ResponseBody> {
    let h1 = to.h1;
    match reply {
        LocalReply::Status(status) if to.grpc => {
            let message = match status {
                StatusCode::NOT_FOUND => "no route for this method",
                _ => status.canonical_reason().unwrap_or("refused"),
            };
            grpc_status(Code::of_status(status), message)
        }
        LocalReply::Status(status) => plain(status),
        LocalReply::Error(err) => {
            debug!(error = %err, "request failed");
            let mut response = if to.grpc {
                grpc_status(Code::of_error(err.kind()), err.summary())
            } else {
                plain(err.status())
            };
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
        LocalReply::Denied(deny) => {
            let mut response = if to.grpc {
                let message = format!(
                    "{} ({})",
                    deny.status.canonical_reason().unwrap_or("refused"),
                    deny.reason
                );
                grpc_status(Code::of_status(deny.status), &message)
            } else {
                match deny.body {
                    Some(body) => {
                        let mut response = Response::new(ResponseBody::full(body));
                        *response.status_mut() = deny.status;
                        response
                    }
                    None => plain(deny.status),
                }
            };
            for (name, value) in deny.headers {
                response.headers_mut().insert(name, value);
            }
            response
        }
    }
}

/// A redirect to `location`.
pub fn redirect(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// A trailers-only gRPC answer: HTTP 200, no body, the status in the headers.
fn grpc_status(code: Code, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(bytes::Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.extend(grpc::status_headers(code, message));
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
