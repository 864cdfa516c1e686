//! `sluice run`: load the config, attach the data plane, serve until told to stop.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::dataplane::{self, Dataplane};
use crate::{balancer, config};

/// Runs the agent until SIGTERM or SIGINT, then detaches everything it attached.
pub fn run(config_path: &Path) -> Result<()> {
    let loaded = config::load(config_path).map_err(|errors| {
        for diagnostic in &errors.diagnostics {
            tracing::error!("{diagnostic}");
        }
        anyhow!(
            "{} has {} error(s); nothing was started",
            config_path.display(),
            errors.diagnostics.len()
        )
    })?;
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let config = loaded.config;
    info!(path = %config_path.display(), "config loaded");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        dataplane::preflight()?;
        let desired = balancer::desired(&config).context("building Maglev tables")?;
        let mut dataplane = Dataplane::load(dataplane::ring_capacity(&desired))?;
        // Tables before traffic: the program must never see a service without them.
        dataplane.apply(&desired)?;
        for interface in &config.interfaces {
            dataplane.attach(interface)?;
        }
        info!(interfaces = config.interfaces.len(), "sluice is running");

        let signal = wait_for_shutdown().await?;
        info!(signal, "shutting down: detaching the XDP program");
        dataplane.detach_all();
        info!("stopped");
        Ok(())
    })
}

async fn wait_for_shutdown() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
