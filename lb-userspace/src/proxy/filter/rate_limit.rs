//! `rate_limit`: a token bucket (governor's GCRA) per key: the client address, a header,
//! the principal, or one for everything. Over the limit a request is answered 429 with
//! `Retry-After` and `RateLimit-Limit` / `-Remaining` / `-Reset`; allowed responses carry
//! the limit and what remains of it. The buckets live in a table of at most `max_keys`
//! entries, the least recently used evicted first, so a client spraying keys costs bounded
//! memory (an evicted key starts again with a full bucket). With `redis`, the limit is
//! counted in Redis across instances (`shared_limit`), and these buckets decide only when
//! Redis cannot.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use lru::LruCache;

use super::build::FilterBuildError;
use super::headers::header_name;
use super::shared_limit::SharedLimit;
use super::{Deny, Filter, FilterRequest, Learned, Verdict};
use crate::config::{RateKey, RateLimitSpec};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// What a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Text(Box<[u8]>),
}

/// Where the key of a request comes from.
#[derive(Debug)]
enum KeySource {
    Client,
    Principal,
    Header(HeaderName),
}

/// The compiled `rate_limit` filter; its buckets are its state, kept across reloads while
/// its settings stay the same.
pub struct RateLimitFilter {
    source: Option<KeySource>,
    buckets: Arc<Buckets<DefaultClock>>,
    shared: Option<Arc<SharedLimit>>,
    /// `RateLimit-Limit` for this filter's burst.
    limit_value: HeaderValue,
}

impl RateLimitFilter {
    /// Builds filter `name` (with empty buckets) for `spec`.
    pub fn new(name: &str, spec: &RateLimitSpec) -> Result<Self, FilterBuildError> {
        let source = match &spec.key {
            RateKey::Global => None,
            RateKey::Client => Some(KeySource::Client),
            RateKey::Principal => Some(KeySource::Principal),
            RateKey::Header(name) => Some(KeySource::Header(header_name(name)?)),
        };
        let shared = match &spec.shared {
            Some(shared) => Some(SharedLimit::new(name, spec.rate, spec.per, shared)?),
            None => None,
        };
        Ok(Self {
            source,
            buckets: Arc::new(Buckets::new(spec, DefaultClock::default())?),
            shared,
            limit_value: HeaderValue::from(spec.burst),
        })
    }

    fn key(&self, request: &FilterRequest<'_>) -> Key {
        let text = match &self.source {
            None => return Key::Text(Box::default()),
            Some(KeySource::Client) => None,
            Some(KeySource::Principal) => request.learned.principal.as_deref().map(str::as_bytes),
            Some(KeySource::Header(name)) => request.headers.get(name).map(HeaderValue::as_bytes),
        };
        match text {
            Some(text) => Key::Text(text.into()),
            // No principal or header: the client address stands in.
            None => Key::Ip(request.client.ip()),
        }
    }
}

impl Filter for RateLimitFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        let key = self.key(request);
        let Some(shared) = &self.shared else {
            return match self.buckets.take(key) {
                Ok(remaining) => {
                    let seen = request.learned.rate_limit.map_or(u32::MAX, |(_, r)| r);
                    if remaining <= seen {
                        request.learned.rate_limit = Some((self.buckets.burst, remaining));
                    }
                    Verdict::Continue
                }
                Err(wait) => Verdict::Deny(over_limit(wait, self.buckets.burst)),
            };
        };
        let (shared, buckets) = (shared.clone(), self.buckets.clone());
        Verdict::Pending(Box::pin(async move {
            match shared.take(&key.bytes()).await {
                Ok(Ok(())) => Ok(Vec::new()),
                Ok(Err(wait)) => Err(over_limit(wait, shared.rate())),
                Err(err) => {
                    tracing::debug!(error = %err, "shared rate limit unavailable; the local limit decides");
                    buckets
                        .take(key)
                        .map(|_| Vec::new())
                        .map_err(|wait| over_limit(wait, buckets.burst))
                }
            }
        }))
    }

    fn on_response(&self, headers: &mut HeaderMap, learned: &Learned) {
        if let Some((limit, remaining)) = learned.rate_limit {
            let refill = self.buckets.refill_time(limit.saturating_sub(remaining));
            // The limit is this filter's own (or a tighter filter's) and the reset mostly a
            // few seconds: both made once, not per response.
            let limit = if limit == self.buckets.burst {
                self.limit_value.clone()
            } else {
                HeaderValue::from(limit)
            };
            headers.insert(RATELIMIT_LIMIT.clone(), limit);
            headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
            headers.insert(RATELIMIT_RESET.clone(), seconds_value(refill));
        }
    }
}

/// `seconds` as a header value; those up to a minute made once.
fn seconds_value(seconds: u64) -> HeaderValue {
    static MINUTE: LazyLock<Vec<HeaderValue>> =
        LazyLock::new(|| (0..=60_u64).map(HeaderValue::from).collect());
    usize::try_from(seconds)
        .ok()
        .and_then(|s| MINUTE.get(s))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(seconds))
}

/// The 429 for a request that may be retried after `wait`, under a limit of `limit`.
fn over_limit(wait: Duration, limit: u32) -> Deny {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = HeaderValue::from(seconds.max(1));
    Deny {
        status: StatusCode::TOO_MANY_REQUESTS,
        reason: "over_limit",
        body: None,
        headers: vec![
            (http::header::RETRY_AFTER, seconds.clone()),
            (RATELIMIT_LIMIT.clone(), HeaderValue::from(limit)),
            (RATELIMIT_REMAINING.clone(), HeaderValue::from(0)),
            (RATELIMIT_RESET.clone(), seconds),
        ],
    }
}

impl Key {
    /// The key as Redis stores it.
    fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Ip(ip) => ip.to_string().into_bytes(),
            Key::Text(text) => text.to_vec(),
        }
    }
}

/// Token buckets by key, at most `max_keys` of them.
struct Buckets<C: Clock> {
    quota: Quota,
    burst: u32,
    clock: C,
    table: Mutex<LruCache<Key, Bucket<C>>>,
}

impl<C: Clock + Clone> Buckets<C> {
    fn new(spec: &RateLimitSpec, clock: C) -> Result<Self, FilterBuildError> {
        let period = spec.per / spec.rate.max(1);
        let burst = NonZeroU32::new(spec.burst).ok_or(FilterBuildError::Quota)?;
        let quota = Quota::with_period(period)
            .ok_or(FilterBuildError::Quota)?
            .allow_burst(burst);
        let max_keys = usize::try_from(spec.max_keys)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(FilterBuildError::Quota)?;
        Ok(Self {
            quota,
            burst: spec.burst,
            clock,
            table: Mutex::new(LruCache::new(max_keys)),
        })
    }

    /// Takes a token from `key`'s bucket: `Ok(tokens left)`, or `Err(time until one is
    /// available)`.
    fn take(&self, key: Key) -> Result<u32, Duration> {
        let mut table = self.lock();
        let bucket = table.get_or_insert(key, || {
            RateLimiter::direct_with_clock(self.quota, self.clock.clone())
                .with_middleware::<StateInformationMiddleware>()
        });
        match bucket.check() {
            Ok(state) => Ok(state.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Whole seconds until `used` tokens are back.
    fn refill_time(&self, used: u32) -> u64 {
        let nanos = self.quota.replenish_interval().as_nanos() * u128::from(used);
        u64::try_from(nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Key, Bucket<C>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
#[path = "rate_limit_tests.rs"]
mod tests;
