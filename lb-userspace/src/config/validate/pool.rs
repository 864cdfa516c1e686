//! `[[pool]]` on its own: policy, timeouts, backends (health checks are in `health`).
//! The rules that depend on the services using a pool live in `service`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{check, discovery, health};
use crate::config::diagnostic::Reporter;
use crate::config::document::PoolItem;
use crate::config::file::{self, PolicyName};
use crate::config::model::{
    Backend, CircuitBreakers, HashOn, Policy, Pool, UpstreamProtocol, WhenNoHealthy,
};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_PANIC_THRESHOLD: u8 = 50;

pub(super) fn pools(items: &[PoolItem], base_dir: &Path, r: &mut Reporter) -> Option<Vec<Pool>> {
    check::unique_names(
        items
            .iter()
            .map(|p| (&p.pool.get_ref().name, context(p.pool.get_ref()))),
        "pool",
        r,
    );
    let checked: Vec<_> = items.iter().map(|item| pool(item, base_dir, r)).collect();
    checked.into_iter().collect()
}

pub(super) fn context(pool: &file::Pool) -> String {
    format!("pool {:?}", pool.name.get_ref())
}

fn pool(item: &PoolItem, base_dir: &Path, r: &mut Reporter) -> Option<Pool> {
    let raw = item.pool.get_ref();
    let ctx = context(raw);
    let name = check::name(&raw.name, "name", &ctx, r);
    let policy = policy(raw, &ctx, r);
    let connect_timeout = check::duration(
        raw.connect_timeout.as_ref(),
        DEFAULT_CONNECT_TIMEOUT,
        "connect_timeout",
        &ctx,
        r,
    );
    let panic_threshold = check::opt_int_in(
        raw.panic_threshold.as_ref(),
        DEFAULT_PANIC_THRESHOLD,
        0..=100,
        "panic_threshold",
        &ctx,
        r,
    );
    let default_check = Spanned::new(0..0, file::HealthCheck::default());
    let health_check =
        health::health_check(raw.health_check.as_ref().unwrap_or(&default_check), &ctx, r);
    let outlier_detection = match &raw.outlier_detection {
        Some(od) => health::outlier_detection(od, &ctx, r).map(Some),
        None => Some(None),
    };
    let circuit_breakers = circuit_breakers(&raw.circuit_breakers, &ctx, r);
    let slow_start = check::duration_or_off(raw.slow_start.as_ref(), "slow_start", &ctx, r);
    if let (Some(Some(_)), Some(Policy::Maglev { .. }), Some(span)) = (
        slow_start,
        &policy,
        raw.slow_start.as_ref().map(Spanned::span),
    ) {
        r.error_in(
            &span,
            &ctx,
            "slow_start cannot ramp a maglev pool: consistent hashing gives each backend its \
             share of keys at once (use another policy, or remove slow_start)",
        );
    }
    let discovery = discovery::discovery(raw.discovery.as_ref(), item, base_dir, &ctx, r);
    let backends = match raw.discovery {
        Some(_) => Some(Vec::new()),
        None => backends(item, &ctx, r),
    };
    Some(Pool {
        name: name?,
        policy: policy?,
        upstream_protocol: raw.upstream_protocol.unwrap_or(UpstreamProtocol::Http1),
        connect_timeout: connect_timeout?,
        panic_threshold: panic_threshold?,
        when_no_healthy: raw.when_no_healthy.unwrap_or(WhenNoHealthy::FailOpen),
        health_check: health_check?,
        outlier_detection: outlier_detection?,
        circuit_breakers: circuit_breakers?,
        backends: backends?,
        discovery: discovery?,
        slow_start: slow_start?,
    })
}

fn circuit_breakers(
    raw: &file::CircuitBreakers,
    ctx: &str,
    r: &mut Reporter,
) -> Option<CircuitBreakers> {
    let d = CircuitBreakers::default();
    let limit =
        |value: Option<&Spanned<i64>>, default: u32, min: i64, what: &str, r: &mut Reporter| {
            let what = format!("circuit_breakers.{what}");
            check::opt_int_in(value, default, min..=1_000_000, &what, ctx, r)
        };
    let max_connections = limit(
        raw.max_connections.as_ref(),
        d.max_connections,
        1,
        "max_connections",
        r,
    );
    let max_pending = limit(
        raw.max_pending_requests.as_ref(),
        d.max_pending_requests,
        0,
        "max_pending_requests",
        r,
    );
    let max_requests = limit(
        raw.max_requests.as_ref(),
        d.max_requests,
        1,
        "max_requests",
        r,
    );
    let max_retries = limit(raw.max_retries.as_ref(), d.max_retries, 0, "max_retries", r);
    Some(CircuitBreakers {
        max_connections: max_connections?,
        max_pending_requests: max_pending?,
        max_requests: max_requests?,
        max_retries: max_retries?,
    })
}

