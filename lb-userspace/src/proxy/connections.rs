//! Keep-alive connections to backends. One [`BackendConnections`] per backend address and
//! connection settings, shared through the [`ConnectionRegistry`] by every pool that reaches
//! the backend that way: a reload that keeps a backend keeps its connections, and the last
//! pool to drop a backend closes its idle ones.
//!
//! An HTTP/1.1 connection carries one exchange at a time. It is checked out for a request and
//! given back when the response body has ended (see [`Checkin`]); between exchanges it waits
//! on a stack, so the most recently used (warmest) connection goes first. An HTTP/2 backend
//! gets one multiplexed connection, made on first use and again when it closes.
//!
//! Requests go out in origin form on HTTP/1.1 and with the backend as authority on HTTP/2.
//! The proxy writes `Host` itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::debug;

use super::body::RequestBody;
use super::error::{Overload, UpstreamError};
use crate::config::UpstreamProtocol;

/// Idle connections are closed after this. Below the usual keep-alive timeouts of backend
/// servers (nginx: 75 s) would be better still, but some backends allow only a few seconds
/// and no single value suits all; a connection closed under a request that never left is
/// retried on another (see [`BackendConnections::send`]).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often idle connections are swept for expiry when no request comes to take them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Idle HTTP/1.1 connections kept per backend; more are closed as they come back.
const MAX_IDLE: usize = 1024;
/// TCP and HTTP/2 keep-alive probes to backends.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// An HTTP/2 connection whose PING gets no answer in this long is closed.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection given back before hyper marked it ready gets this long to become ready.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool's queue of requests waiting for a connection to a backend at its limit.
#[derive(Debug, Clone, Copy)]
pub struct PendingLimit<'a> {
    /// Requests of the pool waiting now.
    pub waiting: &'a AtomicUsize,
    /// The most that may wait (`max_pending_requests`).
    pub max: usize,
}

/// How connections to a backend are made; backends reached the same way share connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectSettings {
    /// HTTP/1.1 or HTTP/2 to the backend.
    pub protocol: UpstreamProtocol,
    /// The TCP connect timeout.
    pub connect_timeout: Duration,
    /// Connections open at once (HTTP/1.1; an HTTP/2 backend gets one).
    pub max_connections: u32,
}

/// The connection sets in use, by backend and settings. Holds them weakly: pools own them.
pub struct ConnectionRegistry {
    sets: Mutex<HashMap<(SocketAddr, ConnectSettings), Weak<BackendConnections>>>,
}

impl ConnectionRegistry {
    /// An empty registry and its sweeper task, which ends when the registry is dropped.
    /// Must run inside the tokio runtime.
    pub fn start() -> Arc<Self> {
        let registry = Arc::new(Self {
            sets: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                registry.sweep();
            }
        });
        registry
    }

    /// The connections to `address` made with `settings`, shared with whoever else uses them.
    pub fn get(&self, address: SocketAddr, settings: ConnectSettings) -> Arc<BackendConnections> {
        let mut sets = lock(&self.sets);
        if let Some(set) = sets.get(&(address, settings)).and_then(Weak::upgrade) {
            return set;
        }
        let set = Arc::new(BackendConnections::new(address, settings));
        sets.insert((address, settings), Arc::downgrade(&set));
        set
    }

    /// Closes expired idle connections and forgets sets no pool holds any more.
    fn sweep(&self) {
        let live: Vec<Arc<BackendConnections>> = {
            let mut sets = lock(&self.sets);
            sets.retain(|_, set| set.strong_count() > 0);
            sets.values().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for set in live {
            set.close_expired(now);
        }
    }
}

/// Keep-alive connections to one backend.
pub struct BackendConnections {
    address: SocketAddr,
    settings: ConnectSettings,
    /// HTTP/1.1 connections between exchanges, oldest first.
    idle: Mutex<Vec<Idle>>,
    /// The HTTP/2 connection, when there is one.
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Held while an HTTP/2 connection is being made, so concurrent requests share it.
    h2_connecting: tokio::sync::Mutex<()>,
    /// HTTP/1.1 connections open (idle or busy), against `settings.max_connections`.
    open: AtomicUsize,
    /// Signalled when a connection goes idle or closes, for requests waiting for one.
    freed: Notify,
}

