//! The pure model of what the kernel should hold: from a config (and, later, health state)
//! to the desired set of services, backends and Maglev tables. Nothing here touches BPF;
//! `dataplane::sync` turns the difference between this and what is applied into map writes.

pub mod desired;

pub use desired::{DesiredBackend, DesiredL4, DesiredService, DesiredState, ServiceMode, desired};
