//! Idle keep-alive connections held open against a proxy, for its memory at
//! [`MANY_CONNECTIONS`]: each connection sends one request and reads its answer (so the proxy
//! has served it, as a browser's connection between requests), then stays open and silent.
//! The descriptor limits this needs are raised here too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_tests::Netns;

use super::configs;

/// Concurrent keep-alive connections of the many-connections case.
pub const MANY_CONNECTIONS: u32 = 10_000;
/// Connections opened before their requests are answered: far below every listen backlog
/// (4096), so no SYN waits for a retransmission.
const BATCH: usize = 500;
/// How long one answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors this process and its children need beyond the connections themselves.
const SPARE_DESCRIPTORS: u64 = 512;

/// Connections that were each answered once and now sit idle; closed on drop.
pub struct IdleConnections {
    streams: Vec<TcpStream>,
}

impl IdleConnections {
    pub fn len(&self) -> usize {
        self.streams.len()
    }
}

/// Opens `count` connections to `addr` inside `ns`, `BATCH` at a time, each sending
/// `GET /` and reading the backend's answer through the proxy.
pub fn open(ns: &Netns, addr: SocketAddr, count: u32) -> Result<IdleConnections> {
    let count = count as usize;
    ns.in_ns(|| {
        let mut streams = Vec::with_capacity(count);
        let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        while streams.len() < count {
            let start = streams.len();
            let batch = BATCH.min(count - start);
            for i in 0..batch {
                let mut stream = TcpStream::connect(addr)
                    .with_context(|| format!("idle connection {} to {addr}", start + i + 1))?;
                stream.set_read_timeout(Some(READ_TIMEOUT))?;
                stream
                    .write_all(request.as_bytes())
                    .with_context(|| format!("idle connection {}: the request", start + i + 1))?;
                streams.push(stream);
            }
            for (i, stream) in streams[start..].iter_mut().enumerate() {
                read_answer(stream)
                    .with_context(|| format!("idle connection {}: the answer", start + i + 1))?;
            }
        }
        Ok(IdleConnections { streams })
    })
}

/// Reads one answer: a 200 ending with the backend's fixed body (its length is known, so
/// the end of the body is the end of the answer, whatever framing the proxy chose).
fn read_answer(stream: &mut TcpStream) -> Result<()> {
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(configs::BODY.as_bytes()) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!(
                "closed after {:?}",
                String::from_utf8_lossy(&answer).trim_end()
            );
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > 64 * 1024 {
            bail!("no end of the body after 64 KiB");
        }
    }
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        bail!(
            "not a 200: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
    }
    Ok(())
}

/// Raises this process's soft limit on open files to its hard limit (the proxies, the load
/// generator and the backend inherit it), and fails when even that is too low for
/// [`MANY_CONNECTIONS`].
pub fn raise_open_files_limit() -> Result<u64> {
    let limit = sluice_tests::raise_open_files_limit().context("raising RLIMIT_NOFILE")?;
    let needed = u64::from(MANY_CONNECTIONS) + SPARE_DESCRIPTORS;
    if limit < needed {
        bail!(
            "the open files limit is {limit} (hard); the {MANY_CONNECTIONS}-connection case \
             needs at least {needed}: raise it (`ulimit -Hn`) or leave the case out with --case"
        );
    }
    Ok(limit)
}
