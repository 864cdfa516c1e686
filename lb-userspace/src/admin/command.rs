//! What the admin API asks of the agent's main loop, and why the loop can refuse.

use http::StatusCode;
use tokio::sync::oneshot;

use crate::announce::NothingAnnounced;
use crate::health::HealthError;
use crate::run::ReloadError;
use crate::status::BackendLookupError;

/// The main loop's answer: a message for the operator, or why nothing changed.
pub type Reply = oneshot::Sender<Result<String, CommandError>>;

/// A request for the agent's main loop.
#[derive(Debug)]
pub enum Command {
    Reload(Reply),
    Drain {
        pool: String,
        backend: String,
        reply: Reply,
    },
    Enable {
        pool: String,
        backend: String,
        reply: Reply,
    },
    /// `sluice drain-node` (`drain: true`) or `undrain-node`: withdraw or re-announce VIPs.
    DrainNode {
        drain: bool,
        reply: Reply,
    },
}

/// Why the main loop refused a [`Command`]; its text is the answer's body.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The new config was rejected or could not be applied.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The pool or backend named in the path is not in the config in force.
    #[error(transparent)]
    UnknownBackend(#[from] BackendLookupError),
    /// The backend is in the config but not (yet) known to the health checker.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// A node drain on an agent that announces nothing.
    #[error(transparent)]
    NothingAnnounced(#[from] NothingAnnounced),
}

impl CommandError {
    /// The admin API's status code for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownBackend(_) | Self::Health(HealthError::UnknownBackend { .. }) => {
                StatusCode::NOT_FOUND
            }
            Self::Reload(_) | Self::NothingAnnounced(_) => StatusCode::BAD_REQUEST,
        }
    }
}
