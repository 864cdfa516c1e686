//! The validated `[dataplane]` settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `dataplane.pin_dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sluice";
/// Default `dataplane.conntrack_entries`.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = lb_common::limits::DEFAULT_CONNTRACK_ENTRIES;
/// Default `dataplane.tcp_idle_timeout`: longer than Linux's default TCP keepalive time (2 h),
/// so an idle connection whose ends send keepalives keeps its entry.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(3 * 3600);
/// Default `dataplane.udp_idle_timeout`.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(300);
/// Default `dataplane.tcp_closing_timeout`.
pub const DEFAULT_TCP_CLOSING: Duration = Duration::from_secs(10);

/// Default `dataplane.new_flows_per_cpu`.
pub const DEFAULT_NEW_FLOWS_PER_CPU: u32 = 125_000;

/// Limits on new flows, enforced on the data path (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    /// New flows a CPU enters into the connection table per second; above, new flows are
    /// steered by Maglev without an entry.
    pub new_flows_per_cpu: u32,
    /// New flows per second one source address may open; the excess is dropped.
    pub source_rate: u32,
    /// New flows a source may open at once before its rate applies.
    pub source_burst: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        Self {
            new_flows_per_cpu: DEFAULT_NEW_FLOWS_PER_CPU,
            source_rate: 0,
            source_burst: 0,
        }
    }
}

/// What echo requests (ping) to a VIP get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VipEcho {
    /// The XDP program answers them itself, whether or not the host holds the VIP.
    #[default]
    Reply,
    /// Passed to the host's stack, which answers if it holds the VIP.
    Pass,
    /// Dropped.
    Drop,
}

impl VipEcho {
    /// The names `vip_echo` takes, in the order of the variants.
    pub const NAMES: [&'static str; 3] = ["reply", "pass", "drop"];

    /// The setting from its name in the config.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "reply" => Some(Self::Reply),
            "pass" => Some(Self::Pass),
            "drop" => Some(Self::Drop),
            _ => None,
        }
    }

    /// The value of the program's `SETTING_VIP_ECHO` slot.
    pub fn setting(self) -> u32 {
        match self {
            Self::Reply => lb_common::icmp::VIP_ECHO_REPLY,
            Self::Pass => lb_common::icmp::VIP_ECHO_PASS,
            Self::Drop => lb_common::icmp::VIP_ECHO_DROP,
        }
    }
}

/// Settings of the L4 data path: its pins, which outlive one agent process, and its
/// connection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Directory on a bpffs mount holding the pinned maps and XDP links, in a subfolder per
    /// schema version (`v1`, ...).
    pub pin_dir: PathBuf,
    /// Entries of the connection table and of the NAT reverse table, over all CPUs.
    pub conntrack_entries: u32,
    /// Timeouts the XDP program enforces, whole seconds.
    pub timeouts: ConntrackTimeouts,
    /// New-flow limits the XDP program enforces.
    pub flood: FloodLimits,
    /// What echo requests to a VIP get.
    pub vip_echo: VipEcho,
}

/// Idle timeouts of connection-table entries, enforced on the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackTimeouts {
    pub tcp_idle: Duration,
    pub udp_idle: Duration,
    pub tcp_closing: Duration,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        Self {
            tcp_idle: DEFAULT_TCP_IDLE,
            udp_idle: DEFAULT_UDP_IDLE,
            tcp_closing: DEFAULT_TCP_CLOSING,
        }
    }
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            conntrack_entries: DEFAULT_CONNTRACK_ENTRIES,
            timeouts: ConntrackTimeouts::default(),
            flood: FloodLimits::default(),
            vip_echo: VipEcho::default(),
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
