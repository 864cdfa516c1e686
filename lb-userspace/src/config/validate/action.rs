//! A route's action: `forward`, `redirect` or `direct_response`, exactly one.

use toml::Spanned;

use super::service::{Usage, UsedBy};
use super::{Names, check};
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{Redirect, RouteAction, WeightedPool};

const REDIRECT_STATUSES: [i64; 5] = [301, 302, 303, 307, 308];

pub(super) fn action(
    raw: &Spanned<file::Route>,
    ctx: &str,
    names: &Names,
    service_ctx: &str,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<RouteAction> {
    let route = raw.get_ref();
    match (&route.forward, &route.redirect, &route.direct_response) {
        (Some(forward), None, None) => forward_to(forward, ctx, names, service_ctx, usages, r),
        (None, Some(redirect), None) => redirect_to(redirect, ctx, r),
        (None, None, Some(direct)) => {
            let d = direct.get_ref();
            let status = check::int_in(&d.status, 200..=599, "direct_response.status", ctx, r)?;
            Some(RouteAction::DirectResponse {
                status,
                body: d.body.clone(),
            })
        }
        (forward, redirect, direct) => {
            let spans = [
                forward.as_ref().map(Spanned::span),
                redirect.as_ref().map(Spanned::span),
                direct.as_ref().map(Spanned::span),
            ];
            let span = spans.into_iter().flatten().nth(1).unwrap_or(raw.span());
            r.error_in(
                &span,
                ctx,
                "a route needs exactly one of forward, redirect and direct_response",
            );
            None
        }
    }
}

fn forward_to(
    raw: &Spanned<file::Forward>,
    ctx: &str,
    names: &Names,
    service_ctx: &str,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<RouteAction> {
    let f = raw.get_ref();
    let targets: Vec<(&Spanned<String>, Option<u16>)> = match (&f.pool, &f.pools) {
        (Some(pool), None) => vec![(pool, Some(1))],
        (None, Some(pools)) if !pools.get_ref().is_empty() => pools
            .get_ref()
            .iter()
            .map(|p| {
                (
                    &p.pool,
                    check::int_in(&p.weight, 1..=10_000, "weight", ctx, r),
                )
            })
            .collect(),
        (None, Some(pools)) => {
            r.error_in(&pools.span(), ctx, "forward.pools needs at least one pool");
            return None;
        }
        _ => {
            r.error_in(
                &raw.span(),
                ctx,
                "forward needs exactly one of pool and pools",
            );
            return None;
        }
    };
    let mut split = Vec::new();
    for (i, (name, weight)) in targets.iter().enumerate() {
        if targets[..i]
            .iter()
            .any(|(other, _)| other.get_ref() == name.get_ref())
        {
            r.error_in(
                &name.span(),
                ctx,
                format!("pool {:?} is listed twice", name.get_ref()),
            );
        }
        let pool = names.pool(name, ctx, r);
        if let Some(pool) = pool {
            usages.push(Usage {
                pool,
                service: service_ctx.to_owned(),
                how: UsedBy::L7 {
                    reference: name.span(),
                },
            });
        }
        split.push(
            pool.zip(*weight)
                .map(|(pool, weight)| WeightedPool { pool, weight }),
        );
    }
    split
        .into_iter()
        .collect::<Option<_>>()
        .map(RouteAction::Forward)
}

fn redirect_to(raw: &Spanned<file::Redirect>, ctx: &str, r: &mut Reporter) -> Option<RouteAction> {
    let d = raw.get_ref();
    if d.scheme.is_none() && d.host.is_none() && d.port.is_none() && d.path.is_none() {
        r.error_in(&raw.span(), ctx, "redirect needs at least one of scheme, host, port and path (it would redirect to itself)");
    }
    let host = d.host.as_ref().map(|h| {
        let ok = check::is_hostname(h.get_ref());
        if !ok {
            r.error_in(
                &h.span(),
                ctx,
                format!("redirect.host {:?} is not a host name", h.get_ref()),
            );
        }
        ok.then(|| h.get_ref().to_ascii_lowercase())
    });
    let port = d
        .port
        .as_ref()
        .map(|p| check::int_in(p, 1..=65535, "redirect.port", ctx, r));
    let path = d
        .path
        .as_ref()
        .map(|p| check::url_path(p, "redirect.path", ctx, r));
    let status = match &d.status {
        None => Some(302),
        Some(s) if REDIRECT_STATUSES.contains(s.get_ref()) => u16::try_from(*s.get_ref()).ok(),
        Some(s) => {
            r.error_in(
                &s.span(),
                ctx,
                format!(
                    "redirect.status {} is not one of 301, 302, 303, 307, 308",
                    s.get_ref()
                ),
            );
            None
        }
    };
    Some(RouteAction::Redirect(Redirect {
        scheme: d.scheme,
        host: host.map_or(Some(None), |h| h.map(Some))?,
        port: port.map_or(Some(None), |p| p.map(Some))?,
        path: path.map_or(Some(None), |p| p.map(Some))?,
        status: status?,
    }))
}
