//! `api_key`: a request presents a key (in a header or a query parameter) that must be one
//! of the keys file's; the key's name becomes the principal. Keys are kept only as SHA-256
//! hashes, and the presented key's hash is compared with every stored one in constant time,
//! so neither memory nor timing gives a key away. The key is removed from the request
//! before it goes on: the backend and the access log never see it.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderName, StatusCode, Uri};
use subtle::ConstantTimeEq;

use super::build::FilterBuildError;
use super::headers::header_name;
use super::{Deny, Filter, FilterRequest, Verdict};
use crate::config::{ApiKeySpec, key_hash};
use crate::proxy::normalize::percent_decode;

/// The compiled `api_key` filter.
pub struct ApiKeyFilter {
    header: Option<HeaderName>,
    query: Option<String>,
    /// `(name, SHA-256 of the key)`.
    keys: Vec<(Arc<str>, [u8; 32])>,
}

impl ApiKeyFilter {
    /// Compiles `spec`.
    pub fn new(spec: &ApiKeySpec) -> Result<Self, FilterBuildError> {
        Ok(Self {
            header: spec.header.as_deref().map(header_name).transpose()?,
            query: spec.query.clone(),
            keys: spec
                .keys
                .iter()
                .map(|(name, hash)| (Arc::from(name.as_str()), *hash))
                .collect(),
        })
    }

    /// The name of the key whose hash is `hash`. Every stored hash is compared, each in
    /// constant time, whatever matched.
    fn name_of(&self, presented: &[u8]) -> Option<Arc<str>> {
        let hash = key_hash(presented);
        let mut found = None;
        for (name, stored) in &self.keys {
            if bool::from(stored.ct_eq(&hash)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

impl Filter for ApiKeyFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        // Both places are cleared whichever carried the key: a second copy never goes on.
        let from_header = self
            .header
            .as_ref()
            .and_then(|h| request.headers.remove(h))
            .map(|v| v.as_bytes().to_vec());
        let from_query = match &self.query {
            Some(name) => {
                let (key, rest) = take_query_param(request.uri, name);
                if let Some(rest) = rest {
                    *request.uri = rest;
                    request.learned.query_redacted = true;
                }
                key
            }
            None => None,
        };
        let Some(presented) = from_header.or(from_query) else {
            return deny("missing_key");
        };
        match self.name_of(&presented) {
            Some(name) => {
                request.learned.principal = Some(name);
                Verdict::Continue
            }
            None => deny("unknown_key"),
        }
    }
}

fn deny(reason: &'static str) -> Verdict {
    Verdict::Deny(Deny {
        status: StatusCode::UNAUTHORIZED,
        reason,
        body: None,
        headers: Vec::new(),
    })
}

/// The first value of query parameter `name` (percent-decoded), and `uri` without any
/// occurrence of it (`None` when it had none).
fn take_query_param(uri: &Uri, name: &str) -> (Option<Vec<u8>>, Option<Uri>) {
    let Some(query) = uri.query() else {
        return (None, None);
    };
    let mut value = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key) == name {
            if value.is_none() {
                value = Some(percent_decode(v).as_bytes().to_vec());
            }
        } else {
            kept.push(pair);
        }
    }
    if value.is_none() {
        return (None, None);
    }
    let target = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    // Cannot fail: the path and the kept pairs were part of a valid target.
    match PathAndQuery::from_maybe_shared(target) {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return (None, None),
    }
    match Uri::from_parts(parts) {
        Ok(rewritten) => (value, Some(rewritten)),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_key_is_taken_out_of_the_target() {
        let uri: Uri = "/a/b?x=1&api_key=s%33cret&y=2&api_key=other"
            .parse()
            .expect("uri");
        let (value, rest) = take_query_param(&uri, "api_key");
        assert_eq!(value.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(rest.expect("rewritten").to_string(), "/a/b?x=1&y=2");
        let uri: Uri = "/only?api_key=k".parse().expect("uri");
        assert_eq!(
            take_query_param(&uri, "api_key").1.expect("rewritten"),
            "/only"
        );
        let uri: Uri = "/none?x=1".parse().expect("uri");
        assert_eq!(take_query_param(&uri, "api_key"), (None, None));
    }
}
