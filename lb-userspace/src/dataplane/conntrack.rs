//! The connection table's timeouts and new-flow limits, written where the XDP program reads
//! them.

use lb_common::limits::{
    SETTING_CLOSING_S, SETTING_NEW_FLOWS_PER_CPU, SETTING_SOURCE_BURST, SETTING_SOURCE_RATE,
    SETTING_TCP_IDLE_S, SETTING_UDP_IDLE_S,
};

use crate::config::{ConntrackTimeouts, FloodLimits};

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
