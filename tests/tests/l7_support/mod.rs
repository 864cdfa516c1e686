//! Builders for the L7 end-to-end tests: a namespace whose loopback carries the agent's
//! listeners, the backends and the clients ([`Lab`]); backends that record what reached
//! them ([`backend`]); clients for HTTP/1.1, h2c and TLS ([`client`]); certificates made at
//! run time ([`certs`]); the control plane: admin API, CLI, config saves ([`admin`]); and
//! config snippets.
#![allow(
    dead_code,
    reason = "each l7 test binary uses a different part of the support module"
)]

pub mod admin;
pub mod backend;
pub mod certs;
pub mod client;

use std::net::SocketAddr;
use std::time::Duration;

use sluice_tests::{Netns, SluiceAgent, eventually};

pub use backend::{Backend, Mode};

/// Time allowed for the agent to start or apply a reload.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway tests' usual start: a fresh [`Lab`], an echoing backend `app-1` on port 9001,
/// and where the gateway's service is to listen (port 8080).
pub fn gateway_lab() -> (Lab, Backend, SocketAddr) {
    let lab = Lab::new();
    let app = Backend::start(&lab.ns, "app-1", local(9001), Mode::Echo);
    (lab, app, local(8080))
}

/// Longer than the access-log writer's flush interval (100 ms), with room for a busy machine.
const ACCESS_LOG_FLUSH_WAIT: Duration = Duration::from_millis(400);

/// A namespace with the agent running in it; everything talks over its loopback.
pub struct Lab {
    /// The namespace: run clients with [`Lab::run`], start backends with [`Backend::start`].
    pub ns: Netns,
    agent: Option<SluiceAgent>,
}

impl Lab {
    /// A fresh namespace (loopback up), no agent yet.
    pub fn new() -> Lab {
        Lab {
            ns: Netns::new("l7"),
            agent: None,
        }
    }

    /// Starts the agent on `config` and waits until it runs.
    pub fn start(&mut self, config: &str) {
        let mut agent = SluiceAgent::start(&self.ns, config);
        agent.wait_running(AGENT_TIMEOUT);
        self.agent = Some(agent);
    }

    /// Starts the agent on `config`, expecting it to exit with an error; returns its log.
    pub fn start_failing(&mut self, config: &str) -> String {
        let agent = SluiceAgent::start(&self.ns, config);
        // Read the log before the agent's folder goes away with it.
        let log = eventually(AGENT_TIMEOUT, || {
            let log = agent.log();
            if log.contains("ERROR") {
                Ok(log)
            } else {
                Err(format!("no error logged yet; log:\n{log}"))
            }
        });
        let status = agent.wait(AGENT_TIMEOUT);
        assert!(
            !status.success(),
            "sluice should have failed to start; log:\n{log}"
        );
        log
    }

    /// Runs `future` to completion on a thread inside the namespace.
    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.ns.spawn_task(future).join()
    }

    /// Everything the agent logged so far, access lines of requests already answered
    /// included: the access log's writer flushes its batch at least every 100 ms, so the read
    /// waits out a few of those first.
    pub fn log(&self) -> String {
        std::thread::sleep(ACCESS_LOG_FLUSH_WAIT);
        self.agent
            .as_ref()
            .map(SluiceAgent::log)
            .unwrap_or_default()
    }

    /// The running agent; panics before [`Lab::start`].
    pub fn agent(&self) -> &SluiceAgent {
        self.agent
            .as_ref()
            .unwrap_or_else(|| panic!("agent not started"))
    }

    /// Rewrites the config, sends SIGHUP and waits for the verdict; returns whether the
    /// reload was applied.
    pub fn reload(&self, config: &str) -> bool {
        let agent = self
            .agent
            .as_ref()
            .unwrap_or_else(|| panic!("agent not started"));
        let verdicts = |log: &str| {
            (
                log.matches("config reloaded").count(),
                log.matches("config rejected").count() + log.matches("reload failed").count(),
            )
        };
        let before = verdicts(&agent.log());
        let path = agent.config_path();
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        agent.reload();
        eventually(AGENT_TIMEOUT, || {
            let now = verdicts(&agent.log());
            if now.0 > before.0 {
                Ok(true)
            } else if now.1 > before.1 {
                Ok(false)
            } else {
                Err(format!("reload not done; log:\n{}", agent.log()))
            }
        })
    }

    /// SIGTERM: the agent drains and exits cleanly.
    pub fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            let log = agent.log();
            let status = agent.stop(AGENT_TIMEOUT);
            assert!(status.success(), "sluice exited with {status}; log:\n{log}");
        }
    }
}

/// A `[[pool]]` named `name` over `backends`, with health checks off; `extra` is added to
/// the pool table (e.g. `policy = "weighted"`). Backends get weight `weights[i]` or 1.
pub fn pool(name: &str, backends: &[&Backend], weights: &[u16], extra: &str) -> String {
    let mut toml =
        format!("[[pool]]\nname = \"{name}\"\n{extra}\n[pool.health_check]\nkind = \"none\"\n");
    for (i, backend) in backends.iter().enumerate() {
        let weight = weights.get(i).copied().unwrap_or(1);
        toml += &format!(
            "[[pool.backend]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\nweight = {weight}\n",
            backend.name,
            backend.addr.ip(),
            backend.addr.port()
        );
    }
    toml
}

/// A `[[pool]]` whose backends are plain addresses (nothing need listen there).
pub fn pool_at(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let mut toml =
        format!("[[pool]]\nname = \"{name}\"\n{extra}\n[pool.health_check]\nkind = \"none\"\n");
    for addr in addrs {
        toml += &format!(
            "[[pool.backend]]\naddress = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        );
    }
    toml
}

/// The head of an l7 `[[service]]` on `listen`; `l7` goes into `[service.l7]` (its keys
/// must come before any sub-table the caller appends).
pub fn service(name: &str, listen: SocketAddr, l7: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nvip = \"{}\"\nport = {}\nprotocol = \"tcp\"\n[service.l7]\n{l7}\n",
        listen.ip(),
        listen.port()
    )
}

/// A catch-all virtual host forwarding everything to `pool`.
pub fn forward_all(pool: &str) -> String {
    format!(
        "[[service.l7.virtual_host]]\nname = \"all\"\ndomains = [\"*\"]\n\
         [[service.l7.virtual_host.route]]\nmatch = {{ path_prefix = \"/\" }}\nforward = {{ pool = \"{pool}\" }}\n"
    )
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
