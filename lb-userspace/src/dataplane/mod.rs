//! The kernel side of the agent: the only code that touches BPF. It loads the embedded XDP
//! object, attaches it to interfaces and reads its maps.

mod batch;
mod conntrack;
mod error;
pub mod inspect;
mod kernel_maps;
pub mod lifecycle;
mod nat_source_ports;
mod neighbours;
mod preflight;
pub mod stats;
pub mod sync;
mod vips;

use std::collections::HashSet;
use std::ffi::CString;
use std::sync::Arc;

use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use lb_common::limits::SETTING_VIP_ECHO;
use tracing::{debug, info, warn};

pub use error::DataplaneError;
pub use preflight::{forwarding as check_forwarding, preflight};
pub use stats::{StatsLabels, StatsReader};

use crate::balancer::DesiredState;
use crate::config::{DataplaneSettings, Interface, XdpMode as ConfigXdpMode};
use kernel_maps::KernelMaps;
use lifecycle::{PinnedAttachment, Pins};
use nat_source_ports::NatSourcePorts;
pub use neighbours::{Neighbours, next_hop_of};
use sync::{MapSync, SyncReport};
use vips::VipSet;

/// The XDP object, embedded by build.rs from `cargo xtask build-ebpf`'s output.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// In the driver, before the kernel allocates an skb: the fast path.
    Native,
    /// In the kernel's generic hook, after skb allocation: works everywhere, much slower.
    Generic,
}

/// The loaded XDP program, its maps and where it is attached. Maps and links are pinned:
/// dropping this leaves the data path running; [`Dataplane::detach_everything`] removes it.
pub struct Dataplane {
    ebpf: Ebpf,
    pins: Pins,
    attached: Vec<PinnedAttachment>,
    maps: KernelMaps,
    sync: MapSync,
    vips: VipSet,
    nat_source_ports: NatSourcePorts,
    /// Set when the maps were found pinned and not yet reconciled with a desired state.
    adopting: bool,
    /// A data path of the previous schema being carried over: its links move to this
    /// program as interfaces are attached, its folder goes once all are.
    previous: Option<lifecycle::migrate::Previous>,
    neighbours: Neighbours,
    stats: Arc<StatsReader>,
}

/// Ring map size for a desired state: room for every L4 service's double buffer twice over,
/// so reloads that add services fit without reloading the program.
pub fn ring_capacity(desired: &DesiredState) -> u32 {
    let needed: u64 = desired
        .services
        .values()
        .filter_map(|s| s.l4.as_ref())
        .map(|l4| 2 * u64::from(l4.table_size))
        .sum();
    let wanted = (2 * needed).max(u64::from(lb_common::limits::DEFAULT_RING_CAPACITY));
    u32::try_from(wanted).unwrap_or(u32::MAX)
}

