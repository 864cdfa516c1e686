//! The two bodies the proxy moves: [`RequestBody`] toward a backend (streamed with a size
//! limit, or buffered so a retry can send it again) and [`ResponseBody`] toward the client
//! (streamed under the route deadline, counted, logged when it ends). Both stream `Bytes`
//! frames as they come; neither buffers a streamed body whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::task::AbortHandle;
use tokio::time::Sleep;
use tracing::debug;

use super::access_log::RequestRecord;
use super::connections::Checkin;
use super::error::{BoxError, RequestBodyError};
use super::grpc::{self, Code};
use super::upstream::{BackendGuard, PoolSlot};

/// The body of a request sent upstream.
#[derive(Debug)]
pub struct RequestBody {
    kind: RequestKind,
}

#[derive(Debug)]
enum RequestKind {
    Empty,
    Full(Option<Bytes>),
    Stream {
        /// A frame read ahead to validate the body before a backend sees the request.
        first: Option<Frame<Bytes>>,
        body: Incoming,
        limit: Option<u64>,
        seen: u64,
    },
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: RequestKind::Empty,
        }
    }

    /// A buffered body, which [`RequestBody::replay`] can send again.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: RequestKind::Full(Some(bytes)),
        }
    }

    /// The client's body, streamed; `first` was read ahead and counts toward `limit`.
    pub fn stream(body: Incoming, first: Option<Frame<Bytes>>, limit: Option<u64>) -> Self {
        let seen = first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        Self {
            kind: RequestKind::Stream {
                first,
                body,
                limit,
                seen,
            },
        }
    }

    /// A copy for another try; `None` for a streamed body, which can be sent only once.
    pub fn replay(&self) -> Option<Self> {
        match &self.kind {
            RequestKind::Empty => Some(Self::empty()),
            RequestKind::Full(bytes) => Some(Self {
                kind: RequestKind::Full(bytes.clone()),
            }),
            RequestKind::Stream { .. } => None,
        }
    }

    /// Whether the body is streamed with a length not known in advance (sent chunked).
    pub fn is_unsized_stream(&self) -> bool {
        matches!(self.kind, RequestKind::Stream { .. }) && self.size_hint().exact().is_none()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.kind {
            RequestKind::Empty => Poll::Ready(None),
            RequestKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestKind::Stream {
                first,
                body,
                limit,
                seen,
            } => {
                if let Some(frame) = first.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let frame = match ready!(Pin::new(body).poll_frame(cx)) {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
                    Some(Ok(frame)) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    *seen += data.len() as u64;
                    if let Some(limit) = *limit
                        && *seen > limit
                    {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Empty => true,
            RequestKind::Full(bytes) => bytes.is_none(),
            RequestKind::Stream { first, body, .. } => first.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Empty => SizeHint::with_exact(0),
            RequestKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestKind::Stream { first, body, .. } => {
                let ahead = first
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                let inner = body.size_hint();
                match inner.exact() {
                    Some(n) => SizeHint::with_exact(n + ahead),
                    None => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(inner.lower() + ahead);
                        hint
                    }
                }
            }
        }
    }
}

/// The body of a response sent to the client.
pub struct ResponseBody {
    inner: ResponseKind,
    deadline: Option<Pin<Box<Sleep>>>,
    bytes: u64,
    record: Option<RequestRecord>,
    /// The backend connection, given back when the body ends cleanly (dropped otherwise,
    /// which closes it: a body cut short leaves the connection mid-message).
    checkin: Option<Checkin>,
    /// HTTP/2 only: how long the client may leave the body unread; see [`StallWatch`].
    send_timeout: Option<Duration>,
    watch: Option<Arc<StallWatch>>,
    /// The response answers a gRPC request: a failure after the head ends the stream with
    /// gRPC trailers rather than an HTTP/2 reset (which clients read as INTERNAL).
    grpc: bool,
    /// The longest gap allowed between the backend's frames (`stream_idle_timeout`), and
    /// the timer of the current gap.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

/// An HTTP/2 client can stop reading one response by granting it no flow-control window
/// while its connection stays busy; hyper then simply stops polling the body, and no byte
/// stream stalls that the connection's own `send_timeout` could see. A streamed response
/// on an HTTP/2 connection therefore gets a watchdog (made only once a second frame is
/// due): when the body has not been polled for `send_timeout` although it was not waiting
/// for the backend, the backend connection is closed and the request's in-flight slots are
/// released. The client's stream then ends with an error when it is polled again.
struct StallWatch {
    polls: AtomicU64,
    waiting_on_backend: AtomicBool,
    done: AtomicBool,
    held: Mutex<Option<(PoolSlot, BackendGuard)>>,
}

impl StallWatch {
    fn release(&self) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(held);
    }
}

/// Checks a watched body every `timeout`; see [`StallWatch`].
async fn watchdog(watch: Arc<StallWatch>, timeout: Duration, closer: Option<AbortHandle>) {
    let mut seen = watch.polls.load(Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        if watch.done.load(Relaxed) {
            return;
        }
        let now = watch.polls.load(Relaxed);
        if now == seen && !watch.waiting_on_backend.load(Relaxed) {
            if let Some(closer) = closer {
                closer.abort();
            }
            watch.release();
            debug!(
                ?timeout,
                "an HTTP/2 client took no response bytes within send_timeout; its backend connection was closed"
            );
            return;
        }
        seen = now;
    }
}

enum ResponseKind {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

impl ResponseBody {
    /// A body known in full (direct responses, errors, redirects).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: ResponseKind::Full((!bytes.is_empty()).then_some(bytes)),
            deadline: None,
            bytes: 0,
            record: None,
            checkin: None,
            send_timeout: None,
            watch: None,
            grpc: false,
            idle: None,
        }
    }

    /// The backend's body, streamed; cut with an error if `deadline` passes first.
    /// `checkin` goes back to its backend when the body has ended.
    pub fn upstream(
        body: Incoming,
        deadline: Option<Pin<Box<Sleep>>>,
        checkin: Option<Checkin>,
    ) -> Self {
        let mut checkin = checkin;
        if body.is_end_stream()
            && let Some(done) = checkin.take()
        {
            done.give_back();
        }
        Self {
            inner: ResponseKind::Upstream(body),
            deadline,
            bytes: 0,
            record: None,
            checkin,
            send_timeout: None,
            watch: None,
            grpc: false,
            idle: None,
        }
    }

    /// Ends a failed stream with gRPC trailers (see the `grpc` field).
    pub fn speak_grpc(&mut self) {
        self.grpc = true;
    }

    /// Cuts the body when the backend sends nothing for `timeout`.
    pub fn idle_timeout(&mut self, timeout: Duration) {
        self.idle = Some((timeout, Box::pin(tokio::time::sleep(timeout))));
    }

    /// The frame that ends a body cut short by `failure`: an error (the client's stream is
    /// reset) or, for gRPC, trailers with the failure's status.
    fn cut(&mut self, failure: Cut) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish();
        if !self.grpc {
            return Poll::Ready(Some(Err(failure.message().into())));
        }
        // Nothing more is read from the backend; the connection closes with the body.
        self.inner = ResponseKind::Full(None);
        let code = match failure {
            Cut::Deadline | Cut::Idle => Code::DeadlineExceeded,
            Cut::Backend => Code::Unavailable,
        };
        Poll::Ready(Some(Ok(Frame::trailers(grpc::status_headers(
            code,
            failure.message(),
        )))))
    }

    /// Watches the body for a client that stops reading it (HTTP/2; see [`StallWatch`]).
    pub fn watch_sends(&mut self, timeout: Duration) {
        self.send_timeout = Some(timeout);
    }

    /// Starts the watchdog: the in-flight slots move where it can release them.
    fn start_watch(&mut self, timeout: Duration) {
        let held = self.record.as_mut().and_then(|r| r.backend_guard.take());
        let watch = Arc::new(StallWatch {
            polls: AtomicU64::new(0),
            waiting_on_backend: AtomicBool::new(false),
            done: AtomicBool::new(false),
            held: Mutex::new(held),
        });
        let closer = self.checkin.as_ref().map(Checkin::closer);
        tokio::spawn(watchdog(watch.clone(), timeout, closer));
        self.watch = Some(watch);
    }

    /// Attaches the request's record: logged and counted when the body ends or is dropped.
    pub fn set_record(&mut self, record: RequestRecord) {
        self.record = Some(record);
    }

    /// Returns the backend connection if the backend's body was read to its end.
    fn give_back(&mut self) {
        if let ResponseKind::Upstream(body) = &self.inner
            && body.is_end_stream()
            && let Some(checkin) = self.checkin.take()
        {
            checkin.give_back();
        }
    }

    fn finish(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.done.store(true, Relaxed);
            watch.release();
        }
        if let Some(record) = self.record.take() {
            record.finish(self.bytes);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(watch) = &this.watch {
            watch.polls.fetch_add(1, Relaxed);
        }
        let polled = match &mut this.inner {
            ResponseKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseKind::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Err(err))) => {
                    debug!(error = %err, "the backend's response broke off");
                    return this.cut(Cut::Backend);
                }
                Poll::Ready(frame) => {
                    if let Some((timeout, timer)) = &mut this.idle {
                        timer.as_mut().reset(tokio::time::Instant::now() + *timeout);
                    }
                    Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
                }
                Poll::Pending => {
                    if let Some(watch) = &this.watch {
                        watch.waiting_on_backend.store(true, Relaxed);
                    }
                    if let Some(deadline) = &mut this.deadline
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        return this.cut(Cut::Deadline);
                    }
                    if let Some((_, timer)) = &mut this.idle
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        return this.cut(Cut::Idle);
                    }
                    Poll::Pending
                }
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // hyper stops polling a body that reports its end, so the last frame may
                // be the last word: give the connection back now.
                if this.is_end_stream() {
                    this.give_back();
                } else if let Some(watch) = &this.watch {
                    watch.waiting_on_backend.store(false, Relaxed);
                } else if let Some(timeout) = this.send_timeout {
                    this.start_watch(timeout);
                }
            }
            Poll::Ready(None) => {
                if let Some(checkin) = this.checkin.take() {
                    checkin.give_back();
                }
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseKind::Full(bytes) => bytes.is_none(),
            ResponseKind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseKind::Upstream(body) => body.size_hint(),
        }
    }
}

/// Why a response body was cut short.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The route's deadline (its timeout, or the client's `grpc-timeout`) passed.
    Deadline,
    /// The backend sent nothing for `stream_idle_timeout`.
    Idle,
    /// The backend's stream or connection failed.
    Backend,
}

impl Cut {
    fn message(self) -> &'static str {
        match self {
            Self::Deadline => "deadline passed while the response was streaming",
            Self::Idle => "stream_idle_timeout passed with nothing from the backend",
            Self::Backend => "the backend's response broke off",
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.give_back();
        self.finish();
    }
}
