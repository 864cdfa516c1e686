//! The L4 load generator, the same for every contender: threads inside the client namespace.
//!
//! Connections/s: each thread connects, sends a byte, reads the answer and the server's close,
//! closes, and starts again, until the time is up. Throughput: each thread sends 64 KiB
//! writes until the time is up, closes its sending side and reads how many bytes the backend
//! received.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sluice_tests::Netns;

use crate::bench::stats::percentile;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connections/s run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rate {
    pub connections: u64,
    pub per_second: f64,
    /// Connect to close, per connection.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// What a throughput run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    /// Bytes the backends counted.
    pub bytes: u64,
    pub gbit_per_s: f64,
}

/// `threads` loops of connect, one byte each way, close, for `duration`.
pub fn connection_rate(
    ns: &Netns,
    target: SocketAddr,
    threads: u32,
    duration: Duration,
) -> Result<Rate> {
    ns.in_ns(|| {
        let start = Instant::now();
        let deadline = start + duration;
        let results: Vec<(u64, Vec<u32>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(move || connect_loop(target, deadline)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let elapsed = start.elapsed();
        let errors = results.iter().map(|(e, _)| e).sum();
        let mut micros: Vec<u32> = results.into_iter().flat_map(|(_, l)| l).collect();
        if micros.is_empty() {
            bail!("no connection to {target} completed ({errors} errors)");
        }
        micros.sort_unstable();
        Ok(Rate {
            connections: micros.len() as u64,
            per_second: micros.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: f64::from(percentile(&micros, 50)) / 1000.0,
            p99_ms: f64::from(percentile(&micros, 99)) / 1000.0,
            errors,
        })
    })
}

/// Returns the errors and every completed connection's time in microseconds.
fn connect_loop(target: SocketAddr, deadline: Instant) -> (u64, Vec<u32>) {
    let mut errors = 0;
    let mut micros = Vec::with_capacity(1 << 16);
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        let start = Instant::now();
        match exchange(target, &mut buf) {
            Ok(()) => micros.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(_) => {
                errors += 1;
                // A refused or lost connection comes back at once: do not spin on it.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    (errors, micros)
}

fn exchange(target: SocketAddr, buf: &mut [u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut got = 0;
    loop {
        match stream.read(buf)? {
            0 => break,
            n => got += n,
        }
    }
    if got != 1 {
        return Err(std::io::Error::other(format!("{got} bytes back, not 1")));
    }
    Ok(())
}

/// `streams` connections each sending as fast as they can for `duration`; the rate is what
/// the backends counted over the time until the last count came back.
pub fn throughput(
    ns: &Netns,
    target: SocketAddr,
    streams: u32,
    duration: Duration,
) -> Result<Throughput> {
    ns.in_ns(|| {
        let start = Instant::now();
        let deadline = start + duration;
        let counts: Vec<Result<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..streams)
                .map(|_| scope.spawn(move || send_until(target, deadline)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a sender panicked")))
                })
                .collect()
        });
        let elapsed = start.elapsed();
        let mut bytes = 0;
        for count in counts {
            bytes += count?;
        }
        Ok(Throughput {
            bytes,
            gbit_per_s: bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
        })
    })
}

fn send_until(target: SocketAddr, deadline: Instant) -> Result<u64> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        stream.write_all(&chunk).context("sending")?;
        sent += chunk.len() as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .context("closing the sending side")?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .context("reading the backend's count (does the proxy pass half-closed connections?)")?;
    let received = u64::from_be_bytes(count);
    if received != sent {
        bail!("sent {sent} bytes, the backend counted {received}");
    }
    Ok(received)
}
