//! A backend's servers, on threads inside its namespace: [`RR_PORT`] reads a byte, answers a
//! byte and closes; [`SINK_PORT`] reads until the client's end of stream, then answers the
//! count of bytes it read (8 bytes, big-endian) and closes. Both listen on every address, so
//! the VIP (DSR) and the backend's own address (proxies) alike.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::{TimeVal, TimeValLike};
use sluice_tests::Netns;

use super::topology::{RR_PORT, SINK_PORT};

/// Threads accepting on each listener: enough that the servers never set the pace.
const RR_THREADS: usize = 16;
const SINK_THREADS: usize = 4;
/// How often an idle accept wakes up to see whether it should stop.
const ACCEPT_WAKE: Duration = Duration::from_millis(200);
/// A client that goes quiet this long is dropped.
const IDLE: Duration = Duration::from_secs(5);

/// The running servers of one backend; stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Netns) -> Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        // Threads started from a thread inside the namespace are inside it too.
        let threads = ns.in_ns(|| -> Result<Vec<JoinHandle<()>>> {
            let rr = Arc::new(listen(RR_PORT)?);
            let sink = Arc::new(listen(SINK_PORT)?);
            let mut threads = Vec::new();
            for (listener, count, serve) in [
                (&rr, RR_THREADS, answer_byte as fn(TcpStream)),
                (&sink, SINK_THREADS, count_bytes as fn(TcpStream)),
            ] {
                for _ in 0..count {
                    let (listener, stop) = (Arc::clone(listener), Arc::clone(&stop));
                    threads.push(std::thread::spawn(move || {
                        accept_loop(&listener, &stop, serve)
                    }));
                }
            }
            Ok(threads)
        })?;
        Ok(Servers { stop, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn listen(port: u16) -> Result<TcpListener> {
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding port {port}"))?;
    // accept() honours SO_RCVTIMEO, so idle threads see `stop` in time.
    setsockopt(
        &listener,
        ReceiveTimeout,
        &TimeVal::milliseconds(ACCEPT_WAKE.as_millis() as i64),
    )
    .context("setting the accept timeout")?;
    Ok(listener)
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, serve: fn(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_read_timeout(Some(IDLE)).is_ok() {
                    serve(stream);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Out of file descriptors or the like: let it pass rather than spin.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// One byte in, one byte out, then close: the server closes first, as a short request does.
fn answer_byte(mut stream: TcpStream) {
    let mut byte = [0u8; 1];
    if matches!(stream.read(&mut byte), Ok(1)) {
        let _ = stream.write_all(b"y");
    }
}

/// Reads to the end of the client's stream and answers how many bytes came.
fn count_bytes(mut stream: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = stream.write_all(&total.to_be_bytes());
}
