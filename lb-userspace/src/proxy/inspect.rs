//! Which route and pool an L7 service would pick for a request, for `sluice explain`: the
//! service's virtual hosts compiled and matched by the same code the listeners use.

use http::{HeaderMap, Method};

use super::filter::BuiltFilters;
use super::route::{RequestView, RouteTable};
use super::stats::StatsRegistry;
use crate::config::{Config, RouteAction, ServiceKind};

/// Where a request would go.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteChoice {
    /// `virtual-host#n`, or `None` when no route matches (the proxy answers 404).
    pub route: Option<String>,
    /// The pools a forward route splits over with their weights; empty for redirects and
    /// direct responses.
    pub pools: Vec<(String, u32)>,
    /// `forward`, `redirect`, `direct_response`, or `none`.
    pub action: String,
}

/// The route of L7 service `service` for `GET path` with `Host: host`; `None` when the
/// config has no L7 service of that name.
pub fn route_for(config: &Config, service: &str, host: &str, path: &str) -> Option<RouteChoice> {
    let l7 = config.services.iter().find_map(|s| match &s.kind {
        ServiceKind::L7(l7) if s.name == service => Some(l7),
        _ => None,
    })?;
    // A throwaway registry: the explanation must not create counters of the live proxy.
    // No filters either: they decide nothing about where a request goes.
    let table = RouteTable::compile(
        service,
        &l7.virtual_hosts,
        &StatsRegistry::default(),
        &BuiltFilters::default(),
    )
    .ok()?;
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let headers = HeaderMap::new();
    let request = RequestView {
        method: &Method::GET,
        path,
        query,
        headers: &headers,
    };
    let Some(route) = table.find(host, &request) else {
        return Some(RouteChoice {
            route: None,
            pools: Vec::new(),
            action: "none".into(),
        });
    };
    // The compiled route names its place in the config: `virtual-host#n`, 1-based.
    let configured = route.name.rsplit_once('#').and_then(|(vhost, n)| {
        let index = n.parse::<usize>().ok()?.checked_sub(1)?;
        l7.virtual_hosts
            .iter()
            .find(|v| v.name == vhost)?
            .routes
            .get(index)
    });
    let (action, pools) = match configured.map(|r| &r.action) {
        Some(RouteAction::Forward(targets)) => {
            let pools = targets
                .iter()
                .filter_map(|t| {
                    config
                        .pool(t.pool)
                        .map(|p| (p.name.clone(), u32::from(t.weight)))
                })
                .collect();
            ("forward", pools)
        }
        Some(RouteAction::Redirect(_)) => ("redirect", Vec::new()),
        Some(RouteAction::DirectResponse { .. }) => ("direct_response", Vec::new()),
        None => ("none", Vec::new()),
    };
    Some(RouteChoice {
        route: Some(route.name.to_string()),
        pools,
        action: action.into(),
    })
}
