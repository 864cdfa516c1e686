//! A test's `sluice run` inside a namespace, with its config and its log in a temp folder: the
//! shared [`AgentProcess`] with a test's options, panicking where the runner reports errors.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    AgentOptions, AgentProcess, Netns, PinDir, XdpAttachMode, eventually, sluice_binary,
    xdp_program,
};

/// A running agent. Dropping it kills the process; [`SluiceAgent::stop`] asks it to shut down
/// with SIGTERM, as an init system would. Its data path is pinned in a [`PinDir`] of its own
/// (`--pin-dir`), removed when the last agent sharing it is dropped.
pub struct SluiceAgent {
    // Before `dir`: the process goes before its config and log.
    process: AgentProcess,
    dir: tempfile::TempDir,
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
        let mut options = AgentOptions::new(sluice_binary())
            .pins(pins)
            .args(extra.iter().copied());
        for (key, value) in env {
            options = options.env(key, value);
        }
        let process =
            AgentProcess::start(ns, &config_path, &dir.path().join("sluice.log"), options)
                .unwrap_or_else(|e| panic!("starting sluice in netns {}: {e}", ns.name()));
        SluiceAgent { process, dir }
    }

    /// Where this agent pins its data path.
    pub fn pins(&self) -> Arc<PinDir> {
        self.process.pins()
    }

    /// Kills the agent with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) -> ExitStatus {
        self.process
            .kill()
            .unwrap_or_else(|| panic!("sluice was already reaped; its log:\n{}", self.log()))
    }

    /// The config file the agent was started with (rewrite it to test reloads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// The agent's process id (in the host's pid namespace).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The folder holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the agent has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Panics with the log if the agent has already exited.
    pub fn assert_running(&mut self) {
        if let Err(e) = self.process.check_running() {
            panic!("sluice exited early: {e}; its log:\n{}", self.log());
        }
    }

    /// Waits up to `timeout` for the agent to log that it runs (its config applied, its
    /// listeners bound); panics, with the log, if it exits first or takes longer.
    #[track_caller]
    pub fn wait_running(&mut self, timeout: Duration) {
        eventually(timeout, || {
            self.assert_running();
            let log = self.log();
            if log.contains("sluice is running") {
                Ok(())
            } else {
                Err(format!("agent not running yet; log:\n{log}"))
            }
        });
    }

    /// Waits up to `timeout` for an XDP program on `ifname` in `ns` (the agent's namespace)
    /// and returns its id and mode; panics if the agent exits first or it takes longer.
    #[track_caller]
    pub fn wait_attached(
        &mut self,
        ns: &Netns,
        ifname: &str,
        timeout: Duration,
    ) -> (u32, XdpAttachMode) {
        eventually(timeout, || {
            self.assert_running();
            xdp_program(ns, ifname)
                .ok_or_else(|| format!("no XDP program on {}/{ifname} yet", ns.name()))
        })
    }

    /// Sends SIGHUP: the agent re-reads its config file.
    pub fn reload(&self) {
        if let Err(e) = self.process.reload() {
            panic!("{e}; its log:\n{}", self.log());
        }
    }

    /// Waits for the agent to exit by itself; returns how, and everything it logged.
    pub fn wait_with_log(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.wait_exit(timeout);
        (status, self.log())
    }

    /// Waits for the agent to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit(timeout)
    }

    /// Sends SIGTERM and waits for the agent to exit; panics, with the log, if it had to be
    /// killed.
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        match self.process.stop(timeout) {
            Ok(Some(status)) => status,
            Ok(None) => panic!("sluice was already reaped"),
            Err(e) => panic!("stopping sluice: {e}"),
        }
    }

    #[track_caller]
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process
            .wait_exit(timeout)
            .unwrap_or_else(|e| panic!("waiting for sluice to exit: {e}"))
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
