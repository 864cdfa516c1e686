//! Log setup: `tracing` to stderr, human-readable or JSON, level from `--log-level` or
//! `RUST_LOG`; the access log's destination and format (`[log]`), whose lines go through
//! their own batched writer (`access_log_writer`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

use crate::access_log_writer::{self, Destination, WriterError};
use crate::config::{AccessLogFormat, LogSettings};

/// `--log-format`, which the access log follows unless `[log] access_log_format` says.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `level` is an `EnvFilter` directive (e.g. `info`,
/// `sluice=debug`); `RUST_LOG`, when set, wins.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_dependencies(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Points the access log at `settings` (at start and at each reload): its writer starts, or
/// reopens its destination, so a rotated file is let go; lines follow in the format set.
pub fn apply_access_log(settings: &LogSettings) -> Result<(), WriterError> {
    let destination = settings
        .access_log_file
        .clone()
        .map_or(Destination::Stderr, Destination::File);
    access_log_writer::start_or_switch(&destination)?;
    let json = match settings.access_log_format {
        Some(format) => format == AccessLogFormat::Json,
        None => FORMAT.get().copied().unwrap_or_default() == LogFormat::Json,
    };
    crate::proxy::set_access_log_json(json);
    Ok(())
}

/// The DNS resolver logs whole DNS messages at debug level: `--log-level debug` is for
/// Sluice's own decisions, so the resolver stays at `warn` unless the directive names it.
fn with_quiet_dependencies(level: &str) -> String {
    if level.contains("hickory") {
        level.to_string()
    } else {
        format!("{level},hickory_proto=warn,hickory_resolver=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_is_quiet_unless_named() {
        let quiet = EnvFilter::try_new(with_quiet_dependencies("debug")).expect("directive");
        assert_eq!(
            quiet.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::DEBUG)
        );
        assert!(quiet.to_string().contains("hickory_resolver=warn"));
        let named = with_quiet_dependencies("info,hickory_resolver=trace");
        assert_eq!(named, "info,hickory_resolver=trace");
    }
}
