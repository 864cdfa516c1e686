//! Reading what the kernel has: which XDP program an interface runs, and that program's maps.
//! Tests look here rather than asking the agent, so they fail when the program is not attached.

use aya::maps::{MapData, PerCpuArray};
use aya::programs::loaded_programs;
use lb_common::stats::{Counter, Reason};

use crate::Netns;

/// How an XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Driver (native) mode.
    Native,
    /// Generic (skb) mode.
    Generic,
    /// Any other mode number `ip` reports (offload, multi).
    Other(u64),
}

/// The id and mode of the XDP program attached to `ifname` in `ns`, if any.
pub fn xdp_program(ns: &Netns, ifname: &str) -> Option<(u32, XdpAttachMode)> {
    let json = ns.ip(["-j", "-d", "link", "show", "dev", ifname]);
    let links: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("`ip -j link show` printed invalid JSON ({e}): {json}"));
    let xdp = links.get(0)?.get("xdp")?;
    let id = xdp.get("prog")?.get("id")?.as_u64()?;
    let mode = match xdp.get("mode").and_then(|m| m.as_u64()) {
        Some(1) => XdpAttachMode::Native,
        Some(2) => XdpAttachMode::Generic,
        Some(other) => XdpAttachMode::Other(other),
        None => XdpAttachMode::Other(0),
    };
    Some((u32::try_from(id).ok()?, mode))
}

/// Opens the map called `name` that program `prog_id` uses.
pub fn program_map(prog_id: u32, name: &str) -> Result<MapData, String> {
    let program = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .ok_or_else(|| format!("no loaded program with id {prog_id}"))?;
    let map_ids = program
        .map_ids()
        .map_err(|e| format!("reading map ids of program {prog_id}: {e}"))?
        .unwrap_or_default();
    for id in map_ids {
        let Ok(map) = MapData::from_id(id) else {
            continue;
        };
        let matches = map
            .info()
            .ok()
            .and_then(|info| info.name_as_str().map(|n| n == name))
            .unwrap_or(false);
        if matches {
            return Ok(map);
        }
    }
    Err(format!("program {prog_id} uses no map named {name}"))
}

/// A slot of program `prog_id`'s global counters, summed over CPUs.
pub fn global_counter(prog_id: u32, reason: Reason) -> Result<Counter, String> {
    let map = program_map(prog_id, lb_common::maps::GLOBAL_STATS)?;
    let array = PerCpuArray::<_, Counter>::try_from(aya::maps::Map::PerCpuArray(map))
        .map_err(|e| format!("GLOBAL_STATS is not a per-CPU array of counters: {e}"))?;
    let per_cpu = array
        .get(&(reason as u32), 0)
        .map_err(|e| format!("reading GLOBAL_STATS[{reason:?}]: {e}"))?;
    let mut total = Counter::default();
    for counter in per_cpu.iter() {
        total.add(counter);
    }
    Ok(total)
}
