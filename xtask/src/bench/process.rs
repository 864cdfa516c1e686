//! Processes the bench starts: bounded runs of load generators (pinned with
//! `Netns::command_on_cpu`), and waiting for a long-running one (a `sluice_tests::Daemon`) to listen.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use sluice_tests::Daemon;
use sluice_tests::Netns;

use crate::bench::interrupt;

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
                daemon.name(),
                daemon.log_tail()
            );
        }
        interrupt::sleep(Duration::from_millis(50))?;
    }
}
