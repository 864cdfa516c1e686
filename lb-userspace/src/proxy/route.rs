//! A listener's route table, compiled once from its virtual hosts: the host lookup (exact,
//! then the longest `*.` suffix, then `*`) and each virtual host's routes, first match wins.
//! Pure: no I/O, no pools, so it is unit-tested on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode};

use super::filter::{BuiltFilters, Chain, FilterBuildError};
use super::normalize::percent_decode;
use super::route_index::{INDEX_FROM, PathIndex};
use super::stats::{RouteStats, StatsRegistry};
use crate::config::{
    HeaderEdits, HostPattern, PathMatch, PoolId, Redirect, RetryPolicy, Route as RouteConfig,
    RouteAction, ValueCondition, ValueMatch, VirtualHost,
};

/// Why a route validation let through cannot be compiled (hyper's types are stricter).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A direct-response status `http` refuses.
    #[error("route {route}: status {status}")]
    Status {
        /// The route.
        route: Arc<str>,
        /// The status.
        status: u16,
        /// Why.
        #[source]
        source: http::status::InvalidStatusCode,
    },
    /// A method `http` refuses.
    #[error("route {route}: method {method:?}")]
    Method {
        /// The route.
        route: Arc<str>,
        /// The method.
        method: String,
        /// Why.
        #[source]
        source: http::method::InvalidMethod,
    },
    /// A header name in a match.
    #[error("route {route}: header name {name:?}")]
    HeaderName {
        /// The route.
        route: Arc<str>,
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: http::header::InvalidHeaderName,
    },
    /// The path regexes of a virtual host could not be indexed.
    #[error("virtual host {virtual_host:?}: path regexes")]
    PathIndex {
        /// The virtual host.
        virtual_host: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// The route's filter chain (its header edits included).
    #[error("route {route}")]
    Filters {
        /// The route.
        route: Arc<str>,
        /// Why.
        #[source]
        source: FilterBuildError,
    },
}

/// What a request is matched on. Borrowed from the request, so matching allocates nothing.
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The path, as received (not normalised).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The compiled virtual hosts of one listener.
#[derive(Debug)]
pub struct RouteTable {
    exact: HashMap<Box<str>, usize>,
    suffixes: HashMap<Box<str>, usize>,
    any: Option<usize>,
    hosts: Vec<HostRoutes>,
}

/// One virtual host's routes, indexed by path when there are many.
#[derive(Debug)]
struct HostRoutes {
    routes: Vec<Route>,
    index: Option<PathIndex>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// `virtual-host#n` (1-based), for logs and metrics.
    pub name: Arc<str>,
    matcher: Matcher,
    /// What to do with a matching request.
    pub action: Action,
    /// `(matched prefix, replacement)`.
    pub prefix_rewrite: Option<(Box<str>, Box<str>)>,
    /// The filters the route runs, its own header edits last.
    pub chain: Chain,
    /// Whole-request timeout, retries included; `None` is off.
    pub timeout: Option<Duration>,
    /// Longest wait for the backend's response head or next body frame; `None` is off.
    pub stream_idle_timeout: Option<Duration>,
    /// Retries, if any.
    pub retry: Option<RetryPolicy>,
    /// Upgrade protocols (lower case) tunnelled on this route.
    pub upgrades: Vec<String>,
    /// This route's counters.
    pub stats: Arc<RouteStats>,
}

/// A compiled route action.
#[derive(Debug)]
pub enum Action {
    /// Forward to one of these pools.
    Forward(WeightedPools),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with this status and body.
    Direct {
        /// The status.
        status: StatusCode,
        /// The body (cheap to clone).
        body: Bytes,
    },
}

/// Pools of a forward action with cumulative weights, for a pick by one random number.
#[derive(Debug)]
pub struct WeightedPools {
    cumulative: Vec<(u32, PoolId)>,
}

impl WeightedPools {
    /// The total weight: pick with a number in `0..total()`.
    pub fn total(&self) -> u32 {
        self.cumulative.last().map_or(0, |(w, _)| *w)
    }

