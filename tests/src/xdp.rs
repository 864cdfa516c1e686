//! The XDP_PASS program on veth peers: the kernel drops XDP_TX/XDP_REDIRECT frames sent into a
//! veth whose peer runs no XDP program, so every peer the data path transmits to needs one.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::{Xdp, XdpMode};
use nix::sched::{CloneFlags, setns};

use crate::{Netns, ebpf_object};

/// Name of the pass-everything program in the project's eBPF object.
const PASS_PROGRAM: &str = "sluice_pass";

/// The `sluice_pass` program attached to an interface; detached when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard detaches the program"]
pub struct XdpPassGuard {
    ebpf: Option<Ebpf>,
    netns: PathBuf,
    ifname: String,
}

impl XdpPassGuard {
    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

/// Loads `sluice_pass` from [`ebpf_object`] and attaches it in native (driver) mode to
/// `ifname` in `ns`. Panics when loading or attaching fails.
pub fn attach_xdp_pass(ns: &Netns, ifname: &str) -> XdpPassGuard {
    attach_xdp_pass_from(ns, ifname, &ebpf_object())
}

/// As [`attach_xdp_pass`], with the program from the eBPF object at `object` (the demo's,
/// which it was given or built).
pub fn attach_xdp_pass_from(ns: &Netns, ifname: &str, object: &Path) -> XdpPassGuard {
    // The interface index is resolved in the calling thread's namespace, so attach from a
    // thread inside `ns`.
    let ebpf = ns.in_ns(|| {
        let mut ebpf =
            Ebpf::load_file(object).unwrap_or_else(|e| panic!("loading {}: {e}", object.display()));
        let program: &mut Xdp = ebpf
            .program_mut(PASS_PROGRAM)
            .unwrap_or_else(|| panic!("no program {PASS_PROGRAM} in {}", object.display()))
            .try_into()
            .unwrap_or_else(|e| panic!("{PASS_PROGRAM} is not an XDP program: {e}"));
        program
            .load()
            .unwrap_or_else(|e| panic!("loading {PASS_PROGRAM}: {e:?}"));
        program.attach(ifname, XdpMode::Driver).unwrap_or_else(|e| {
            panic!(
                "attaching {PASS_PROGRAM} to {ifname} in netns {}: {e:?}",
                ns.name()
            )
        });
        ebpf
    });
    XdpPassGuard {
        ebpf: Some(ebpf),
        netns: ns.path().to_path_buf(),
        ifname: ifname.to_owned(),
    }
}

impl Drop for XdpPassGuard {
    fn drop(&mut self) {
        let Some(ebpf) = self.ebpf.take() else {
            return;
        };
        // A bpf_link detaches wherever its fd is closed; a netlink attachment (older kernels)
        // is detached by ifindex, which only means something inside the namespace. Never
        // panic here: the guard may be dropped while a failing test unwinds.
        let netns = File::open(&self.netns).ok();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                if let Some(netns) = netns {
                    let _ = setns(&netns, CloneFlags::CLONE_NEWNET);
                }
                drop(ebpf);
            });
        });
    }
}
