//! Sluice's integration-test harness: isolated network topologies for privileged tests.
//!
//! Each simulated host (client, load balancer, backend) is a network namespace ([`Netns`]),
//! joined by veth pairs ([`veth`]) or a bridge ([`Lan`]). Everything is an RAII guard:
//! processes, async tasks, XDP attachments and namespaces go away on drop, also when a test
//! panics, and a sweep at the first [`Netns::new`] of a process removes what killed runs left.
//! Names carry the pid and a counter, so test threads and test binaries run side by side.
//!
//! ```no_run
//! use sluice_tests::{Netns, add_addr, privileged, veth};
//!
//! if !privileged() {
//!     return;
//! }
//! let client = Netns::new("client");
//! let server = Netns::new("server");
//! veth(&client, "eth0", &server, "eth0");
//! add_addr(&client, "eth0", "10.0.0.1/24");
//! add_addr(&server, "eth0", "10.0.0.2/24");
//! let socket = server.in_ns(|| std::net::UdpSocket::bind("10.0.0.2:9000"));
//! ```

mod agent;
mod agent_process;
mod artifacts;
mod bird;
mod browser;
mod daemon;
pub mod dns;
pub mod grpc_backend;
pub mod http_client;
mod kernel;
mod link;
mod maglev_share;
mod netns;
mod pins;
mod privileged;
mod process;
mod prometheus;
pub mod scale_out;
pub mod scripted_backend;
pub mod slow_backend;
mod sweep;
mod task;
pub mod tokens;
mod tool;
mod topology;
mod upgrade;
mod wait;
mod xdp;
pub mod xdp_lab;

pub use agent::{SluiceAgent, sluice_cli};
pub use agent_process::{AgentError, AgentOptions, AgentProcess, DEFAULT_ADMIN, OnDrop};
pub use artifacts::{ebpf_object, sluice_binary, target_dir, workspace_root};
pub use bird::{Bird, shipped_bird_config};
pub use browser::{Browser, browser_available};
pub use daemon::{Daemon, DaemonError};
pub use kernel::{XdpAttachMode, global_counter, program_map, xdp_program};
pub use link::{
    add_addr, bridge, disable_tx_offload, enslave, format_mac, hold_vip_for_dsr, if_index,
    ipv4_forwarding, link_up, mac_of, managed_neighbours, route_add, set_mac, sysctl, veth,
};
pub use maglev_share::maglev_shares;
pub use netns::Netns;
pub use pins::PinDir;
pub use privileged::privileged;
pub use process::{ChildGuard, raise_open_files_limit};
pub use prometheus::{PrometheusServer, percent_encode};
pub use sweep::sweep_stale_namespaces;
pub use task::NsTask;
pub use tool::{Captured, Finished, required_tool};
pub use topology::Lan;
pub use upgrade::upgrade_object;
pub use wait::{eventually, eventually_async};
pub use xdp::{XdpPassGuard, attach_xdp_pass, attach_xdp_pass_from};
