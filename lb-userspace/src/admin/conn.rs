//! Limits on the admin API's connections: how many may be open, how long a request head may
//! take (hyper's `header_read_timeout`, which also bounds the wait for the next request on
//! a kept-alive connection), and how long a connection may move no byte either way.

use std::time::Duration;

/// The admin listener's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time a request head may take to arrive, and a kept-alive connection may wait for its
    /// next request.
    pub header_read_timeout: Duration,
    /// Time a connection may move no byte either way (a client that stops reading, or
    /// stalls in a body).
    pub idle_timeout: Duration,
    /// First pause after a failed `accept` (out of file descriptors, say); doubles on each
    /// further failure up to one second, so the loop does not spin on an error.
    pub accept_backoff: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            accept_backoff: Duration::from_millis(10),
        }
    }
}

/// The longest pause between two `accept` attempts after errors.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
