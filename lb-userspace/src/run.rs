//! `sluice run`: load the config, start health checks, fill the kernel maps, start the L7
//! listeners and the admin API, attach the data plane, and serve until told to stop.
//!
//! One loop owns all agent state and applies every change: SIGHUP, `POST /reload` and
//! edits of the config file (config), health snapshots (kernel tables and L7 pools), and drain/enable from the admin
//! API. Nothing else mutates it, so changes never interleave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

mod error;

pub use error::{ApplyError, ReloadError, WriteError};

use crate::admin::{self, AdminServer, Command, CommandError, Status};
use crate::announce::Announcements;
use crate::config::watch::ConfigWatch;
use crate::config::{self, Config, ConfigErrors};
use crate::dataplane::{self, Dataplane};
use crate::discovery::{self, Book, Sources};
use crate::error_chain::Chain;
use crate::health::{HealthChecker, HealthView};
use crate::metrics::{AnnounceCollector, HealthCollector, L7Collector, Metrics};
use crate::proxy::Proxy;
use crate::{balancer, status};

/// How long SIGTERM waits for L7 requests in flight before the agent exits anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM or SIGINT, then drains L7 connections and exits.
/// `worker_threads` sizes the runtime (default: the CPUs this process may run on).
/// How the agent treats the data path that outlives it.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Remove the data path at exit; otherwise it keeps running, pinned, for the next agent
    /// to adopt.
    pub detach_on_exit: bool,
    /// Overrides `[dataplane] pin_dir`.
    pub pin_dir: Option<PathBuf>,
}

/// Runs the agent until SIGTERM or SIGINT; see [`Lifecycle`] for what happens to the data
/// path then.
pub fn run(config_path: &Path, worker_threads: Option<usize>, lifecycle: Lifecycle) -> Result<()> {
    raise_open_files_limit();
    let config = load(config_path).map_err(|errors| {
        anyhow!(
            "{} has {} error(s); nothing was started",
            config_path.display(),
            errors.diagnostics.len()
        )
    })?;
    info!(path = %config_path.display(), "config loaded");
    crate::logging::apply_access_log(&config.log).context("setting up the access log")?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut agent = Agent::start(config_path.to_path_buf(), config, lifecycle.pin_dir).await?;
        // VIPs are announced only once the data path is attached and its tables filled.
        agent.sync_announcements();
        // What starting took (the config, the kernel's BTF) is freed; give it back.
        crate::memory::started();
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut watch = ConfigWatch::start(&agent.config_path)?;
        let reason = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = hup.recv() => {
                    let _ = agent.reload().await;
                }
                Some(()) = watch.settled() => {
                    if agent.file_changed() {
                        info!("the config file changed");
                        let _ = agent.reload().await;
                    }
                }
                Some(command) = agent.commands.recv() => agent.handle(command).await,
                Ok(()) = agent.health_rx.changed() => agent.health_changed(),
                Some(event) = agent.discovery_rx.recv() => agent.discovered(event).await,
            }
            // Whatever changed (config, health, drain), the announced VIPs follow it.
            agent.sync_announcements();
        };
        agent.shutdown(reason, lifecycle.detach_on_exit).await;
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard limit: each L7 connection holds two
/// descriptors, and the usual soft limit of 1024 would cap a listener near 500 clients.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        info!(
            from = before,
            to = limit.rlim_max,
            "raised the open files limit"
        );
    } else {
        warn!(
            error = %std::io::Error::last_os_error(),
            limit = before,
            "could not raise the open files limit; L7 connections beyond it will be refused"
        );
    }
}

/// Reads and validates the config, logging every problem.
fn load(path: &Path) -> Result<Config, ConfigErrors> {
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
            Err(errors)
        }
    }
}

/// The running agent: the config in force and everything built from it.
struct Agent {
    config_path: PathBuf,
    /// The config in force: `file_config` with the discovered backends filled in.
    config: Config,
    /// The config as the file has it (discovered pools without backends).
    file_config: Config,
    /// One task per discovered pool, and what they found.
    sources: Sources,
    discovery_rx: mpsc::Receiver<discovery::Event>,
    book: Book,
    version: u64,
    /// When `version` was applied.
    applied_at: std::time::SystemTime,
    /// Digest of the config file as last read, so a watch event for content already seen
    /// (a SIGHUP reload got there first, or a save without changes) reloads nothing.
    last_read: Option<u64>,
    dataplane: Dataplane,
    proxy: Proxy,
    health: HealthChecker,
    health_rx: watch::Receiver<Arc<HealthView>>,
    metrics: Arc<Metrics>,
    status_tx: watch::Sender<Arc<Status>>,
    ready_tx: watch::Sender<bool>,
    commands: mpsc::Receiver<Command>,
    admin_stop: watch::Sender<bool>,
    /// The VIP routes the node's BGP daemon announces (`[announce]`).
    announcements: Announcements,
}

