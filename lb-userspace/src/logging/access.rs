//! The access log's writer: request threads append their lines to one bounded buffer and a
//! writer thread writes it to stderr in batches, so a request never waits on the log (no
//! write system call, no stderr lock per line). Lines that find the buffer full are dropped
//! and counted (`sluice_access_log_dropped_lines_total`), never waited for.
//!
//! Lines keep the agent's log format (text or JSON, as `--log-format` says), so they read as
//! the other log lines do.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::LogFormat;

/// How long a line may wait in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this full is written at once.
const FLUSH_AT: usize = 64 * 1024;
/// The most the buffer holds; lines beyond are dropped.
const MAX_BUFFERED: usize = 1024 * 1024;

/// The access log's writer, shared by every request.
pub struct AccessLog {
    format: LogFormat,
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// Starts the writer thread (once; later calls keep the first format).
pub fn start(format: LogFormat) {
    let mut started = false;
    ACCESS_LOG.get_or_init(|| {
        started = true;
        AccessLog {
            format,
            buffer: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        }
    });
    if !started {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-access-log".into())
        .spawn(|| {
            if let Some(log) = ACCESS_LOG.get() {
                log.run();
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "starting the access log's writer thread; access lines are written as they come");
    }
}

/// The running writer, if [`start`] ran.
pub fn get() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

/// Lines dropped because the buffer was full, since start.
pub fn dropped() -> u64 {
    ACCESS_LOG.get().map_or(0, |log| log.dropped.load(Relaxed))
}

/// Writes out what is buffered (at shutdown).
pub fn flush() {
    if let Some(log) = ACCESS_LOG.get() {
        let batch = std::mem::take(&mut *log.lock());
        write_out(&batch);
    }
}

impl AccessLog {
    /// The format lines are written in.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Appends one line made by `line` (which writes it without the newline); drops it when
    /// the buffer is full.
    pub fn append(&self, line: impl FnOnce(&mut Vec<u8>)) {
        let mut buffer = self.lock();
        if buffer.len() >= MAX_BUFFERED {
            drop(buffer);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        line(&mut buffer);
        buffer.push(b'\n');
        if buffer.len() >= FLUSH_AT {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut spare = Vec::with_capacity(FLUSH_AT);
        loop {
            let batch = {
                let mut buffer = self.lock();
                if buffer.len() < FLUSH_AT {
                    buffer = self
                        .wake
                        .wait_timeout(buffer, FLUSH_EVERY)
                        .map_or_else(|p| p.into_inner().0, |(b, _)| b);
                }
                spare.clear();
                std::mem::replace(&mut *buffer, spare)
            };
            write_out(&batch);
            spare = batch;
            // A burst may have grown it far: keep it no larger than a full batch.
            spare.shrink_to(FLUSH_AT);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write_out(batch: &[u8]) {
    if batch.is_empty() {
        return;
    }
    // Nowhere to report a failed write to but the log itself: the lines are lost.
    let _ = std::io::stderr().lock().write_all(batch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_growing() {
        let log = AccessLog {
            format: LogFormat::Text,
            buffer: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        };
        let line = [b'x'; 1000];
        for _ in 0..(MAX_BUFFERED / 1001 + 10) {
            log.append(|b| b.extend_from_slice(&line));
        }
        let buffered = log.lock().len();
        assert!(buffered <= MAX_BUFFERED + 1001, "{buffered} bytes buffered");
        assert!(log.dropped.load(Relaxed) >= 9);
        assert!(log.lock().ends_with(b"x\n"), "whole lines only");
    }
}
