//! The one runner of `sluice run` for the tests, the bench and the demo: starts the agent in a
//! namespace on a config file, its output in a log file and its pins in a [`PinDir`] of its
//! own, waits for its admin API to say it is ready, stops it with SIGTERM, and kills it (or
//! stops it, as the caller chose) when dropped. Every call reports an [`AgentError`]; the
//! tests' [`SluiceAgent`](crate::SluiceAgent) turns them into panics.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::http_client;
use crate::netns::in_netns;
use crate::{Daemon, DaemonError, Netns, PinDir};

/// Where the admin API listens when the config does not say (`[admin] listen`).
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));

/// What went wrong with an [`AgentProcess`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Process(#[from] DaemonError),
    #[error("sluice is not ready after {timeout:?}; the end of its log:\n{tail}")]
    NotReady { timeout: Duration, tail: String },
    #[error("stopped waiting for sluice to be ready")]
    Interrupted,
    #[error("{method} {path} on the admin API at {addr}")]
    Admin {
        method: String,
        path: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {path} on the admin API answered {status}: {body}")]
    AdminStatus {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

/// What happens to the agent when its [`AgentProcess`] is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL at once (a test's agent: its namespace and pins go with it anyway).
    Kill,
    /// SIGTERM, up to this long to exit (it detaches its program), then SIGKILL.
    Stop(Duration),
}

/// How to start the agent: `sluice --log-level LEVEL run [--detach-on-exit] --pin-dir PINS
/// [ARGS] --config CONFIG`. The defaults are a test's: log level `debug`, fresh pins, in the
/// caller's process group, killed on drop.
#[derive(Debug)]
pub struct AgentOptions {
    sluice: PathBuf,
    log_level: &'static str,
    cpu: Option<usize>,
    detach_on_exit: bool,
    pins: Option<Arc<PinDir>>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    own_group: bool,
    parent_death_signal: Option<Signal>,
    on_drop: OnDrop,
    admin: SocketAddr,
}

impl AgentOptions {
    /// Runs the agent binary at `sluice`.
    pub fn new(sluice: impl Into<PathBuf>) -> AgentOptions {
        AgentOptions {
            sluice: sluice.into(),
            log_level: "debug",
            cpu: None,
            detach_on_exit: false,
            pins: None,
            args: Vec::new(),
            env: Vec::new(),
            own_group: false,
            parent_death_signal: None,
            on_drop: OnDrop::Kill,
            admin: DEFAULT_ADMIN,
        }
    }

    /// `--log-level` (`debug` unless set).
    pub fn log_level(mut self, level: &'static str) -> AgentOptions {
        self.log_level = level;
        self
    }

    /// Pins the process to `cpu` (through `taskset`, which keeps the pid) when given.
    pub fn cpu(mut self, cpu: Option<usize>) -> AgentOptions {
        self.cpu = cpu;
        self
    }

    /// `--detach-on-exit`: a SIGTERM takes the data path down and removes the pins.
    pub fn detach_on_exit(mut self) -> AgentOptions {
        self.detach_on_exit = true;
        self
    }

    /// Pins in `pins` (a previous agent's, to adopt its data path) instead of a fresh folder.
    pub fn pins(mut self, pins: Arc<PinDir>) -> AgentOptions {
        self.pins = Some(pins);
        self
    }

    /// More arguments after `run`.
    pub fn args<I, S>(mut self, args: I) -> AgentOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the agent.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> AgentOptions {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the agent as the leader of a process group of its own: a terminal's Ctrl-C then
    /// reaches only the caller, which stops the agent in order (the bench, the demo).
    pub fn own_process_group(mut self) -> AgentOptions {
        self.own_group = true;
        self
    }

    /// The agent gets `signal` when the thread that started it dies (the demo: SIGTERM, so
    /// an agent outliving a killed demo still detaches its program and exits).
    pub fn parent_death_signal(mut self, signal: Signal) -> AgentOptions {
        self.parent_death_signal = Some(signal);
        self
    }

    /// What dropping the [`AgentProcess`] does ([`OnDrop::Kill`] unless set).
    pub fn on_drop(mut self, on_drop: OnDrop) -> AgentOptions {
        self.on_drop = on_drop;
        self
    }

    /// Where the config puts the admin API, for [`AgentProcess::wait_ready`] and
    /// [`AgentProcess::admin`] ([`DEFAULT_ADMIN`] unless set).
    pub fn admin(mut self, admin: SocketAddr) -> AgentOptions {
        self.admin = admin;
        self
    }
}

/// A running `sluice run`.
#[derive(Debug)]
pub struct AgentProcess {
    daemon: Daemon,
    pins: Arc<PinDir>,
    netns: PathBuf,
    admin: SocketAddr,
    on_drop: OnDrop,
}

impl AgentProcess {
    /// Starts the agent in `ns` on `config`, its stdout and stderr to `log`. Returns at once:
    /// [`AgentProcess::wait_ready`] waits for the admin API.
    pub fn start(
        ns: &Netns,
        config: &Path,
        log: &Path,
        options: AgentOptions,
    ) -> Result<AgentProcess, AgentError> {
        let pins = options.pins.unwrap_or_else(|| Arc::new(PinDir::new()));
        let mut cmd = ns.command_on_cpu(options.cpu, &options.sluice);
        cmd.args(["--log-level", options.log_level, "run"]);
        if options.detach_on_exit {
            cmd.arg("--detach-on-exit");
        }
        cmd.arg("--pin-dir")
            .arg(pins.path())
            .args(&options.args)
            .arg("--config")
            .arg(config)
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        let death_signal = options.parent_death_signal.map(|s| s as libc::c_int);
        // SAFETY: only async-signal-safe calls (sigprocmask, prctl), touching no memory of
        // the parent. A caller that blocks signals to route them to a thread (the bench,
        // the demo) would otherwise hand the agent a mask in which SIGTERM never arrives.
        unsafe {
            cmd.pre_exec(move || {
                unblock_all_signals()?;
                match death_signal {
                    Some(signal) if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 => {
                        Err(std::io::Error::last_os_error())
                    }
                    _ => Ok(()),
                }
            });
        }
        let daemon = if options.own_group {
            Daemon::spawn("sluice", cmd, log)?
        } else {
            Daemon::spawn_in_caller_group("sluice", cmd, log)?
        };
        Ok(AgentProcess {
            daemon,
            pins,
            netns: ns.path().to_path_buf(),
            admin: options.admin,
            on_drop: options.on_drop,
        })
    }

    /// Polls `GET /ready` until it answers 200; fails, with the log, when the agent exits or
    /// `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), AgentError> {
        self.wait_ready_unless(timeout, || false)
    }

    /// As [`AgentProcess::wait_ready`], giving up with [`AgentError::Interrupted`] once
    /// `interrupted` says so (the bench's Ctrl-C).
    pub fn wait_ready_unless(
        &mut self,
        timeout: Duration,
        interrupted: impl Fn() -> bool,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.daemon.check_running()?;
            let ready = self.admin_request("GET", "/ready", Duration::from_secs(1));
            if matches!(ready, Ok(response) if response.status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(AgentError::NotReady {
                    timeout,
                    tail: self.daemon.log_tail(),
                });
            }
            if interrupted() {
                return Err(AgentError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `METHOD path` on the admin API from inside the agent's namespace, `io_timeout` for
    /// each read and write (a reload answers only once applied); any status.
    pub fn admin_request(
        &self,
        method: &str,
        path: &str,
        io_timeout: Duration,
    ) -> Result<http_client::Response, AgentError> {
        let addr = self.admin;
        in_netns(&self.netns, || {
            http_client::request_with(addr, method, path, Duration::from_secs(1), io_timeout)
        })
        .map_err(|source| AgentError::Admin {
            method: method.to_owned(),
            path: path.to_owned(),
            addr,
            source,
        })
    }

    /// As [`AgentProcess::admin_request`], failing unless the answer is 200.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        io_timeout: Duration,
    ) -> Result<http_client::Response, AgentError> {
        let response = self.admin_request(method, path, io_timeout)?;
        if response.status != 200 {
            return Err(AgentError::AdminStatus {
                method: method.to_owned(),
                path: path.to_owned(),
                status: response.status,
                body: response.body.trim().to_owned(),
            });
        }
        Ok(response)
    }

    /// The process (its pid, log, memory, liveness).
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    /// The agent's process id (in the host's pid namespace).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Where this agent pins its data path.
    pub fn pins(&self) -> Arc<PinDir> {
        Arc::clone(&self.pins)
    }

    /// Everything the agent has logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The end of the log, for messages.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// Fails, with the log, when the agent has exited.
    pub fn check_running(&mut self) -> Result<(), AgentError> {
        Ok(self.daemon.check_running()?)
    }

    /// Sends SIGHUP: the agent re-reads its config file.
    pub fn reload(&self) -> Result<(), AgentError> {
        Ok(self.daemon.signal(Signal::SIGHUP)?)
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL (an error, with the log). `None` if it
    /// was stopped before.
    pub fn stop(&mut self, grace: Duration) -> Result<Option<ExitStatus>, AgentError> {
        Ok(self.daemon.stop(grace)?)
    }

    /// SIGKILL, as a crash would, and reaps it; `None` if it was stopped before.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.daemon.kill()
    }

    /// Waits up to `timeout` for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, AgentError> {
        Ok(self.daemon.wait_exit(timeout)?)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Kill => {
                self.daemon.kill();
            }
            OnDrop::Stop(grace) => {
                if let Err(err) = self.daemon.stop(grace) {
                    eprintln!("sluice-tests: {err}");
                }
            }
        }
    }
}

/// Empties the signal mask of a child about to exec (from `pre_exec`).
fn unblock_all_signals() -> std::io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises `set`; both calls are async-signal-safe.
    let ret = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