    /// The pool owning `ticket` (in `0..total()`); a single pool needs no ticket.
    pub fn pick(&self, ticket: u32) -> Option<PoolId> {
        if let [(_, only)] = self.cumulative.as_slice() {
            return Some(*only);
        }
        self.cumulative
            .iter()
            .find(|(upto, _)| ticket < *upto)
            .map(|(_, pool)| *pool)
    }

    /// Whether the action has more than one pool.
    pub fn is_split(&self) -> bool {
        self.cumulative.len() > 1
    }
}

#[derive(Debug)]
struct Matcher {
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueCondition)>,
    query: Vec<ValueMatch>,
}

impl RouteTable {
    /// Compiles `virtual_hosts` of service `service`; route counters come from `stats`, so
    /// they survive reloads of an unchanged route, and chains from the listener's `filters`.
    pub fn compile(
        service: &str,
        virtual_hosts: &[VirtualHost],
        stats: &StatsRegistry,
        filters: &BuiltFilters,
    ) -> Result<Self, RouteError> {
        let mut table = RouteTable {
            exact: HashMap::new(),
            suffixes: HashMap::new(),
            any: None,
            hosts: Vec::with_capacity(virtual_hosts.len()),
        };
        for (index, vhost) in virtual_hosts.iter().enumerate() {
            for domain in &vhost.domains {
                match domain {
                    HostPattern::Exact(host) => {
                        table.exact.insert(host.as_str().into(), index);
                    }
                    HostPattern::Suffix(suffix) => {
                        table.suffixes.insert(suffix.as_str().into(), index);
                    }
                    HostPattern::Any => table.any = Some(index),
                }
            }
            let routes = vhost
                .routes
                .iter()
                .enumerate()
                .map(|(i, route)| {
                    let name: Arc<str> = format!("{}#{}", vhost.name, i + 1).into();
                    compile_route(route, stats.route(service, &name), name, filters)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let index = if routes.len() >= INDEX_FROM {
                let index =
                    PathIndex::build(routes.iter().map(|r| &r.matcher.path)).map_err(|source| {
                        RouteError::PathIndex {
                            virtual_host: vhost.name.clone(),
                            source,
                        }
                    })?;
                Some(index)
            } else {
                None
            };
            table.hosts.push(HostRoutes { routes, index });
        }
        Ok(table)
    }

    /// The first route of the virtual host serving `host` that matches `request`.
    /// `host` is a Host header or :authority value; port and case do not matter.
    pub fn find(&self, host: &str, request: &RequestView<'_>) -> Option<&Route> {
        let host = self.hosts.get(self.virtual_host(host)?)?;
        match &host.index {
            None => host.routes.iter().find(|r| r.matcher.matches(request)),
            // Only routes whose path holds are tried, still in order: first match wins.
            Some(index) => index
                .candidates(request.path)
                .into_iter()
                .filter_map(|i| host.routes.get(i as usize))
                .find(|r| r.matcher.matches_besides_path(request)),
        }
    }

    fn virtual_host(&self, host: &str) -> Option<usize> {
        let (name, _) = split_host_port(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        let mut buf = [0u8; 256];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return self.any;
        };
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        let Ok(name) = std::str::from_utf8(lower) else {
            return self.any;
        };
        if let Some(index) = self.exact.get(name) {
            return Some(*index);
        }
        if !self.suffixes.is_empty() {
            // Left to right: the first suffix found is the longest.
            for (dot, _) in name.match_indices('.') {
                if dot > 0
                    && let Some(index) = self.suffixes.get(&name[dot + 1..])
                {
                    return Some(*index);
                }
            }
        }
        self.any
    }
}

fn compile_route(
    route: &RouteConfig,
    stats: Arc<RouteStats>,
    name: Arc<str>,
    filters: &BuiltFilters,
) -> Result<Route, RouteError> {
    let action = match &route.action {
        RouteAction::Forward(pools) => {
            let mut upto = 0u32;
            let cumulative = pools
                .iter()
                .map(|p| {
                    upto += u32::from(p.weight);
                    (upto, p.pool)
                })
                .collect();
            Action::Forward(WeightedPools { cumulative })
        }
        RouteAction::Redirect(redirect) => Action::Redirect(redirect.clone()),
        RouteAction::DirectResponse { status, body } => Action::Direct {
            status: StatusCode::from_u16(*status).map_err(|source| RouteError::Status {
                route: name.clone(),
                status: *status,
                source,
            })?,
            body: body.clone().map(Bytes::from).unwrap_or_default(),
        },
    };
    let methods = route
        .matcher
        .methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.as_bytes()).map_err(|source| RouteError::Method {
                route: name.clone(),
                method: m.clone(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    let headers = route
        .matcher
        .headers
        .iter()
        .map(|h| {
            let header = HeaderName::from_bytes(h.name.as_bytes()).map_err(|source| {
                RouteError::HeaderName {
                    route: name.clone(),
                    name: h.name.clone(),
                    source,
                }
            })?;
            Ok((header, h.condition.clone()))
        })
        .collect::<Result<_, RouteError>>()?;
    let prefix_rewrite = match (&route.prefix_rewrite, &route.matcher.path) {
        (Some(to), PathMatch::Prefix(from)) => Some((from.as_str().into(), to.as_str().into())),
        _ => None,
    };
    let edits = HeaderEdits {
        request_add: route.request_headers_add.clone(),
        request_remove: route.request_headers_remove.clone(),
        response_add: route.response_headers_add.clone(),
        response_remove: route.response_headers_remove.clone(),
    };
    let chain = filters
        .chain(route.filters.as_deref(), &edits)
        .map_err(|source| RouteError::Filters {
            route: name.clone(),
            source,
        })?;
    Ok(Route {
        name,
        matcher: Matcher {
            path: route.matcher.path.clone(),
            methods,
            headers,
            query: route.matcher.query.clone(),
        },
        action,
        prefix_rewrite,
        chain,
        timeout: route.timeout,
        stream_idle_timeout: route.stream_idle_timeout,
        retry: route.retry.clone(),
        upgrades: route.upgrades.clone(),
        stats,
    })
}

impl Matcher {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => req.path == p,
            PathMatch::Prefix(p) => req.path.starts_with(p.as_str()),
            PathMatch::Regex(re) => re.0.is_match(req.path),
        };
        path_ok && self.matches_besides_path(req)
    }

    /// Every condition but the path's (which an index already checked).
    fn matches_besides_path(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .headers
                .iter()
                .all(|(name, cond)| header_holds(req.headers, name, cond))
            && self.query.iter().all(|q| query_holds(req.query, q))
    }
}

/// A header condition holds when any of the header's values satisfies it (absent: none
/// exists).
fn header_holds(headers: &HeaderMap, name: &HeaderName, cond: &ValueCondition) -> bool {
    let mut values = headers.get_all(name).iter();
    match cond {
        ValueCondition::Present => values.next().is_some(),
        ValueCondition::Absent => values.next().is_none(),
        ValueCondition::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
        ValueCondition::Regex(re) => values.any(|v| v.to_str().is_ok_and(|s| re.0.is_match(s))),
    }
}

/// A query condition holds when any occurrence of the parameter satisfies it. Values are
/// compared percent-decoded; names as sent.
fn query_holds(query: Option<&str>, cond: &ValueMatch) -> bool {
    let mut values = query.unwrap_or("").split('&').filter_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name == cond.name).then_some(value)
    });
    match &cond.condition {
        ValueCondition::Present => values.next().is_some(),
        ValueCondition::Absent => values.next().is_none(),
        ValueCondition::Exact(want) => values.any(|v| percent_decode(v) == want.as_str()),
        ValueCondition::Regex(re) => values.any(|v| re.0.is_match(&percent_decode(v))),
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into the host and the port, if valid.
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (
                &authority[..host.len() + 2],
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (host, None),
        },
        None => (authority, None),
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
