//! A plain HTTP/1.1 backend whose answer delay the test sets while it runs: each request
//! (no body) is answered with the backend's name after the current delay, on kept-alive
//! connections. For balancing tests that make one backend slow.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Netns, NsTask};

/// A running backend; dropping it stops it.
pub struct SlowBackend {
    /// Its name, the body of every answer.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    served: Arc<AtomicUsize>,
    _task: NsTask<()>,
}

impl SlowBackend {
    /// Starts `name` on `addr` inside `ns`, answering without delay; returns once it listens.
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr) -> SlowBackend {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (body, delay, count) = (name.to_owned(), Arc::clone(&delay_ms), Arc::clone(&served));
        let task = ns.spawn_task(async move {
            let listener = TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("binding the slow backend to {addr}: {e}"));
            let _ = ready_tx.send(());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (body, delay, count) = (body.clone(), Arc::clone(&delay), Arc::clone(&count));
                tokio::spawn(serve(stream, body, delay, count));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the slow backend {name} did not start: {e}"));
        SlowBackend {
            name: name.to_owned(),
            addr,
            delay_ms,
            served,
            _task: task,
        }
    }

    /// From now on, each answer waits `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Relaxed)
    }
}

async fn serve(
    mut stream: TcpStream,
    body: String,
    delay: Arc<AtomicU64>,
    count: Arc<AtomicUsize>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head per answer; requests carry no body.
        while let Some(end) = find_head_end(&buffer) {
            buffer.drain(..end);
            let ms = delay.load(Relaxed);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: {body}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            count.fetch_add(1, Relaxed);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}
