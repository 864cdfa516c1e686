//! Rewriting requests and responses as they cross the proxy: hop-by-hop headers out,
//! X-Forwarded-* in, the upstream URI, prefix rewrites, route header edits, redirects.
//! Pure functions over `http` types, unit-tested here.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::{HeaderMap, Uri, Version};

use super::route::split_host_port;
use crate::config::{Redirect, Scheme as RedirectScheme};

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// See [`X_FORWARDED_FOR`].
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
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
    // One pass over the names decides whether there is anything to do: most requests carry
    // no hop-by-hop header at all, and then no removal (a hash lookup each) is paid.
    let mut hop_by_hop = false;
    let mut other_proxy: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            hop_by_hop = true;
        } else if name.as_str().starts_with("proxy-") {
            other_proxy.push(name.clone());
        }
    }
    if hop_by_hop {
        remove_hop_by_hop(headers, upgrade);
    }
    for name in &other_proxy {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The fixed hop-by-hop headers (`Proxy-*` beyond the two standard ones aside).
fn is_hop_by_hop(name: &HeaderName) -> bool {
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
    .contains(&name)
}

fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Headers named by Connection go too (except the ones kept for an upgrade).
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // The usual tokens name no header worth a lookup (keep-alive goes anyway).
            let common = ["close", "keep-alive"]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t));
            if token.is_empty() || common || (upgrade && token.eq_ignore_ascii_case("upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in &named {
        if !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if !upgrade {
        headers.remove(UPGRADE);
    }
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto` and, when the
/// request named a host, `X-Forwarded-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    https: bool,
    host: Option<HeaderValue>,
) {
    let joined = {
        let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
        if prior.peek().is_none() {
            None
        } else {
            let mut out = BytesMut::with_capacity(64);
            for value in prior {
                out.put_slice(value.as_bytes());
                out.put_slice(b", ");
            }
            out.put_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(out.freeze()).ok()
        }
    };
    headers.insert(
        X_FORWARDED_FOR.clone(),
        joined.unwrap_or_else(|| client_ip.clone()),
    );
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
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