fn policy(raw: &file::Pool, ctx: &str, r: &mut Reporter) -> Option<Policy> {
    let name = raw
        .policy
        .as_ref()
        .map_or(PolicyName::RoundRobin, |p| *p.get_ref());
    let hash_on = match (&raw.hash_on, name) {
        (None, _) => None,
        (Some(h), PolicyName::Maglev) => Some(match h.get_ref() {
            file::HashOn::Header(header) => HashOn::Header(check::header_name(header, ctx, r)?),
            file::HashOn::Cookie(cookie) => {
                HashOn::Cookie(check::token(cookie, "cookie name", ctx, r)?)
            }
            file::HashOn::ClientAddress => HashOn::ClientAddress,
        }),
        (Some(h), _) => {
            r.error_in(&h.span(), ctx, "hash_on only applies to policy \"maglev\"");
            return None;
        }
    };
    Some(match name {
        PolicyName::RoundRobin => Policy::RoundRobin,
        PolicyName::Weighted => Policy::Weighted,
        PolicyName::LeastRequest => Policy::LeastRequest,
        PolicyName::LeastResponseTime => Policy::LeastResponseTime,
        PolicyName::Random => Policy::Random,
        PolicyName::Maglev => Policy::Maglev { hash_on },
    })
}

fn backends(item: &PoolItem, ctx: &str, r: &mut Reporter) -> Option<Vec<Backend>> {
    if item.backends.is_empty() {
        r.error_in(
            &item.pool.span(),
            ctx,
            "a pool needs at least one [[pool.backend]] or a [pool.discovery]",
        );
        return None;
    }
    let checked: Vec<_> = item
        .backends
        .iter()
        .map(|b| b.as_ref().and_then(|b| backend(b.get_ref(), ctx, r)))
        .collect();
    let backends: Option<Vec<Backend>> = checked.into_iter().collect();
    let backends = backends?;
    // Both checks are on the whole list, so they run once every backend is readable.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    let mut ok = true;
    for (backend, raw) in backends.iter().zip(item.backends.iter().flatten()) {
        let raw = raw.get_ref();
        let bctx = format!("{ctx}, backend {:?}", backend.name);
        let name_span = raw.name.as_ref().map_or(raw.address.span(), Spanned::span);
        if let Some(&first) = names.get(backend.name.as_str()) {
            let line = r.line_of(first);
            r.error_in(
                &name_span,
                &bctx,
                format!("the name is already used by the backend on line {line}"),
            );
            ok = false;
        } else {
            names.insert(&backend.name, name_span.start);
        }
        if let Some(&first) = addresses.get(&backend.address) {
            let line = r.line_of(first);
            r.error_in(
                &raw.address.span(),
                &bctx,
                format!("{} is already a backend on line {line}", backend.address),
            );
            ok = false;
        } else {
            addresses.insert(backend.address, raw.address.span().start);
        }
    }
    ok.then_some(backends)
}

pub(crate) fn backend(raw: &file::Backend, pool_ctx: &str, r: &mut Reporter) -> Option<Backend> {
    let label = match &raw.name {
        Some(name) => name.get_ref().clone(),
        None => format!("{}:{}", raw.address.get_ref(), raw.port.get_ref()),
    };
    let ctx = format!("{pool_ctx}, backend {label:?}");
    let ip = check::ip(&raw.address, "address", &ctx, r);
    let port: Option<u16> = check::int_in(&raw.port, 1..=65535, "port", &ctx, r);
    let weight = check::opt_int_in(raw.weight.as_ref(), 1, 1..=10_000, "weight", &ctx, r);
    let name = match &raw.name {
        Some(name) => check::name(name, "name", &ctx, r),
        None => ip
            .zip(port)
            .map(|(ip, port)| SocketAddr::new(ip, port).to_string()),
    };
    Some(Backend {
        name: name?,
        address: SocketAddr::new(ip?, port?),
        weight: weight?,
    })
}
