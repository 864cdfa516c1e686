//! `[service.l7]`: TLS, limits, and virtual hosts (routes are in `route`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use toml::Spanned;

use super::service::Usage;
use super::{Names, check, client_auth, filter, route};
use crate::config::diagnostic::Reporter;
use crate::config::document::VirtualHostItem;
use crate::config::file;
use crate::config::model::{
    Alpn, EscapedSlashes, ForwardedTrust, HostPattern, L7Service, Limits, PathSettings, Tls,
    TlsVersion, VirtualHost,
};

const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
const HEADER_BYTES: std::ops::RangeInclusive<i64> = 1024..=1_048_576;

pub(super) fn l7_service(
    raw: &Spanned<file::L7>,
    virtual_hosts: &[Option<VirtualHostItem>],
    ctx: &str,
    names: &Names,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<L7Service> {
    let l7 = raw.get_ref();
    let tls = match &l7.tls {
        Some(t) => tls(t, ctx, names, r).map(Some),
        None => Some(None),
    };
    if let (Some(t), Some(true)) = (&l7.tls, l7.h2c) {
        r.error_in(
            &t.span(),
            ctx,
            "h2c applies to plain-text listeners only; TLS listeners offer h2 through alpn",
        );
    }
    let redirect_to_https = match &l7.redirect_to_https {
        Some(port) => {
            if let Some(t) = &l7.tls {
                r.error_in(
                    &t.span(),
                    ctx,
                    "redirect_to_https applies to plain-text listeners only, not with tls",
                );
            }
            check::int_in(port, 1..=65535, "redirect_to_https", ctx, r).map(Some)
        }
        None => Some(None),
    };
    let limits = limits(&l7.limits, ctx, r);
    let forwarded = forwarded(&l7.forwarded, ctx, r);
    let filters = filter::filters(&l7.filter, ctx, &names.base_dir, r);
    let virtual_hosts = match (&l7.redirect_to_https, virtual_hosts.is_empty()) {
        (Some(port), false) => {
            r.error_in(
                &port.span(),
                ctx,
                "a service with redirect_to_https redirects every request, so it takes no virtual hosts",
            );
            None
        }
        (Some(_), true) => Some(Vec::new()),
        (None, true) => {
            r.error_in(
                &raw.span(),
                ctx,
                "an l7 service needs at least one [[service.l7.virtual_host]]",
            );
            None
        }
        (None, false) => self::virtual_hosts(virtual_hosts, &l7.filter, ctx, names, usages, r),
    };
    Some(L7Service {
        h2c: l7.tls.is_none() && l7.h2c.unwrap_or(true),
        tls: tls?,
        redirect_to_https: redirect_to_https?,
        access_log: l7.access_log.unwrap_or(true),
        limits: limits?,
        paths: PathSettings {
            escaped_slashes: l7.paths.escaped_slashes.unwrap_or(EscapedSlashes::Reject),
            merge_slashes: l7.paths.merge_slashes.unwrap_or(true),
        },
        forwarded: forwarded?,
        virtual_hosts: virtual_hosts?,
        filters: filters?,
    })
}

fn tls(raw: &Spanned<file::Tls>, ctx: &str, names: &Names, r: &mut Reporter) -> Option<Tls> {
    let t = raw.get_ref();
    if t.certificates.get_ref().is_empty() {
        r.error_in(
            &t.certificates.span(),
            ctx,
            "tls.certificates needs at least one certificate",
        );
    }
    let mut seen = HashSet::new();
    let certificates: Vec<_> = t
        .certificates
        .get_ref()
        .iter()
        .map(|name| {
            let id = names.certificate(name, ctx, r)?;
            if !seen.insert(id) {
                r.error_in(
                    &name.span(),
                    ctx,
                    format!("certificate {:?} is listed twice", name.get_ref()),
                );
            }
            Some(id)
        })
        .collect();
    let alpn = match &t.alpn {
        None => Some(vec![Alpn::H2, Alpn::Http11]),
        Some(list) => {
            let values: Vec<Alpn> = list.get_ref().iter().map(|a| *a.get_ref()).collect();
            let duplicate = values
                .iter()
                .enumerate()
                .any(|(i, a)| values[..i].contains(a));
            if values.is_empty() || duplicate {
                r.error_in(
                    &list.span(),
                    ctx,
                    "tls.alpn must list \"h2\" and/or \"http/1.1\", each once",
                );
                None
            } else {
                Some(values)
            }
        }
    };
    let client_auth = client_auth::client_auth(t, &names.base_dir, ctx, r);
    Some(Tls {
        certificates: certificates.into_iter().collect::<Option<_>>()?,
        alpn: alpn?,
        min_version: t.min_version.unwrap_or(TlsVersion::Tls12),
        client_auth: client_auth?,
    })
}

fn limits(raw: &file::Limits, ctx: &str, r: &mut Reporter) -> Option<Limits> {
    let header_bytes = check::opt_int_in(
        raw.max_request_header_bytes.as_ref(),
        65_536,
        HEADER_BYTES,
        "limits.max_request_header_bytes",
        ctx,
        r,
    );
    let body_bytes: Option<u64> = check::opt_int_in(
        raw.max_request_body_bytes.as_ref(),
        DEFAULT_MAX_BODY_BYTES,
        0..=i64::MAX,
        "limits.max_request_body_bytes",
        ctx,
        r,
    );
    let what = "limits.header_read_timeout";
    let header_read_timeout = check::duration(
        raw.header_read_timeout.as_ref(),
        Duration::from_secs(10),
        what,
        ctx,
        r,
    );
    let what = "limits.idle_timeout";
    let idle_timeout = check::duration(
        raw.idle_timeout.as_ref(),
        Duration::from_secs(60),
        what,
        ctx,
        r,
    );
    let what = "limits.max_connections";
    let max_connections = check::opt_int_in(
        raw.max_connections.as_ref(),
        10_000,
        1..=10_000_000,
        what,
        ctx,
        r,
    );
    let what = "limits.h2_max_concurrent_streams";
    let streams = check::opt_int_in(
        raw.h2_max_concurrent_streams.as_ref(),
        100,
        1..=10_000,
        what,
        ctx,
        r,
    );
    let what = "limits.h2_max_header_list_bytes";
    let header_list = check::opt_int_in(
        raw.h2_max_header_list_bytes.as_ref(),
        65_536,
        HEADER_BYTES,
        what,
        ctx,
        r,
    );
    let what = "limits.send_timeout";
    let send_timeout = check::duration(
        raw.send_timeout.as_ref(),
        Duration::from_secs(60),
        what,
        ctx,
        r,
    );
    let what = "limits.tunnel_idle_timeout";
    let tunnel_idle_timeout = check::duration(
        raw.tunnel_idle_timeout.as_ref(),
        Duration::from_secs(300),
        what,
        ctx,
        r,
    );
    let what = "limits.max_connections_per_client";
    let per_client: Option<u32> = check::opt_int_in(
        raw.max_connections_per_client.as_ref(),
        0,
        0..=10_000_000,
        what,
        ctx,
        r,
    );
    Some(Limits {
        send_timeout: send_timeout?,
        tunnel_idle_timeout: tunnel_idle_timeout?,
        max_connections_per_client: Some(per_client?).filter(|&n| n > 0),
        max_request_header_bytes: header_bytes?,
        max_request_body_bytes: Some(body_bytes?).filter(|&b| b > 0),
        header_read_timeout: header_read_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
        h2_max_concurrent_streams: streams?,
        h2_max_header_list_bytes: header_list?,
    })
}

/// `[service.l7.forwarded]`: CIDRs or a hop count, not both.
fn forwarded(raw: &file::Forwarded, ctx: &str, r: &mut Reporter) -> Option<ForwardedTrust> {
    let hops: Option<u8> = check::opt_int_in(
        raw.trusted_hops.as_ref(),
        0,
        0..=10,
        "forwarded.trusted_hops",
        ctx,
        r,
    );
    let mut ok = true;
    let mut trusted_proxies = Vec::new();
    if let Some(list) = &raw.trusted_proxies {
        for cidr in list.get_ref() {
            let text = cidr.get_ref().trim();
            // A bare address is a /32 (or /128) network.
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => {
                    r.error_in(
                        &cidr.span(),
                        ctx,
                        format!(
                            "forwarded.trusted_proxies: {:?} is not a CIDR like \"10.0.0.0/8\" or an IP address",
                            cidr.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if hops.is_some_and(|h| h > 0) {
            r.error_in(
                &list.span(),
                ctx,
                "forwarded: set trusted_proxies or trusted_hops, not both",
            );
            ok = false;
        }
    }
    let trusted_hops = hops?;
    ok.then_some(ForwardedTrust {
        trusted_proxies,
        trusted_hops,
    })
}

fn virtual_hosts(
    items: &[Option<VirtualHostItem>],
    filters: &[Spanned<file::Filter>],
    service_ctx: &str,
    names: &Names,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<Vec<VirtualHost>> {
    check::unique_names(
        items.iter().flatten().map(|v| {
            (
                &v.virtual_host.get_ref().name,
                vhost_context(service_ctx, v),
            )
        }),
        "virtual host",
        r,
    );
    // Domain -> the virtual host serving it, across the whole service.
    let mut owners: HashMap<HostPattern, String> = HashMap::new();
    let checked: Vec<_> = items
        .iter()
        .map(|item| {
            let item = item.as_ref()?;
            let ctx = vhost_context(service_ctx, item);
            let vhost = virtual_host(item, &ctx, &mut owners, names, service_ctx, usages, r);
            let chains = route_chains(item, filters, &ctx, r);
            let mut vhost = vhost?;
            for (route, chain) in vhost.routes.iter_mut().zip(chains?) {
                route.filters = chain;
            }
            Some(vhost)
        })
        .collect();
    checked.into_iter().collect()
}

/// Each route's `filters`, resolved against the service's filters.
fn route_chains(
    item: &VirtualHostItem,
    filters: &[Spanned<file::Filter>],
    ctx: &str,
    r: &mut Reporter,
) -> Option<Vec<Option<Vec<usize>>>> {
    let chains: Vec<_> = item
        .routes
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let raw = raw.as_ref()?.get_ref().filters.as_ref();
            let route_ctx = format!("{ctx}, route #{}", i + 1);
            filter::route_filters(raw, filters, &route_ctx, r)
        })
        .collect();
    chains.into_iter().collect()
}

fn vhost_context(service_ctx: &str, item: &VirtualHostItem) -> String {
    format!(
        "{service_ctx}, virtual host {:?}",
        item.virtual_host.get_ref().name.get_ref()
    )
}

fn virtual_host(
    item: &VirtualHostItem,
    ctx: &str,
    owners: &mut HashMap<HostPattern, String>,
    names: &Names,
    service_ctx: &str,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<VirtualHost> {
    let raw = item.virtual_host.get_ref();
    let name = check::name(&raw.name, "name", ctx, r);
    if raw.domains.get_ref().is_empty() {
        r.error_in(
            &raw.domains.span(),
            ctx,
            "domains needs at least one entry (use \"*\" for any host)",
        );
    }
    let domains: Vec<_> = raw
        .domains
        .get_ref()
        .iter()
        .map(|d| {
            let pattern = check::host_pattern(d, true, ctx, r)?;
            let owner = raw.name.get_ref();
            if let Some(other) = owners.insert(pattern.clone(), owner.clone()) {
                r.error_in(
                    &d.span(),
                    ctx,
                    format!(
                        "domain {:?} is already served by virtual host {other:?}",
                        d.get_ref()
                    ),
                );
            }
            Some(pattern)
        })
        .collect();
    if item.routes.is_empty() {
        r.error_in(
            &item.virtual_host.span(),
            ctx,
            "a virtual host needs at least one [[...virtual_host.route]]",
        );
    }
    let routes: Vec<_> = item
        .routes
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let route_ctx = format!("{ctx}, route #{}", i + 1);
            route::route(raw.as_ref()?, &route_ctx, names, service_ctx, usages, r)
        })
        .collect();
    Some(VirtualHost {
        name: name?,
        domains: domains.into_iter().collect::<Option<_>>()?,
        routes: routes.into_iter().collect::<Option<_>>()?,
    })
}
