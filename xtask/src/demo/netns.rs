//! Named network namespaces for the demo's hosts, removed on drop, and running code or
//! commands inside them.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps the bind mounts that name namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// Prefix of the demo's namespaces: `slcd-<pid>-<role>`. The tests use `slc-`, and sweep
/// only their own.
const PREFIX: &str = "slcd-";

/// A named network namespace (`ip netns add`), deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `slcd-<pid>-<role>` with its loopback up.
    pub fn create(role: &str) -> Result<Netns> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip<I, S>(&self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// A command running `program` inside the namespace. nsenter, unlike `ip netns exec`,
    /// leaves `/sys` alone.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = command("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Writes a `net.*` sysctl of this namespace (`net.ipv4.conf.all.arp_ignore`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        // /proc/sys/net shows the namespace of the thread that opens it.
        self.run_in(|| std::fs::write(&path, value))
            .with_context(|| format!("setting {key}={value} in {}", self.name))?
            .with_context(|| format!("setting {key}={value} in {}", self.name))
    }

    /// Runs `f` on a new thread inside this namespace: sockets it creates live there.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| -> Result<T> {
                self.enter()?;
                Ok(f())
            });
            handle
                .join()
                .unwrap_or_else(|_| bail!("a thread inside {} panicked", self.name))
        })
    }

    /// Starts a thread named `name` that enters this namespace, then runs `f`.
    pub fn spawn_in<F>(&self, name: String, f: F) -> Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let (path, ns) = (self.path.clone(), self.name.clone());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || match enter(&path, &ns) {
                Ok(()) => f(),
                Err(err) => eprintln!("demo: {err:#}"),
            })
            .context("starting a thread")
    }

    /// Moves the calling thread into this namespace for good: call it only on a thread the
    /// demo started for that purpose.
    pub fn enter(&self) -> Result<()> {
        enter(&self.path, &self.name)
    }
}

fn enter(path: &Path, name: &str) -> Result<()> {
    let file =
        File::open(path).with_context(|| format!("opening the namespace {}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering the namespace {name}"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("demo: {err:#}");
        }
    }
}

/// A command in its own process group, so a terminal's Ctrl-C reaches only the demo, which
/// then stops its children in order.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    cmd
}

/// Runs `cmd` to completion in its own process group; fails with its stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    cmd.process_group(0);
    crate::shell::output(cmd).map(|_| ())
}

/// Deletes demo namespaces whose process is gone (a demo killed with SIGKILL). Their agent
/// died with the demo (it gets SIGTERM when its parent exits), so nothing else is left.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match run(Command::new("ip").args(["netns", "del", &name])) {
            Ok(()) => eprintln!("demo: removed {name}, left by an earlier demo"),
            Err(err) => eprintln!("demo: {err:#}"),
        }
    }
}
