//! Per-CPU counters the agent sums for its metrics.

use lb_common::icmp::IcmpReason;
use lb_common::stats::Reason;

use crate::maps::{BACKEND_STATS, GLOBAL_STATS, ICMP_STATS, SERVICE_STATS};

/// Adds one packet of `bytes` bytes to a global counter on this CPU.
#[inline(always)]
pub fn count(reason: Reason, bytes: u64) {
    if let Some(c) = GLOBAL_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot: no other program run writes it concurrently.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Adds one ICMP packet of `bytes` bytes to an ICMP counter on this CPU.
#[inline(always)]
pub fn count_icmp(reason: IcmpReason, bytes: u64) {
    if let Some(c) = ICMP_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot: no other program run writes it concurrently.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Adds one packet to a service's and a backend's counters; `new_flow` when Maglev placed it.
#[inline(always)]
pub fn count_flow(service_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    let new_flows = u64::from(new_flow);
    if let Some(c) = SERVICE_STATS.get_ptr_mut(service_id) {
        // SAFETY: per-CPU slot, as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flows;
        }
    }
    count_backend(backend_id, bytes, new_flows);
}

/// Adds one packet to a backend's counters.
#[inline(always)]
pub fn count_backend(backend_id: u32, bytes: u64, new_flows: u64) {
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU slot, as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flows;
        }
    }
}
