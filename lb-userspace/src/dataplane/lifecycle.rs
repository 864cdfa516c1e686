//! What outlives the agent: the maps and each interface's XDP link, pinned under
//! `[dataplane] pin_dir/v<schema>`. A starting agent adopts what it finds there, swapping in
//! its own program by an atomic link update; `detach` removes all of it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, loaded_links, loaded_programs};
use tracing::{info, warn};

use super::DataplaneError;

/// `statfs` magic of a bpffs mount.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
/// Prefix of the pinned XDP links, followed by the interface name.
const LINK_PREFIX: &str = "link_";

/// The pin folder of one map schema.
#[derive(Clone, Debug)]
pub struct Pins {
    dir: PathBuf,
}

fn pin_error(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DataplaneError {
    let path = path.display().to_string();
    move |source| DataplaneError::Pin { what, path, source }
}

impl Pins {
    /// The folder `dir` (created if missing), checked to be on bpffs. When `dir` is under
    /// `/sys/fs/bpf` and nothing is mounted there (systemd mounts it, bare systems may not),
    /// bpffs is mounted there first, as libbpf-based agents do.
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let root = Path::new(BPFFS_ROOT);
        if dir.starts_with(root) && !is_bpffs(root) {
            mount_bpffs(root)?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| pin_error("creating the pin directory", dir)(e.into()))?;
        if !is_bpffs(dir) {
            return Err(DataplaneError::NotBpffs {
                path: dir.display().to_string(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the link on `interface` is pinned.
    pub fn link(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("{LINK_PREFIX}{interface}"))
    }

    /// Whether a previous agent left maps here.
    pub fn has_maps(&self) -> bool {
        self.map(lb_common::maps::SERVICES).exists()
    }

    /// Slots of the pinned ring map, if there is one.
    pub fn ring_capacity(&self) -> Option<u32> {
        MapInfo::from_pin(self.map(lb_common::maps::MAGLEV_RINGS))
            .ok()
            .map(|info| info.max_entries())
    }

    /// Interfaces with a pinned link.
    pub fn linked_interfaces(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(LINK_PREFIX))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }
}

/// Where bpffs is conventionally mounted.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn mount_bpffs(root: &Path) -> Result<(), DataplaneError> {
    let c_root = CString::new(root.as_os_str().as_bytes())
        .map_err(|e| pin_error("mounting bpffs at", root)(e.into()))?;
    let fs = c"bpf";
    // SAFETY: every pointer is a valid NUL-terminated string for the call; no data argument.
    let rc = unsafe {
        libc::mount(
            fs.as_ptr(),
            c_root.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(pin_error("mounting bpffs at", root)(
            std::io::Error::last_os_error().into(),
        ));
    }
    info!(
        path = BPFFS_ROOT,
        "mounted bpffs: nothing was mounted there"
    );
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; `c_path` is NUL-terminated and lives
    // through the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    stat.f_type == BPF_FS_MAGIC
}

/// An interface's XDP link, pinned: it keeps the program attached after the agent exits.
pub struct PinnedAttachment {
    pub interface: String,
    path: PathBuf,
    /// Held so the agent can unpin and release it; the pin alone keeps it alive.
    link: FdLink,
}

impl PinnedAttachment {
    /// Pins a link `program` just made on `interface`.
    pub fn pin_new(
        program: &mut Xdp,
        link: aya::programs::xdp::XdpLinkId,
        interface: &str,
        path: PathBuf,
    ) -> Result<Self, DataplaneError> {
        let link = program
            .take_link(link)
            .map_err(|e| pin_error("taking the XDP link to pin at", &path)(e.into()))?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            pin_error("the XDP link is not a bpf_link, cannot pin at", &path)(e.into())
        })?;
        let pinned = fd_link
            .pin(&path)
            .map_err(|e| pin_error("pinning the XDP link at", &path)(e.into()))?;
        Ok(Self {
            interface: interface.to_owned(),
            path,
            link: FdLink::from(pinned),
        })
    }

    /// Adopts the link pinned at `path` and points it at `program` with one atomic update,
    /// unless it already runs the same code. `Ok(None)`: nothing is pinned there.
    pub fn adopt(
        program: &mut Xdp,
        interface: &str,
        path: PathBuf,
    ) -> Result<Option<Self>, DataplaneError> {
        if !path.exists() {
            return Ok(None);
        }
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| pin_error("opening the pinned XDP link", &path)(e.into()))?;
        let fd_link = FdLink::from(pinned);
        let running = fd_link
            .info()
            .ok()
            .and_then(|info| program_tag(info.program_id()));
        let ours = program.info().ok().map(|info| info.tag());
        if running.is_some() && running == ours {
            info!(
                interface,
                "kept the running XDP program: it is the same as this agent's"
            );
            return Ok(Some(Self {
                interface: interface.to_owned(),
                path,
                link: fd_link,
            }));
        }
        let link = XdpLink::try_from(fd_link)
            .map_err(|e| pin_error("the pinned link is not an XDP link:", &path)(e.into()))?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| pin_error("updating the pinned XDP link", &path)(e.into()))?;
        let link = program
            .take_link(id)
            .map_err(|e| pin_error("taking the updated XDP link", &path)(e.into()))?;
        let fd_link = FdLink::try_from(link)
            .map_err(|e| pin_error("the updated XDP link", &path)(e.into()))?;
        info!(
            interface,
            "swapped this agent's XDP program in with an atomic link update"
        );
        Ok(Some(Self {
            interface: interface.to_owned(),
            path,
            link: fd_link,
        }))
    }

    /// Unpins the link: dropping it then detaches the program from the interface.
    pub fn remove(self) -> Result<(), DataplaneError> {
        let id = self.link.info().ok().map(|info| info.id());
        std::fs::remove_file(&self.path)
            .map_err(|e| pin_error("removing the pinned XDP link", &self.path)(e.into()))?;
        drop(self.link);
        wait_released(id.as_slice());
        Ok(())
    }
}

