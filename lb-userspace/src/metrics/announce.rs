//! What the node announces, as the announcer last published it.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::announce::AnnounceStatus;

/// Reads the latest announcement status at scrape time; reports nothing without
/// `[announce]`.
pub struct AnnounceCollector {
    status: Arc<ArcSwapOption<AnnounceStatus>>,
    descs: Vec<Desc>,
}

impl AnnounceCollector {
    pub fn new(status: Arc<ArcSwapOption<AnnounceStatus>>) -> Self {
        Self {
            status,
            descs: super::family::descs(&["sluice_announce_vip_announced"]),
        }
    }
}

impl Collector for AnnounceCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(status) = self.status.load_full() else {
            return Vec::new();
        };
        let mut announced = Family::gauge(
            "sluice_announce_vip_announced",
            "1 when the VIP's route is in the announce table (the BGP daemon announces it), \
             0 when it is withdrawn.",
        );
        for vip in &status.vips {
            announced.set(
                &[("vip", vip.vip.as_str()), ("reason", vip.reason.as_str())],
                if vip.announced { 1.0 } else { 0.0 },
            );
        }
        let mut drained = Family::gauge(
            "sluice_announce_node_drained",
            "1 while the node is drained (sluice drain-node): every VIP is withdrawn.",
        );
        drained.set(&[], if status.node_drained { 1.0 } else { 0.0 });
        let mut changes = Family::counter(
            "sluice_announce_changes_total",
            "VIP routes added (announce) and removed (withdraw) since the agent started.",
        );
        changes.count(&[("action", "announce")], status.announcements);
        changes.count(&[("action", "withdraw")], status.withdrawals);
        let mut errors = Family::counter(
            "sluice_announce_errors_total",
            "Failed changes of the announce table since the agent started.",
        );
        errors.count(&[], status.errors);
        [announced, drained, changes, errors]
            .into_iter()
            .filter_map(Family::finish)
            .collect()
    }
}
