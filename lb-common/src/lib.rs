//! Types shared by Sluice's XDP program (`lb-ebpf`) and its userspace agent (`lb-userspace`).
//!
//! Everything a BPF map holds is defined here, once: `#[repr(C)]`, `Copy`, fixed-width integers
//! with explicit padding, so both sides agree on every byte. The crate is `no_std` so the eBPF
//! side can use it; the `user` feature adds `aya::Pod` impls and std-only helpers.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod addr;
pub mod backend;
pub mod conntrack;
pub mod flood;
pub mod flow;
pub mod hash;
pub mod hop;
pub mod icmp;
pub mod limits;
#[cfg(feature = "user")]
pub mod maglev;
pub mod schema;
pub mod service;
pub mod stats;

/// Names of the BPF maps, shared so the agent looks up exactly what the program defines.
pub mod maps {
    /// Hash map of [`crate::service::ServiceKey`] to [`crate::service::ServiceValue`].
    pub const SERVICES: &str = "SERVICES";
    /// Array of [`crate::backend::BackendValue`], indexed by backend id.
    pub const BACKENDS: &str = "BACKENDS";
    /// Array of backend ids: every service's two Maglev tables.
    pub const MAGLEV_RINGS: &str = "MAGLEV_RINGS";
    /// LRU hash of [`crate::flow::FlowKey`] to [`crate::flow::FlowValue`].
    pub const CONNTRACK: &str = "CONNTRACK";
    /// LRU hash of a backend's reply [`crate::flow::FlowKey`] to [`crate::flow::NatValue`].
    pub const NAT_REVERSE: &str = "NAT_REVERSE";
    /// Array of `u32` settings ([`crate::limits::SETTINGS_COUNT`] slots).
    pub const SETTINGS: &str = "SETTINGS";
    /// Per-CPU array of [`crate::stats::Counter`], indexed by [`crate::stats::Reason`].
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// Per-CPU array of [`crate::stats::FlowCounter`], indexed by service id.
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    /// Per-CPU array of [`crate::stats::FlowCounter`], indexed by backend id.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// Hash set of [`crate::icmp::VipKey`] (value `u32`, unused): the addresses services use.
    /// Not pinned: the agent writes it into every program it loads.
    pub const VIPS: &str = "VIPS";
    /// Per-CPU array of [`crate::stats::Counter`], indexed by [`crate::icmp::IcmpReason`].
    /// Not pinned, so the pinned layout (and its schema version) stays as it was: ICMP
    /// counts start from zero with each program.
    pub const ICMP_STATS: &str = "ICMP_STATS";
    /// Array of `u64` words, one bit per source port ([`crate::limits::nat_source_port_bit`]):
    /// the ports NAT backends reply from. Only a packet from one of them is looked up as a NAT
    /// reply. Not pinned: the agent writes it into every program it loads.
    pub const NAT_SOURCE_PORTS: &str = "NAT_SOURCE_PORTS";

    /// The maps pinned under the schema folder, which outlive the agent. The next-hop cache
    /// is left out: a new program starts it empty and refills it from the FIB.
    pub const PINNED: [&str; 9] = [
        SERVICES,
        BACKENDS,
        MAGLEV_RINGS,
        CONNTRACK,
        NAT_REVERSE,
        SETTINGS,
        GLOBAL_STATS,
        SERVICE_STATS,
        BACKEND_STATS,
    ];
}

/// The XDP program's entry point name in the object file.
pub const XDP_PROGRAM_NAME: &str = "sluice_xdp";

/// A program that passes every packet, for veth peers the data path transmits into.
pub const PASS_PROGRAM_NAME: &str = "sluice_pass";
