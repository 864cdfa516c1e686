//! The network-namespace guard: one named namespace per simulated host, removed on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};

use crate::process::{ChildGuard, SharedChild, reap};
use crate::sweep;
use crate::task::NsTask;

/// Where `ip netns` keeps the bind mounts that name namespaces.
pub(crate) const NETNS_DIR: &str = "/var/run/netns";

/// Prefix of every namespace this crate creates: `slc-<pid>-<counter>-<role>`.
pub(crate) const PREFIX: &str = "slc-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), deleted when dropped.
///
/// Names are `slc-<pid>-<counter>-<role>`, unique across threads and test binaries, so tests
/// run in parallel. Processes started with [`Netns::spawn`] are killed and reaped before the
/// namespace is deleted, even when their [`ChildGuard`] outlives it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    children: Mutex<Vec<Weak<SharedChild>>>,
}

impl Netns {
    /// Creates a namespace for `role` (a short word such as `client`, `lb`, `backend1`) and
    /// brings its loopback up. Panics when `ip` fails.
    pub fn new(role: &str) -> Netns {
        assert!(
            !role.is_empty() && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "netns role {role:?} must be a non-empty word of [A-Za-z0-9_]"
        );
        sweep::sweep_once();
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{id}-{role}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.ip(["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` and `ip link ... netns NAME` know it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/var/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `program` inside this namespace through
    /// `nsenter --net=PATH --`. Unlike `ip netns exec`, nsenter leaves the mount namespace and
    /// `/sys` alone, so objects pinned under `/sys/fs/bpf` stay visible.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// As [`Netns::command`], pinned to `cpu` when given (`taskset -c CPU`, which execs, so
    /// the pid is the program's).
    pub fn command_on_cpu(&self, cpu: Option<usize>, program: impl AsRef<OsStr>) -> Command {
        match cpu {
            Some(cpu) => {
                let mut cmd = self.command("taskset");
                cmd.arg("-c").arg(cpu.to_string()).arg(program);
                cmd
            }
            None => self.command(program),
        }
    }

    /// Runs `program args...` inside the namespace and returns its stdout. Panics with the
    /// command line, exit status and stderr when it fails.
    pub fn run<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = run_checked(self.command(program).args(args));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `ip args...` inside the namespace and returns its stdout; panics on failure.
    pub fn ip<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run("ip", args)
    }

    /// Spawns `command` (usually built with [`Netns::command`]) and returns a guard that kills
    /// and reaps it on drop. Panics when the spawn fails.
    pub fn spawn(&self, mut command: Command) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?} in netns {}: {e}", self.name));
        let shared = Arc::new(SharedChild::new(child));
        lock(&self.children).push(Arc::downgrade(&shared));
        ChildGuard::new(shared)
    }

    /// Runs `f` on a fresh OS thread that has joined this namespace, and returns its result.
    /// Sockets created by `f` live in the namespace. A panic in `f` is resumed in the caller.
    pub fn in_ns<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(&self.path, f)
    }

    /// Starts an OS thread named `name` that joins this namespace, then runs `f`: for work
    /// that outlives one call, such as a client loop (the demo's traffic). Fails only when
    /// the thread cannot be started; a failure to join the namespace panics that thread.
    pub fn spawn_thread<F, T>(&self, name: String, f: F) -> std::io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Runs `future` to completion on a tokio current-thread runtime, on a dedicated OS thread
    /// that has joined this namespace. The future starts at once; wait for it with
    /// [`NsTask::join`] or `.await`. Dropping the task cancels the future.
    pub fn spawn_task<F>(&self, future: F) -> NsTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        NsTask::spawn(self.path.clone(), self.name.clone(), future)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A process still inside would keep the namespace and its links alive after the name
        // is gone, so processes go first.
        for child in lock(&self.children).drain(..) {
            if let Some(child) = child.upgrade() {
                reap(&child);
            }
        }
        let result = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match result {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "sluice-tests: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("sluice-tests: ip netns del {}: {e}", self.name),
        }
    }
}

/// Runs `f` on a new thread that has `setns`'d into the namespace at `path`; resumes its panic.
pub(crate) fn in_netns<F, T>(path: &Path, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter(path);
            f()
        });
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// Moves the calling thread into the network namespace at `path`. Only call this on a thread
/// this crate owns: the thread never leaves the namespace again.
pub(crate) fn enter(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening netns {}: {e}", path.display()));
    setns(&file, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
}

/// Runs `command` and returns its output; panics with its stderr when it fails.
pub(crate) fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }
    output
}

/// Locks `mutex`, ignoring poison: a panicking test must still tear down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
