//! Backend health: active checks (TCP connect, HTTP request), hand drains, and passive
//! outlier detection from the proxy's request results, folded into one immutable
//! [`HealthView`] per change and published through a `tokio::sync::watch` channel.
//!
//! - A backend starts healthy but unconfirmed: a fresh start or reload sends traffic at once,
//!   and the first probe that fails before any has passed takes it down. Once confirmed, it
//!   goes down after `fall` consecutive failed probes and up after `rise` passed ones.
//! - Draining is separate from health: a drained backend takes no new flows or requests,
//!   established ones finish ([`HealthHandle::drain`], [`HealthHandle::enable`]).
//! - Outlier detection ejects a backend after consecutive failed requests for a growing
//!   time, and never more than `max_ejected_percent` of a pool at once, so a pool-wide burst
//!   of resets (a backend deploy, a network blip) cannot empty the pool.
//! - [`usable_set`] is the one rule that turns those states into the backends a pool
//!   balances over: panic mode, `when_no_healthy`. `balancer::desired_with` builds the L4
//!   Maglev tables from it; the proxy's pools take the same sets.
//!
//! Using it: [`HealthChecker::start`] inside the runtime gives the checker and a receiver of
//! snapshots; on each change, build the L4 state with `balancer::desired_with(config, &view)`
//! and hand each L7 pool `view.usable(pool)`. [`HealthChecker::update`] on reload (before
//! building from the new config), [`HealthHandle::report_result`] from the proxy after each
//! upstream attempt, [`HealthChecker::stop`] at shutdown.
//!
//! Layout: `state` (rise/fall) and `outlier` are pure state machines, `view` the published
//! snapshot and the usable-set rule, `registry` the mutable state of all backends, `probe`
//! one probe, `checker` the tasks.

mod checker;
mod grpc_probe;
mod outlier;
mod probe;
mod registry;
mod state;
mod view;

#[cfg(test)]
mod checker_tests;
#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
pub(crate) mod test_config;

pub use checker::{CheckerOptions, DEFAULT_MAX_CONCURRENT_PROBES, HealthChecker, HealthHandle};
pub use probe::{MAX_BODY_BYTES, ProbeError};
pub use registry::HealthError;
pub use view::{BackendHealth, BackendView, HealthView, PoolMode, PoolView, UsableSet, usable_set};