impl std::fmt::Debug for BackendConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnections")
            .field("address", &self.address)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 connection: its sender and the task driving it (aborting the task closes
/// the connection at once, even mid-exchange).
struct Conn1 {
    sender: http1::SendRequest<RequestBody>,
    task: AbortHandle,
}

struct Idle {
    conn: Conn1,
    since: Instant,
}

/// A response head and, for HTTP/1.1, the connection to give back when its body has ended.
pub struct Exchange {
    /// The backend's response; its body is still to be read.
    pub response: Response<Incoming>,
    /// Give it back with [`Checkin::give_back`] once the body ended cleanly. Dropping it
    /// instead closes the connection once the exchange ends, which is what a cut-short or
    /// upgraded exchange needs.
    pub checkin: Option<Checkin>,
}

/// An HTTP/1.1 connection out of its set for one exchange.
pub struct Checkin {
    conn: Conn1,
    home: Arc<BackendConnections>,
}

impl Checkin {
    /// Returns the connection to its backend's idle stack.
    pub fn give_back(self) {
        self.home.put_idle(self.conn);
    }

    /// Closes the connection from anywhere, e.g. when the client stopped reading the
    /// response it carries.
    pub fn closer(&self) -> AbortHandle {
        self.conn.task.clone()
    }
}

impl BackendConnections {
    fn new(address: SocketAddr, settings: ConnectSettings) -> Self {
        Self {
            address,
            settings,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// HTTP/1.1 connections open now (for tests and status).
    pub fn open_count(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Idle HTTP/1.1 connections now (for tests and status).
    pub fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Sends `request` over a kept-alive connection, or a new one. A reused connection that
    /// turns out closed before the request left it (the backend timed it out a moment ago)
    /// costs nothing: the request goes out on another. Once a request has left, its
    /// failure is the caller's to retry or not.
    ///
    /// With `max_connections` open and none idle, the request waits for one to be freed,
    /// within `pending`; past it the request is refused at once.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        pending: PendingLimit<'_>,
    ) -> Result<Exchange, UpstreamError> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_http1(request, pending).await,
            UpstreamProtocol::Http2 => self.send_http2(request).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        pending: PendingLimit<'_>,
    ) -> Result<Exchange, UpstreamError> {
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None if self.reserve() => (self.connect_http1().await?, false),
                None => {
                    self.wait_for_connection(pending).await?;
                    continue;
                }
            };
            match conn.sender.try_send_request(request).await {
                Ok(response) => {
                    let checkin = Checkin {
                        conn,
                        home: self.clone(),
                    };
                    return Ok(Exchange {
                        response,
                        checkin: Some(checkin),
                    });
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => {
                        debug!(backend = %self.address, "kept-alive connection closed; sending on another");
                        request = unsent;
                    }
                    _ => return Err(self.exchange_error(err.into_error())),
                },
            }
        }
    }

    async fn send_http2(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Exchange, UpstreamError> {
        loop {
            let (mut sender, reused) = self.http2_sender().await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(Exchange {
                        response,
                        checkin: None,
                    });
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => {
                        self.forget_http2(&sender);
                        request = unsent;
                    }
                    _ => return Err(self.exchange_error(err.into_error())),
                },
            }
        }
    }

    /// Takes a slot for a new connection if fewer than `max_connections` are open.
    fn reserve(&self) -> bool {
        let max = self.settings.max_connections as usize;
        self.open
            .fetch_update(Relaxed, Relaxed, |open| (open < max).then_some(open + 1))
            .is_ok()
    }

    /// Gives back a connection slot (its connection closed or was never made).
    fn release(&self) {
        self.open.fetch_sub(1, Relaxed);
        self.freed.notify_one();
    }

    /// Waits, as one of the pool's pending requests, until a connection is idle or a slot is
    /// free. Refused at once when no request may wait.
    async fn wait_for_connection(&self, pending: PendingLimit<'_>) -> Result<(), UpstreamError> {
        let overloaded = |limit| UpstreamError::Overloaded {
            address: self.address,
            limit,
        };
        if pending.max == 0 {
            return Err(overloaded(Overload::MaxConnections));
        }
        if pending
            .waiting
            .fetch_update(Relaxed, Relaxed, |n| (n < pending.max).then_some(n + 1))
            .is_err()
        {
            return Err(overloaded(Overload::MaxPendingRequests));
        }
        let _waiting = Waiting(pending.waiting);
        let freed = self.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        // Freed between the caller's check and `enable`: no need to wait.
        if lock(&self.idle).is_empty()
            && self.open.load(Relaxed) >= self.settings.max_connections as usize
        {
            freed.await;
        }
        Ok(())
    }

    /// The most recently used idle connection that is still open and ready.
    fn checkout(self: &Arc<Self>) -> Option<Conn1> {
        let now = Instant::now();
        loop {
            let idle = lock(&self.idle).pop()?;
            if idle.conn.sender.is_closed() || now.duration_since(idle.since) > IDLE_TIMEOUT {
                continue;
            }
            if idle.conn.sender.is_ready() {
                return Some(idle.conn);
            }
            // Given back before hyper's connection task finished the last exchange (it
            // marks the connection ready in the same step that ends the response body, so
            // this is rare): let it settle off the request path.
            self.settle(idle.conn);
        }
    }

    /// Puts `conn` back on the idle stack once it is ready, or drops it if it never is.
    fn settle(self: &Arc<Self>, mut conn: Conn1) {
        let home = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SETTLE_TIMEOUT, conn.sender.ready()).await {
                Ok(Ok(())) => home.put_idle(conn),
                Ok(Err(err)) => {
                    debug!(backend = %home.address, error = %err, "idle backend connection closed");
                }
                Err(_) => {
                    debug!(backend = %home.address, "backend connection never became ready; closing it");
                }
            }
        });
    }

    fn put_idle(&self, conn: Conn1) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            // The oldest goes: it is the likeliest to be timed out by the backend.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        self.freed.notify_one();
    }

    fn close_expired(&self, now: Instant) {
        let mut idle = lock(&self.idle);
        idle.retain(|i| !i.conn.sender.is_closed() && now.duration_since(i.since) <= IDLE_TIMEOUT);
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let address = self.address;
        let timeout = self.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { address, timeout })?
            .map_err(|source| UpstreamError::Connect { address, source })?;
        // Requests and responses are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let keepalive = TcpKeepalive::new().with_time(KEEPALIVE);
        let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Ok(TokioIo::new(stream))
    }

    /// A new connection in a slot already reserved; the slot is released when the
    /// connection closes (or at once if it cannot be made).
    async fn connect_http1(self: &Arc<Self>) -> Result<Conn1, UpstreamError> {
        let slot = Slot(Arc::downgrade(self));
        let io = self.connect().await?;
        let address = self.address;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { address, source })?;
        let task = tokio::spawn(async move {
            let _slot = slot;
            // Upgrades (WebSocket) take the connection over once both sides agreed.
            if let Err(err) = connection.with_upgrades().await {
                debug!(backend = %address, error = %err, "backend connection ended with an error");
            }
        });
        Ok(Conn1 {
            sender,
            task: task.abort_handle(),
        })
    }

    /// The shared HTTP/2 connection, made if there is none; `true` if it was there already.
    async fn http2_sender(&self) -> Result<(http2::SendRequest<RequestBody>, bool), UpstreamError> {
        if let Some(sender) = self.open_http2() {
            return Ok((sender, true));
        }
        let _connecting = self.h2_connecting.lock().await;
        // Someone else may have connected while this request waited for the lock.
        if let Some(sender) = self.open_http2() {
            return Ok((sender, true));
        }
        let io = self.connect().await?;
        let address = self.address;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
            .adaptive_window(true)
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { address, source })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(backend = %address, error = %err, "backend HTTP/2 connection ended with an error");
            }
        });
        *lock(&self.h2) = Some(sender.clone());
        Ok((sender, false))
    }

    fn open_http2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut slot = lock(&self.h2);
        match slot.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Drops the shared HTTP/2 connection if it is still `dead`, so the next request makes
    /// a new one.
    fn forget_http2(&self, dead: &http2::SendRequest<RequestBody>) {
        let mut slot = lock(&self.h2);
        if dead.is_closed() || !dead.is_ready() {
            *slot = None;
        }
    }

    fn exchange_error(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Exchange {
            address: self.address,
            source,
        }
    }
}

/// A connection slot of a backend, released when dropped.
struct Slot(Weak<BackendConnections>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(home) = self.0.upgrade() {
            home.release();
        }
    }
}

/// One of a pool's requests waiting for a connection, until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Locks `mutex`, whose data stays valid even if a holder panicked (nothing here leaves it
/// half-updated).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
