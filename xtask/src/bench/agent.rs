//! `sluice run` (the release build) as the bench runs it, on the test harness's runner
//! (`sluice_tests::AgentProcess`), and the few admin API calls the bench makes: status, reload.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_tests::{AgentOptions, AgentProcess, Netns, OnDrop};

use crate::bench::interrupt;
use crate::bench::process::Daemon;

/// Where every bench config puts the admin API (inside the agent's namespace).
pub const ADMIN: &str = "127.0.0.1:9100";

/// How long the agent may take to stop on drop before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The admin API answers reloads only when they are done, so reads wait long.
const ADMIN_IO_TIMEOUT: Duration = Duration::from_secs(600);

/// A running agent, stopped with SIGTERM (it detaches its program) on drop.
pub struct Agent {
    process: AgentProcess,
}

impl Agent {
    /// Starts `sluice --log-level warn,sluice::access=info run --detach-on-exit --config
    /// CONFIG` in `ns`, pinned to `cpu` when given, its log in `log`, and waits until the admin
    /// API says it is ready. Access lines stay on (the log level would drop them): the other
    /// proxies are measured with theirs, and an operator runs Sluice with them.
    pub fn start(
        sluice: &Path,
        ns: &Netns,
        cpu: Option<usize>,
        config: &Path,
        log: &Path,
    ) -> Result<Agent> {
        // Its own pin folder, removed at exit: the next part's agent starts fresh.
        let options = AgentOptions::new(sluice)
            .log_level("warn,sluice::access=info")
            .cpu(cpu)
            .detach_on_exit()
            .own_process_group()
            .on_drop(OnDrop::Stop(STOP_GRACE))
            .admin(ADMIN.parse().context("the admin address")?);
        let mut process = AgentProcess::start(ns, config, log, options)?;
        process.wait_ready_unless(Duration::from_secs(30), || interrupt::check().is_err())?;
        Ok(Agent { process })
    }

    /// `GET /status`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let body = self.process.admin("GET", "/status", ADMIN_IO_TIMEOUT)?.body;
        serde_json::from_str(&body).with_context(|| format!("GET /status is not JSON: {body}"))
    }

    /// `POST /reload`, which answers once the agent has applied (or rejected) the file.
    /// Returns how long that took.
    pub fn reload(&self) -> Result<Duration> {
        let start = Instant::now();
        self.process.admin("POST", "/reload", ADMIN_IO_TIMEOUT)?;
        Ok(start.elapsed())
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
            Running::Sluice(agent) => agent.process.daemon(),
            Running::Other(daemon) => daemon,
        }
    }
}
