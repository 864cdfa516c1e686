//! A raw TCP backend that writes exactly the bytes a test scripts: broken framing, stray
//! responses, heads no HTTP library would produce. Each accepted connection runs the script
//! the test gives for its index (0 for the first connection, 1 for the next, ...), then is
//! closed; the backend counts connections and keeps every request head and body it read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Netns, NsTask};

/// One step of a connection's script.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reads one request head, through its blank line (the body, if any, stays unread).
    ReadHead,
    /// Reads the body the last head declared with `Content-Length`.
    ReadBody,
    /// Writes these bytes as they are.
    Write(Vec<u8>),
    /// Waits.
    Sleep(Duration),
    /// From here on, answers every request (head and `Content-Length` body) with
    /// `200 OK` and this body, until the peer closes.
    Serve(&'static str),
}

impl Step {
    /// [`Step::Write`] of `text`.
    pub fn write(text: &str) -> Step {
        Step::Write(text.as_bytes().to_vec())
    }
}

/// A well-framed `200 OK` with `body`: what [`Step::Serve`] answers.
pub fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The script of the connection with each index.
pub type Script = dyn Fn(usize) -> Vec<Step> + Send + Sync;

#[derive(Default)]
struct Record {
    accepted: AtomicUsize,
    heads: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Vec<u8>>>,
}

/// A running scripted backend; dropping it stops it and closes its connections.
pub struct ScriptedBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    record: Arc<Record>,
    _task: NsTask<()>,
}

impl ScriptedBackend {
    /// Binds `addr` in `ns` (before returning) and runs `script` on each connection.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static,
    ) -> ScriptedBackend {
        let listener = ns
            .in_ns(|| std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("scripted backend: binding {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
        let record = Arc::new(Record::default());
        let script: Arc<Script> = Arc::new(script);
        let task = ns.spawn_task(serve(listener, script, Arc::clone(&record)));
        ScriptedBackend {
            addr,
            record,
            _task: task,
        }
    }

    /// What the backend saw, readable from anywhere (a client task, say) while it runs.
    pub fn seen(&self) -> Seen {
        Seen(Arc::clone(&self.record))
    }
}

/// What a [`ScriptedBackend`] saw so far.
#[derive(Clone)]
pub struct Seen(Arc<Record>);

impl Seen {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.0.accepted.load(SeqCst)
    }

    /// Every request head read, in order, as text.
    pub fn heads(&self) -> Vec<String> {
        lock(&self.0.heads).clone()
    }

    /// Every request body read, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        lock(&self.0.bodies).clone()
    }
}

async fn serve(listener: std::net::TcpListener, script: Arc<Script>, record: Arc<Record>) {
    let listener = tokio::net::TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("tokio listener: {e}"));
    while let Ok((stream, _)) = listener.accept().await {
        let index = record.accepted.fetch_add(1, SeqCst);
        let steps = script(index);
        tokio::spawn(run(Conn::new(stream, Arc::clone(&record)), steps));
    }
}

/// Runs `steps` on one connection; stops at the first failed read or write.
async fn run(mut conn: Conn, steps: Vec<Step>) {
    for step in steps {
        let done = match step {
            Step::ReadHead => conn.read_head().await.is_some(),
            Step::ReadBody => conn.read_body().await,
            Step::Write(bytes) => conn.stream.write_all(&bytes).await.is_ok(),
            Step::Sleep(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            Step::Serve(body) => {
                conn.serve(body).await;
                false
            }
        };
        if !done {
            return;
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not consumed by a step yet.
    buffer: Vec<u8>,
    /// The body length the last head declared.
    declared: usize,
    record: Arc<Record>,
}

impl Conn {
    fn new(stream: TcpStream, record: Arc<Record>) -> Conn {
        Conn {
            stream,
            buffer: Vec::new(),
            declared: 0,
            record,
        }
    }

    /// Reads more bytes into the buffer; false at EOF or on an error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn read_head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let head = String::from_utf8_lossy(&head).into_owned();
                self.declared = content_length(&head);
                lock(&self.record.heads).push(head.clone());
                return Some(head);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn read_body(&mut self) -> bool {
        while self.buffer.len() < self.declared {
            if !self.fill().await {
                return false;
            }
        }
        let body: Vec<u8> = self.buffer.drain(..self.declared).collect();
        lock(&self.record.bodies).push(body);
        true
    }

    async fn serve(&mut self, body: &str) {
        while self.read_head().await.is_some() && self.read_body().await {
            if self
                .stream
                .write_all(ok_response(body).as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The `Content-Length` a request head declares, or 0.
fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
