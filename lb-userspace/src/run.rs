//! `sluice run`: load the config, fill the kernel maps, attach the data plane, serve until
//! told to stop; SIGHUP re-reads the config and applies what changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{self, Config, HealthCheckKind};
use crate::dataplane::{self, Dataplane};
use crate::proxy::Proxy;
use crate::{balancer, forwarding};

/// How long SIGTERM waits for L7 requests in flight before the agent exits anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

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
        info!(signal = reason, "shutting down: draining l7 connections");
        agent.proxy.shutdown(DRAIN_GRACE).await;
        info!("detaching the XDP program");
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

/// The running agent: the config in force, the data plane and the L7 proxy built from it.
struct Agent {
    config_path: PathBuf,
    config: Config,
    dataplane: Dataplane,
    proxy: Proxy,
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
        // L7 listeners before the program passes their packets up.
        let proxy = Proxy::start(&config).context("starting the l7 listeners")?;
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
            proxy,
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
        self.proxy.reload(config).map_err(|errors| {
            let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow!("{}", all.join("; "))
        })
    }
}

/// Says plainly which configured features this version does not run yet, rather than
/// accepting them silently.
fn warn_unimplemented(config: &Config) {
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
