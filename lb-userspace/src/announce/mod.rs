//! Route announcement for running several nodes behind ECMP: the agent decides which VIPs
//! this node announces, and a BGP daemon on the node (BIRD 2, see `config/bird/`) speaks BGP.
//!
//! The interface between the two is a kernel routing table (`[announce] table`): the agent
//! keeps one route per announced VIP there and the daemon exports what it finds. A VIP is
//! announced while the agent runs and one of its services can take new traffic; it is
//! withdrawn when none can, when the node is drained, and at shutdown before the data path
//! is removed.

mod plan;
mod routes;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tracing::{error, info, warn};

use crate::config::{Announce, Config};
use crate::health::HealthView;

pub use plan::{Verdict, plan};
pub use routes::{KernelTable, ROUTE_PROTOCOL, RouteError, RouteTable};
pub use status::{AnnounceStatus, VipStatus};

/// Builds the route table for an `[announce]` section; the kernel's, or a fake in tests.
pub type TableFactory = Box<dyn Fn(u32) -> Box<dyn RouteTable> + Send>;

/// A node drain asked of an agent whose config announces no VIP.
#[derive(Debug, thiserror::Error)]
#[error("this node announces nothing: the config has no [announce] section")]
pub struct NothingAnnounced;

/// The node's announcements across reloads: follows `[announce]` as it appears, changes or
/// goes, and keeps the node's drain state.
pub struct Announcements {
    factory: TableFactory,
    active: Option<Active>,
    drained: bool,
    published: Arc<ArcSwapOption<AnnounceStatus>>,
    counters: Counters,
}

/// The table in use and what it holds.
struct Active {
    config: Announce,
    table: Box<dyn RouteTable>,
    /// VIPs whose route is in the table.
    announced: BTreeSet<IpAddr>,
    verdicts: BTreeMap<IpAddr, Verdict>,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    announcements: u64,
    withdrawals: u64,
    errors: u64,
}

impl Announcements {
    /// Announcements through the kernel's routing tables.
    pub fn kernel() -> Self {
        Self::with_factory(Box::new(|table| Box::new(KernelTable::new(table))))
    }

    /// Announcements through tables `factory` builds.
    pub fn with_factory(factory: TableFactory) -> Self {
        Self {
            factory,
            active: None,
            drained: false,
            published: Arc::new(ArcSwapOption::empty()),
            counters: Counters::default(),
        }
    }

    /// The latest status, shared with the metrics collector; `None` without `[announce]`.
    pub fn published(&self) -> Arc<ArcSwapOption<AnnounceStatus>> {
        Arc::clone(&self.published)
    }

    /// The status as of the last change.
    pub fn status(&self) -> Option<AnnounceStatus> {
        self.published.load_full().map(|s| (*s).clone())
    }

    /// Brings the table in line with `config` under `view`; returns whether anything changed.
    /// Failures are logged and kept in the status; the next call tries again.
    pub fn sync(&mut self, config: &Config, view: &HealthView) -> bool {
        let before = self.status();
        let wanted = config.announce;
        if self.active.as_ref().map(|a| a.config.table) != wanted.map(|a| a.table) {
            self.close();
            if let Some(announce) = wanted {
                self.open(announce);
            }
        }
        let mut last_error = None;
        if let Some(active) = &mut self.active {
            // A reload may change the grace only.
            if let Some(announce) = wanted {
                active.config = announce;
            }
            active.verdicts = plan(config, view, self.drained);
            if let Err(err) = active.apply(&mut self.counters) {
                self.counters.errors += 1;
                error!(
                    table = active.config.table,
                    "changing the VIP routes: {err}"
                );
                last_error = Some(err.to_string());
            }
        }
        self.publish(last_error);
        self.status() != before
    }

    /// Drains (`true`) or undrains the node; the caller syncs afterwards.
    pub fn set_drained(&mut self, drained: bool) -> Result<String, NothingAnnounced> {
        let Some(active) = &self.active else {
            return Err(NothingAnnounced);
        };
        let table = active.config.table;
        self.drained = drained;
        Ok(if drained {
            format!(
                "node drained: every VIP is withdrawn from table {table}; established flows keep being forwarded"
            )
        } else {
            format!(
                "node undrained: VIPs with serving backends are announced again in table {table}"
            )
        })
    }

    /// Withdraws every VIP (at shutdown). Returns how long to keep forwarding so the
    /// router moves the traffic first, or `None` when nothing was announced.
    pub fn withdraw_all(&mut self) -> Option<Duration> {
        let active = self.active.as_mut()?;
        let grace = active.config.withdraw_grace;
        let had_any = !active.announced.is_empty();
        active.verdicts.clear();
        if let Err(err) = active.apply(&mut self.counters) {
            self.counters.errors += 1;
            error!("withdrawing the VIP routes at shutdown: {err}");
        }
        self.publish(None);
        had_any.then_some(grace)
    }

    /// Starts using a table: routes a previous agent left there (it was killed) go first.
    fn open(&mut self, config: Announce) {
        let mut table = (self.factory)(config.table);
        if let Err(err) = table.flush() {
            warn!(table = config.table, "removing stale VIP routes: {err}");
        }
        info!(
            table = config.table,
            "announcing VIPs through routing table {}", config.table
        );
        self.active = Some(Active {
            config,
            table,
            announced: BTreeSet::new(),
            verdicts: BTreeMap::new(),
        });
    }

    /// Stops using the current table, withdrawing everything in it.
    fn close(&mut self) {
        if let Some(mut active) = self.active.take() {
            active.verdicts.clear();
            if let Err(err) = active.apply(&mut self.counters) {
                self.counters.errors += 1;
                error!(table = active.config.table, "withdrawing VIP routes: {err}");
            }
        }
    }

    fn publish(&self, last_error: Option<String>) {
        let status = self.active.as_ref().map(|active| {
            Arc::new(AnnounceStatus {
                table: active.config.table,
                node_drained: self.drained,
                vips: active
                    .verdicts
                    .iter()
                    .map(|(vip, verdict)| VipStatus {
                        vip: vip.to_string(),
                        announced: active.announced.contains(vip),
                        reason: verdict.as_str().to_string(),
                    })
                    .collect(),
                announcements: self.counters.announcements,
                withdrawals: self.counters.withdrawals,
                errors: self.counters.errors,
                last_error,
            })
        });
        self.published.store(status);
    }
}

impl Active {
    /// Makes the table hold exactly the VIPs whose verdict says announce. Withdrawals go
    /// first: a failing add must not leave a VIP announced that should not be.
    fn apply(&mut self, counters: &mut Counters) -> Result<(), RouteError> {
        let wanted: BTreeSet<IpAddr> = self
            .verdicts
            .iter()
            .filter(|(_, v)| v.announced())
            .map(|(vip, _)| *vip)
            .collect();
        let gone: Vec<IpAddr> = self.announced.difference(&wanted).copied().collect();
        let new: Vec<IpAddr> = wanted.difference(&self.announced).copied().collect();
        if !gone.is_empty() {
            self.table.remove(&gone)?;
            for vip in &gone {
                let reason = self.verdicts.get(vip).map_or("shutdown", |v| v.as_str());
                info!(%vip, reason, "VIP withdrawn");
                self.announced.remove(vip);
            }
            counters.withdrawals += gone.len() as u64;
        }
        if !new.is_empty() {
            self.table.add(&new)?;
            for vip in &new {
                info!(%vip, "VIP announced");
            }
            self.announced.extend(new.iter().copied());
            counters.announcements += new.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
