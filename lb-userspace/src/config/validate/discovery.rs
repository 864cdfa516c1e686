//! `[pool.discovery]`: a DNS name or an endpoints file instead of `[[pool.backend]]`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::document::PoolItem;
use crate::config::file;
use crate::config::model::{Discovery, DnsDiscovery, DnsRecord};

const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
const DNS_PORT: u16 = 53;

/// The pool's discovery source: `Some(None)` when it has none, `None` after an error.
pub(super) fn discovery(
    raw: Option<&Spanned<file::Discovery>>,
    item: &PoolItem,
    base_dir: &Path,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<Discovery>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    if let Some(Some(backend)) = item.backends.first() {
        r.error_in(
            &backend.span(),
            ctx,
            "a pool with [pool.discovery] takes its backends from it; remove the [[pool.backend]] entries",
        );
        return None;
    }
    let inner = raw.get_ref();
    match (&inner.dns, &inner.endpoints_file) {
        (Some(dns_raw), None) => dns(dns_raw, ctx, r).map(|d| Some(Discovery::Dns(d))),
        (None, Some(path)) if path.get_ref().trim().is_empty() => {
            r.error_in(&path.span(), ctx, "discovery.endpoints_file is empty");
            None
        }
        (None, Some(path)) => Some(Some(Discovery::EndpointsFile(
            base_dir.join(path.get_ref()),
        ))),
        _ => {
            r.error_in(
                &raw.span(),
                ctx,
                "[pool.discovery] needs exactly one of `dns` and `endpoints_file`",
            );
            None
        }
    }
}

fn dns(raw: &Spanned<file::Dns>, ctx: &str, r: &mut Reporter) -> Option<DnsDiscovery> {
    let d = raw.get_ref();
    let name = d.name.get_ref().trim();
    let name = if !is_dns_name(name.trim_end_matches('.')) {
        r.error_in(
            &d.name.span(),
            ctx,
            format!(
                "discovery.dns.name {:?} is not a DNS name",
                d.name.get_ref()
            ),
        );
        None
    } else {
        Some(name.to_owned())
    };
    let record = record(d, ctx, r);
    let min_ttl = check::duration(
        d.min_ttl.as_ref(),
        DEFAULT_MIN_TTL,
        "discovery.dns.min_ttl",
        ctx,
        r,
    );
    let max_ttl = check::duration(
        d.max_ttl.as_ref(),
        DEFAULT_MAX_TTL,
        "discovery.dns.max_ttl",
        ctx,
        r,
    );
    if let (Some(min), Some(max)) = (min_ttl, max_ttl)
        && max < min
    {
        let span = d
            .max_ttl
            .as_ref()
            .or(d.min_ttl.as_ref())
            .map_or(raw.span(), Spanned::span);
        r.error_in(
            &span,
            ctx,
            format!(
                "discovery.dns.max_ttl ({}) is shorter than min_ttl ({})",
                humantime::format_duration(max),
                humantime::format_duration(min)
            ),
        );
        return None;
    }
    let servers: Vec<Option<SocketAddr>> = d.servers.iter().map(|s| server(s, ctx, r)).collect();
    Some(DnsDiscovery {
        name: name?,
        record: record?,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
        servers: servers.into_iter().collect::<Option<_>>()?,
    })
}

fn record(d: &file::Dns, ctx: &str, r: &mut Reporter) -> Option<DnsRecord> {
    let kind = d
        .record
        .as_ref()
        .map_or("address", |k| k.get_ref().as_str());
    match kind {
        "address" => {
            let Some(port) = &d.port else {
                let span = d.record.as_ref().map_or(d.name.span(), Spanned::span);
                r.error_in(
                    &span,
                    ctx,
                    "discovery.dns.port is required with record \"address\" (A/AAAA records carry no port)",
                );
                return None;
            };
            let port = check::int_in(port, 1..=65535, "discovery.dns.port", ctx, r);
            let weight = check::opt_int_in(
                d.weight.as_ref(),
                1,
                1..=10_000,
                "discovery.dns.weight",
                ctx,
                r,
            );
            Some(DnsRecord::Address {
                port: port?,
                weight: weight?,
            })
        }
        "srv" => {
            for (field, span) in [("port", d.port.as_ref()), ("weight", d.weight.as_ref())] {
                if let Some(span) = span {
                    r.error_in(
                        &span.span(),
                        ctx,
                        format!("discovery.dns.{field} does not apply to record \"srv\" (SRV records carry ports and weights)"),
                    );
                    return None;
                }
            }
            Some(DnsRecord::Srv)
        }
        other => {
            let span = d.record.as_ref().map_or(d.name.span(), Spanned::span);
            r.error_in(
                &span,
                ctx,
                format!("discovery.dns.record {other:?} is not \"address\" or \"srv\""),
            );
            None
        }
    }
}

fn server(value: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<SocketAddr> {
    let text = value.get_ref();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    r.error_in(
        &value.span(),
        ctx,
        format!("discovery.dns.servers: {text:?} is not an IP address or ip:port"),
    );
    None
}

/// A DNS name as SRV names are written: host name labels, plus `_` (`_http._tcp.example`).
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
