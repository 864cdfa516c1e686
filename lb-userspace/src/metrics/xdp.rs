//! The XDP program's counters: per reason, per L4 service and per backend, summed over CPUs.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tracing::warn;

use super::family::Family;
use crate::dataplane::StatsReader;

/// Reads the kernel's counter maps at scrape time.
pub struct XdpCollector {
    stats: Arc<StatsReader>,
    descs: Vec<Desc>,
}

impl XdpCollector {
    pub fn new(stats: Arc<StatsReader>) -> Self {
        Self {
            stats,
            descs: super::family::descs(&["sluice_xdp_packets_total"]),
        }
    }
}

impl Collector for XdpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        let mut packets = Family::counter(
            "sluice_xdp_packets_total",
            "Packets seen by the XDP program, by what happened to them (\"seen\" counts all).",
        );
        let mut bytes = Family::counter(
            "sluice_xdp_bytes_total",
            "Bytes of the packets seen by the XDP program, by what happened to them.",
        );
        match self.stats.reasons() {
            Ok(reasons) => {
                for (reason, counter) in reasons {
                    packets.count(&[("reason", reason.name())], counter.packets);
                    bytes.count(&[("reason", reason.name())], counter.bytes);
                }
            }
            Err(err) => warn!(error = %err, "reading the XDP counters"),
        }
        // ICMP packets the ICMP path handled count under their own reasons (`icmp_*`).
        match self.stats.icmp_reasons() {
            Ok(reasons) => {
                for (reason, counter) in reasons {
                    packets.count(&[("reason", reason.name())], counter.packets);
                    bytes.count(&[("reason", reason.name())], counter.bytes);
                }
            }
            Err(err) => warn!(error = %err, "reading the XDP ICMP counters"),
        }
        families.extend([packets.finish(), bytes.finish()].into_iter().flatten());

        let mut service_packets = Family::counter(
            "sluice_l4_service_packets_total",
            "Packets forwarded by the XDP program for an L4 service.",
        );
        let mut service_bytes = Family::counter(
            "sluice_l4_service_bytes_total",
            "Bytes forwarded by the XDP program for an L4 service.",
        );
        let mut service_flows = Family::counter(
            "sluice_l4_service_new_flows_total",
            "Flows an L4 service placed by Maglev (new, or re-steered off a removed backend).",
        );
        match self.stats.services() {
            Ok(services) => {
                for s in services {
                    let labels = [("service", s.label.as_str())];
                    service_packets.count(&labels, s.counter.packets);
                    service_bytes.count(&labels, s.counter.bytes);
                    service_flows.count(&labels, s.counter.new_flows);
                }
            }
            Err(err) => warn!(error = %err, "reading the XDP service counters"),
        }
        families.extend(
            [
                service_packets.finish(),
                service_bytes.finish(),
                service_flows.finish(),
            ]
            .into_iter()
            .flatten(),
        );

        let mut backend_packets = Family::counter(
            "sluice_l4_backend_packets_total",
            "Packets the XDP program forwarded to (or, for NAT, from) an L4 backend.",
        );
        let mut backend_bytes = Family::counter(
            "sluice_l4_backend_bytes_total",
            "Bytes the XDP program forwarded to (or, for NAT, from) an L4 backend.",
        );
        let mut backend_flows = Family::counter(
            "sluice_l4_backend_new_flows_total",
            "Flows Maglev placed on an L4 backend.",
        );
        match self.stats.backends() {
            Ok(backends) => {
                for b in backends {
                    let address = b.label.1.to_string();
                    let labels = [("pool", b.label.0.as_str()), ("backend", address.as_str())];
                    backend_packets.count(&labels, b.counter.packets);
                    backend_bytes.count(&labels, b.counter.bytes);
                    backend_flows.count(&labels, b.counter.new_flows);
                }
            }
            Err(err) => warn!(error = %err, "reading the XDP backend counters"),
        }
        families.extend(
            [
                backend_packets.finish(),
                backend_bytes.finish(),
                backend_flows.finish(),
            ]
            .into_iter()
            .flatten(),
        );
        families
    }
}
