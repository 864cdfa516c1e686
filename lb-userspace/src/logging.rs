//! Log setup: `tracing` to stderr, human-readable or JSON, level from `--log-level` or
//! `RUST_LOG`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
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