impl Dataplane {
    /// Loads the embedded object and the XDP program into the kernel (not attached yet).
    /// Maps are pinned in `settings`' schema folder: maps found there (a previous agent's)
    /// are reused as they are, otherwise they are created there, the ring map with
    /// `ring_capacity` slots.
    pub fn load(ring_capacity: u32, settings: &DataplaneSettings) -> Result<Self, DataplaneError> {
        let object = object()?;
        let pins = Pins::open(&settings.schema_dir())?;
        let previous = lifecycle::migrate::Previous::find(&settings.pin_dir);
        lifecycle::check_other_schemas(&settings.pin_dir, previous.as_ref().map(|p| p.dir()))?;
        let mut adopting = pins.has_maps();
        let ring_capacity = match pins.ring_capacity() {
            Some(pinned) if adopting => pinned,
            _ => match previous.as_ref().and_then(|p| p.ring_capacity()) {
                Some(old) => old.max(ring_capacity),
                None => ring_capacity,
            },
        };
        let paths: Vec<(&str, std::path::PathBuf)> = lb_common::maps::PINNED
            .iter()
            .map(|name| (*name, pins.map(name)))
            .collect();
        // One LRU list for all CPUs (see the program's maps): the table holds what was asked.
        let entries = settings.conntrack_entries;
        if let Some(pinned) = pins.max_entries(lb_common::maps::CONNTRACK)
            && adopting
            && pinned != entries
        {
            warn!(
                pinned,
                wanted = entries,
                "the running data path's connection table keeps its size; [dataplane]                  conntrack_entries takes effect after `sluice detach` (which drops established                  flows) and a start"
            );
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(lb_common::maps::MAGLEV_RINGS, ring_capacity);
        loader.map_max_entries(lb_common::maps::CONNTRACK, entries);
        loader.map_max_entries(lb_common::maps::NAT_REVERSE, entries);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(&object).map_err(DataplaneError::from_load)?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(DataplaneError::from_program_load)?;
        info!(
            bytes = object.len(),
            pins = %settings.schema_dir().display(),
            adopting,
            "loaded the XDP program {}",
            lb_common::XDP_PROGRAM_NAME
        );
        let mut maps = KernelMaps::take(&mut ebpf)?;
        // Before any attach: the program must never run with timeouts nobody set.
        let timeouts = conntrack::timeout_settings(&settings.timeouts);
        for (slot, value) in timeouts
            .into_iter()
            .chain(conntrack::flood_settings(&settings.flood))
        {
            maps.set_setting(slot, value)?;
        }
        maps.set_setting(SETTING_VIP_ECHO, settings.vip_echo.setting())?;
        info!(
            entries,
            timeouts = ?settings.timeouts,
            limits = ?settings.flood,
            "connection table"
        );
        if let Some(previous) = &previous {
            if !adopting {
                previous.copy_tables(&mut maps)?;
            }
            let carried = previous.copy_flows(&mut ebpf, false)?;
            warn!(
                from = %previous.dir().display(),
                interfaces = previous.interfaces().join(","),
                connections = carried.flows,
                nat = carried.nat,
                "a data path of map schema v{} runs; this agent uses v{}: carrying it over                  (services, backends and Maglev tables copied, connection and NAT entries                  converted), then swapping this program in on each interface with one atomic                  link update",
                lifecycle::migrate::PREVIOUS_SCHEMA,
                lb_common::schema::SCHEMA_VERSION
            );
            adopting = true;
        }
        let stats = StatsReader::take(&mut ebpf)?;
        let vips = VipSet::take(&mut ebpf)?;
        let nat_source_ports = NatSourcePorts::take(&mut ebpf)?;
        let sync = MapSync::new(
            ring_capacity,
            lb_common::limits::MAX_SERVICES,
            lb_common::limits::MAX_BACKENDS,
        );
        Ok(Self {
            ebpf,
            pins,
            attached: Vec::new(),
            maps,
            sync,
            vips,
            nat_source_ports,
            adopting,
            previous,
            neighbours: Neighbours::default(),
            stats,
        })
    }

    /// Brings the kernel maps to `desired`, writing only what changed, and keeps the
    /// backends' next hops resolved. The first call after adopting pinned maps first rebuilds
    /// what they hold, so it too writes only the difference.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        if self.adopting {
            let snapshot = self.maps.snapshot()?;
            let capacity = self.pins.ring_capacity().unwrap_or(0);
            self.sync = MapSync::adopt(
                &snapshot,
                desired,
                capacity,
                lb_common::limits::MAX_SERVICES,
                lb_common::limits::MAX_BACKENDS,
            )?;
            self.adopting = false;
            info!(
                services = snapshot.services.len(),
                backends = snapshot.backends.len(),
                "adopted the pinned maps of the running data path"
            );
        }
        self.neighbours.ensure(
            desired
                .services
                .values()
                .filter_map(|s| s.l4.as_ref())
                .flat_map(|l4| l4.backends.iter().map(|b| b.address.ip())),
        );
        // Before the services: a new NAT backend's first reply must find its port set.
        self.nat_source_ports.apply(desired)?;
        let report = self.sync.apply(desired, &mut self.maps)?;
        self.vips.apply(desired)?;
        self.stats.set_labels(self.labels(desired));
        info!(?report, "kernel maps updated");
        Ok(report)
    }

    /// Read-only descriptors of the program's maps, for `explain`.
    pub fn inspector(&self) -> Result<inspect::FlowInspector, inspect::InspectError> {
        inspect::FlowInspector::open(&self.ebpf)
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> Arc<StatsReader> {
        Arc::clone(&self.stats)
    }

    fn labels(&self, desired: &DesiredState) -> StatsLabels {
        let mut labels = StatsLabels::default();
        // Ids already labelled: a scan of the labels per backend was quadratic.
        let mut seen = HashSet::new();
        for service in desired.services.values() {
            let Some(l4) = &service.l4 else { continue };
            if let Some(id) = self.sync.service_id(&service.key) {
                labels.services.push((id, service.name.clone()));
            }
            for backend in &l4.backends {
                if let Some(id) = self.sync.backend_id(backend)
                    && seen.insert(id)
                {
                    labels
                        .backends
                        .push((id, backend.pool.clone(), backend.address));
                }
            }
        }
        labels
    }

    /// Attaches the program to `interface` in the mode its config asks for, and pins the
    /// link. A link a previous agent pinned there is adopted instead: its program is replaced
    /// by this one with one atomic update (`Ok(None)`: the mode stays what it was). `auto`
    /// tries native mode first and falls back to generic mode with a warning.
    pub fn attach(
        &mut self,
        interface: &Interface,
    ) -> Result<Option<AttachedMode>, DataplaneError> {
        let name = interface.name.as_str();
        let path = self.pins.link(name);
        let carried = self.carry_link(name, &path)?;
        let program = xdp_program(&mut self.ebpf)?;
        if let Some(adopted) = PinnedAttachment::adopt(program, name, path.clone(), carried)? {
            self.attached.push(adopted);
            return Ok(None);
        }
        let if_index = if_index(name)?;
        let (link, mode) = match interface.xdp_mode {
            ConfigXdpMode::Native => (
                attach_mode(program, name, if_index, XdpMode::Driver)?,
                AttachedMode::Native,
            ),
            ConfigXdpMode::Generic => (
                attach_mode(program, name, if_index, XdpMode::Skb)?,
                AttachedMode::Generic,
            ),
            ConfigXdpMode::Auto => match attach_mode(program, name, if_index, XdpMode::Driver) {
                Ok(link) => (link, AttachedMode::Native),
                Err(DataplaneError::NativeUnsupported { reason, .. }) => {
                    warn!(
                        interface = name,
                        %reason,
                        "native XDP is not available on this interface; falling back to generic \
                         mode, which runs after the kernel allocates each packet and is much \
                         slower (set xdp_mode = \"generic\" to silence this warning)"
                    );
                    (
                        attach_mode(program, name, if_index, XdpMode::Skb)?,
                        AttachedMode::Generic,
                    )
                }
                Err(other) => return Err(other),
            },
        };
        let pinned = PinnedAttachment::pin_new(program, link, name, path)?;
        info!(
            interface = name,
            if_index,
            ?mode,
            "attached the XDP program"
        );
        self.attached.push(pinned);
        Ok(Some(mode))
    }

    /// Detaches the program from `interface`, if it is attached there.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let Some(index) = self.attached.iter().position(|a| a.interface == interface) else {
            return Ok(());
        };
        self.attached.remove(index).remove()?;
        info!(interface, "detached the XDP program");
        Ok(())
    }

    /// Moves the previous schema's pinned link on `interface` into this schema's folder, so
    /// attaching adopts it (the old program keeps forwarding until the atomic swap). Whether
    /// there was one.
    fn carry_link(&self, interface: &str, path: &std::path::Path) -> Result<bool, DataplaneError> {
        let Some(previous) = &self.previous else {
            return Ok(false);
        };
        let old = previous.link(interface);
        if !old.exists() {
            return Ok(false);
        }
        std::fs::rename(&old, path).map_err(|e| {
            lifecycle::pin_error_for("moving the previous schema's XDP link to", path)(e.into())
        })?;
        Ok(true)
    }

    /// Once every configured interface runs this program: copies the connection and NAT
    /// entries the old program made since the first copy, and removes the previous schema's
    /// folder (detaching its program from interfaces this agent does not attach to).
    fn finish_carrying_over(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        match previous.copy_flows(&mut self.ebpf, true) {
            Ok(carried) => info!(
                connections = carried.flows,
                nat = carried.nat,
                "copied the entries the previous schema's program made during the handover"
            ),
            Err(error) => warn!(%error, "copying the last entries of the previous schema failed"),
        }
        let dir = previous.dir().display().to_string();
        match previous.remove() {
            Ok(()) => info!(
                path = dir,
                "removed the previous schema's pins: carried over"
            ),
            Err(error) => warn!(path = dir, %error, "removing the previous schema's pins failed"),
        }
    }

    /// Detaches pinned links of interfaces this agent does not attach to (a previous agent's
    /// config had them). Call after attaching every configured interface.
    pub fn detach_unclaimed(&mut self) {
        self.finish_carrying_over();
        for interface in self.pins.linked_interfaces() {
            if self.attached.iter().any(|a| a.interface == interface) {
                continue;
            }
            match std::fs::remove_file(self.pins.link(&interface)) {
                Ok(()) => info!(interface, "detached the XDP program: no longer configured"),
                Err(error) => warn!(interface, %error, "could not remove a pinned XDP link"),
            }
        }
    }

    /// Leaves the data path running for the next agent: pinned program, maps and managed
    /// neighbour entries stay, and the log says where traffic keeps flowing.
    pub fn leave_running(&mut self) {
        let interfaces: Vec<&str> = self.attached.iter().map(|a| a.interface.as_str()).collect();
        warn!(
            interfaces = interfaces.join(","),
            pins = %self.pins.dir().display(),
            "the XDP program stays attached and keeps forwarding with the last tables \
             (health state frozen) until the next `sluice run` adopts it; `sluice detach` \
             removes it"
        );
        self.neighbours.leave_in_place();
    }

    /// Detaches the program from every interface and removes the pins and managed neighbour
    /// entries: nothing of the data path is left.
    pub fn detach_everything(&mut self) {
        for attachment in self.attached.drain(..) {
            let interface = attachment.interface.clone();
            match attachment.remove() {
                Ok(()) => info!(interface, "detached the XDP program"),
                Err(error) => warn!(interface, error = %error, "detaching the XDP program failed"),
            }
        }
        let pin_dir = self.pins.dir().parent().map(std::path::Path::to_path_buf);
        if let Some(pin_dir) = pin_dir {
            match lifecycle::remove_all(&pin_dir) {
                Ok(removed) => info!(maps = removed.maps, "removed the pinned maps"),
                Err(error) => warn!(%error, "removing the pins failed"),
            }
        }
    }
}

