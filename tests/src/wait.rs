//! Bounded polling assertions, instead of sleeping and hoping.

use std::time::{Duration, Instant};

/// First pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Ok`, for at most `timeout`, and returns the value. Panics
/// with the last error when time runs out. For async code use [`eventually_async`].
///
/// ```no_run
/// # use std::time::Duration;
/// # use sluice_tests::eventually;
/// let port = eventually(Duration::from_secs(5), || {
///     std::fs::read_to_string("/tmp/port").map_err(|e| e.to_string())
/// });
/// ```
#[track_caller]
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        let error = match check() {
            Ok(value) => return value,
            Err(error) => error,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!("not true within {timeout:?}: {error}");
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`eventually`] for async checks: awaits `check` until it returns `Ok`, for at most
/// `timeout`, pausing with `tokio::time::sleep`. Panics with the last error.
/// `check` is a closure returning a future (`|| async { ... }`) rather than an async
/// closure, whose futures cannot yet be proven `Send` for [`Netns::spawn_task`](crate::Netns::spawn_task).
#[track_caller]
pub fn eventually_async<T, F>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> impl Future<Output = T>
where
    F: Future<Output = Result<T, String>>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_PAUSE;
        loop {
            let error = match check().await {
                Ok(value) => return value,
                Err(error) => error,
            };
            let now = Instant::now();
            if now >= deadline {
                panic!("not true within {timeout:?} (eventually_async at {caller}): {error}");
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
