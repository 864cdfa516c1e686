//! Processes started inside a namespace, killed and reaped when their guard or namespace goes.

use std::process::{Child, ChildStderr, ChildStdout, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::lock;

/// A child shared by its [`ChildGuard`] and its namespace, so whichever drops first reaps it.
/// `None` once reaped: std's `Child` would otherwise signal a pid the kernel may have reused.
#[derive(Debug)]
pub(crate) struct SharedChild(Mutex<Option<Child>>);

impl SharedChild {
    pub(crate) fn new(child: Child) -> SharedChild {
        SharedChild(Mutex::new(Some(child)))
    }
}

/// Kills (SIGKILL) and reaps the child if nobody has yet.
pub(crate) fn reap(shared: &SharedChild) -> Option<ExitStatus> {
    let mut child = lock(&shared.0).take()?;
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // Fails only when the process already exited, which `wait` then reports.
    let _ = child.kill();
    match child.wait() {
        Ok(status) => Some(status),
        Err(e) => {
            eprintln!("sluice-tests: reaping pid {}: {e}", child.id());
            None
        }
    }
}

/// A process running inside a [`Netns`](crate::Netns), killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    shared: Arc<SharedChild>,
    pid: u32,
}

impl ChildGuard {
    pub(crate) fn new(shared: Arc<SharedChild>) -> ChildGuard {
        let pid = lock(&shared.0).as_ref().map_or(0, Child::id);
        ChildGuard { shared, pid }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    /// Panics if the process was already killed by [`ChildGuard::kill`] or its namespace's drop.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let mut child = lock(&self.shared.0);
        let child = child
            .as_mut()
            .unwrap_or_else(|| panic!("pid {} was already reaped", self.pid));
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for pid {}: {e}", self.pid))
    }

    /// Waits up to `timeout` for the process to exit by itself; panics if it does not.
    #[track_caller]
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} still running after {timeout:?}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process now and reaps it; returns its exit status (`None` if it was
    /// reaped before).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        reap(&self.shared)
    }

    /// Takes the child's stdout pipe (set `Stdio::piped()` on the command first).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        lock(&self.shared.0).as_mut()?.stdout.take()
    }

    /// Takes the child's stderr pipe (set `Stdio::piped()` on the command first).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        lock(&self.shared.0).as_mut()?.stderr.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        reap(&self.shared);
    }
}

/// Raises this process's soft limit on open files to its hard limit, which children inherit,
/// and returns the limit now in force: tests and the bench open thousands of connections, and
/// the usual soft limit of 1024 would cut them short.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}
