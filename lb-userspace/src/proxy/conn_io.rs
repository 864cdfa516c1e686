//! The client connection's byte stream, watched: how long a request head may take to arrive
//! (slow clients get `408` and the connection closes), how long a connection may sit idle
//! between requests, and whether an HTTP/1 head carried `Content-Length` (hyper drops it
//! silently when `Transfer-Encoding` is also present; the proxy refuses such requests).
//!
//! Writes are watched too: a client that takes no response bytes for `send_timeout` is cut
//! off, so a reader that stalls cannot hold a backend connection forever.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its
//! next request and closes without an answer, so both timers live here instead. They are
//! lazy: a phase change only records a deadline; the timer is re-armed when it fires early
//! or when a shorter deadline is pending, so a busy keep-alive connection costs no timer
//! work per request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::stats::ListenerStats;

/// Sent to a client whose request head did not arrive within `header_read_timeout`.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What the connection and the requests on it share.
#[derive(Debug, Default)]
pub struct ConnShared {
    started: AtomicU64,
    in_flight: AtomicUsize,
    upgraded: AtomicBool,
    content_length_seen: AtomicBool,
    /// The connection's reader, parked while requests are in flight: the last one to end
    /// wakes it, so the idle clock starts even if hyper is not reading at that moment.
    reader: AtomicWaker,
    tunnel_done: tokio::sync::Notify,
}

impl ConnShared {
    /// Marks a request as started; it counts as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> ConnGuard {
        self.started.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        ConnGuard(self.clone())
    }

    /// The connection was handed to a protocol upgrade: no more HTTP timers apply, and the
    /// connection holds its slot until [`ConnShared::tunnel_closed`].
    pub fn set_upgraded(&self) {
        self.upgraded.store(true, Relaxed);
    }

    /// Whether the connection was upgraded.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded.load(Relaxed)
    }

    /// The upgraded connection's byte tunnel ended.
    pub fn tunnel_closed(&self) {
        self.tunnel_done.notify_one();
    }

    /// Resolves once the tunnel ended (at once if it already did).
    pub async fn tunnel_ended(&self) {
        self.tunnel_done.notified().await;
    }

    /// Whether the head of the HTTP/1 request just received had a `Content-Length` line
    /// (read once: the flag resets).
    pub fn take_content_length_seen(&self) -> bool {
        self.content_length_seen.swap(false, Relaxed)
    }
}

/// A request in flight on a connection; see [`ConnShared::start_request`].
#[derive(Debug)]
pub struct ConnGuard(Arc<ConnShared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.0.reader.wake();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight and no byte of the next one yet.
    Idle,
    /// Bytes of a request head arrived; the rest must follow in time (HTTP/1 only).
    Head,
    /// A request is in flight, or the connection was upgraded: no timer.
    Busy,
}

/// Timeouts of a client connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed for a request head, from its first byte (and for the first request,
    /// from the accept).
    pub header_read: Duration,
    /// Time a connection may wait for its next request.
    pub idle: Duration,
    /// Time a client may take no response bytes before it is disconnected.
    pub send: Duration,
}

/// A client stream with the connection's timers and head scanner.
pub struct ConnIo<S> {
    inner: S,
    shared: Arc<ConnShared>,
    timeouts: Timeouts,
    http2: Option<bool>,
    phase: Phase,
    seen_started: u64,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    scan: HeadScan,
    /// Whether any byte of the pending HTTP/1 request head arrived.
    head_started: bool,
    /// Bytes of the 408 answer written so far, once the head deadline passed.
    timing_out: Option<usize>,
    /// Runs while a write waits for the client to take bytes; made only when one does.
    write_stall: Option<Pin<Box<Sleep>>>,
    /// Where the 408 answers it writes are counted and logged.
    answers: LocalAnswers,
}

/// What a connection needs to count and log the answers it writes itself (408).
#[derive(Clone)]
pub struct LocalAnswers {
    /// The listener's counters.
    pub stats: Arc<ListenerStats>,
    /// The service, for the access log.
    pub service: Arc<str>,
    /// The client, for the access log.
    pub client: std::net::SocketAddr,
    /// Whether to write access-log lines.
    pub access_log: bool,
}

impl LocalAnswers {
    /// Counts (and logs) an answer the connection wrote outside any request.
    pub fn answered(&self, status: u16, why: &str) {
        self.stats.local_response(status);
        if self.access_log {
            super::access_log::connection_answer(&self.service, self.client, status, why);
        }
    }
}

impl<S> ConnIo<S> {
    /// Wraps a just-accepted stream; `http2` is `Some` when ALPN decided the protocol
    /// (otherwise the first bytes tell). The first request head is due within
    /// `header_read` of `accepted` (the TLS handshake and protocol sniffing count).
    pub fn new(
        inner: S,
        shared: Arc<ConnShared>,
        timeouts: Timeouts,
        http2: Option<bool>,
        accepted: Instant,
        answers: LocalAnswers,
    ) -> Self {
        let deadline = accepted + timeouts.header_read;
        Self {
            inner,
            shared,
            timeouts,
            http2,
            phase: Phase::Head,
            seen_started: 0,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            armed: deadline,
            scan: HeadScan::default(),
            head_started: false,
            timing_out: None,
            write_stall: None,
            answers,
        }
    }

