//! Async tasks run inside a namespace: one OS thread per task, joined to the namespace, running
//! a tokio current-thread runtime (a thread can join a namespace; a runtime's worker pool cannot).

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::netns::enter;

/// A future running inside a [`Netns`](crate::Netns), from [`Netns::spawn_task`](crate::Netns::spawn_task).
///
/// Wait for its output with [`NsTask::join`] (blocking) or `.await`. A panic in the future is
/// resumed in whoever waits, or on drop. Dropping the task cancels the future (at its next
/// `.await`) and joins the thread, so the future must not block its thread indefinitely.
#[derive(Debug)]
#[must_use = "dropping an NsTask cancels it"]
pub struct NsTask<T> {
    name: String,
    output: oneshot::Receiver<T>,
    cancel: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> NsTask<T> {
    pub(crate) fn spawn<F>(netns: PathBuf, name: String, future: F) -> NsTask<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (output_tx, output) = oneshot::channel();
        let (cancel, cancel_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("task-{name}"))
            .spawn(move || {
                enter(&netns);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("building a tokio runtime: {e}"));
                runtime.block_on(async move {
                    tokio::select! {
                        value = future => { let _ = output_tx.send(value); }
                        _ = cancel_rx => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("spawning a thread for netns {name}: {e}"));
        NsTask {
            name,
            output,
            cancel: Some(cancel),
            thread: Some(thread),
        }
    }
}

impl<T> NsTask<T> {
    /// Blocks until the future completes and returns its output; resumes its panic.
    /// Do not call from async code: `.await` the task instead.
    pub fn join(mut self) -> T {
        self.join_thread();
        match self.output.try_recv() {
            Ok(value) => value,
            Err(e) => panic!("task in netns {} ended without output: {e}", self.name),
        }
    }

    /// True once the future has completed (or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Joins the thread and resumes its panic, if any.
    fn join_thread(&mut self) {
        if let Some(thread) = self.thread.take()
            && let Err(payload) = thread.join()
        {
            std::panic::resume_unwind(payload);
        }
    }
}

impl<T> Future for NsTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.output).poll(cx) {
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(_)) => {
                // The sender went away without a value: the future panicked, and the thread
                // is ending now.
                self.join_thread();
                panic!("task in netns {} ended without output", self.name)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for NsTask<T> {
    fn drop(&mut self) {
        self.cancel.take();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Surface a background task's panic in the test, unless the test is already failing.
        if let Err(payload) = thread.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(payload);
        }
    }
}
