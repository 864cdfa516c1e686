//! The command line: `sluice run`, `sluice check-config`, `sluice detach`, and the verbs that
//! talk to a running agent (`status`, `reload`, `drain`, `enable`, `explain`, `drain-node`,
//! `undrain-node`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::logging::{self, LogFormat};

/// Sluice: an eBPF-accelerated L4/L7 load balancer.
///
/// An XDP program steers L4 connections to backends by Maglev consistent hashing; this agent
/// loads it, keeps its maps in step with the config, and terminates HTTP/HTTPS for L7 services.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// `sluice=debug,aya=warn`. RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "SLUICE_LOG")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLUICE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP program, attach it to the configured interfaces and serve until SIGTERM
    /// or SIGINT. The L4 data path is pinned and keeps running after the agent exits (or
    /// crashes); the next `run` adopts it without losing a flow.
    ///
    /// Needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON.
    Run {
        /// The config file (TOML). See config/README.md for every field.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Threads serving L7 traffic, health checks and the admin API. Defaults to the CPUs
        /// this process may run on (its affinity, e.g. under `taskset`), like nginx's
        /// `worker_processes auto`.
        #[arg(long, value_name = "N", env = "SLUICE_WORKER_THREADS",
              value_parser = clap::value_parser!(u16).range(1..))]
        worker_threads: Option<u16>,
        /// At SIGTERM/SIGINT, detach the XDP program and remove its pins and managed
        /// neighbour entries (as `sluice detach`) instead of leaving the data path running.
        #[arg(long)]
        detach_on_exit: bool,
        /// Pin the data path here instead of at [dataplane] pin_dir (one directory per
        /// agent instance on a host).
        #[arg(long, value_name = "DIR", env = "SLUICE_PIN_DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Remove what `sluice run` leaves running: the XDP program from every interface, its
    /// pinned links and maps, and the managed neighbour entries toward its backends. Run it
    /// while no agent runs; established L4 flows stop being forwarded.
    Detach {
        /// Take [dataplane] pin_dir from this config file.
        #[arg(short, long, value_name = "FILE", conflicts_with = "pin_dir")]
        config: Option<PathBuf>,
        /// The pin directory [default: /sys/fs/bpf/sluice].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Parse and validate a config file, print every error with its line and column, and exit
    /// non-zero if there is any. Touches nothing on the system.
    CheckConfig {
        /// The config file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Show a running agent's services, pools, backends, health and drain state (JSON).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show where each pool's backends come from (config, DNS, endpoints file) and when
    /// they last changed (JSON).
    Discovery {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Ask a running agent to re-read its config file (as SIGHUP does), and print the result.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop sending new flows and requests to a backend; established ones finish.
    Drain {
        /// The pool's name.
        pool: String,
        /// The backend's name, or its address:port.
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Explain where a flow goes, from the running agent's kernel maps: the service it
    /// matches, its connection-table entry, the Maglev slot and backend a new flow gets,
    /// that backend's health and neighbour, and for L7 services the route and pool (JSON).
    Explain {
        /// tcp or udp.
        #[arg(long, value_name = "PROTO", default_value = "tcp")]
        proto: String,
        /// The client's address and port.
        #[arg(long, value_name = "ADDR:PORT")]
        src: std::net::SocketAddr,
        /// The VIP and port.
        #[arg(long, value_name = "VIP:PORT")]
        dst: std::net::SocketAddr,
        /// L7 only: the request's Host (default: the VIP).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// L7 only: the request's path.
        #[arg(long, value_name = "PATH", default_value = "/")]
        path: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Withdraw every VIP this node announces ([announce]), for maintenance: the router moves
    /// traffic to the other nodes; this one keeps forwarding flows that still reach it. Stop
    /// it once its traffic is gone, or `undrain-node`.
    DrainNode {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Undo `drain-node`: VIPs with serving backends are announced again.
    UndrainNode {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Undo `drain`: the backend takes new flows and requests again (if healthy).
    Enable {
        /// The pool's name.
        pool: String,
        /// The backend's name, or its address:port.
        backend: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where a running agent's admin API is.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The agent's admin listener ([admin] listen in its config).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9100",
        env = "SLUICE_ADMIN"
    )]
    pub admin: std::net::SocketAddr,
    /// A file holding the bearer token ([admin] token_file), when the API requires one.
    #[arg(long, value_name = "FILE", env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Status { admin } => admin_call(&admin, Method::Get, "/status"),
        Command::Discovery { admin } => admin_call(&admin, Method::Get, "/discovery"),
        Command::Reload { admin } => admin_call(&admin, Method::Post, "/reload"),
        Command::DrainNode { admin } => admin_call(&admin, Method::Post, "/node/drain"),
        Command::UndrainNode { admin } => admin_call(&admin, Method::Post, "/node/undrain"),
        Command::Drain {
            pool,
            backend,
            admin,
        } => admin_call(
            &admin,
            Method::Post,
            &format!("/backends/{}/{}/drain", encode(&pool), encode(&backend)),
        ),
        Command::Enable {
            pool,
            backend,
            admin,
        } => admin_call(
            &admin,
            Method::Post,
            &format!("/backends/{}/{}/enable", encode(&pool), encode(&backend)),
        ),
        Command::Explain {
            proto,
            src,
            dst,
            host,
            path,
            admin,
        } => {
            let mut query = format!(
                "/debug/flow?proto={}&src={}&dst={}&path={}",
                encode(&proto),
                encode(&src.to_string()),
                encode(&dst.to_string()),
                encode(&path)
            );
            if let Some(host) = host {
                query += &format!("&host={}", encode(&host));
            }
            admin_call(&admin, Method::Get, &query)
        }
        Command::Detach { config, pin_dir } => detach(config.as_deref(), pin_dir),
        Command::Run {
            config,
            worker_threads,
            detach_on_exit,
            pin_dir,
        } => match crate::run::run(
            &config,
            worker_threads.map(usize::from),
            crate::run::Lifecycle {
                detach_on_exit,
                pin_dir,
            },
        ) {
            Ok(()) => {
                crate::access_log_writer::stop_global();
                ExitCode::SUCCESS
            }
            Err(err) => {
                crate::access_log_writer::stop_global();
                tracing::error!("{err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn detach(config_file: Option<&std::path::Path>, pin_dir: Option<PathBuf>) -> ExitCode {
    let pin_dir = match (config_file, pin_dir) {
        (Some(file), _) => match config::load(file) {
            Ok(loaded) => loaded.config.dataplane.pin_dir,
            Err(errors) => {
                for diagnostic in &errors.diagnostics {
                    eprintln!("error: {diagnostic}");
                }
                eprintln!("{}: invalid; nothing was detached", file.display());
                return ExitCode::FAILURE;
            }
        },
        (None, Some(dir)) => dir,
        (None, None) => PathBuf::from(config::DEFAULT_PIN_DIR),
    };
    match crate::dataplane::lifecycle::detach(&pin_dir) {
        Ok(removed) => {
            println!(
                "{}: detached from {} interface(s){}{}, removed {} pinned map(s) and {} \
                 neighbour entr(ies)",
                pin_dir.display(),
                removed.links.len(),
                if removed.links.is_empty() { "" } else { ": " },
                removed.links.join(", "),
                removed.maps,
                removed.neighbours
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::from(err));
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            let c = &loaded.config;
            println!(
                "{}: OK ({} interfaces, {} services, {} pools, {} certificates)",
                file.display(),
                c.interfaces.len(),
                c.services.len(),
                c.pools.len(),
                c.certificates.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for diagnostic in &errors.diagnostics {
                eprintln!("error: {diagnostic}");
            }
            eprintln!(
                "{}: {} error(s); the config is invalid",
                file.display(),
                errors.diagnostics.len()
            );
            ExitCode::FAILURE
        }
    }
}

enum Method {
    Get,
    Post,
}

/// Calls a running agent's admin API and prints its answer.
fn admin_call(args: &AdminArgs, method: Method, path: &str) -> ExitCode {
    let token = match &args.token_file {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(token) => Some(token.trim().to_string()),
            Err(err) => {
                eprintln!("error: reading the token file {}: {err}", file.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let client = crate::admin::AdminClient {
        addr: args.admin,
        token,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match method {
            Method::Get => client.get(path).await,
            Method::Post => client.post(path).await,
        }
    });
    match result {
        Ok(body) => {
            // JSON answers print indented; text ones as they came.
            match serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .filter(|v| v.is_object())
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
            {
                Some(pretty) => println!("{pretty}"),
                None => print!("{body}"),
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Percent-encodes a path segment (names may hold ':' or '/').
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
