//! Read-only views of the XDP program's maps, for `sluice explain` and `GET /debug/flow`:
//! what the program would do with one flow, read from the live maps with the same lookups
//! the program makes (service, connection table, Maglev slot), not from a model.
//!
//! The inspector opens its own descriptors of the program's maps (by the ids the kernel
//! lists for the program), so it shares nothing with the code that writes them.

use std::net::{IpAddr, SocketAddr};

use aya::Ebpf;
use aya::maps::{Array, HashMap, Map, MapData, MapError};
use aya::programs::{ProgramError, Xdp};
use lb_common::addr::{from_wire, host_order, to_wire};
use lb_common::backend::{BACKEND_ACTIVE, BackendValue};
use lb_common::flow::{FlowKey, FlowValue};
use lb_common::hash::{FlowHashInput, flow_hash, maglev_slot};
use lb_common::maps;
use lb_common::service::{ServiceKey, ServiceValue};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("listing the XDP program's maps: {0}")]
    Program(#[from] ProgramError),
    #[error("reading a BPF map: {0}")]
    Map(#[from] MapError),
    #[error("the loaded object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("the XDP program has no map named {0}")]
    MissingMap(&'static str),
    #[error("the source {src} and destination {dst} are of different address families")]
    MixedFamilies { src: IpAddr, dst: IpAddr },
}

/// One flow to explain: the first packet's 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What the maps say about a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelAnswer {
    /// The service entry the destination matches (`None`: the program passes the packet
    /// to the kernel, or treats it as a NAT reply).
    pub service: Option<ServiceEntry>,
    /// The connection table's entry for the flow.
    pub connection: Option<ConnectionEntry>,
    /// Where Maglev places the flow if it is new (or its entry is gone).
    pub maglev: Option<MaglevPick>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub id: u32,
    /// `lb_common::service::SERVICE_*` flags.
    pub flags: u32,
    pub table_size: u32,
    pub ring_offset: u32,
    pub hash_seed: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionEntry {
    pub backend_id: u32,
    /// The backend the entry points at, if the id holds one.
    pub backend: Option<BackendEntry>,
    /// The program keeps the flow on this backend: it is active and the entry's generation
    /// is the backend's (otherwise the flow is re-steered by Maglev).
    pub live: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevPick {
    pub hash: u32,
    pub slot: u32,
    pub backend_id: u32,
    pub backend: Option<BackendEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub address: SocketAddr,
    /// Takes packets (`BACKEND_ACTIVE`).
    pub active: bool,
    pub generation: u32,
}

/// Descriptors of the maps `explain` reads.
pub struct FlowInspector {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    rings: Array<MapData, u32>,
    conntrack: HashMap<MapData, FlowKey, FlowValue>,
}

impl std::fmt::Debug for FlowInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowInspector").finish_non_exhaustive()
    }
}

impl FlowInspector {
    /// Opens the maps of the loaded XDP program in `ebpf`.
    pub(super) fn open(ebpf: &Ebpf) -> Result<Self, InspectError> {
        let name = lb_common::XDP_PROGRAM_NAME;
        let program: &Xdp = ebpf
            .program(name)
            .ok_or(InspectError::MissingProgram(name))?
            .try_into()?;
        let ids = program.info()?.map_ids()?.unwrap_or_default();
        let mut found: std::collections::HashMap<String, MapData> = Default::default();
        for id in ids {
            let data = MapData::from_id(id)?;
            if let Some(name) = data.info()?.name_as_str() {
                found.insert(name.to_string(), data);
            }
        }
        let mut take = |name: &'static str| {
            found
                .remove(name)
                .ok_or(InspectError::MissingMap(name))
                .and_then(|data| Ok(Map::from_map_data(data)?))
        };
        Ok(Self {
            services: HashMap::try_from(take(maps::SERVICES)?)?,
            backends: Array::try_from(take(maps::BACKENDS)?)?,
            rings: Array::try_from(take(maps::MAGLEV_RINGS)?)?,
            conntrack: HashMap::try_from(take(maps::CONNTRACK)?)?,
        })
    }

    /// Reads what the program would do with the first packet of `query`.
    pub fn explain(&self, query: &FlowQuery) -> Result<KernelAnswer, InspectError> {
        let (src, dst) = (query.src.ip(), query.dst.ip());
        let ((src_addr, family), (dst_addr, dst_family)) = (to_wire(src), to_wire(dst));
        if family != dst_family {
            return Err(InspectError::MixedFamilies { src, dst });
        }
        let key = ServiceKey {
            addr: dst_addr,
            port: query.dst.port().to_be(),
            protocol: query.protocol,
            family,
        };
        let Some(service) = absent_is_none(self.services.get(&key, 0))? else {
            return Ok(KernelAnswer {
                service: None,
                connection: None,
                maglev: None,
            });
        };
        let flow = FlowKey {
            src_addr,
            dst_addr,
            src_port: query.src.port().to_be(),
            dst_port: query.dst.port().to_be(),
            protocol: query.protocol,
            family,
            _pad: [0; 2],
        };
        let connection = match absent_is_none(self.conntrack.get(&flow, 0))? {
            Some(entry) => {
                let backend = self.backend(entry.backend_id)?;
                Some(ConnectionEntry {
                    backend_id: entry.backend_id,
                    backend,
                    live: backend
                        .is_some_and(|b| b.active && b.generation == entry.backend_generation),
                })
            }
            None => None,
        };
        let maglev = if service.table_size == 0 {
            None
        } else {
            let input = FlowHashInput {
                src_addr: host_order(&src_addr),
                dst_addr: host_order(&dst_addr),
                src_port: query.src.port(),
                dst_port: query.dst.port(),
                protocol: query.protocol,
            };
            let hash = flow_hash(&input, service.hash_seed);
            let slot = maglev_slot(hash, service.table_size);
            let backend_id = self.rings.get(&service.ring_offset.wrapping_add(slot), 0)?;
            Some(MaglevPick {
                hash,
                slot,
                backend_id,
                backend: self.backend(backend_id)?,
            })
        };
        Ok(KernelAnswer {
            service: Some(ServiceEntry {
                id: service.id,
                flags: service.flags,
                table_size: service.table_size,
                ring_offset: service.ring_offset,
                hash_seed: service.hash_seed,
            }),
            connection,
            maglev,
        })
    }

    fn backend(&self, id: u32) -> Result<Option<BackendEntry>, InspectError> {
        let Some(value) = absent_is_none(self.backends.get(&id, 0))? else {
            return Ok(None);
        };
        Ok(from_wire(&value.addr, value.family).map(|ip| BackendEntry {
            address: SocketAddr::new(ip, u16::from_be(value.port)),
            active: value.flags & BACKEND_ACTIVE != 0,
            generation: value.generation,
        }))
    }
}

/// A missing key is an answer (`None`), not an error.
fn absent_is_none<V>(result: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(err) => Err(err),
    }
}
