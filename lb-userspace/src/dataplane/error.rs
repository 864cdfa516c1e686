//! What can go wrong between the agent and the kernel, with messages that say how to fix it.

use std::error::Error as _;
use std::io;

use aya::EbpfError;
use aya::maps::MapError;
use aya::programs::ProgramError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "this sluice binary was built without its XDP program; build it with `cargo xtask build` \
         (it builds the XDP program first, then the agent that embeds it)"
    )]
    NotEmbedded,

    #[error(
        "the kernel refused to load BPF objects: permission denied. Run as root, or grant the \
         binary CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (setcap cap_bpf,cap_net_admin,cap_perfmon+ep)"
    )]
    PermissionDenied {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("loading the XDP object into the kernel")]
    Load {
        #[source]
        source: EbpfError,
    },

    #[error("the kernel verifier rejected the XDP program")]
    Verifier {
        #[source]
        source: ProgramError,
    },

    #[error("the XDP object has no program named {0:?}; it does not match this agent")]
    MissingProgram(&'static str),

    #[error("the XDP object has no map named {0:?}; it does not match this agent")]
    MissingMap(&'static str),

    #[error("duplicating the descriptor of the {map} map")]
    MapFd {
        map: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("reading a BPF map")]
    Map {
        #[source]
        source: MapError,
    },

    #[error(
        "interface {name:?} does not exist in this network namespace (see `ip link`); fix \
         [[interface]] in the config"
    )]
    NoSuchInterface { name: String },

    #[error(
        "interface {name:?} does not support native XDP: {reason}. Set xdp_mode = \"auto\" to \
         fall back to generic mode, or \"generic\""
    )]
    NativeUnsupported { name: String, reason: String },

    #[error(
        "interface {name:?} already has an XDP program attached by someone else; detach it \
         first (`ip link set dev {name} xdp off`)"
    )]
    InterfaceBusy { name: String },

    #[error("attaching the XDP program to {name:?}")]
    Attach {
        name: String,
        #[source]
        source: ProgramError,
    },

    #[error(
        "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); Sluice needs \
         Linux >= 5.15 built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,

    #[error(
        "missing capabilities {}: run as root, or `setcap \
         cap_bpf,cap_net_admin,cap_perfmon+ep` on the sluice binary (add \
         cap_net_bind_service for L7 ports below 1024; docs/capabilities.md)",
        .missing.join(", ")
    )]
    MissingCapabilities { missing: Vec<&'static str> },

    /// `sysctls`: the forwarding switches that are off, as `sysctl` names them.
    #[error(
        "L4 services need IP forwarding, which is off: {}. Enable it (e.g. `sysctl -w {}=1`)",
        .sysctls.join(", "),
        .sysctls.first().map_or("", String::as_str)
    )]
    ForwardingOff { sysctls: Vec<String> },

    #[error("updating the kernel maps")]
    Sync(#[from] super::sync::SyncError),

    #[error(
        "{path} is not on a bpffs mount, so nothing can be pinned there; mount one \
         (`mount -t bpf bpf /sys/fs/bpf`) or set [dataplane] pin_dir to a directory on one"
    )]
    NotBpffs { path: String },

    #[error(
        "a data path of map schema {found} runs from {path} (on {interfaces}); this agent \
         uses schema v{ours} and cannot carry its connection tables over, so it leaves it \
         running. Run `sluice detach --pin-dir {pin_dir}` to remove it (its established L4 \
         flows are lost), then start this agent"
    )]
    OtherSchema {
        found: String,
        ours: u32,
        path: String,
        pin_dir: String,
        interfaces: String,
    },

    #[error("reading the XDP object {path} (named by SLUICE_XDP_OBJECT)")]
    ReadObject {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("{what} {path}")]
    Pin {
        what: &'static str,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DataplaneError {
    pub(crate) fn from_load(source: EbpfError) -> Self {
        if is_permission_error(&source) {
            return Self::PermissionDenied {
                source: Box::new(source),
            };
        }
        Self::Load { source }
    }

    pub(crate) fn from_program_load(source: ProgramError) -> Self {
        if is_permission_error(&source) {
            return Self::PermissionDenied {
                source: Box::new(source),
            };
        }
        Self::Verifier { source }
    }

    pub(crate) fn map(source: MapError) -> Self {
        Self::Map { source }
    }

    pub(crate) fn from_attach(name: &str, native: bool, source: ProgramError) -> Self {
        let name = name.to_string();
        match io_errno(&source) {
            Some(libc::EBUSY) | Some(libc::EEXIST) => Self::InterfaceBusy { name },
            Some(libc::EPERM) | Some(libc::EACCES) => Self::PermissionDenied {
                source: Box::new(source),
            },
            // EOPNOTSUPP is what drivers without an ndo_bpf hook answer; netlink's fallback path
            // reports other codes, so any failure of a native attempt counts as "unsupported".
            _ if native => Self::NativeUnsupported {
                name,
                reason: chain(&source),
            },
            _ => Self::Attach { name, source },
        }
    }
}

fn is_permission_error(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(io_errno_dyn(err), Some(libc::EPERM) | Some(libc::EACCES))
}

fn io_errno(err: &ProgramError) -> Option<i32> {
    io_errno_dyn(err)
}

/// The first OS error code in an error's source chain.
fn io_errno_dyn(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        current = e.source();
    }
    None
}

fn chain(err: &ProgramError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
