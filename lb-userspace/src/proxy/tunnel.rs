//! The byte tunnel of an upgraded connection (WebSocket): both directions copied until
//! either side closes, or until nothing has moved either way for the listener's
//! `tunnel_idle_timeout`, so a forgotten tunnel does not hold two sockets forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

/// Copies between `client` and `backend` until one closes or the tunnel idles out.
pub async fn splice<C, B>(client: C, backend: B, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let moved = Arc::new(AtomicBool::new(false));
    let mut client = Watched {
        inner: client,
        moved: moved.clone(),
    };
    let mut backend = Watched {
        inner: backend,
        moved: moved.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    // Checked once per `idle`: a tunnel is cut between one and two idle periods after its
    // last byte, and busy tunnels pay one flag store per read, no timer per read.
    let watchdog = async {
        loop {
            tokio::time::sleep(idle).await;
            if !moved.swap(false, Relaxed) {
                return;
            }
        }
    };
    tokio::select! {
        result = copy => {
            if let Err(err) = result {
                debug!(error = %err, "upgraded connection ended with an error");
            }
        }
        () = watchdog => debug!(?idle, "upgraded connection idle; closing it"),
    }
}

/// A stream that notes when bytes were read from it.
struct Watched<S> {
    inner: S,
    moved: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved.store(true, Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
        let (client_near, mut client_far) = tokio::io::duplex(64);
        let (backend_near, mut backend_far) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let tunnel = tokio::spawn(splice(client_near, backend_near, idle));
        // Busy for 50 s, a byte every 5 s: the tunnel stays.
        for _ in 0..10 {
            client_far.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            backend_far.read_exact(&mut byte).await.expect("read");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert!(!tunnel.is_finished(), "a busy tunnel was closed");
        // Silent: closed within two idle periods.
        tokio::time::sleep(idle * 2 + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(tunnel.is_finished(), "an idle tunnel stayed open");
        let mut rest = Vec::new();
        assert_eq!(client_far.read_to_end(&mut rest).await.expect("eof"), 0);
    }
}
