//! Long-running processes (the agent of the tests, the bench and the demo; the bench's proxies
//! and backends) with their output in a log file: in a process group of their own, stopped
//! with their children on drop, or (a test's agent) in the caller's group, so a Ctrl-C of the
//! test run takes them too. Unlike [`ChildGuard`](crate::ChildGuard), which panics as tests
//! want, every call reports a [`DaemonError`].

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How many lines of its log an error about a daemon quotes.
const TAIL_LINES: usize = 20;

/// What went wrong with a [`Daemon`].
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating the log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {name}: {command}")]
    Spawn {
        name: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} was stopped")]
    Stopped { name: String },
    #[error("waiting for {name}")]
    Wait {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); the end of its log ({}):\n{tail}", log.display())]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{name} did not stop within {grace:?} of SIGTERM; killed ({status:?}). The end of its \
         log:\n{tail}"
    )]
    Killed {
        name: String,
        grace: Duration,
        status: Option<ExitStatus>,
        tail: String,
    },
    #[error("{name} still runs after {timeout:?}; the end of its log:\n{tail}")]
    StillRunning {
        name: String,
        timeout: Duration,
        tail: String,
    },
    #[error("sending {signal} to {name}")]
    Signal {
        name: String,
        signal: Signal,
        #[source]
        source: nix::Error,
    },
    #[error("{name} has no process left to read memory from")]
    Gone { name: String },
    #[error("reading {path}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {field} of a number of kB")]
    ProcField { path: String, field: String },
}

/// A server process (and whatever it forks: nginx's workers) in its own process group, its
/// output in a log file. Dropping it stops the whole group.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Whether the process leads a group of its own (signalled as a group) or stays in the
    /// caller's (signalled alone: the group is the caller's too).
    own_group: bool,
}

