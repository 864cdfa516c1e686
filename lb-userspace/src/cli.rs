//! The command line: `sluice run`, `sluice check-config`.

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
    /// or SIGINT, then detach and exit.
    ///
    /// Needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON.
    Run {
        /// The config file (TOML). See config/README.md for every field.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Parse and validate a config file, print every error with its line and column, and exit
    /// non-zero if there is any. Touches nothing on the system.
    CheckConfig {
        /// The config file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    logging::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => match crate::run::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                ExitCode::FAILURE
            }
        },
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
