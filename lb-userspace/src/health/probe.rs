//! One active probe of one backend: a TCP connect, an HTTP/1.1 exchange or a gRPC health
//! call (`grpc_probe`), always under a timeout and reading a bounded number of bytes, whatever the backend answers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use memchr::memmem;
use thiserror::Error;
use tokio::net::TcpStream;

use super::grpc_probe::GrpcProbe;
use crate::config::{HealthCheck, HealthCheckKind, HttpCheck, StatusRange};

/// Most response-head bytes read (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most body bytes searched for `body_contains`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a probe failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("connecting: {source}")]
    Connect {
        #[source]
        source: std::io::Error,
    },
    #[error("no complete answer within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("HTTP exchange failed: {source}")]
    Http {
        #[source]
        source: hyper::Error,
    },
    #[error("status {status} is not an expected one")]
    Status { status: u16 },
    #[error("the body does not contain {needle:?} within its first {limit} bytes")]
    Body { needle: String, limit: usize },
    #[error("the probe request cannot be built: {reason}")]
    Request { reason: String },
    #[error("gRPC health check failed: answer too long")]
    GrpcAnswerTooLong,
    #[error("gRPC health check failed: grpc-status {code:?}")]
    GrpcStatus { code: Option<u32> },
    #[error("gRPC health check failed: serving status {} (SERVING is 1)", .status.map_or("missing".to_owned(), |s| s.to_string()))]
    NotServing { status: Option<u64> },
}

/// A ready-to-run probe of one backend.
#[derive(Debug, Clone)]
pub struct Prober {
    address: SocketAddr,
    timeout: Duration,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Tcp,
    Http(HttpProbe),
    Grpc(GrpcProbe),
    /// No probing: every probe passes.
    None,
}

#[derive(Debug, Clone)]
struct HttpProbe {
    method: Method,
    path: String,
    host: HeaderValue,
    expected: Vec<StatusRange>,
    body_contains: Option<String>,
}

impl Prober {
    /// A probe of `address` as `check` describes it. Fails only on an HTTP method or Host
    /// that validation should have rejected.
    pub fn new(check: &HealthCheck, address: SocketAddr) -> Result<Self, ProbeError> {
        let kind = match &check.kind {
            HealthCheckKind::Tcp => Kind::Tcp,
            HealthCheckKind::None => Kind::None,
            HealthCheckKind::Http(http) => Kind::Http(HttpProbe::new(http, address)?),
            HealthCheckKind::Grpc { service } => Kind::Grpc(GrpcProbe::new(service, address)),
        };
        Ok(Self {
            address,
            timeout: check.timeout,
            kind,
        })
    }

    /// Runs the probe once. Everything, connect included, happens within the timeout; all
    /// resources are released when this returns (or when the future is dropped).
    pub async fn run(&self) -> Result<(), ProbeError> {
        let timeout = self.timeout;
        let probe = async {
            match &self.kind {
                Kind::Tcp => connect(self.address).await.map(drop),
                Kind::Http(http) => http.run(self.address).await,
                Kind::Grpc(grpc) => grpc.run(self.address).await,
                Kind::None => Ok(()),
            }
        };
        tokio::time::timeout(timeout, probe)
            .await
            .unwrap_or(Err(ProbeError::Timeout { timeout }))
    }
}

pub(super) async fn connect(address: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(address)
        .await
        .map_err(|source| ProbeError::Connect { source })
}

impl HttpProbe {
    fn new(check: &HttpCheck, address: SocketAddr) -> Result<Self, ProbeError> {
        let invalid = |what: &str, value: &str| ProbeError::Request {
            reason: format!("invalid {what} {value:?}"),
        };
        let method = Method::from_bytes(check.method.as_bytes())
            .map_err(|_| invalid("method", &check.method))?;
        let host = match &check.host {
            Some(host) => HeaderValue::from_str(host).map_err(|_| invalid("Host", host))?,
            // `SocketAddr` prints IPv6 in brackets, as Host wants it.
            None => HeaderValue::from_str(&address.to_string())
                .map_err(|_| invalid("Host", &address.to_string()))?,
        };
        Ok(Self {
            method,
            path: check.path.clone(),
            host,
            expected: check.expected_status.clone(),
            body_contains: check.body_contains.clone(),
        })
    }

    async fn run(&self, address: SocketAddr) -> Result<(), ProbeError> {
        let request = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(USER_AGENT, "sluice-health-check")
            // One probe, one connection: nothing idles between probes.
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeError::Request {
                reason: e.to_string(),
            })?;
        let stream = connect(address).await?;
        // Small writes only; a failure to set it changes nothing that matters.
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD_BYTES)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ProbeError::Http { source })?;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| ProbeError::Http { source })?;
            let status = response.status().as_u16();
            if !self.expected.iter().any(|range| range.contains(status)) {
                return Err(ProbeError::Status { status });
            }
            match &self.body_contains {
                Some(needle) => body_contains(response.into_body(), needle).await,
                // The body is never read: a huge or endless one costs nothing.
                None => Ok(()),
            }
        };
        drive(exchange, connection).await
    }
}

/// Runs `exchange` while polling `connection`, which moves its bytes, in the same task (no
/// spawned task can outlive the probe).
pub(super) async fn drive(
    exchange: impl Future<Output = Result<(), ProbeError>>,
    connection: impl Future<Output = Result<(), hyper::Error>>,
) -> Result<(), ProbeError> {
    let mut exchange = std::pin::pin!(exchange);
    let connection = std::pin::pin!(connection);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        // The connection ended first, perhaps on bytes after a complete response: what it
        // delivered is buffered for the exchange, which fails at once if nothing was.
        closed = connection => match (exchange.await, closed) {
            (Err(ProbeError::Http { .. }), Err(source)) => Err(ProbeError::Http { source }),
            (result, _) => result,
        },
    }
}

/// Reads at most [`MAX_BODY_BYTES`] of `body`, stopping as soon as `needle` shows up.
async fn body_contains(mut body: Incoming, needle: &str) -> Result<(), ProbeError> {
    let needle = needle.as_bytes();
    if needle.is_empty() {
        return Ok(());
    }
    let finder = memmem::Finder::new(needle);
    let mut seen: Vec<u8> = Vec::new();
    while seen.len() < MAX_BODY_BYTES {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|source| ProbeError::Http { source })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Search only what is new, plus enough before it to catch a needle split in two.
        let from = seen.len().saturating_sub(needle.len().saturating_sub(1));
        let room = MAX_BODY_BYTES - seen.len();
        seen.extend_from_slice(&data[..data.len().min(room)]);
        if finder.find(&seen[from..]).is_some() {
            return Ok(());
        }
    }
    Err(ProbeError::Body {
        needle: String::from_utf8_lossy(needle).into_owned(),
        limit: MAX_BODY_BYTES,
    })
}
