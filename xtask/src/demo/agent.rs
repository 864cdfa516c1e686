//! The `sluice run` process inside the load balancer's namespace, and its admin API:
//! `/status` polled in the background, `/metrics` and `/reload` on demand.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde::Deserialize;
use sluice_tests::{AgentOptions, AgentProcess, Netns, OnDrop};

use super::topology::ADMIN;
use sluice_tests::http_client;

/// How long the agent may take to stop after SIGTERM (it drains l7 for up to 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of `GET /status` the demo shows.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub config_version: u64,
    pub pools: Vec<PoolStatus>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PoolStatus {
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub weight: u16,
    pub healthy: bool,
    pub drained: bool,
}

impl Status {
    /// The state of backend `name` in any pool.
    pub fn backend(&self, name: &str) -> Option<&BackendStatus> {
        self.pools
            .iter()
            .flat_map(|pool| &pool.backends)
            .find(|backend| backend.name == name)
    }
}

/// A running `sluice run` on the test harness's runner, in a process group of its own (a
/// terminal's Ctrl-C reaches only the demo, which then stops the agent in order); stopped
/// with SIGTERM when dropped.
pub struct Agent {
    process: AgentProcess,
    sluice: PathBuf,
}

impl Agent {
    /// Starts `sluice run --config CONFIG` inside `ns`, logging to `log`.
    pub fn start(ns: &Netns, sluice: &Path, config: &Path, log: &Path) -> Result<Agent> {
        // A pin folder of its own, removed when the agent stops: a later demo (whose
        // namespaces and interfaces are new) must not adopt this one's data path. The agent
        // gets SIGTERM if the demo dies without tearing down (SIGKILL), so it detaches its
        // XDP program and exits rather than living on in a namespace nobody can name.
        let options = AgentOptions::new(sluice)
            .log_level("info")
            .detach_on_exit()
            .own_process_group()
            .parent_death_signal(Signal::SIGTERM)
            .on_drop(OnDrop::Stop(STOP_TIMEOUT))
            .admin(ADMIN.into());
        let process = AgentProcess::start(ns, config, log, options)
            .with_context(|| format!("starting {} (is nsenter installed?)", sluice.display()))?;
        Ok(Agent {
            process,
            sluice: sluice.to_path_buf(),
        })
    }

    /// Fails with the end of the agent's log if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        Ok(self.process.check_running()?)
    }

    /// The end of the agent's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after a while); `None` if it had
    /// already been stopped.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let stopped = self.process.stop(STOP_TIMEOUT);
        // An agent that was killed (the scale-out demo kills a node) could not detach:
        // remove what it pinned, so nothing of this demo outlives it.
        let pins = self.process.pins();
        if pins.path().exists() {
            let _ = Command::new(&self.sluice)
                .args(["detach", "--pin-dir"])
                .arg(pins.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        Ok(stopped?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("demo: {err:#}");
        }
    }
}

/// `METHOD path` on the admin API, from inside the load balancer's namespace.
pub fn admin(lb: &Netns, method: &str, path: &str) -> Result<http_client::Response> {
    let response = lb
        .in_ns(|| http_client::request(ADMIN.into(), method, path, Duration::from_secs(5)))
        .with_context(|| format!("{method} http://{ADMIN}{path} in {}", lb.name()))?;
    if response.status != 200 {
        bail!(
            "{method} {path}: status {}: {}",
            response.status,
            response.body.trim()
        );
    }
    Ok(response)
}

/// `GET /status`, polled in the background; the latest answer is kept.
pub struct StatusWatch {
    latest: Arc<Mutex<Option<Status>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusWatch {
    pub fn start(lb: &Netns) -> Result<StatusWatch> {
        let latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, flag) = (Arc::clone(&latest), Arc::clone(&stop));
        let thread = lb.spawn_thread("status".into(), move || {
            while !flag.load(Ordering::Relaxed) {
                let status =
                    http_client::request(ADMIN.into(), "GET", "/status", Duration::from_secs(1))
                        .ok()
                        .filter(|r| r.status == 200)
                        .and_then(|r| serde_json::from_str::<Status>(&r.body).ok());
                if status.is_some() {
                    *out.lock().unwrap_or_else(|p| p.into_inner()) = status;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })?;
        Ok(StatusWatch {
            latest,
            stop,
            thread: Some(thread),
        })
    }

    /// The latest status, if the agent has answered yet.
    pub fn latest(&self) -> Option<Status> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
