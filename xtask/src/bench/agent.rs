//! `sluice run` (the release build) inside a namespace, and the few admin API calls the bench
//! makes: readiness, status, reload.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_tests::Netns;

use crate::bench::interrupt;
use crate::bench::process::{Daemon, command};
use crate::http;

/// Where every bench config puts the admin API (inside the agent's namespace).
pub const ADMIN: &str = "127.0.0.1:9100";

/// A running agent, stopped with SIGTERM (it detaches its program) on drop.
pub struct Agent {
    pub daemon: Daemon,
    admin: SocketAddr,
}

impl Agent {
    /// Starts `sluice --log-level warn run --config CONFIG` in `ns`, pinned to `cpu` when
    /// given, its log in `log`, and waits until the admin API says it is ready.
    pub fn start(
        sluice: &Path,
        ns: &Netns,
        cpu: Option<usize>,
        config: &Path,
        log: &Path,
    ) -> Result<Agent> {
        let mut cmd = command(ns, cpu, sluice);
        // Its own pin folder, removed at exit: the next part's agent starts fresh.
        cmd.args([
            "--log-level",
            "warn",
            "run",
            "--detach-on-exit",
            "--pin-dir",
        ])
        .arg(crate::pins::unique_pin_dir("bench"))
        .arg("--config")
        .arg(config);
        let daemon = Daemon::spawn("sluice", cmd, log)?;
        let admin: SocketAddr = ADMIN.parse().context("the admin address")?;
        let mut agent = Agent { daemon, admin };
        agent.wait_ready(ns, Duration::from_secs(30))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, ns: &Netns, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.daemon.check_running()?;
            if let Ok((200, _)) = http(ns, self.admin, "GET", "/ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "sluice is not ready after {timeout:?}; the end of its log:\n{}",
                    self.daemon.log_tail()
                );
            }
            interrupt::sleep(Duration::from_millis(50))?;
        }
    }

    /// `GET /status`, parsed.
    pub fn status(&self, ns: &Netns) -> Result<serde_json::Value> {
        let (code, body) = http(ns, self.admin, "GET", "/status")?;
        if code != 200 {
            bail!("GET /status answered {code}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET /status is not JSON: {body}"))
    }

    /// `POST /reload`, which answers once the agent has applied (or rejected) the file.
    /// Returns how long that took.
    pub fn reload(&self, ns: &Netns) -> Result<Duration> {
        let start = Instant::now();
        let (code, body) = http(ns, self.admin, "POST", "/reload")?;
        let took = start.elapsed();
        if code != 200 {
            bail!("POST /reload answered {code}: {}", body.trim());
        }
        Ok(took)
    }
}

/// A contender while it runs: Sluice (with its admin API) or another proxy. Dropping it stops
/// the process (Sluice detaches its program).
pub enum Running {
    Sluice(Agent),
    Other(Daemon),
}

impl Running {
    pub fn daemon(&mut self) -> &mut Daemon {
        match self {
            Running::Sluice(agent) => &mut agent.daemon,
            Running::Other(daemon) => daemon,
        }
    }
}

/// One HTTP/1.1 request with `Connection: close` from a thread inside `ns`; returns the
/// status code and body. The admin API answers reloads only when they are done, so the read
/// timeout is long.
pub fn http(ns: &Netns, addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let response = ns
        .in_ns(|| {
            http::request_with(
                addr,
                method,
                path,
                Duration::from_secs(1),
                Duration::from_secs(600),
            )
        })
        .with_context(|| format!("{method} {path} on the admin API at {addr}"))?;
    Ok((response.status, response.body))
}
