//! Where a forwarded request goes: one of the route's pools (by weight, when the route splits
//! its traffic), then one of that pool's backends (by the pool's policy, avoiding the backend
//! a failed try went to). The one place the request path chooses; the choosers are
//! `route::WeightedPools` and `upstream::UpstreamPool`, with their policies in `balance`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use http::HeaderMap;

use super::error::{ErrorKind, ProxyError};
use super::route::WeightedPools;
use super::state::ListenerState;
use super::upstream::{UpstreamBackend, UpstreamPool};

/// The pool of `pools` a request goes to.
pub fn pool(state: &ListenerState, pools: &WeightedPools) -> Result<Arc<UpstreamPool>, ProxyError> {
    let ticket = if pools.is_split() {
        fastrand::u32(..pools.total())
    } else {
        0
    };
    pools
        .pick(ticket)
        .and_then(|id| state.pool(id))
        .cloned()
        .ok_or_else(|| ProxyError::with_source(ErrorKind::Internal, "route names no running pool"))
}

/// The backend of `pool` a try goes to, preferring one other than `last` (the backend the
/// previous try failed on); counted and refused when the pool has none to give.
pub fn backend(
    pool: &UpstreamPool,
    headers: &HeaderMap,
    client: IpAddr,
    last: Option<&Arc<UpstreamBackend>>,
) -> Result<Arc<UpstreamBackend>, ProxyError> {
    let avoiding = || {
        let mut pick = pool.pick(headers, client)?;
        for _ in 0..2 {
            match last {
                Some(last) if Arc::ptr_eq(last, &pick) => pick = pool.pick(headers, client)?,
                _ => break,
            }
        }
        Some(pick)
    };
    avoiding().ok_or_else(|| {
        pool.stats.no_backend.fetch_add(1, Relaxed);
        ProxyError::new(ErrorKind::NoHealthyBackend)
    })
}
