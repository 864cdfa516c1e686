//! The VIP set the XDP program checks echo requests against: every address a service uses,
//! kept in step with the desired state (new addresses in, then gone ones out).

use std::collections::BTreeSet;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use lb_common::icmp::VipKey;
use lb_common::maps;

use super::DataplaneError;
use crate::balancer::DesiredState;

/// The program's VIP map and what this agent wrote into it. The map is not pinned: each
/// program starts with it empty, and the first [`VipSet::apply`] fills it.
pub struct VipSet {
    map: HashMap<MapData, VipKey, u32>,
    applied: BTreeSet<VipKey>,
}

impl VipSet {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let map = ebpf
            .take_map(maps::VIPS)
            .ok_or(DataplaneError::MissingMap(maps::VIPS))?;
        Ok(Self {
            map: HashMap::try_from(map).map_err(DataplaneError::map)?,
            applied: BTreeSet::new(),
        })
    }

    /// Writes the addresses `desired` adds and removes those it no longer has.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<(), DataplaneError> {
        let wanted = vips(desired);
        for key in wanted.difference(&self.applied) {
            self.map.insert(key, 1, 0).map_err(DataplaneError::map)?;
        }
        for key in self.applied.difference(&wanted) {
            self.map.remove(key).map_err(DataplaneError::map)?;
        }
        self.applied = wanted;
        Ok(())
    }
}

/// Every address a service of `desired` uses, L4 and L7.
pub fn vips(desired: &DesiredState) -> BTreeSet<VipKey> {
    desired
        .services
        .keys()
        .map(|key| VipKey {
            addr: key.addr,
            family: key.family,
            _pad: [0; 3],
        })
        .collect()
}
