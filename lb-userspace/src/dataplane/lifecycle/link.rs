//! Pinned XDP links: made and pinned on first attach, adopted (and their program swapped by
//! one atomic update) by later agents, released on detach.

use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, loaded_links, loaded_programs};
use tracing::{info, warn};

use super::pin_error;
use crate::dataplane::DataplaneError;

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
    /// unless it already runs the same code (and `always_swap` is off: a program carried over
    /// from another schema's maps must be swapped even when its code is the same).
    /// `Ok(None)`: nothing is pinned there.
    pub fn adopt(
        program: &mut Xdp,
        interface: &str,
        path: PathBuf,
        always_swap: bool,
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
        if running.is_some() && running == ours && !always_swap {
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
pub(super) fn wait_released(ids: &[u32]) {
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
pub(super) fn wait_unloaded(ids: &[u32]) {
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
