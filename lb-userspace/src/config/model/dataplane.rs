//! The validated `[dataplane]` settings.

use std::path::{Path, PathBuf};

/// Default `dataplane.pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sluice";

/// Settings of the L4 data path that outlive one agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Directory on a bpffs mount holding the pinned maps and XDP links, in a subfolder per
    /// schema version (`v1`, ...).
    pub pin_dir: PathBuf,
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

impl DataplaneSettings {
    /// The folder of this build's map schema under `pin_dir`.
    pub fn schema_dir(&self) -> PathBuf {
        schema_dir(&self.pin_dir)
    }
}

/// The folder of this build's map schema under `pin_dir`: `pin_dir/v<SCHEMA_VERSION>`.
pub fn schema_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{}", lb_common::schema::SCHEMA_VERSION))
}
