//! A pool's `[pool.health_check]` (active) and `[pool.outlier_detection]` (passive).

use std::time::Duration;

use toml::Spanned;

use super::check;
use crate::config::diagnostic::Reporter;
use crate::config::file::{self, StatusSpec};
use crate::config::model::{
    HealthCheck, HealthCheckKind, HttpCheck, OutlierDetection, StatusRange,
};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_EXPECTED_STATUS: StatusRange = StatusRange {
    first: 200,
    last: 399,
};
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);

pub(super) fn health_check(
    raw: &Spanned<file::HealthCheck>,
    ctx: &str,
    r: &mut Reporter,
) -> Option<HealthCheck> {
    let hc = raw.get_ref();
    let kind_name = hc.kind.unwrap_or(file::HealthCheckKind::Tcp);
    let interval = check::duration(
        hc.interval.as_ref(),
        DEFAULT_INTERVAL,
        "health_check.interval",
        ctx,
        r,
    );
    let timeout = check::duration(
        hc.timeout.as_ref(),
        DEFAULT_CHECK_TIMEOUT,
        "health_check.timeout",
        ctx,
        r,
    );
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout >= interval
    {
        let span = hc
            .timeout
            .as_ref()
            .or(hc.interval.as_ref())
            .map_or(raw.span(), Spanned::span);
        r.error_in(
            &span,
            ctx,
            format!(
                "health_check.timeout ({}) must be shorter than health_check.interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    let rise = check::opt_int_in(hc.rise.as_ref(), 2, 1..=100, "health_check.rise", ctx, r);
    let fall = check::opt_int_in(hc.fall.as_ref(), 3, 1..=100, "health_check.fall", ctx, r);
    let jitter = check::opt_int_in(
        hc.jitter.as_ref(),
        10,
        0..=50,
        "health_check.jitter",
        ctx,
        r,
    );
    if kind_name != file::HealthCheckKind::Grpc {
        check::not_here(
            hc.service.as_ref(),
            "health_check.service only applies to kind \"grpc\"",
            ctx,
            r,
        );
    }
    let kind = match kind_name {
        file::HealthCheckKind::Http => http_check(hc, ctx, r).map(HealthCheckKind::Http),
        other => {
            let kind = match other {
                file::HealthCheckKind::Tcp => "tcp",
                file::HealthCheckKind::Grpc => "grpc",
                _ => "none",
            };
            let only_http = format!("only applies to kind \"http\", not \"{kind}\"");
            check::not_here(
                hc.method.as_ref(),
                format!("health_check.method {only_http}"),
                ctx,
                r,
            );
            check::not_here(
                hc.path.as_ref(),
                format!("health_check.path {only_http}"),
                ctx,
                r,
            );
            check::not_here(
                hc.host.as_ref(),
                format!("health_check.host {only_http}"),
                ctx,
                r,
            );
            check::not_here(
                hc.expected_status.as_ref(),
                format!("health_check.expected_status {only_http}"),
                ctx,
                r,
            );
            check::not_here(
                hc.body_contains.as_ref(),
                format!("health_check.body_contains {only_http}"),
                ctx,
                r,
            );
            match other {
                file::HealthCheckKind::Tcp => Some(HealthCheckKind::Tcp),
                file::HealthCheckKind::Grpc => grpc_service(hc.service.as_ref(), ctx, r)
                    .map(|service| HealthCheckKind::Grpc { service }),
                _ => Some(HealthCheckKind::None),
            }
        }
    };
    Some(HealthCheck {
        kind: kind?,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        jitter_percent: jitter?,
    })
}

/// A gRPC service name: printable ASCII (it travels in a protobuf string, and shows in logs).
fn grpc_service(raw: Option<&Spanned<String>>, ctx: &str, r: &mut Reporter) -> Option<String> {
    let Some(raw) = raw else {
        return Some(String::new());
    };
    let name = raw.get_ref();
    if name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        r.error_in(
            &raw.span(),
            ctx,
            "health_check.service must be a gRPC service name like \"pkg.Service\" (printable ASCII, no spaces, at most 255 bytes)",
        );
        return None;
    }
    Some(name.clone())
}

fn http_check(hc: &file::HealthCheck, ctx: &str, r: &mut Reporter) -> Option<HttpCheck> {
    let method = match &hc.method {
        Some(m) => check::token(m, "health_check.method", ctx, r),
        None => Some("GET".to_owned()),
    };
    let path = match &hc.path {
        Some(p) => check::url_path(p, "health_check.path", ctx, r),
        None => Some("/".to_owned()),
    };
    let host = match &hc.host {
        Some(h) => check::header_value(h, ctx, r).map(Some),
        None => Some(None),
    };
    let expected_status = match &hc.expected_status {
        None => Some(vec![DEFAULT_EXPECTED_STATUS]),
        Some(list) if list.get_ref().is_empty() => {
            r.error_in(
                &list.span(),
                ctx,
                "health_check.expected_status must not be empty",
            );
            None
        }
        Some(list) => {
            let ranges: Vec<_> = list
                .get_ref()
                .iter()
                .map(|s| status_range(s, ctx, r))
                .collect();
            ranges.into_iter().collect()
        }
    };
    Some(HttpCheck {
        method: method?,
        path: path?,
        host: host?,
        expected_status: expected_status?,
        body_contains: hc.body_contains.as_ref().map(|b| b.get_ref().clone()),
    })
}

/// `404`, `"404"` or `"200-399"`, within 100..=599.
fn status_range(spec: &Spanned<StatusSpec>, ctx: &str, r: &mut Reporter) -> Option<StatusRange> {
    let parse = |s: &str| s.trim().parse::<u16>().ok();
    let (first, last) = match spec.get_ref() {
        StatusSpec::Code(code) => (u16::try_from(*code).ok(), u16::try_from(*code).ok()),
        StatusSpec::Text(text) => match text.split_once('-') {
            Some((a, b)) => (parse(a), parse(b)),
            None => (parse(text), parse(text)),
        },
    };
    match (first, last) {
        (Some(first), Some(last)) if 100 <= first && first <= last && last <= 599 => {
            Some(StatusRange { first, last })
        }
        _ => {
            let shown = match spec.get_ref() {
                StatusSpec::Code(code) => code.to_string(),
                StatusSpec::Text(text) => format!("{text:?}"),
            };
            r.error_in(
                &spec.span(),
                ctx,
                format!(
                    "health_check.expected_status {shown} is not a status code or range like \"200-399\" within 100..=599"
                ),
            );
            None
        }
    }
}

pub(super) fn outlier_detection(
    od: &file::OutlierDetection,
    ctx: &str,
    r: &mut Reporter,
) -> Option<OutlierDetection> {
    let what = "outlier_detection.consecutive_failures";
    let consecutive_failures =
        check::opt_int_in(od.consecutive_failures.as_ref(), 5, 1..=1000, what, ctx, r);
    let what = "outlier_detection.base_ejection";
    let base = check::duration(
        od.base_ejection.as_ref(),
        DEFAULT_BASE_EJECTION,
        what,
        ctx,
        r,
    );
    let what = "outlier_detection.max_ejection";
    let max = check::duration(od.max_ejection.as_ref(), DEFAULT_MAX_EJECTION, what, ctx, r);
    let what = "outlier_detection.max_ejected_percent";
    let max_ejected_percent =
        check::opt_int_in(od.max_ejected_percent.as_ref(), 10, 0..=100, what, ctx, r);
    let (base, max) = (base?, max?);
    if max < base {
        let span = od
            .max_ejection
            .as_ref()
            .or(od.base_ejection.as_ref())
            .map_or(0..0, Spanned::span);
        r.error_in(
            &span,
            ctx,
            "outlier_detection.max_ejection must not be shorter than outlier_detection.base_ejection",
        );
        return None;
    }
    Some(OutlierDetection {
        consecutive_failures: consecutive_failures?,
        base_ejection: base,
        max_ejection: max,
        max_ejected_percent: max_ejected_percent?,
        count_5xx: od.count_5xx.unwrap_or(true),
    })
}
