//! `[[service.l7.filter]]` and a route's `filters` list: names unique, exactly one filter
//! type per entry, every setting in range; a route names only filters its service defines.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{auth, check};
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{
    ClientIds, CorsSpec, FilterKind, FilterSpec, HeaderEdits, RateKey, RateKeyName, RateLimitSpec,
    RequestIdSpec, SharedLimitSpec,
};

const FILTER_TYPES: &str =
    "`headers`, `request_id`, `rate_limit`, `api_key`, `jwt`, `authz`, `cors` or `ext_authz`";
const DEFAULT_MAX_KEYS: u32 = 100_000;
const RATE: std::ops::RangeInclusive<i64> = 1..=1_000_000_000;

/// The service's filters, in config order.
pub(super) fn filters(
    raw: &[Spanned<file::Filter>],
    service_ctx: &str,
    base_dir: &Path,
    r: &mut Reporter,
) -> Option<Vec<FilterSpec>> {
    check::unique_names(
        raw.iter()
            .map(|f| (&f.get_ref().name, filter_context(service_ctx, f))),
        "filter",
        r,
    );
    let checked: Vec<_> = raw
        .iter()
        .map(|f| filter(f, &filter_context(service_ctx, f), base_dir, r))
        .collect();
    checked.into_iter().collect()
}

fn filter_context(service_ctx: &str, f: &Spanned<file::Filter>) -> String {
    format!("{service_ctx}, filter {:?}", f.get_ref().name.get_ref())
}

fn filter(
    raw: &Spanned<file::Filter>,
    ctx: &str,
    base_dir: &Path,
    r: &mut Reporter,
) -> Option<FilterSpec> {
    let f = raw.get_ref();
    let name = check::name(&f.name, "filter name", ctx, r);
    let given = usize::from(f.headers.is_some())
        + usize::from(f.request_id.is_some())
        + usize::from(f.rate_limit.is_some())
        + usize::from(f.api_key.is_some())
        + usize::from(f.jwt.is_some())
        + usize::from(f.authz.is_some())
        + usize::from(f.cors.is_some())
        + usize::from(f.ext_authz.is_some());
    if given != 1 {
        r.error_in(
            &raw.span(),
            ctx,
            format!("a filter needs exactly one of {FILTER_TYPES}, found {given}"),
        );
        return None;
    }
    let kind = if let Some(h) = &f.headers {
        headers(h.get_ref(), ctx, r).map(FilterKind::Headers)
    } else if let Some(id) = &f.request_id {
        request_id(id.get_ref(), ctx, r).map(FilterKind::RequestId)
    } else if let Some(limit) = &f.rate_limit {
        rate_limit(limit, ctx, r).map(FilterKind::RateLimit)
    } else if let Some(keys) = &f.api_key {
        auth::api_key(keys, base_dir, ctx, r).map(FilterKind::ApiKey)
    } else if let Some(jwt) = &f.jwt {
        auth::jwt(jwt, base_dir, ctx, r).map(FilterKind::Jwt)
    } else if let Some(authz) = &f.authz {
        auth::authz(authz, ctx, r).map(FilterKind::Authz)
    } else if let Some(c) = &f.cors {
        cors(c, ctx, r).map(FilterKind::Cors)
    } else if let Some(ext) = &f.ext_authz {
        auth::ext_authz(ext, base_dir, ctx, r).map(FilterKind::ExtAuthz)
    } else {
        None
    };
    Some(FilterSpec {
        name: name?,
        enabled: f.enabled.unwrap_or(true),
        kind: kind?,
    })
}

/// A `headers` filter's edits, checked as a route's `*_headers_*` fields are.
fn headers(raw: &file::Headers, ctx: &str, r: &mut Reporter) -> Option<HeaderEdits> {
    let request_add = headers_add(&raw.request_add, ctx, r);
    let request_remove = headers_remove(&raw.request_remove, ctx, r);
    let response_add = headers_add(&raw.response_add, ctx, r);
    let response_remove = headers_remove(&raw.response_remove, ctx, r);
    Some(HeaderEdits {
        request_add: request_add?,
        request_remove: request_remove?,
        response_add: response_add?,
        response_remove: response_remove?,
    })
}

