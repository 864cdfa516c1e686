//! Which VIPs a node should announce: the pure decision, from the config, a health snapshot
//! and whether the node is drained. Nothing here touches the kernel.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{Config, RouteAction, ServiceKind};
use crate::health::HealthView;

/// Why a VIP is or is not announced, as `/status` and the logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// A service on the VIP has backends taking new traffic (healthy, in panic mode, or
    /// failing open), or is an l7 service that answers by itself.
    Serving,
    /// No service on the VIP has a backend taking new traffic.
    NoBackends,
    /// The node is drained: nothing is announced.
    NodeDrained,
}

impl Verdict {
    /// Whether the VIP's route should be in the table.
    pub fn announced(self) -> bool {
        self == Verdict::Serving
    }

    /// The word `/status` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Serving => "serving",
            Verdict::NoBackends => "no_backends",
            Verdict::NodeDrained => "node_drained",
        }
    }
}

/// Every VIP of `config` with its verdict under `view`.
///
/// A VIP carries several services (ports, protocols): it is announced while any of them can
/// take new traffic, since withdrawing it would take the healthy ones down with the others.
/// A pool the snapshot does not know yet counts as serving, as the kernel tables treat it.
pub fn plan(config: &Config, view: &HealthView, drained: bool) -> BTreeMap<IpAddr, Verdict> {
    let mut vips: BTreeMap<IpAddr, Verdict> = BTreeMap::new();
    for service in &config.services {
        let verdict = if drained {
            Verdict::NodeDrained
        } else if serves(config, view, &service.kind) {
            Verdict::Serving
        } else {
            Verdict::NoBackends
        };
        let entry = vips.entry(service.vip).or_insert(verdict);
        // Serving < NoBackends: the best verdict of the VIP's services wins.
        *entry = (*entry).min(verdict);
    }
    vips
}

/// Whether a service can take new traffic now.
fn serves(config: &Config, view: &HealthView, kind: &ServiceKind) -> bool {
    let pool_serves = |id| {
        config.pool(id).is_some_and(|pool| {
            view.usable(&pool.name)
                .is_none_or(|usable| !usable.is_empty())
        })
    };
    match kind {
        ServiceKind::L4(l4) => pool_serves(l4.pool),
        ServiceKind::L7(l7) => {
            let mut forwards = l7
                .virtual_hosts
                .iter()
                .flat_map(|vh| vh.routes.iter())
                .filter_map(|route| match &route.action {
                    RouteAction::Forward(targets) => Some(targets),
                    _ => None,
                })
                .flatten()
                .peekable();
            // Redirects and direct responses need no backend.
            forwards.peek().is_none() || forwards.any(|target| pool_serves(target.pool))
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
