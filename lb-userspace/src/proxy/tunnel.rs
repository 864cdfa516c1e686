//! The byte tunnel of an upgraded connection (WebSocket): both directions copied until
//! either side closes, or until nothing has moved either way for the listener's
//! `tunnel_idle_timeout` ([`crate::idle`]), so a forgotten tunnel does not hold two sockets forever.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::idle::{Activity, Watched};

/// Copies between `client` and `backend` until one closes or the tunnel idles out.
pub async fn splice<C, B>(client: C, backend: B, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Watched::with(client, activity.clone());
    let mut backend = Watched::with(backend, activity.clone());
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
            if let Err(err) = result {
                debug!(error = %err, "upgraded connection ended with an error");
            }
        }
        () = activity.idle_for(idle) => debug!(?idle, "upgraded connection idle; closing it"),
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
        // Silent: closed one idle period after the last byte.
        tokio::time::sleep(idle + Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(tunnel.is_finished(), "an idle tunnel stayed open");
        let mut rest = Vec::new();
        assert_eq!(client_far.read_to_end(&mut rest).await.expect("eof"), 0);
    }
}
