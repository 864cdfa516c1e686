//! `GET /debug/flow?proto=tcp&src=ADDR:PORT&dst=VIP:PORT[&host=H&path=P]` (and `sluice
//! explain`): where a flow goes, read from the live kernel maps (service entry, connection
//! table, Maglev slot), with the backend's health and neighbour entry, and for an L7
//! service the route and pool a request with that host and path would take.

use std::net::{IpAddr, SocketAddr};

use lb_common::addr::{PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Status;
use super::overview::Live;
use crate::dataplane::inspect::{BackendEntry, FlowQuery, InspectError, KernelAnswer};
use crate::proxy::inspect::{RouteChoice, route_for};

/// A bad `/debug/flow` request.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}")]
    BadQuery(String),
    #[error("the XDP program's maps cannot be read here (no data plane)")]
    NoDataplane,
    #[error(transparent)]
    Kernel(#[from] InspectError),
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct FlowExplanation {
    pub protocol: String,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// One sentence: what the XDP program does with the flow's next packet.
    pub verdict: String,
    /// The matching service (`None`: no service has this address, port and protocol).
    pub service: Option<FlowService>,
    /// The connection table's entry.
    pub connection: Option<FlowBackendRef>,
    /// Maglev's pick for a new flow (or one whose entry is gone).
    pub maglev: Option<MaglevSlot>,
    /// The backend the next packet goes to, with its state.
    pub backend: Option<FlowBackend>,
    /// For an L7 service: the route and pools for a `GET` of `path` with `Host: host`.
    pub l7: Option<RouteChoice>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlowService {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub id: u32,
    pub table_size: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlowBackendRef {
    pub backend_id: u32,
    pub address: Option<SocketAddr>,
    /// The program keeps the flow there (backend active, same generation).
    pub live: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MaglevSlot {
    pub hash: u32,
    pub slot: u32,
    pub backend_id: u32,
    pub address: Option<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlowBackend {
    pub address: SocketAddr,
    pub pool: Option<String>,
    pub name: Option<String>,
    pub active_in_kernel: bool,
    pub healthy: Option<bool>,
    pub drained: Option<bool>,
    pub ejected: Option<bool>,
    /// The kernel's next hop toward the backend (itself when on-link) and its neighbour
    /// entry; `None` when no route leads there.
    pub neighbour: Option<Neighbour>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Neighbour {
    /// The next hop's address: the backend when on-link, else its gateway.
    pub next_hop: IpAddr,
    /// Its link-layer address, once the kernel resolved it.
    pub mac: Option<String>,
    /// The device the packets leave by.
    pub device: String,
}

/// Parses the query string of `/debug/flow`.
pub fn parse_query(query: &str) -> Result<(FlowQuery, Option<String>, String), FlowError> {
    let (mut protocol, mut src, mut dst, mut host, mut path) = (None, None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::server::decode(value)
            .ok_or_else(|| FlowError::BadQuery(format!("bad percent-encoding in {key}")))?;
        let addr = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| FlowError::BadQuery(format!("{key}={v:?} is not ADDRESS:PORT")))
        };
        match key {
            "proto" => {
                protocol = Some(match value.as_str() {
                    "tcp" => PROTO_TCP,
                    "udp" => PROTO_UDP,
                    other => {
                        return Err(FlowError::BadQuery(format!("proto={other:?}: tcp or udp")));
                    }
                })
            }
            "src" => src = Some(addr(&value)?),
            "dst" => dst = Some(addr(&value)?),
            "host" => host = Some(value),
            "path" => path = Some(value),
            other => {
                return Err(FlowError::BadQuery(format!(
                    "unknown parameter {other:?} (proto, src, dst, host, path)"
                )));
            }
        }
    }
    let need = |what: &str| FlowError::BadQuery(format!("the {what} parameter is required"));
    let query = FlowQuery {
        protocol: protocol.unwrap_or(PROTO_TCP),
        src: src.ok_or_else(|| need("src"))?,
        dst: dst.ok_or_else(|| need("dst"))?,
    };
    let path = path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(FlowError::BadQuery("path must start with '/'".into()));
    }
    Ok((query, host, path))
}

/// Explains `query` from the live maps, named and judged with `status` and `live`.
pub fn explain(
    live: &Live,
    status: &Status,
    query: &FlowQuery,
    host: Option<&str>,
    path: &str,
) -> Result<FlowExplanation, FlowError> {
    let inspector = live.flows.as_ref().ok_or(FlowError::NoDataplane)?;
    let KernelAnswer {
        service,
        connection,
        maglev,
    } = inspector.explain(query)?;
    let protocol = if query.protocol == PROTO_UDP {
        "udp"
    } else {
        "tcp"
    };
    let named = status.services.iter().find(|s| {
        s.vip.parse::<IpAddr>().ok() == Some(query.dst.ip())
            && s.port == query.dst.port()
            && s.protocol == protocol
    });
    let l7 = match (named, &status.config) {
        (Some(s), Some(config)) if s.kind == "l7" => {
            let host = host.map_or_else(|| query.dst.ip().to_string(), str::to_string);
            route_for(config, &s.name, &host, path)
        }
        _ => None,
    };
    let live_connection = connection.filter(|c| c.live).and_then(|c| c.backend);
    let next = live_connection.or_else(|| maglev.and_then(|m| m.backend));
    let verdict = match (&service, named.map(|s| s.kind.as_str())) {
        (None, _) => "no service matches: the XDP program passes the packet to the kernel \
                      (or, for a NAT backend's reply, translates it)"
            .to_string(),
        (Some(_), Some("l7")) => "an L7 service: the XDP program passes the packet up to \
                                  the proxy's listener"
            .to_string(),
        (Some(_), _) => match (live_connection, next) {
            (Some(b), _) => format!("an established flow: it stays on {}", b.address),
            (None, Some(b)) if connection.is_some() => format!(
                "the connection table's backend is gone: Maglev re-steers the flow to {}",
                b.address
            ),
            (None, Some(b)) => format!("a new flow: Maglev sends it to {}", b.address),
            (None, None) => "the service has no usable backend: the flow is dropped or \
                             passed to the kernel (when_no_healthy)"
                .to_string(),
        },
    };
    Ok(FlowExplanation {
        protocol: protocol.into(),
        src: query.src,
        dst: query.dst,
        verdict,
        service: service.map(|s| FlowService {
            name: named.map(|n| n.name.clone()),
            kind: named.map(|n| n.kind.clone()),
            id: s.id,
            table_size: s.table_size,
        }),
        connection: connection.map(|c| FlowBackendRef {
            backend_id: c.backend_id,
            address: c.backend.map(|b| b.address),
            live: c.live,
        }),
        maglev: maglev.map(|m| MaglevSlot {
            hash: m.hash,
            slot: m.slot,
            backend_id: m.backend_id,
            address: m.backend.map(|b| b.address),
        }),
        backend: next
            .filter(|_| named.is_none_or(|s| s.kind != "l7"))
            .map(|b| backend_state(live, status, named.map(|s| s.pools.as_slice()), b)),
        l7,
    })
}

fn backend_state(
    live: &Live,
    status: &Status,
    pools: Option<&[String]>,
    backend: BackendEntry,
) -> FlowBackend {
    let address = backend.address.to_string();
    let configured = status
        .pools
        .iter()
        .filter(|p| pools.is_none_or(|names| names.contains(&p.name)))
        .find_map(|p| {
            p.backends
                .iter()
                .find(|b| b.address == address)
                .map(|b| (p.name.clone(), b.name.clone()))
        });
    let health = configured.as_ref().and_then(|(pool, _)| {
        let view = live.health.as_ref()?.view();
        let state = view.state(pool, backend.address)?.clone();
        Some(state)
    });
    let now = Instant::now();
    FlowBackend {
        address: backend.address,
        pool: configured.as_ref().map(|(p, _)| p.clone()),
        name: configured.map(|(_, n)| n),
        active_in_kernel: backend.active,
        healthy: health.as_ref().map(|h| h.healthy),
        drained: health.as_ref().map(|h| h.drained),
        ejected: health.as_ref().map(|h| h.is_ejected(now)),
        neighbour: neighbour(backend.address.ip()),
    }
}

/// The next hop toward `ip` as the kernel's FIB has it (what the program's
/// `bpf_fib_lookup` asks), IPv4 or IPv6, on-link or routed.
fn neighbour(ip: IpAddr) -> Option<Neighbour> {
    let (next_hop, device, mac) = crate::dataplane::next_hop_of(ip)?;
    Some(Neighbour {
        next_hop,
        mac,
        device,
    })
}
