//! Sluice's agent: loads the XDP program and keeps its maps in step with the config,
//! terminates HTTP/HTTPS for L7 services, health-checks backends and exports metrics.
//!
//! The binary (`sluice`, in `main.rs`) is a thin CLI over this library, so integration tests
//! and benchmarks can drive the same code.

pub mod access_log_writer;
pub mod admin;
pub mod announce;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod discovery;
pub mod error_chain;
pub mod health;
pub mod idle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod netlink;
pub mod proxy;
pub mod run;
pub mod status;
