//! `headers`: fixed request and response header edits. A route's own
//! `request_headers_*` / `response_headers_*` fields are this filter too, run last in the
//! route's chain (so its edits on the request are the final word, as they always were).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::build::FilterBuildError;
use super::{Filter, FilterRequest, Learned, Verdict};
use crate::config::HeaderEdits;
use crate::proxy::forward::edit_headers;

/// Compiled header edits: removals first, then additions (which replace).
#[derive(Debug, Default)]
pub struct HeaderFilter {
    request_remove: Vec<HeaderName>,
    request_add: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
    response_add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderFilter {
    /// Compiles `edits`; validation already checked the names and values.
    pub fn new(edits: &HeaderEdits) -> Result<Self, FilterBuildError> {
        Ok(Self {
            request_remove: names(&edits.request_remove)?,
            request_add: pairs(&edits.request_add)?,
            response_remove: names(&edits.response_remove)?,
            response_add: pairs(&edits.response_add)?,
        })
    }

    /// Whether the filter changes nothing (a route without header edits gets none).
    pub fn is_empty(&self) -> bool {
        self.request_remove.is_empty()
            && self.request_add.is_empty()
            && self.response_remove.is_empty()
            && self.response_add.is_empty()
    }
}

impl Filter for HeaderFilter {
    fn on_request(&self, request: &mut FilterRequest<'_>) -> Verdict {
        edit_headers(request.headers, &self.request_remove, &self.request_add);
        Verdict::Continue
    }

    fn on_response(&self, headers: &mut HeaderMap, _learned: &Learned) {
        edit_headers(headers, &self.response_remove, &self.response_add);
    }
}

/// A header name from the config.
pub fn header_name(name: &str) -> Result<HeaderName, FilterBuildError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|source| FilterBuildError::HeaderName {
        name: name.to_owned(),
        source,
    })
}

fn names(names: &[String]) -> Result<Vec<HeaderName>, FilterBuildError> {
    names.iter().map(|n| header_name(n)).collect()
}

fn pairs(pairs: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, FilterBuildError> {
    pairs
        .iter()
        .map(|(name, value)| {
            let value =
                HeaderValue::from_str(value).map_err(|source| FilterBuildError::HeaderValue {
                    name: name.clone(),
                    source,
                })?;
            Ok((header_name(name)?, value))
        })
        .collect()
}
