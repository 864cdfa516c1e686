//! `ext_authz`: each request is checked by an external HTTP service. The check goes to
//! `url`'s path followed by the request's own path and query, with the request's method and
//! the configured request headers. A 2xx answer lets the request go on (with the headers
//! the service returned that the filter may copy onto the request); any other answer is
//! sent to the client as it is (status and body). When the service cannot be reached or
//! does not answer within `timeout`, `failure_mode` decides: `closed` answers 503, `open`
//! lets the request go on (and counts it). Connections to the service are kept alive and
//! reused (`service_client`), over TLS for an `https` URL.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::Empty;

use super::build::FilterBuildError;
use super::headers::header_name;
use super::service_client::{CallError, ServiceClient};
use super::{Decision, Deny, Filter, FilterRequest, Verdict};
use crate::config::{ExtAuthzSpec, FailureMode};
use crate::proxy::stats::FilterStats;

/// The longest answer body kept (and returned to the client).
const MAX_BODY: usize = 64 * 1024;

/// Why the service gave no answer.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("no answer in time")]
    Timeout,
}

/// The compiled `ext_authz` filter.
pub struct ExtAuthzFilter {
    target: Arc<Target>,
}

struct Target {
    client: ServiceClient,
    /// The URL's path, without a trailing `/`.
    prefix: String,
    send: Vec<HeaderName>,
    copy_back: Vec<HeaderName>,
    timeout: Duration,
    fail_open: bool,
    stats: Arc<FilterStats>,
}

impl ExtAuthzFilter {
    /// Compiles `spec`.
    pub fn new(spec: &ExtAuthzSpec, stats: Arc<FilterStats>) -> Result<Self, FilterBuildError> {
        let uri: Uri = spec
            .url
            .parse()
            .map_err(|_| FilterBuildError::ExtAuthzUrl(spec.url.clone()))?;
        let names = |list: &[String]| -> Result<Vec<HeaderName>, FilterBuildError> {
            list.iter().map(|n| header_name(n)).collect()
        };
        Ok(Self {
            target: Arc::new(Target {
                client: ServiceClient::new(&uri, spec.trust.as_ref())?,
                prefix: uri.path().trim_end_matches('/').to_owned(),
                send: names(&spec.send_headers)?,
                copy_back: names(&spec.add_to_request)?,
                timeout: spec.timeout,
                fail_open: spec.failure_mode == FailureMode::Open,
                stats,
            }),
        })
    }
}

impl Filter for ExtAuthzFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        let target = self.target.clone();
        let path = format!(
            "{}{}",
            target.prefix,
            request.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let method = request.method.clone();
        let sent: Vec<(HeaderName, HeaderValue)> = target
            .send
            .iter()
            .flat_map(|name| {
                request
                    .headers
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.clone(), v.clone()))
            })
            .collect();
        // A client must not pass off its own copies of what the service vouches for.
        for name in &target.copy_back {
            request.headers.remove(name);
        }
        Verdict::Pending(Box::pin(async move {
            let answer = tokio::time::timeout(target.timeout, check(&target, method, &path, sent))
                .await
                .unwrap_or(Err(CheckError::Timeout));
            decide(&target, answer)
        }))
    }
}

/// The service's answer: its status, the headers to copy onto the request, its body.
type Answer = (StatusCode, Vec<(HeaderName, HeaderValue)>, Bytes);

fn decide(target: &Target, answer: Result<Answer, CheckError>) -> Decision {
    match answer {
        Ok((status, add, _)) if status.is_success() => Ok(add),
        Ok((status, _, body)) => Err(Deny {
            status,
            reason: "denied",
            headers: Vec::new(),
            body: Some(body),
        }),
        Err(err) if target.fail_open => {
            target.stats.event("unavailable_allowed");
            tracing::warn!(error = %err, "authorization service unavailable; failure_mode open lets the request go on");
            Ok(Vec::new())
        }
        Err(err) => {
            tracing::warn!(error = %err, "authorization service unavailable; the request is refused");
            Err(Deny {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "unavailable",
                headers: Vec::new(),
                body: None,
            })
        }
    }
}

async fn check(
    target: &Target,
    method: http::Method,
    path: &str,
    sent: Vec<(HeaderName, HeaderValue)>,
) -> Result<Answer, CheckError> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in sent {
        builder = builder.header(name, value);
    }
    let answer = target
        .client
        .call(builder.body(Empty::new())?, MAX_BODY)
        .await?;
    let add = target
        .copy_back
        .iter()
        .filter_map(|name| answer.headers.get(name).map(|v| (name.clone(), v.clone())))
        .collect();
    Ok((answer.status, add, answer.body))
}
