//! A listening socket and its connections: the accept loop under the connection limit,
//! TLS and protocol selection, and hyper serving each connection until it ends or the
//! listener stops (then gracefully: HTTP/1 finishes its request, HTTP/2 sends GOAWAY).
//!
//! Beyond `max_connections`, new connections are not accepted: they wait in the kernel's
//! listen backlog (and clients retry their SYNs once it is full) until a connection closes.
//! Nothing is accepted only to be closed again, so a burst costs the proxy nothing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::client_cert::ClientIdentity;
use super::conn_io::{ConnIo, ConnShared, LocalAnswers};
use super::h2_streams;
use super::handle;
use super::prefixed::Prefixed;
use super::state::ListenerState;
use super::tls::HandshakeFailure;

/// Pending connections the kernel queues for the accept loop.
const BACKLOG: u32 = 4096;
/// The HTTP/2 connection preface, which an h2c client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Pauses of the accept loop after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds `addr` for a listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted agent must rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Connections open per client address on one listener, for
/// `limits.max_connections_per_client`. Kept across reloads with the listener.
#[derive(Debug, Default)]
pub struct ClientCounts(Mutex<HashMap<IpAddr, u32>>);

impl ClientCounts {
    /// Counts a connection from `ip` unless it already has `cap`.
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Option<ClientSlot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

/// One connection counted against its client; uncounted when dropped.
struct ClientSlot(Arc<ClientCounts>, IpAddr);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// Accepts connections until `stop` turns true. Each connection is served with the state
/// current when it was accepted (its limits and TLS); each request reads the routes anew.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    permits: Arc<Semaphore>,
    clients: Arc<ClientCounts>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => return,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin, longer
                // while it lasts.
                warn!(error = %err, pause = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let current = state.load_full();
        let slot = match current.limits.max_connections_per_client {
            Some(cap) => match clients.admit(client.ip(), cap) {
                Some(slot) => Some(slot),
                None => {
                    // Closed at once: one address cannot take the whole listener.
                    current.stats.refused_per_client.fetch_add(1, Relaxed);
                    debug!(%client, cap, "client at max_connections_per_client; connection closed");
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            state: current,
            cell: state.clone(),
            client,
            _permit: permit,
            _client_slot: slot,
        };
        tokio::spawn(conn.serve(stream, stop.clone()));
    }
}

/// What every request on a connection shares.
pub struct ConnCtx {
    /// The listener's current state, read anew by each request (reloads apply at once).
    pub listener: Arc<ArcSwap<ListenerState>>,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP, ready for X-Forwarded-For.
    pub client_ip: HeaderValue,
    /// Whether the connection is TLS.
    pub https: bool,
    /// Who the client's verified certificate names (mTLS listeners).
    pub client_cert: Option<ClientIdentity>,
    /// The connection's timers and flags.
    pub shared: Arc<ConnShared>,
}

/// One accepted connection.
struct Connection {
    state: Arc<ListenerState>,
    cell: Arc<ArcSwap<ListenerState>>,
    client: SocketAddr,
    /// Returned to the listener's connection limit when the connection ends.
    _permit: OwnedSemaphorePermit,
    /// Returned to the client's count when the connection ends.
    _client_slot: Option<ClientSlot>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let accepted = Instant::now();
        let timeouts = self.state.timeouts();
        let shared = Arc::new(ConnShared::default());
        let https = self.state.tls.is_some();
        let answers = LocalAnswers {
            stats: self.state.stats.clone(),
            service: self.state.service.clone(),
            client: self.client,
            access_log: self.state.access_log,
        };
        let ctx = |client_cert| {
            Arc::new(ConnCtx {
                listener: self.cell.clone(),
                client: self.client,
                client_ip: client_ip(self.client),
                https,
                client_cert,
                shared: shared.clone(),
            })
        };
        if let Some(acceptor) = &self.state.tls {
            // Boxed, as the TLS half below: the task's future is as large as its largest
            // state, and a plain connection would otherwise carry the handshake's room (and
            // the TLS connection's) for as long as it lives.
            let handshake =
                tokio::time::timeout(timeouts.header_read, Box::pin(acceptor.accept(stream)));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    debug!(client = %self.client, error = %err, "TLS handshake failed");
                    self.state.stats.tls_failure(HandshakeFailure::of(&err));
                    return;
                }
                Err(_) => {
                    debug!(client = %self.client, "TLS handshake timed out");
                    self.state.stats.tls_failure(HandshakeFailure::Timeout);
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            // rustls verified the chain; the leaf comes first.
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(ClientIdentity::of);
            let ctx = ctx(client_cert);
            let io = ConnIo::new(
                tls,
                shared.clone(),
                timeouts,
                Some(h2),
                accepted,
                answers.clone(),
            );
            Box::pin(self.run(io, h2, ctx, &answers, &mut stop)).await;
        } else {
            let deadline = accepted + timeouts.header_read;
            let (h2, stream) = if self.state.h2c {
                read_preface(stream, deadline).await
            } else {
                (false, Prefixed::new(Bytes::new(), stream))
            };
            let ctx = ctx(None);
            let io = ConnIo::new(
                stream,
                shared.clone(),
                timeouts,
                Some(h2),
                accepted,
                answers.clone(),
            );
            Box::pin(self.run(io, h2, ctx, &answers, &mut stop)).await;
        }
        // An upgraded connection lives on in its tunnel, and keeps its slot until it ends.
        if shared.is_upgraded() {
            shared.tunnel_ended().await;
        }
    }

    async fn run<S>(
        &self,
        io: ConnIo<S>,
        h2: bool,
        ctx: Arc<ConnCtx>,
        answers: &LocalAnswers,
        stop: &mut watch::Receiver<bool>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |request| {
            let guard = ctx.shared.start_request();
            handle::handle(ctx.clone(), request, guard)
        });
        let io = TokioIo::new(io);
        let client = self.client;
        // Pinned here and driven by reference: one copy of the connection in the future.
        let result = if h2 {
            let conn = std::pin::pin!(self.state.http2.serve_connection(io, service));
            h2_streams::serve(drive(conn, |c| c.graceful_shutdown(), stop)).await
        } else {
            let conn = std::pin::pin!(
                self.state
                    .http1
                    .serve_connection(io, service)
                    .with_upgrades()
            );
            drive(conn, |c| c.graceful_shutdown(), stop).await
        };
        if let Err(err) = result {
            debug!(%client, error = %err, "client connection ended with an error");
            // hyper answered a head it could not parse itself before closing.
            if err.is_parse_too_large() {
                answers.answered(431, "request head too large");
            } else if err.is_parse() {
                answers.answered(400, "malformed request head");
            }
        }
    }
}

