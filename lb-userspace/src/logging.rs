//! Log setup: `tracing` to stderr, human-readable or JSON, level from `--log-level` or
//! `RUST_LOG`.

use std::io::{BufWriter, IsTerminal};

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
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

/// Keeps the log writer thread running; dropping it writes out every queued line.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Lines queued for the writer thread before a logging thread waits for room: at a few
/// hundred bytes a line, at most a few MiB held when stderr is slower than the requests.
const QUEUED_LINES: usize = 8 * 1024;

/// Installs the global subscriber. `level` is an `EnvFilter` directive (e.g. `info`,
/// `sluice=debug`); `RUST_LOG`, when set, wins. Keep the guard until the process ends.
///
/// Lines go through a queue to one writer thread, which writes what has gathered in one
/// buffered write to stderr: a proxy worker logging a request never takes the stderr lock or
/// makes a system call, and a slow reader of stderr stalls only the writer. Nothing is
/// dropped: when the queue is full, a logging thread waits for room.
pub fn init(level: &str, format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_dependencies(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("sluice-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard { _writer: guard }
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
