//! The L7 proxy: every `l7` service's listener on its VIP:port, terminating HTTP/1.1, HTTP/2
//! (TLS with ALPN, or h2c) and TLS, routing each request to a pool. [`Proxy::start`] binds
//! them all, [`Proxy::reload`] applies a new config without dropping a listening socket
//! whose address stays, and [`Proxy::shutdown`] drains them.
//!
//! Each listener serves from an [`ArcSwap`]ped [`ListenerState`](state::ListenerState): a
//! request reads it once and never waits on a reload. Pools are shared by name across
//! listeners and kept across reloads while their config is unchanged, so pooled backend
//! connections and counters survive; a changed pool keeps the connections of every backend
//! that stays (connections belong to backends, see `connections`).

mod access_log;
mod balance;
mod body;
mod client_cert;
mod conn_io;
mod connections;
mod error;
mod exchange;
mod filter;
mod forward;
mod grpc;
mod h2_streams;
mod handle;
pub mod inspect;
mod latency;
mod listener;
mod local_reply;
mod normalize;
mod pick;
mod prefixed;
mod request_head;
mod retry;
mod route;
mod route_index;
mod state;
pub mod stats;
mod tls;
mod tunnel;
mod upstream;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

pub use access_log::set_json as set_access_log_json;
pub use error::{ErrorKind, Overload, ProxyError};
pub use state::BuildError;
pub use stats::{BackendStats, Histogram, PoolStats, RequestStats, StatsRegistry};
pub use tls::TlsError;
pub use upstream::{UpstreamBackend, UpstreamPool};

use crate::config::{Config, L7Service, PoolId, Service, ServiceKind};
use crate::health::HealthHandle;
use connections::ConnectionRegistry;
use filter::FilterStates;
use listener::ClientCounts;
use state::ListenerState;
use tokio::net::TcpListener;

/// Why a listener could not be started or updated.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStartError {
    /// The socket could not be bound.
    #[error("service {service:?}: cannot listen on {addr}{hint}")]
    Bind {
        /// The service.
        service: String,
        /// Its VIP:port.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
        /// How to fix the usual causes.
        hint: &'static str,
    },
    /// Its TLS settings or routes could not be built.
    #[error("service {service:?}")]
    Build {
        /// The service.
        service: String,
        /// What went wrong.
        #[source]
        source: BuildError,
    },
}

/// A running listener.
struct Listener {
    service: String,
    state: Arc<ArcSwap<ListenerState>>,
    permits: Arc<Semaphore>,
    max_connections: u32,
    stop: watch::Sender<bool>,
}

/// All L7 listeners and the pools they forward to.
pub struct Proxy {
    listeners: HashMap<SocketAddr, Listener>,
    pools: HashMap<String, Arc<UpstreamPool>>,
    stats: Arc<StatsRegistry>,
    outcomes: Option<HealthHandle>,
    connections: Arc<ConnectionRegistry>,
    /// Every listener's filters, kept across reloads by name while unchanged.
    filters: FilterStates,
}

/// A config's listeners and pools, built and checked (routes compiled, TLS keys loaded,
/// new addresses bound) but not in force: [`Proxy::commit`] puts it in force and cannot
/// fail; dropping it changes nothing.
pub struct PreparedProxy {
    pools: HashMap<String, Arc<UpstreamPool>>,
    filters: FilterStates,
    listeners: Vec<PreparedListener>,
}

struct PreparedListener {
    service: String,
    addr: SocketAddr,
    state: ListenerState,
    max_connections: u32,
    /// Bound for an address not listening yet.
    socket: Option<TcpListener>,
}

