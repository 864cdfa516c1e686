//! `cargo xtask demo`: Sluice in a minute, on this machine, touching nothing outside a few
//! network namespaces.
//!
//! Builds the XDP program and the agent, builds a client, a load balancer and four backends
//! in namespaces ([`topology`]), runs `sluice run` on a copy of `config/demo.toml`, drives
//! traffic from the client ([`traffic`]) and walks through a failover, a readmission and a
//! reload while showing where the flows go ([`script`]). Everything is torn down at the end,
//! on error and on Ctrl-C ([`signals`]).

mod agent;
mod backend;
mod display;
mod scale_out;
mod script;
mod signals;
mod tls;
mod topology;
mod traffic;
mod workdir;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell::step;
use crate::{ebpf, run};

use agent::{Agent, StatusWatch};
use backend::Backend;
use topology::{BACKENDS, Topology};
use traffic::Traffic;
use workdir::WorkDir;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// After the tour, keep everything running (traffic, live panel, admin API) until
    /// Ctrl-C, to look around: scrape /metrics, run `sluice status`, drain a backend.
    #[arg(long)]
    hold: bool,
    /// Build and run the agent with the release profile.
    #[arg(long)]
    release: bool,
    /// Instead of the tour: two Sluice nodes behind a router (BGP by BIRD 2, ECMP), flows
    /// spread over both, one node killed and its flows carrying on. Run as root.
    #[arg(long, conflicts_with_all = ["hold", "release"])]
    scale_out: bool,
    /// The agent to run, already built (set when the demo re-runs itself through sudo).
    #[arg(long, hide = true, requires = "ebpf_object")]
    sluice: Option<PathBuf>,
    /// The XDP object, already built (as `--sluice`).
    #[arg(long, hide = true, requires = "sluice")]
    ebpf_object: Option<PathBuf>,
}

/// Raised when the user stops the demo; not an error, but everything unwinds the same way.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub fn run(args: &DemoArgs) -> Result<()> {
    if args.scale_out {
        return scale_out::run();
    }
    let (sluice, object) = match (&args.sluice, &args.ebpf_object) {
        (Some(sluice), Some(object)) => (sluice.clone(), object.clone()),
        _ => (run::build_all(args.release)?, ebpf::object_path()),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return rerun_as_root(args, &sluice, &object);
    }
    check_tools()?;
    let stop = signals::install()?;
    for name in sluice_tests::sweep_stale_namespaces() {
        eprintln!("demo: removed {name}, left by an earlier run");
    }
    WorkDir::sweep_stale();
    let result = Lab::start(&sluice, &object).and_then(|mut lab| {
        let tour = script::tour(&mut lab, &stop, args.hold);
        lab.teardown();
        tour
    });
    match result {
        Err(err) if err.is::<Interrupted>() => {
            eprintln!("demo interrupted; everything it made is gone");
            std::process::exit(130);
        }
        other => other,
    }
}

/// Network namespaces and XDP need root: run the already-built demo again through sudo.
fn rerun_as_root(args: &DemoArgs, sluice: &Path, object: &Path) -> Result<()> {
    if which("sudo").is_none() {
        bail!(
            "the demo creates network namespaces and loads XDP programs, which needs root, and \
             sudo is not installed: run `cargo xtask demo` as root"
        );
    }
    step(
        "Running",
        "the demo through sudo: network namespaces and XDP need root",
    );
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new("sudo");
    cmd.arg("--").arg(exe).arg("demo");
    if args.hold {
        cmd.arg("--hold");
    }
    cmd.arg("--sluice")
        .arg(sluice)
        .arg("--ebpf-object")
        .arg(object);
    // Ctrl-C reaches sudo and the demo under it, which tear down; we only wait for them.
    signals::survive_while_child_runs()?;
    let status = cmd.status().context("could not start sudo")?;
    std::process::exit(status.code().unwrap_or(1));
}