/// The kernel releases a link whose last reference went away from a work queue: wait (a
/// little) until `ids` are gone, so the program is off the interfaces when `detach` returns.
fn wait_released(ids: &[u32]) {
    if ids.is_empty() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let alive = loaded_links()
            .filter_map(Result::ok)
            .any(|link| ids.contains(&link.id()));
        if !alive {
            return;
        }
        if std::time::Instant::now() >= deadline {
            warn!(?ids, "the kernel has not released the XDP links yet");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits (a little) until the programs `ids` are unloaded.
fn wait_unloaded(ids: &[u32]) {
    if ids.is_empty() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while loaded_programs()
        .filter_map(Result::ok)
        .any(|p| ids.contains(&p.id()))
    {
        if std::time::Instant::now() >= deadline {
            warn!(?ids, "the kernel has not unloaded the XDP programs yet");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn program_tag(id: u32) -> Option<u64> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.tag())
}

/// Refuses a pin directory where a data path of another schema version runs: this agent
/// cannot adopt its tables, and attaching beside it would fail or take flows away.
pub fn check_other_schemas(pin_dir: &Path) -> Result<(), DataplaneError> {
    let ours = crate::config::schema_dir(pin_dir);
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let folder = entry.path();
        if folder == ours || !folder.is_dir() {
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
        removed.neighbours = super::Neighbours::remove_for(&backends);
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
        let pins = Pins {
            dir: folder.clone(),
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
        let files =
            std::fs::read_dir(&folder).map_err(|e| pin_error("reading", &folder)(e.into()))?;
        for file in files.filter_map(Result::ok) {
            let path = file.path();
            std::fs::remove_file(&path)
                .map_err(|e| pin_error("removing the pinned map", &path)(e.into()))?;
            removed.maps += 1;
        }
        std::fs::remove_dir(&folder)
            .map_err(|e| pin_error("removing the pin folder", &folder)(e.into()))?;
        removed.folders += 1;
    }
    if let Err(error) = std::fs::remove_dir(pin_dir) {
        warn!(path = %pin_dir.display(), %error, "left the pin directory in place");
    }
    Ok(removed)
}
