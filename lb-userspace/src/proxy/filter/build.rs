//! Building a listener's filters from its config, once per reload: a filter whose name and
//! settings are unchanged is the running one (its state, e.g. rate-limit buckets, goes on),
//! any other is built anew. Routes then get their chains from the built set.

use std::collections::HashMap;
use std::sync::Arc;

use super::api_key::ApiKeyFilter;
use super::authz::AuthzFilter;
use super::cors::CorsFilter;
use super::ext_authz::ExtAuthzFilter;
use super::headers::HeaderFilter;
use super::jwt::JwtFilter;
use super::rate_limit::RateLimitFilter;
use super::request_id::RequestIdFilter;
use super::{Chain, ChainEntry, Filter};
use crate::config::{FilterKind, FilterSpec, HeaderEdits};
use crate::proxy::stats::{FilterStats, StatsRegistry};

/// Why a filter could not be built from settings validation accepted.
#[derive(Debug, thiserror::Error)]
pub enum FilterBuildError {
    /// A header name hyper refuses.
    #[error("header name {name:?}")]
    HeaderName {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: http::header::InvalidHeaderName,
    },
    /// A header value hyper refuses.
    #[error("value of header {name:?}")]
    HeaderValue {
        /// The header.
        name: String,
        /// Why.
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    /// A rate that is no token bucket (zero period or burst).
    #[error("rate_limit: the rate, period and burst make no token bucket")]
    Quota,
    /// A Redis URL the client refuses.
    #[error("rate_limit.redis")]
    Redis(#[source] redis::RedisError),
    /// A JWKS key whose material jsonwebtoken refuses.
    #[error("jwt: a key of the JWKS")]
    Jwk(#[source] jsonwebtoken::errors::Error),
    /// A JWKS URL that is no URI.
    #[error("jwt: JWKS URL {0:?}")]
    JwksUrl(String),
    /// Built outside a tokio runtime, so nothing could fetch a JWKS URL.
    #[error("jwt: no runtime to fetch the JWKS in")]
    NoRuntime,
    /// An authorization service URL that is no URI.
    #[error("ext_authz: URL {0:?}")]
    ExtAuthzUrl(String),
    /// The URL or the trust roots of a service the filter calls.
    #[error("service URL")]
    Service(#[source] Box<super::service_client::ServiceClientError>),
    /// A method name hyper refuses.
    #[error("authz: method {0:?}")]
    Method(String),
    /// In a named filter.
    #[error("filter {name:?}")]
    In {
        /// The filter.
        name: String,
        /// What went wrong.
        #[source]
        source: Box<FilterBuildError>,
    },
}

impl From<super::service_client::ServiceClientError> for FilterBuildError {
    fn from(err: super::service_client::ServiceClientError) -> Self {
        Self::Service(Box::new(err))
    }
}

type StateKey = (Arc<str>, String);

/// The running filters of every listener, by `(service, filter name)`, with the settings
/// they were built from.
#[derive(Default)]
pub struct FilterStates {
    running: HashMap<StateKey, (FilterKind, Arc<dyn Filter>)>,
}

impl FilterStates {
    /// Builds service `service`'s filters: running ones (in `self`) whose settings are
    /// unchanged are reused; every filter built or reused is also put in `next`, the state
    /// of the config being prepared.
    pub fn build(
        &self,
        service: &str,
        specs: &[FilterSpec],
        stats: &StatsRegistry,
        next: &mut FilterStates,
    ) -> Result<BuiltFilters, FilterBuildError> {
        let service: Arc<str> = service.into();
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let key = (service.clone(), spec.name.clone());
            let filter_stats = stats.filter(
                &service,
                &spec.name,
                spec.kind.type_name(),
                spec.kind.deny_reasons(),
                spec.kind.events(),
            );
            let filter = match self.running.get(&key) {
                Some((kind, filter)) if *kind == spec.kind => filter.clone(),
                _ => build(&spec.name, &spec.kind, &filter_stats).map_err(|source| {
                    FilterBuildError::In {
                        name: spec.name.clone(),
                        source: Box::new(source),
                    }
                })?,
            };
            next.running
                .insert(key, (spec.kind.clone(), filter.clone()));
            entries.push(ChainEntry {
                name: spec.name.as_str().into(),
                filter: filter.clone(),
                stats: Some(filter_stats),
            });
        }
        Ok(BuiltFilters {
            enabled: specs
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.enabled.then_some(i))
                .collect(),
            entries,
        })
    }
}

fn build(
    name: &str,
    kind: &FilterKind,
    stats: &Arc<FilterStats>,
) -> Result<Arc<dyn Filter>, FilterBuildError> {
    Ok(match kind {
        FilterKind::Headers(edits) => Arc::new(HeaderFilter::new(edits)?),
        FilterKind::RequestId(spec) => Arc::new(RequestIdFilter::new(spec)?),
        FilterKind::RateLimit(spec) => Arc::new(RateLimitFilter::new(name, spec)?),
        FilterKind::ApiKey(spec) => Arc::new(ApiKeyFilter::new(spec)?),
        FilterKind::ExtAuthz(spec) => Arc::new(ExtAuthzFilter::new(spec, stats.clone())?),
        FilterKind::Cors(spec) => Arc::new(CorsFilter::new(spec)?),
        FilterKind::Authz(spec) => Arc::new(AuthzFilter::new(spec)?),
        FilterKind::Jwt(spec) => Arc::new(JwtFilter::new(name, spec, stats.clone())?),
    })
}

/// One listener's built filters, in config order.
#[derive(Default)]
pub struct BuiltFilters {
    entries: Vec<ChainEntry>,
    enabled: Vec<usize>,
}

impl BuiltFilters {
    /// The chain of a route that lists `filters` (indices; `None`: every enabled filter)
    /// and makes header edits `edits` (run last).
    pub fn chain(
        &self,
        filters: Option<&[usize]>,
        edits: &HeaderEdits,
    ) -> Result<Chain, FilterBuildError> {
        let picked = filters.unwrap_or(&self.enabled);
        let mut entries: Vec<ChainEntry> = picked
            .iter()
            .filter_map(|i| self.entries.get(*i))
            .cloned()
            .collect();
        let edits = HeaderFilter::new(edits)?;
        if !edits.is_empty() {
            entries.push(ChainEntry {
                name: "route_headers".into(),
                filter: Arc::new(edits),
                stats: None,
            });
        }
        Ok(Chain::new(entries))
    }
}
