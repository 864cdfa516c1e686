//! Test clients: hyper's HTTP/1.1 and HTTP/2 client connections over plain TCP or rustls,
//! and raw TCP for requests no well-behaved client would send. Run them inside the lab's
//! namespace ([`Lab::run`](super::Lab::run)).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time any one client exchange may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// HTTP version of the client connection.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// A header's value as text, or "".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request with a body.
pub type Req = Request<Full<Bytes>>;

/// `GET path` for `host`.
pub fn get(host: &str, path: &str) -> Req {
    request("GET", host, path, Bytes::new())
}

/// `req` with `name: value` set (replacing any value it had).
pub fn with_header(mut req: Req, name: &'static str, value: &str) -> Req {
    let value = value
        .parse()
        .unwrap_or_else(|e| panic!("header {name}: {value:?}: {e}"));
    req.headers_mut().insert(name, value);
    req
}

/// `GET path` for `gw.test` carrying `token` as `Authorization: Bearer`.
pub fn bearer(path: &str, token: &str) -> Req {
    with_header(
        get("gw.test", path),
        "authorization",
        &format!("Bearer {token}"),
    )
}

/// `req` with every `(name, value)` of `headers` set, in order.
pub fn with_headers(req: Req, headers: &[(&'static str, &str)]) -> Req {
    headers
        .iter()
        .fold(req, |req, (name, value)| with_header(req, name, value))
}

/// `method path` for `host` with `body`.
pub fn request(method: &str, host: &str, path: &str, body: impl Into<Bytes>) -> Req {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(body.into()))
        .unwrap_or_else(|e| panic!("building a request: {e}"))
}

/// An HTTP/1.1 connection kept open for several requests.
pub struct H1 {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<H1, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        H1::over(stream).await
    }

    /// Speaks HTTP/1.1 over `io` (plain or TLS).
    pub async fn over<I>(io: I) -> Result<H1, String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("http/1.1 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(H1 { sender })
    }

    /// Sends `req` and reads the whole response.
    pub async fn send(&mut self, req: Req) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let response = tokio::time::timeout(CLIENT_TIMEOUT, self.sender.send_request(req))
            .await
            .map_err(|_| "no response in time".to_string())?
            .map_err(|e| format!("request failed: {e}"))?;
        read(response).await
    }

    /// Whether the proxy closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// An HTTP/2 connection (h2c with prior knowledge, or h2 over TLS).
#[derive(Clone)]
pub struct H2 {
    sender: http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    /// h2c with prior knowledge to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<H2, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        H2::over(stream).await
    }

    /// Speaks HTTP/2 over `io`.
    pub async fn over<I>(io: I) -> Result<H2, String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2 { sender })
    }

    /// Sends `req` (its Host header becomes :authority) and reads the whole response.
    pub async fn send(&mut self, req: Req) -> Result<Reply, String> {
        let (mut parts, body) = req.into_parts();
        let host = parts
            .headers
            .remove("host")
            .and_then(|h| h.to_str().ok().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());
        parts.uri = format!("http://{host}{}", parts.uri)
            .parse()
            .map_err(|e| format!("uri: {e}"))?;
        self.send_as_is(Request::from_parts(parts, body)).await
    }

    /// Sends `req` exactly as built: its URI (absolute, for `:authority`) and every header,
    /// `host` included, go out as they are.
    pub async fn send_as_is(&mut self, req: Req) -> Result<Reply, String> {
        let (mut parts, body) = req.into_parts();
        parts.version = Version::HTTP_2;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let response = tokio::time::timeout(
            CLIENT_TIMEOUT,
            self.sender.send_request(Request::from_parts(parts, body)),
        )
        .await
        .map_err(|_| "no response in time".to_string())?
        .map_err(|e| format!("request failed: {e}"))?;
        read(response).await
    }
}

async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(CLIENT_TIMEOUT, body.collect())
        .await
        .map_err(|_| "response body did not end in time".to_string())?
        .map_err(|e| format!("response body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn send_h1(addr: SocketAddr, req: Req) -> Result<Reply, String> {
    H1::connect(addr).await?.send(req).await
}

/// A TLS connection to `addr` with SNI `sni` (none when `None`).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_string()).map_err(|e| format!("{name}: {e}"))?,
        // An IP address as the server name: rustls then sends no SNI.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout(CLIENT_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// Writes `bytes` to a fresh connection to `addr` and reads until the proxy closes it or
/// `wait` passes; returns what came back, as text.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Result<String, String> {
    let reply = raw_bytes(addr, bytes, wait).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// [`raw`], returning bytes.
pub async fn raw_bytes(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    Ok(read_until_closed(&mut stream, wait).await)
}

/// Reads from `stream` until EOF, an error, or `wait`.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}
