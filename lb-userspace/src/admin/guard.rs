//! Who may change the agent when the admin API has no token: only a client that addressed
//! the listener by its own address. A web page on another origin can make a browser on the
//! same host send `POST`s to 127.0.0.1 (and DNS rebinding can make that origin look local),
//! but it cannot make the browser send a foreign page's request with `Host: 127.0.0.1:9100`
//! and no `Origin`, nor with `Origin: http://127.0.0.1:9100`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{HOST, ORIGIN};

/// Why a mutating request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForeignRequest {
    #[error("the request has no Host header")]
    NoHost,
    #[error("Host {0:?} is not this listener's address")]
    Host(String),
    #[error("Origin {0:?} is not this listener's address")]
    Origin(String),
}

/// Checks `Host` and, when present, `Origin` against `local`, the address the client
/// connected to. `localhost:PORT` is accepted for a loopback address.
pub fn check_same_origin(headers: &HeaderMap, local: SocketAddr) -> Result<(), ForeignRequest> {
    let host = headers
        .get(HOST)
        .ok_or(ForeignRequest::NoHost)?
        .to_str()
        .map_err(|_| ForeignRequest::Host("<not text>".into()))?;
    if !is_local_authority(host, local) {
        return Err(ForeignRequest::Host(host.to_string()));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin
            .to_str()
            .map_err(|_| ForeignRequest::Origin("<not text>".into()))?;
        let authority = origin.strip_prefix("http://").unwrap_or("");
        if authority.contains('/') || !is_local_authority(authority, local) {
            return Err(ForeignRequest::Origin(origin.to_string()));
        }
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`) names `local`.
fn is_local_authority(authority: &str, local: SocketAddr) -> bool {
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        // `[v6]` alone has a ':' inside the brackets but no port after them.
        Some((host, port)) if !port.ends_with(']') => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => return false,
        },
        _ => (authority.as_str(), 80),
    };
    if port != local.port() {
        return false;
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match host.parse::<IpAddr>() {
        Ok(ip) => ip == local.ip(),
        Err(_) => host == "localhost" && local.ip().is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(host) = host {
            map.insert(
                HOST,
                HeaderValue::from_str(host).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        if let Some(origin) = origin {
            map.insert(
                ORIGIN,
                HeaderValue::from_str(origin).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        map
    }

    const V4: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9100);

    #[test]
    fn the_listeners_own_address_passes() {
        for (host, origin) in [
            ("127.0.0.1:9100", None),
            ("127.0.0.1:9100", Some("http://127.0.0.1:9100")),
            ("localhost:9100", Some("http://localhost:9100")),
            ("LOCALHOST:9100", None),
        ] {
            assert_eq!(check_same_origin(&headers(Some(host), origin), V4), Ok(()));
        }
        let v6 = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 9100);
        let ok = headers(Some("[::1]:9100"), Some("http://[::1]:9100"));
        assert_eq!(check_same_origin(&ok, v6), Ok(()));
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        let refused = [
            (None, None),
            (Some("evil.example:9100"), None),
            (Some("evil.example"), None),
            (Some("127.0.0.1:9101"), None),
            (Some("127.0.0.2:9100"), None),
            (Some("127.0.0.1"), None),
            (Some("127.0.0.1:9100"), Some("http://evil.example")),
            (Some("127.0.0.1:9100"), Some("http://evil.example:9100")),
            (Some("127.0.0.1:9100"), Some("null")),
            (Some("127.0.0.1:9100"), Some("https://127.0.0.1:9100")),
            (Some("127.0.0.1:9100"), Some("http://127.0.0.1:9100/x")),
            (Some("127.0.0.1:9100"), Some("http://127.0.0.1:9100@evil")),
        ];
        for (host, origin) in refused {
            assert!(
                check_same_origin(&headers(host, origin), V4).is_err(),
                "{host:?} {origin:?} passed"
            );
        }
        // `localhost` names only a loopback listener.
        let public = SocketAddr::from(([192, 0, 2, 1], 9100));
        assert!(check_same_origin(&headers(Some("localhost:9100"), None), public).is_err());
    }
}
