//! Limits on new flows, so a SYN flood cannot flush established flows out of the connection
//! table: above a per-CPU rate, new flows are steered by Maglev without an entry; each source
//! address draws new flows from a token bucket, and what exceeds it is dropped.

use crate::addr::WireAddr;

/// One second, in the nanoseconds the data path's clock counts.
const SECOND_NS: u64 = 1_000_000_000;
/// One token of a [`TokenBucket`], in its fixed-point units (a token per second is then one
/// unit per nanosecond).
pub const TOKEN: u64 = SECOND_NS;

/// A CPU's count of new flows in the current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlowWindow {
    pub start_ns: u64,
    pub count: u64,
}

/// Key of the per-source buckets: a client address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: WireAddr,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// A source's new-flow allowance, in [`TOKEN`] units, as of `last_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

const _: () = assert!(core::mem::size_of::<NewFlowWindow>() == 16);
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);
const _: () = assert!(core::mem::size_of::<TokenBucket>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only (size asserted above).
unsafe impl aya::Pod for NewFlowWindow {}
#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding (size asserted above).
unsafe impl aya::Pod for SourceKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C), integers only (size asserted above).
unsafe impl aya::Pod for TokenBucket {}

/// Counts one new flow at `now_ns` in `window`; whether it is within `limit` a second
/// (0: no limit).
#[inline(always)]
pub fn window_admits(window: &mut NewFlowWindow, now_ns: u64, limit: u32) -> bool {
    if now_ns.saturating_sub(window.start_ns) >= SECOND_NS {
        window.start_ns = now_ns;
        window.count = 0;
    }
    window.count += 1;
    limit == 0 || window.count <= u64::from(limit)
}

/// Whether [`window_admits`] would admit one more flow at `now_ns`, without counting it.
#[inline(always)]
pub fn window_would_admit(window: &NewFlowWindow, now_ns: u64, limit: u32) -> bool {
    limit == 0
        || now_ns.saturating_sub(window.start_ns) >= SECOND_NS
        || window.count < u64::from(limit)
}

/// A full bucket of `burst` tokens for a source seen for the first time at `now_ns`.
#[inline(always)]
pub const fn full_bucket(burst: u32, now_ns: u64) -> TokenBucket {
    TokenBucket {
        tokens: burst as u64 * TOKEN,
        last_ns: now_ns,
    }
}

/// Refills `bucket` at `rate` tokens a second up to `burst`, then takes one token for a new
/// flow if there is one. Whether the flow may go.
#[inline(always)]
pub fn bucket_takes(bucket: &mut TokenBucket, now_ns: u64, rate: u32, burst: u32) -> bool {
    let cap = u64::from(burst.max(1)) * TOKEN;
    let rate = u64::from(rate.max(1));
    // Past the time a refill from empty takes, more elapsed time adds nothing: capping it
    // first keeps the product far from overflowing.
    let elapsed = now_ns.saturating_sub(bucket.last_ns).min(cap / rate + 1);
    let tokens = (bucket.tokens + elapsed * rate).min(cap);
    bucket.last_ns = now_ns;
    if tokens >= TOKEN {
        bucket.tokens = tokens - TOKEN;
        true
    } else {
        bucket.tokens = tokens;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_admits_the_limit_each_second() {
        let mut w = NewFlowWindow::default();
        let t = 5 * SECOND_NS;
        let admitted: usize = (0..5).filter(|_| window_admits(&mut w, t, 3)).count();
        assert_eq!(admitted, 3);
        assert!(window_admits(&mut w, t + SECOND_NS, 3), "a new second");
        assert!((0..100).all(|_| window_admits(&mut w, t, 0)), "0: no limit");
    }

    #[test]
    fn would_admit_says_what_admits_does_without_counting() {
        let mut w = NewFlowWindow::default();
        let t = 5 * SECOND_NS;
        for now in [t, t, t, t, t + SECOND_NS / 2, t + SECOND_NS, t + SECOND_NS] {
            let before = w;
            let predicted = window_would_admit(&w, now, 2);
            assert_eq!(w, before, "no count");
            assert_eq!(window_admits(&mut w, now, 2), predicted, "at {now}");
        }
        assert!(window_would_admit(&w, t, 0), "0: no limit");
    }

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let t = 7 * SECOND_NS;
        let mut b = full_bucket(2, t);
        assert!(bucket_takes(&mut b, t, 1, 2));
        assert!(bucket_takes(&mut b, t, 1, 2));
        assert!(!bucket_takes(&mut b, t, 1, 2), "burst spent");
        assert!(
            !bucket_takes(&mut b, t + SECOND_NS / 2, 1, 2),
            "half a token"
        );
        assert!(
            bucket_takes(&mut b, t + SECOND_NS, 1, 2),
            "one token a second"
        );
        let later = t + 1000 * SECOND_NS;
        assert!(bucket_takes(&mut b, later, 1, 2) && bucket_takes(&mut b, later, 1, 2));
        assert!(
            !bucket_takes(&mut b, later, 1, 2),
            "refilled to the burst, not beyond"
        );
        let mut fast = full_bucket(1, 0);
        assert!(
            bucket_takes(&mut fast, u64::MAX, u32::MAX, u32::MAX),
            "no overflow"
        );
    }
}
