//! HTTP/2 streams run inside their connection's task, not in a task each. hyper hands every
//! new stream to [`StreamExecutor`], which queues it for the loop in [`serve`] that polls
//! the connection and its streams together. A stream then costs no task spawn and no
//! scheduling of its own; the streams of one connection share its task (and so its CPU), as
//! they do in nginx and HAProxy.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

tokio::task_local! {
    /// Streams hyper has started since the connection's loop last looked.
    static NEW_STREAMS: RefCell<Vec<Stream>>;
}

/// The executor of the HTTP/2 server builder: queues each stream for its connection's loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let mut stream: Option<Stream> = Some(Box::pin(stream));
        let _ = NEW_STREAMS.try_with(|new| new.borrow_mut().extend(stream.take()));
        // Outside a connection's loop (a connection not served through `serve`): a task.
        if let Some(stream) = stream {
            tokio::spawn(stream);
        }
    }
}

/// Polls `connection` and the streams it starts until the connection has ended and every
/// stream has finished; returns the connection's result.
pub async fn serve<C: Future>(connection: C) -> C::Output {
    NEW_STREAMS
        .scope(RefCell::new(Vec::new()), async move {
            let mut connection = pin!(connection);
            let mut ended = None;
            let mut streams = FuturesUnordered::new();
            poll_fn(|cx| {
                if ended.is_none()
                    && let Poll::Ready(result) = connection.as_mut().poll(cx)
                {
                    ended = Some(result);
                }
                NEW_STREAMS.with(|new| streams.extend(new.borrow_mut().drain(..)));
                // What a stream sends wakes the connection (this task) to write it out.
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
                match ended.take() {
                    Some(result) if streams.is_empty() => Poll::Ready(result),
                    other => {
                        ended = other;
                        Poll::Pending
                    }
                }
            })
            .await
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use hyper::rt::Executor as _;

    use super::*;

    /// A connection that starts two streams and ends at once: the first stream waits for
    /// the second, so both must run side by side, and `serve` returns only after both.
    #[tokio::test]
    async fn streams_run_side_by_side_and_outlive_their_connection() {
        let finished = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (first, second) = (finished.clone(), finished.clone());
        let served = serve(async move {
            StreamExecutor.execute(async move {
                let _ = rx.await;
                first.fetch_add(1, SeqCst);
            });
            StreamExecutor.execute(async move {
                tokio::task::yield_now().await;
                let _ = tx.send(());
                second.fetch_add(1, SeqCst);
            });
            "ended"
        });
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("the streams waited on each other: they did not run side by side");
        assert_eq!(result, "ended");
        assert_eq!(
            finished.load(SeqCst),
            2,
            "serve returned before its streams finished"
        );
    }

    /// Outside a connection's loop a stream still runs, as a task of its own.
    #[tokio::test]
    async fn a_stream_started_outside_a_connection_gets_a_task() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        StreamExecutor.execute(async move {
            let _ = tx.send(7);
        });
        assert_eq!(rx.await.ok(), Some(7));
    }
}
