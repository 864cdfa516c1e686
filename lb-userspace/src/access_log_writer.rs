//! The access log's writer: request threads append finished lines to one in-memory buffer
//! (no system call, no wake-up per line) and a writer thread writes them out in batches:
//! when a batch fills ([`Limits::batch`]), with one wake-up for the whole batch, and on a
//! timer ([`Limits::interval`]) so that lines never sit long.
//!
//! What is buffered is bounded ([`Limits::bound`]): a line that would pass the bound is
//! dropped and counted, never waited for, so a stalled destination (a full disk, a blocked
//! pipe) cannot hold up a request. [`AccessLogWriter::stop`] writes out everything left.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where access lines are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    /// The agent's standard error, beside its other log lines.
    #[default]
    Stderr,
    /// A file, opened for appending (created if missing).
    File(PathBuf),
}

/// Why a destination could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The access-log file could not be opened for appending.
    #[error("opening the access log file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("starting the access log's writer thread")]
    Thread(#[source] std::io::Error),
}

/// The writer's sizes and timer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A batch this large is handed to the writer thread at once.
    pub batch: usize,
    /// The most bytes held (the batch being filled and those waiting to be written).
    pub bound: usize,
    /// How often the writer thread writes out a batch that has not filled.
    pub interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch: 64 * 1024,
            bound: 8 * 1024 * 1024,
            interval: Duration::from_millis(100),
        }
    }
}

/// Spare batch buffers kept for reuse, so a steady load allocates none.
const SPARES: usize = 4;

/// The access log's writer, shared by every request thread.
pub struct AccessLogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    limits: Limits,
    state: Mutex<State>,
    /// Wakes the writer thread: a batch is full, a new destination, or stop.
    wake: Condvar,
    /// Held by whoever writes; only the writer thread once it runs, anyone after stop.
    sink: Mutex<Box<dyn Write + Send>>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The batch lines are appended to.
    filling: Vec<u8>,
    /// What waits for the writer thread, in order: full batches and destination switches.
    queued: VecDeque<Queued>,
    /// Bytes handed over and not yet written (queued or being written).
    handed_over: usize,
    /// Written batches, cleared, for reuse.
    spares: Vec<Vec<u8>>,
    /// Set by stop: the thread writes everything and ends; later lines are written directly.
    stopped: bool,
}

enum Queued {
    Lines(Vec<u8>),
    /// Lines queued before go to the old destination, later ones to this one.
    SwitchTo(Box<dyn Write + Send>),
}

impl State {
    /// Queues the batch being filled (if any) and starts a new one.
    fn hand_over(&mut self, batch_size: usize) {
        if self.filling.is_empty() {
            return;
        }
        let spare = self
            .spares
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(batch_size));
        let full = std::mem::replace(&mut self.filling, spare);
        self.handed_over += full.len();
        self.queued.push_back(Queued::Lines(full));
    }
}

impl AccessLogWriter {
    /// Starts a writer to `destination` with its thread.
    pub fn start(destination: &Destination, limits: Limits) -> Result<Self, WriterError> {
        Self::with_sink(open(destination)?, limits)
    }

