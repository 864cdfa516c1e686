//! The client a filter calls an outside service with (a JWKS URL, an authorization
//! service): HTTP/1.1 over TCP, or over TLS for an `https` URL (the server's certificate
//! checked against the configured CA bundle or the system's trust store, and its name
//! against the URL's host). Connections are kept alive and reused, a few at a time, so a
//! check per request does not cost a handshake per request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::TrustRoots;

/// Idle connections kept per service.
const MAX_IDLE: usize = 16;
/// An idle connection older than this is closed rather than reused: below the usual
/// keep-alive timeouts of servers, so a reused connection is rarely one the server is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a service URL or its trust roots cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ServiceClientError {
    /// Not an `http://` or `https://` URL with a host.
    #[error("{0:?} is not an http or https URL with a host")]
    Url(String),
    /// The host is no name a certificate can be checked against.
    #[error("{0:?} is no name a TLS certificate can be checked against")]
    ServerName(String),
    /// The system's trust store gave no certificate.
    #[error(
        "the system's trust store holds no usable CA certificate (install ca-certificates, or give a CA file)"
    )]
    NoSystemRoots,
    /// A CA certificate rustls refuses.
    #[error("a CA certificate of {path}")]
    Root {
        /// The bundle.
        path: String,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// rustls refuses the TLS settings.
    #[error("TLS settings")]
    Tls(#[source] rustls::Error),
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (e.g. a certificate that does not chain to the trust roots).
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be made.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The answer's body was too long or broken.
    #[error("body: {0}")]
    Body(String),
}

/// An answer: status, headers, body (at most the caller's limit).
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

type Sender = http1::SendRequest<Empty<Bytes>>;

/// A client for one service (one scheme, host and port).
pub struct ServiceClient {
    host: String,
    port: u16,
    authority: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl ServiceClient {
    /// A client for `uri`'s service; `trust` must be given for an https URL.
    pub fn new(uri: &Uri, trust: Option<&TrustRoots>) -> Result<Self, ServiceClientError> {
        let bad_url = || ServiceClientError::Url(uri.to_string());
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad_url()),
        };
        let bracketed = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad_url)?;
        // An IPv6 literal comes bracketed (`[::1]`); the resolver and TLS want it bare.
        let host = bracketed.trim_start_matches('[').trim_end_matches(']');
        let authority = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(bad_url)?;
        let tls = match (https, trust) {
            (false, _) => None,
            (true, trust) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| ServiceClientError::ServerName(host.to_owned()))?;
                Some((connector(trust.unwrap_or(&TrustRoots::System))?, name))
            }
        };
        Ok(Self {
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` (its URI in origin form; `Host` is set here) and reads the answer,
    /// its body up to `max_body` bytes. A request that fails on a reused connection (one the
    /// server closed while it was idle) is sent once more on a new one.
    pub async fn call(
        &self,
        mut request: Request<Empty<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        request
            .headers_mut()
            .insert(http::header::HOST, self.authority.clone());
        if let Some(sender) = self.idle_sender() {
            let retry = clone_request(&request);
            match self.exchange(sender, request, max_body).await {
                Ok(answer) => return Ok(answer),
                Err(err) => {
                    tracing::debug!(host = %self.host, error = %err, "call on a reused connection failed; trying a new one");
                    request = retry;
                }
            }
        }
        let sender = self.connect().await?;
        self.exchange(sender, request, max_body).await
    }

    async fn exchange(
        &self,
        mut sender: Sender,
        request: Request<Empty<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| CallError::Body(e.to_string()))?
            .to_bytes();
        // The answer was read whole: the connection may carry the next call.
        if sender.is_ready() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The most recently used idle connection that is still open and young enough.
    fn idle_sender(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, CallError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(CallError::Connect)?;
        // Checks are small request-answer exchanges: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(CallError::Tls)?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<S>(stream: S) -> Result<Sender, CallError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    // The connection's driver ends when the sender is dropped or the server closes.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection to a filter's service ended");
        }
    });
    Ok(sender)
}

/// A copy of a request without a body (the retry of a call).
fn clone_request(request: &Request<Empty<Bytes>>) -> Request<Empty<Bytes>> {
    let mut copy = Request::new(Empty::new());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

fn connector(trust: &TrustRoots) -> Result<TlsConnector, ServiceClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        TrustRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!(error = %err, "a certificate of the system's trust store was not read");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ServiceClientError::NoSystemRoots);
            }
        }
        TrustRoots::Bundle { path, roots: certs } => {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|source| ServiceClientError::Root {
                        path: path.display().to_string(),
                        source,
                    })?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServiceClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
