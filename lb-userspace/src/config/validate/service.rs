//! `[[service]]`: addresses, the l4/l7 choice, l4 settings, and the rules between a pool and
//! the services that use it (dsr ports, maglev hash keys, unused pools).

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::{Names, check, l7, pool};
use crate::config::diagnostic::Reporter;
use crate::config::document::{PoolItem, ServiceItem};
use crate::config::file::{self, PolicyName};
use crate::config::model::{ForwardingMode, L4Service, PoolId, Protocol, Service, ServiceKind};

const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;
const MAGLEV_TABLE_SIZES: std::ops::RangeInclusive<i64> = 251..=131_071;

/// A service's use of a pool, checked against the pool once all services are read.
pub(crate) struct Usage {
    pub pool: PoolId,
    pub service: String,
    pub how: UsedBy,
}

/// What kind of service uses a pool.
pub(crate) enum UsedBy {
    /// An l4 service, with its mode and port.
    L4 { mode: ForwardingMode, port: u16 },
    /// An l7 route; the span is the route's reference to the pool.
    L7 { reference: Range<usize> },
}

pub(super) fn services(
    items: &[ServiceItem],
    names: &Names,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<Vec<Service>> {
    check::unique_names(
        items
            .iter()
            .map(|s| (&s.service.get_ref().name, context(s.service.get_ref()))),
        "service",
        r,
    );
    let checked: Vec<_> = items
        .iter()
        .map(|item| service(item, names, usages, r))
        .collect();
    let mut listeners: HashMap<(IpAddr, u16, Protocol), (String, usize)> = HashMap::new();
    for (service, item) in checked.iter().zip(items) {
        let Some(service) = service else { continue };
        let key = (service.vip, service.port, service.protocol);
        let span = item.service.get_ref().vip.span();
        if let Some((other, first)) = listeners.get(&key) {
            let line = r.line_of(*first);
            let protocol = if service.protocol == Protocol::Tcp {
                "tcp"
            } else {
                "udp"
            };
            r.error_in(
                &span,
                &context(item.service.get_ref()),
                format!(
                    "{}:{}/{protocol} is already used by service {other:?} on line {line}",
                    service.vip, service.port
                ),
            );
        } else {
            listeners.insert(key, (service.name.clone(), span.start));
        }
    }
    checked.into_iter().collect()
}

fn context(service: &file::Service) -> String {
    format!("service {:?}", service.name.get_ref())
}

fn service(
    item: &ServiceItem,
    names: &Names,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<Service> {
    let raw = item.service.get_ref();
    let ctx = context(raw);
    let name = check::name(&raw.name, "name", &ctx, r);
    let vip = check::ip(&raw.vip, "vip", &ctx, r);
    let port: Option<u16> = check::int_in(&raw.port, 1..=65535, "port", &ctx, r);
    let protocol = *raw.protocol.get_ref();
    let kind = match (&raw.l4, &raw.l7) {
        (Some(l4), None) => {
            l4_service(l4.get_ref(), port, &ctx, names, usages, r).map(ServiceKind::L4)
        }
        (None, Some(l7)) => {
            if protocol != Protocol::Tcp {
                r.error_in(
                    &raw.protocol.span(),
                    &ctx,
                    "an l7 service needs protocol \"tcp\"",
                );
            }
            l7::l7_service(l7, &item.virtual_hosts, &ctx, names, usages, r).map(ServiceKind::L7)
        }
        (Some(_), Some(l7)) => {
            r.error_in(
                &l7.span(),
                &ctx,
                "a service has either [service.l4] or [service.l7], not both",
            );
            None
        }
        (None, None) => {
            r.error_in(
                &item.service.span(),
                &ctx,
                "a service needs [service.l4] or [service.l7]",
            );
            None
        }
    };
    Some(Service {
        name: name?,
        vip: vip?,
        port: port?,
        protocol,
        kind: kind?,
    })
}

fn l4_service(
    raw: &file::L4,
    port: Option<u16>,
    ctx: &str,
    names: &Names,
    usages: &mut Vec<Usage>,
    r: &mut Reporter,
) -> Option<L4Service> {
    let pool = names.pool(&raw.pool, ctx, r);
    let mode = *raw.mode.get_ref();
    let table_size = check::opt_int_in(
        raw.maglev_table_size.as_ref(),
        DEFAULT_MAGLEV_TABLE_SIZE,
        MAGLEV_TABLE_SIZES,
        "maglev_table_size",
        ctx,
        r,
    );
    if let (Some(size), Some(value)) = (table_size, &raw.maglev_table_size)
        && !is_prime(size)
    {
        let next = (size..)
            .find(|&n| is_prime(n))
            .unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
        r.error_in(
            &value.span(),
            ctx,
            format!("maglev_table_size {size} is not a prime number (the next prime is {next})"),
        );
    }
    let seed = check::opt_int_in(
        raw.maglev_seed.as_ref(),
        0,
        0..=i64::from(u32::MAX),
        "maglev_seed",
        ctx,
        r,
    );
    if let (Some(pool), Some(port)) = (pool, port) {
        usages.push(Usage {
            pool,
            service: ctx.to_owned(),
            how: UsedBy::L4 { mode, port },
        });
    }
    Some(L4Service {
        mode,
        pool: pool?,
        maglev_table_size: table_size.filter(|size| is_prime(*size))?,
        maglev_seed: seed?,
    })
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Rules that need both a pool and the services using it.
pub(super) fn check_pool_usage(pools: &[PoolItem], usages: &[Usage], r: &mut Reporter) {
    for (i, item) in pools.iter().enumerate() {
        let raw = item.pool.get_ref();
        let ctx = pool::context(raw);
        let mut used = usages.iter().filter(|u| u.pool == PoolId(i)).peekable();
        if used.peek().is_none() {
            r.warning(
                &raw.name.span(),
                format!("{ctx}: no service uses this pool"),
            );
        }
        let policy = raw.policy.as_ref().map(|p| *p.get_ref());
        let mut hash_on_reported = false;
        let slow_start = raw
            .slow_start
            .as_ref()
            .filter(|s| humantime::parse_duration(s.get_ref()).is_ok_and(|d| !d.is_zero()));
        let mut slow_start_reported = false;
        for usage in used {
            if let (Some(span), UsedBy::L4 { .. }) = (slow_start.map(Spanned::span), &usage.how)
                && !slow_start_reported
            {
                slow_start_reported = true;
                r.error_in(
                    &span,
                    &ctx,
                    format!(
                        "slow_start is l7 only: {} uses this pool at l4, whose Maglev table \
                         in the kernel cannot ramp a backend's share (remove slow_start, or use \
                         a separate pool for the l4 service)",
                        usage.service
                    ),
                );
            }
            match &usage.how {
                UsedBy::L4 {
                    mode: ForwardingMode::Dsr,
                    port,
                } => {
                    for backend in item.backends.iter().flatten() {
                        let backend = backend.get_ref();
                        if *backend.port.get_ref() != i64::from(*port) {
                            r.error_in(
                                &backend.port.span(),
                                &ctx,
                                format!(
                                    "backend port {} differs from port {port} of dsr {} (dsr does not \
                                     rewrite ports; use mode \"nat\" or port {port})",
                                    backend.port.get_ref(),
                                    usage.service
                                ),
                            );
                        }
                    }
                }
                UsedBy::L4 { .. } => {}
                UsedBy::L7 { reference } => {
                    if policy == Some(PolicyName::Maglev)
                        && raw.hash_on.is_none()
                        && !hash_on_reported
                    {
                        hash_on_reported = true;
                        let line = r.line_of(reference.start);
                        let span = raw.policy.as_ref().map_or(raw.name.span(), Spanned::span);
                        r.error_in(
                            &span,
                            &ctx,
                            format!(
                                "policy \"maglev\" needs hash_on (a header, a cookie or \
                                 \"client_address\") because {} uses this pool on line {line}",
                                usage.service
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// l4 services are served by the XDP program, which needs somewhere to attach.
pub(super) fn require_interfaces(services: &[ServiceItem], r: &mut Reporter) {
    if let Some(l4) = services
        .iter()
        .find_map(|s| s.service.get_ref().l4.as_ref())
    {
        r.error(
            &l4.span(),
            "l4 services need at least one [[interface]] to attach the XDP program to",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::is_prime;

    #[test]
    fn primes() {
        assert!(is_prime(251));
        assert!(is_prime(65537));
        assert!(is_prime(131_071));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
        assert!(!is_prime(255));
    }
}
