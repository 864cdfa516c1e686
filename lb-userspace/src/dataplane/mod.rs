//! The kernel side of the agent: the only code that touches BPF. It loads the embedded XDP
//! object, attaches it to interfaces and reads its maps.

mod error;
pub mod inspect;
mod kernel_maps;
mod neighbours;
mod preflight;
pub mod stats;
pub mod sync;

use std::ffi::CString;
use std::sync::Arc;

use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info, warn};

pub use error::DataplaneError;
pub use preflight::preflight;
pub use stats::{StatsLabels, StatsReader};

use crate::balancer::DesiredState;
use crate::config::{Interface, XdpMode as ConfigXdpMode};
use kernel_maps::KernelMaps;
use neighbours::Neighbours;
use sync::{MapSync, SyncReport};

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

struct Attachment {
    interface: String,
    link: XdpLinkId,
}

/// The loaded XDP program, its maps and where it is attached. Dropping it detaches
/// everything.
pub struct Dataplane {
    ebpf: Ebpf,
    attached: Vec<Attachment>,
    maps: KernelMaps,
    sync: MapSync,
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
    /// Loads the embedded object and the XDP program into the kernel (not attached yet),
    /// with a ring map of `ring_capacity` slots.
    pub fn load(ring_capacity: u32) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NotEmbedded);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(lb_common::maps::MAGLEV_RINGS, ring_capacity)
            .load(OBJECT)
            .map_err(DataplaneError::from_load)?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(DataplaneError::from_program_load)?;
        info!(
            bytes = OBJECT.len(),
            "loaded the XDP program {}",
            lb_common::XDP_PROGRAM_NAME
        );
        let maps = KernelMaps::take(&mut ebpf)?;
        let stats = StatsReader::take(&mut ebpf)?;
        let sync = MapSync::new(
            ring_capacity,
            lb_common::limits::MAX_SERVICES,
            lb_common::limits::MAX_BACKENDS,
        );
        Ok(Self {
            ebpf,
            attached: Vec::new(),
            maps,
            sync,
            neighbours: Neighbours::default(),
            stats,
        })
    }

    /// Brings the kernel maps to `desired`, writing only what changed, and keeps the
    /// backends' next hops resolved.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        self.neighbours.ensure(
            desired
                .services
                .values()
                .filter_map(|s| s.l4.as_ref())
                .flat_map(|l4| l4.backends.iter().map(|b| b.address.ip())),
        );
        let report = self.sync.apply(desired, &mut self.maps)?;
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
        for service in desired.services.values() {
            let Some(l4) = &service.l4 else { continue };
            if let Some(id) = self.sync.service_id(&service.key) {
                labels.services.push((id, service.name.clone()));
            }
            for backend in &l4.backends {
                if let Some(id) = self.sync.backend_id(backend)
                    && !labels.backends.iter().any(|(b, _, _)| *b == id)
                {
                    labels
                        .backends
                        .push((id, backend.pool.clone(), backend.address));
                }
            }
        }
        labels
    }

    /// Attaches the program to `interface` in the mode its config asks for. `auto` tries
    /// native mode first and falls back to generic mode with a warning.
    pub fn attach(&mut self, interface: &Interface) -> Result<AttachedMode, DataplaneError> {
        let name = interface.name.as_str();
        let if_index = if_index(name)?;
        let program = xdp_program(&mut self.ebpf)?;
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
        info!(
            interface = name,
            if_index,
            ?mode,
            "attached the XDP program"
        );
        self.attached.push(Attachment {
            interface: name.to_string(),
            link,
        });
        Ok(mode)
    }

    /// Detaches the program from `interface`, if it is attached there.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let Some(index) = self.attached.iter().position(|a| a.interface == interface) else {
            return Ok(());
        };
        let attachment = self.attached.remove(index);
        let program = xdp_program(&mut self.ebpf)?;
        program
            .detach(attachment.link)
            .map_err(|source| DataplaneError::Attach {
                name: attachment.interface.clone(),
                source,
            })?;
        info!(interface, "detached the XDP program");
        Ok(())
    }

    /// Detaches the program from every interface, logging (not failing on) what could not
    /// be detached: at shutdown there is nothing better to do.
    pub fn detach_all(&mut self) {
        let Ok(program) = xdp_program(&mut self.ebpf) else {
            return;
        };
        for attachment in self.attached.drain(..) {
            match program.detach(attachment.link) {
                Ok(()) => info!(interface = %attachment.interface, "detached the XDP program"),
                Err(err) => {
                    warn!(interface = %attachment.interface, error = %err, "detaching the XDP program failed")
                }
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
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