    /// Starts a writer to any sink (tests use one that blocks).
    pub fn with_sink(sink: Box<dyn Write + Send>, limits: Limits) -> Result<Self, WriterError> {
        let shared = Arc::new(Shared {
            limits,
            state: Mutex::new(State {
                filling: Vec::with_capacity(limits.batch),
                ..State::default()
            }),
            wake: Condvar::new(),
            sink: Mutex::new(sink),
            dropped: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || for_thread.run())
            .map_err(WriterError::Thread)?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one whole line (ending in a newline). Never blocks on the destination: past
    /// the bound, the line is dropped and counted.
    pub fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.stopped {
            drop(state);
            shared.write_out(line);
            return;
        }
        if state.filling.len() + state.handed_over + line.len() > shared.limits.bound {
            drop(state);
            shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        // A batch is handed over before it would outgrow its buffer (no reallocation).
        if !state.filling.is_empty() && state.filling.len() + line.len() > shared.limits.batch {
            state.hand_over(shared.limits.batch);
            // One wake-up per batch: the thread takes everything queued when it runs.
            if state.queued.len() == 1 {
                shared.wake.notify_one();
            }
        }
        state.filling.extend_from_slice(line);
    }

    /// Writes to `destination` from the next batch on. Opens it here, so an error is the
    /// caller's to report; the old destination stays in use then.
    pub fn switch_to(&self, destination: &Destination) -> Result<(), WriterError> {
        let sink = open(destination)?;
        let mut state = self.shared.lock();
        if state.stopped {
            drop(state);
            *self.shared.lock_sink() = sink;
        } else {
            state.hand_over(self.shared.limits.batch);
            state.queued.push_back(Queued::SwitchTo(sink));
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Lines dropped because the buffer was full or the destination failed, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Writes out everything buffered and ends the thread; lines appended later are written
    /// directly. Waits for the destination (this is for shutdown).
    pub fn stop(&self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            // A panic in the thread has nothing left to tell.
            let _ = thread.join();
        }
        // Empty unless the thread ended before its last pass (a panic).
        let left = std::mem::take(&mut self.shared.lock().filling);
        self.shared.write_out(&left);
    }
}

impl Shared {
    fn run(&self) {
        loop {
            let mut state = self.lock();
            if state.queued.is_empty() && !state.stopped {
                state = self
                    .wake
                    .wait_timeout(state, self.limits.interval)
                    .map_or_else(|p| p.into_inner().0, |(s, _)| s);
            }
            // Woken or timed out, everything buffered goes: the timer is what bounds a
            // line's wait when batches fill slowly.
            state.hand_over(self.limits.batch);
            let queued = std::mem::take(&mut state.queued);
            let stopped = state.stopped;
            drop(state);

            let mut written = Vec::new();
            for item in queued {
                match item {
                    Queued::Lines(batch) => {
                        self.write_out(&batch);
                        self.lock().handed_over -= batch.len();
                        written.push(batch);
                    }
                    Queued::SwitchTo(sink) => {
                        let mut old = std::mem::replace(&mut *self.lock_sink(), sink);
                        let _ = old.flush();
                    }
                }
            }
            let _ = self.lock_sink().flush();
            if stopped {
                return;
            }
            let mut state = self.lock();
            for mut batch in written {
                if state.spares.len() >= SPARES {
                    break;
                }
                batch.clear();
                // A batch grown by one huge line is not worth keeping at that size.
                batch.shrink_to(self.limits.batch);
                state.spares.push(batch);
            }
        }
    }

    /// Writes `bytes` to the sink; lines a failed write loses are counted as dropped.
    fn write_out(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.lock_sink().write_all(bytes).is_err() {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            self.dropped.fetch_add(lines as u64, Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sink(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open(destination: &Destination) -> Result<Box<dyn Write + Send>, WriterError> {
    Ok(match destination {
        Destination::Stderr => Box::new(std::io::stderr()),
        Destination::File(path) => Box::new(open_file(path)?),
    })
}

fn open_file(path: &Path) -> Result<File, WriterError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| WriterError::Open {
            path: path.to_owned(),
            source,
        })
}

static GLOBAL: OnceLock<AccessLogWriter> = OnceLock::new();

/// Starts the agent's writer, or switches the running one to `destination`.
pub fn start_or_switch(destination: &Destination) -> Result<(), WriterError> {
    if let Some(writer) = GLOBAL.get() {
        return writer.switch_to(destination);
    }
    let writer = AccessLogWriter::start(destination, Limits::default())?;
    if let Err(writer) = GLOBAL.set(writer) {
        // Started twice at once: the first stays, this one goes.
        writer.stop();
    }
    Ok(())
}

/// The agent's writer, once started.
pub fn global() -> Option<&'static AccessLogWriter> {
    GLOBAL.get()
}

/// Writes out the agent's buffered lines (at exit).
pub fn stop_global() {
    if let Some(writer) = GLOBAL.get() {
        writer.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// A sink that blocks every write until the test lets it go, then keeps what it got.
    #[derive(Clone, Default)]
    struct Stalled {
        gate: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Stalled {
        fn release(&self) {
            *self.gate.0.lock().expect("gate") = true;
            self.gate.1.notify_all();
        }
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.gate;
            let mut open = open.lock().expect("gate");
            while !*open {
                open = opened.wait(open).expect("gate");
            }
            self.written
                .lock()
                .expect("written")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const LIMITS: Limits = Limits {
        batch: 1024,
        bound: 16 * 1024,
        interval: Duration::from_millis(10),
    };

    #[test]
    fn a_stalled_destination_makes_lines_drop_and_count_never_block() {
        let sink = Stalled::default();
        let writer = AccessLogWriter::with_sink(Box::new(sink.clone()), LIMITS).expect("start");
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let lines = 1000; // 100 KB through a 16 KiB bound
        // Appending runs on its own thread so that a block fails the test instead of hanging.
        let writer = Arc::new(writer);
        let appender = Arc::clone(&writer);
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            for _ in 0..lines {
                appender.append(&line);
            }
            let _ = done_tx.send(start.elapsed());
        });
        let took = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("appending blocked on a stalled destination");
        assert!(took < Duration::from_secs(2), "appending took {took:?}");
        let dropped = writer.dropped();
        // At most the bound is held, plus one batch the stalled thread is writing.
        let kept_at_most = (LIMITS.bound + LIMITS.batch) / 100;
        assert!(
            dropped >= lines - kept_at_most as u64,
            "{dropped} of {lines} lines dropped"
        );

        sink.release();
        writer.stop();
        let written = sink.written.lock().expect("written").clone();
        let written_lines = written.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        assert!(
            written_lines.clone().all(|l| l.len() == 99),
            "whole lines only"
        );
        assert_eq!(
            written_lines.count() as u64 + dropped,
            lines,
            "every line is written or counted"
        );
    }

    #[test]
    fn lines_are_written_by_the_timer_and_all_at_stop() {
        let sink = Stalled::default();
        sink.release();
        let writer = AccessLogWriter::with_sink(Box::new(sink.clone()), LIMITS).expect("start");
        writer.append(b"first\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.written.lock().expect("written").is_empty() {
            assert!(Instant::now() < deadline, "the timer never wrote the line");
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..500 {
            writer.append(format!("line {i}\n").as_bytes());
        }
        writer.stop();
        writer.append(b"after stop\n");
        let written =
            String::from_utf8(sink.written.lock().expect("written").clone()).expect("text");
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 502, "{written}");
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "line 0");
        assert_eq!(lines[500], "line 499", "in order");
        assert_eq!(lines[501], "after stop");
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn switching_files_writes_earlier_lines_to_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let writer = AccessLogWriter::start(&Destination::File(a.clone()), LIMITS).expect("start");
        writer.append(b"one\n");
        writer
            .switch_to(&Destination::File(b.clone()))
            .expect("switch");
        writer.append(b"two\n");
        writer.stop();
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "one\n");
        assert_eq!(std::fs::read_to_string(&b).expect("b"), "two\n");
        let missing = Destination::File(dir.path().join("no/such/dir.log"));
        assert!(matches!(
            writer.switch_to(&missing),
            Err(WriterError::Open { .. })
        ));
    }
}
