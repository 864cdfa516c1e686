//! Processes the bench starts: long-running ones (proxies, backends) in their own process group,
//! stopped with their children on drop, and bounded runs of load generators.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sluice_tests::Netns;

use crate::bench::interrupt;

/// A command run inside `ns`, pinned to `cpu` when given (`taskset` keeps the pid: it execs).
pub fn command(ns: &Netns, cpu: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut cmd = ns.command("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(program);
            cmd
        }
        None => ns.command(program),
    }
}

/// A server process (and whatever it forks: nginx's workers) in its own process group, its
/// output in a log file. Dropping it stops the whole group.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` as the leader of a new process group, stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = file.try_clone().context("duplicating a log file handle")?;
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The end of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails, with the log, when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was stopped", self.name);
        };
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            bail!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Peak resident memory (VmHWM) summed over the process group, in KiB.
    pub fn peak_memory_kib(&self) -> Result<u64> {
        let members = group_members(self.pid());
        if members.is_empty() {
            bail!("{} has no process left to read memory from", self.name);
        }
        members
            .iter()
            .map(|&pid| status_field_kib(pid, "VmHWM:"))
            .sum()
    }

    /// Threads of the leader process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map_or(0, Iterator::count)
    }

    /// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group.
    /// Returns whether the leader exited by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let group = Pid::from_raw(child.id() as i32);
        if matches!(child.try_wait(), Ok(Some(_))) {
            let _ = killpg(group, Signal::SIGKILL);
            return true;
        }
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let mut clean = false;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                clean = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Workers that outlive their master (nginx) would keep the namespace alive.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
        clean
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
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
fn status_field_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("{path} has no {field}"))?;
    let value = line.trim().trim_end_matches("kB").trim();
    value
        .parse()
        .with_context(|| format!("{path}: {field} {value:?} is not a number of kB"))
}

/// Runs `cmd` to completion with its output captured, killing it after `limit` (or when the
/// bench is interrupted). Fails when it cannot start, runs too long, or exits non-zero.
/// Standard input is the caller's choice (set it, or the child shares the bench's).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            break status;
        }
        let stop = if Instant::now() >= deadline {
            Some(format!("still running after {limit:?}"))
        } else {
            interrupt::check().err().map(|e| e.to_string())
        };
        if let Some(why) = stop {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown}: {why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if !status.success() {
        bail!(
            "{shown} failed ({status}): {}{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(output)
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits until something accepts TCP connections at `addr` inside `ns`, failing when
/// `daemon` exits first or `timeout` passes.
pub fn wait_listening(
    ns: &Netns,
    addr: std::net::SocketAddr,
    daemon: &mut Daemon,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        daemon.check_running()?;
        let up = ns.in_ns(|| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} does not accept connections on {addr} after {timeout:?}; the end of its \
                 log:\n{}",
                daemon.name,
                daemon.log_tail()
            );
        }
        interrupt::sleep(Duration::from_millis(50))?;
    }
}
