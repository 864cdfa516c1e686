//! `sluice run`: load the config, fill the kernel maps, attach the data plane, serve until
//! told to stop; SIGHUP re-reads the config and applies what changed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{self, Config, HealthCheckKind, ServiceKind};
use crate::dataplane::{self, Dataplane};
use crate::{balancer, forwarding};

/// Runs the agent until SIGTERM or SIGINT, then detaches everything it attached.
pub fn run(config_path: &Path) -> Result<()> {
    let config = load(config_path).map_err(|count| {
        anyhow!(
            "{} has {count} error(s); nothing was started",
            config_path.display()
        )
    })?;
    info!(path = %config_path.display(), "config loaded");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut agent = Agent::start(config_path.to_path_buf(), config)?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => agent.reload(),
            }
        };
        info!(signal = reason, "shutting down: detaching the XDP program");
        agent.dataplane.detach_all();
        info!("stopped");
        Ok(())
    })
}

/// Reads and validates the config, logging every problem; `Err` carries the error count.
fn load(path: &Path) -> Result<Config, usize> {
    match config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                warn!("{warning}");
            }
            Ok(loaded.config)
        }
        Err(errors) => {
            for diagnostic in &errors.diagnostics {
                error!("{diagnostic}");
            }
            Err(errors.diagnostics.len())
        }
    }
}

/// The running agent: the config in force and the data plane built from it.
struct Agent {
    config_path: PathBuf,
    config: Config,
    dataplane: Dataplane,
}

impl Agent {
    fn start(config_path: PathBuf, config: Config) -> Result<Self> {
        warn_unimplemented(&config);
        dataplane::preflight()?;
        forwarding::check(&config)?;
        let desired = balancer::desired(&config).context("building Maglev tables")?;
        let mut dataplane = Dataplane::load(dataplane::ring_capacity(&desired))?;
        // Tables before traffic: the program must never see a service without them.
        dataplane.apply(&desired)?;
        for interface in &config.interfaces {
            dataplane.attach(interface)?;
        }
        info!(
            interfaces = config.interfaces.len(),
            services = config.services.len(),
            "sluice is running"
        );
        Ok(Self {
            config_path,
            config,
            dataplane,
        })
    }

    /// Re-reads the config and applies what changed. An invalid config is rejected whole and
    /// the running one stays in force.
    fn reload(&mut self) {
        info!(path = %self.config_path.display(), "reloading the config");
        let config = match load(&self.config_path) {
            Ok(config) => config,
            Err(count) => {
                error!(
                    errors = count,
                    "config rejected; the running config stays in force"
                );
                return;
            }
        };
        if let Err(err) = self.apply(&config) {
            error!("reload failed part-way: {err:#}");
            return;
        }
        self.config = config;
        info!("config reloaded");
    }

    fn apply(&mut self, config: &Config) -> Result<()> {
        forwarding::check(config)?;
        let desired = balancer::desired(config).context("building Maglev tables")?;
        self.dataplane.apply(&desired)?;
        for old in &self.config.interfaces {
            if !config.interfaces.contains(old) {
                self.dataplane.detach(&old.name)?;
            }
        }
        for new in &config.interfaces {
            if !self.config.interfaces.contains(new) {
                self.dataplane.attach(new)?;
            }
        }
        Ok(())
    }
}

/// Says plainly which configured features this version does not run yet, rather than
/// accepting them silently.
fn warn_unimplemented(config: &Config) {
    for service in &config.services {
        if matches!(service.kind, ServiceKind::L7(_)) {
            warn!(
                service = %service.name,
                "l7 services are not terminated by this version yet: the XDP program passes \
                 their packets to the host stack, where nothing of Sluice listens"
            );
        }
    }
    for pool in &config.pools {
        if pool.health_check.kind != HealthCheckKind::None {
            warn!(
                pool = %pool.name,
                "health checks are not run by this version yet: every backend counts as healthy"
            );
        }
    }
    warn!(
        listen = %config.admin.listen,
        "the admin and metrics listener is not served by this version yet"
    );
}
