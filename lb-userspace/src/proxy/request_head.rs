//! The request head as the proxy will route and forward it: one authority, and a normalised
//! path. Routing and the backend see the same values, so a client cannot be routed by one
//! host or path and delivered as another.
//!
//! - HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2); in absolute form the target's
//!   authority wins and replaces `Host` (§3.2.2).
//! - HTTP/2's `:authority` wins too, and a `host` header that disagrees with it is refused
//!   (RFC 9113 §8.3.1).
//! - The path is normalised ([`super::normalize`]) and the request's URI rewritten with it.

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Uri, Version};

use super::error::{ErrorKind, ProxyError};
use super::normalize::{PathError, normalize};
use crate::config::PathSettings;

/// Why a request head was refused (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Two or more `Host` header lines.
    #[error("more than one Host header")]
    DuplicateHost,
    /// An HTTP/1.1 request without `Host`, or an HTTP/2 request without any authority.
    #[error("no Host header")]
    MissingHost,
    /// `Host` is not `host[:port]`.
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
    /// HTTP/2 `host` differs from `:authority`.
    #[error("the host header disagrees with :authority")]
    HostMismatch,
    /// The path cannot be normalised.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl From<HeadError> for ProxyError {
    fn from(err: HeadError) -> Self {
        ProxyError::with_source(ErrorKind::ClientRequest, err)
    }
}

/// Checks `request`'s authority and path, rewrites both as the backend will get them, and
/// returns the authority to route by (empty for an HTTP/1.0 request without one).
pub fn prepare<B>(request: &mut Request<B>, paths: PathSettings) -> Result<HeaderValue, HeadError> {
    let host = authority(request)?;
    if request.uri().authority().is_some() {
        request.headers_mut().insert(HOST, host.clone());
    }
    let path = request.uri().path();
    if let std::borrow::Cow::Owned(normal) = normalize(path, paths)? {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        let target = match request_query(&parts.path_and_query) {
            Some(query) => format!("{normal}?{query}"),
            None => normal,
        };
        parts.path_and_query =
            Some(PathAndQuery::from_maybe_shared(target).map_err(|_| PathError::BadEscape)?);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::BadEscape)?;
    }
    Ok(host)
}

fn request_query(path: &Option<PathAndQuery>) -> Option<&str> {
    path.as_ref().and_then(PathAndQuery::query)
}

/// The one authority of the request; see the module docs.
fn authority<B>(request: &Request<B>) -> Result<HeaderValue, HeadError> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::DuplicateHost);
    }
    let host = host.map(checked_host).transpose()?;
    let target = request.uri().authority();
    if request.version() == Version::HTTP_2 {
        return match (target, host) {
            (Some(target), Some(host))
                if !target
                    .as_str()
                    .eq_ignore_ascii_case(host.to_str().unwrap_or("")) =>
            {
                Err(HeadError::HostMismatch)
            }
            (Some(target), _) => from_authority(target),
            (None, Some(host)) => Ok(host),
            (None, None) => Err(HeadError::MissingHost),
        };
    }
    match (target, host) {
        (_, None) if request.version() == Version::HTTP_11 => Err(HeadError::MissingHost),
        (Some(target), _) => from_authority(target),
        (None, Some(host)) => Ok(host),
        (None, None) => Ok(HeaderValue::from_static("")),
    }
}

fn from_authority(authority: &Authority) -> Result<HeaderValue, HeadError> {
    let value = HeaderValue::from_str(authority.as_str()).map_err(|_| HeadError::InvalidHost)?;
    checked_host(&value)
}

/// A `Host` value that is `host[:port]` (or empty, which HTTP/1.1 allows when the target
/// has no authority).
fn checked_host(value: &HeaderValue) -> Result<HeaderValue, HeadError> {
    if value.is_empty() || is_plain_host(value.as_bytes()) {
        return Ok(value.clone());
    }
    let authority = Authority::try_from(value.as_bytes()).map_err(|_| HeadError::InvalidHost)?;
    // `http` accepts userinfo and any text after the last ':'; a Host has neither.
    let text = authority.as_str();
    let port = match text.rfind(']') {
        Some(end) => text[end + 1..].strip_prefix(':'),
        None => text.rsplit_once(':').map(|(_, port)| port),
    };
    let port_ok = port.is_none_or(|p| p.is_empty() || p.parse::<u16>().is_ok());
    if text.contains('@') || !port_ok {
        return Err(HeadError::InvalidHost);
    }
    Ok(value.clone())
}