    /// Passes a write's result through, unless the client has taken no bytes for
    /// `send_timeout`: then the write fails, hyper closes the connection, and the response
    /// (with its backend connection and in-flight slot) is dropped.
    fn stall_check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stall = None;
            return polled;
        }
        let send = self.timeouts.send;
        let timer = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.write_stall = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response bytes within send_timeout",
        )))
    }

    /// Follows requests starting and ending: a started request makes the connection busy;
    /// the last one ending makes it idle.
    fn refresh_phase(&mut self) {
        if self.shared.upgraded.load(Relaxed) {
            self.phase = Phase::Busy;
            return;
        }
        let started = self.shared.started.load(Relaxed);
        if started != self.seen_started {
            self.seen_started = started;
            self.phase = Phase::Busy;
            self.head_started = false;
        }
        if self.phase == Phase::Busy && self.shared.in_flight.load(Relaxed) == 0 {
            self.phase = Phase::Idle;
            self.deadline = Instant::now() + self.timeouts.idle;
        }
    }

    /// Bytes arrived: the first of a new request starts its head clock (HTTP/1).
    fn on_bytes(&mut self, bytes: &[u8]) {
        if self.http2.is_none() {
            self.http2 = Some(bytes.starts_with(b"PRI * HTTP/2.0"));
        }
        if self.http2 == Some(true) {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.deadline = Instant::now() + self.timeouts.header_read;
            self.scan = HeadScan::default();
        }
        self.head_started |= self.phase == Phase::Head;
        if self.phase == Phase::Head && self.scan.feed(bytes) {
            self.shared.content_length_seen.store(true, Relaxed);
        }
    }

    /// Whether the current phase's deadline has passed; otherwise makes sure the timer will
    /// wake the task by then.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase == Phase::Busy {
            self.shared.reader.register(cx.waker());
            // The last request may have ended between the phase check and registering.
            if self.shared.in_flight.load(Relaxed) != 0 || self.shared.upgraded.load(Relaxed) {
                return false;
            }
            self.refresh_phase();
        }
        loop {
            if self.armed > self.deadline {
                self.timer.as_mut().reset(self.deadline);
                self.armed = self.deadline;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.armed >= self.deadline {
                return true;
            }
            // It fired for an earlier deadline: re-arm for the current one.
            self.timer.as_mut().reset(self.deadline);
            self.armed = self.deadline;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnIo<S> {
    /// Writes the 408 answer, then fails the read so hyper closes the connection.
    fn poll_time_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = self.timing_out.unwrap_or(0);
        while let Some(rest) = REQUEST_TIMEOUT.get(written..).filter(|r| !r.is_empty()) {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, rest)) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    written += n;
                    self.timing_out = Some(written);
                }
            }
        }
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        self.answers
            .answered(408, "request head not received within header_read_timeout");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received within header_read_timeout",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timing_out.is_some() {
            return this.poll_time_out(cx);
        }
        this.refresh_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if let Some(new) = filled.get(before..).filter(|n| !n.is_empty()) {
                    this.on_bytes(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.deadline_passed(cx) {
                    return Poll::Pending;
                }
                match this.phase {
                    // An idle connection just ends (EOF), as a keep-alive timeout should.
                    Phase::Idle => Poll::Ready(Ok(())),
                    // Part of a head came, too slowly: answer 408 (nothing came: just close).
                    Phase::Head if this.http2 != Some(true) && this.head_started => {
                        this.timing_out = Some(0);
                        this.poll_time_out(cx)
                    }
                    Phase::Head if this.http2 != Some(true) => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within header_read_timeout",
                    ))),
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall_check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall_check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.stall_check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Finds a `Content-Length` line in an HTTP/1 request head fed in pieces, up to the blank
/// line that ends the head. Lines are found with `memchr`; only line starts are compared.
#[derive(Debug, Default)]
struct HeadScan {
    /// The start of the current line, when a piece ended inside it.
    carry: [u8; 16],
    carry_len: usize,
    /// Bytes of the current line seen so far (saturating).
    line_len: usize,
    done: bool,
}

const CONTENT_LENGTH: &[u8] = b"content-length:";

impl HeadScan {
    /// Feeds the next bytes of the stream; true when a `Content-Length` line completed.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut found = false;
        while !self.done && !bytes.is_empty() {
            let end = memchr::memchr(b'\n', bytes);
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            // Keep the first bytes of the line, enough to compare the header name.
            let room = self.carry.len() - self.carry_len;
            let take = room.min(piece.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&piece[..take]);
            self.carry_len += take;
            self.line_len = self.line_len.saturating_add(piece.len());
            let Some(end) = end else { break };
            let line = &self.carry[..self.carry_len];
            if self.line_len == 0 || (self.line_len == 1 && line == b"\r") {
                self.done = true;
            } else if line.len() >= CONTENT_LENGTH.len()
                && line[..CONTENT_LENGTH.len()].eq_ignore_ascii_case(CONTENT_LENGTH)
            {
                found = true;
            }
            self.carry_len = 0;
            self.line_len = 0;
            bytes = &bytes[end + 1..];
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_in_any_case_across_pieces() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCoNtEnT-LeNgTh: 5\r\n\r\nbody";
        for split in 0..head.len() {
            let mut scan = HeadScan::default();
            let found = scan.feed(&head[..split]) | scan.feed(&head[split..]);
            assert!(found, "split at {split}");
            assert!(scan.done);
        }
    }

    #[test]
    fn stops_at_the_end_of_the_head() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nContent-Length: 5\r\n"));
        assert!(scan.done);
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"GET / HTTP/1.1\nX-Content-Length: 5\n\n"));
        assert!(scan.done);
    }
}
