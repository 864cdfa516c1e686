//! Rewriting requests and responses as they cross the proxy: hop-by-hop headers out,
//! X-Forwarded-* in (replaced unless the peer is trusted), cookies joined, the upstream URI, prefix rewrites, route header edits, redirects.
//! Pure functions over `http` types, unit-tested here.

use bytes::{BufMut, Bytes, BytesMut};
use std::net::IpAddr;

use http::header::{
    CONNECTION, COOKIE, FORWARDED, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::{HeaderMap, Uri, Version};

use super::route::split_host_port;
use crate::config::{ForwardedTrust, Redirect, Scheme as RedirectScheme};

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The client's address as the proxy determined it.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether the request asks for an HTTP/1.1 protocol upgrade (WebSocket and the like).
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && connection_has_token(headers, "upgrade")
}

/// Whether a `Connection` header lists `token`.
pub fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE` (except `TE: trailers`), `Trailer`, `Transfer-Encoding` and `Upgrade`.
/// With `upgrade`, `Upgrade` stays and `Connection: upgrade` is set again.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names finds which fixed hop-by-hop headers are there: most requests
    // carry none and most responses only `Connection`, and each removal is a hash lookup.
    let mut present = 0u8;
    let mut other_proxy: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if let Some(bit) = hop_by_hop_bit(name) {
            present |= bit;
        } else if name.as_str().starts_with("proxy-") {
            other_proxy.push(name.clone());
        }
    }
    if present != 0 {
        remove_hop_by_hop(headers, upgrade, present);
    }
    for name in &other_proxy {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The fixed hop-by-hop headers (`Proxy-*` beyond the two standard ones aside); a header's
/// bit in `strip_hop_by_hop`'s set is `1 << its index`.
fn hop_by_hop() -> [&'static HeaderName; 8] {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ]
}

fn hop_by_hop_bit(name: &HeaderName) -> Option<u8> {
    hop_by_hop()
        .iter()
        .position(|h| *h == name)
        .map(|index| 1 << index)
}

/// Removes the fixed hop-by-hop headers in `present` (bits as in [`hop_by_hop`]) and the
/// headers `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, present: u8) {
    let has = |name: &HeaderName| hop_by_hop_bit(name).is_some_and(|bit| present & bit != 0);
    // Headers named by Connection go too (except the ones kept for an upgrade).
    let mut named: Vec<HeaderName> = Vec::new();
    if has(&CONNECTION) {
        for value in headers.get_all(CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                // The usual tokens name no header worth a lookup (keep-alive goes anyway).
                let common = ["close", "keep-alive"]
                    .iter()
                    .any(|t| token.eq_ignore_ascii_case(t));
                if token.is_empty() || common || (upgrade && token.eq_ignore_ascii_case("upgrade"))
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    for name in &named {
        if !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    let te_trailers = has(&TE)
        && headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (index, name) in hop_by_hop().into_iter().enumerate() {
        let kept = upgrade && *name == UPGRADE;
        if present & (1 << index) != 0 && !kept {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// What the forwarding headers say about a request's client.
pub struct ForwardedFor<'a> {
    /// The peer's address, ready as a header value.
    pub client_ip: &'a HeaderValue,
    /// The peer (the client, or a proxy in front of Sluice).
    pub peer: IpAddr,
    /// Whether the client connection is TLS.
    pub https: bool,
    /// The authority the request was routed by.
    pub host: &'a HeaderValue,
    /// Which peers' headers are extended.
    pub trust: &'a ForwardedTrust,
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP` and (when the client sent one)
/// `Forwarded`. From an untrusted peer the client's own values are replaced: a client cannot
/// make a backend believe it came from elsewhere. From a trusted proxy `X-Forwarded-For` and
/// `Forwarded` are extended, its `-Proto` and `-Host` kept, and `X-Real-IP` is the client
/// its chain names.
pub fn set_forwarded(headers: &mut HeaderMap, f: &ForwardedFor<'_>) {
    let trusted = f.trust.trusts(f.peer) && headers.contains_key(&X_FORWARDED_FOR);
    let real_ip = if trusted {
        let mut chain = BytesMut::with_capacity(64);
        for value in headers.get_all(&X_FORWARDED_FOR) {
            chain.put_slice(value.as_bytes());
            chain.put_slice(b", ");
        }
        chain.put_slice(f.client_ip.as_bytes());
        let chain = chain.freeze();
        let real = chain_client(&chain, f.trust)
            .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok());
        if let Ok(joined) = HeaderValue::from_maybe_shared(chain) {
            headers.insert(X_FORWARDED_FOR.clone(), joined);
        }
        real.unwrap_or_else(|| f.client_ip.clone())
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), f.client_ip.clone());
        f.client_ip.clone()
    };
    let proto = if f.https { "https" } else { "http" };
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        if f.host.is_empty() {
            headers.remove(&X_FORWARDED_HOST);
        } else {
            headers.insert(X_FORWARDED_HOST.clone(), f.host.clone());
        }
    }
    headers.insert(X_REAL_IP.clone(), real_ip);
    if headers.contains_key(FORWARDED) {
        let mut element = format!("for={};proto={proto}", forwarded_node(f.peer));
        if let Ok(host) = f.host.to_str()
            && !host.is_empty()
        {
            element.push_str(&format!(";host=\"{host}\""));
        }
        let value = if f.trust.trusts(f.peer) {
            let mut all: Vec<&str> = headers
                .get_all(FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            all.push(&element);
            all.join(", ")
        } else {
            element
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(FORWARDED, value);
        }
    }
}

/// RFC 7239 node: IPv6 in brackets and quotes.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The client an `X-Forwarded-For` chain (peer last) names: with `trusted_hops = N`, the
/// entry N from the right; with trusted CIDRs, the rightmost entry outside them.
fn chain_client(chain: &[u8], trust: &ForwardedTrust) -> Option<IpAddr> {
    let text = std::str::from_utf8(chain).ok()?;
    let entries: Vec<&str> = text.split(',').map(str::trim).collect();
    let parse = |s: &str| s.parse::<IpAddr>().ok();
    if trust.trusted_hops > 0 {
        let index = entries
            .len()
            .saturating_sub(1 + usize::from(trust.trusted_hops));
        return entries.get(index).and_then(|e| parse(e));
    }
    let mut last = None;
    for entry in entries.iter().rev() {
        let ip = parse(entry)?;
        last = Some(ip);
        if !trust.trusted_proxies.iter().any(|net| net.contains(&ip)) {
            return Some(ip);
        }
    }
    last
}

/// HTTP/2 may split `cookie` into several fields; an HTTP/1.1 backend must get one, joined
/// with `; ` (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = BytesMut::with_capacity(128);
    for (i, value) in headers.get_all(COOKIE).iter().enumerate() {
        if i > 0 {
            joined.put_slice(b"; ");
        }
        joined.put_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        headers.insert(COOKIE, value);
    }
}

/// Whether every protocol an `Upgrade` header asks for is one the route tunnels (names
/// compared without case, versions ignored: `websocket/13` is `websocket`).
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut asked = false;
    for value in headers.get_all(UPGRADE) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for token in value.split(',') {
            let name = token.split('/').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            asked = true;
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return false;
            }
        }
    }
    asked
}

/// Applies a route's header edits: removals first, then additions (which replace).
pub fn edit_headers(
    headers: &mut HeaderMap,
    remove: &[HeaderName],
    add: &[(HeaderName, HeaderValue)],
) {
    for name in remove {
        headers.remove(name);
    }
    for (name, value) in add {
        headers.insert(name.clone(), value.clone());
    }
}

/// The path and query to send upstream: the request's, with `rewrite = (prefix, to)`
/// replacing the matched prefix. `None` when the result is not a valid request target.
pub fn upstream_path(
    original: &PathAndQuery,
    rewrite: Option<(&str, &str)>,
) -> Option<PathAndQuery> {
    let Some((prefix, to)) = rewrite else {
        return Some(original.clone());
    };
    let rest = original.path().strip_prefix(prefix)?;
    let mut out =
        String::with_capacity(to.len() + rest.len() + 1 + original.query().map_or(0, str::len));
    out.push_str(to);
    // "/api/" -> "/" applied to "/api/x" gives "/x"; never let the result lose its slash.
    if out.ends_with('/') && rest.starts_with('/') {
        out.pop();
    }
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(query) = original.query() {
        out.push('?');
        out.push_str(query);
    }
    PathAndQuery::from_maybe_shared(Bytes::from(out)).ok()
}

/// `http://backend/path?query`: the client pool picks the connection by this authority.
pub fn upstream_uri(authority: &Authority, path: PathAndQuery) -> Option<Uri> {
    let mut parts = Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).ok()
}

/// The `Location` of a redirect: parts the redirect leaves unset keep the request's values,
/// except that a changed scheme drops the request's port (the new scheme's default is meant).
pub fn redirect_location(
    redirect: &Redirect,
    https: bool,
    authority: &str,
    path: &PathAndQuery,
) -> String {
    let request_scheme = if https { "https" } else { "http" };
    let scheme = match redirect.scheme {
        Some(RedirectScheme::Https) => "https",
        Some(RedirectScheme::Http) => "http",
        None => request_scheme,
    };
    let (request_host, request_port) = split_host_port(authority);
    let host = redirect.host.as_deref().unwrap_or(request_host);
    let port = redirect.port.or(if scheme == request_scheme {
        request_port
    } else {
        None
    });
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port.filter(|p| *p != default_port) {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(redirect.path.as_deref().unwrap_or(path.path()));
    if let Some(query) = path.query() {
        location.push('?');
        location.push_str(query);
    }
    location
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
