//! External programs some tests drive (wrk, h2load, prometheus, promtool): whether one is
//! installed, and running one inside a namespace with its output captured.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::privileged::{REQUIRE_VARS, is_set, on_path};
use crate::{ChildGuard, Netns};

/// True when `program` is on PATH. Start a test that needs one with
/// `if !privileged() || !required_tool("wrk", "wrk") { return; }`.
///
/// When it is missing, this panics if `CI` or `SLUICE_REQUIRE_PRIVILEGED` is set (`.ci/run`
/// installs every tool the tests use, so a missing one there is a broken setup); otherwise
/// it prints `skipping <test>: ...` with the Debian `package` to install, and returns false.
#[track_caller]
pub fn required_tool(program: &str, package: &str) -> bool {
    if on_path(program) {
        return true;
    }
    let reason = format!("`{program}` is not on PATH (Debian package `{package}`)");
    if let Some(var) = REQUIRE_VARS.iter().find(|var| is_set(var)) {
        panic!("test cannot run ({var} is set, so it may not be skipped): {reason}");
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("<unnamed test>");
    // Straight to the stderr handle: libtest captures `eprintln!`, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
    false
}

/// A program running in a namespace whose stdout and stderr are collected as it runs (so it
/// never blocks on a full pipe). Dropping it kills the program.
#[derive(Debug)]
pub struct Captured {
    child: ChildGuard,
    what: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a [`Captured`] program ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Captured {
    /// Starts `command` (built with [`Netns::command`]) in `ns` with piped stdout and stderr.
    /// stdin is the null device unless the command sets it.
    pub fn spawn(ns: &Netns, mut command: Command) -> Captured {
        let what = format!("{command:?}");
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ns.spawn(command);
        let stdout = child.take_stdout().map(|pipe| collect(pipe, &what));
        let stderr = child.take_stderr().map(|pipe| collect(pipe, &what));
        Captured {
            child,
            what,
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the program is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// Waits up to `timeout` for the program to exit by itself and returns its output;
    /// panics (killing it) when it does not.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let status = self.child.wait_timeout(timeout);
        let text = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default()
        };
        Finished {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }

    /// What was started, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn collect(mut pipe: impl Read + Send + 'static, what: &str) -> JoinHandle<String> {
    let what = what.to_string();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Err(e) = pipe.read_to_end(&mut bytes) {
            eprintln!("sluice-tests: reading the output of {what}: {e}");
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
