//! `[[service.l7.virtual_host.route]]`: match and per-route options (the action is in `action`).

use std::time::Duration;

use toml::Spanned;

use super::service::Usage;
use super::{Names, action, check};
use crate::config::diagnostic::Reporter;
use crate::config::file;
use crate::config::model::{
    PathMatch, Pattern, RetryOn, RetryPolicy, Route, RouteMatch, ValueCondition, ValueMatch,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn route(
    raw: &Spanned<file::Route>,
    ctx: &str,
    names: &Names,
    service_ctx: &str,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<Route> {
    let route = raw.get_ref();
    let matcher = route_match(&route.matcher, ctx, r);
    let action = action::action(raw, ctx, names, service_ctx, usages, r);
    let forwards = route.forward.is_some();
    let prefix_rewrite = match &route.prefix_rewrite {
        None => Some(None),
        Some(rewrite) => {
            if route.matcher.get_ref().path_prefix.is_none() {
                r.error_in(
                    &rewrite.span(),
                    ctx,
                    "prefix_rewrite needs a path_prefix match",
                );
            }
            if !forwards {
                r.error_in(
                    &rewrite.span(),
                    ctx,
                    "prefix_rewrite only applies to forward routes",
                );
            }
            check::url_path(rewrite, "prefix_rewrite", ctx, r).map(Some)
        }
    };
    let request_add = headers_add(&route.request_headers_add, ctx, r);
    let request_remove = headers_remove(&route.request_headers_remove, ctx, r);
    let response_add = headers_add(&route.response_headers_add, ctx, r);
    let response_remove = headers_remove(&route.response_headers_remove, ctx, r);
    let timeout = match &route.timeout {
        None => Some(Some(DEFAULT_TIMEOUT)),
        Some(t) => check::duration_or_off(Some(t), "timeout", ctx, r),
    };
    let stream_idle_timeout = match &route.stream_idle_timeout {
        None => Some(None),
        Some(t) => {
            if !forwards {
                r.error_in(
                    &t.span(),
                    ctx,
                    "stream_idle_timeout only applies to forward routes",
                );
            }
            check::duration(Some(t), Duration::ZERO, "stream_idle_timeout", ctx, r).map(Some)
        }
    };
    let retry = match &route.retry {
        None => Some(None),
        Some(retry) => {
            if !forwards {
                r.error_in(&retry.span(), ctx, "retry only applies to forward routes");
            }
            timeout
                .and_then(|t| retry_policy(retry.get_ref(), t, ctx, r))
                .map(Some)
        }
    };
    let upgrades = upgrades(route.upgrades.as_ref(), forwards, ctx, r);
    Some(Route {
        upgrades: upgrades?,
        matcher: matcher?,
        action: action?,
        prefix_rewrite: prefix_rewrite?,
        request_headers_add: request_add?,
        request_headers_remove: request_remove?,
        response_headers_add: response_add?,
        response_headers_remove: response_remove?,
        timeout: timeout?,
        stream_idle_timeout: stream_idle_timeout?,
        retry: retry?,
        // Resolved against the service's filters by `l7::virtual_host`.
        filters: None,
    })
}

/// `upgrades`: protocol tokens a forward route tunnels (default `["websocket"]`).
fn upgrades(
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    forwards: bool,
    ctx: &str,
    r: &mut Reporter,
) -> Option<Vec<String>> {
    let Some(list) = raw else {
        return Some(vec!["websocket".to_owned()]);
    };
    if !forwards {
        r.error_in(&list.span(), ctx, "upgrades only applies to forward routes");
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for token in list.get_ref() {
        let value = token.get_ref().to_ascii_lowercase();
        let is_token = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if value == "h2c" {
            r.error_in(
                &token.span(),
                ctx,
                "upgrades: h2c is never tunnelled (use h2c prior knowledge on the listener)",
            );
            ok = false;
        } else if !is_token {
            r.error_in(
                &token.span(),
                ctx,
                format!("upgrades: {:?} is not a protocol name", token.get_ref()),
            );
            ok = false;
        } else if !out.contains(&value) {
            out.push(value);
        }
    }
    ok.then_some(out)
}

fn route_match(raw: &Spanned<file::Match>, ctx: &str, r: &mut Reporter) -> Option<RouteMatch> {
    let m = raw.get_ref();
    let given = [&m.path_exact, &m.path_prefix, &m.path_regex];
    let path = match given.iter().filter(|p| p.is_some()).count() {
        1 => {
            if let Some(p) = &m.path_exact {
                check::url_path(p, "path_exact", ctx, r).map(PathMatch::Exact)
            } else if let Some(p) = &m.path_prefix {
                check::url_path(p, "path_prefix", ctx, r).map(PathMatch::Prefix)
            } else {
                m.path_regex
                    .as_ref()
                    .and_then(|p| regex(p, ctx, r))
                    .map(PathMatch::Regex)
            }
        }
        n => {
            let span = if n == 0 {
                raw.span()
            } else {
                given
                    .iter()
                    .flat_map(|p| p.as_ref())
                    .map(Spanned::span)
                    .nth(1)
                    .unwrap_or(raw.span())
            };
            r.error_in(
                &span,
                ctx,
                "match needs exactly one of path_exact, path_prefix and path_regex",
            );
            None
        }
    };
    let methods: Vec<_> = m
        .methods
        .iter()
        .map(|method| check::token(method, "method", ctx, r))
        .collect();
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|h| value_match(h, true, ctx, r))
        .collect();
    let query: Vec<_> = m
        .query
        .iter()
        .map(|q| value_match(q, false, ctx, r))
        .collect();
    Some(RouteMatch {
        path: path?,
        methods: methods.into_iter().collect::<Option<_>>()?,
        headers: headers.into_iter().collect::<Option<_>>()?,
        query: query.into_iter().collect::<Option<_>>()?,
    })
}

/// A regex that must match the whole value.
fn regex(value: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<Pattern> {
    match regex::Regex::new(&format!("^(?:{})$", value.get_ref())) {
        Ok(re) => Some(Pattern(re)),
        Err(err) => {
            // The regex crate's message spans several lines; its last line says what is wrong.
            let reason = err.to_string();
            let reason = reason
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            r.error_in(
                &value.span(),
                ctx,
                format!("invalid regex {:?}: {reason}", value.get_ref()),
            );
            None
        }
    }
}

fn value_match(
    raw: &Spanned<file::ValueMatch>,
    header: bool,
    ctx: &str,
    r: &mut Reporter,
) -> Option<ValueMatch> {
    let m = raw.get_ref();
    let name = if header {
        check::header_name(&m.name, ctx, r)
    } else {
        check::name(&m.name, "query parameter", ctx, r)
    };
    let condition = match (m.present, &m.exact, &m.regex) {
        (Some(true), None, None) => Some(ValueCondition::Present),
        (Some(false), None, None) => Some(ValueCondition::Absent),
        (None, Some(exact), None) => Some(ValueCondition::Exact(exact.clone())),
        (None, None, Some(re)) => regex(re, ctx, r).map(ValueCondition::Regex),
        _ => {
            r.error_in(
                &raw.span(),
                ctx,
                format!(
                    "condition on {:?} needs exactly one of present, exact and regex",
                    m.name.get_ref()
                ),
            );
            None
        }
    };
    Some(ValueMatch {
        name: name?,
        condition: condition?,
    })
}

fn headers_add(
    raw: &std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
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

fn retry_policy(
    raw: &file::Retry,
    timeout: Option<Duration>,
    ctx: &str,
    r: &mut Reporter,
) -> Option<RetryPolicy> {
    let on = match &raw.on {
        None => Some(vec![RetryOn::ConnectFailure]),
        Some(list) => {
            let checked: Vec<_> = list.iter().map(|on| retry_on(on, ctx, r)).collect();
            checked.into_iter().collect()
        }
    };
    let attempts = check::opt_int_in(raw.attempts.as_ref(), 2, 0..=10, "retry.attempts", ctx, r);
    let per_try = match &raw.per_try_timeout {
        None => Some(None),
        Some(value) => {
            let d = check::duration(Some(value), Duration::ZERO, "retry.per_try_timeout", ctx, r);
            if let (Some(d), Some(timeout)) = (d, timeout)
                && d > timeout
            {
                r.error_in(
                    &value.span(),
                    ctx,
                    "retry.per_try_timeout must not be longer than the route timeout",
                );
            }
            d.map(Some)
        }
    };
    let budget = check::opt_int_in(
        raw.budget_percent.as_ref(),
        20,
        0..=100,
        "retry.budget_percent",
        ctx,
        r,
    );
    Some(RetryPolicy {
        on: on?,
        attempts: attempts?,
        per_try_timeout: per_try?,
        non_idempotent: raw.non_idempotent.unwrap_or(false),
        budget_percent: budget?,
    })
}

fn retry_on(value: &Spanned<String>, ctx: &str, r: &mut Reporter) -> Option<RetryOn> {
    match value.get_ref().as_str() {
        "connect_failure" => Some(RetryOn::ConnectFailure),
        "reset" => Some(RetryOn::Reset),
        other => match other.parse::<u16>() {
            Ok(status @ 500..=599) => Some(RetryOn::Status(status)),
            _ => {
                r.error_in(
                    &value.span(),
                    ctx,
                    format!("retry.on {other:?} is not \"connect_failure\", \"reset\" or a 5xx status like \"503\""),
                );
                None
            }
        },
    }
}
