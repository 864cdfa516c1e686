//! The connection table's size and timeouts: sized for the machine's possible CPUs (the LRU
//! lists are per CPU), and its timeouts written where the XDP program reads them.

use lb_common::limits::{
    SETTING_CLOSING_S, SETTING_NEW_FLOWS_PER_CPU, SETTING_SOURCE_BURST, SETTING_SOURCE_RATE,
    SETTING_TCP_IDLE_S, SETTING_UDP_IDLE_S,
};
use tracing::warn;

use crate::config::{ConntrackTimeouts, FloodLimits};

/// Below this many entries per CPU, a CPU's share of the table fills quickly and evicts
/// established flows: the agent warns.
pub const MIN_ENTRIES_PER_CPU: u32 = 4096;

/// How the connection table is split over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSize {
    /// The map's `max_entries`: a multiple of `cpus`, at least the configured total.
    pub max_entries: u32,
    /// Each CPU's LRU list holds this many.
    pub per_cpu: u32,
    /// Possible CPUs (not only online ones: the kernel splits over every possible CPU).
    pub cpus: u32,
}

/// Splits `total` entries over `possible_cpus` as `BPF_F_NO_COMMON_LRU` does: every possible
/// CPU gets an equal share, so the total is rounded up to a multiple of the CPU count.
pub fn split(total: u32, possible_cpus: u32) -> TableSize {
    let cpus = possible_cpus.max(1);
    let per_cpu = total.div_ceil(cpus).max(1);
    TableSize {
        max_entries: per_cpu.saturating_mul(cpus),
        per_cpu,
        cpus,
    }
}

/// The size of a table of `total` entries on this machine, warning when each CPU would get
/// fewer than [`MIN_ENTRIES_PER_CPU`].
pub fn size_for_this_machine(total: u32) -> TableSize {
    let cpus = match aya::util::nr_cpus() {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err((path, error)) => {
            warn!(path, %error, "cannot read the possible CPUs; sizing the connection table as if there were one");
            1
        }
    };
    let size = split(total, cpus);
    if size.per_cpu < MIN_ENTRIES_PER_CPU {
        warn!(
            conntrack_entries = total,
            possible_cpus = size.cpus,
            per_cpu = size.per_cpu,
            "each CPU's share of the connection table holds only {} flows (the kernel splits \
             it over every possible CPU, /sys/devices/system/cpu/possible); a busy CPU will \
             evict established flows. Raise [dataplane] conntrack_entries to at least {}",
            size.per_cpu,
            u64::from(MIN_ENTRIES_PER_CPU) * u64::from(size.cpus)
        );
    }
    size
}

/// The settings slots and values (whole seconds) of `timeouts`.
pub fn timeout_settings(timeouts: &ConntrackTimeouts) -> [(u32, u32); 3] {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1);
    [
        (SETTING_TCP_IDLE_S, secs(timeouts.tcp_idle)),
        (SETTING_UDP_IDLE_S, secs(timeouts.udp_idle)),
        (SETTING_CLOSING_S, secs(timeouts.tcp_closing)),
    ]
}

/// The settings slots and values of the new-flow limits.
pub fn flood_settings(limits: &FloodLimits) -> [(u32, u32); 3] {
    [
        (SETTING_NEW_FLOWS_PER_CPU, limits.new_flows_per_cpu),
        (SETTING_SOURCE_RATE, limits.source_rate),
        (SETTING_SOURCE_BURST, limits.source_burst),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn split_rounds_up_to_a_share_per_possible_cpu() {
        assert_eq!(
            split(262_144, 6),
            TableSize {
                max_entries: 262_146,
                per_cpu: 43_691,
                cpus: 6
            }
        );
        assert_eq!(split(1024, 1).max_entries, 1024);
        assert_eq!(split(1024, 0).cpus, 1, "no CPU count: one");
        assert_eq!(split(10, 64).per_cpu, 1);
        let big = split(u32::MAX, 3);
        assert!(
            big.max_entries >= u32::MAX - 2,
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn timeouts_go_to_their_slots_in_seconds() {
        let t = ConntrackTimeouts {
            tcp_idle: Duration::from_secs(7200),
            udp_idle: Duration::from_secs(30),
            tcp_closing: Duration::from_secs(5),
        };
        assert_eq!(
            timeout_settings(&t),
            [
                (SETTING_TCP_IDLE_S, 7200),
                (SETTING_UDP_IDLE_S, 30),
                (SETTING_CLOSING_S, 5)
            ]
        );
    }
}
