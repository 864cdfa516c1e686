//! Reading the XDP program's per-CPU counters, summed over CPUs and labelled with the names
//! the agent gave the ids. Shared with the metrics endpoint; reads never block the data path.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aya::Ebpf;
use aya::maps::{MapData, PerCpuArray};
use lb_common::icmp::IcmpReason;
use lb_common::maps;
use lb_common::stats::{Counter, FlowCounter, Reason};

use super::DataplaneError;

/// What the ids in the counter maps stand for, replaced after every map sync.
#[derive(Clone, Debug, Default)]
pub struct StatsLabels {
    /// Service id and name.
    pub services: Vec<(u32, String)>,
    /// Backend id, pool name and address.
    pub backends: Vec<(u32, String, SocketAddr)>,
}

/// Counters of one labelled service or backend.
#[derive(Clone, Debug)]
pub struct Labelled<L> {
    pub label: L,
    pub counter: FlowCounter,
}

struct Maps {
    global: PerCpuArray<MapData, Counter>,
    icmp: PerCpuArray<MapData, Counter>,
    services: PerCpuArray<MapData, FlowCounter>,
    backends: PerCpuArray<MapData, FlowCounter>,
}

/// Reads the counter maps. Cheap to share (`Arc`).
pub struct StatsReader {
    maps: Mutex<Maps>,
    labels: ArcSwap<StatsLabels>,
}

impl StatsReader {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Arc<Self>, DataplaneError> {
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name));
        let global =
            PerCpuArray::try_from(take(maps::GLOBAL_STATS)?).map_err(DataplaneError::map)?;
        let icmp = PerCpuArray::try_from(take(maps::ICMP_STATS)?).map_err(DataplaneError::map)?;
        let services =
            PerCpuArray::try_from(take(maps::SERVICE_STATS)?).map_err(DataplaneError::map)?;
        let backends =
            PerCpuArray::try_from(take(maps::BACKEND_STATS)?).map_err(DataplaneError::map)?;
        Ok(Arc::new(Self {
            maps: Mutex::new(Maps {
                global,
                icmp,
                services,
                backends,
            }),
            labels: ArcSwap::from_pointee(StatsLabels::default()),
        }))
    }

    pub(super) fn set_labels(&self, labels: StatsLabels) {
        self.labels.store(Arc::new(labels));
    }

    /// Every packet reason with its counts.
    pub fn reasons(&self) -> Result<Vec<(Reason, Counter)>, DataplaneError> {
        let maps = self.lock();
        Reason::ALL
            .iter()
            .map(|reason| Ok((*reason, summed(&maps.global, *reason as u32)?)))
            .collect()
    }

    /// Every ICMP reason with its counts (since this program was loaded: not pinned).
    pub fn icmp_reasons(&self) -> Result<Vec<(IcmpReason, Counter)>, DataplaneError> {
        let maps = self.lock();
        IcmpReason::ALL
            .iter()
            .map(|reason| Ok((*reason, summed(&maps.icmp, *reason as u32)?)))
            .collect()
    }

    /// Counters of every L4 service the maps hold, by name.
    pub fn services(&self) -> Result<Vec<Labelled<String>>, DataplaneError> {
        let labels = self.labels.load();
        let maps = self.lock();
        labels
            .services
            .iter()
            .map(|(id, name)| {
                Ok(Labelled {
                    label: name.clone(),
                    counter: sum(&maps.services, *id)?,
                })
            })
            .collect()
    }

    /// Counters of every backend the maps hold, by pool and address.
    pub fn backends(&self) -> Result<Vec<Labelled<(String, SocketAddr)>>, DataplaneError> {
        let labels = self.labels.load();
        let maps = self.lock();
        labels
            .backends
            .iter()
            .map(|(id, pool, addr)| {
                Ok(Labelled {
                    label: (pool.clone(), *addr),
                    counter: sum(&maps.backends, *id)?,
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding this lock cannot leave the map handles inconsistent.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn sum(map: &PerCpuArray<MapData, FlowCounter>, id: u32) -> Result<FlowCounter, DataplaneError> {
    let per_cpu = map.get(&id, 0).map_err(DataplaneError::map)?;
    let mut total = FlowCounter::default();
    per_cpu.iter().for_each(|c| total.add(c));
    Ok(total)
}

/// Entry `index` of a per-CPU counter array, summed over the CPUs.
fn summed(map: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter, DataplaneError> {
    let per_cpu = map.get(&index, 0).map_err(DataplaneError::map)?;
    let mut total = Counter::default();
    per_cpu.iter().for_each(|c| total.add(c));
    Ok(total)
}
