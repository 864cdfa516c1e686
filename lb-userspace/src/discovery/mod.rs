//! Pools whose backends come from discovery instead of the config file: a DNS name (A/AAAA
//! or SRV, re-resolved at the TTL) or an endpoints file (watched).
//!
//! Each source runs as a task of its own and sends what it found to the agent's loop as an
//! [`Event`]. The loop records it in the [`Book`], lays the discovered backends over the
//! file's config ([`effective`]) and applies that like a reload: the health checker learns
//! the new backends, the kernel tables get only the difference, the L7 pools are rebuilt.

mod book;
mod dns;
mod endpoints;
mod overlay;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use book::{Book, PoolSource};
pub use dns::{Answer, resolve, resolver};
pub use overlay::effective;

use crate::config::{Backend, Config, Discovery};

/// What a source said about a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These backends (never empty).
    Found(Vec<Backend>),
    /// The name has no records, or the file lists no backend.
    Empty,
    /// The source could not be asked or read; the message says why.
    Failed(String),
}

/// One answer from a pool's source.
#[derive(Debug, Clone)]
pub struct Event {
    pub pool: String,
    /// The source that answered, so an answer from a source the config has since dropped
    /// is told apart.
    pub source: Discovery,
    pub outcome: Outcome,
}

/// The running source tasks, one per discovered pool; dropping this stops them.
pub struct Sources {
    tasks: BTreeMap<String, (Discovery, JoinHandle<()>)>,
    tx: mpsc::Sender<Event>,
}

impl Sources {
    /// No task yet, and the receiver the agent's loop reads events from.
    pub fn new() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Self {
                tasks: BTreeMap::new(),
                tx,
            },
            rx,
        )
    }

    /// Starts a task for each discovered pool of `config` whose source is new or changed,
    /// and stops those of pools that are gone or changed source.
    pub fn sync(&mut self, config: &Config) {
        let wanted: BTreeMap<&str, &Discovery> = config
            .pools
            .iter()
            .filter_map(|p| p.discovery.as_ref().map(|d| (p.name.as_str(), d)))
            .collect();
        self.tasks.retain(|name, (source, task)| {
            let keep = wanted.get(name.as_str()) == Some(&&*source);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, source) in wanted {
            if self.tasks.contains_key(name) {
                continue;
            }
            let pool = name.to_owned();
            let tx = self.tx.clone();
            let task = match source.clone() {
                Discovery::Dns(dns) => tokio::spawn(dns::follow(pool, dns, tx)),
                Discovery::EndpointsFile(path) => tokio::spawn(endpoints::follow(pool, path, tx)),
            };
            self.tasks.insert(name.to_owned(), (source.clone(), task));
        }
    }

    /// Whether `pool` is followed from `source` already (a reload keeps its backends then).
    pub fn follows(&self, pool: &str, source: Option<&Discovery>) -> bool {
        self.tasks.get(pool).map(|(s, _)| s) == source
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}