/// Polls a hyper connection to its end; when the listener stops, asks it to finish
/// gracefully and keeps polling.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
    stop: &mut watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    // A set of one polls the stop signal only once its waker fired, not each time the
    // connection is polled (a watch check cost some 550 instructions per request).
    let mut stop_signal: FuturesUnordered<_> = std::iter::once(stopped(stop)).collect();
    tokio::select! {
        result = conn.as_mut() => result,
        Some(()) = stop_signal.next() => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// Resolves once the listener is told to stop (at once if it already was).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Whether a plain-text client speaks HTTP/2 with prior knowledge: reads (never more than
/// the preface's 24 bytes) until the bytes differ from the preface or complete it, or until
/// the head deadline. What was read is replayed to the protocol. A client that sends part of
/// a preface and stops costs one parked read, no polling.
async fn read_preface(mut stream: TcpStream, deadline: Instant) -> (bool, Prefixed<TcpStream>) {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(got) => n += got,
            }
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
        }
        true
    };
    // A client that never completes it falls to HTTP/1, whose head deadline (already due
    // then) closes it.
    let h2 = tokio::time::timeout_at(deadline, read)
        .await
        .unwrap_or(false);
    let prefix = Bytes::copy_from_slice(&buf[..n]);
    (h2, Prefixed::new(prefix, stream))
}

/// The client's address as an X-Forwarded-For entry, built once per connection.
fn client_ip(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