/// The usual Host, checked without parsing an authority (which copies it): a name or IPv4
/// address of letters, digits, dots and dashes, then at most a port that fits in 16 bits.
/// Anything else takes the full check.
fn is_plain_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().position(|&b| b == b':') {
        Some(colon) => (&host[..colon], &host[colon + 1..]),
        None => (host, &[][..]),
    };
    let port_ok = port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EscapedSlashes;

    const PATHS: PathSettings = PathSettings {
        escaped_slashes: EscapedSlashes::Reject,
        merge_slashes: true,
    };

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).expect("valid test request")
    }

    #[test]
    fn two_hosts_are_refused() {
        let mut r = request(Version::HTTP_11, "/", &["a.example", "b.example"]);
        assert!(matches!(
            prepare(&mut r, PATHS),
            Err(HeadError::DuplicateHost)
        ));
    }

    #[test]
    fn absolute_form_wins_and_replaces_host() {
        let mut r = request(
            Version::HTTP_11,
            "http://public.example/admin",
            &["internal.example"],
        );
        let host = prepare(&mut r, PATHS).expect("accepted");
        assert_eq!(host, "public.example");
        assert_eq!(r.headers()[HOST], "public.example");
    }

    #[test]
    fn http2_authority_must_agree_with_host() {
        let mut r = request(Version::HTTP_2, "https://a.example/", &["b.example"]);
        assert!(matches!(
            prepare(&mut r, PATHS),
            Err(HeadError::HostMismatch)
        ));
        let mut r = request(Version::HTTP_2, "https://a.example/", &["A.example"]);
        assert_eq!(prepare(&mut r, PATHS).expect("same host"), "a.example");
        assert_eq!(r.headers()[HOST], "a.example");
    }

    #[test]
    fn host_is_required_and_well_formed() {
        let mut r = request(Version::HTTP_11, "/", &[]);
        assert!(matches!(
            prepare(&mut r, PATHS),
            Err(HeadError::MissingHost)
        ));
        for bad in ["a b", "user@a.example", "a.example:port", "a/b"] {
            let mut r = request(Version::HTTP_11, "/", &[bad]);
            assert!(
                matches!(prepare(&mut r, PATHS), Err(HeadError::InvalidHost)),
                "{bad}"
            );
        }
        let mut r = request(Version::HTTP_10, "/", &[]);
        assert_eq!(prepare(&mut r, PATHS).expect("1.0 needs no Host"), "");
    }

    /// The quick check accepts only what the full one accepts, and leaves it the rest.
    #[test]
    fn the_quick_host_check_agrees_with_the_full_one() {
        let plain = [
            "a",
            "a.example",
            "a.example:80",
            "a.example:",
            "10.0.0.1:65535",
            "x-y",
        ];
        for host in plain {
            assert!(is_plain_host(host.as_bytes()), "{host}");
            let value = HeaderValue::from_static(host);
            assert!(checked_host(&value).is_ok(), "{host}");
        }
        for host in [
            "a:65536", "a:123456", "[::1]:80", "a:b", ":80", "a_b", "a b", "u@a", "a:1:2",
        ] {
            assert!(!is_plain_host(host.as_bytes()), "{host}");
        }
        for bad in ["a:65536", "a:123456", "a:b", "u@a", "a:1:2"] {
            let value = HeaderValue::from_static(bad);
            assert!(checked_host(&value).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_path_is_rewritten_normalised_with_its_query() {
        let mut r = request(Version::HTTP_11, "/x/../%61dmin?q=%2e%2e", &["a"]);
        prepare(&mut r, PATHS).expect("accepted");
        assert_eq!(r.uri().path(), "/admin");
        assert_eq!(r.uri().query(), Some("q=%2e%2e"));
        let mut r = request(Version::HTTP_11, "/a%2Fb", &["a"]);
        assert!(matches!(
            prepare(&mut r, PATHS),
            Err(HeadError::Path(PathError::EscapedSlash))
        ));
    }
}
