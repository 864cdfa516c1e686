//! Following an endpoints file: read at start and again after every settled change, like
//! Envoy's filesystem EDS. A file with an error is reported and changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Event, Outcome};
use crate::config::Discovery;
use crate::config::endpoints;
use crate::config::watch::ConfigWatch;
use crate::error_chain::Chain;

/// How often to try again to watch a file whose folder does not exist yet.
const WATCH_RETRY: Duration = Duration::from_secs(5);

/// Reads the file once.
pub fn read(path: &std::path::Path) -> Outcome {
    match endpoints::load(path) {
        Ok(backends) if backends.is_empty() => Outcome::Empty,
        Ok(backends) => Outcome::Found(backends),
        Err(errors) => Outcome::Failed(errors.to_string()),
    }
}

/// Follows the file at `path` for `pool` until the receiver is gone or the task is aborted.
pub async fn follow(pool: String, path: PathBuf, events: mpsc::Sender<Event>) {
    let source = Discovery::EndpointsFile(path.clone());
    let send = |outcome| Event {
        pool: pool.clone(),
        source: source.clone(),
        outcome,
    };
    let mut watch = loop {
        match ConfigWatch::start(&path) {
            Ok(watch) => break watch,
            Err(err) => {
                let outcome =
                    Outcome::Failed(format!("watching {}: {}", path.display(), Chain(&err)));
                if events.send(send(outcome)).await.is_err() {
                    return;
                }
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    };
    // Read after the watch is in place, so a write in between is not missed.
    if events.send(send(read(&path))).await.is_err() {
        return;
    }
    while watch.settled().await.is_some() {
        if events.send(send(read(&path))).await.is_err() {
            return;
        }
    }
}
