//! The backends' servers: a tiny HTTP/1.1 responder per backend namespace that answers
//! every request with the backend's name, so the client can tell who served it. Killing one
//! closes its listening socket (connections are refused, health checks fail); reviving it
//! binds again.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use sluice_tests::Netns;

use super::topology::BackendPlan;

/// How often an idle accept loop looks for a connection or a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// A backend's server, stopped when dropped.
pub struct Backend {
    plan: BackendPlan,
    running: Option<Running>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Backend {
    /// Starts serving `plan` inside `ns`.
    pub fn start(plan: BackendPlan, ns: &Netns) -> Result<Backend> {
        let mut backend = Backend {
            plan,
            running: None,
        };
        backend.revive(ns)?;
        Ok(backend)
    }

    pub fn name(&self) -> &'static str {
        self.plan.name
    }

    /// Stops the server: its port is closed from now on.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::Relaxed);
            if running.thread.join().is_err() {
                eprintln!("demo: the server of {} panicked", self.plan.name);
            }
        }
    }

    /// Starts the server again (a no-op while it runs).
    pub fn revive(&mut self, ns: &Netns) -> Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let bind = self.plan.bind();
        let listener = ns
            .in_ns(|| TcpListener::bind(bind))
            .with_context(|| format!("{}: listening on {bind} in {}", self.plan.name, ns.name()))?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = self.plan.name;
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("backend {name}"))
            .spawn(move || accept_loop(&listener, name, &flag))
            .context("starting a backend thread")?;
        self.running = Some(Running { stop, thread });
        Ok(())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn accept_loop(listener: &TcpListener, name: &'static str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // One thread per connection: a client that stalls holds up nobody else.
                let _ = std::thread::Builder::new()
                    .name(format!("backend {name} conn"))
                    .spawn(move || {
                        let _ = serve(stream, name);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Answers one request with `name` and closes the connection, so a killed backend keeps no
/// connection the proxy could reuse. A TCP health check connects and closes without a
/// request, which ends here too.
fn serve(stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The request line, then headers up to the blank line.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim_end().is_empty() {
            break;
        }
    }
    let body = format!("{name}\n");
    write!(
        writer,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
