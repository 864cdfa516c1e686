//! The admin API: the live status page, health, readiness, status, metrics, reload and
//! drain, on 127.0.0.1 by default. Bound elsewhere it requires `Authorization: Bearer
//! <token>` (the token file from the config) on every request but the page itself; without a
//! token, changes (`POST`) are accepted only from clients that address the listener by its
//! own address (see [`check_same_origin`]).
//!
//! The server never changes agent state itself: it sends a [`Command`] to the agent's main
//! loop and waits for the answer, so every change goes through the one place that applies
//! config and health state.

mod client;
mod command;
mod conn;
mod discovery;
mod flow;
mod guard;
mod overview;
mod page;
mod server;
#[cfg(test)]
mod server_tests;
mod status;

pub use client::{AdminClient, ClientError};
pub use command::{Command, CommandError, Reply};
pub use conn::AdminLimits;
pub use discovery::DiscoveryReport;
pub use flow::{FlowError, FlowExplanation};
pub use guard::{ForeignRequest, check_same_origin};
pub use overview::{BackendPage, BackendRow, Live, Overview, PoolOverview, ServiceOverview};
pub use server::{AdminServer, serve};
pub use status::{BackendStatus, PoolStatus, ServiceStatus, Status};
