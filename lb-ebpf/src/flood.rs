//! New-flow limits on the data path (rules in `lb_common::flood`): the per-CPU rate above
//! which new flows get no connection-table entry, and the per-source token buckets.

use lb_common::flood::{SourceKey, bucket_takes, full_bucket, window_admits, window_would_admit};
use lb_common::flow::FlowKey;
use lb_common::limits::{SETTING_NEW_FLOWS_PER_CPU, SETTING_SOURCE_BURST, SETTING_SOURCE_RATE};

use crate::maps::{NEW_FLOW_WINDOW, SETTINGS, SOURCE_BUCKETS};

#[inline(always)]
fn setting(slot: u32) -> u32 {
    SETTINGS.get(slot).copied().unwrap_or(0)
}

/// Counts a flow about to enter the connection table on this CPU; whether it may (within the
/// per-CPU rate, or no rate set).
#[inline(always)]
pub fn may_track(now: u64) -> bool {
    let limit = setting(SETTING_NEW_FLOWS_PER_CPU);
    if limit == 0 {
        return true;
    }
    let Some(window) = NEW_FLOW_WINDOW.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: a per-CPU slot: nothing else writes it while this program runs here.
    window_admits(unsafe { &mut *window }, now, limit)
}

/// Whether [`may_track`] would let one more flow in now, without counting it.
#[inline(always)]
pub fn would_track(now: u64) -> bool {
    let limit = setting(SETTING_NEW_FLOWS_PER_CPU);
    if limit == 0 {
        return true;
    }
    let Some(window) = NEW_FLOW_WINDOW.get(0) else {
        return true;
    };
    window_would_admit(window, now, limit)
}

/// Whether a per-source new-flow rate is set ([`source_admits`] then takes tokens).
#[inline(always)]
pub fn source_rate_set() -> bool {
    setting(SETTING_SOURCE_RATE) != 0
}

/// Takes a token from the bucket of `flow`'s source for a new flow; whether the flow may go
/// (always, when no source rate is set).
#[inline(always)]
pub fn source_admits(flow: &FlowKey, now: u64) -> bool {
    let rate = setting(SETTING_SOURCE_RATE);
    if rate == 0 {
        return true;
    }
    let burst = setting(SETTING_SOURCE_BURST);
    let key = SourceKey {
        addr: flow.src_addr,
        family: flow.family,
        _pad: [0; 3],
    };
    if let Some(bucket) = SOURCE_BUCKETS.get_ptr_mut(&key) {
        // SAFETY: a live LRU value of plain integers; two CPUs racing on one source at worst
        // let one extra flow through.
        return bucket_takes(unsafe { &mut *bucket }, now, rate, burst);
    }
    let mut bucket = full_bucket(burst, now);
    let allowed = bucket_takes(&mut bucket, now, rate, burst);
    // A full table evicts its least recently seen source; an insert that still fails only
    // forgets this source's count.
    let _ = SOURCE_BUCKETS.insert(&key, &bucket, 0);
    allowed
}