/// Environment variable naming an XDP object file to load instead of the embedded one: a
/// program built from other sources (the upgrade tests use it); its maps must match this
/// agent's schema.
pub const OBJECT_OVERRIDE: &str = "SLUICE_XDP_OBJECT";

fn object() -> Result<std::borrow::Cow<'static, [u8]>, DataplaneError> {
    if let Some(path) = std::env::var_os(OBJECT_OVERRIDE) {
        let path = std::path::PathBuf::from(path);
        warn!(path = %path.display(), "loading the XDP object named by {OBJECT_OVERRIDE}");
        return std::fs::read(&path)
            .map(std::borrow::Cow::Owned)
            .map_err(|source| DataplaneError::ReadObject {
                path: path.display().to_string(),
                source,
            });
    }
    if OBJECT.is_empty() {
        return Err(DataplaneError::NotEmbedded);
    }
    Ok(std::borrow::Cow::Borrowed(OBJECT))
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let name = lb_common::XDP_PROGRAM_NAME;
    ebpf.program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(|_| DataplaneError::MissingProgram(name))
}

fn if_index(name: &str) -> Result<u32, DataplaneError> {
    let c_name = CString::new(name).map_err(|_| DataplaneError::NoSuchInterface {
        name: name.to_string(),
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(DataplaneError::NoSuchInterface {
            name: name.to_string(),
        });
    }
    Ok(index)
}

fn attach_mode(
    program: &mut Xdp,
    name: &str,
    if_index: u32,
    mode: XdpMode,
) -> Result<XdpLinkId, DataplaneError> {
    debug!(interface = name, ?mode, "attaching");
    program
        .attach_to_if_index(if_index, mode)
        .map_err(|source| DataplaneError::from_attach(name, mode == XdpMode::Driver, source))
}
