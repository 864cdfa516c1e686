//! A listening socket and its connections: the accept loop under the connection limit,
//! TLS and protocol selection, and hyper serving each connection until it ends or the
//! listener stops (then gracefully: HTTP/1 finishes its request, HTTP/2 sends GOAWAY).
//!
//! Beyond `max_connections`, new connections are not accepted: they wait in the kernel's
//! listen backlog (and clients retry their SYNs once it is full) until a connection closes.
//! Nothing is accepted only to be closed again, so a burst costs the proxy nothing.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

use super::conn_io::{ConnIo, ConnShared};
use super::handle::{self, ConnCtx};
use super::state::ListenerState;

/// Pending connections the kernel queues for the accept loop.
const BACKLOG: u32 = 4096;
/// The HTTP/2 connection preface, which an h2c client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

/// Accepts connections until `stop` turns true. Each connection is served with the state
/// current when it was accepted (its limits and TLS); each request reads the routes anew.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<ArcSwap<ListenerState>>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
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
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            state: state.load_full(),
            cell: state.clone(),
            client,
            _permit: permit,
        };
        tokio::spawn(conn.serve(stream, stop.clone()));
    }
}

/// One accepted connection.
struct Connection {
    state: Arc<ListenerState>,
    cell: Arc<ArcSwap<ListenerState>>,
    client: SocketAddr,
    /// Returned to the listener's connection limit when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let accepted = tokio::time::Instant::now();
        let timeouts = self.state.timeouts();
        let shared = Arc::new(ConnShared::default());
        let https = self.state.tls.is_some();
        let ctx = Arc::new(ConnCtx {
            listener: self.cell.clone(),
            client: self.client,
            client_ip: client_ip(self.client),
            https,
            shared: shared.clone(),
        });
        if let Some(acceptor) = &self.state.tls {
            let handshake = tokio::time::timeout(timeouts.header_read, acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    debug!(client = %self.client, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(client = %self.client, "TLS handshake timed out");
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = ConnIo::new(tls, shared.clone(), timeouts, Some(h2), accepted);
            self.run(io, h2, ctx, &mut stop).await;
        } else {
            let h2 = self.state.h2c && sniff_h2c(&stream, timeouts.header_read).await;
            let io = ConnIo::new(stream, shared.clone(), timeouts, Some(h2), accepted);
            self.run(io, h2, ctx, &mut stop).await;
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
        if h2 {
            let conn = self.state.http2.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), stop, client).await;
        } else {
            let conn = self
                .state
                .http1
                .serve_connection(io, service)
                .with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), stop, client).await;
        }
    }
}

/// Polls a hyper connection to its end; when the listener stops, asks it to finish
/// gracefully and keeps polling.
async fn drive<C, E>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    stop: &mut watch::Receiver<bool>,
    client: SocketAddr,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(stop) => {
            graceful(conn.as_mut());
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(%client, error = %err, "client connection ended with an error");
    }
}

/// Resolves once the listener is told to stop (at once if it already was).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Whether a plain-text client speaks HTTP/2 with prior knowledge: its first bytes are the
/// HTTP/2 preface. Peeks, so hyper still reads everything.
async fn sniff_h2c(stream: &TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let sniff = async {
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // A partial preface stays readable without new data: wait before peeking again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // A client that never sends falls to HTTP/1, whose head timer then closes it.
    tokio::time::timeout(within, sniff).await.unwrap_or(false)
}

/// The client's address as an X-Forwarded-For entry, built once per connection.
fn client_ip(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}