impl Proxy {
    /// Binds and starts every l7 service of `config`. Must be called inside the tokio
    /// runtime. Fails, with nothing left running, when any listener cannot start.
    /// `outcomes` receives upstream failures for outlier detection.
    pub fn start(config: &Config, outcomes: Option<HealthHandle>) -> Result<Self, ProxyStartError> {
        let mut proxy = Self {
            listeners: HashMap::new(),
            pools: HashMap::new(),
            stats: Arc::new(StatsRegistry::default()),
            outcomes,
            connections: ConnectionRegistry::start(),
            filters: FilterStates::default(),
        };
        let prepared = proxy
            .prepare(config)
            .map_err(|mut errors| errors.remove(0))?;
        proxy.commit(prepared);
        Ok(proxy)
    }

    /// Applies `config` whole or not at all: see [`Proxy::prepare`] and [`Proxy::commit`].
    pub fn reload(&mut self, config: &Config) -> Result<(), Vec<ProxyStartError>> {
        let prepared = self.prepare(config)?;
        self.commit(prepared);
        Ok(())
    }

    /// Builds everything `config` needs without touching what runs: pools (running ones
    /// whose config is unchanged are kept), every listener's routes and TLS, and sockets for
    /// new addresses. Every failure is returned; with any, nothing may be committed.
    pub fn prepare(&self, config: &Config) -> Result<PreparedProxy, Vec<ProxyStartError>> {
        let pools = self.pools_for(config);
        let mut filters = FilterStates::default();
        let mut errors = Vec::new();
        let mut listeners = Vec::new();
        for (service, l7) in l7_services(config) {
            let addr = SocketAddr::new(service.vip, service.port);
            let state = match self.build_state(&pools, &mut filters, service, l7, config) {
                Ok(state) => state,
                Err(err) => {
                    errors.push(err);
                    continue;
                }
            };
            let socket = if self.listeners.contains_key(&addr) {
                None
            } else {
                match listener::bind(addr) {
                    Ok(socket) => Some(socket),
                    Err(source) => {
                        errors.push(ProxyStartError::Bind {
                            service: service.name.clone(),
                            addr,
                            hint: bind_hint(&source),
                            source,
                        });
                        continue;
                    }
                }
            };
            listeners.push(PreparedListener {
                service: service.name.clone(),
                addr,
                state,
                max_connections: l7.limits.max_connections,
                socket,
            });
        }
        if errors.is_empty() {
            Ok(PreparedProxy {
                pools,
                filters,
                listeners,
            })
        } else {
            Err(errors)
        }
    }

    /// Puts a prepared config in force: listeners whose address stays keep their socket and
    /// switch to the new routes, pools and limits (new TLS settings apply to new
    /// connections); new addresses start accepting; removed ones stop accepting and let
    /// requests in flight finish.
    pub fn commit(&mut self, prepared: PreparedProxy) {
        self.pools = prepared.pools;
        self.filters = prepared.filters;
        let wanted: Vec<SocketAddr> = prepared.listeners.iter().map(|l| l.addr).collect();
        for new in prepared.listeners {
            match (self.listeners.get_mut(&new.addr), new.socket) {
                (Some(listener), _) => {
                    listener.service = new.service;
                    listener.state.store(Arc::new(new.state));
                    resize(listener, new.max_connections);
                }
                (None, Some(socket)) => self.start_listener(
                    new.service,
                    new.addr,
                    new.state,
                    new.max_connections,
                    socket,
                ),
                // Prepared against this proxy, so a new address always has a socket.
                (None, None) => {
                    warn!(addr = %new.addr, "l7 listener without a socket; not started")
                }
            }
        }
        self.listeners.retain(|addr, listener| {
            let keep = wanted.contains(addr);
            if !keep {
                info!(service = %listener.service, %addr, "l7 listener removed; draining its connections");
                let _ = listener.stop.send(true);
            }
            keep
        });
    }

    /// Stops accepting everywhere, asks every connection to finish, and waits up to `grace`
    /// for them to close.
    pub async fn shutdown(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.stop_all();
        for (addr, listener) in self.listeners.drain() {
            let all = listener.permits.acquire_many(listener.max_connections);
            if tokio::time::timeout_at(deadline, all).await.is_err() {
                warn!(service = %listener.service, %addr, "connections still open at shutdown");
            }
        }
    }

