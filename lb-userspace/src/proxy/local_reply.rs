//! The answers the proxy makes itself (404, errors, a filter's denial), built in one place:
//! [`local_reply`]. A new kind of local answer (a gRPC-shaped error, say) is a new
//! [`LocalReply`] arm or a new branch here, not a new response builder elsewhere.

use http::header::{CONNECTION, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use tracing::debug;

use super::body::ResponseBody;
use super::error::{ErrorKind, ProxyError};
use super::filter::Deny;

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

/// The response for `reply`; `h1` says whether the client speaks HTTP/1, whose connection
/// is closed after an error that leaves its framing untrustworthy.
pub fn local_reply(reply: LocalReply<'_>, h1: bool) -> Response<ResponseBody> {
    match reply {
        LocalReply::Status(status) => plain(status),
        LocalReply::Error(err) => {
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
        LocalReply::Denied(deny) => {
            let mut response = match deny.body {
                Some(body) => {
                    let mut response = Response::new(ResponseBody::full(body));
                    *response.status_mut() = deny.status;
                    response
                }
                None => plain(deny.status),
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
