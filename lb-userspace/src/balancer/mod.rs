//! The pure model of what the kernel should hold: from a config and a health snapshot to the
//! desired set of services, backends and Maglev tables. Nothing here touches BPF;
//! `dataplane::sync` turns the difference between this and what is applied into map writes.

pub mod desired;

#[cfg(test)]
mod health_tests;

pub use desired::{
    DesiredBackend, DesiredL4, DesiredService, DesiredState, ServiceMode, desired, desired_with,
};