    /// The proxy's counters, for the metrics endpoint.
    pub fn stats(&self) -> &Arc<StatsRegistry> {
        &self.stats
    }

    /// A running pool by name, e.g. for the health checker to call
    /// [`UpstreamPool::set_usable`].
    pub fn pool(&self, name: &str) -> Option<&Arc<UpstreamPool>> {
        self.pools.get(name)
    }

    fn stop_all(&self) {
        for listener in self.listeners.values() {
            let _ = listener.stop.send(true);
        }
    }

    /// The pools l7 services of `config` use: running ones whose config is unchanged, new
    /// ones for the rest.
    fn pools_for(&self, config: &Config) -> HashMap<String, Arc<UpstreamPool>> {
        let mut pools = HashMap::new();
        for (_, l7) in l7_services(config) {
            for id in state::used_pools(l7) {
                let Some(pool) = config.pool(id) else {
                    continue;
                };
                if pools.contains_key(&pool.name) {
                    continue;
                }
                let running = self
                    .pools
                    .get(&pool.name)
                    .filter(|running| running.config() == pool)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(UpstreamPool::new(
                            pool,
                            &self.stats,
                            self.outcomes.clone(),
                            &self.connections,
                            self.pools.get(&pool.name).map(|p| &**p),
                        ))
                    });
                pools.insert(pool.name.clone(), running);
            }
        }
        pools
    }

    /// Builds a listener's state; its filters (running ones reused) go into `filters`.
    fn build_state(
        &self,
        pools: &HashMap<String, Arc<UpstreamPool>>,
        filters: &mut FilterStates,
        service: &Service,
        l7: &L7Service,
        config: &Config,
    ) -> Result<ListenerState, ProxyStartError> {
        let failed = |source| ProxyStartError::Build {
            service: service.name.clone(),
            source,
        };
        let built = self
            .filters
            .build(&service.name, &l7.filters, &self.stats, filters)
            .map_err(|e| failed(BuildError::Filters(e)))?;
        let by_id = |id: PoolId| config.pool(id).and_then(|p| pools.get(&p.name)).cloned();
        ListenerState::build(&service.name, l7, config, &self.stats, &built, by_id).map_err(failed)
    }

    fn start_listener(
        &mut self,
        service: String,
        addr: SocketAddr,
        state: ListenerState,
        max_connections: u32,
        socket: TcpListener,
    ) {
        let tls = state.tls.is_some();
        let state = Arc::new(ArcSwap::from_pointee(state));
        let permits = Arc::new(Semaphore::new(max_connections as usize));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(listener::accept_loop(
            socket,
            state.clone(),
            permits.clone(),
            Arc::new(ClientCounts::default()),
            stopped,
        ));
        info!(service = %service, %addr, tls, "l7 listener started");
        self.listeners.insert(
            addr,
            Listener {
                service,
                state,
                permits,
                max_connections,
                stop,
            },
        );
    }
}

/// Changes a running listener's connection limit.
fn resize(listener: &mut Listener, max_connections: u32) {
    let (old, new) = (listener.max_connections, max_connections);
    listener.max_connections = new;
    if new > old {
        listener.permits.add_permits((new - old) as usize);
    } else if new < old {
        let excess = (old - new) as usize;
        let forgotten = listener.permits.forget_permits(excess);
        let rest = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
        if rest > 0 {
            // Taken from connections as they close.
            let permits = listener.permits.clone();
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(rest).await {
                    taken.forget();
                }
            });
        }
    }
}

fn l7_services(config: &Config) -> impl Iterator<Item = (&Service, &L7Service)> {
    config.services.iter().filter_map(|s| match &s.kind {
        ServiceKind::L7(l7) => Some((s, l7)),
        ServiceKind::L4(_) => None,
    })
}

fn bind_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrNotAvailable => {
            " (the VIP must be an address of this host: add it, e.g. `ip addr add VIP/32 dev lo`)"
        }
        io::ErrorKind::AddrInUse => " (another process listens there)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        _ => "",
    }
}
