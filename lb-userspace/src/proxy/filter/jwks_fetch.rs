//! A `jwt` filter's keys from a JWKS URL: fetched at once and then every `refresh`, each
//! good set compiled and swapped in whole. A fetch that fails (unreachable, not 200, not a
//! valid key set) keeps the last good set, is logged and counted, and is tried again sooner
//! (`RETRY`). The task stops when the filter is dropped (a reload that changed it).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use tokio::task::JoinHandle;

use super::build::FilterBuildError;
use super::jwt::{Checks, KeySet};
use super::service_client::{CallError, ServiceClient};
use crate::config::{TrustRoots, jwks};
use crate::proxy::stats::FilterStats;

/// The wait before another try after a failed fetch, when `refresh` is longer.
const RETRY: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
const MAX_BODY: usize = 1024 * 1024;

/// Why a fetch gave no key set.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, the TLS handshake, sending or reading failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The body is not text.
    #[error("body: {0}")]
    Body(#[from] std::string::FromUtf8Error),
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

/// Where a key set is fetched from.
pub struct JwksUrl {
    uri: Uri,
    client: ServiceClient,
}

impl JwksUrl {
    /// `url`, over TLS checked against `trust` when it is https.
    pub fn new(url: &str, trust: Option<&TrustRoots>) -> Result<Self, FilterBuildError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| FilterBuildError::JwksUrl(url.into()))?;
        let client = ServiceClient::new(&uri, trust)?;
        Ok(Self { uri, client })
    }
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
        url: JwksUrl,
        refresh: Duration,
        timeout: Duration,
        checks: Checks,
        keys: Arc<ArcSwap<KeySet>>,
        stats: Arc<FilterStats>,
    ) -> Result<Self, FilterBuildError> {
        let JwksUrl { uri, client } = url;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| FilterBuildError::NoRuntime)?;
        let name = name.to_owned();
        let task = runtime.spawn(async move {
            loop {
                let fetched = tokio::time::timeout(timeout, fetch(&client, &uri))
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

/// GETs `uri`: the body of a 200 answer.
async fn fetch(client: &ServiceClient, uri: &Uri) -> Result<String, FetchError> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(CallError::Request)?;
    let answer = client.call(request, MAX_BODY).await?;
    if answer.status != StatusCode::OK {
        return Err(FetchError::Status(answer.status));
    }
    Ok(String::from_utf8(answer.body.to_vec())?)
}
