//! A `jwt` filter's keys from a JWKS URL: fetched at once and then every `refresh`, each
//! good set compiled and swapped in whole. A fetch that fails (unreachable, not 200, not a
//! valid key set) keeps the last good set, is logged and counted, and is tried again sooner
//! (`RETRY`). The task stops when the filter is dropped (a reload that changed it).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use super::build::FilterBuildError;
use super::jwt::{Checks, KeySet};
use crate::config::jwks;
use crate::proxy::stats::FilterStats;

/// The wait before another try after a failed fetch, when `refresh` is longer.
const RETRY: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch gave no key set.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The body was too long or broken.
    #[error("body: {0}")]
    Body(String),
    /// Not 200.
    #[error("status {0}")]
    Status(StatusCode),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Not a usable key set.
    #[error("key set: {0}")]
    Jwks(#[from] jwks::JwksError),
    /// A key's material could not be compiled.
    #[error("key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

/// The fetch task; dropping it stops the task.
pub struct JwksFetcher {
    task: JoinHandle<()>,
}

impl Drop for JwksFetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksFetcher {
    /// Starts fetching `url` into `keys` for filter `name`.
    pub fn start(
        name: &str,
        url: &str,
        refresh: Duration,
        timeout: Duration,
        checks: Checks,
        keys: Arc<ArcSwap<KeySet>>,
        stats: Arc<FilterStats>,
    ) -> Result<Self, FilterBuildError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| FilterBuildError::JwksUrl(url.into()))?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| FilterBuildError::NoRuntime)?;
        let name = name.to_owned();
        let task = runtime.spawn(async move {
            loop {
                let fetched = tokio::time::timeout(timeout, fetch(&uri))
                    .await
                    .unwrap_or(Err(FetchError::Timeout))
                    .and_then(|text| {
                        let parsed = jwks::parse(&text)?;
                        Ok(KeySet::compile(&parsed, &checks)?)
                    });
                let wait = match fetched {
                    Ok(set) => {
                        keys.store(Arc::new(set));
                        stats.event("jwks_fetched");
                        tracing::debug!(filter = %name, url = %uri, "JWKS fetched");
                        refresh
                    }
                    Err(err) => {
                        stats.event("jwks_fetch_failed");
                        tracing::warn!(filter = %name, url = %uri, error = %err, "JWKS fetch failed; the last good keys stay");
                        refresh.min(RETRY)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        Ok(Self { task })
    }
}

/// GETs `uri` over HTTP/1.1: the body of a 200 answer.
async fn fetch(uri: &Uri) -> Result<String, FetchError> {
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(80);
    // An IPv6 literal comes bracketed (`[::1]`); the resolver wants it bare.
    let address = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((address, port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| FetchError::Body(e.to_string()))?;
    let response = sender.send_request(request).await;
    let result = async {
        let response = response?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|e| FetchError::Body(e.to_string()))
    }
    .await;
    driver.abort();
    result
}
