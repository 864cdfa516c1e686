//! Published health snapshots and the pure rule that turns backend states into the set of
//! backends a pool balances over (panic mode, `when_no_healthy`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use tokio::time::Instant;

use crate::config::{Config, Pool, WhenNoHealthy};

/// What the agent knows about one backend of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// Active checks pass (or none are configured, or none has failed yet).
    pub healthy: bool,
    /// Drained by hand: takes no new flows or requests; established ones finish.
    pub drained: bool,
    /// Ejected by outlier detection until this instant.
    pub ejected_until: Option<Instant>,
    /// When `healthy`, `drained` or the ejection last changed.
    pub last_change: Instant,
    /// Changes of `healthy` so far, both ways.
    pub transitions: u64,
    /// Ejections by outlier detection so far.
    pub ejections: u64,
}

impl BackendHealth {
    /// A backend nothing has happened to yet.
    pub fn fresh(now: Instant) -> Self {
        Self {
            healthy: true,
            drained: false,
            ejected_until: None,
            last_change: now,
            transitions: 0,
            ejections: 0,
        }
    }

    /// Whether outlier detection keeps the backend out at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// Healthy, not drained and not ejected at `now`.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.healthy && !self.drained && !self.is_ejected(now)
    }
}

/// Which rule chose a pool's [`UsableSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// The usable backends: healthy, not drained, not ejected.
    Normal,
    /// Too few usable backends (below `panic_threshold` percent of the non-drained ones):
    /// every non-drained backend, healthy or not, so the few healthy ones do not drown.
    Panic,
    /// No usable backend and `when_no_healthy = "fail_open"`: every non-drained backend.
    FailOpen,
    /// No backend takes new traffic: none usable with `when_no_healthy = "refuse"`, or every
    /// backend drained. L4 services then get no table; the proxy answers 503.
    Empty,
}

/// The backends a pool sends new flows and requests to, in config order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableSet {
    /// The rule that chose `backends`.
    pub mode: PoolMode,
    /// Addresses of the chosen backends.
    pub backends: Vec<SocketAddr>,
}

impl UsableSet {
    /// Whether `address` takes new traffic.
    pub fn contains(&self, address: SocketAddr) -> bool {
        self.backends.contains(&address)
    }

    /// Whether no backend takes new traffic.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// Chooses the backends a pool balances over.
///
/// Drained backends never take new traffic, not even in panic or fail-open mode: draining is
/// an operator's explicit wish. They also do not count towards the panic share, so draining
/// half a pool for maintenance does not spread traffic onto its unhealthy backends.
pub fn usable_set(
    panic_threshold: u8,
    when_no_healthy: WhenNoHealthy,
    backends: &[(SocketAddr, &BackendHealth)],
    now: Instant,
) -> UsableSet {
    let candidates: Vec<SocketAddr> = backends
        .iter()
        .filter(|(_, h)| !h.drained)
        .map(|(a, _)| *a)
        .collect();
    let usable: Vec<SocketAddr> = backends
        .iter()
        .filter(|(_, h)| h.is_usable(now))
        .map(|(a, _)| *a)
        .collect();
    let (mode, backends) = if candidates.is_empty() {
        (PoolMode::Empty, Vec::new())
    } else if usable.is_empty() {
        match when_no_healthy {
            WhenNoHealthy::FailOpen => (PoolMode::FailOpen, candidates),
            WhenNoHealthy::Refuse => (PoolMode::Empty, Vec::new()),
        }
    } else if usable.len() * 100 < candidates.len() * usize::from(panic_threshold.min(100)) {
        (PoolMode::Panic, candidates)
    } else {
        (PoolMode::Normal, usable)
    };
    UsableSet { mode, backends }
}

/// One backend in a [`PoolView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendView {
    /// The backend's configured name.
    pub name: String,
    /// Its address: with the pool name, what identifies it.
    pub address: SocketAddr,
    /// Its state.
    pub health: BackendHealth,
}

/// One pool in a [`HealthView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Every configured backend, in config order.
    pub backends: Vec<BackendView>,
    /// The backends taking new traffic.
    pub usable: UsableSet,
    /// Index into `backends` by address: status and metrics look every backend up, and a
    /// scan would make that quadratic in a pool of thousands.
    by_address: HashMap<SocketAddr, usize>,
}

impl PoolView {
    /// Builds the view of a pool, computing its usable set at `now`.
    pub fn new(pool: &Pool, backends: Vec<BackendView>, now: Instant) -> Self {
        let states: Vec<(SocketAddr, &BackendHealth)> =
            backends.iter().map(|b| (b.address, &b.health)).collect();
        let usable = usable_set(pool.panic_threshold, pool.when_no_healthy, &states, now);
        let by_address = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.address, i))
            .collect();
        Self {
            backends,
            usable,
            by_address,
        }
    }
}

/// An immutable snapshot of every pool's backend states and usable sets. A new one is
/// published on every change; readers keep whichever they hold as long as they like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    /// When the snapshot was taken; usable sets hold for this instant.
    pub at: Instant,
    pools: BTreeMap<String, PoolView>,
}

impl HealthView {
    /// A snapshot of the given pools, keyed by pool name.
    pub fn new(at: Instant, pools: BTreeMap<String, PoolView>) -> Self {
        Self { at, pools }
    }

