//! A scriptable backend on 127.0.0.1 for the probe and checker tests: answers well, badly
//! or not at all, and counts the connections it holds open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the backend does with each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers `status` with `body`.
    Respond { status: u16, body: &'static str },
    /// Answers 200 with a chunked body in these chunks.
    Chunked(Vec<&'static str>),
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Resets the connection once the request is in.
    Reset,
    /// Reads the request and never answers.
    Silent,
    /// Answers 200 with a body that never ends.
    Endless,
    /// Answers a response head larger than any probe reads, then hangs.
    HugeHead,
}

impl Behaviour {
    /// `200 ok`.
    pub const OK: Behaviour = Behaviour::Respond {
        status: 200,
        body: "ok",
    };
}

#[derive(Debug, Default)]
struct Seen {
    /// When each connection was accepted.
    accepted: Vec<Instant>,
    /// The request heads received.
    requests: Vec<String>,
}

/// A listening test backend; stops listening when dropped.
#[derive(Debug)]
pub struct TestBackend {
    pub address: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    open: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl TestBackend {
    /// Listens on an ephemeral port.
    pub fn start(behaviour: Behaviour) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), behaviour)
    }

    /// Listens on `address` (reusing it, so a test can bring a backend back).
    pub fn start_at(address: SocketAddr, behaviour: Behaviour) -> Self {
        let socket = TcpSocket::new_v4().expect("creating a socket");
        socket.set_reuseaddr(true).expect("setting SO_REUSEADDR");
        socket.bind(address).expect("binding the test backend");
        let listener = socket.listen(128).expect("listening");
        let address = listener.local_addr().expect("reading the bound address");
        let behaviour = Arc::new(Mutex::new(behaviour));
        let open = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(accept_loop(
            listener,
            behaviour.clone(),
            open.clone(),
            seen.clone(),
        ));
        Self {
            address,
            behaviour,
            open,
            seen,
            task,
        }
    }

    /// Changes what later connections get.
    pub fn set(&self, behaviour: Behaviour) {
        *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// When each connection was accepted.
    pub fn accepted(&self) -> Vec<Instant> {
        self.seen().accepted.clone()
    }

    /// Request heads received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen().requests.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    listener.local_addr().expect("reading the bound address")
}

async fn accept_loop(
    listener: TcpListener,
    behaviour: Arc<Mutex<Behaviour>>,
    open: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .accepted
            .push(Instant::now());
        let behaviour = behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        open.fetch_add(1, Ordering::SeqCst);
        let (open, seen) = (open.clone(), seen.clone());
        tokio::spawn(async move {
            serve(stream, behaviour, &seen).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, seen: &Mutex<Seen>) {
    let Some(head) = read_head(&mut stream).await else {
        return; // a TCP check: connected and gone
    };
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .requests
        .push(head);
    match behaviour {
        Behaviour::Respond { status, body } => {
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Behaviour::Chunked(chunks) => {
            let mut response =
                String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            for chunk in chunks {
                response += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
            }
            response += "0\r\n\r\n";
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Behaviour::Garbage => {
            let _ = stream
                .write_all(b"\x00\xffSSH-2.0-what?\r\n\r\n\x07\x07")
                .await;
        }
        Behaviour::Reset => {
            let _ = stream.set_zero_linger();
        }
        Behaviour::Silent => wait_for_close(&mut stream).await,
        Behaviour::Endless => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_ok() {
                let block = [b'x'; 4096];
                while stream.write_all(&block).await.is_ok() {}
            }
        }
        Behaviour::HugeHead => {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..4096 {
                head += &format!("x-filler-{i}: {}\r\n", "y".repeat(32));
            }
            if stream.write_all(head.as_bytes()).await.is_ok() {
                wait_for_close(&mut stream).await;
            }
        }
    }
}

/// Reads up to the end of the request head; `None` if the peer closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

async fn wait_for_close(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Waits until `f` holds, checking every 5 ms; panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
