//! A rate limit shared by several Sluice instances through Redis: a counter per key and
//! fixed window of `per`, `rate` requests a window across every instance. When Redis cannot
//! be reached in time the local limit decides, and Redis is left alone for a second, so an
//! outage costs requests no waiting.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;

use super::build::FilterBuildError;
use crate::config::SharedLimitSpec;

/// How long Redis is not asked again after it failed.
const BACKOFF: Duration = Duration::from_secs(1);

/// Why Redis gave no answer (the local limit then decides).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis failed recently and is not asked yet.
    #[error("redis failed less than a second ago")]
    BackingOff,
    /// No answer within `redis_timeout`.
    #[error("redis did not answer in time")]
    Timeout,
    /// Connecting or the command failed.
    #[error("redis")]
    Redis(#[from] redis::RedisError),
}

/// A filter's shared counters in Redis.
pub struct SharedLimit {
    client: redis::Client,
    /// Keys are `sluice:rl:<filter>:<window>:<key>`: listeners and instances whose filters
    /// share a name share counters.
    prefix: String,
    rate: u64,
    window_ms: u64,
    timeout: Duration,
    state: Mutex<Connection>,
}

#[derive(Default)]
struct Connection {
    open: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
}

impl SharedLimit {
    /// For filter `name` counting `rate` requests per `per` in `spec`'s Redis. Connects on
    /// first use.
    pub fn new(
        name: &str,
        rate: u32,
        per: Duration,
        spec: &SharedLimitSpec,
    ) -> Result<Arc<Self>, FilterBuildError> {
        let client = redis::Client::open(spec.url.as_str()).map_err(FilterBuildError::Redis)?;
        Ok(Arc::new(Self {
            client,
            prefix: format!("sluice:rl:{name}:"),
            rate: u64::from(rate),
            window_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1),
            timeout: spec.timeout,
            state: Mutex::new(Connection::default()),
        }))
    }

    /// Requests allowed per window.
    pub fn rate(&self) -> u32 {
        u32::try_from(self.rate).unwrap_or(u32::MAX)
    }

    /// Counts a request for `key`: `Ok(Ok(()))` within the limit, `Ok(Err(wait))` over it
    /// until the window ends, `Err` when Redis could not say.
    pub async fn take(&self, key: &[u8]) -> Result<Result<(), Duration>, SharedError> {
        let connection = {
            let state = self.lock();
            if state.failed_at.is_some_and(|at| at.elapsed() < BACKOFF) {
                return Err(SharedError::BackingOff);
            }
            state.open.clone()
        };
        let answer = tokio::time::timeout(self.timeout, self.count(connection, key)).await;
        let result = match answer {
            Ok(Ok(counted)) => Ok(counted),
            Ok(Err(err)) => Err(SharedError::Redis(err)),
            Err(_) => Err(SharedError::Timeout),
        };
        if result.is_err() {
            let mut state = self.lock();
            state.open = None;
            state.failed_at = Some(Instant::now());
        }
        result
    }

    async fn count(
        &self,
        connection: Option<MultiplexedConnection>,
        key: &[u8],
    ) -> Result<Result<(), Duration>, redis::RedisError> {
        let mut connection = match connection {
            Some(c) => c,
            None => {
                let c = self.client.get_multiplexed_async_connection().await?;
                let mut state = self.lock();
                state.open = Some(c.clone());
                state.failed_at = None;
                c
            }
        };
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let window = now_ms / self.window_ms;
        let mut name = Vec::with_capacity(self.prefix.len() + 24 + key.len());
        name.extend_from_slice(self.prefix.as_bytes());
        name.extend_from_slice(format!("{window}:").as_bytes());
        name.extend_from_slice(key);
        // Created with its expiry, then counted, in one transaction.
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&name)
            .arg(0)
            .arg("PX")
            .arg(self.window_ms)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&name)
            .query_async(&mut connection)
            .await?;
        if count <= self.rate {
            Ok(Ok(()))
        } else {
            let left = self.window_ms - now_ms % self.window_ms;
            Ok(Err(Duration::from_millis(left)))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
