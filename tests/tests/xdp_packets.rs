//! The real `sluice_xdp` object, run on hand-built frames through BPF_PROG_TEST_RUN.
//!
//! Each test creates its own namespace (a veth pair with addresses, forwarding on and
//! permanent neighbours, so `bpf_fib_lookup` answers are fixed), loads its own copy of the
//! program there, fills the maps with `lb-common` types, and checks the verdict, every output
//! byte and the `GLOBAL_STATS` (or `ICMP_STATS`) reason each frame was counted under.

// Helpers: table-driven checks. The lab (namespace, program, maps) and the frames are the
// harness's, shared with the XDP bench.
#[path = "xdp_packets/cases.rs"]
mod cases;
use sluice_tests::xdp_lab as lab;
use sluice_tests::xdp_lab::frames;

// Tests.
#[path = "xdp_packets/conntrack.rs"]
mod conntrack;
#[path = "xdp_packets/conntrack_model.rs"]
mod conntrack_model;
#[path = "xdp_packets/flood.rs"]
mod flood;
#[path = "xdp_packets/forward.rs"]
mod forward;
#[path = "xdp_packets/icmp.rs"]
mod icmp;
#[path = "xdp_packets/maglev.rs"]
mod maglev;
#[path = "xdp_packets/malformed.rs"]
mod malformed;
#[path = "xdp_packets/nat_ports.rs"]
mod nat_ports;
#[path = "xdp_packets/services.rs"]
mod services;
#[path = "xdp_packets/tcp_states.rs"]
mod tcp_states;
