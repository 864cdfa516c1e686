//! The filter chain: checks and edits a route runs on a request after it is routed and
//! before it is answered or forwarded (authentication, rate limits, request identity, header
//! edits), and on the response on its way back.
//!
//! A listener's filters are built once per reload (`build`), kept across reloads by name
//! while their settings stay the same (so rate-limit buckets survive a reload that adds a
//! route), and each compiled route holds its own [`Chain`]: nothing is looked up by name
//! per request.

mod api_key;
mod authz;
mod build;
mod cors;
mod ext_authz;
mod headers;
mod jwks_fetch;
mod jwt;
mod rate_limit;
mod request_id;
mod service_client;
mod shared_limit;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Sleep;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

pub use build::{BuiltFilters, FilterBuildError, FilterStates};

use super::stats::FilterStats;

/// One filter: a request phase that lets the request go on (possibly changed, with what it
/// learned recorded in [`Learned`]) or answers it at once, and a response phase.
pub trait Filter: Send + Sync + 'static {
    /// Looks at (and may change) the request head.
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict;

    /// Edits the response head; runs only when this filter's request phase ran and let the
    /// request go on.
    fn on_response(&self, _headers: &mut HeaderMap, _learned: &Learned) {}
}

/// What a request phase decided.
pub enum Verdict {
    /// The request goes on to the next filter.
    Continue,
    /// The request is answered with this, and goes no further.
    Deny(Deny),
    /// The decision needs I/O (Redis, an authorization service): the chain waits for it,
    /// within the route's deadline.
    Pending(Pin<Box<dyn Future<Output = Decision> + Send>>),
}

/// What a pending decision came to: go on, with these headers set on the request (an
/// authorization service's), or this answer.
pub type Decision = Result<Vec<(HeaderName, HeaderValue)>, Deny>;

/// A filter's own answer to a request (401, 403, 429, ...). Made into a response by
/// `local_reply`, in one place.
#[derive(Debug)]
pub struct Deny {
    /// The status.
    pub status: StatusCode,
    /// Why, as counted in metrics and logged (`over_limit`, `client_id`, ...).
    pub reason: &'static str,
    /// Headers the answer carries (`Retry-After`, `WWW-Authenticate`, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The answer's body; `None`: a short text for the status.
    pub body: Option<bytes::Bytes>,
}

/// The request as filters see it: routed, normalised and (for forward routes) with its
/// forwarding headers set.
pub struct FilterRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target, its path normalised; filters may edit it (a credential removed from the
    /// query).
    pub uri: &'a mut Uri,
    /// The headers, to read and to edit.
    pub headers: &'a mut HeaderMap,
    /// The client's address.
    pub client: SocketAddr,
    /// What filters learned about the request so far.
    pub learned: &'a mut Learned,
}

/// What the filters of one request learned and decided; logged with the request.
#[derive(Debug, Default)]
pub struct Learned {
    /// Who the client is, once a filter has established it.
    pub principal: Option<Arc<str>>,
    /// The verified claims of the request's token (`jwt`), for `authz`.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The `Access-Control-Allow-Origin` the response gets (`cors`, an allowed origin).
    pub cors_origin: Option<HeaderValue>,
    /// The request's id (`request_id`).
    pub request_id: Option<HeaderValue>,
    /// The request's W3C trace context (`request_id`).
    pub traceparent: Option<HeaderValue>,
    /// `(limit, remaining)` of the tightest rate limit the request passed (`rate_limit`).
    pub rate_limit: Option<(u32, u32)>,
    /// Each filter's decision, in chain order: `(filter, "allow" or the deny reason)`.
    pub decisions: Vec<(Arc<str>, &'static str)>,
    /// A filter removed a credential from the query: the access log shows the target as
    /// forwarded, not as the client sent it.
    pub query_redacted: bool,
}

/// One filter in a route's chain.
#[derive(Clone)]
pub struct ChainEntry {
    /// The filter's name (as configured).
    pub name: Arc<str>,
    /// The filter.
    pub filter: Arc<dyn Filter>,
    /// Its decision counters; `None` for a route's own header edits, which decide nothing.
    pub stats: Option<Arc<FilterStats>>,
}

/// A route's filters, in order; cheap to clone.
#[derive(Clone, Default)]
pub struct Chain {
    entries: Arc<[ChainEntry]>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &*e.name))
            .finish()
    }
}

impl Chain {
    /// A chain of `entries`, run in this order.
    pub fn new(entries: Vec<ChainEntry>) -> Self {
        Self {
            entries: entries.into(),
        }
    }

    /// Runs every request phase in order until one answers; a filter still waiting when
    /// `deadline` passes answers 504. Returns how many filters let the request go on (the
    /// ones whose response phase runs), and the answer if one gave it.
    pub async fn on_request(
        &self,
        request: &mut FilterRequest<'_>,
        mut deadline: Pin<&mut Sleep>,
    ) -> (usize, Option<Deny>) {
        for (ran, entry) in self.entries.iter().enumerate() {
            let outcome = match entry.filter.on_request(request) {
                Verdict::Continue => Ok(()),
                Verdict::Deny(deny) => Err(deny),
                Verdict::Pending(decision) => tokio::select! {
                    decided = decision => decided.map(|add| {
                        for (name, value) in add {
                            request.headers.insert(name, value);
                        }
                    }),
                    () = deadline.as_mut() => Err(Deny {
                        status: StatusCode::GATEWAY_TIMEOUT,
                        reason: "timeout",
                        body: None,
                        headers: Vec::new(),
                    }),
                },
            };
            let decision = match &outcome {
                Ok(()) => "allow",
                Err(deny) => deny.reason,
            };
            if let Some(stats) = &entry.stats {
                stats.record(decision);
                request
                    .learned
                    .decisions
                    .push((entry.name.clone(), decision));
            }
            if let Err(deny) = outcome {
                return (ran, Some(deny));
            }
        }
        (self.entries.len(), None)
    }

    /// Runs the response phases of the first `ran` filters, last first.
    pub fn on_response(&self, ran: usize, headers: &mut HeaderMap, learned: &Learned) {
        let ran = ran.min(self.entries.len());
        for entry in self.entries[..ran].iter().rev() {
            entry.filter.on_response(headers, learned);
        }
    }
}

impl Learned {
    /// The decisions as one access-log field: `name:decision` separated by commas, or `-`.
    pub fn decisions_text(&self) -> String {
        if self.decisions.is_empty() {
            return "-".to_owned();
        }
        let mut out = String::with_capacity(self.decisions.len() * 16);
        for (i, (name, decision)) in self.decisions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push(':');
            out.push_str(decision);
        }
        out
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
