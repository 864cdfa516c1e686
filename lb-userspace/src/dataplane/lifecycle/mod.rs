//! What outlives the agent: the maps and each interface's XDP link, pinned under
//! `[dataplane] pin_dir/v<schema>`. A starting agent adopts what it finds there, swapping in
//! its own program by an atomic link update; `detach` removes all of it. A data path of the
//! previous schema is carried over (`migrate`).

mod detach;
mod link;
pub mod migrate;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;
use tracing::info;

use super::DataplaneError;

pub use detach::{Removed, check_other_schemas, detach, remove_all, remove_folder};
pub use link::PinnedAttachment;

/// [`pin_error`] for callers outside the lifecycle module.
pub(crate) fn pin_error_for(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> DataplaneError {
    pin_error(what, path)
}

/// `statfs` magic of a bpffs mount.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
/// Prefix of the pinned XDP links, followed by the interface name.
const LINK_PREFIX: &str = "link_";

/// The pin folder of one map schema.
#[derive(Clone, Debug)]
pub struct Pins {
    pub(super) dir: PathBuf,
}

pub(super) fn pin_error(
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
        self.max_entries(lb_common::maps::MAGLEV_RINGS)
    }

    /// `max_entries` of pinned map `name`, if it is there.
    pub fn max_entries(&self, name: &str) -> Option<u32> {
        MapInfo::from_pin(self.map(name))
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