impl Agent {
    async fn start(config_path: PathBuf, config: Config, pin_dir: Option<PathBuf>) -> Result<Self> {
        dataplane::preflight()?;
        dataplane::check_forwarding(&config)?;
        let (health, mut health_rx) = HealthChecker::start(&config);
        let view = health_rx.borrow_and_update().clone();
        let desired = balancer::desired_with(&config, &view).context("building Maglev tables")?;
        let settings = match pin_dir {
            Some(pin_dir) => config::DataplaneSettings {
                pin_dir,
                ..config.dataplane.clone()
            },
            None => config.dataplane.clone(),
        };
        let mut dataplane = Dataplane::load(dataplane::ring_capacity(&desired), &settings)?;
        // Tables before traffic: the program must never see a service without them.
        dataplane.apply(&desired)?;
        // L7 listeners before the program passes their packets up.
        let proxy =
            Proxy::start(&config, Some(health.handle())).context("starting the l7 listeners")?;
        push_usable(&proxy, &view);

        let metrics = Arc::new(Metrics::new());
        metrics.register_xdp(dataplane.stats());
        metrics.register(Box::new(L7Collector::new(Arc::clone(proxy.stats()))));
        metrics.register(Box::new(HealthCollector::new(health.handle())));
        let announcements = Announcements::kernel();
        metrics.register(Box::new(AnnounceCollector::new(announcements.published())));

        let (status_tx, status_rx) = watch::channel(Arc::new(Status::default()));
        let (ready_tx, ready_rx) = watch::channel(false);
        let (commands_tx, commands) = mpsc::channel(16);
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let token = admin_token(&config)?;
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| {
                format!(
                    "binding the admin API to {} ([admin] listen)",
                    config.admin.listen
                )
            })?;
        tokio::spawn(admin::serve(
            listener,
            AdminServer {
                metrics: Arc::clone(&metrics),
                metrics_path: config.admin.metrics_path.clone(),
                status: status_rx,
                commands: commands_tx,
                token,
                ready: ready_rx,
                live: admin::Live {
                    xdp: Some(dataplane.stats()),
                    l7: Some(Arc::clone(proxy.stats())),
                    health: Some(health.handle()),
                    flows: dataplane
                        .inspector()
                        .map(Arc::new)
                        .inspect_err(|err| warn!("GET /debug/flow will not work: {err}"))
                        .ok(),
                },
                limits: admin::AdminLimits::default(),
            },
            admin_stop_rx,
        ));

