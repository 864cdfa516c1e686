//! Following a DNS name: A/AAAA or SRV records, re-resolved when their TTL runs out
//! (clamped to the pool's `min_ttl`..=`max_ttl`).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::mpsc;

use super::{Event, Outcome};
use crate::config::{Backend, Discovery, DnsDiscovery, DnsRecord};

/// The highest weight a backend may have; SRV weights above it are clamped.
const MAX_WEIGHT: u16 = 10_000;

/// What one resolution found, and for how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// The smallest TTL among the records used; `None` without records.
    pub ttl: Option<Duration>,
}

/// Builds the resolver for `dns`: its own servers, or the system's.
pub fn resolver(dns: &DnsDiscovery) -> Result<TokioResolver, NetError> {
    let mut builder = if dns.servers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = dns
            .servers
            .iter()
            .map(|addr| {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut c| {
                        c.port = addr.port();
                        c
                    })
                    .collect();
                NameServerConfig::new(addr.ip(), true, connections)
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build()
}

/// Resolves `dns` once, bypassing the resolver's cache so the answer carries the server's
/// TTL.
pub async fn resolve(resolver: &TokioResolver, dns: &DnsDiscovery) -> Answer {
    resolver.clear_cache();
    match dns.record {
        DnsRecord::Address { port, weight } => match resolver.lookup_ip(dns.name.as_str()).await {
            Ok(lookup) => {
                let records = lookup.as_lookup().answers();
                let mut addresses: Vec<SocketAddr> =
                    lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                addresses.sort();
                addresses.dedup();
                found(
                    addresses.into_iter().map(|a| (a, weight)).collect(),
                    min_ttl(records),
                )
            }
            Err(err) => failure(&err),
        },
        DnsRecord::Srv => srv(resolver, dns).await,
    }
}

async fn srv(resolver: &TokioResolver, dns: &DnsDiscovery) -> Answer {
    let lookup = match resolver.srv_lookup(dns.name.as_str()).await {
        Ok(lookup) => lookup,
        Err(err) => return failure(&err),
    };
    let records: Vec<(&Record, _)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((r, srv)),
            _ => None,
        })
        .collect();
    // Lower priorities are preferred; a load balancer has no fallback tier, so only the
    // lowest is used.
    let Some(best) = records.iter().map(|(_, srv)| srv.priority).min() else {
        return Answer {
            outcome: Outcome::Empty,
            ttl: None,
        };
    };
    let mut ttl = min_ttl(lookup.answers());
    let mut backends: Vec<(SocketAddr, u16)> = Vec::new();
    for (_, srv) in records.iter().filter(|(_, srv)| srv.priority == best) {
        let target = srv.target.to_string();
        let ips = match resolver.lookup_ip(target.as_str()).await {
            Ok(ips) => ips,
            // A target without addresses adds no backend; an unreachable server fails all.
            Err(err) if is_empty(&err) => continue,
            Err(err) => return failure(&err),
        };
        ttl = min_option(ttl, min_ttl(ips.as_lookup().answers()));
        let weight = srv.weight.clamp(1, MAX_WEIGHT);
        for ip in ips.iter() {
            let address = SocketAddr::new(ip, srv.port);
            if !backends.iter().any(|(a, _)| *a == address) {
                backends.push((address, weight));
            }
        }
    }
    backends.sort();
    found(backends, ttl)
}

fn found(backends: Vec<(SocketAddr, u16)>, ttl: Option<Duration>) -> Answer {
    if backends.is_empty() {
        return Answer {
            outcome: Outcome::Empty,
            ttl,
        };
    }
    let backends = backends
        .into_iter()
        .map(|(address, weight)| Backend {
            name: address.to_string(),
            address,
            weight,
        })
        .collect();
    Answer {
        outcome: Outcome::Found(backends),
        ttl,
    }
}

/// A name that does not exist or has no such records is an empty answer, not a failure.
fn is_empty(err: &NetError) -> bool {
    matches!(
        err,
        NetError::Dns(DnsError::NoRecordsFound(no))
            if matches!(no.response_code, ResponseCode::NXDomain | ResponseCode::NoError)
    )
}

fn failure(err: &NetError) -> Answer {
    let outcome = if is_empty(err) {
        Outcome::Empty
    } else {
        Outcome::Failed(err.to_string())
    };
    Answer { outcome, ttl: None }
}

fn min_ttl(records: &[Record]) -> Option<Duration> {
    records
        .iter()
        .map(|r| Duration::from_secs(u64::from(r.ttl)))
        .min()
}

fn min_option(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long to wait before the next resolution: the TTL within the pool's bounds; after a
/// failure or without records, the lower bound (a retry soon, but never a busy loop).
pub fn next_after(answer: &Answer, dns: &DnsDiscovery) -> Duration {
    match (&answer.outcome, answer.ttl) {
        (Outcome::Found(_), Some(ttl)) => ttl.clamp(dns.min_ttl, dns.max_ttl),
        _ => dns.min_ttl,
    }
}

/// Follows `dns` for `pool` until the receiver is gone or the task is aborted.
pub async fn follow(pool: String, dns: DnsDiscovery, events: mpsc::Sender<Event>) {
    let source = Discovery::Dns(dns.clone());
    let resolver = loop {
        match resolver(&dns) {
            Ok(resolver) => break resolver,
            Err(err) => {
                let event = Event {
                    pool: pool.clone(),
                    source: source.clone(),
                    outcome: Outcome::Failed(format!("setting up the resolver: {err}")),
                };
                if events.send(event).await.is_err() {
                    return;
                }
                tokio::time::sleep(dns.min_ttl).await;
            }
        }
    };
    loop {
        let answer = resolve(&resolver, &dns).await;
        let wait = next_after(&answer, &dns);
        let event = Event {
            pool: pool.clone(),
            source: source.clone(),
            outcome: answer.outcome,
        };
        if events.send(event).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(min: u64, max: u64) -> DnsDiscovery {
        DnsDiscovery {
            name: "app.test.".into(),
            record: DnsRecord::Srv,
            min_ttl: Duration::from_secs(min),
            max_ttl: Duration::from_secs(max),
            servers: Vec::new(),
        }
    }

    #[test]
    fn the_ttl_is_clamped_to_the_bounds_and_failures_retry_at_the_lower_one() {
        let d = dns(5, 60);
        let backend = vec![Backend {
            name: "a".into(),
            address: SocketAddr::from(([10, 0, 0, 1], 80)),
            weight: 1,
        }];
        let with = |ttl: u64| Answer {
            outcome: Outcome::Found(backend.clone()),
            ttl: Some(Duration::from_secs(ttl)),
        };
        assert_eq!(next_after(&with(30), &d), Duration::from_secs(30));
        assert_eq!(next_after(&with(1), &d), Duration::from_secs(5));
        assert_eq!(next_after(&with(3600), &d), Duration::from_secs(60));
        let failed = Answer {
            outcome: Outcome::Failed("timeout".into()),
            ttl: None,
        };
        assert_eq!(next_after(&failed, &d), Duration::from_secs(5));
    }

    #[test]
    fn found_addresses_become_backends_named_after_them() {
        let a = SocketAddr::from(([10, 0, 0, 2], 8080));
        let answer = found(vec![(a, 3)], Some(Duration::from_secs(9)));
        assert_eq!(
            answer.outcome,
            Outcome::Found(vec![Backend {
                name: "10.0.0.2:8080".into(),
                address: a,
                weight: 3
            }])
        );
        assert_eq!(found(Vec::new(), None).outcome, Outcome::Empty);
    }
}
