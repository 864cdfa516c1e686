//! Taking the data path down: `sluice detach`, and refusing to run beside another schema's.

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use tracing::{info, warn};

use super::link::{wait_released, wait_unloaded};
use super::{Pins, pin_error};
use crate::dataplane::DataplaneError;

/// Refuses a pin directory where a data path of another schema version runs: this agent
/// cannot adopt its tables, and attaching beside it would fail or take flows away. `carried`
/// is a folder this agent carries over (`super::migrate`), not refused.
pub fn check_other_schemas(pin_dir: &Path, carried: Option<&Path>) -> Result<(), DataplaneError> {
    let ours = crate::config::schema_dir(pin_dir);
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let folder = entry.path();
        if folder == ours || Some(folder.as_path()) == carried || !folder.is_dir() {
            continue;
        }
        let interfaces = Pins {
            dir: folder.clone(),
        }
        .linked_interfaces();
        if !interfaces.is_empty() {
            return Err(DataplaneError::OtherSchema {
                found: entry.file_name().to_string_lossy().into_owned(),
                ours: lb_common::schema::SCHEMA_VERSION,
                path: folder.display().to_string(),
                pin_dir: pin_dir.display().to_string(),
                interfaces: interfaces.join(", "),
            });
        }
    }
    Ok(())
}

/// `sluice detach`: removes the managed neighbour entries toward the backends the pinned
/// backend map names, then everything under `pin_dir` ([`remove_all`]).
pub fn detach(pin_dir: &Path) -> Result<Removed, DataplaneError> {
    let schema = crate::config::schema_dir(pin_dir);
    let backends = pinned_backend_addresses(&schema.join(lb_common::maps::BACKENDS));
    let mut removed = remove_all(pin_dir)?;
    if !backends.is_empty() {
        removed.neighbours = crate::dataplane::Neighbours::remove_for(&backends);
    }
    Ok(removed)
}

/// Addresses of the active backends in a pinned backend map (none if it is not there).
fn pinned_backend_addresses(path: &Path) -> Vec<std::net::IpAddr> {
    use aya::maps::{Array, Map, MapData};
    use lb_common::backend::{BACKEND_ACTIVE, BackendValue};

    let Ok(data) = MapData::from_pin(path) else {
        return Vec::new();
    };
    let Ok(array) = Array::<MapData, BackendValue>::try_from(Map::Array(data)) else {
        return Vec::new();
    };
    let mut addresses: Vec<std::net::IpAddr> = array
        .iter()
        .filter_map(Result::ok)
        .filter(|b| b.flags & BACKEND_ACTIVE != 0)
        .filter_map(|b| lb_common::addr::from_wire(&b.addr, b.family))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// What `detach` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps: usize,
    pub folders: usize,
    pub neighbours: usize,
}

/// Removes every pinned link (detaching the program), every pinned map and the schema
/// folders under `pin_dir`, then `pin_dir` itself when empty. Folders of other schema
/// versions are removed too: nothing else is meant to live there.
pub fn remove_all(pin_dir: &Path) -> Result<Removed, DataplaneError> {
    let mut removed = Removed::default();
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(removed);
    };
    for entry in entries.filter_map(Result::ok) {
        let folder = entry.path();
        if !folder.is_dir() {
            continue;
        }
        let one = remove_folder(&folder)?;
        removed.links.extend(one.links);
        removed.maps += one.maps;
        removed.folders += one.folders;
    }
    if let Err(error) = std::fs::remove_dir(pin_dir) {
        warn!(path = %pin_dir.display(), %error, "left the pin directory in place");
    }
    Ok(removed)
}

/// Removes one schema folder: its pinned links (detaching their program), its pinned maps,
/// and the folder.
pub fn remove_folder(folder: &Path) -> Result<Removed, DataplaneError> {
    let mut removed = Removed::default();
    let pins = Pins {
        dir: folder.to_path_buf(),
    };
    let (mut released, mut programs) = (Vec::new(), Vec::new());
    for interface in pins.linked_interfaces() {
        let path = pins.link(&interface);
        if let Some(info) = PinnedLink::from_pin(&path)
            .ok()
            .and_then(|link| FdLink::from(link).info().ok())
        {
            released.push(info.id());
            programs.push(info.program_id());
        }
        std::fs::remove_file(&path)
            .map_err(|e| pin_error("removing the pinned XDP link", &path)(e.into()))?;
        info!(interface, "detached the XDP program");
        removed.links.push(interface);
    }
    wait_released(&released);
    // Nothing else holds the programs: once they are unloaded, no interface runs them.
    wait_unloaded(&programs);
    let files = std::fs::read_dir(folder).map_err(|e| pin_error("reading", folder)(e.into()))?;
    for file in files.filter_map(Result::ok) {
        let path = file.path();
        std::fs::remove_file(&path)
            .map_err(|e| pin_error("removing the pinned map", &path)(e.into()))?;
        removed.maps += 1;
    }
    std::fs::remove_dir(folder)
        .map_err(|e| pin_error("removing the pin folder", folder)(e.into()))?;
    removed.folders += 1;
    Ok(removed)
}