        for interface in &config.interfaces {
            dataplane.attach(interface)?;
        }
        dataplane.detach_unclaimed();
        let last_read = file_digest(&config_path);
        let (mut sources, discovery_rx) = Sources::new();
        sources.sync(&config);
        let book = Book::new(&metrics);
        let agent = Self {
            config_path,
            last_read,
            file_config: config.clone(),
            config,
            sources,
            discovery_rx,
            book,
            version: 1,
            applied_at: std::time::SystemTime::now(),
            dataplane,
            proxy,
            health,
            health_rx,
            metrics,
            status_tx,
            ready_tx,
            commands,
            admin_stop,
            announcements,
        };
        agent.publish_status();
        agent.ready_tx.send_replace(true);
        info!(
            interfaces = agent.config.interfaces.len(),
            services = agent.config.services.len(),
            admin = %agent.config.admin.listen,
            "sluice is running"
        );
        Ok(agent)
    }

    /// Re-reads the config and applies what changed. An invalid config is rejected whole and
    /// the running one stays in force.
    async fn reload(&mut self) -> Result<String, ReloadError> {
        let result = self.read_and_apply().await;
        // The old config's tables (or the rejected one's) are freed now: give them back.
        // Only here: health changes and admin commands free little, and come often.
        crate::memory::release_free();
        result
    }

    async fn read_and_apply(&mut self) -> Result<String, ReloadError> {
        info!(path = %self.config_path.display(), "reloading the config");
        self.last_read = file_digest(&self.config_path);
        let config = match load(&self.config_path) {
            Ok(config) => config,
            Err(errors) => {
                error!(
                    errors = errors.diagnostics.len(),
                    "config rejected; the running config stays in force"
                );
                self.metrics.reload_result(false);
                return Err(ReloadError::Rejected(errors));
            }
        };
        // Pools that keep their source keep what it found; the others start over.
        let kept = |name: &str| {
            let source = config
                .pools
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.discovery.as_ref());
            source.is_some() && self.sources.follows(name, source)
        };
        let discovered = self
            .book
            .discovered()
            .iter()
            .filter(|(name, _)| kept(name))
            .map(|(name, backends)| (name.clone(), backends.clone()))
            .collect();
        let effective = discovery::effective(&config, &discovered);
        if let Err(err) = self.apply(&effective).await {
            error!(
                "reload failed; the running config stays in force: {}",
                Chain(&err)
            );
            self.metrics.reload_result(false);
            return Err(ReloadError::Failed(err));
        }
        let sources = &self.sources;
        self.book.retain(&config, |name| {
            let source = config
                .pools
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.discovery.as_ref());
            sources.follows(name, source)
        });
        self.sources.sync(&config);
        // Reopened at each reload, so that a rotated file is let go.
        if let Err(err) = crate::logging::apply_access_log(&config.log) {
            error!(
                "the access log keeps its previous destination: {}",
                Chain(&err)
            );
        }
        self.file_config = config;
        self.config = effective;
        self.version += 1;
        self.applied_at = std::time::SystemTime::now();
        self.metrics.reload_result(true);
        self.publish_status();
        info!(version = self.version, "config reloaded");
        Ok(format!("config version {} applied", self.version))
    }

    /// Applies `config` whole or not at all. Everything that can fail is built and checked
    /// first (listeners, sockets, certificates, pools, routes, Maglev tables); only then does
    /// anything change, and a kernel write that still fails is rolled back, so a failed
    /// reload leaves the running state, kernel maps included, as it was.
    async fn apply(&mut self, config: &Config) -> Result<(), ApplyError> {
        dataplane::check_forwarding(config).map_err(ApplyError::Forwarding)?;
        if config.dataplane != self.config.dataplane {
            return Err(ApplyError::DataplaneChanged);
        }
        if config.admin != self.config.admin {
            return Err(ApplyError::AdminChanged);
        }
        let proxy = self.proxy.prepare(config).map_err(ApplyError::Listeners)?;
        let current = self.health_rx.borrow().clone();
        let before =
            balancer::desired_with(&self.config, &current).map_err(ApplyError::RunningTables)?;
        balancer::desired_with(config, &current).map_err(ApplyError::Tables)?;

        // From here on the new config goes into force.
        let added: Vec<_> = config
            .interfaces
            .iter()
            .filter(|new| !self.config.interfaces.contains(new))
            .collect();
        let mut attached = Vec::new();
        for new in &added {
            if let Err(err) = self.dataplane.attach(new) {
                self.detach_all_of(&attached);
                return Err(ApplyError::Attach(err));
            }
            attached.push(new.name.clone());
        }
        self.health.update(config);
        let view = self.health_rx.borrow_and_update().clone();
        let written = balancer::desired_with(config, &view)
            .map_err(WriteError::Tables)
            .and_then(|desired| self.dataplane.apply(&desired).map_err(WriteError::Maps));
        if let Err(err) = written {
            self.health.update(&self.config);
            if let Err(undo) = self.dataplane.apply(&before) {
                error!(
                    "restoring the previous kernel tables after a failed reload: {}",
                    Chain(&undo)
                );
            }
            self.detach_all_of(&attached);
            return Err(ApplyError::WriteMaps(err));
        }
        for old in &self.config.interfaces {
            if !config.interfaces.contains(old)
                && let Err(err) = self.dataplane.detach(&old.name)
            {
                error!(interface = %old.name, "detaching a removed interface: {err:#}");
            }
        }
        self.proxy.commit(proxy);
        // New pools start with every backend usable: give them the checker's view.
        push_usable(&self.proxy, &view);
        Ok(())
    }

    /// An answer from a pool's discovery source: when the pool's backends changed, the
    /// config in force is rebuilt with them and applied like a reload (only the difference
    /// reaches the kernel tables). Answers already queued are taken in the same step.
    async fn discovered(&mut self, event: discovery::Event) {
        let mut changed = self.book.record(event, &self.file_config);
        while let Ok(more) = self.discovery_rx.try_recv() {
            changed |= self.book.record(more, &self.file_config);
        }
        if changed {
            let effective = discovery::effective(&self.file_config, self.book.discovered());
            match self.apply(&effective).await {
                Ok(()) => {
                    self.config = effective;
                    info!("discovered backends applied");
                }
                Err(err) => error!(
                    "applying discovered backends failed; the previous ones stay: {}",
                    Chain(&err)
                ),
            }
        }
        self.publish_status();
    }

    /// Undoes attachments made by a reload that then failed.
    fn detach_all_of(&mut self, interfaces: &[String]) {
        for name in interfaces {
            if let Err(err) = self.dataplane.detach(name) {
                error!(interface = %name, "detaching after a failed reload: {err:#}");
            }
        }
    }

    /// Whether the config file's content differs from what was last read.
    fn file_changed(&self) -> bool {
        file_digest(&self.config_path) != self.last_read
    }

    /// A new health snapshot: kernel tables and L7 pools follow it.
    fn health_changed(&mut self) {
        let view = self.health_rx.borrow_and_update().clone();
        match balancer::desired_with(&self.config, &view) {
            Ok(desired) => {
                if let Err(err) = self.dataplane.apply(&desired) {
                    error!("applying health changes to the kernel maps: {err:#}");
                }
            }
            Err(err) => error!("building Maglev tables for health changes: {err}"),
        }
        push_usable(&self.proxy, &view);
        self.publish_status();
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Reload(reply) => {
                let result = self.reload().await.map_err(CommandError::from);
                let _ = reply.send(result);
            }
            Command::Drain {
                pool,
                backend,
                reply,
            } => {
                let result = self.set_drained(&pool, &backend, true);
                let _ = reply.send(result);
            }
            Command::Enable {
                pool,
                backend,
                reply,
            } => {
                let result = self.set_drained(&pool, &backend, false);
                let _ = reply.send(result);
            }
            Command::DrainNode { drain, reply } => {
                let result = self.announcements.set_drained(drain).map_err(Into::into);
                // Answer once the routes are really gone (or back).
                self.sync_announcements();
                let _ = reply.send(result);
            }
        }
    }

    fn set_drained(
        &mut self,
        pool: &str,
        backend: &str,
        drain: bool,
    ) -> Result<String, CommandError> {
        let address = status::find_backend(&self.config, pool, backend)?;
        if drain {
            self.health.drain(pool, address)?;
        } else {
            self.health.enable(pool, address)?;
        }
        // The health view is already updated: the status says so before the answer goes, so
        // a client that reads it next sees its own change (the maps follow in the main loop).
        self.publish_status();
        let verb = if drain { "draining" } else { "enabled" };
        info!(pool, %address, "{verb} by the admin API");
        Ok(format!("{pool}/{backend} ({address}) {verb}"))
    }

    fn publish_status(&self) {
        let view = self.health_rx.borrow().clone();
        let mut status = status::build(
            &self.config,
            &view,
            (self.version, self.applied_at),
            &self.config_path,
        );
        status.announce = self.announcements.status();
        status.discovery = self.book.sources(&self.config, self.applied_at);
        self.status_tx.send_replace(Arc::new(status));
    }

    /// Brings the announced VIPs in line with the config, health and drain state in force.
    fn sync_announcements(&mut self) {
        let view = self.health_rx.borrow().clone();
        if self.announcements.sync(&self.config, &view) {
            self.publish_status();
        }
    }

    async fn shutdown(mut self, reason: &str, detach_on_exit: bool) {
        // Withdrawn first, and the data path kept while the router moves the traffic away.
        if let Some(grace) = self.announcements.withdraw_all() {
            info!(
                signal = reason,
                ?grace,
                "shutting down: VIPs withdrawn, still forwarding for the grace"
            );
            tokio::time::sleep(grace).await;
        }
        info!(signal = reason, "shutting down: draining l7 connections");
        self.ready_tx.send_replace(false);
        self.proxy.shutdown(DRAIN_GRACE).await;
        self.admin_stop.send_replace(true);
        self.health.stop().await;
        if detach_on_exit {
            info!("detaching the XDP program (--detach-on-exit)");
            self.dataplane.detach_everything();
        } else {
            self.dataplane.leave_running();
        }
        info!("stopped");
    }
}

/// Gives each L7 pool the set of backends the health checker says may take requests.
fn push_usable(proxy: &Proxy, view: &HealthView) {
    for (name, pool_view) in view.pools() {
        if let Some(pool) = proxy.pool(name) {
            pool.set_usable(&pool_view.usable.backends);
        }
    }
}

/// A digest of the file's bytes (not cryptographic: it only tells a change from none).
fn file_digest(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// The bearer token the admin API requires, read from `[admin] token_file`.
fn admin_token(config: &Config) -> Result<Option<String>> {
    let Some(path) = &config.admin.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(Some(token))
}