fn headers_add(
    raw: &BTreeMap<Spanned<String>, Spanned<String>>,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Vec<(String, String)>> {
    let checked: Vec<_> = raw
        .iter()
        .map(|(name, value)| {
            let name = check::header_name(name, ctx, r);
            let value = check::header_value(value, ctx, r);
            name.zip(value)
        })
        .collect();
    checked.into_iter().collect()
}

fn headers_remove(raw: &[Spanned<String>], ctx: &str, r: &mut Reporter) -> Option<Vec<String>> {
    let checked: Vec<_> = raw
        .iter()
        .map(|name| check::header_name(name, ctx, r))
        .collect();
    checked.into_iter().collect()
}

fn request_id(raw: &file::RequestId, ctx: &str, r: &mut Reporter) -> Option<RequestIdSpec> {
    let header = match &raw.header {
        Some(h) => check::header_name(h, ctx, r)?,
        None => "x-request-id".to_owned(),
    };
    Some(RequestIdSpec {
        header,
        client: raw.client.unwrap_or(ClientIds::Keep),
        traceparent: raw.traceparent.unwrap_or(true),
        echo: raw.echo.unwrap_or(true),
    })
}

fn rate_limit(
    raw: &Spanned<file::RateLimit>,
    ctx: &str,
    r: &mut Reporter,
) -> Option<RateLimitSpec> {
    let l = raw.get_ref();
    let rate: Option<u32> = check::int_in(&l.rate, RATE, "rate_limit.rate", ctx, r);
    let per = check::duration(
        l.per.as_ref(),
        Duration::from_secs(1),
        "rate_limit.per",
        ctx,
        r,
    );
    let burst: Option<Option<u32>> = match &l.burst {
        Some(b) => check::int_in(b, RATE, "rate_limit.burst", ctx, r).map(Some),
        None => Some(None),
    };
    let max_keys = check::opt_int_in(
        l.max_keys.as_ref(),
        DEFAULT_MAX_KEYS,
        1..=10_000_000,
        "rate_limit.max_keys",
        ctx,
        r,
    );
    let key_name = l.key.as_ref().map_or(RateKeyName::Client, |k| *k.get_ref());
    let key = match (key_name, &l.header) {
        (RateKeyName::Header, Some(h)) => check::header_name(h, ctx, r).map(RateKey::Header),
        (RateKeyName::Header, None) => {
            let span = l.key.as_ref().map_or(raw.span(), Spanned::span);
            r.error_in(
                &span,
                ctx,
                "rate_limit.key = \"header\" needs rate_limit.header, the header to key on",
            );
            None
        }
        (_, Some(h)) => {
            r.error_in(
                &h.span(),
                ctx,
                "rate_limit.header applies only with key = \"header\"",
            );
            None
        }
        (RateKeyName::Client, None) => Some(RateKey::Client),
        (RateKeyName::Principal, None) => Some(RateKey::Principal),
        (RateKeyName::Global, None) => Some(RateKey::Global),
    };
    let shared = shared_limit(l, ctx, r);
    let rate = rate?;
    let per = per?;
    // One token every per/rate: governor counts in nanoseconds, so it must be at least one.
    if per.as_nanos() < u128::from(rate) {
        r.error_in(
            &l.rate.span(),
            ctx,
            "rate_limit.rate is more than one request per nanosecond of rate_limit.per",
        );
        return None;
    }
    Some(RateLimitSpec {
        rate,
        per,
        burst: burst?.unwrap_or(rate),
        key: key?,
        max_keys: max_keys?,
        shared: shared?,
    })
}

/// `redis` and `redis_timeout`: a URL the redis client accepts, a timeout only with it.
fn shared_limit(
    l: &file::RateLimit,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<SharedLimitSpec>> {
    let timeout = check::duration(
        l.redis_timeout.as_ref(),
        Duration::from_millis(50),
        "rate_limit.redis_timeout",
        ctx,
        r,
    );
    let Some(url) = &l.redis else {
        if let Some(t) = &l.redis_timeout {
            r.error_in(
                &t.span(),
                ctx,
                "rate_limit.redis_timeout applies only with rate_limit.redis",
            );
            return None;
        }
        return Some(None);
    };
    let text = url.get_ref();
    let accepted = text.starts_with("redis://") && redis::Client::open(text.as_str()).is_ok();
    if !accepted {
        r.error_in(
            &url.span(),
            ctx,
            format!("rate_limit.redis {text:?} is not a URL like \"redis://127.0.0.1:6379\""),
        );
        return None;
    }
    Some(Some(SharedLimitSpec {
        url: text.clone(),
        timeout: timeout?,
    }))
}

/// A `cors` filter: origins as browsers send them, or `*` alone (never with credentials).
fn cors(raw: &Spanned<file::Cors>, ctx: &str, r: &mut Reporter) -> Option<CorsSpec> {
    let c = raw.get_ref();
    let credentials = c.allow_credentials.unwrap_or(false);
    let wildcard = c.allow_origins.iter().any(|o| o.get_ref() == "*");
    let allow_origins = if wildcard {
        if c.allow_origins.len() > 1 {
            r.error_in(
                &raw.span(),
                ctx,
                "cors.allow_origins: \"*\" stands alone, not beside other origins",
            );
            return None;
        }
        if credentials {
            r.error_in(
                &raw.span(),
                ctx,
                "cors: allow_origins = [\"*\"] cannot go with allow_credentials = true (the Fetch standard refuses it); list the origins",
            );
            return None;
        }
        Some(None)
    } else if c.allow_origins.is_empty() {
        r.error_in(&raw.span(), ctx, "cors.allow_origins is empty");
        None
    } else {
        let checked: Vec<_> = c
            .allow_origins
            .iter()
            .map(|o| {
                let text = o.get_ref();
                let serialized = text.parse::<http::Uri>().ok().and_then(|u| {
                    let scheme = u.scheme_str()?;
                    let authority = u.authority()?;
                    matches!(scheme, "http" | "https")
                        .then(|| format!("{scheme}://{authority}"))
                });
                match serialized {
                    Some(origin) if origin == *text && origin == text.to_ascii_lowercase() => {
                        Some(origin)
                    }
                    _ => {
                        r.error_in(
                            &o.span(),
                            ctx,
                            format!(
                                "cors.allow_origins: {text:?} is not an origin as browsers send it, like \"https://app.example.com\" (lower case, no path)"
                            ),
                        );
                        None
                    }
                }
            })
            .collect();
        checked.into_iter().collect::<Option<Vec<_>>>().map(Some)
    };
    let allow_methods: Option<Vec<String>> = match &c.allow_methods {
        None => Some(vec!["GET".into(), "HEAD".into(), "POST".into()]),
        Some(list) => list
            .iter()
            .map(|m| check::token(m, "cors.allow_methods", ctx, r))
            .collect::<Vec<_>>()
            .into_iter()
            .collect(),
    };
    let allow_headers = headers_remove(&c.allow_headers, ctx, r);
    let expose_headers = headers_remove(&c.expose_headers, ctx, r);
    let max_age = match &c.max_age {
        Some(age) => check::duration(Some(age), Duration::ZERO, "cors.max_age", ctx, r).map(Some),
        None => Some(None),
    };
    Some(CorsSpec {
        allow_origins: allow_origins?,
        allow_methods: allow_methods?,
        allow_headers: allow_headers?,
        expose_headers: expose_headers?,
        allow_credentials: credentials,
        max_age: max_age?,
    })
}

/// A route's `filters`: indices into the service's filters, each named once.
pub(super) fn route_filters(
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    defined: &[Spanned<file::Filter>],
    ctx: &str,
    r: &mut Reporter,
) -> Option<Option<Vec<usize>>> {
    let Some(list) = raw else {
        return Some(None);
    };
    let mut chain = Vec::new();
    let mut ok = true;
    for name in list.get_ref() {
        let found = defined
            .iter()
            .position(|f| f.get_ref().name.get_ref() == name.get_ref());
        match found {
            Some(index) if chain.contains(&index) => {
                r.error_in(
                    &name.span(),
                    ctx,
                    format!("filter {:?} is listed twice", name.get_ref()),
                );
                ok = false;
            }
            Some(index) => chain.push(index),
            None => {
                r.error_in(
                    &name.span(),
                    ctx,
                    format!(
                        "filters: no [[service.l7.filter]] named {:?} in this service",
                        name.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(Some(chain))
}