impl Daemon {
    /// Starts `cmd` as the leader of a new process group, stdin empty, stdout and stderr to
    /// `log`. A terminal's Ctrl-C then reaches only the caller, which stops the daemon in order.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Daemon, DaemonError> {
        Daemon::spawn_grouped(name, cmd, log, true)
    }

    /// As [`Daemon::spawn`], but in the caller's process group: a terminal's Ctrl-C kills it
    /// with the caller, as a test run's processes should go when the run is stopped.
    pub fn spawn_in_caller_group(
        name: &str,
        cmd: Command,
        log: &Path,
    ) -> Result<Daemon, DaemonError> {
        Daemon::spawn_grouped(name, cmd, log, false)
    }

    fn spawn_grouped(
        name: &str,
        mut cmd: Command,
        log: &Path,
        own_group: bool,
    ) -> Result<Daemon, DaemonError> {
        let log_error = |source| DaemonError::Log {
            path: log.to_owned(),
            source,
        };
        let file = std::fs::File::create(log).map_err(log_error)?;
        let err = file.try_clone().map_err(log_error)?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        if own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|source| DaemonError::Spawn {
            name: name.to_owned(),
            command: format!("{cmd:?}"),
            source,
        })?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
            own_group,
        })
    }

    /// What the daemon was called at [`Daemon::spawn`], for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader's pid, 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has written so far (empty if the log cannot be read).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Fails, with the log, when the process has exited.
    pub fn check_running(&mut self) -> Result<(), DaemonError> {
        match self.exit_status()? {
            Some(status) => Err(DaemonError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: self.log_tail(),
            }),
            None => Ok(()),
        }
    }

    /// How the process exited, `None` while it runs.
    fn exit_status(&mut self) -> Result<Option<ExitStatus>, DaemonError> {
        let Some(child) = self.child.as_mut() else {
            return Err(DaemonError::Stopped {
                name: self.name.clone(),
            });
        };
        child.try_wait().map_err(|source| DaemonError::Wait {
            name: self.name.clone(),
            source,
        })
    }

    /// Sends `signal` to the process alone (SIGHUP: the agent re-reads its config).
    pub fn signal(&self, signal: Signal) -> Result<(), DaemonError> {
        let Some(child) = self.child.as_ref() else {
            return Err(DaemonError::Stopped {
                name: self.name.clone(),
            });
        };
        kill(pid_of(child), signal).map_err(|source| DaemonError::Signal {
            name: self.name.clone(),
            signal,
            source,
        })
    }

    /// Waits up to `timeout` for the process to exit by itself and reaps it; fails, with the
    /// log, while it still runs (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, DaemonError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status()? {
                if let Some(child) = self.child.take() {
                    self.kill_leftovers(pid_of(&child));
                }
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::StillRunning {
                    name: self.name.clone(),
                    timeout,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL now, as a crash would, and reaps it; `None` if it was stopped before.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = pid_of(&child);
        self.send(pid, Signal::SIGKILL);
        let status = child.wait().ok();
        self.kill_leftovers(pid);
        status
    }

    /// Peak resident memory (VmHWM) summed over the process group, in KiB.
    pub fn peak_memory_kib(&self) -> Result<u64, DaemonError> {
        self.group_memory_kib("VmHWM:")
    }

    /// Resident memory now (VmRSS) summed over the process group, in KiB.
    pub fn resident_memory_kib(&self) -> Result<u64, DaemonError> {
        self.group_memory_kib("VmRSS:")
    }

    /// A `kB` field of `/proc/PID/status` summed over the process group.
    fn group_memory_kib(&self, field: &str) -> Result<u64, DaemonError> {
        let members = group_members(self.pid());
        if members.is_empty() {
            return Err(DaemonError::Gone {
                name: self.name.clone(),
            });
        }
        members
            .iter()
            .map(|&pid| status_field_kib(pid, field))
            .sum()
    }

    /// Threads of the leader process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map_or(0, Iterator::count)
    }

    /// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group
    /// (workers that outlive their master, as nginx's can, would keep a namespace alive).
    /// Returns the leader's exit status, `None` if it was stopped before; fails, with the
    /// log, when the leader had to be killed.
    pub fn stop(&mut self, grace: Duration) -> Result<Option<ExitStatus>, DaemonError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = pid_of(&child);
        if let Ok(Some(status)) = child.try_wait() {
            self.kill_leftovers(pid);
            return Ok(Some(status));
        }
        self.send(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut exited = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match exited {
            Some(status) => {
                self.kill_leftovers(pid);
                Ok(Some(status))
            }
            None => {
                self.send(pid, Signal::SIGKILL);
                let status = child.wait().ok();
                Err(DaemonError::Killed {
                    name: self.name.clone(),
                    grace,
                    status,
                    tail: self.log_tail(),
                })
            }
        }
    }

    /// `signal` to the group when the daemon leads one, else to the process alone (not yet
    /// reaped, so the pid is still its). Fails only when nothing is left to signal, which
    /// the caller's wait then shows.
    fn send(&self, pid: Pid, signal: Signal) {
        let _ = if self.own_group {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        };
    }

    /// After the leader was reaped: SIGKILL to what is left of its group (workers that
    /// outlive their master, as nginx's can, would keep a namespace alive). Nothing when the
    /// daemon shares the caller's group.
    fn kill_leftovers(&self, group: Pid) {
        if self.own_group {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// The pid of `child`, as nix wants it (a pid the kernel gave out fits a pid_t).
fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(err) = self.stop(Duration::from_secs(3)) {
            eprintln!("sluice-tests: {err}");
        }
    }
}

/// Pids whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_group(pid) == Some(pgid))
        .collect()
}

/// The process group of `pid`, from `/proc/PID/stat` (fields after the command's `)`).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // state, ppid, pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// A `kB` field of `/proc/PID/status`.
fn status_field_kib(pid: u32, field: &str) -> Result<u64, DaemonError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| DaemonError::Proc {
        path: path.clone(),
        source,
    })?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|line| line.trim().trim_end_matches("kB").trim())
        .and_then(|value| value.parse().ok());
    value.ok_or_else(|| DaemonError::ProcField {
        path,
        field: field.to_owned(),
    })
}
