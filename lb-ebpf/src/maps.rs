//! Every map the program uses. The agent sizes the large ones at load time; the numbers
//! here are defaults. Names match `lb_common::maps`.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use lb_common::backend::BackendValue;
use lb_common::flood::{NewFlowWindow, SourceKey, TokenBucket};
use lb_common::flow::{FlowKey, FlowValue, NatValue};
use lb_common::hop::CachedHop;
use lb_common::icmp::{IcmpReason, VipKey};
use lb_common::limits;
use lb_common::service::{ServiceKey, ServiceValue};
use lb_common::stats::{Counter, FlowCounter, Reason};

/// (VIP, port, protocol) to service.
#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(limits::MAX_SERVICES, 0);

/// Backend id to backend.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<BackendValue> = Array::with_max_entries(limits::MAX_BACKENDS, 0);

/// Every service's two Maglev tables, back to back; slots hold backend ids.
#[map(name = "MAGLEV_RINGS")]
pub static MAGLEV_RINGS: Array<u32> = Array::with_max_entries(limits::DEFAULT_RING_CAPACITY, 0);

/// Established flows (client to VIP) to their backend. One LRU list for all CPUs, not one
/// per CPU (`BPF_F_NO_COMMON_LRU`): a per-CPU list rotates a few cold entries on every
/// insert, which cost a new flow about 200 ns more; the shared list hands each CPU free
/// entries 128 at a time (its lock taken once per batch) and rotates once per batch.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_CONNTRACK_ENTRIES, 0);

/// NAT backends' reply 5-tuples (backend to client address and the source port the backend
/// saw) to the VIP and client port they must be translated back to. One LRU list, as
/// `CONNTRACK`.
#[map(name = "NAT_REVERSE")]
pub static NAT_REVERSE: LruHashMap<FlowKey, NatValue> =
    LruHashMap::with_max_entries(limits::DEFAULT_CONNTRACK_ENTRIES, 0);

/// Per CPU, the next hop toward each backend as the FIB last gave it.
#[map(name = "NEXT_HOPS")]
pub static NEXT_HOPS: PerCpuArray<CachedHop> =
    PerCpuArray::with_max_entries(limits::NEXT_HOP_CACHE_SLOTS, 0);

/// Per CPU, the entry of a new flow as it is built for its insert: the verifier's 512 bytes of
/// stack have no room left for it in the TCP/UDP path. Not pinned.
#[map(name = "NEW_ENTRY")]
pub static NEW_ENTRY: PerCpuArray<FlowValue> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, new flows entered into the connection table in the current second.
#[map(name = "NEW_FLOW_WINDOW")]
pub static NEW_FLOW_WINDOW: PerCpuArray<NewFlowWindow> = PerCpuArray::with_max_entries(1, 0);

/// Per source address, its new-flow token bucket. Not pinned: a new program starts every
/// source with a full bucket.
#[map(name = "SOURCE_BUCKETS")]
pub static SOURCE_BUCKETS: LruHashMap<SourceKey, TokenBucket> =
    LruHashMap::with_max_entries(limits::SOURCE_BUCKETS, 0);

/// Program-wide switches set by the agent (`lb_common::limits::SETTING_*`).
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<u32> = Array::with_max_entries(limits::SETTINGS_COUNT, 0);

/// What happened to packets, per [`Reason`].
#[map(name = "GLOBAL_STATS")]
pub static GLOBAL_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// What happened to ICMP packets the ICMP path handled, per [`IcmpReason`]. Not pinned.
#[map(name = "ICMP_STATS")]
pub static ICMP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(IcmpReason::COUNT, 0);

/// Every address a service listens on (the value is unused): echo requests to these get
/// `SETTING_VIP_ECHO`. Not pinned: the agent writes it into each program it loads.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, u32> = HashMap::with_max_entries(limits::MAX_VIPS, 0);

/// The source ports NAT backends reply from, one bit each (`limits::nat_source_port_bit`):
/// a packet for no service is looked up in `NAT_REVERSE` only when it comes from one of
/// them, so other traffic to the host does not pay for a hash of its 5-tuple. Not pinned:
/// the agent writes it into each program it loads.
#[map(name = "NAT_SOURCE_PORTS")]
pub static NAT_SOURCE_PORTS: Array<u64> = Array::with_max_entries(limits::NAT_SOURCE_PORT_WORDS, 0);

/// Per service id.
#[map(name = "SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<FlowCounter> =
    PerCpuArray::with_max_entries(limits::MAX_SERVICES, 0);

/// Per backend id.
#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<FlowCounter> =
    PerCpuArray::with_max_entries(limits::MAX_BACKENDS, 0);