fn check_tools() -> Result<()> {
    let missing: Vec<&str> = ["ip", "nsenter", "ethtool"]
        .into_iter()
        .filter(|tool| which(tool).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the demo needs {} (Debian: apt-get install iproute2 util-linux ethtool)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Everything the demo runs. [`Lab::teardown`] (also run on drop) stops it in order:
/// traffic, the status poller, the agent (SIGTERM: it detaches XDP), the backends, then
/// the namespaces and the work folder.
pub struct Lab {
    /// The agent binary, for the commands the demo suggests.
    sluice: PathBuf,
    screen: display::Screen,
    traffic: Option<Traffic>,
    status: Option<StatusWatch>,
    agent: Option<Agent>,
    backends: Vec<Backend>,
    topology: Option<Topology>,
    dir: WorkDir,
}

impl Lab {
    fn start(sluice: &Path, object: &Path) -> Result<Lab> {
        let mut screen = display::Screen::new();
        let dir = WorkDir::create()?;
        screen.say(&format!(
            "Building the demo network: a client, the load balancer and four backends, each \
             a network namespace named slc-{}-*",
            std::process::id()
        ));
        let mut lab = Lab {
            sluice: sluice.to_path_buf(),
            screen,
            traffic: None,
            status: None,
            agent: None,
            backends: Vec::new(),
            topology: Some(Topology::build(object)?),
            dir,
        };
        let topology = lab.topology.as_ref().context("the demo network is gone")?;
        for (plan, ns) in BACKENDS.iter().zip(&topology.backends) {
            lab.backends.push(Backend::start(*plan, ns)?);
        }
        let config = lab.dir.config();
        lab.screen.say(&format!(
            "Starting `sluice run --config {}` in {} (a copy of config/demo.toml)",
            config.display(),
            topology.lb.name()
        ));
        lab.agent = Some(Agent::start(
            &topology.lb,
            sluice,
            &config,
            &lab.dir.path.join("sluice.log"),
        )?);
        lab.status = Some(StatusWatch::start(&topology.lb)?);
        Ok(lab)
    }

    fn topology(&self) -> Result<&Topology> {
        self.topology.as_ref().context("the demo network is gone")
    }

    /// Stops everything, in order; safe to call twice.
    fn teardown(&mut self) {
        if self.topology.is_none() {
            return;
        }
        self.screen.say("Tearing down");
        if let Some(mut traffic) = self.traffic.take() {
            traffic.stop();
        }
        self.status = None;
        if let Some(mut agent) = self.agent.take() {
            match agent.stop() {
                Ok(Some(status)) => {
                    let detached = self
                        .topology
                        .as_ref()
                        .is_some_and(|t| !topology::has_xdp(&t.lb, "eth0"));
                    self.screen.say(&format!(
                        "  sluice stopped on SIGTERM ({status}); its XDP program is {}",
                        if detached {
                            "detached"
                        } else {
                            "STILL ATTACHED"
                        }
                    ));
                }
                Ok(None) => {}
                Err(err) => eprintln!("demo: {err:#}"),
            }
        }
        self.backends.clear();
        let names = self.topology.as_ref().map(Topology::names);
        self.topology = None;
        if let Some(names) = names {
            self.screen
                .say(&format!("  removed the namespaces {}", names.join(" ")));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::topology::{ADMIN, APP_VIP, BACKENDS, WEB_VIP};

    fn demo_toml() -> std::path::PathBuf {
        crate::workspace::root().join("config").join("demo.toml")
    }

    fn validate(text: &str) -> sluice::config::Config {
        match sluice::config::parse(text, &demo_toml()) {
            Ok(loaded) => {
                assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
                loaded.config
            }
            Err(errors) => panic!("config/demo.toml does not validate:\n{errors}"),
        }
    }

    #[test]
    fn demo_toml_is_valid_as_shipped_and_after_the_reload_step() {
        let text = std::fs::read_to_string(demo_toml()).expect("config/demo.toml");
        validate(&text);
        let reloaded = super::script::reweighted(&text).expect("the reload edit applies");
        validate(&reloaded);
    }

    #[test]
    fn demo_toml_names_the_network_the_demo_builds() {
        let text = std::fs::read_to_string(demo_toml()).expect("config/demo.toml");
        let config = validate(&text);
        assert_eq!(config.admin.listen, SocketAddr::from(ADMIN));
        let vips: Vec<SocketAddr> = config
            .services
            .iter()
            .map(|s| SocketAddr::new(s.vip, s.port))
            .collect();
        assert_eq!(vips, [SocketAddr::from(WEB_VIP), SocketAddr::from(APP_VIP)]);
        let backends: Vec<(String, SocketAddr)> = config
            .pools
            .iter()
            .flat_map(|p| &p.backends)
            .map(|b| (b.name.clone(), b.address))
            .collect();
        let planned: Vec<(String, SocketAddr)> = BACKENDS
            .iter()
            .map(|b| {
                let address = SocketAddr::new(IpAddr::V4(b.address), b.port);
                (b.name.to_string(), address)
            })
            .collect();
        assert_eq!(backends, planned);
    }
}
