//! A `sluice run` process inside a namespace, with its config and its log in a temp folder.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::{ChildGuard, Netns, PinDir, sluice_binary};

/// A running agent. Dropping it kills the process; [`SluiceAgent::stop`] asks it to shut down
/// with SIGTERM, as an init system would. Its data path is pinned in a [`PinDir`] of its own
/// (`--pin-dir`), removed when the last agent sharing it is dropped.
pub struct SluiceAgent {
    child: ChildGuard,
    dir: tempfile::TempDir,
    pins: Arc<PinDir>,
}

impl SluiceAgent {
    /// Writes `config` (TOML) to a temp folder and starts `sluice run --config` inside `ns`,
    /// with its pins in a fresh [`PinDir`].
    pub fn start(ns: &Netns, config: &str) -> SluiceAgent {
        SluiceAgent::start_in(ns, config, Arc::new(PinDir::new()), &[], &[])
    }

    /// As [`SluiceAgent::start`], pinning in `pins` (a previous agent's, to adopt its data
    /// path), with `extra` arguments after `run` and `env` set.
    pub fn start_in(
        ns: &Netns,
        config: &str,
        pins: Arc<PinDir>,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> SluiceAgent {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp folder: {e}"));
        let config_path = dir.path().join("sluice.toml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let log_path = dir.path().join("sluice.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating the log file handle: {e}"));
        let mut command = ns.command(sluice_binary());
        command
            .args(["--log-level", "debug", "run", "--pin-dir"])
            .arg(pins.path())
            .args(extra)
            .arg("--config")
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = ns.spawn(command);
        SluiceAgent { child, dir, pins }
    }

    /// Where this agent pins its data path.
    pub fn pins(&self) -> Arc<PinDir> {
        Arc::clone(&self.pins)
    }

    /// Kills the agent with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.pid() as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            panic!("sending SIGKILL to sluice: {e}; its log:\n{}", self.log());
        }
        self.child.wait_timeout(Duration::from_secs(10))
    }

    /// The config file the agent was started with (rewrite it to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// The agent's process id (in the host's pid namespace).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// The folder holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the agent has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// Panics with the log if the agent has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait() {
            panic!("sluice exited early ({status}); its log:\n{}", self.log());
        }
    }

    /// Sends SIGHUP: the agent re-reads its config file.
    pub fn reload(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.pid() as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP) {
            panic!("sending SIGHUP to sluice: {e}; its log:\n{}", self.log());
        }
    }

    /// Waits for the agent to exit by itself; returns how, and everything it logged.
    pub fn wait_with_log(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.child.wait_timeout(timeout);
        (status, self.log())
    }

    /// Waits for the agent to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        self.child.wait_timeout(timeout)
    }

    /// Sends SIGTERM and waits for the agent to exit.
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.pid() as i32);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            panic!("sending SIGTERM to sluice: {e}; its log:\n{}", self.log());
        }
        self.child.wait_timeout(timeout)
    }
}

/// Runs the `sluice` CLI (`status`, `reload`, `drain`, ...) in `ns`, as an operator would
/// against the agent there; returns whether it succeeded and what it printed (stdout, then
/// stderr).
pub fn sluice_cli(ns: &Netns, args: &[&str]) -> (bool, String) {
    let output = ns
        .command(sluice_binary())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running sluice {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
