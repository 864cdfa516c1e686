//! Ctrl-C during a bench: the signal only raises a flag, and the bench stops at its next check,
//! so the guards of namespaces and processes run on the way out instead of leaving them behind.
//! A second Ctrl-C exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it starts later) and
/// starts a thread that waits for them. Call before any other thread exists. Children do not
/// inherit the mask: std resets it when it spawns a process.
pub fn install() -> Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .context("blocking SIGINT and SIGTERM")?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            while let Ok(signal) = signals.wait() {
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    eprintln!("\n{signal} again: exiting without cleaning up");
                    std::process::exit(130);
                }
                eprintln!(
                    "\n{signal}: stopping after the current step and removing namespaces \
                     and processes (again to exit at once)"
                );
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Fails once the bench was interrupted.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `duration`, failing early when the bench is interrupted.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
