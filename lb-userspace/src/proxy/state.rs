//! What a listener serves with, built from one config and swapped whole on reload: the
//! compiled route table, the pools it forwards to, TLS, limits and the hyper connection
//! settings derived from them.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio_rustls::TlsAcceptor;

use super::conn_io::Timeouts;
use super::filter::{BuiltFilters, FilterBuildError};
use super::h2_streams::StreamExecutor;
use super::route::{RouteError, RouteTable};
use super::stats::{ListenerStats, StatsRegistry};
use super::tls::{self, TlsError};
use super::upstream::UpstreamPool;
use crate::config::{Config, ForwardedTrust, L7Service, Limits, PathSettings, PoolId};

/// hyper's read buffer never goes below this (it asserts so).
const MIN_READ_BUFFER: usize = 8192;
/// hyper's default read buffer limit.
const DEFAULT_READ_BUFFER: usize = 8192 + 4096 * 100;
/// Reset streams a client may open before the server accepts them (hyper's default, set
/// explicitly: hyper versions that left it unset were open to rapid-reset floods).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for protocol errors before closing the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// A silent HTTP/2 client is pinged this often, and dropped if it does not answer in time.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes the server buffers per connection for sending; bounds memory held by slow readers
/// (and replies to SETTINGS/PING floods).
const H2_MAX_SEND_BUFFER: usize = 256 * 1024;

/// A listener's serving state.
pub struct ListenerState {
    /// The service's name.
    pub service: Arc<str>,
    /// The routes; `None` for a `redirect_to_https` listener.
    pub routes: Option<RouteTable>,
    /// Redirect every request to https on this port.
    pub redirect_to_https: Option<u16>,
    /// Pools by [`PoolId`] (only those the routes use are present).
    pools: Vec<Option<Arc<UpstreamPool>>>,
    /// Write access-log lines.
    pub access_log: bool,
    /// The listener's own counters (kept across reloads).
    pub stats: Arc<ListenerStats>,
    /// The service's limits.
    pub limits: Limits,
    /// How request paths are normalised.
    pub paths: PathSettings,
    /// Whose forwarding headers are extended rather than replaced.
    pub forwarded: ForwardedTrust,
    /// TLS termination, if any.
    pub tls: Option<TlsAcceptor>,
    /// The header that carries a verified client certificate's identity (mTLS).
    pub client_cert_header: Option<HeaderName>,
    /// Accept h2c with prior knowledge (plain listeners).
    pub h2c: bool,
    /// HTTP/1.1 connection settings.
    pub http1: http1::Builder,
    /// HTTP/2 connection settings.
    pub http2: http2::Builder<StreamExecutor>,
}

impl ListenerState {
    /// Builds the state of l7 service `service` (`l7`) of `config`; `pool(id)` supplies the
    /// running pool for an id (kept across reloads when unchanged), `filters` the service's
    /// built filters.
    pub fn build(
        service: &str,
        l7: &L7Service,
        config: &Config,
        stats: &StatsRegistry,
        filters: &BuiltFilters,
        mut pool: impl FnMut(PoolId) -> Option<Arc<UpstreamPool>>,
    ) -> Result<Self, BuildError> {
        let routes = match l7.redirect_to_https {
            Some(_) => None,
            None => Some(
                RouteTable::compile(service, &l7.virtual_hosts, stats, filters)
                    .map_err(BuildError::Routes)?,
            ),
        };
        let mut pools: Vec<Option<Arc<UpstreamPool>>> = vec![None; config.pools.len()];
        for id in used_pools(l7) {
            if let Some(slot) = pools.get_mut(id.0) {
                *slot = pool(id);
            }
        }
        let tls = match &l7.tls {
            Some(t) => Some(TlsAcceptor::from(
                tls::server_config(t, config).map_err(BuildError::Tls)?,
            )),
            None => None,
        };
        let client_cert_header = match l7.tls.as_ref().and_then(|t| t.client_auth.as_ref()) {
            Some(auth) => match &auth.header {
                Some(name) => Some(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| BuildError::ClientCertHeader(name.clone()))?,
                ),
                None => None,
            },
            None => None,
        };
        let (http1, http2) = builders(&l7.limits);
        Ok(Self {
            service: service.into(),
            routes,
            redirect_to_https: l7.redirect_to_https,
            pools,
            access_log: l7.access_log,
            stats: stats.listener(service),
            limits: l7.limits.clone(),
            paths: l7.paths,
            forwarded: l7.forwarded.clone(),
            tls,
            client_cert_header,
            h2c: l7.h2c,
            http1,
            http2,
        })
    }

    /// The running pool for `id`.
    pub fn pool(&self, id: PoolId) -> Option<&Arc<UpstreamPool>> {
        self.pools.get(id.0)?.as_ref()
    }

    /// The connection timers.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: self.limits.header_read_timeout,
            idle: self.limits.idle_timeout,
            send: self.limits.send_timeout,
        }
    }
}

/// Every pool any route of `l7` forwards to.
pub fn used_pools(l7: &L7Service) -> impl Iterator<Item = PoolId> + '_ {
    l7.virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .filter_map(|r| match &r.action {
            crate::config::RouteAction::Forward(pools) => Some(pools),
            _ => None,
        })
        .flatten()
        .map(|p| p.pool)
}

/// Why a listener's state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// TLS settings.
    #[error(transparent)]
    Tls(TlsError),
    /// A route that validation let through but hyper's types refuse.
    #[error("routes")]
    Routes(#[source] RouteError),
    /// A filter that validation let through but cannot be built.
    #[error("filters")]
    Filters(#[source] FilterBuildError),
    /// A client_cert_header that validation let through but hyper's types refuse.
    #[error("client_cert_header {0:?} is not a header name")]
    ClientCertHeader(String),
}

fn builders(limits: &Limits) -> (http1::Builder, http2::Builder<StreamExecutor>) {
    let header_bytes = limits.max_request_header_bytes as usize;
    let read_buffer = DEFAULT_READ_BUFFER.max(header_bytes + MIN_READ_BUFFER);

    let mut h1 = http1::Builder::new();
    // Timers are ConnIo's: hyper's would also close idle keep-alive connections, silently.
    h1.header_read_timeout(None)
        .keep_alive(true)
        .half_close(false)
        .max_header_size(header_bytes)
        .max_buf_size(read_buffer);

    let mut h2 = http2::Builder::new(StreamExecutor);
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .max_send_buf_size(H2_MAX_SEND_BUFFER);
    (h1, h2)
}