    /// Every backend of `config` fresh: healthy, not drained, not ejected.
    pub fn all_healthy(config: &Config) -> Self {
        let now = Instant::now();
        let pools = config
            .pools
            .iter()
            .map(|pool| {
                let backends = pool
                    .backends
                    .iter()
                    .map(|b| BackendView {
                        name: b.name.clone(),
                        address: b.address,
                        health: BackendHealth::fresh(now),
                    })
                    .collect();
                (pool.name.clone(), PoolView::new(pool, backends, now))
            })
            .collect();
        Self::new(now, pools)
    }

    /// The state of the backend at `backend` in pool `pool`, if the snapshot knows it.
    pub fn state(&self, pool: &str, backend: SocketAddr) -> Option<&BackendHealth> {
        let pool = self.pools.get(pool)?;
        let found = pool.backends.get(*pool.by_address.get(&backend)?)?;
        Some(&found.health)
    }

    /// The backends of `pool` taking new traffic, if the snapshot knows the pool.
    pub fn usable(&self, pool: &str) -> Option<&UsableSet> {
        self.pools.get(pool).map(|p| &p.usable)
    }

    /// Every pool, by name (for metrics and the admin API).
    pub fn pools(&self) -> impl Iterator<Item = (&str, &PoolView)> {
        self.pools.iter().map(|(name, pool)| (name.as_str(), pool))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{BackendHealth, PoolMode, usable_set};
    use crate::config::WhenNoHealthy::{self, FailOpen, Refuse};

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    fn last_octet(a: SocketAddr) -> u8 {
        match a.ip() {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(_) => 0,
        }
    }

    /// Backends 1..=len with states from `f(n)`, then the usable set's mode and members.
    fn pick(
        len: u8,
        threshold: u8,
        when: WhenNoHealthy,
        f: impl Fn(u8, &mut BackendHealth),
    ) -> (PoolMode, Vec<u8>) {
        let now = Instant::now();
        let states: Vec<(SocketAddr, BackendHealth)> = (1..=len)
            .map(|n| {
                let mut h = BackendHealth::fresh(now);
                f(n, &mut h);
                (addr(n), h)
            })
            .collect();
        let refs: Vec<(SocketAddr, &BackendHealth)> = states.iter().map(|(a, h)| (*a, h)).collect();
        let set = usable_set(threshold, when, &refs, now);
        let members = set.backends.iter().map(|a| last_octet(*a)).collect();
        (set.mode, members)
    }

    #[test]
    fn normal_mode_takes_healthy_undrained_unejected_backends() {
        let later = Instant::now() + Duration::from_secs(60);
        let got = pick(6, 50, FailOpen, |n, h| match n {
            1 => h.healthy = false,
            2 => h.drained = true,
            3 => h.ejected_until = Some(later),
            _ => {}
        });
        // 3 usable of 5 non-drained is 60%: above the threshold.
        assert_eq!(got, (PoolMode::Normal, vec![4, 5, 6]));
    }

    #[test]
    fn an_expired_ejection_no_longer_counts() {
        let past = Instant::now();
        let got = pick(2, 50, FailOpen, |n, h| {
            if n == 1 {
                h.ejected_until = Some(past);
            }
        });
        assert_eq!(got, (PoolMode::Normal, vec![1, 2]));
    }

    #[test]
    fn below_the_panic_threshold_every_undrained_backend_takes_traffic() {
        // 1 healthy of 4: 25% < 50%.
        let got = pick(5, 50, Refuse, |n, h| match n {
            1..=3 => h.healthy = false,
            5 => h.drained = true,
            _ => {}
        });
        assert_eq!(got, (PoolMode::Panic, vec![1, 2, 3, 4]));
        // Exactly at the threshold is not panic: 2 of 4 is 50%.
        let got = pick(4, 50, Refuse, |n, h| h.healthy = n > 2);
        assert_eq!(got, (PoolMode::Normal, vec![3, 4]));
        // A threshold of 0 disables panic mode.
        let got = pick(4, 0, Refuse, |n, h| h.healthy = n == 4);
        assert_eq!(got, (PoolMode::Normal, vec![4]));
    }

    #[test]
    fn drained_backends_do_not_count_towards_the_panic_share() {
        // 2 healthy, 2 drained, 0 unhealthy: 100% of the non-drained are usable.
        let got = pick(4, 60, FailOpen, |n, h| h.drained = n <= 2);
        assert_eq!(got, (PoolMode::Normal, vec![3, 4]));
    }

    #[test]
    fn with_nothing_usable_fail_open_takes_all_undrained_and_refuse_takes_none() {
        let unhealthy = |n: u8, h: &mut BackendHealth| {
            h.healthy = false;
            h.drained = n == 3;
        };
        assert_eq!(
            pick(3, 0, FailOpen, unhealthy),
            (PoolMode::FailOpen, vec![1, 2])
        );
        assert_eq!(pick(3, 0, Refuse, unhealthy), (PoolMode::Empty, vec![]));
        // Fail-open wins over panic mode's rule only in name: the same backends.
        assert_eq!(
            pick(3, 50, FailOpen, unhealthy),
            (PoolMode::FailOpen, vec![1, 2])
        );
    }

    #[test]
    fn a_fully_drained_pool_is_empty_even_when_failing_open() {
        let got = pick(2, 50, FailOpen, |_, h| h.drained = true);
        assert_eq!(got, (PoolMode::Empty, vec![]));
    }
}
